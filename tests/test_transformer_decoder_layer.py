"""TransformerDecoderLayer: the numpy wiring of section 3.1, causality, both caches (eager and in a
tf.function), masks, its return type, and the harness (serialization, symbolic/eager, fit, mixed_float16)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_testing import (
    feed_forward,
    layer_norm,
    rand,
    randomize_layer_norms,
    run_layer_test,
    saved_variable_groups,
    to_numpy,
)

from keras_nlp_week4.layers.multi_head_attention import AttentionOutput
from keras_nlp_week4.layers.token_and_position_embedding import TokenAndPositionEmbedding
from keras_nlp_week4.layers.transformer_decoder_layer import TransformerDecoderLayer

D_MODEL, HEADS, D_FF, HEAD_DIM = 8, 2, 16, 4
SRC_PADDING = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)


def reference_decoder(layer, x, memory, memory_padding):
    """Section 3.1 wiring in numpy; the attentions are MultiHeadAttention (tested apart)."""

    def self_attention(h):
        return to_numpy(layer.self_attention(h, h, use_causal_mask=True).output)

    def cross_attention(h):
        return to_numpy(layer.cross_attention(h, memory, key_padding_mask=memory_padding).output)

    sublayers = [self_attention, cross_attention, lambda h: feed_forward(h, layer)]
    for sublayer, norm in zip(sublayers, layer.layer_norms(), strict=True):
        if layer.norm_first:
            x = x + sublayer(layer_norm(x, norm))
        else:
            x = layer_norm(x + sublayer(x), norm)
    return x


def make_layer(norm_first=False, dropout=0.0):
    layer = TransformerDecoderLayer(D_MODEL, HEADS, D_FF, dropout=dropout, norm_first=norm_first)
    layer(rand(1, 2, D_MODEL), rand(1, 3, D_MODEL))
    randomize_layer_norms(layer)
    return layer


@pytest.mark.parametrize("norm_first", [False, True])
def test_matches_reference_wiring(norm_first):
    layer = make_layer(norm_first)
    x, memory = rand(2, 5, D_MODEL), rand(2, 6, D_MODEL)
    decoded = layer(x, memory, encoder_padding_mask=SRC_PADDING, return_attention_scores=True)
    out, cross_weights = decoded.output, decoded.scores
    assert decoded.cache is None
    expected = reference_decoder(layer, x, memory, SRC_PADDING)
    np.testing.assert_allclose(to_numpy(out), expected, atol=1e-5)
    assert cross_weights.shape == (2, HEADS, 5, 6)
    assert np.all(to_numpy(cross_weights)[0, ..., 4:] == 0.0)


@pytest.mark.parametrize("norm_first", [False, True])
def test_causality(norm_first):
    layer = make_layer(norm_first)
    x, memory = rand(2, 6, D_MODEL), rand(2, 4, D_MODEL)
    base = to_numpy(layer(x, memory).output)
    for t in range(5):
        changed = x.copy()
        changed[:, t + 1:] = rand(2, 5 - t, D_MODEL) * 5
        out = to_numpy(layer(changed, memory).output)
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5)
        assert not np.allclose(out[:, t + 1:], base[:, t + 1:])


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("use_cross_cache", [True, False])
def test_cached_incremental_decoding_matches_full_pass(norm_first, use_cross_cache):
    layer = make_layer(norm_first)
    x, memory = rand(2, 5, D_MODEL), rand(2, 6, D_MODEL)
    full = layer(x, memory, encoder_padding_mask=SRC_PADDING, return_attention_scores=True)
    cross = layer.compute_cross_attention_cache(memory) if use_cross_cache else None
    if cross is not None:
        assert cross.shape == (2, 2, HEADS, 6, HEAD_DIM)
    cache = rand(2, 2, HEADS, 7, HEAD_DIM)  # unwritten slots hold garbage on purpose
    outputs, weights = [], []
    for t in range(5):
        step = layer(
            x[:, t:t + 1],
            encoder_outputs=None if use_cross_cache else memory,
            encoder_padding_mask=SRC_PADDING,
            self_attention_cache=cache,
            self_attention_cache_update_index=t,
            cross_attention_cache=cross,
            return_attention_scores=True,
        )
        cache = step.cache
        outputs.append(to_numpy(step.output))
        weights.append(to_numpy(step.scores))
    assert cache.shape == (2, 2, HEADS, 7, HEAD_DIM)
    np.testing.assert_allclose(np.concatenate(outputs, 1), to_numpy(full.output), atol=1e-5)
    np.testing.assert_allclose(np.concatenate(weights, 2), to_numpy(full.scores), atol=1e-6)


def test_cached_decoding_inside_tf_function_with_tensor_index():
    layer = make_layer()
    x, memory = rand(2, 4, D_MODEL), rand(2, 6, D_MODEL)
    full = to_numpy(layer(x, memory, encoder_padding_mask=SRC_PADDING).output)

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
        decoded = step(x[:, t:t + 1], cache, tf.constant(t), cross, SRC_PADDING)
        assert decoded.scores is None
        cache = decoded.cache
        outputs.append(decoded.output.numpy())
    np.testing.assert_allclose(np.concatenate(outputs, 1), full, atol=1e-5)


def test_decoder_padding_mask_and_keras_mask():
    ids = np.array([[4, 2, 6, 0], [1, 2, 3, 4]], "int32")
    embed = TokenAndPositionEmbedding(10, D_MODEL)
    layer = make_layer()
    memory = rand(2, 6, D_MODEL)
    implicit = layer(embed(ids), memory).output
    explicit = layer(to_numpy(embed(ids)), memory, decoder_padding_mask=ids != 0).output
    np.testing.assert_allclose(to_numpy(implicit), to_numpy(explicit), atol=1e-6)
    np.testing.assert_array_equal(to_numpy(implicit._keras_mask), ids != 0)
    # Causal + padding: the real tokens never look at padding, so they match an unmasked pass.
    np.testing.assert_allclose(to_numpy(explicit)[0, :3],
                               to_numpy(layer(to_numpy(embed(ids)), memory).output)[0, :3], atol=1e-6)


def test_argument_errors():
    layer = make_layer()
    x = rand(1, 1, D_MODEL)
    with pytest.raises(ValueError, match="update_index"):
        layer(x, rand(1, 3, D_MODEL), self_attention_cache=rand(1, 2, HEADS, 4, HEAD_DIM))
    with pytest.raises(ValueError, match="encoder_outputs"):
        layer(x)


@pytest.mark.parametrize("init_kwargs", [
    dict(d_model=D_MODEL, num_heads=HEADS, d_ff=D_FF),
    dict(d_model=D_MODEL, num_heads=HEADS, d_ff=D_FF, dropout=0.3, activation="gelu", norm_first=True,
         layer_norm_epsilon=1e-5),
])
def test_layer_harness(init_kwargs):
    # Teacher forcing over the encoder outputs, with the cross-attention weights.
    run_layer_test(TransformerDecoderLayer, init_kwargs,
                   {"x": rand(2, 5, D_MODEL), "encoder_outputs": rand(2, 6, D_MODEL),
                    "encoder_padding_mask": SRC_PADDING},
                   AttentionOutput((2, 5, D_MODEL), (2, HEADS, 5, 6)),
                   call_kwargs=dict(return_attention_scores=True), expected_num_trainable_weights=26)


def test_saved_weights_keep_their_layout():
    # The places in a .keras file where models saved before the sub-layers became plain attributes
    # keep their weights (`layer_norms()` is a method so that saving does not store the norms under it).
    x, memory = keras.Input((None, D_MODEL)), keras.Input((None, D_MODEL))
    attention = ["key_dense", "output_dense", "query_dense", "value_dense"]
    assert saved_variable_groups(TransformerDecoderLayer(D_MODEL, HEADS, D_FF), x, memory) == sorted(
        [f"{sublayer}/{dense}" for sublayer in ("self_attention", "cross_attention") for dense in attention]
        + ["self_attention_layer_norm", "cross_attention_layer_norm", "feed_forward_inner",
           "feed_forward_outer", "feed_forward_layer_norm"])


def test_layer_harness_cached_step():
    # One decoding step at position 3 from both caches, as `Transformer.decode_step` runs it.
    run_layer_test(TransformerDecoderLayer, dict(d_model=D_MODEL, num_heads=HEADS, d_ff=D_FF),
                   {"x": rand(2, 1, D_MODEL), "encoder_padding_mask": SRC_PADDING,
                    "self_attention_cache": rand(2, 2, HEADS, 7, HEAD_DIM),
                    "cross_attention_cache": rand(2, 2, HEADS, 6, HEAD_DIM)},
                   AttentionOutput((2, 1, D_MODEL), None, (2, 2, HEADS, 7, HEAD_DIM)),
                   call_kwargs=dict(self_attention_cache_update_index=3))
