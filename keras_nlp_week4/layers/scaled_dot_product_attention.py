"""Scaled dot-product attention and the shared "scores -> weights -> context" path.

Everything that turns attention scores into a context vector lives here, once:

- `attend_from_scores`: masked softmax over the key axis, optional dropout, weighted sum
  of the values. Used by `scaled_dot_product_attention` and by every score-based layer.
- `scaled_dot_product_attention`: Vaswani et al. 2017, eq. (1). Also used by
  `MultiHeadAttention` and by `LuongAttention(score="scaled_dot")`.
- `additive_scores`: `v^T tanh(W q + U k)`, the score of `BahdanauAttention` and of
  `LuongAttention(score="concat")`.
- `ScoreAttentionBase`: the layer skeleton shared by `BahdanauAttention` and
  `LuongAttention` (one decoder step `(batch, d_q)` or many `(batch, tgt_len, d_q)`);
  subclasses only define `compute_scores`.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_nlp_week4.layers.masks import masked_softmax, merge_padding_and_attention_masks


def attend_from_scores(scores, value, mask=None, dropout=None, training=None):
    """Turns raw attention scores into weights and a context vector.

    `weights = masked_softmax(scores, mask)`, `context = weights @ value`.

    Args:
        scores: float tensor `(..., q, k)`.
        value: float tensor `(..., k, d_v)`.
        mask: optional bool tensor broadcastable to `(..., q, k)`, `True` = may attend.
        dropout: optional `keras.layers.Dropout` applied to the weights before the
            weighted sum (Vaswani et al. 2017, section 5.4 applies it to the sub-layer
            outputs; applying it to the attention weights is the common practice,
            e.g. in `keras.layers.MultiHeadAttention`).
        training: python bool, passed to `dropout`.

    Returns:
        `(context, weights)`: context `(..., q, d_v)`; weights `(..., q, k)`, before
        dropout (so they can be inspected or plotted); masked positions are exactly 0.
    """
    weights = masked_softmax(scores, mask, axis=-1)
    dropped = weights if dropout is None else dropout(weights, training=training)
    # (..., q, k) @ (..., k, d_v) -> (..., q, d_v)
    context = ops.matmul(dropped, value)
    return context, weights


def scaled_dot_product_scores(query, key):
    """`Q K^T / sqrt(d_k)` (Vaswani et al. 2017, eq. (1), before the softmax).

    Args:
        query: float tensor `(..., q, d_k)`.
        key: float tensor `(..., k, d_k)`.

    Returns:
        float tensor `(..., q, k)`.
    """
    depth = query.shape[-1]
    if depth is None:
        depth = ops.cast(ops.shape(query)[-1], query.dtype)
        scale = ops.cast(1.0, query.dtype) / ops.sqrt(depth)
    else:
        scale = 1.0 / math.sqrt(depth)
    # (..., q, d_k) @ (..., d_k, k) -> (..., q, k)
    scores = ops.matmul(query, ops.swapaxes(key, -1, -2))
    # Without the scale the dot products grow like sqrt(d_k) and push the softmax into
    # regions with tiny gradients (Vaswani et al. 2017, section 3.2.1).
    return scores * ops.cast(scale, scores.dtype)


def additive_scores(query, processed_keys, query_dense, score_dense):
    """Additive ("concat") scores `v^T tanh(W q + U k)` (Bahdanau et al. 2015, eq. (6)).

    Args:
        query: float tensor `(batch, tgt_len, d_q)`.
        processed_keys: float tensor `(batch, src_len, units)`, the keys already projected
            by `U` (computed once per source sentence).
        query_dense: the `W` projection, `d_q -> units`.
        score_dense: the `v` projection, `units -> 1`.

    Returns:
        float tensor `(batch, tgt_len, src_len)`.
    """
    # (batch, tgt_len, 1, units) + (batch, 1, src_len, units): every step with every
    # source position.
    hidden = ops.tanh(
        ops.expand_dims(query_dense(query), axis=2) + ops.expand_dims(processed_keys, axis=1)
    )
    return ops.squeeze(score_dense(hidden), axis=-1)  # (batch, tgt_len, src_len)


def scaled_dot_product_attention(query, key, value, mask=None, dropout=None, training=None):
    """Scaled dot-product attention, Vaswani et al. 2017, section 3.2.1, eq. (1).

    `Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V`

    Works for any number of leading dimensions (batch, heads, ...), which only need to
    broadcast against each other.

    Args:
        query: float tensor `(..., q, d_k)`.
        key: float tensor `(..., k, d_k)`.
        value: float tensor `(..., k, d_v)`.
        mask: optional bool tensor broadcastable to `(..., q, k)`, `True` = may attend
            (e.g. `causal_mask(q, k)` or a padding mask reshaped to `(batch, 1, 1, k)`).
        dropout: optional `keras.layers.Dropout` applied to the attention weights.
        training: python bool, passed to `dropout`.

    Returns:
        `(context, weights)`: context `(..., q, d_v)`; weights `(..., q, k)` (before
        dropout), exactly 0 at masked positions.

    Example:

    ```python
    q = k = v = np.random.rand(2, 8, 5, 16).astype("float32")  # (batch, heads, len, d)
    context, weights = scaled_dot_product_attention(q, k, v, mask=causal_mask(5))
    context.shape  # (2, 8, 5, 16)
    weights.shape  # (2, 8, 5, 5)
    ```
    """
    scores = scaled_dot_product_scores(query, key)
    return attend_from_scores(scores, value, mask=mask, dropout=dropout, training=training)


class ScoreAttentionBase(keras.layers.Layer):
    """Base for single-head "score function" attention (Bahdanau, Luong).

    Subclasses implement `compute_scores(query, keys, processed_keys)` for a rank-3
    query and may override `process_keys(keys)` to precompute the part of the score that
    only depends on the encoder states (so a decoder loop computes it once per
    sequence). This class handles the rest: a rank-2 query (one decoder step) versus a
    rank-3 query (all steps, teacher forcing), the padding mask, the masked softmax and
    the weighted sum of the encoder states.

    Args:
        dropout: float in [0, 1). Dropout rate on the attention weights. Defaults to 0.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        query: `(batch, d_q)` for one decoder step or `(batch, tgt_len, d_q)`.
        keys: `(batch, src_len, d_k)` encoder hidden states; also the values.
        mask: optional bool `(batch, src_len)`, `True` = real source token.
        processed_keys: optional output of `process_keys(keys)`, reused across steps.
        training: python bool, whether dropout is active.

    Returns:
        `(context, weights)`: context `(batch, d_k)` / `(batch, tgt_len, d_k)`; weights
        `(batch, src_len)` / `(batch, tgt_len, src_len)`, exactly 0 at masked positions.
    """

    def __init__(self, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.dropout = dropout
        self._dropout_layer = keras.layers.Dropout(rate=dropout, dtype=self.dtype_policy)
        # The output context is aligned with the query, so it inherits the query's Keras
        # mask (see `compute_mask`); claiming support also stops Keras warning that an
        # explicitly passed `mask=` is being "destroyed".
        self.supports_masking = True

    def process_keys(self, keys):
        """Part of the score that depends only on the encoder states.

        Args:
            keys: `(batch, src_len, d_k)`.

        Returns:
            A tensor to pass back as `processed_keys=`; the keys themselves by default.
        """
        return keys

    def compute_scores(self, query, keys, processed_keys):
        """Alignment scores for a rank-3 query.

        Args:
            query: `(batch, tgt_len, d_q)`.
            keys: `(batch, src_len, d_k)`.
            processed_keys: output of `process_keys(keys)`.

        Returns:
            float tensor `(batch, tgt_len, src_len)`.
        """
        raise NotImplementedError

    def call(self, query, keys, mask=None, processed_keys=None, training=None):
        single_step = len(query.shape) == 2
        if single_step:
            # (batch, d_q) -> (batch, 1, d_q): one code path for both cases.
            query = ops.expand_dims(query, axis=1)
        if processed_keys is None:
            processed_keys = self.process_keys(keys)
        scores = self.compute_scores(query, keys, processed_keys)  # (batch, tgt_len, src_len)
        # (batch, src_len) -> (batch, 1, src_len): the same source tokens for every step.
        mask = merge_padding_and_attention_masks(key_padding_mask=mask)
        context, weights = attend_from_scores(
            scores, keys, mask=mask, dropout=self._dropout_layer, training=training
        )
        if single_step:
            context = ops.squeeze(context, axis=1)  # (batch, d_k)
            weights = ops.squeeze(weights, axis=1)  # (batch, src_len)
        return context, weights

    def compute_mask(self, query, previous_mask=None):
        # `previous_mask` may be the source padding mask passed as `mask=`; it describes
        # the keys, not the outputs. The context rows follow the query rows instead.
        query_mask = getattr(query, "_keras_mask", None)
        if query_mask is None or len(query.shape) != 3:
            return None
        return (query_mask, None)

    def get_config(self):
        config = super().get_config()
        config.update({"dropout": self.dropout})
        return config
