"""Single-head "score function" attention of the RNN decoders (Bahdanau, Luong): what they share.

- `ScoreAttentionBase`: the layer skeleton of `BahdanauAttention` and `LuongAttention` (one decoder step
  `(batch, d_q)` or many `(batch, tgt_len, d_q)`); subclasses only define `compute_scores`.
- `additive_scores`: `v^T tanh(W q + U k)`, the score of `BahdanauAttention` and of
  `LuongAttention(score="concat")`.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_nlp_week4.layers.masks import merge_padding_and_attention_masks
from keras_nlp_week4.layers.scaled_dot_product_attention import attend_from_scores


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
