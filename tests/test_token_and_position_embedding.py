"""TokenAndPositionEmbedding: scaled embedding + positions, start_index, the padding mask, tied logits,
dropout, its initializer, and the harness (serialization, symbolic/eager, fit, mixed_float16)."""

import math

import keras
import numpy as np
import pytest
from layer_testing import run_layer_test, to_numpy
from layer_testing import sinusoidal_encoding as reference_positions

from keras_nlp_week4.layers.token_and_position_embedding import TokenAndPositionEmbedding

VOCAB, D_MODEL = 11, 8
TOKENS = np.array([[3, 5, 7, 0, 0], [1, 2, 3, 4, 10]], dtype="int32")


@pytest.mark.parametrize("scale", [True, False])
def test_scaled_embedding_plus_positions(scale):
    layer = TokenAndPositionEmbedding(VOCAB, D_MODEL, scale_by_sqrt_d_model=scale)
    out = to_numpy(layer(TOKENS))
    table = to_numpy(layer.embeddings)
    factor = math.sqrt(D_MODEL) if scale else 1.0
    expected = table[TOKENS] * factor + reference_positions(range(5), D_MODEL)[None]
    assert out.shape == (2, 5, D_MODEL)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_start_index_for_incremental_decoding():
    layer = TokenAndPositionEmbedding(VOCAB, D_MODEL)
    full = to_numpy(layer(TOKENS))
    step = to_numpy(layer(TOKENS[:, 3:4], start_index=3))
    np.testing.assert_allclose(step, full[:, 3:4], atol=1e-6)


def test_mask_propagates_to_next_layer():
    layer = TokenAndPositionEmbedding(VOCAB, D_MODEL, pad_id=0)
    x = layer(TOKENS)
    expected = TOKENS != 0
    np.testing.assert_array_equal(to_numpy(layer.compute_mask(TOKENS)), expected)
    np.testing.assert_array_equal(to_numpy(x._keras_mask), expected)

    # A mask-consuming Keras layer downstream sees it in a functional model.
    inputs = keras.Input((None,), dtype="int32")
    pooled = keras.layers.GlobalAveragePooling1D()(layer(inputs))
    pooled = to_numpy(keras.Model(inputs, pooled)(TOKENS))
    np.testing.assert_allclose(pooled[0], to_numpy(x)[0, :3].mean(axis=0), atol=1e-5)


def test_custom_pad_id_and_no_mask():
    assert to_numpy(TokenAndPositionEmbedding(VOCAB, D_MODEL, pad_id=3).compute_mask(TOKENS))[
        0
    ].tolist() == [False, True, True, True, True]
    layer = TokenAndPositionEmbedding(VOCAB, D_MODEL, pad_id=None)
    assert layer.compute_mask(TOKENS) is None
    assert getattr(layer(TOKENS), "_keras_mask", None) is None


def test_logits_use_the_shared_matrix():
    layer = TokenAndPositionEmbedding(VOCAB, D_MODEL)
    x = layer(TOKENS)
    logits = to_numpy(layer.logits(x))
    assert logits.shape == (2, 5, VOCAB)
    np.testing.assert_allclose(logits, to_numpy(x) @ to_numpy(layer.embeddings).T, atol=1e-5)
    assert layer.embeddings is layer.trainable_weights[0]
    assert tuple(layer.embeddings.shape) == (VOCAB, D_MODEL)


def test_dropout_only_in_training():
    layer = TokenAndPositionEmbedding(VOCAB, D_MODEL, dropout=0.5)
    inference = to_numpy(layer(TOKENS, training=False))
    np.testing.assert_array_equal(inference, to_numpy(layer(TOKENS)))
    trained = to_numpy(layer(TOKENS, training=True))
    assert np.any(trained == 0) and not np.allclose(trained, inference)


def test_default_initializer_gives_unit_scale_after_scaling():
    layer = TokenAndPositionEmbedding(1000, 64)
    layer.build((None, None))
    std = to_numpy(layer.embeddings).std() * math.sqrt(64)
    assert 0.9 < std < 1.1


@pytest.mark.parametrize("init_kwargs", [
    dict(vocab_size=VOCAB, d_model=D_MODEL),
    dict(vocab_size=VOCAB, d_model=D_MODEL, dropout=0.2, pad_id=1, scale_by_sqrt_d_model=False,
         embeddings_initializer="he_normal"),
])
def test_layer_harness(init_kwargs):
    run_layer_test(TokenAndPositionEmbedding, init_kwargs, {"token_ids": TOKENS}, (2, 5, D_MODEL),
                   expected_num_trainable_weights=1)
    run_layer_test(TokenAndPositionEmbedding, init_kwargs, {"token_ids": TOKENS[:, 3:4]}, (2, 1, D_MODEL),
                   call_kwargs=dict(start_index=3), run_training_check=False)


def test_tied_model_fit():
    inputs = keras.Input((None,), dtype="int32")
    embed = TokenAndPositionEmbedding(VOCAB, D_MODEL, dropout=0.1)
    x = embed(inputs)
    assert tuple(x.shape) == (None, None, D_MODEL)
    # Weight tying: the output projection is the embedding matrix itself.
    tied = keras.layers.Lambda(
        embed.logits, output_shape=(None, VOCAB), mask=lambda inputs, mask: mask
    )(x)
    tied_model = keras.Model(inputs, tied)
    np.testing.assert_allclose(
        to_numpy(tied_model(TOKENS)), to_numpy(embed(TOKENS)) @ to_numpy(embed.embeddings).T,
        atol=1e-5,
    )
    tied_model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    before = to_numpy(embed.embeddings).copy()
    history = tied_model.fit(TOKENS, TOKENS, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(before, to_numpy(embed.embeddings))
