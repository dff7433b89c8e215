"""BahdanauAttention tests, plus the model-level helpers reused by test_luong_attention.py."""

import keras
import numpy as np
import pytest

from keras_nlp_week4.layers.bahdanau_attention import BahdanauAttention
from keras_nlp_week4.layers.masks import padding_mask

BATCH, SRC_LEN, TGT_LEN, D_Q, D_K, UNITS = 2, 5, 3, 6, 4, 3
VOCAB, D_MODEL = 11, 4


def np_masked_softmax(scores, mask):
    scores = np.where(mask, scores, -np.inf)
    exp = np.exp(scores - scores.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


def np_attend(scores, keys, key_mask):
    """Reference: a = softmax over real source tokens; c = sum_j a_j h_j."""
    if scores.ndim == 2:  # one decoder step: (batch, src_len)
        weights = np_masked_softmax(scores, key_mask)
        return np.einsum("bs,bsd->bd", weights, keys), weights
    weights = np_masked_softmax(scores, key_mask[:, None, :])  # (batch, tgt_len, src_len)
    return weights @ keys, weights


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


def make_inputs(seed=0, d_q=D_Q, d_k=D_K):
    rng = np.random.default_rng(seed)
    query3 = rng.normal(size=(BATCH, TGT_LEN, d_q)).astype("float32")
    keys = rng.normal(size=(BATCH, SRC_LEN, d_k)).astype("float32")
    mask = np.ones((BATCH, SRC_LEN), bool)
    mask[1, 3:] = False  # second sentence is 3 tokens long
    return query3, keys, mask


def assert_masked_weights(weights, mask):
    """Masked source positions get exactly 0 and the rest sums to 1."""
    weights = np.asarray(weights)
    key_mask = mask if weights.ndim == 2 else np.broadcast_to(mask[:, None, :], weights.shape)
    assert np.all(weights[~key_mask] == 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)


def check_against_reference(layer, np_scores_fn, query3, keys, mask):
    """Rank-3 and rank-2 (first step) queries, with a padding mask, vs numpy."""
    for query in (query3, query3[:, 0]):
        context, weights = layer(query, keys, mask=mask)
        ref_context, ref_weights = np_attend(np_scores_fn(query, keys), keys, mask)
        assert context.shape == ref_context.shape
        assert weights.shape == ref_weights.shape
        np.testing.assert_allclose(np.asarray(weights), ref_weights, atol=1e-5)
        np.testing.assert_allclose(np.asarray(context), ref_context, atol=1e-5)
        assert_masked_weights(weights, mask)


def check_processed_keys(layer, query3, keys, mask):
    """A step-by-step decoder loop with precomputed keys equals the all-steps call."""
    full_context, full_weights = layer(query3, keys, mask=mask)
    processed = layer.process_keys(keys)
    for step in range(query3.shape[1]):
        context, weights = layer(query3[:, step], keys, mask=mask, processed_keys=processed)
        np.testing.assert_allclose(
            np.asarray(context), np.asarray(full_context)[:, step], atol=1e-6
        )
        np.testing.assert_allclose(
            np.asarray(weights), np.asarray(full_weights)[:, step], atol=1e-6
        )
    return processed


def tiny_model(layer, src_len=SRC_LEN, tgt_len=TGT_LEN):
    """embedding -> attention -> dense: target tokens attend over source tokens."""
    source = keras.Input((src_len,), dtype="int32", name="source")
    target = keras.Input((tgt_len,), dtype="int32", name="target")
    embedding = keras.layers.Embedding(VOCAB, D_MODEL)
    source_states = embedding(source)  # (batch, src_len, d_model)
    target_states = embedding(target)  # (batch, tgt_len, d_model)
    context, weights = layer(target_states, source_states, mask=padding_mask(source))
    features = keras.layers.Concatenate()([context, target_states])
    logits = keras.layers.Dense(VOCAB)(features)  # (batch, tgt_len, vocab)
    return keras.Model([source, target], [logits, weights])


def tiny_batch(seed=0):
    rng = np.random.default_rng(seed)
    source = rng.integers(1, VOCAB, size=(4, SRC_LEN)).astype("int32")
    source[1, 3:] = 0
    source[3, 1:] = 0
    target = rng.integers(1, VOCAB, size=(4, TGT_LEN)).astype("int32")
    labels = rng.integers(0, VOCAB, size=(4, TGT_LEN)).astype("int32")
    return source, target, labels


def check_functional_model(layer, tmp_path):
    """Symbolic call, mask on weights, .keras save/load, and one fit step."""
    # Seeded: with some unlucky initialisations a score weight's gradient is so small that one SGD step
    # leaves it unchanged in float32, and the "every weight learns" check below would fail by chance.
    keras.utils.set_random_seed(0)
    model = tiny_model(layer)
    source, target, labels = tiny_batch()
    logits, weights = model.predict([source, target], verbose=0)
    assert logits.shape == (4, TGT_LEN, VOCAB)
    assert weights.shape == (4, TGT_LEN, SRC_LEN)
    assert_masked_weights(weights, source != 0)

    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    restored_logits, restored_weights = restored.predict([source, target], verbose=0)
    np.testing.assert_array_equal(restored_logits, logits)
    np.testing.assert_array_equal(restored_weights, weights)
    assert any(type(restored_layer) is type(layer) for restored_layer in restored.layers)

    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True), None],
    )
    before = [np.array(w) for w in layer.trainable_weights]
    embedding = next(x for x in model.layers if isinstance(x, keras.layers.Embedding))
    embedding_before = np.array(embedding.embeddings)
    history = model.fit([source, target], labels, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # Weight-free score functions still pass gradients back into the embeddings.
    assert not np.allclose(np.array(embedding.embeddings), embedding_before)
    for old, new in zip(before, layer.trainable_weights, strict=True):
        assert not np.array_equal(old, np.array(new)), new.path


def check_config_round_trip(layer, query3, keys, mask):
    layer(query3, keys, mask=mask)  # build so weights can be copied
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone(query3, keys, mask=mask)
    clone.set_weights(layer.get_weights())
    for query in (query3, query3[:, 0]):
        np.testing.assert_array_equal(
            np.asarray(clone(query, keys, mask=mask)[0]),
            np.asarray(layer(query, keys, mask=mask)[0]),
        )


def check_symbolic_call(layer, d_q=D_Q, d_k=D_K):
    # Rank-3 query with a static and an unknown tgt_len, then a rank-2 (one step) query.
    for query_shape in ((TGT_LEN, d_q), (None, d_q), (d_q,)):
        keys = keras.Input((SRC_LEN, d_k))
        mask = keras.Input((SRC_LEN,), dtype="bool")
        context, weights = layer(keras.Input(query_shape), keys, mask=mask)
        assert tuple(context.shape) == (None, *query_shape[:-1], d_k)
        assert tuple(weights.shape) == (None, *query_shape[:-1], SRC_LEN)


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
    query3, keys, mask = make_inputs()
    layer = BahdanauAttention(UNITS, use_bias=use_bias)
    layer(query3, keys)
    if use_bias:
        # Zero-initialised biases would make a missing bias invisible.
        layer.keys_dense.bias.assign(np.linspace(-1, 1, UNITS))
    assert len(layer.weights) == (4 if use_bias else 3)
    check_against_reference(layer, bahdanau_reference(layer), query3, keys, mask)


def test_processed_keys_reused_across_decoder_steps():
    query3, keys, mask = make_inputs(1)
    layer = BahdanauAttention(UNITS)
    processed = check_processed_keys(layer, query3, keys, mask)
    assert processed.shape == (BATCH, SRC_LEN, UNITS)


def test_no_mask_weights_sum_to_one():
    query3, keys, _ = make_inputs(2)
    _, weights = BahdanauAttention(UNITS)(query3, keys)
    weights = np.asarray(weights)
    assert np.all(weights > 0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)


def test_config_round_trip():
    query3, keys, mask = make_inputs(3)
    layer = BahdanauAttention(UNITS, use_bias=False, dropout=0.1, name="align")
    check_config_round_trip(layer, query3, keys, mask)
    config = layer.get_config()
    assert (config["units"], config["use_bias"], config["dropout"]) == (UNITS, False, 0.1)


def test_symbolic_call():
    check_symbolic_call(BahdanauAttention(UNITS))


def test_functional_model_save_load_and_fit(tmp_path):
    check_functional_model(BahdanauAttention(UNITS), tmp_path)


def test_dropout_on_weights_only_in_training():
    query3, keys, mask = make_inputs(4)
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
