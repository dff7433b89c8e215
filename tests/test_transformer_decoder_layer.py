import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_nlp_week4.layers.token_and_position_embedding import TokenAndPositionEmbedding
from keras_nlp_week4.layers.transformer_decoder_layer import TransformerDecoderLayer

RNG = np.random.default_rng(0)
D_MODEL, HEADS, D_FF, HEAD_DIM = 8, 2, 16, 4
SRC_PADDING = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)


def rand(*shape):
    return RNG.normal(size=shape).astype("float32")


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def layer_norm(x, norm):
    gamma, beta = (to_numpy(w) for w in norm.weights)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + norm.epsilon) * gamma + beta).astype("float32")


def feed_forward(x, layer):
    """Vaswani et al. 2017, eq. (2)."""
    w1, b1 = (to_numpy(w) for w in layer.feed_forward_inner.weights)
    w2, b2 = (to_numpy(w) for w in layer.feed_forward_outer.weights)
    return np.maximum(x @ w1 + b1, 0) @ w2 + b2


def reference_decoder(layer, x, memory, memory_padding):
    """Section 3.1 wiring in numpy; the attentions are MultiHeadAttention (tested apart)."""

    def self_attention(h):
        return to_numpy(layer.self_attention(h, h, use_causal_mask=True))

    def cross_attention(h):
        return to_numpy(layer.cross_attention(h, memory, key_padding_mask=memory_padding))

    sublayers = [
        (self_attention, layer.self_attention_layer_norm),
        (cross_attention, layer.cross_attention_layer_norm),
        (lambda h: feed_forward(h, layer), layer.feed_forward_layer_norm),
    ]
    for sublayer, norm in sublayers:
        if layer.norm_first:
            x = x + sublayer(layer_norm(x, norm))
        else:
            x = layer_norm(x + sublayer(x), norm)
    return x


def make_layer(norm_first=False, dropout=0.0):
    layer = TransformerDecoderLayer(D_MODEL, HEADS, D_FF, dropout=dropout, norm_first=norm_first)
    layer(rand(1, 2, D_MODEL), rand(1, 3, D_MODEL))
    for norm in (layer.self_attention_layer_norm, layer.cross_attention_layer_norm,
                 layer.feed_forward_layer_norm):
        norm.set_weights([rand(D_MODEL) + 1.0, rand(D_MODEL)])
    return layer


@pytest.mark.parametrize("norm_first", [False, True])
def test_matches_reference_wiring(norm_first):
    layer = make_layer(norm_first)
    x, memory = rand(2, 5, D_MODEL), rand(2, 6, D_MODEL)
    out, cross_weights = layer(x, memory, encoder_padding_mask=SRC_PADDING,
                               return_attention_scores=True)
    expected = reference_decoder(layer, x, memory, SRC_PADDING)
    np.testing.assert_allclose(to_numpy(out), expected, atol=1e-5)
    assert cross_weights.shape == (2, HEADS, 5, 6)
    assert np.all(to_numpy(cross_weights)[0, ..., 4:] == 0.0)


@pytest.mark.parametrize("norm_first", [False, True])
def test_causality(norm_first):
    layer = make_layer(norm_first)
    x, memory = rand(2, 6, D_MODEL), rand(2, 4, D_MODEL)
    base = to_numpy(layer(x, memory))
    for t in range(5):
        changed = x.copy()
        changed[:, t + 1:] = rand(2, 5 - t, D_MODEL) * 5
        out = to_numpy(layer(changed, memory))
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5)
        assert not np.allclose(out[:, t + 1:], base[:, t + 1:])


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("use_cross_cache", [True, False])
def test_cached_incremental_decoding_matches_full_pass(norm_first, use_cross_cache):
    layer = make_layer(norm_first)
    x, memory = rand(2, 5, D_MODEL), rand(2, 6, D_MODEL)
    full, full_weights = layer(x, memory, encoder_padding_mask=SRC_PADDING,
                               return_attention_scores=True)
    cross = layer.compute_cross_attention_cache(memory) if use_cross_cache else None
    if cross is not None:
        assert cross.shape == (2, 2, HEADS, 6, HEAD_DIM)
    cache = rand(2, 2, HEADS, 7, HEAD_DIM)  # unwritten slots hold garbage on purpose
    outputs, weights = [], []
    for t in range(5):
        out, w, cache = layer(
            x[:, t:t + 1],
            encoder_outputs=None if use_cross_cache else memory,
            encoder_padding_mask=SRC_PADDING,
            self_attention_cache=cache,
            self_attention_cache_update_index=t,
            cross_attention_cache=cross,
            return_attention_scores=True,
        )
        outputs.append(to_numpy(out))
        weights.append(to_numpy(w))
    assert cache.shape == (2, 2, HEADS, 7, HEAD_DIM)
    np.testing.assert_allclose(np.concatenate(outputs, 1), to_numpy(full), atol=1e-5)
    np.testing.assert_allclose(np.concatenate(weights, 2), to_numpy(full_weights), atol=1e-6)


def test_cached_decoding_inside_tf_function_with_tensor_index():
    layer = make_layer()
    x, memory = rand(2, 4, D_MODEL), rand(2, 6, D_MODEL)
    full = to_numpy(layer(x, memory, encoder_padding_mask=SRC_PADDING))

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, 1, D_MODEL), tf.float32),
            tf.TensorSpec((None, 2, HEADS, None, HEAD_DIM), tf.float32),
            tf.TensorSpec((), tf.int32),
            tf.TensorSpec((None, 2, HEADS, None, HEAD_DIM), tf.float32),
            tf.TensorSpec((None, None), tf.bool),
        ]
    )
    def step(token, cache, index, cross, source_mask):
        return layer(token, encoder_padding_mask=source_mask, self_attention_cache=cache,
                     self_attention_cache_update_index=index, cross_attention_cache=cross)

    cross = layer.compute_cross_attention_cache(memory)
    cache = tf.zeros((2, 2, HEADS, 4, HEAD_DIM))
    outputs = []
    for t in range(4):
        out, cache = step(x[:, t:t + 1], cache, tf.constant(t), cross, SRC_PADDING)
        outputs.append(out.numpy())
    np.testing.assert_allclose(np.concatenate(outputs, 1), full, atol=1e-5)


def test_decoder_padding_mask_and_keras_mask():
    ids = np.array([[4, 2, 6, 0], [1, 2, 3, 4]], "int32")
    embed = TokenAndPositionEmbedding(10, D_MODEL)
    layer = make_layer()
    memory = rand(2, 6, D_MODEL)
    implicit = layer(embed(ids), memory)
    explicit = layer(to_numpy(embed(ids)), memory, decoder_padding_mask=ids != 0)
    np.testing.assert_allclose(to_numpy(implicit), to_numpy(explicit), atol=1e-6)
    np.testing.assert_array_equal(to_numpy(implicit._keras_mask), ids != 0)
    # Causal + padding: the real tokens never look at padding, so they match an unmasked pass.
    np.testing.assert_allclose(to_numpy(explicit)[0, :3],
                               to_numpy(layer(to_numpy(embed(ids)), memory))[0, :3], atol=1e-6)


def test_argument_errors():
    layer = make_layer()
    x = rand(1, 1, D_MODEL)
    with pytest.raises(ValueError, match="update_index"):
        layer(x, rand(1, 3, D_MODEL), self_attention_cache=rand(1, 2, HEADS, 4, HEAD_DIM))
    with pytest.raises(ValueError, match="encoder_outputs"):
        layer(x)


def test_config_round_trip():
    layer = TransformerDecoderLayer(D_MODEL, HEADS, D_FF, dropout=0.3, activation="gelu",
                                    norm_first=True, layer_norm_epsilon=1e-5, name="dec")
    config = layer.get_config()
    restored = TransformerDecoderLayer.from_config(config)
    assert restored.get_config() == config
    assert (restored.d_model, restored.num_heads, restored.d_ff, restored.dropout) == (
        D_MODEL, HEADS, D_FF, 0.3)


def test_functional_save_load_and_fit(tmp_path):
    target = keras.Input((None, D_MODEL))
    memory = keras.Input((None, D_MODEL))
    memory_mask = keras.Input((None,), dtype="bool")
    decoded, cross_weights = TransformerDecoderLayer(D_MODEL, HEADS, D_FF, name="dec")(
        target, memory, encoder_padding_mask=memory_mask, return_attention_scores=True
    )
    assert tuple(decoded.shape) == (None, None, D_MODEL)
    assert tuple(cross_weights.shape)[:2] == (None, HEADS)
    model = keras.Model([target, memory, memory_mask], keras.layers.Dense(3)(decoded))
    inputs = [rand(2, 5, D_MODEL), rand(2, 6, D_MODEL), SRC_PADDING]

    path = tmp_path / "decoder.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(model.predict(inputs, verbose=0),
                                  loaded.predict(inputs, verbose=0))

    model.compile(optimizer="adam", loss="mse")
    decoder = model.get_layer("dec")
    before = [to_numpy(w).copy() for w in decoder.weights]
    history = model.fit(inputs, rand(2, 5, 3), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [to_numpy(w) for w in decoder.weights]
    assert all(not np.allclose(b, a) for b, a in zip(before, after, strict=True))
