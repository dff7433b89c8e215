"""LuongAttention: the numpy reference of every score function, precomputed keys, masks, and the harness."""

import numpy as np
import pytest
import tensorflow as tf
from layer_testing import (
    BATCH,
    D_K,
    D_Q,
    LECTURE_CONTEXT,
    LECTURE_HIDDEN_STATES,
    LECTURE_WEIGHTS,
    SRC_LEN,
    TGT_LEN,
    check_against_reference,
    check_processed_keys,
    make_attention_inputs,
    masked_softmax,
    run_score_attention_test,
)

from keras_nlp_week4.layers.luong_attention import LuongAttention

UNITS, MAX_SOURCE_LENGTH = 3, 7  # MAX_SOURCE_LENGTH > SRC_LEN so slicing is exercised


def np_luong_scores(layer, query, keys):
    """Reference of Luong et al. 2015 eq. (8) / location, and Vaswani 2017 eq. (1).

    query (batch, [tgt,] d_q); keys (batch, src, d_k). Keras kernels are (in, out), so the
    paper's matrix W_a is kernel^T.
    """
    query3 = query[:, None, :] if query.ndim == 2 else query  # (batch, tgt, d_q)
    if layer.score == "dot":  # h_t^T h̄_s
        scores = np.einsum("btd,bsd->bts", query3, keys)
    elif layer.score == "scaled_dot":  # h_t^T h̄_s / sqrt(d)
        scores = np.einsum("btd,bsd->bts", query3, keys) / np.sqrt(keys.shape[-1])
    elif layer.score == "general":  # h_t^T W_a h̄_s
        w_a = np.asarray(layer.keys_dense.kernel).T  # (d_q, d_k)
        scores = np.einsum("btq,qk,bsk->bts", query3, w_a, keys)
    elif layer.score == "concat":  # v_a^T tanh(W_a [h_t; h̄_s])
        w_a = np.concatenate(
            [np.asarray(layer.query_dense.kernel), np.asarray(layer.keys_dense.kernel)], axis=0
        ).T  # (units, d_q + d_k)
        v_a = np.asarray(layer.score_dense.kernel)[:, 0]
        tgt, src = query3.shape[1], keys.shape[1]
        scores = np.zeros((query3.shape[0], tgt, src))
        for b in range(query3.shape[0]):
            for t in range(tgt):
                for s in range(src):
                    pair = np.concatenate([query3[b, t], keys[b, s]])  # [h_t; h̄_s]
                    scores[b, t, s] = v_a @ np.tanh(w_a @ pair)
    else:  # location: a_t = softmax(W_a h_t), cut to the real source length
        w_a = np.asarray(layer.query_dense.kernel).T  # (max_source_length, d_q)
        scores = np.einsum("lq,btq->btl", w_a, query3)[..., : keys.shape[1]]
    return scores[:, 0] if query.ndim == 2 else scores


def make_layer(score):
    return LuongAttention(score=score, units=UNITS, max_source_length=MAX_SOURCE_LENGTH)


def same_depth(score):
    """dot / scaled_dot need d_q == d_k; the others get different depths on purpose."""
    return score in ("dot", "scaled_dot")


def inputs_for(score, seed=0):
    return make_attention_inputs(seed, d_q=D_K if same_depth(score) else D_Q, d_k=D_K)


SCORES = ["dot", "general", "concat", "location", "scaled_dot"]


@pytest.mark.parametrize("score", SCORES)
def test_matches_numpy_reference(score):
    query3, keys, mask = inputs_for(score)
    layer = make_layer(score)
    check_against_reference(
        layer, lambda query, k: np_luong_scores(layer, query, k), query3, keys, mask
    )


def test_weight_shapes():
    query3, keys, _ = inputs_for("general")
    expected = {
        "dot": [],
        "scaled_dot": [],
        "general": [(D_K, D_Q)],
        "concat": [(D_Q, UNITS), (D_K, UNITS), (UNITS, 1)],
        "location": [(D_Q, MAX_SOURCE_LENGTH)],
    }
    for score, shapes in expected.items():
        layer = make_layer(score)
        q = query3[..., :D_K] if same_depth(score) else query3
        layer(q, keys)
        assert [tuple(w.shape) for w in layer.weights] == shapes, score


def test_lecture_worked_example_with_dot_score():
    # Softmax ignores a constant shift, so solve [H, -1] @ [q; c] = log(a) for a query q
    # whose dot scores H q equal log(a) + c.
    table = LECTURE_HIDDEN_STATES.astype(np.float64)
    solution = np.linalg.solve(np.c_[table, -np.ones(5)], np.log(LECTURE_WEIGHTS))
    query = solution[:4].astype("float32")[None]  # (batch=1, d=4)
    context, weights = LuongAttention(score="dot")(query, LECTURE_HIDDEN_STATES[None])
    np.testing.assert_allclose(np.asarray(weights)[0], LECTURE_WEIGHTS, atol=1e-5)
    np.testing.assert_allclose(np.asarray(context)[0], LECTURE_CONTEXT, atol=1e-5)


@pytest.mark.parametrize("score", ["general", "concat"])
def test_processed_keys_reused_across_decoder_steps(score):
    query3, keys, mask = inputs_for(score, seed=1)
    layer = make_layer(score)
    processed = check_processed_keys(layer, query3, keys, mask)
    # "general" projects the keys to d_q, "concat" to units.
    assert processed.shape[-1] == (D_Q if score == "general" else UNITS)


def test_location_slices_to_dynamic_source_length_in_tf_function():
    layer = make_layer("location")
    query3, keys, mask = inputs_for("location", seed=2)
    layer(query3, keys)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, D_Q], tf.float32),
            tf.TensorSpec([None, None, D_K], tf.float32),
            tf.TensorSpec([None, None], tf.bool),
        ]
    )
    def attend(query, keys, mask):
        return layer(query, keys, mask=mask)

    for src_len in (2, SRC_LEN, MAX_SOURCE_LENGTH):
        rng = np.random.default_rng(src_len)
        keys = rng.normal(size=(BATCH, src_len, D_K)).astype("float32")
        mask = np.ones((BATCH, src_len), bool)
        mask[0, -1] = False
        context, weights = attend(query3, keys, mask)
        assert weights.shape == (BATCH, TGT_LEN, src_len)
        ref = np_luong_scores(layer, query3, keys)
        np.testing.assert_allclose(
            weights.numpy(),
            masked_softmax(ref, mask[:, None]),
            atol=1e-5,
        )
        assert np.all(weights.numpy()[0, :, -1] == 0.0)


def test_mixed_precision_masks_exactly():
    query3, keys, mask = inputs_for("general", seed=3)
    layer = LuongAttention(score="general", dtype="mixed_float16")
    context, weights = layer(query3, keys, mask=mask)
    assert weights.dtype == "float16"
    weights = np.asarray(weights).astype(np.float32)
    assert np.all(np.isfinite(weights)) and np.all(np.isfinite(np.asarray(context, np.float32)))
    assert np.all(weights[1, :, 3:] == 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-2)


@pytest.mark.parametrize("score", SCORES)
def test_layer_harness(score):
    init_kwargs = dict(score=score, units=UNITS, max_source_length=MAX_SOURCE_LENGTH)
    run_score_attention_test(LuongAttention, init_kwargs, d_q=D_K if same_depth(score) else D_Q)


def test_unknown_score_lists_valid_names():
    with pytest.raises(ValueError, match="'bilinear'") as error:
        LuongAttention(score="bilinear")
    for name in SCORES:
        assert repr(name) in str(error.value)


def test_location_requires_max_source_length():
    with pytest.raises(ValueError, match="max_source_length"):
        LuongAttention(score="location")


def test_concat_requires_units():
    with pytest.raises(ValueError, match="units"):
        LuongAttention(score="concat")


@pytest.mark.parametrize("score", ["dot", "scaled_dot"])
def test_dot_scores_require_equal_depths(score):
    query3, keys, _ = make_attention_inputs(d_q=D_Q, d_k=D_K)
    with pytest.raises(ValueError, match="same depth"):
        LuongAttention(score=score)(query3, keys)


def test_location_source_longer_than_max_source_length():
    query3, _, _ = inputs_for("location")
    too_long = np.zeros((BATCH, MAX_SOURCE_LENGTH + 1, D_K), "float32")
    with pytest.raises(ValueError, match="max_source_length=7"):
        make_layer("location")(query3, too_long)  # caught while building
    layer = make_layer("location")
    layer(query3, too_long[:, :SRC_LEN])
    with pytest.raises(ValueError, match="max_source_length=7"):
        layer(query3, too_long)  # caught on an already built layer
