"""Scaled dot-product attention (a function, no layer: the harness runs through MultiHeadAttention)."""

import keras
import numpy as np
import tensorflow as tf
from layer_testing import LECTURE_CONTEXT, LECTURE_HIDDEN_STATES, LECTURE_WEIGHTS, masked_softmax

from keras_nlp_week4.layers.masks import causal_mask
from keras_nlp_week4.layers.scaled_dot_product_attention import (
    attend_from_scores,
    scaled_dot_product_attention,
)


def np_scaled_dot_product_attention(q, k, v, mask=None):
    """Reference of Vaswani et al. 2017 eq. (1): softmax(Q K^T / sqrt(d_k)) V."""
    d_k = q.shape[-1]
    scores = q.astype(np.float64) @ np.swapaxes(k, -1, -2) / np.sqrt(d_k)
    weights = masked_softmax(scores, True if mask is None else mask)
    return weights @ v, weights


def test_lecture_worked_example_through_shared_path():
    scores = np.log(LECTURE_WEIGHTS)[None, None, :]  # (batch=1, q=1, k=5)
    context, weights = attend_from_scores(scores, LECTURE_HIDDEN_STATES[None])
    np.testing.assert_allclose(np.asarray(weights)[0, 0], LECTURE_WEIGHTS, atol=1e-6)
    np.testing.assert_allclose(np.asarray(context)[0, 0], LECTURE_CONTEXT, atol=1e-6)
    np.testing.assert_allclose(LECTURE_WEIGHTS @ LECTURE_HIDDEN_STATES, LECTURE_CONTEXT, atol=1e-6)


def test_matches_numpy_for_head_layout_with_causal_mask():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 3, 4, 8)).astype("float32")  # (batch, heads, q, d_k)
    k = rng.normal(size=(2, 3, 4, 8)).astype("float32")
    v = rng.normal(size=(2, 3, 4, 6)).astype("float32")  # d_v != d_k on purpose
    mask = np.asarray(causal_mask(4))
    context, weights = scaled_dot_product_attention(q, k, v, mask=mask)
    ref_context, ref_weights = np_scaled_dot_product_attention(q, k, v, mask)
    assert context.shape == (2, 3, 4, 6)
    assert weights.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(np.asarray(weights), ref_weights, atol=1e-5)
    np.testing.assert_allclose(np.asarray(context), ref_context, atol=1e-5)
    weights = np.asarray(weights)
    assert np.all(weights[..., ~mask] == 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)


def test_without_mask_and_with_broadcast_padding_mask():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(2, 5, 4)).astype("float32")
    k = rng.normal(size=(2, 3, 4)).astype("float32")
    v = rng.normal(size=(2, 3, 2)).astype("float32")
    context, weights = scaled_dot_product_attention(q, k, v)
    ref_context, ref_weights = np_scaled_dot_product_attention(q, k, v)
    np.testing.assert_allclose(np.asarray(context), ref_context, atol=1e-5)
    np.testing.assert_allclose(np.asarray(weights), ref_weights, atol=1e-5)

    key_padding = np.array([[True, True, False], [True, False, False]])[:, None, :]
    context, weights = scaled_dot_product_attention(q, k, v, mask=key_padding)
    ref_context, _ = np_scaled_dot_product_attention(q, k, v, key_padding)
    np.testing.assert_allclose(np.asarray(context), ref_context, atol=1e-5)
    assert np.all(np.asarray(weights)[1, :, 1:] == 0.0)


def test_dropout_only_in_training_and_weights_are_pre_dropout():
    rng = np.random.default_rng(2)
    q, k, v = (rng.normal(size=(1, 2, 6, 4)).astype("float32") for _ in range(3))
    dropout = keras.layers.Dropout(0.5, seed=3)
    plain_context, plain_weights = scaled_dot_product_attention(q, k, v)
    eval_context, _ = scaled_dot_product_attention(q, k, v, dropout=dropout, training=False)
    np.testing.assert_allclose(np.asarray(eval_context), np.asarray(plain_context), atol=1e-6)
    train_context, train_weights = scaled_dot_product_attention(
        q, k, v, dropout=dropout, training=True
    )
    np.testing.assert_allclose(np.asarray(train_weights), np.asarray(plain_weights), atol=1e-6)
    assert not np.allclose(np.asarray(train_context), np.asarray(plain_context))


def test_unknown_depth_in_tf_function():
    # Export traces with unknown dims; the 1/sqrt(d_k) scale must then come from the
    # runtime shape.
    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32)] * 3)
    def attention(q, k, v):
        return scaled_dot_product_attention(q, k, v, mask=causal_mask(tf.shape(q)[1]))

    rng = np.random.default_rng(3)
    q, k, v = (rng.normal(size=(2, 3, 16)).astype("float32") for _ in range(3))
    context, weights = attention(q, k, v)
    ref_context, ref_weights = np_scaled_dot_product_attention(q, k, v, np.asarray(causal_mask(3)))
    np.testing.assert_allclose(context.numpy(), ref_context, atol=1e-5)
    np.testing.assert_allclose(weights.numpy(), ref_weights, atol=1e-5)
