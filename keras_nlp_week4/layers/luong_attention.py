"""Luong (multiplicative / global) attention with all of its score functions."""

from __future__ import annotations

import keras
from keras import ops

from keras_nlp_week4.layers.scaled_dot_product_attention import scaled_dot_product_scores
from keras_nlp_week4.layers.score_attention import ScoreAttentionBase, additive_scores

SCORE_FUNCTIONS = ("dot", "general", "concat", "location", "scaled_dot")


@keras.saving.register_keras_serializable(package="keras_nlp_week4")
class LuongAttention(ScoreAttentionBase):
    """Global attention of Luong, Pham and Manning 2015, plus scaled dot-product scores.

    Luong et al. 2015, section 3.1, eq. (8), score the current target state `h_t`
    against every source state `h̄_s`; the weights are `a_t(s) = softmax_s(score)` and
    the context is `c_t = sum_s a_t(s) h̄_s`:

    ```
    "dot":        score = h_t^T h̄_s
    "general":    score = h_t^T W_a h̄_s
    "concat":     score = v_a^T tanh(W_a [h_t; h̄_s])
    "location":   a_t   = softmax(W_a h_t)                  (Luong 2015, section 3.1)
    "scaled_dot": score = h_t^T h̄_s / sqrt(d)              (Vaswani et al. 2017, eq. (1))
    ```

    "location" ignores the source content: `W_a` maps `h_t` to one score per source
    position, so it needs a fixed `max_source_length`; scores are sliced to the actual
    `src_len`. "concat" is computed as `W_q h_t + W_k h̄_s`, which equals
    `W_a [h_t; h̄_s]` with `W_a = [W_q, W_k]` and lets the source half be precomputed.

    Args:
        score: str. One of `"dot"`, `"general"`, `"concat"`, `"location"`,
            `"scaled_dot"`. Defaults to `"general"`.
        units: int. Output size of `W_a` for `"concat"` (required there, unused
            otherwise).
        max_source_length: int. Output size of `W_a` for `"location"` (required there,
            unused otherwise).
        dropout: float. Dropout rate on the attention weights. Defaults to 0.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        query: `(batch, d_q)` for one decoder step or `(batch, tgt_len, d_q)` for many.
        keys: `(batch, src_len, d_k)` encoder hidden states (also the values). For
            `"dot"` and `"scaled_dot"`, `d_q` must equal `d_k`.
        mask: optional bool `(batch, src_len)`, `True` = real source token.
        processed_keys: optional output of `process_keys(keys)` (`W_a h̄_s` for
            "general", `W_k h̄_s` for "concat", the keys otherwise), reused across
            decoder steps.
        training: python bool, whether dropout is active.

    Returns:
        `(context, weights)`: context `(batch, d_k)` or `(batch, tgt_len, d_k)`; weights
        `(batch, src_len)` or `(batch, tgt_len, src_len)`, summing to 1 over the real
        source tokens and exactly 0 at masked ones.

    Example:

    ```python
    encoder_states = np.random.rand(2, 7, 16).astype("float32")  # (batch, src_len, d_k)
    decoder_states = np.random.rand(2, 5, 16).astype("float32")  # (batch, tgt_len, d_q)
    attention = LuongAttention(score="general")
    context, weights = attention(decoder_states, encoder_states)
    context.shape, weights.shape  # (2, 5, 16), (2, 5, 7)
    ```
    """

    def __init__(
        self,
        score: str = "general",
        units: int | None = None,
        max_source_length: int | None = None,
        dropout: float = 0.0,
        **kwargs,
    ):
        if score not in SCORE_FUNCTIONS:
            raise ValueError(
                f"Unknown score function {score!r}. Valid values are: "
                f"{', '.join(repr(name) for name in SCORE_FUNCTIONS)}."
            )
        if score == "concat" and units is None:
            raise ValueError(
                "`score='concat'` needs `units` (the output size of W_a), got `units=None`."
            )
        if score == "location" and max_source_length is None:
            raise ValueError(
                "`score='location'` needs `max_source_length` (W_a maps the query to one "
                "score per source position), got `max_source_length=None`."
            )
        super().__init__(dropout=dropout, **kwargs)
        self.score = score
        self.units = units
        self.max_source_length = max_source_length

    def build(self, query_shape, keys_shape):
        query_dim, keys_dim = query_shape[-1], keys_shape[-1]
        if self.score in ("dot", "scaled_dot") and query_dim != keys_dim:
            raise ValueError(
                f"`score={self.score!r}` needs query and keys of the same depth, got "
                f"query depth {query_dim} and keys depth {keys_dim}. Use "
                "`score='general'` to learn a projection between them."
            )
        self._check_source_length(keys_shape[1])
        if self.score == "general":
            # Stored as h̄_s -> W_a h̄_s so the source side can be precomputed.
            self.keys_dense = keras.layers.Dense(
                query_dim, use_bias=False, dtype=self.dtype_policy, name="W_a"
            )
            self.keys_dense.build(keys_shape)
        elif self.score == "concat":
            self.query_dense = keras.layers.Dense(
                self.units, use_bias=False, dtype=self.dtype_policy, name="W_a_query"
            )
            self.keys_dense = keras.layers.Dense(
                self.units, use_bias=False, dtype=self.dtype_policy, name="W_a_keys"
            )
            self.score_dense = keras.layers.Dense(
                1, use_bias=False, dtype=self.dtype_policy, name="v_a"
            )
            self.query_dense.build(query_shape)
            self.keys_dense.build(keys_shape)
            self.score_dense.build((None, None, None, self.units))
        elif self.score == "location":
            self.query_dense = keras.layers.Dense(
                self.max_source_length, use_bias=False, dtype=self.dtype_policy, name="W_a"
            )
            self.query_dense.build(query_shape)
        self.built = True

    def _check_source_length(self, src_len):
        if (
            self.score == "location"
            and isinstance(src_len, int)
            and src_len > self.max_source_length
        ):
            raise ValueError(
                f"`score='location'` was built for at most max_source_length="
                f"{self.max_source_length} source positions, got src_len={src_len}."
            )

    def process_keys(self, keys):
        if self.score in ("general", "concat"):
            # (batch, src_len, d_q) for "general", (batch, src_len, units) for "concat"
            return self.keys_dense(keys)
        return keys

    def compute_scores(self, query, keys, processed_keys):
        if self.score == "dot":
            # (batch, tgt_len, d) @ (batch, d, src_len) -> (batch, tgt_len, src_len)
            return ops.matmul(query, ops.swapaxes(keys, -1, -2))
        if self.score == "scaled_dot":
            return scaled_dot_product_scores(query, keys)
        if self.score == "general":
            return ops.matmul(query, ops.swapaxes(processed_keys, -1, -2))
        if self.score == "concat":
            # v_a^T tanh(W_q h_t + W_k h̄_s), with W_k h̄_s = processed_keys.
            return additive_scores(query, processed_keys, self.query_dense, self.score_dense)
        # "location": one score per position up to max_source_length, cut to this batch.
        self._check_source_length(keys.shape[1])
        scores = self.query_dense(query)  # (batch, tgt_len, max_source_length)
        return scores[:, :, : ops.shape(keys)[1]]  # (batch, tgt_len, src_len)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "score": self.score,
                "units": self.units,
                "max_source_length": self.max_source_length,
            }
        )
        return config
