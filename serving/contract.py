"""The decoder-step contract of an export, TensorFlow-free: graph tensor names, the `_out` suffix of an
updated state entry, dtypes, and the zero-initialised state a caller allocates.

One owner for what the exporter writes (`export.config`, `export.functions`), the Keras reference
(`export.reference`) and every reader (`serving.runtime`, and through it the validator's step-loop row).
`docs/export-contract.md` describes the whole contract; this module is its code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "ATTENTION", "BEAM_SIZE", "ENCODER_INPUT", "INDEX", "LENGTH_PENALTY", "LOGITS", "MAX_LENGTH", "MIN_LENGTH",
    "OUTPUT_TEXT", "RESERVED_NAMES", "SCORES", "SYMBOLIC_AXES", "TEXT", "TOKENS", "TOKEN_IDS",
    "TOP_IDS", "TOP_LOG_PROBS", "concrete_shape", "numpy_dtype", "position_axes", "shared_by_beams", "updated_name",
    "updated_outputs", "zero_state",
]

# Graph inputs and outputs besides the decoding-state entries.
ENCODER_INPUT = "encoder_input"  # encoder and generate: int32 (batch, source_length)
TOKEN_IDS = "token_ids"  # decoder_step: int32 (batch,), the previous output token (BOS at index 0)
INDEX = "index"  # decoder_step: int32 scalar, the position of token_ids in the output
LOGITS = "logits"  # decoder_step: float32 (batch, vocab)
ATTENTION = "attention"  # decoder_step, models with attention: float32 (batch, layers, heads, source_length)
MAX_LENGTH = "max_length"  # generate: int32 scalar
MIN_LENGTH = "min_length"  # beam_search: int32 scalar, EOS not allowed before this many tokens (0: no rule)
TOKENS = "tokens"  # generate: int32 (batch, max_length); beam_search: (batch, length)
BEAM_SIZE = "beam_size"  # beam_search: int32 scalar, hypotheses kept per sentence (1: greedy)
LENGTH_PENALTY = "length_penalty"  # beam_search: float32 scalar, GNMT's alpha (0: none)
SCORES = "scores"  # beam_search, generate_text: float32 (batch,), log-probability / length penalty
TOP_LOG_PROBS = "top_log_probs"  # decoder_step_top_k: float32 (batch, beam_size), best log-probabilities
TOP_IDS = "top_ids"  # decoder_step_top_k: int64 (batch, beam_size), their token ids, best first
TEXT = "text"  # generate_text: string (batch,), the source texts
OUTPUT_TEXT = "output_text"  # generate_text: string (batch,), the generated texts
RESERVED_NAMES = frozenset({ENCODER_INPUT, TOKEN_IDS, INDEX, LOGITS, ATTENTION, MAX_LENGTH, MIN_LENGTH, TOKENS,
                            BEAM_SIZE, LENGTH_PENALTY, SCORES, TEXT, OUTPUT_TEXT, TOP_LOG_PROBS, TOP_IDS})

# The decoder step returns the new value of state entry `<name>` as output `<name>_out`.
_UPDATED_SUFFIX = "_out"
# "batch": rows of token_ids (sentences x beams in beam search); "source_batch": source sentences, the
# batch of the entries a model declares shared by beams (and of the encoder graph); "beam_size": the
# width of the top-k step's outputs.
SYMBOLIC_AXES = ("batch", "source_batch", "source_length", "max_length", "beam_size")
# The dtypes an export may use. bfloat16 is not among them: onnxruntime's CPU kernels lack it, so a
# mixed-precision run is exported in float32 or not at all.
_DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64, "bool": np.bool_,
           "int32": np.int32, "int64": np.int64, "string": np.object_}


def updated_name(state_name: str) -> str:
    """The decoder-step output that carries the new value of state entry `state_name`."""
    return state_name + _UPDATED_SUFFIX


def updated_outputs(output_names: Iterable[str]) -> dict[str, str]:
    """{decoder-step output name: the state entry it updates} for the outputs that update one."""
    return {name: name.removesuffix(_UPDATED_SUFFIX) for name in output_names if name.endswith(_UPDATED_SUFFIX)}


def numpy_dtype(name: str) -> type:
    """The numpy type of a dtype name used in an export description ("float32", "bool", ...)."""
    if name not in _DTYPES:
        raise ValueError(f"unsupported dtype {name!r} in an export description (supported: "
                         f"{', '.join(_DTYPES)})")
    return _DTYPES[name]


def concrete_shape(shape: Sequence, sizes: Mapping[str, int]) -> tuple[int, ...]:
    """Replaces symbolic axes with the sizes of one call, e.g. {"batch": 4, "max_length": 12}."""
    return tuple(int(sizes[d]) if isinstance(d, str) else int(d) for d in shape)


def shared_by_beams(specs: Iterable[Mapping]) -> frozenset[str]:
    """The state entries kept once per source sentence, which beam search neither repeats nor reorders."""
    return frozenset(spec["name"] for spec in specs if spec.get("shared_by_beams"))


def position_axes(specs: Iterable[Mapping]) -> dict[str, int]:
    """The updated state entries with an axis of decoding positions (`max_length`), and that axis.

    The step at `index` writes position `index` of such an entry and masks the later positions (the
    self-attention caches' contract), so a search that reorders hypotheses need only copy the positions
    written so far (`serving.search.beam_steps`' `position_axes`)."""
    return {spec["name"]: list(spec["shape"]).index(MAX_LENGTH) for spec in specs
            if spec.get("updated") and MAX_LENGTH in spec["shape"]}


def zero_state(specs: Sequence[Mapping], batch: int, source_length: int, max_length: int) -> dict:
    """Zeros for every state entry whose `source` is "cache" (what the caller allocates before the first
    decoder step), sized for `max_length` steps."""
    sizes = {"batch": batch, "source_batch": batch, "source_length": source_length, "max_length": max_length}
    return {spec["name"]: np.zeros(concrete_shape(spec["shape"], sizes), numpy_dtype(spec["dtype"]))
            for spec in specs if spec["source"] == "cache"}
