"""Multi-head attention with an ONNX-friendly key/value cache (Vaswani et al. 2017)."""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import keras
from keras import ops
from keras.src import tree as keras_tree

from keras_nlp_week4.layers.masks import causal_mask, merge_padding_and_attention_masks
from keras_nlp_week4.layers.scaled_dot_product_attention import scaled_dot_product_attention

# Axis of the sequence in a cache `(batch, 2, num_heads, length, head_dim)`.
_CACHE_LENGTH_AXIS = 3


class AttentionOutput(NamedTuple):
    """What `MultiHeadAttention` returns, whichever outputs a call asks for: fields read by name.

    Attributes:
        output: `(batch, q_len, output_dim)`, always there.
        scores: `(batch, num_heads, q_len, k_len)` attention weights (after the softmax, before
            dropout; exactly 0 where masked) with `return_attention_scores=True`, else None.
        cache: `(batch, 2, num_heads, length, head_dim)` when a cache was passed (the updated
            self-attention cache, or the cross-attention cache as given), else None.

    Example:

    ```python
    attended = mha(x, x, return_attention_scores=True)
    attended.output, attended.scores  # (batch, q_len, d), (batch, heads, q_len, k_len)
    attended.cache                    # None: no cache was passed
    ```
    """

    output: Any
    scores: Any = None
    cache: Any = None

    # Keras requires every output of a layer in a functional model to be a tensor, so in Keras'
    # structure utilities (`keras.tree`, used by symbolic calls and `Functional`) the fields left None
    # are not leaves; the flags of which fields are there travel as the node's metadata. tf.nest (tf.function,
    # SavedModel, tf2onnx) sees a plain namedtuple, where None is allowed.
    def tree_flatten(self):
        present = tuple(field is not None for field in self)
        names = tuple(name for name, there in zip(self._fields, present, strict=True) if there)
        return [field for field in self if field is not None], present, names

    @classmethod
    def tree_unflatten(cls, present, children):
        children = iter(children)
        return cls(*(next(children) if there else None for there in present))


with warnings.catch_warnings():
    # optree notes that namedtuples are already registered globally; this registration is Keras' own.
    warnings.filterwarnings("ignore", message=".*namedtuple.*", category=UserWarning)
    keras_tree.register_tree_node_class(AttentionOutput)


def _split_heads(x):
    """(batch, len, heads, head_dim) -> (batch, heads, len, head_dim)."""
    return ops.transpose(x, (0, 2, 1, 3))


def _clone_initializer(initializer):
    # A seeded initializer shared by several projections would give them identical weights.
    return initializer.__class__.from_config(initializer.get_config())


@keras.saving.register_keras_serializable(package="keras_nlp_week4")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention, Vaswani et al. 2017, section 3.2.2.

    ```
    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O
    head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)
    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V        (section 3.2.1, eq. 1)
    ```

    Written from scratch on `keras.ops` (it does not wrap `keras.layers.MultiHeadAttention`)
    so that it can carry a preallocated key/value cache for incremental decoding that
    tf2onnx converts: the cache is written with one `scatter_update` (ONNX `ScatterND`), never
    with `slice_update` (XlaDynamicUpdateSlice has no ONNX conversion).

    Two kinds of cache, both shaped `(batch, 2, num_heads, length, head_dim)` with index 0
    holding the keys and index 1 the values:

    - Self-attention (`cache` and `cache_update_index` given): `length` is the maximum
      decoding length. The keys/values of the `q_len` query tokens are written at
      positions `[index, index + q_len)`; the queries attend over all cached positions
      with the causal rule `j <= index + i`, so not-yet-written slots get 0 weight. The
      updated cache is returned.
    - Cross-attention (`cache` given, `cache_update_index` None): the cache holds the
      projected keys/values of the encoder outputs (see `compute_cache`); the key and
      value projections are skipped.

    Args:
        num_heads: int. Number of heads `h`.
        key_dim: int. Size of each query/key head, `d_k` (the paper uses
            `d_model / h`).
        value_dim: int. Size of each value head, `d_v`. Defaults to `key_dim`.
        dropout: float in [0, 1). Dropout rate on the attention weights.
        use_bias: bool. Whether the projections have biases. Defaults to True.
        output_dim: int. Width of the output. Defaults to the query's last dimension.
        kernel_initializer: initializer of the projection kernels.
        bias_initializer: initializer of the projection biases.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        query: `(batch, q_len, d_query)`.
        value: `(batch, k_len, d_value)`. May be None with a cross-attention cache.
        key: `(batch, k_len, d_key)`. Defaults to `value`.
        attention_mask: bool `(batch | 1, q_len, k_len)`, `True` = may attend.
        key_padding_mask: bool `(batch, k_len)`, `True` = real key. With a
            self-attention cache it covers the cache positions, `(batch, max_len)`.
        use_causal_mask: bool. Query `i` sees only keys `j <= i` (`j <= index + i`
            with a self-attention cache, where the causal rule is always applied).
        return_attention_scores: bool. Also return the attention weights.
        cache: optional cache tensor, see above.
        cache_update_index: python int or scalar int tensor; the position of the first
            query token in a self-attention cache.
        training: python bool, whether dropout is active.

    Returns:
        An `AttentionOutput(output, scores, cache)`, one type for every call: `output`
        `(batch, q_len, output_dim)`; `scores` `(batch, num_heads, q_len, k_len)` with
        `return_attention_scores` (exactly 0 where masked), else None; `cache` the updated
        (self-attention) or given (cross-attention) cache when one is passed, else None.

    Example:

    ```python
    mha = MultiHeadAttention(num_heads=2, key_dim=4)
    x = np.random.rand(3, 5, 8).astype("float32")
    attended = mha(x, x, use_causal_mask=True, return_attention_scores=True)
    attended.output.shape, attended.scores.shape  # (3, 5, 8), (3, 2, 5, 5)

    # One decoding step with a self-attention cache of length 10:
    cache = np.zeros((3, 2, 2, 10, 4), "float32")
    step = mha(x[:, :1], x[:, :1], cache=cache, cache_update_index=0)
    step.output.shape, step.cache.shape  # (3, 1, 8), (3, 2, 2, 10, 4)
    ```
    """

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        value_dim: int | None = None,
        dropout: float = 0.0,
        use_bias: bool = True,
        output_dim: int | None = None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.value_dim = int(value_dim) if value_dim is not None else self.key_dim
        self.dropout = float(dropout)
        self.use_bias = bool(use_bias)
        self.output_dim = None if output_dim is None else int(output_dim)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        # The output rows are the query rows, so the query's Keras mask passes through.
        # Padding is NOT read from Keras masks here: pass `key_padding_mask` explicitly.
        self.supports_masking = True

    def _projection(self, equation, output_shape, bias_axes, name):
        projection = keras.layers.EinsumDense(
            equation,
            output_shape=output_shape,
            bias_axes=bias_axes if self.use_bias else None,
            kernel_initializer=_clone_initializer(self.kernel_initializer),
            bias_initializer=_clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name=name,
        )
        # Masks act on the attention scores, not on the projections; claiming support only
        # stops Keras warning that a masked query/value "destroys the mask information".
        projection.supports_masking = True
        return projection

    def build(self, query_shape, value_shape=None, key_shape=None):
        # A cross-attention call from a cache may pass no value: assume it is as wide as
        # the query (true inside the Transformer, where everything is d_model wide).
        value_shape = query_shape if value_shape is None else value_shape
        key_shape = value_shape if key_shape is None else key_shape
        output_dim = self.output_dim or query_shape[-1]
        # Project into (batch, len, heads, head_dim); `_split_heads` then moves the heads forward.
        # These einsum equations (unlike "btd,dnh->bnth") are ones Keras' TensorFlow backend runs as
        # plain matmuls + reshapes, which train faster than the generic einsum kernel.
        self.query_dense = self._projection(
            "btd,dnh->btnh", (None, self.num_heads, self.key_dim), "nh", "query"
        )
        self.key_dense = self._projection(
            "btd,dnh->btnh", (None, self.num_heads, self.key_dim), "nh", "key"
        )
        self.value_dense = self._projection(
            "btd,dnh->btnh", (None, self.num_heads, self.value_dim), "nh", "value"
        )
        # Concat(head_1..head_h) W^O as one contraction over (heads, head_dim).
        self.output_dense = self._projection(
            "btnh,nhd->btd", (None, output_dim), "d", "attention_output"
        )
        self.query_dense.build(query_shape)
        self.key_dense.build(key_shape)
        self.value_dense.build(value_shape)
        self.output_dense.build((query_shape[0], query_shape[1], self.num_heads, self.value_dim))
        self.built = True

    def compute_cache(self, value, key=None):
        """Projects `value` (and `key`, default `value`) once, for cross-attention.

        Args:
            value: `(batch, src_len, d_value)`, e.g. the encoder outputs.
            key: optional `(batch, src_len, d_key)`.

        Returns:
            `(batch, 2, num_heads, src_len, head_dim)`: keys at index 0, values at 1.
        """
        self._check_cacheable()
        if not self.built:
            self.build(value.shape, value.shape)
        return self._project_key_value(value, value if key is None else key)

    def _project_key_value(self, value, key):
        """Keys and values projected and stacked as cache entries, `(batch, 2, heads, len, head_dim)`."""
        # (batch, heads, len, head_dim) x 2 -> (batch, 2, heads, len, head_dim)
        return ops.stack([_split_heads(self.key_dense(key)), _split_heads(self.value_dense(value))],
                         axis=1)

    def _check_cacheable(self):
        if self.key_dim != self.value_dim:
            raise ValueError(
                "A key/value cache stacks keys and values in one tensor, so it needs "
                f"key_dim == value_dim; got {self.key_dim} and {self.value_dim}."
            )

    def _update_self_attention_cache(self, cache, new_key_value, index):
        """Writes `new_key_value` into `cache` at positions `[index, index + q_len)`.

        One scatter (`tensor_scatter_nd_update`, ONNX `ScatterND`) into the cache viewed as
        `(batch * 2 * heads, max_len, head_dim)` rows: it writes `q_len` positions per row and leaves
        the rest as it is, where a gather of the new entries to the full length and a `where` over the
        whole cache read and wrote every position at every step. (`slice_update` would be the direct
        op, but it lowers to XlaDynamicUpdateSlice, which tf2onnx cannot convert.)
        """
        shape = ops.shape(cache)
        max_len, head_dim = shape[_CACHE_LENGTH_AXIS], shape[-1]
        q_len = ops.shape(new_key_value)[_CACHE_LENGTH_AXIS]
        rows = shape[0] * shape[1] * shape[2]  # batch * 2 * heads
        # (rows, q_len, 2) indices: row r, position index + i.
        row_ids = ops.broadcast_to(ops.arange(rows, dtype="int32")[:, None], (rows, q_len))
        positions = ops.broadcast_to(
            (ops.arange(q_len, dtype="int32") + ops.cast(index, "int32"))[None, :], (rows, q_len))
        updated = ops.scatter_update(
            ops.reshape(cache, (rows, max_len, head_dim)),
            ops.stack([row_ids, positions], axis=-1),
            ops.reshape(ops.cast(new_key_value, cache.dtype), (rows, q_len, head_dim)),
        )
        return ops.reshape(updated, shape)

    def call(
        self,
        query,
        value=None,
        key=None,
        attention_mask=None,
        key_padding_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        cache=None,
        cache_update_index=None,
        training=None,
    ) -> AttentionOutput:
        key = value if key is None else key
        query_heads = _split_heads(self.query_dense(query))  # (batch, heads, q_len, key_dim)
        q_len = ops.shape(query)[1]
        causal_offset = 0
        if cache is not None:
            self._check_cacheable()
            if cache_update_index is None:
                # Cross-attention: keys/values were projected once by `compute_cache`.
                key_heads, value_heads = cache[:, 0], cache[:, 1]
            else:
                new_key_value = self._project_key_value(value, key)  # (batch, 2, heads, q_len, head_dim)
                cache = self._update_self_attention_cache(cache, new_key_value, cache_update_index)
                key_heads, value_heads = cache[:, 0], cache[:, 1]  # (batch, heads, max_len, hd)
                # Slots after index + i are empty (or stale): the causal rule hides them.
                use_causal_mask = True
                causal_offset = cache_update_index
            key_heads = ops.cast(key_heads, query_heads.dtype)
            value_heads = ops.cast(value_heads, query_heads.dtype)
        else:
            key_heads = _split_heads(self.key_dense(key))  # (batch, heads, k_len, key_dim)
            value_heads = _split_heads(self.value_dense(value))  # (batch, heads, k_len, value_dim)

        if use_causal_mask:
            k_len = ops.shape(key_heads)[2]
            causal = causal_mask(q_len, k_len, offset=causal_offset)  # (q_len, k_len)
            attention_mask = (
                causal
                if attention_mask is None
                else ops.logical_and(ops.cast(attention_mask, "bool"), causal)
            )
        mask = merge_padding_and_attention_masks(key_padding_mask, attention_mask)
        if mask is not None:
            mask = ops.expand_dims(mask, axis=1)  # (batch | 1, 1, q_len | 1, k_len): all heads

        context, weights = scaled_dot_product_attention(
            query_heads,
            key_heads,
            value_heads,
            mask=mask,
            dropout=self.dropout_layer,
            training=training,
        )  # context (batch, heads, q_len, value_dim); weights (batch, heads, q_len, k_len)
        # (batch, heads, q_len, value_dim) -> (batch, q_len, heads, value_dim) -> (batch, q_len, output_dim)
        output = self.output_dense(ops.transpose(context, (0, 2, 1, 3)))

        return AttentionOutput(output, weights if return_attention_scores else None, cache)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "value_dim": self.value_dim,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "output_dim": self.output_dim,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
