"""Scaled dot-product attention and the shared "scores -> weights -> context" path.

Everything that turns attention scores into a context vector lives here, once:

- `attend_from_scores`: masked softmax over the key axis, optional dropout, weighted sum
  of the values. Used by `scaled_dot_product_attention` and by every score-based layer
  (`score_attention.ScoreAttentionBase`).
- `scaled_dot_product_attention`: Vaswani et al. 2017, eq. (1). Also used by
  `MultiHeadAttention` and by `LuongAttention(score="scaled_dot")`.
"""

from __future__ import annotations

import math

from keras import ops

from keras_nlp_week4.layers.masks import masked_softmax


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
