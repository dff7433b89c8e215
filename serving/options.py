"""`DecodingOptions`: the one place that names the decoding options, gives their defaults and checks them.

Everything else derives from it: the runtime and the Keras-side `generate` pick the search with
`options.search()` and pass `options.search_kwargs()`; `python -m serving` and `python -m keras_nlp_week4
generate` get their flags from `add_arguments`; the HTTP request model of `serving.server` is built from
`fields()`. A new option is added here, once.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields

import numpy as np

from serving.errors import RequestError, flag_name
from serving.search import SEARCHES, Constraints, SearchFn

__all__ = ["METHODS", "DecodingOptions", "OptionError"]

METHODS = tuple(SEARCHES)


class OptionError(RequestError):
    """An option out of range (HTTP 422); `option` names the field, so a command line can name its flag."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option
        self.fields = (option,)


def _option(default, help: str, methods: tuple[str, ...] = (), rule: bool = False):
    # `methods`: the searches whose keyword argument the option is (`search_kwargs`); `rule`: a field of
    # `serving.search.Constraints`, which every search takes (`constraints`, `rule_kwargs`).
    return field(default=default, metadata={"help": help, "methods": methods, "rule": rule})


@dataclass(frozen=True)
class DecodingOptions:
    """How to search.

    greedy: the most likely token each step. beam: `beam_size` hypotheses ranked with the GNMT length
    penalty `length_penalty` (0 disables it), the best `num_hypotheses` returned. sample: `temperature`,
    `top_k` (0 = all), `top_p` (nucleus, 1 = all), and `seed` for a reproducible draw. `max_new_tokens`
    None means the model's `max_target_length` (EOS included), which is also its upper bound. Every method
    honours `target_prefix`, `repetition_penalty`, `no_repeat_ngram_size` and `min_new_tokens`
    (`constraints`); at their defaults the output is what it is without them.
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
    num_hypotheses: int = _option(1, "beam: how many of the best hypotheses to return, best first, with "
                                     "their scores (at most beam_size)", ("beam",))
    # The rules below apply to every method (`serving.search.Constraints`), named as CTranslate2 names them.
    target_prefix: str | None = _option(None, "text the output must start with; the search continues after it",
                                        rule=True)
    repetition_penalty: float = _option(
        1.0, "penalise tokens the output already holds: positive logits divided by it, negative ones "
             "multiplied (1: none; > 1 repeats less)", rule=True)
    no_repeat_ngram_size: int = _option(0, "never repeat an n-gram of this many tokens (0: no rule)", rule=True)
    min_new_tokens: int = _option(0, "fewest tokens before EOS may end the output (0: no rule)", rule=True)

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
            ("num_hypotheses", self.num_hypotheses >= 1, f"num_hypotheses must be >= 1, got {self.num_hypotheses}"),
            ("num_hypotheses", self.num_hypotheses == 1 or self.method == "beam",
             f"num_hypotheses {self.num_hypotheses} needs method beam (greedy and sampling give one output)"),
            ("num_hypotheses", self.num_hypotheses <= self.beam_size,
             f"num_hypotheses {self.num_hypotheses} is above beam_size {self.beam_size}; raise beam_size"),
            ("target_prefix", self.target_prefix is None or isinstance(self.target_prefix, str),
             f"target_prefix must be text, got {type(self.target_prefix).__name__}"),
            ("repetition_penalty", bool(np.isfinite(self.repetition_penalty)) and self.repetition_penalty > 0,
             f"repetition_penalty must be a finite number > 0, got {self.repetition_penalty}"),
            ("no_repeat_ngram_size", self.no_repeat_ngram_size >= 0,
             f"no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}"),
            ("min_new_tokens", self.min_new_tokens >= 0, f"min_new_tokens must be >= 0, got {self.min_new_tokens}"),
            ("min_new_tokens", self._max_length(max_new_tokens_limit) is None
             or self.min_new_tokens < self._max_length(max_new_tokens_limit),
             f"min_new_tokens {self.min_new_tokens} leaves no room for EOS within "
             f"{self._max_length(max_new_tokens_limit)} tokens; lower it or raise max_new_tokens"),
        ]
        for option, ok, message in checks:
            if not ok:
                raise OptionError(option, message)

    def _max_length(self, limit: int | None) -> int | None:
        return self.max_new_tokens or limit

    def constraints(self, batch_size: int, max_length: int,
                    encode: Callable[[str], Sequence[int]] | None = None) -> Constraints | None:
        """The rules of `serving.search.Constraints` for a batch of `batch_size` rows decoded for up to
        `max_length` tokens, or None when every rule is at its default. `encode` tokenizes
        `target_prefix` (ids without EOS); a prefix with no room left for EOS is an `OptionError`."""
        prefix = None
        if self.target_prefix:
            if encode is None:
                raise ValueError("target_prefix needs the tokenizer's encode")
            ids = np.asarray(list(encode(self.target_prefix)), dtype=np.int64)
            if len(ids) >= max_length:
                raise OptionError("target_prefix", f"target_prefix is {len(ids)} tokens; at most {max_length - 1} "
                                                   "fit before EOS (shorten it or raise max_new_tokens)")
            prefix = (ids,) * batch_size if len(ids) else None
        rules = Constraints(min_new_tokens=self.min_new_tokens, repetition_penalty=self.repetition_penalty,
                            no_repeat_ngram_size=self.no_repeat_ngram_size, prefix=prefix)
        return rules if rules else None

    def search(self) -> SearchFn:
        """The search function of `method` (see `serving.search.SEARCHES`)."""
        return SEARCHES[self.method]

    def search_kwargs(self) -> dict:
        """The options `method`'s search takes."""
        return {f.name: getattr(self, f.name) for f in dataclass_fields(self)
                if self.method in f.metadata["methods"]}

    def rule_kwargs(self) -> dict:
        """The rule options (`target_prefix`, `repetition_penalty`, ...) by name: with `search_kwargs`,
        what a caller that rebuilds the options elsewhere (the Keras-side `generate`) passes on."""
        return {f.name: getattr(self, f.name) for f in dataclass_fields(self) if f.metadata["rule"]}

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
