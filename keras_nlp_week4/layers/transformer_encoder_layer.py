"""One Transformer encoder layer: self-attention + feed-forward (Vaswani et al. 2017)."""

from __future__ import annotations

import keras

from keras_nlp_week4.layers.transformer_layer_base import TransformerLayerBase


@keras.saving.register_keras_serializable(package="keras_nlp_week4")
class TransformerEncoderLayer(TransformerLayerBase):
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

    def create_attention_sublayers(self) -> None:
        self.self_attention = self.attention("self_attention")
        self.self_attention_layer_norm = self.layer_norm("self_attention_layer_norm")
        self.self_attention_dropout = self.residual_dropout()

    def layer_norms(self) -> tuple[keras.layers.LayerNormalization, ...]:
        return (self.self_attention_layer_norm, self.feed_forward_layer_norm)

    def build(self, x_shape):
        self.self_attention.build(x_shape, x_shape)
        self.self_attention_layer_norm.build(x_shape)
        self.build_feed_forward(x_shape)
        self.built = True

    def call(self, x, padding_mask=None, return_attention_scores=False, training=None):
        if padding_mask is None:
            padding_mask = getattr(x, "_keras_mask", None)

        # Self-attention, section 3.2.2: every position attends over the real tokens.
        h = self.sublayer_input(x, self.self_attention_layer_norm)
        attended = self.self_attention(h, h, key_padding_mask=padding_mask,
                                       return_attention_scores=return_attention_scores,
                                       training=training)
        x = self.sublayer_output(x, attended.output, self.self_attention_layer_norm,
                                 self.self_attention_dropout, training)  # (batch, src_len, d_model)
        x = self.feed_forward(x, training)
        if return_attention_scores:
            return x, attended.scores  # scores (batch, heads, src_len, src_len)
        return x
