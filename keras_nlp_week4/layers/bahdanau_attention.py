"""Bahdanau (additive / "concat") attention."""

from __future__ import annotations

import keras

from keras_nlp_week4.layers.score_attention import ScoreAttentionBase, additive_scores


@keras.saving.register_keras_serializable(package="keras_nlp_week4")
class BahdanauAttention(ScoreAttentionBase):
    """Additive attention of Bahdanau, Cho and Bengio 2015.

    The alignment model of Bahdanau et al. 2015 (section 3.1, eq. (6); appendix A.1.2)
    scores every encoder state `h_j` against the decoder state `s`:

    ```
    e_j   = v_a^T tanh(W_a s + U_a h_j)
    a_j   = softmax_j(e_j)
    c     = sum_j a_j h_j
    ```

    `U_a h_j` does not depend on the decoder step, so it can be computed once per source
    sentence with `process_keys(keys)` and passed back as `processed_keys=` at every step
    (the paper's appendix makes the same remark). In the paper `s` is the previous
    decoder state `s_{i-1}`; which state is passed as `query` is the caller's choice.

    Args:
        units: int. Size of the alignment MLP's hidden layer (`n'` in the paper).
        use_bias: bool. Whether `U_a h_j` gets a bias (the paper has none; a bias inside
            the `tanh` is common in implementations). Defaults to `True`.
        dropout: float. Dropout rate on the attention weights. Defaults to 0.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`
            (e.g. `name`, `dtype`).

    Call arguments:
        query: `(batch, d_q)` for one decoder step or `(batch, tgt_len, d_q)` for many.
        keys: `(batch, src_len, d_k)` encoder hidden states (also the values).
        mask: optional bool `(batch, src_len)`, `True` = real source token.
        processed_keys: optional `(batch, src_len, units)`, the output of
            `process_keys(keys)`, to avoid recomputing `U_a h_j` at every decoder step.
        training: python bool, whether dropout is active.

    Returns:
        `(context, weights)`: context `(batch, d_k)` or `(batch, tgt_len, d_k)`; weights
        `(batch, src_len)` or `(batch, tgt_len, src_len)`, summing to 1 over the real
        source tokens and exactly 0 at masked ones.

    Example:

    ```python
    encoder_states = np.random.rand(2, 7, 16).astype("float32")  # (batch, src_len, d_k)
    decoder_state = np.random.rand(2, 32).astype("float32")      # (batch, d_q)
    attention = BahdanauAttention(units=10)
    processed = attention.process_keys(encoder_states)            # once per sentence
    context, weights = attention(decoder_state, encoder_states, processed_keys=processed)
    context.shape, weights.shape  # (2, 16), (2, 7)
    ```
    """

    def __init__(self, units: int, use_bias: bool = True, dropout: float = 0.0, **kwargs):
        super().__init__(dropout=dropout, **kwargs)
        self.units = units
        self.use_bias = use_bias
        self.query_dense = keras.layers.Dense(
            units, use_bias=False, dtype=self.dtype_policy, name="W_a"
        )
        self.keys_dense = keras.layers.Dense(
            units, use_bias=use_bias, dtype=self.dtype_policy, name="U_a"
        )
        self.score_dense = keras.layers.Dense(
            1, use_bias=False, dtype=self.dtype_policy, name="v_a"
        )

    def build(self, query_shape, keys_shape):
        self.query_dense.build(query_shape)
        # `process_keys` may already have built U_a (a decoder precomputes it before the first step).
        if not self.keys_dense.built:
            self.keys_dense.build(keys_shape)
        self.score_dense.build((None, None, None, self.units))
        self.built = True

    def process_keys(self, keys):
        return self.keys_dense(keys)  # (batch, src_len, units)

    def compute_scores(self, query, keys, processed_keys):
        # e_j = v_a^T tanh(W_a s + U_a h_j), with U_a h_j = processed_keys.
        return additive_scores(query, processed_keys, self.query_dense, self.score_dense)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "use_bias": self.use_bias})
        return config
