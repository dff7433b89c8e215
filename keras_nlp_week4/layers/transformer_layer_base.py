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

    Holds the arguments both take, creates the attention sub-layers a subclass names in
    `ATTENTION_SUBLAYERS` (each with its LayerNorm and residual dropout), then the position-wise
    feed-forward sub-layer, eq. (2): `FFN(x) = activation(x W_1 + b_1) W_2 + b_2`. The creation order
    fixes the order of the weights, which optimizer checkpoints rely on.
    """

    ATTENTION_SUBLAYERS: tuple[str, ...] = ()

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
        for name in self.ATTENTION_SUBLAYERS:
            self._add_attention_sublayer(name)
        self.feed_forward_inner = keras.layers.Dense(
            self.d_ff, activation=self.activation, dtype=self.dtype_policy, name="feed_forward_inner")
        self.feed_forward_outer = keras.layers.Dense(
            self.d_model, dtype=self.dtype_policy, name="feed_forward_outer")
        self.feed_forward_layer_norm = self._layer_norm("feed_forward_layer_norm")
        self.feed_forward_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        # The output rows are the input rows: the padding mask of `x` passes through.
        self.supports_masking = True

    def _layer_norm(self, name: str) -> keras.layers.LayerNormalization:
        return keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon,
                                               dtype=self.dtype_policy, name=name)

    def _add_attention_sublayer(self, name: str) -> None:
        """Creates `self.<name>` (multi-head attention), `<name>_layer_norm` and `<name>_dropout`."""
        setattr(self, name, MultiHeadAttention(self.num_heads, self.head_dim, dropout=self.dropout,
                                               dtype=self.dtype_policy, name=name))
        setattr(self, f"{name}_layer_norm", self._layer_norm(f"{name}_layer_norm"))
        setattr(self, f"{name}_dropout", keras.layers.Dropout(self.dropout, dtype=self.dtype_policy))

    def residual(self, name: str, x, sublayer, training=None):
        """Runs `sublayer` on `x` inside the residual + LayerNorm wrapper of sub-layer `name`.

        `sublayer(h)` returns the new activations, or a tuple whose first item they are (the rest, such as
        attention weights or a cache, is returned alongside).
        """
        layer_norm = getattr(self, f"{name}_layer_norm")
        out = sublayer(sublayer_input(x, layer_norm, self.norm_first))
        h, extra = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
        x = sublayer_output(x, h, layer_norm, getattr(self, f"{name}_dropout"), self.norm_first,
                            training)
        return (x, *extra) if extra else x

    def build_feed_forward(self, x_shape) -> None:
        self.feed_forward_inner.build(x_shape)
        self.feed_forward_outer.build(tuple(x_shape[:-1]) + (self.d_ff,))
        self.feed_forward_layer_norm.build(x_shape)

    def feed_forward(self, x, training=None):
        """The position-wise feed-forward sub-layer with its residual connection."""
        return self.residual(
            "feed_forward", x,
            lambda h: self.feed_forward_outer(self.feed_forward_inner(h)),  # (batch, len, d_model)
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
