"""`DecodingOptions`: the one place that names the decoding options, gives their defaults and checks them.

Everything else derives from it: the runtime and the Keras-side `generate` pick the search with
`options.search()` and pass `options.search_kwargs()`; `python -m serving` and `python -m keras_nlp_week4
generate` get their flags from `add_arguments`; the HTTP request model of `serving.server` is built from
`fields()`. A new option is added here, once.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields

import numpy as np

from serving.errors import RequestError, flag_name
from serving.search import SEARCHES, SearchFn

__all__ = ["METHODS", "DecodingOptions", "OptionError"]

METHODS = tuple(SEARCHES)


class OptionError(RequestError):
    """An option out of range (HTTP 422); `option` names the field, so a command line can name its flag."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option
        self.fields = (option,)


def _option(default, help: str, methods: tuple[str, ...] = ()):
    # `methods`: the searches an option applies to (empty: all); it is passed to those alone.
    return field(default=default, metadata={"help": help, "methods": methods})


@dataclass(frozen=True)
class DecodingOptions:
    """How to search.

    greedy: the most likely token each step. beam: `beam_size` hypotheses ranked with the GNMT length
    penalty `length_penalty` (0 disables it). sample: `temperature`, `top_k` (0 = all), `top_p` (nucleus,
    1 = all), and `seed` for a reproducible draw. `max_new_tokens` None means the model's
    `max_target_length` (EOS included), which is also its upper bound.
    """

    method: str = _option("greedy", f"search: {', '.join(METHODS)}")
    max_new_tokens: int | None = _option(
        None, "most tokens to generate, EOS included (default and limit: the model's max_target_length)")
    beam_size: int = _option(4, "beam: hypotheses kept", ("beam",))
    length_penalty: float = _option(0.6, "beam: GNMT length-penalty alpha (0: none)", ("beam",))
    temperature: float = _option(1.0, "sample: softmax temperature (> 0; towards 0 it becomes greedy)",
                                 ("sample",))
    top_k: int = _option(0, "sample: keep the k most likely tokens (0: all)", ("sample",))
    top_p: float = _option(1.0, "sample: nucleus mass (1: all)", ("sample",))
    seed: int | None = _option(None, "sample: a seed makes the draw reproducible", ("sample",))

    # -------------------------------------------------------------------------------------------------

    @classmethod
    def fields(cls) -> list[tuple[str, object, object, str]]:
        """`(name, type, default, help)` of every option, in order (for a CLI or a request model)."""
        hints = typing.get_type_hints(cls)
        return [(f.name, hints[f.name], f.default, f.metadata["help"]) for f in dataclass_fields(cls)]

    def validate(self, max_new_tokens_limit: int | None = None, max_beam_size: int | None = None) -> None:
        """Raises `OptionError` (HTTP 422) naming the first invalid option."""
        checks = [
            ("method", self.method in METHODS,
             f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}"),
            ("max_new_tokens", self.max_new_tokens is None or self.max_new_tokens >= 1,
             f"max_new_tokens must be >= 1, got {self.max_new_tokens}"),
            ("max_new_tokens", self.max_new_tokens is None or max_new_tokens_limit is None
             or self.max_new_tokens <= max_new_tokens_limit,
             f"max_new_tokens {self.max_new_tokens} is above the limit {max_new_tokens_limit}"),
            ("beam_size", self.beam_size >= 1, f"beam_size must be >= 1, got {self.beam_size}"),
            ("beam_size", max_beam_size is None or self.beam_size <= max_beam_size,
             f"beam_size {self.beam_size} is above the limit {max_beam_size}"),
            ("length_penalty", bool(np.isfinite(self.length_penalty)) and self.length_penalty >= 0,
             f"length_penalty must be a finite number >= 0, got {self.length_penalty}"),
            # Any finite temperature > 0 is safe: the searches scale logits after subtracting their max.
            ("temperature", bool(np.isfinite(self.temperature)) and self.temperature > 0,
             f"temperature must be a finite number > 0, got {self.temperature}"),
            ("top_k", self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}"),
            ("top_p", 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            ("seed", self.seed is None or 0 <= self.seed < 2**63, f"seed must be in [0, 2**63), got {self.seed}"),
        ]
        for option, ok, message in checks:
            if not ok:
                raise OptionError(option, message)

    def search(self) -> SearchFn:
        """The search function of `method` (see `serving.search.SEARCHES`)."""
        return SEARCHES[self.method]

    def search_kwargs(self) -> dict:
        """The options `method`'s search takes."""
        return {f.name: getattr(self, f.name) for f in dataclass_fields(self)
                if self.method in f.metadata["methods"]}

    # Command lines -----------------------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Adds `--method`, `--max-new-tokens`, `--beam-size`, ... with these defaults and help texts.
        Values are checked by `validate` (so a command line and the HTTP API refuse the same things)."""
        group = parser.add_argument_group("decoding")
        for name, kind, default, help_text in cls.fields():
            scalar = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
            extra = {"choices": METHODS} if name == "method" else {}
            shown = "" if default is None else f" (default: {default})"
            group.add_argument(flag_name(name), dest=name, type=scalar, default=default,
                               help=help_text + shown, **extra)

    @classmethod
    def from_args(cls, args) -> DecodingOptions:
        """The options of any object with them as attributes: an argparse namespace, an HTTP request."""
        return cls(**{name: getattr(args, name) for name, *_ in cls.fields()})
