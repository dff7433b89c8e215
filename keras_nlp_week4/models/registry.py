"""Model names used on the command line, mapped to model families and their constructor arguments."""

from __future__ import annotations

from keras_nlp_week4.errors import UserError
from keras_nlp_week4.layers.luong_attention import SCORE_FUNCTIONS as LUONG_SCORES
from keras_nlp_week4.models.base import Seq2SeqModel
from keras_nlp_week4.models.rnn_seq2seq import RNN_PRESETS, RNNSeq2Seq
from keras_nlp_week4.models.transformer import TRANSFORMER_PRESETS, Transformer

# name -> (family, fixed constructor arguments)
MODEL_NAMES: dict[str, tuple[str, dict]] = {
    "transformer": ("transformer", {}),
    # Sutskever et al. (2014) read the source backwards.
    "seq2seq-lstm": ("rnn", {"cell_type": "lstm", "reverse_source": True}),
    # Cho et al. (2014), who introduced the GRU, also fed the context to every decoder step.
    "seq2seq-gru": ("rnn", {"cell_type": "gru", "context_every_step": True}),
    # Bahdanau et al. used a bidirectional GRU-style encoder; Luong et al. stacked LSTMs.
    "bahdanau": ("rnn", {"cell_type": "gru", "attention": "bahdanau", "bidirectional": True}),
    **{f"luong-{score}": ("rnn", {"cell_type": "lstm", "attention": score}) for score in LUONG_SCORES},
}


def model_family(name: str) -> str:
    """"transformer" or "rnn" for a model name; raises UserError for an unknown one."""
    if name not in MODEL_NAMES:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    return MODEL_NAMES[name][0]


def build_model(name: str, vocab_size: int, preset: str = "small", max_source_length: int | None = None,
                **overrides) -> Seq2SeqModel:
    """Builds the model called `name` (see `MODEL_NAMES`) at a named size.

    `overrides` replace any constructor argument (e.g. `dropout=0.2`, `teacher_forcing_ratio=0.5`).
    """
    family = model_family(name)
    fixed = MODEL_NAMES[name][1]
    presets = TRANSFORMER_PRESETS if family == "transformer" else RNN_PRESETS
    if preset not in presets:
        raise UserError(f"unknown preset {preset!r} for {name}; choose one of: {', '.join(presets)}")
    if family == "transformer":
        return Transformer.from_preset(preset, source_vocab_size=vocab_size, **overrides)
    return RNNSeq2Seq.from_preset(preset, vocab_size=vocab_size, max_source_length=max_source_length,
                                  **{**fixed, **overrides})
