"""BahdanauAttention: the numpy reference of eq. (6), precomputed keys, masks, dropout, and the harness."""

import keras
import numpy as np
import pytest
from layer_testing import (
    BATCH,
    SRC_LEN,
    TGT_LEN,
    check_against_reference,
    check_processed_keys,
    make_attention_inputs,
    run_score_attention_test,
)

from keras_nlp_week4.layers.bahdanau_attention import BahdanauAttention
from keras_nlp_week4.layers.masks import padding_mask

UNITS = 3
VOCAB, D_MODEL = 11, 4


def np_bahdanau_scores(query, keys, w_a, u_a, u_bias, v_a):
    """Reference of Bahdanau 2015 eq. (6)/A.1.2: e_j = v_a^T tanh(W_a s + U_a h_j).

    query (batch, [tgt,] d_q); keys (batch, src, d_k). Kernels are Keras-layout (in, out).
    """
    projected_query = query @ w_a  # W_a s
    projected_keys = keys @ u_a + u_bias  # U_a h_j
    if query.ndim == 2:
        hidden = np.tanh(projected_query[:, None, :] + projected_keys)
    else:
        hidden = np.tanh(projected_query[:, :, None, :] + projected_keys[:, None, :, :])
    return (hidden @ v_a)[..., 0]


def bahdanau_reference(layer):
    def scores(query, keys):
        u_bias = layer.keys_dense.bias if layer.use_bias else np.zeros(layer.units)
        return np_bahdanau_scores(
            query,
            keys,
            np.asarray(layer.query_dense.kernel),
            np.asarray(layer.keys_dense.kernel),
            np.asarray(u_bias),
            np.asarray(layer.score_dense.kernel),
        )

    return scores


@pytest.mark.parametrize("use_bias", [True, False])
def test_matches_numpy_reference(use_bias):
    query3, keys, mask = make_attention_inputs()
    layer = BahdanauAttention(UNITS, use_bias=use_bias)
    layer(query3, keys)
    if use_bias:
        # Zero-initialised biases would make a missing bias invisible.
        layer.keys_dense.bias.assign(np.linspace(-1, 1, UNITS))
    assert len(layer.weights) == (4 if use_bias else 3)
    check_against_reference(layer, bahdanau_reference(layer), query3, keys, mask)


def test_processed_keys_reused_across_decoder_steps():
    query3, keys, mask = make_attention_inputs(1)
    layer = BahdanauAttention(UNITS)
    processed = check_processed_keys(layer, query3, keys, mask)
    assert processed.shape == (BATCH, SRC_LEN, UNITS)


def test_no_mask_weights_sum_to_one():
    query3, keys, _ = make_attention_inputs(2)
    _, weights = BahdanauAttention(UNITS)(query3, keys)
    weights = np.asarray(weights)
    assert np.all(weights > 0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("init_kwargs", [{"units": UNITS},
                                         {"units": UNITS, "use_bias": False, "dropout": 0.1}])
def test_layer_harness(init_kwargs):
    run_score_attention_test(BahdanauAttention, init_kwargs)


def test_dropout_on_weights_only_in_training():
    query3, keys, mask = make_attention_inputs(4)
    layer = BahdanauAttention(UNITS, dropout=0.5)
    eval_context, eval_weights = layer(query3, keys, mask=mask, training=False)
    again_context, _ = layer(query3, keys, mask=mask)
    np.testing.assert_array_equal(np.asarray(eval_context), np.asarray(again_context))
    train_context, train_weights = layer(query3, keys, mask=mask, training=True)
    # Returned weights are the pre-dropout distribution; only the context is perturbed.
    np.testing.assert_allclose(np.asarray(train_weights), np.asarray(eval_weights), atol=1e-6)
    assert not np.allclose(np.asarray(train_context), np.asarray(eval_context))


def test_keras_mask_follows_query_not_source(recwarn):
    # The explicit `mask=` describes the source; the context rows belong to the query, so
    # they inherit the query's Keras mask (used by losses), and Keras must not warn that a
    # mask is being dropped.
    source = keras.Input((SRC_LEN,), dtype="int32")
    target = keras.Input((TGT_LEN,), dtype="int32")
    embedding = keras.layers.Embedding(VOCAB, D_MODEL, mask_zero=True)
    context, weights = BahdanauAttention(UNITS)(
        embedding(target), embedding(source), mask=padding_mask(source)
    )
    model = keras.Model([source, target], keras.layers.Dense(2)(context))
    assert not [w for w in recwarn if "mask" in str(w.message)]
    assert context._keras_mask.shape == (None, TGT_LEN)
    assert getattr(weights, "_keras_mask", None) is None
    outputs = model(
        [np.array([[1, 2, 3, 0, 0]]), np.array([[4, 0, 0]])]
    )  # eager call propagates too
    np.testing.assert_array_equal(np.asarray(outputs._keras_mask), [[True, False, False]])
