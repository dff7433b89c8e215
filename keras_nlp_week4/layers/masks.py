"""Boolean attention masks and the masked softmax shared by every attention layer.

Convention used across the package: a mask is boolean and `True` means "may attend" /
"is a real token". Masked scores are replaced by a large negative number chosen from the
score dtype (so float16 does not overflow), and the softmax output is multiplied by the
mask so masked positions get exactly 0 weight, even when a whole row is masked.

Everything here is written with `keras.ops` on purpose: no `slice_update` (it lowers to
XlaDynamicUpdateSlice, which tf2onnx cannot convert), only elementwise ops, `arange`, `where`
and `softmax`.
"""

from __future__ import annotations

import keras
from keras import ops


def padding_mask(token_ids, pad_id: int = 0):
    """Marks the real (non-padding) tokens of a batch of token ids.

    Args:
        token_ids: int tensor of shape `(batch, length)`.
        pad_id: int. The id used for padding.

    Returns:
        bool tensor of shape `(batch, length)`, `True` where `token_ids != pad_id`.

    Example:

    ```python
    padding_mask(np.array([[5, 7, 0, 0]]))  # [[True, True, False, False]]
    ```
    """
    return ops.not_equal(token_ids, pad_id)


def causal_mask(query_length, key_length=None, offset=0):
    """Lower-triangular ("look-ahead") mask for autoregressive decoding.

    Key `j` is visible to query `i` iff `j <= i + offset` (Vaswani et al. 2017, section
    3.2.3: "masking out ... all values in the input of the softmax which correspond to
    illegal connections"). `offset` is the number of earlier tokens already held in a
    key/value cache, so query `i` is really position `i + offset` of the sequence.

    Args:
        query_length: python int or scalar int tensor.
        key_length: python int or scalar int tensor. Defaults to
            `query_length + offset` (all cached tokens plus the new ones).
        offset: python int or scalar int tensor. Defaults to 0.

    Returns:
        bool tensor of shape `(query_length, key_length)`.

    Example:

    ```python
    causal_mask(2, 3, offset=1)
    # [[True, True, False],
    #  [True, True, True]]
    ```
    """
    # Work in int32 so python ints and int32/int64 tensors mix without dtype errors.
    query_length = ops.cast(query_length, "int32")
    offset = ops.cast(offset, "int32")
    key_length = query_length + offset if key_length is None else ops.cast(key_length, "int32")
    query_positions = ops.arange(query_length, dtype="int32") + offset
    key_positions = ops.arange(key_length, dtype="int32")
    # (query_length, 1) >= (1, key_length) -> (query_length, key_length)
    return ops.greater_equal(
        ops.expand_dims(query_positions, -1), ops.expand_dims(key_positions, 0)
    )


def merge_padding_and_attention_masks(key_padding_mask=None, attention_mask=None):
    """Combines a key padding mask and an explicit attention mask into one 3D mask.

    Args:
        key_padding_mask: optional bool tensor `(batch, key_length)`, `True` = real key.
        attention_mask: optional bool tensor `(batch | 1, query_length, key_length)`
            (a 2D `(query_length, key_length)` mask such as `causal_mask` is also
            accepted and treated as shared by the whole batch).

    Returns:
        bool tensor `(batch, 1 | query_length, key_length)` (the logical AND of both
        masks, broadcast), or `None` when both masks are `None`.

    Example:

    ```python
    token_ids = np.array([[4, 9, 0]])
    merge_padding_and_attention_masks(padding_mask(token_ids), causal_mask(3))
    # [[[True, False, False],
    #   [True, True,  False],
    #   [True, True,  False]]]
    ```
    """
    mask = None
    if key_padding_mask is not None:
        # (batch, key_length) -> (batch, 1, key_length): the same keys for every query.
        mask = ops.expand_dims(ops.cast(key_padding_mask, "bool"), axis=1)
    if attention_mask is not None:
        attention_mask = ops.cast(attention_mask, "bool")
        if len(attention_mask.shape) == 2:
            # (query_length, key_length) -> (1, query_length, key_length)
            attention_mask = ops.expand_dims(attention_mask, axis=0)
        mask = attention_mask if mask is None else ops.logical_and(mask, attention_mask)
    return mask


def large_negative(dtype) -> float:
    """The number used in place of masked scores before the softmax.

    -1e9 overflows float16 (max ~6.5e4), so half-precision dtypes get -3e4, which is
    still small enough that `exp(-3e4 - max)` underflows to exactly 0.

    Args:
        dtype: a dtype or dtype name (e.g. `"float16"`).

    Returns:
        python float.

    Example:

    ```python
    large_negative("float32")  # -1e9
    large_negative("float16")  # -3e4
    ```
    """
    if keras.backend.standardize_dtype(dtype) in ("float16", "bfloat16"):
        return -3e4
    return -1e9


def masked_softmax(scores, mask=None, axis: int = -1):
    """Softmax over `axis` that gives masked positions exactly 0 weight.

    Args:
        scores: float tensor `(..., key_length)`.
        mask: optional bool tensor broadcastable to `scores`, `True` = keep.
        axis: int. The axis to normalise over.

    Half-precision scores (float16, bfloat16) are normalised in float32 and the weights
    cast back, as keras-hub's attention layers do: with float16's 11-bit mantissa the sum
    over a long key axis loses the small weights. Other dtypes are used as they are, so a
    float32 graph (and its ONNX export) has no extra casts.

    Returns:
        float tensor, same shape and dtype as `scores`. Rows in which every position is
        masked are all zeros (not NaN and not uniform).

    Example:

    ```python
    masked_softmax(np.zeros((1, 3)), np.array([[True, True, False]]))  # [[0.5, 0.5, 0.0]]
    ```
    """
    dtype = keras.backend.standardize_dtype(scores.dtype)
    half_precision = dtype in ("float16", "bfloat16")
    if half_precision:
        scores = ops.cast(scores, "float32")
    if mask is None:
        weights = ops.softmax(scores, axis=axis)
    else:
        mask = ops.cast(mask, "bool")
        fill = ops.cast(large_negative(scores.dtype), scores.dtype)
        weights = ops.softmax(ops.where(mask, scores, fill), axis=axis)
        # A fully masked row softmaxes to uniform weights over the fill value; zero it out.
        weights = weights * ops.cast(mask, weights.dtype)
    return ops.cast(weights, dtype) if half_precision else weights
