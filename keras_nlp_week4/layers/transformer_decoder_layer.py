"""One Transformer decoder layer with key/value caches (Vaswani et al. 2017)."""

from __future__ import annotations

import keras
from keras import ops

from keras_nlp_week4.layers.multi_head_attention import AttentionOutput
from keras_nlp_week4.layers.transformer_layer_base import TransformerLayerBase


@keras.saving.register_keras_serializable(package="keras_nlp_week4")
class TransformerDecoderLayer(TransformerLayerBase):
    """Transformer decoder layer, Vaswani et al. 2017, sections 3.1, 3.2.3 and 3.3.

    ```
    x = LayerNorm(x + Dropout(MaskedMultiHeadSelfAttention(x)))         # causal, 3.2.3
    x = LayerNorm(x + Dropout(MultiHeadAttention(x, encoder_outputs)))  # cross-attention
    x = LayerNorm(x + Dropout(FFN(x)))                                  # eq. (2)
    ```

    Post-norm as in the paper by default; `norm_first=True` gives pre-norm
    (`x + Dropout(Sublayer(LayerNorm(x)))`, Xiong et al. 2020). The self-attention is
    causal: position `t` never sees positions after `t` (section 3.2.3).

    For incremental (autoregressive) decoding the layer takes a preallocated
    self-attention cache `(batch, 2, num_heads, max_len, head_dim)` and the index of the
    first new token, and returns the updated cache; the encoder side can be given as a
    cross-attention cache from `compute_cross_attention_cache`, computed once per source
    sentence. Both caches are handled by `MultiHeadAttention` without `slice_update`, so
    the decoding step exports to ONNX.

    Args:
        d_model: int. Width of the layer's input and output (and of the encoder outputs).
        num_heads: int. Attention heads; must divide `d_model`.
        d_ff: int. Inner width of the position-wise feed-forward network.
        dropout: float in [0, 1). Rate of the residual dropout (section 5.4) and of the
            attention-weight dropout. Defaults to 0.1.
        activation: activation of the feed-forward network. Defaults to `"relu"`.
        norm_first: bool. Pre-norm instead of the paper's post-norm. Defaults to False.
        layer_norm_epsilon: float. LayerNorm epsilon. Defaults to 1e-6.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        x: `(batch, tgt_len, d_model)`; with a self-attention cache, the new tokens only
            (usually `tgt_len == 1`).
        encoder_outputs: `(batch, src_len, d_model)`. May be None when
            `cross_attention_cache` is given.
        decoder_padding_mask: bool, `True` = real token. `(batch, tgt_len)` in a full
            pass (defaults to the Keras mask of `x`); `(batch, max_len)` over the cache
            positions with a self-attention cache (not inferred from `x` there).
        encoder_padding_mask: bool `(batch, src_len)`, `True` = real source token.
            Defaults to the Keras mask of `encoder_outputs`.
        self_attention_cache: optional `(batch, 2, num_heads, max_len, head_dim)`.
        self_attention_cache_update_index: python int or scalar int tensor, the position
            of the first token of `x`; required with `self_attention_cache`.
        cross_attention_cache: optional `(sources, 2, num_heads, src_len, head_dim)`, used
            instead of projecting `encoder_outputs`; `batch` must be a multiple of `sources`
            (consecutive rows of `x`, such as the beams of one sentence, share one row of the
            cache), with `encoder_padding_mask` `(sources, src_len)`.
        return_attention_scores: bool. Also return the cross-attention weights.
        training: python bool, whether dropout is active.

    Returns:
        An `AttentionOutput(output, scores, cache)`, the return type of `MultiHeadAttention`:
        `output` `(batch, tgt_len, d_model)`; `scores` the cross-attention weights
        `(batch, num_heads, tgt_len, src_len)` with `return_attention_scores`, else None;
        `cache` the updated self-attention cache when one is passed, else None.

    Example:

    ```python
    layer = TransformerDecoderLayer(d_model=16, num_heads=2, d_ff=32)
    memory = np.random.rand(2, 7, 16).astype("float32")
    y = layer(np.random.rand(2, 5, 16).astype("float32"), memory).output  # teacher forcing

    cache = np.zeros((2, 2, 2, 5, 8), "float32")  # (batch, 2, heads, max_len, head_dim)
    cross = layer.compute_cross_attention_cache(memory)
    step = layer(y[:, :1], self_attention_cache=cache, self_attention_cache_update_index=0,
                 cross_attention_cache=cross)
    step.output, step.cache  # (2, 1, 16), (2, 2, 2, 5, 8)
    ```
    """

    def create_attention_sublayers(self) -> None:
        self.self_attention = self.attention("self_attention")
        self.self_attention_layer_norm = self.layer_norm("self_attention_layer_norm")
        self.self_attention_dropout = self.residual_dropout()
        self.cross_attention = self.attention("cross_attention")
        self.cross_attention_layer_norm = self.layer_norm("cross_attention_layer_norm")
        self.cross_attention_dropout = self.residual_dropout()

    def layer_norms(self) -> tuple[keras.layers.LayerNormalization, ...]:
        return (self.self_attention_layer_norm, self.cross_attention_layer_norm,
                self.feed_forward_layer_norm)

    def build(self, x_shape, encoder_outputs_shape=None):
        # The encoder outputs are d_model wide, so the cross-attention can be built even
        # when a call only passes a cross-attention cache.
        encoder_outputs_shape = encoder_outputs_shape or tuple(x_shape[:-1]) + (self.d_model,)
        self.self_attention.build(x_shape, x_shape)
        self.self_attention_layer_norm.build(x_shape)
        self.cross_attention.build(x_shape, encoder_outputs_shape)
        self.cross_attention_layer_norm.build(x_shape)
        self.build_feed_forward(x_shape)
        self.built = True

    def compute_cross_attention_cache(self, encoder_outputs):
        """Projects the encoder outputs to cross-attention keys/values once per source.

        Args:
            encoder_outputs: `(batch, src_len, d_model)`.

        Returns:
            `(batch, 2, num_heads, src_len, head_dim)`, for `cross_attention_cache=`.
        """
        if not self.built:
            self.build(encoder_outputs.shape, encoder_outputs.shape)
        return self.cross_attention.compute_cache(encoder_outputs)

    def call(
        self,
        x,
        encoder_outputs=None,
        decoder_padding_mask=None,
        encoder_padding_mask=None,
        self_attention_cache=None,
        self_attention_cache_update_index=None,
        cross_attention_cache=None,
        return_attention_scores=False,
        training=None,
    ) -> AttentionOutput:
        use_cache = self_attention_cache is not None
        if use_cache and self_attention_cache_update_index is None:
            raise ValueError("`self_attention_cache` needs `self_attention_cache_update_index`.")
        if encoder_outputs is None and cross_attention_cache is None:
            raise ValueError("Pass `encoder_outputs` or `cross_attention_cache`.")
        if decoder_padding_mask is None and not use_cache:
            # With a cache, x's own mask covers only the new tokens, not the cached keys.
            decoder_padding_mask = getattr(x, "_keras_mask", None)
        if encoder_padding_mask is None and encoder_outputs is not None:
            encoder_padding_mask = getattr(encoder_outputs, "_keras_mask", None)

        # Masked (causal) self-attention, section 3.2.3; with a cache, over the cached positions too.
        h = self.sublayer_input(x, self.self_attention_layer_norm)
        self_attended = self.self_attention(
            h, h, key_padding_mask=decoder_padding_mask, use_causal_mask=True,
            cache=self_attention_cache, cache_update_index=self_attention_cache_update_index,
            training=training)  # cache (batch, 2, heads, max_len, head_dim) or None
        x = self.sublayer_output(x, self_attended.output, self.self_attention_layer_norm,
                                 self.self_attention_dropout, training)  # (batch, tgt_len, d_model)

        # Cross-attention over the encoder outputs: queries from the decoder.
        h = self.sublayer_input(x, self.cross_attention_layer_norm)
        cross_output, cross_scores = self._cross_attend(
            h, encoder_outputs, encoder_padding_mask, cross_attention_cache, return_attention_scores, training)
        x = self.sublayer_output(x, cross_output, self.cross_attention_layer_norm,
                                 self.cross_attention_dropout, training)

        # Position-wise feed-forward network, eq. (2).
        x = self.feed_forward(x, training)
        # scores (batch, heads, tgt_len, src_len) or None
        return AttentionOutput(x, cross_scores, self_attended.cache)

    def _cross_attend(self, h, encoder_outputs, encoder_padding_mask, cross_attention_cache,
                      return_attention_scores, training):
        if cross_attention_cache is None:
            attended = self.cross_attention(h, encoder_outputs, key_padding_mask=encoder_padding_mask,
                                            return_attention_scores=return_attention_scores, training=training)
            return attended.output, attended.scores
        # A cross-attention cache may hold one row per source sentence for several rows of `h` (the
        # beams of that sentence, CTranslate2's layout): the beams' queries then become query positions
        # of their sentence, which attend to its keys independently, without copying the keys per beam.
        batch, tgt_len = ops.shape(h)[0], ops.shape(h)[1]
        sources = ops.shape(cross_attention_cache)[0]
        grouped = ops.reshape(h, (sources, -1, self.d_model))  # (sources, beams * tgt_len, d_model)
        attended = self.cross_attention(grouped, key_padding_mask=encoder_padding_mask,
                                        cache=cross_attention_cache,
                                        return_attention_scores=return_attention_scores, training=training)
        output = ops.reshape(attended.output, (batch, tgt_len, self.d_model))
        scores = attended.scores
        if scores is not None:
            src_len = ops.shape(scores)[-1]
            # (sources, heads, beams * tgt_len, src) -> (sources, beams, heads, tgt_len, src) -> (batch, ...)
            scores = ops.reshape(scores, (sources, self.num_heads, -1, tgt_len, src_len))
            scores = ops.reshape(ops.transpose(scores, (0, 2, 1, 3, 4)), (batch, self.num_heads, tgt_len, src_len))
        return output, scores
