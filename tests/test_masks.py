"""Masks and the masked softmax (functions, no layer: the harness runs them through the attention layers)."""

import numpy as np
import pytest
import tensorflow as tf
from layer_testing import masked_softmax as masked_softmax_reference

from keras_nlp_week4.layers.masks import (
    causal_mask,
    large_negative,
    masked_softmax,
    merge_padding_and_attention_masks,
    padding_mask,
)


def np_causal_mask(query_length, key_length, offset):
    """Reference: key j visible to query i iff j <= i + offset."""
    i = np.arange(query_length)[:, None] + offset
    j = np.arange(key_length)[None, :]
    return j <= i


def test_padding_mask():
    ids = np.array([[5, 7, 0, 0], [3, 0, 0, 0]])
    np.testing.assert_array_equal(np.asarray(padding_mask(ids)), ids != 0)
    np.testing.assert_array_equal(np.asarray(padding_mask(ids, pad_id=7)), ids != 7)
    assert padding_mask(ids).dtype == tf.bool


@pytest.mark.parametrize(
    "query_length,key_length,offset", [(4, None, 0), (4, 4, 0), (2, 5, 3), (3, 6, 1), (1, 7, 6)]
)
def test_causal_mask_matches_reference(query_length, key_length, offset):
    mask = np.asarray(causal_mask(query_length, key_length, offset=offset))
    expected_keys = query_length + offset if key_length is None else key_length
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, np_causal_mask(query_length, expected_keys, offset))


def test_causal_mask_default_key_length_includes_cache():
    # 2 new tokens after 3 cached ones see 5 keys; the last one sees all of them.
    mask = np.asarray(causal_mask(2, offset=3))
    assert mask.shape == (2, 5)
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])


@pytest.mark.parametrize("int_dtype", [tf.int32, tf.int64])
def test_causal_mask_with_tensor_arguments_in_tf_function(int_dtype):
    @tf.function(
        input_signature=[
            tf.TensorSpec([], int_dtype),
            tf.TensorSpec([], int_dtype),
            tf.TensorSpec([], int_dtype),
        ]
    )
    def make(query_length, key_length, offset):
        return causal_mask(query_length, key_length, offset=offset)

    for q, k, o in [(3, 5, 2), (4, 4, 0), (1, 6, 5)]:
        got = make(tf.constant(q, int_dtype), tf.constant(k, int_dtype), tf.constant(o, int_dtype))
        np.testing.assert_array_equal(got.numpy(), np_causal_mask(q, k, o))


def test_merge_masks():
    key_padding = np.array([[True, True, False], [True, False, False]])
    causal = np.asarray(causal_mask(3))
    assert merge_padding_and_attention_masks() is None

    only_padding = np.asarray(merge_padding_and_attention_masks(key_padding_mask=key_padding))
    np.testing.assert_array_equal(only_padding, key_padding[:, None, :])

    only_attention = np.asarray(merge_padding_and_attention_masks(attention_mask=causal))
    np.testing.assert_array_equal(only_attention, causal[None])

    both = np.asarray(merge_padding_and_attention_masks(key_padding, causal[None]))
    assert both.shape == (2, 3, 3)
    np.testing.assert_array_equal(both, key_padding[:, None, :] & causal[None])

    int_mask = np.array([[[1, 0, 1]]])
    merged = np.asarray(merge_padding_and_attention_masks(attention_mask=int_mask))
    assert merged.dtype == bool


def test_large_negative():
    assert large_negative("float32") == -1e9
    assert large_negative("float64") == -1e9
    assert large_negative("float16") == -3e4
    assert large_negative(tf.bfloat16) == -3e4
    assert np.isfinite(np.float16(large_negative("float16")))


def test_masked_softmax_matches_reference_and_gives_exact_zeros():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(2, 3, 5)).astype("float32") * 4
    mask = rng.random((2, 3, 5)) > 0.4
    mask[0, 0] = False  # a fully masked row
    mask[1, 2] = True
    got = np.asarray(masked_softmax(scores, mask))
    np.testing.assert_allclose(got, masked_softmax_reference(scores, mask), atol=1e-6)
    assert np.all(got[~mask] == 0.0)
    np.testing.assert_array_equal(got[0, 0], np.zeros(5))
    row_sums = got.sum(-1)
    has_real = mask.any(-1)
    np.testing.assert_allclose(row_sums[has_real], 1.0, atol=1e-6)


def test_masked_softmax_broadcasts_mask_and_no_mask_is_plain_softmax():
    scores = np.arange(12, dtype="float32").reshape(2, 2, 3)
    key_mask = np.array([[True, False, True]])  # broadcast over batch and queries
    got = np.asarray(masked_softmax(scores, key_mask))
    np.testing.assert_allclose(got, masked_softmax_reference(scores, key_mask), atol=1e-6)
    assert np.all(got[..., 1] == 0.0)
    plain = np.asarray(masked_softmax(scores))
    np.testing.assert_allclose(plain, masked_softmax_reference(scores, True), atol=1e-6)


def test_masked_softmax_fully_masked_row_is_zero_not_nan():
    got = np.asarray(masked_softmax(np.zeros((2, 4), "float32"), np.zeros((2, 4), bool)))
    np.testing.assert_array_equal(got, np.zeros((2, 4)))


def test_masked_softmax_float16_does_not_overflow():
    scores = tf.constant([[1.0, 2.0, 3.0, 500.0]], tf.float16)
    mask = np.array([[True, True, True, False]])
    got = masked_softmax(scores, mask)
    assert got.dtype == tf.float16
    got = got.numpy().astype(np.float64)
    assert np.all(np.isfinite(got))
    assert got[0, 3] == 0.0
    np.testing.assert_allclose(got, masked_softmax_reference([[1.0, 2.0, 3.0, 500.0]], mask), atol=1e-3)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_masked_softmax_half_precision_is_normalised_in_float32(dtype):
    # 600 keys: the float16 weights ~1/600 summed in float16 drift from 1; computed in float32 and cast
    # back, each weight is the float32 weight rounded once.
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(2, 600)).astype("float32")
    mask = rng.random((2, 600)) > 0.2
    got = masked_softmax(tf.constant(scores, dtype), mask)
    assert got.dtype == dtype
    expected = tf.cast(masked_softmax(tf.cast(tf.constant(scores, dtype), tf.float32), mask), dtype)
    np.testing.assert_array_equal(got.numpy(), expected.numpy())
    assert np.all(got.numpy()[~mask] == 0.0)
