"""Encoder-decoder model families: the Transformer and RNN seq2seq with or without attention."""

from keras_nlp_week4.models.base import Seq2SeqModel, StateSpec
from keras_nlp_week4.models.registry import MODEL_NAMES, build_model, model_family
from keras_nlp_week4.models.rnn_seq2seq import RNN_PRESETS, RNNSeq2Seq
from keras_nlp_week4.models.transformer import TRANSFORMER_PRESETS, Transformer

__all__ = [
    "MODEL_NAMES",
    "RNN_PRESETS",
    "TRANSFORMER_PRESETS",
    "RNNSeq2Seq",
    "Seq2SeqModel",
    "StateSpec",
    "Transformer",
    "build_model",
    "model_family",
]
