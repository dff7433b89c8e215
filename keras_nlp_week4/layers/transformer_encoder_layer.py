"""One Transformer encoder layer: self-attention + feed-forward (Vaswani et al. 2017)."""

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


@keras.saving.register_keras_serializable(package="keras_nlp_week4")
class TransformerEncoderLayer(keras.layers.Layer):
    """Transformer encoder layer, Vaswani et al. 2017, sections 3.1, 3.2.2 and 3.3.

    ```
    x = LayerNorm(x + Dropout(MultiHeadSelfAttention(x)))         # post-norm (paper)
    x = LayerNorm(x + Dropout(W_2 max(0, x W_1 + b_1) + b_2))     # FFN, eq. (2)
    ```

    With `norm_first=True` the LayerNorm moves in front of each sub-layer (pre-norm,
    `x + Dropout(Sublayer(LayerNorm(x)))`), which trains more stably in deep stacks
    (Xiong et al. 2020); the stack then needs a final LayerNorm.

    Args:
        d_model: int. Width of the layer's input and output.
        num_heads: int. Attention heads; must divide `d_model`.
        d_ff: int. Inner width of the position-wise feed-forward network.
        dropout: float in [0, 1). Rate of the residual dropout (section 5.4) and of the
            attention-weight dropout. Defaults to 0.1.
        activation: activation of the feed-forward network. Defaults to `"relu"`.
        norm_first: bool. Pre-norm instead of the paper's post-norm. Defaults to False.
        layer_norm_epsilon: float. LayerNorm epsilon. Defaults to 1e-6.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        x: `(batch, src_len, d_model)`.
        padding_mask: bool `(batch, src_len)`, `True` = real token. Defaults to the
            Keras mask of `x` (e.g. from `TokenAndPositionEmbedding`).
        return_attention_scores: bool. Also return the self-attention weights.
        training: python bool, whether dropout is active.

    Returns:
        `(batch, src_len, d_model)`, or `(x, weights)` with weights
        `(batch, num_heads, src_len, src_len)`.

    Example:

    ```python
    layer = TransformerEncoderLayer(d_model=16, num_heads=2, d_ff=32)
    x = np.random.rand(2, 5, 16).astype("float32")
    y = layer(x, padding_mask=np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool))
    ```
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        activation="relu",
        norm_first: bool = False,
        layer_norm_epsilon: float = 1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.d_model = int(d_model)
        self.num_heads = int(num_heads)
        self.d_ff = int(d_ff)
        self.dropout = float(dropout)
        self.activation = keras.activations.get(activation)
        self.norm_first = bool(norm_first)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        head_dim = check_transformer_dims(self.d_model, self.num_heads)
        policy = self.dtype_policy

        self.self_attention = MultiHeadAttention(
            self.num_heads, head_dim, dropout=self.dropout, dtype=policy, name="self_attention"
        )
        self.self_attention_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="self_attention_layer_norm"
        )
        self.self_attention_dropout = keras.layers.Dropout(self.dropout, dtype=policy)
        self.feed_forward_inner = keras.layers.Dense(
            self.d_ff, activation=self.activation, dtype=policy, name="feed_forward_inner"
        )
        self.feed_forward_outer = keras.layers.Dense(
            self.d_model, dtype=policy, name="feed_forward_outer"
        )
        self.feed_forward_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="feed_forward_layer_norm"
        )
        self.feed_forward_dropout = keras.layers.Dropout(self.dropout, dtype=policy)
        # The output rows are the input rows: the padding mask passes through.
        self.supports_masking = True

    def build(self, x_shape):
        self.self_attention.build(x_shape, x_shape)
        self.self_attention_layer_norm.build(x_shape)
        self.feed_forward_inner.build(x_shape)
        self.feed_forward_outer.build(tuple(x_shape[:-1]) + (self.d_ff,))
        self.feed_forward_layer_norm.build(x_shape)
        self.built = True

    def call(self, x, padding_mask=None, return_attention_scores=False, training=None):
        if padding_mask is None:
            padding_mask = getattr(x, "_keras_mask", None)

        residual = x
        h = sublayer_input(x, self.self_attention_layer_norm, self.norm_first)
        h, weights = self.self_attention(
            h,
            h,
            key_padding_mask=padding_mask,
            return_attention_scores=True,
            training=training,
        )  # (batch, src_len, d_model); weights (batch, heads, src_len, src_len)
        x = sublayer_output(
            residual, h, self.self_attention_layer_norm, self.self_attention_dropout,
            self.norm_first, training,
        )

        residual = x
        h = sublayer_input(x, self.feed_forward_layer_norm, self.norm_first)
        h = self.feed_forward_outer(self.feed_forward_inner(h))  # (batch, src_len, d_model)
        x = sublayer_output(
            residual, h, self.feed_forward_layer_norm, self.feed_forward_dropout,
            self.norm_first, training,
        )
        if return_attention_scores:
            return x, weights
        return x

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "d_model": self.d_model,
                "num_heads": self.num_heads,
                "d_ff": self.d_ff,
                "dropout": self.dropout,
                "activation": keras.activations.serialize(self.activation),
                "norm_first": self.norm_first,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
