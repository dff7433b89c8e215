"""TransformerEncoderLayer: the numpy wiring of section 3.1 (post- and pre-norm), masks, dropout, and
the harness (serialization, symbolic/eager, fit, mixed_float16)."""

import numpy as np
import pytest
from layer_testing import (
    feed_forward,
    layer_norm,
    rand,
    randomize_layer_norms,
    run_layer_test,
    to_numpy,
)

from keras_nlp_week4.layers.token_and_position_embedding import TokenAndPositionEmbedding
from keras_nlp_week4.layers.transformer_encoder_layer import TransformerEncoderLayer

D_MODEL, HEADS, D_FF = 8, 2, 16
PADDING = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)


def reference_encoder(layer, x, padding_mask):
    """Section 3.1 wiring in numpy; the attention itself is MultiHeadAttention (tested apart)."""

    def attention(h):
        return to_numpy(layer.self_attention(h, h, key_padding_mask=padding_mask).output)

    attn_norm, ffn_norm = layer.self_attention_layer_norm, layer.feed_forward_layer_norm
    if layer.norm_first:
        x = x + attention(layer_norm(x, attn_norm))
        return x + feed_forward(layer_norm(x, ffn_norm), layer)
    x = layer_norm(x + attention(x), attn_norm)
    return layer_norm(x + feed_forward(x, layer), ffn_norm)


@pytest.mark.parametrize("norm_first", [False, True])
def test_matches_reference_wiring(norm_first):
    layer = TransformerEncoderLayer(D_MODEL, HEADS, D_FF, dropout=0.0, norm_first=norm_first)
    x = rand(2, 5, D_MODEL)
    layer(x)
    randomize_layer_norms(layer)
    out, weights = layer(x, padding_mask=PADDING, return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(out), reference_encoder(layer, x, PADDING), atol=1e-5)
    assert weights.shape == (2, HEADS, 5, 5)
    assert np.all(to_numpy(weights)[0, :, :, 3:] == 0.0)


def test_pre_and_post_norm_differ():
    x = rand(2, 5, D_MODEL)
    post = TransformerEncoderLayer(D_MODEL, HEADS, D_FF, dropout=0.0)
    pre = TransformerEncoderLayer(D_MODEL, HEADS, D_FF, dropout=0.0, norm_first=True)
    post(x), pre(x)
    pre.set_weights(post.get_weights())
    assert not np.allclose(to_numpy(post(x)), to_numpy(pre(x)))
    # Post-norm ends in a LayerNorm with gamma=1, beta=0: every row is standardised.
    np.testing.assert_allclose(to_numpy(post(x)).mean(-1), 0.0, atol=1e-5)


def test_padded_positions_do_not_affect_real_tokens():
    layer = TransformerEncoderLayer(D_MODEL, HEADS, D_FF, dropout=0.0)
    x = rand(2, 5, D_MODEL)
    changed = x.copy()
    changed[0, 3:] = rand(2, D_MODEL) * 10
    a = to_numpy(layer(x, padding_mask=PADDING))
    b = to_numpy(layer(changed, padding_mask=PADDING))
    np.testing.assert_allclose(a[0, :3], b[0, :3], atol=1e-5)
    np.testing.assert_array_equal(a[1], b[1])
    # Without the mask the change leaks into the real tokens.
    assert not np.allclose(to_numpy(layer(x))[0, :3], to_numpy(layer(changed))[0, :3])


def test_keras_mask_from_embedding_is_used_and_kept():
    ids = np.array([[4, 2, 6, 0, 0], [1, 2, 3, 4, 5]], "int32")
    embed = TokenAndPositionEmbedding(10, D_MODEL)
    layer = TransformerEncoderLayer(D_MODEL, HEADS, D_FF, dropout=0.0)
    implicit = layer(embed(ids))
    explicit = layer(to_numpy(embed(ids)), padding_mask=ids != 0)
    np.testing.assert_allclose(to_numpy(implicit), to_numpy(explicit), atol=1e-6)
    np.testing.assert_array_equal(to_numpy(implicit._keras_mask), ids != 0)


def test_dropout_only_in_training():
    layer = TransformerEncoderLayer(D_MODEL, HEADS, D_FF, dropout=0.5)
    x = rand(2, 5, D_MODEL)
    np.testing.assert_array_equal(to_numpy(layer(x)), to_numpy(layer(x, training=False)))
    assert not np.allclose(to_numpy(layer(x, training=True)), to_numpy(layer(x)))


def test_heads_must_divide_d_model():
    with pytest.raises(ValueError, match="divisible"):
        TransformerEncoderLayer(10, 3, 16)


@pytest.mark.parametrize("init_kwargs", [
    dict(d_model=D_MODEL, num_heads=HEADS, d_ff=D_FF),
    dict(d_model=D_MODEL, num_heads=HEADS, d_ff=D_FF, dropout=0.2, activation="gelu", norm_first=True,
         layer_norm_epsilon=1e-5),
])
def test_layer_harness(init_kwargs):
    run_layer_test(TransformerEncoderLayer, init_kwargs, {"x": rand(2, 5, D_MODEL), "padding_mask": PADDING},
                   ((2, 5, D_MODEL), (2, HEADS, 5, 5)), call_kwargs=dict(return_attention_scores=True),
                   expected_num_trainable_weights=16)
