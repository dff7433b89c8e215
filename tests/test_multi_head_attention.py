"""MultiHeadAttention: the numpy reference of section 3.2.2, masks, both caches, its one return type,
tf.function and ONNX conversion, and the harness (serialization, symbolic/eager, fit, mixed_float16)."""


import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_testing import RNG, masked_softmax, rand, run_layer_test, to_numpy

from keras_nlp_week4.layers.multi_head_attention import AttentionOutput, MultiHeadAttention

PADDING = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)  # (batch, k_len = 6)


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
        weights = masked_softmax(scores, mask)
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
    attended = layer(query, value, key_padding_mask=PADDING, return_attention_scores=True)
    out, weights = attended.output, attended.scores
    expected_out, expected_weights = reference_mha(
        layer, query, value, mask=np.broadcast_to(PADDING[:, None, :], (2, 4, 6))
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
    attended = layer(query, value, key=key, attention_mask=attention_mask,
                     return_attention_scores=True)
    out, weights = attended.output, attended.scores
    expected_out, expected_weights = reference_mha(layer, query, value, key, attention_mask)
    np.testing.assert_allclose(to_numpy(out), expected_out, atol=1e-5)
    np.testing.assert_allclose(to_numpy(weights), expected_weights, atol=1e-6)
    assert np.all(to_numpy(weights)[np.broadcast_to(~attention_mask[:, None], weights.shape)] == 0)


def test_causal_and_padding_masks_combined():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    x = rand(2, 5, 8)
    key_padding = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    attended = layer(x, x, key_padding_mask=key_padding, use_causal_mask=True,
                     return_attention_scores=True)
    out, weights = attended.output, attended.scores
    mask = causal(5, 5)[None] & key_padding[:, None, :]
    expected_out, expected_weights = reference_mha(layer, x, x, mask=mask)
    np.testing.assert_allclose(to_numpy(out), expected_out, atol=1e-5)
    np.testing.assert_allclose(to_numpy(weights), expected_weights, atol=1e-6)
    assert np.all(to_numpy(weights)[:, :, np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]] == 0)


def test_fully_masked_row_gives_zero_weights_not_nan():
    layer = MultiHeadAttention(num_heads=1, key_dim=4)
    x = rand(1, 3, 4)
    attended = layer(x, x, key_padding_mask=np.zeros((1, 3), bool), return_attention_scores=True)
    out, weights = attended.output, attended.scores
    assert np.all(to_numpy(weights) == 0) and np.all(np.isfinite(to_numpy(out)))


def test_one_return_type_with_fields_for_what_was_asked():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    x = rand(2, 3, 8)
    cache = np.zeros((2, 2, 2, 5, 4), "float32")
    plain = layer(x, x)
    assert type(plain) is AttentionOutput and plain.output.shape == (2, 3, 8)
    assert plain.scores is None and plain.cache is None
    assert layer(x, x, return_attention_scores=True).scores.shape == (2, 2, 3, 3)
    step = layer(x, x, cache=cache, cache_update_index=0)
    assert step.scores is None and step.cache.shape == cache.shape
    step = layer(x, x, cache=cache, cache_update_index=0, return_attention_scores=True)
    assert step.scores.shape == (2, 2, 3, 5) and step.cache.shape == cache.shape
    # Symbolic calls with unknown lengths: the fields left None are not outputs of the graph.
    query, memory = keras.Input((None, 8)), keras.Input((None, 6))
    attended = MultiHeadAttention(num_heads=2, key_dim=4)(query, memory, return_attention_scores=True)
    assert tuple(attended.output.shape) == (None, None, 8) and attended.cache is None
    assert tuple(attended.scores.shape) == (None, 2, None, None)
    model = keras.Model([query, memory], [attended.output, attended.scores])
    out, weights = model([x, rand(2, 4, 6)])
    assert out.shape == (2, 3, 8) and weights.shape == (2, 2, 3, 4)


def incremental(layer, x, cache, chunks, index_fn=lambda i: i):
    """Feeds x through a self-attention cache in chunks [(start, stop), ...]."""
    outputs, weights = [], []
    for start, stop in chunks:
        step = layer(x[:, start:stop], x[:, start:stop], cache=cache,
                     cache_update_index=index_fn(start), return_attention_scores=True)
        cache = step.cache
        outputs.append(to_numpy(step.output))
        weights.append(to_numpy(step.scores))
    return np.concatenate(outputs, axis=1), weights, to_numpy(cache)


def test_self_attention_cache_matches_full_causal_pass():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    x = rand(2, 5, 8)
    full = to_numpy(layer(x, x, use_causal_mask=True).output)
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
    full = to_numpy(layer(x, x, use_causal_mask=True).output)

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
        result = step(x[:, t:t + 1], cache, tf.constant(t))  # an AttentionOutput through tf.function
        assert result.scores is None
        cache = result.cache
        outputs.append(result.output.numpy())
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), full, atol=1e-5)


def test_cross_attention_cache_matches_projection():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    query, memory = rand(2, 3, 8), rand(2, 6, 8)
    expected = to_numpy(layer(query, memory, key_padding_mask=PADDING).output)
    cache = layer.compute_cache(memory)
    assert cache.shape == (2, 2, 2, 6, 4)
    attended = layer(query, None, key_padding_mask=PADDING, cache=cache, return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(attended.output), expected, atol=1e-6)
    np.testing.assert_array_equal(to_numpy(attended.cache), to_numpy(cache))
    assert np.all(to_numpy(attended.scores)[0, ..., 4:] == 0)


def test_cache_needs_equal_key_and_value_dims():
    layer = MultiHeadAttention(num_heads=2, key_dim=4, value_dim=3)
    x = rand(1, 2, 8)
    layer(x, x)
    with pytest.raises(ValueError, match="key_dim == value_dim"):
        layer.compute_cache(x)


def test_attention_dropout_only_in_training():
    layer = MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.5)
    x = rand(2, 6, 8)
    inference = to_numpy(layer(x, x).output)
    np.testing.assert_array_equal(inference, to_numpy(layer(x, x, training=False).output))
    assert not np.allclose(to_numpy(layer(x, x, training=True).output), inference)


@pytest.mark.parametrize(
    "init_kwargs,call_kwargs",
    [
        # Cross-attention with a padding mask and the scores.
        (dict(num_heads=2, key_dim=4), dict(return_attention_scores=True)),
        # Causal self-attention, every constructor argument away from its default.
        (dict(num_heads=3, key_dim=2, value_dim=5, dropout=0.1, use_bias=False, output_dim=7,
              kernel_initializer="he_normal", bias_initializer="ones"), dict(use_causal_mask=True)),
    ],
)
def test_layer_harness(init_kwargs, call_kwargs):
    query, value = rand(2, 4, 8), rand(2, 6, 8)
    heads = init_kwargs["num_heads"]
    data = {"query": query, "value": value, "key_padding_mask": PADDING}
    if call_kwargs.get("use_causal_mask"):
        data = {"query": query, "value": query}
    k_len = 6 if "key_padding_mask" in data else 4
    scores = (2, heads, 4, k_len) if call_kwargs.get("return_attention_scores") else None
    run_layer_test(MultiHeadAttention, init_kwargs, data,
                   AttentionOutput((2, 4, init_kwargs.get("output_dim", 8)), scores),
                   call_kwargs=call_kwargs, expected_num_trainable_weights=8 if init_kwargs.get(
                       "use_bias", True) else 4)


def test_layer_harness_with_caches():
    # One decoding step writing a self-attention cache at position 2; then cross-attention from a cache.
    token = rand(2, 1, 8)
    run_layer_test(MultiHeadAttention, dict(num_heads=2, key_dim=4),
                   {"query": token, "value": token, "cache": rand(2, 2, 2, 5, 4)},
                   AttentionOutput((2, 1, 8), (2, 2, 1, 5), (2, 2, 2, 5, 4)),
                   call_kwargs=dict(cache_update_index=2, return_attention_scores=True))
    run_layer_test(MultiHeadAttention, dict(num_heads=2, key_dim=4),
                   {"query": token, "value": None, "cache": rand(2, 2, 2, 6, 4),
                    "key_padding_mask": PADDING},
                   AttentionOutput((2, 1, 8), None, (2, 2, 2, 6, 4)))


def test_cached_step_converts_to_onnx():
    tf2onnx = pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
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
        expected = step(x, cache, tf.constant(index))  # AttentionOutput(output, None, cache)
        for g, e in zip(got, [expected.output, expected.cache], strict=True):
            np.testing.assert_allclose(g, e.numpy(), atol=1e-5, rtol=0)
