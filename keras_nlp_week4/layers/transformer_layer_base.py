"""What the Transformer encoder and decoder layers share (Vaswani et al. 2017, sections 3.1, 3.3, 5.4):
the constructor arguments, residual + LayerNorm around each sub-layer, and the feed-forward network."""

from __future__ import annotations

import keras

from keras_nlp_week4.layers.multi_head_attention import MultiHeadAttention


def sublayer_input(x, layer_norm, norm_first: bool):
    """What a sub-layer sees: `LayerNorm(x)` in pre-norm, `x` itself in post-norm."""
    return layer_norm(x) if norm_first else x


def sublayer_output(residual, y, layer_norm, dropout, norm_first: bool, training=None):
    """Residual connection around a sub-layer (Vaswani et al. 2017, section 3.1 and 5.4).

    Post-norm (the paper): `LayerNorm(x + Dropout(Sublayer(x)))`.
    Pre-norm (Wang et al. 2019, Xiong et al. 2020): `x + Dropout(Sublayer(LayerNorm(x)))`.

    Args:
        residual: the sub-layer's input `x`, `(batch, len, d_model)`.
        y: the sub-layer's output, same shape.
        layer_norm: the sub-layer's `LayerNormalization`.
        dropout: the residual `Dropout` layer.
        norm_first: bool, pre-norm instead of post-norm.
        training: python bool, whether dropout is active.

    Returns:
        `(batch, len, d_model)`.
    """
    x = residual + dropout(y, training=training)
    return x if norm_first else layer_norm(x)


def check_transformer_dims(d_model: int, num_heads: int) -> int:
    """Returns the per-head size `d_model / num_heads`, or raises if it is not an integer."""
    if d_model % num_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads}).")
    return d_model // num_heads


class TransformerLayerBase(keras.layers.Layer):
    """Base of `TransformerEncoderLayer` and `TransformerDecoderLayer` (not used on its own).

    Holds the arguments both take; a subclass creates its attention sub-layers in
    `create_attention_sublayers` as plain attributes (`self_attention`, `self_attention_layer_norm`,
    `self_attention_dropout`, ...: made with `attention`, `layer_norm` and `residual_dropout`), then this
    class creates the position-wise feed-forward sub-layer, eq. (2):
    `FFN(x) = activation(x W_1 + b_1) W_2 + b_2`. The creation order fixes the order of the weights,
    which optimizer checkpoints rely on; the attribute names are the paths of the weights in a `.keras`
    file. Each sub-layer runs as `sublayer_input` -> the sub-layer -> `sublayer_output` (the residual
    connection with its dropout and LayerNorm).
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.1,
                 activation="relu", norm_first: bool = False, layer_norm_epsilon: float = 1e-6,
                 **kwargs):
        super().__init__(**kwargs)
        self.d_model = int(d_model)
        self.num_heads = int(num_heads)
        self.d_ff = int(d_ff)
        self.dropout = float(dropout)
        self.activation = keras.activations.get(activation)
        self.norm_first = bool(norm_first)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.head_dim = check_transformer_dims(self.d_model, self.num_heads)
        self.create_attention_sublayers()
        self.feed_forward_inner = keras.layers.Dense(
            self.d_ff, activation=self.activation, dtype=self.dtype_policy, name="feed_forward_inner")
        self.feed_forward_outer = keras.layers.Dense(
            self.d_model, dtype=self.dtype_policy, name="feed_forward_outer")
        self.feed_forward_layer_norm = self.layer_norm("feed_forward_layer_norm")
        self.feed_forward_dropout = self.residual_dropout()
        # The output rows are the input rows: the padding mask of `x` passes through.
        self.supports_masking = True

    def create_attention_sublayers(self) -> None:
        """Creates the subclass's attention sub-layers, each with its LayerNorm and residual dropout."""
        raise NotImplementedError

    def layer_norms(self) -> tuple[keras.layers.LayerNormalization, ...]:
        """The sub-layers' LayerNorms in call order (the attention sub-layers', then the feed-forward's).

        A method, not a property: Keras' saving walks a layer's attributes, properties included, and would
        store the norms under `layer_norms/` (a new place in the .keras file) instead of their own names.
        """
        raise NotImplementedError

    def attention(self, name: str) -> MultiHeadAttention:
        return MultiHeadAttention(self.num_heads, self.head_dim, dropout=self.dropout,
                                  dtype=self.dtype_policy, name=name)

    def layer_norm(self, name: str) -> keras.layers.LayerNormalization:
        return keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon,
                                               dtype=self.dtype_policy, name=name)

    def residual_dropout(self) -> keras.layers.Dropout:
        return keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def sublayer_input(self, x, layer_norm):
        """What a sub-layer sees: `LayerNorm(x)` in pre-norm, `x` itself in post-norm."""
        return sublayer_input(x, layer_norm, self.norm_first)

    def sublayer_output(self, x, y, layer_norm, dropout, training=None):
        """The residual connection around a sub-layer whose input was `x` and output `y`."""
        return sublayer_output(x, y, layer_norm, dropout, self.norm_first, training)

    def build_feed_forward(self, x_shape) -> None:
        self.feed_forward_inner.build(x_shape)
        self.feed_forward_outer.build(tuple(x_shape[:-1]) + (self.d_ff,))
        self.feed_forward_layer_norm.build(x_shape)

    def feed_forward(self, x, training=None):
        """The position-wise feed-forward sub-layer with its residual connection."""
        h = self.sublayer_input(x, self.feed_forward_layer_norm)
        y = self.feed_forward_outer(self.feed_forward_inner(h))  # (batch, len, d_model)
        return self.sublayer_output(x, y, self.feed_forward_layer_norm, self.feed_forward_dropout,
                                    training)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "d_model": self.d_model,
            "num_heads": self.num_heads,
            "d_ff": self.d_ff,
            "dropout": self.dropout,
            "activation": keras.activations.serialize(self.activation),
            "norm_first": self.norm_first,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        })
        return config
