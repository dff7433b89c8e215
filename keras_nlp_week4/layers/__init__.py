"""The lecture's layers, one per module, written with `keras.ops`."""

from keras_nlp_week4.layers.bahdanau_attention import BahdanauAttention
from keras_nlp_week4.layers.luong_attention import LuongAttention
from keras_nlp_week4.layers.masks import causal_mask, masked_softmax, padding_mask
from keras_nlp_week4.layers.multi_head_attention import MultiHeadAttention
from keras_nlp_week4.layers.positional_encoding import SinusoidalPositionalEncoding
from keras_nlp_week4.layers.scaled_dot_product_attention import scaled_dot_product_attention
from keras_nlp_week4.layers.token_and_position_embedding import TokenAndPositionEmbedding
from keras_nlp_week4.layers.transformer_decoder_layer import TransformerDecoderLayer
from keras_nlp_week4.layers.transformer_encoder_layer import TransformerEncoderLayer

__all__ = [
    "BahdanauAttention",
    "LuongAttention",
    "MultiHeadAttention",
    "SinusoidalPositionalEncoding",
    "TokenAndPositionEmbedding",
    "TransformerDecoderLayer",
    "TransformerEncoderLayer",
    "causal_mask",
    "masked_softmax",
    "padding_mask",
    "scaled_dot_product_attention",
]
