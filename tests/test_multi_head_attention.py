import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_nlp_week4.layers.multi_head_attention import MultiHeadAttention

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.normal(size=shape).astype("float32")


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def reference_mha(layer, query, value, key=None, mask=None):
    """Vaswani et al. 2017, section 3.2.2, one head at a time, with the layer's weights.

    `mask` is bool `(batch, q_len, k_len)`, True = attend. Masked keys are dropped from the
    softmax; a fully masked row gets all-zero weights.
    """
    key = value if key is None else key
    w = {v.path.split("/")[-2] + "/" + v.name: to_numpy(v) for v in layer.weights}
    batch, q_len, _ = query.shape
    k_len = key.shape[1]
    mask = np.ones((batch, q_len, k_len), bool) if mask is None else mask
    heads, all_weights = [], []
    for h in range(layer.num_heads):
        def project(x, name, head=h):
            out = x @ w[f"{name}/kernel"][:, head, :]
            if layer.use_bias:
                out = out + w[f"{name}/bias"].reshape(layer.num_heads, -1)[head]
            return out

        q, k, v = project(query, "query"), project(key, "key"), project(value, "value")
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(layer.key_dim)  # (batch, q, k)
        scores = np.where(mask, scores, -np.inf)
        row_max = np.max(np.where(mask, scores, -1e30), axis=-1, keepdims=True)
        exp = np.where(mask, np.exp(scores - row_max), 0.0)
        total = exp.sum(-1, keepdims=True)
        weights = np.divide(exp, total, out=np.zeros_like(exp), where=total > 0)
        all_weights.append(weights)
        heads.append(weights @ v)  # (batch, q, value_dim)
    concat = np.concatenate(heads, axis=-1)  # (batch, q, heads * value_dim)
    w_o = w["attention_output/kernel"].reshape(layer.num_heads * layer.value_dim, -1)
    out = concat @ w_o
    if layer.use_bias:
        out = out + w["attention_output/bias"]
    return out, np.stack(all_weights, axis=1)  # (batch, heads, q, k)


def causal(q_len, k_len, offset=0):
    return np.arange(k_len)[None, :] <= np.arange(q_len)[:, None] + offset


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_heads=2, key_dim=4),
        dict(num_heads=3, key_dim=2, value_dim=5, output_dim=6, use_bias=False),
    ],
)
def test_matches_numpy_reference_with_padding_mask(kwargs):
    layer = MultiHeadAttention(**kwargs)
    query, value = rand(2, 4, 8), rand(2, 6, 8)
    key_padding = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    out, weights = layer(query, value, key_padding_mask=key_padding, return_attention_scores=True)
    expected_out, expected_weights = reference_mha(
        layer, query, value, mask=np.broadcast_to(key_padding[:, None, :], (2, 4, 6))
    )
    assert out.shape == (2, 4, kwargs.get("output_dim", 8))
    assert weights.shape == (2, kwargs["num_heads"], 4, 6)
    np.testing.assert_allclose(to_numpy(out), expected_out, atol=1e-5)
    np.testing.assert_allclose(to_numpy(weights), expected_weights, atol=1e-6)
    # Padded keys get exactly zero weight, in every head.
    assert np.all(to_numpy(weights)[0, :, :, 4:] == 0.0)
    np.testing.assert_allclose(to_numpy(weights).sum(-1), 1.0, atol=1e-6)


def test_separate_key_and_explicit_attention_mask():
    layer = MultiHeadAttention(num_heads=2, key_dim=3)
    query, key, value = rand(2, 3, 6), rand(2, 5, 4), rand(2, 5, 4)
    attention_mask = RNG.random((2, 3, 5)) > 0.4
    attention_mask[:, :, 0] = True
    out, weights = layer(query, value, key=key, attention_mask=attention_mask,
                         return_attention_scores=True)
    expected_out, expected_weights = reference_mha(layer, query, value, key, attention_mask)
    np.testing.assert_allclose(to_numpy(out), expected_out, atol=1e-5)
    np.testing.assert_allclose(to_numpy(weights), expected_weights, atol=1e-6)
    assert np.all(to_numpy(weights)[np.broadcast_to(~attention_mask[:, None], weights.shape)] == 0)


def test_causal_and_padding_masks_combined():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    x = rand(2, 5, 8)
    key_padding = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    out, weights = layer(x, x, key_padding_mask=key_padding, use_causal_mask=True,
                         return_attention_scores=True)
    mask = causal(5, 5)[None] & key_padding[:, None, :]
    expected_out, expected_weights = reference_mha(layer, x, x, mask=mask)
    np.testing.assert_allclose(to_numpy(out), expected_out, atol=1e-5)
    np.testing.assert_allclose(to_numpy(weights), expected_weights, atol=1e-6)
    assert np.all(to_numpy(weights)[:, :, np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]] == 0)


def test_fully_masked_row_gives_zero_weights_not_nan():
    layer = MultiHeadAttention(num_heads=1, key_dim=4)
    x = rand(1, 3, 4)
    out, weights = layer(x, x, key_padding_mask=np.zeros((1, 3), bool),
                         return_attention_scores=True)
    assert np.all(to_numpy(weights) == 0) and np.all(np.isfinite(to_numpy(out)))


def test_return_conventions():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    x = rand(2, 3, 8)
    cache = np.zeros((2, 2, 2, 5, 4), "float32")
    assert not isinstance(layer(x, x), tuple)
    assert len(layer(x, x, return_attention_scores=True)) == 2
    out, new_cache = layer(x, x, cache=cache, cache_update_index=0)
    assert out.shape == (2, 3, 8) and new_cache.shape == cache.shape
    out, weights, new_cache = layer(x, x, cache=cache, cache_update_index=0,
                                    return_attention_scores=True)
    assert weights.shape == (2, 2, 3, 5)


def incremental(layer, x, cache, chunks, index_fn=lambda i: i):
    """Feeds x through a self-attention cache in chunks [(start, stop), ...]."""
    outputs, weights = [], []
    for start, stop in chunks:
        out, w, cache = layer(x[:, start:stop], x[:, start:stop], cache=cache,
                              cache_update_index=index_fn(start), return_attention_scores=True)
        outputs.append(to_numpy(out))
        weights.append(to_numpy(w))
    return np.concatenate(outputs, axis=1), weights, to_numpy(cache)


def test_self_attention_cache_matches_full_causal_pass():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    x = rand(2, 5, 8)
    full = to_numpy(layer(x, x, use_causal_mask=True))
    # Garbage in the unwritten slots must not leak: the causal rule gives them 0 weight.
    cache = rand(2, 2, 2, 7, 4)
    one_by_one, weights, final_cache = incremental(layer, x, cache, [(t, t + 1) for t in range(5)])
    np.testing.assert_allclose(one_by_one, full, atol=1e-5)
    for t, w in enumerate(weights):
        assert np.all(w[..., t + 1:] == 0)  # (batch, heads, 1, max_len)
    # Slots 0..4 hold K and V of x, slots 5..6 are untouched.
    k = to_numpy(layer.key_dense(x)).transpose(0, 2, 1, 3)  # (batch, 5, heads, hd) -> (batch, heads, 5, hd)
    v = to_numpy(layer.value_dense(x)).transpose(0, 2, 1, 3)
    np.testing.assert_allclose(final_cache[:, 0, :, :5], k, atol=1e-6)
    np.testing.assert_allclose(final_cache[:, 1, :, :5], v, atol=1e-6)
    np.testing.assert_array_equal(final_cache[:, :, :, 5:], cache[:, :, :, 5:])

    # Several tokens per write (prompt, then steps) give the same result.
    chunked, _, _ = incremental(layer, x, cache, [(0, 3), (3, 4), (4, 5)])
    np.testing.assert_allclose(chunked, full, atol=1e-5)


def test_self_attention_cache_inside_tf_function_with_tensor_index():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    x = rand(2, 4, 8)
    full = to_numpy(layer(x, x, use_causal_mask=True))

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, 1, 8), tf.float32),
            tf.TensorSpec((None, 2, 2, None, 4), tf.float32),
            tf.TensorSpec((), tf.int32),
        ]
    )
    def step(token, cache, index):
        return layer(token, token, cache=cache, cache_update_index=index)

    cache = tf.zeros((2, 2, 2, 6, 4))
    outputs = []
    for t in range(4):
        out, cache = step(x[:, t:t + 1], cache, tf.constant(t))
        outputs.append(out.numpy())
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), full, atol=1e-5)


def test_cross_attention_cache_matches_projection():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    query, memory = rand(2, 3, 8), rand(2, 6, 8)
    key_padding = np.array([[1] * 4 + [0] * 2, [1] * 6], bool)
    expected = to_numpy(layer(query, memory, key_padding_mask=key_padding))
    cache = layer.compute_cache(memory)
    assert cache.shape == (2, 2, 2, 6, 4)
    out, weights, same_cache = layer(query, None, key_padding_mask=key_padding, cache=cache,
                                     return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(out), expected, atol=1e-6)
    np.testing.assert_array_equal(to_numpy(same_cache), to_numpy(cache))
    assert np.all(to_numpy(weights)[0, ..., 4:] == 0)


def test_cache_needs_equal_key_and_value_dims():
    layer = MultiHeadAttention(num_heads=2, key_dim=4, value_dim=3)
    x = rand(1, 2, 8)
    layer(x, x)
    with pytest.raises(ValueError, match="key_dim == value_dim"):
        layer.compute_cache(x)


def test_attention_dropout_only_in_training():
    layer = MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.5)
    x = rand(2, 6, 8)
    np.testing.assert_array_equal(to_numpy(layer(x, x)), to_numpy(layer(x, x, training=False)))
    assert not np.allclose(to_numpy(layer(x, x, training=True)), to_numpy(layer(x, x)))


def test_config_round_trip():
    layer = MultiHeadAttention(num_heads=3, key_dim=2, value_dim=5, dropout=0.1,
                               use_bias=False, output_dim=7, kernel_initializer="he_normal",
                               name="mha")
    config = layer.get_config()
    restored = MultiHeadAttention.from_config(config)
    assert restored.get_config() == config
    assert (restored.num_heads, restored.key_dim, restored.value_dim, restored.output_dim) == (
        3, 2, 5, 7)
    assert restored(rand(1, 2, 4), rand(1, 3, 4)).shape == (1, 2, 7)


def test_functional_save_load_and_fit(tmp_path):
    query = keras.Input((None, 8))
    memory = keras.Input((None, 6))
    memory_mask = keras.Input((None,), dtype="bool")
    attended, weights = MultiHeadAttention(num_heads=2, key_dim=4, name="mha")(
        query, memory, key_padding_mask=memory_mask, return_attention_scores=True
    )
    assert tuple(attended.shape) == (None, None, 8)
    assert tuple(weights.shape)[:2] == (None, 2)
    outputs = MultiHeadAttention(num_heads=2, key_dim=4, name="self")(
        attended, attended, use_causal_mask=True
    )
    model = keras.Model([query, memory, memory_mask], outputs)
    inputs = [rand(2, 3, 8), rand(2, 5, 6), np.array([[1, 1, 1, 0, 0], [1] * 5], bool)]

    path = tmp_path / "mha.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(model.predict(inputs, verbose=0),
                                  loaded.predict(inputs, verbose=0))

    model.compile(optimizer="adam", loss="mse")
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(inputs, rand(2, 3, 8), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(not np.allclose(b, a) for b, a in zip(before, model.get_weights(), strict=True))


def test_cached_step_converts_to_onnx():
    tf2onnx = pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    started = time.time()
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    layer(rand(2, 3, 8), rand(2, 3, 8))
    x = rand(2, 1, 8)

    @tf.function
    def step(token, cache, index):
        return layer(token, token, cache=cache, cache_update_index=index)

    signature = [
        tf.TensorSpec((None, None, 8), tf.float32, name="token"),
        tf.TensorSpec((None, 2, 2, None, 4), tf.float32, name="cache"),
        tf.TensorSpec((), tf.int32, name="index"),
    ]
    proto, _ = tf2onnx.convert.from_function(step, input_signature=signature, opset=18)
    op_types = [node.op_type for node in proto.graph.node]
    # The cache is written by one ScatterND; nothing lowers to an XLA op tf2onnx cannot convert.
    assert op_types.count("ScatterND") == 1 and not any("Xla" in op for op in op_types), op_types
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    cache = rand(2, 2, 2, 6, 4)
    for index in (0, 2, 5):
        got = session.run(None, {"token": x, "cache": cache, "index": np.array(index, np.int32)})
        expected = step(x, cache, tf.constant(index))
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e.numpy(), atol=1e-5, rtol=0)
    assert time.time() - started < 20
