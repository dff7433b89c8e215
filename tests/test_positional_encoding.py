"""SinusoidalPositionalEncoding: the formula of section 3.5, start_index, large positions, dynamic
lengths, and the harness (serialization, symbolic/eager, compiled pass, mixed_float16)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_testing import run_layer_test
from layer_testing import sinusoidal_encoding as reference_encoding

from keras_nlp_week4.layers.positional_encoding import SinusoidalPositionalEncoding


def test_matches_formula_and_is_not_added_to_inputs():
    layer = SinusoidalPositionalEncoding()
    x = np.random.default_rng(0).normal(size=(3, 7, 8)).astype("float32")
    pe = keras.ops.convert_to_numpy(layer(x))
    assert pe.shape == (1, 7, 8)
    np.testing.assert_allclose(pe[0], reference_encoding(range(7), 8), atol=1e-6)
    # Only the shape of the input matters.
    np.testing.assert_array_equal(pe, keras.ops.convert_to_numpy(layer(np.zeros_like(x))))


def test_known_values():
    pe = keras.ops.convert_to_numpy(SinusoidalPositionalEncoding()(np.zeros((1, 3, 6))))[0]
    np.testing.assert_allclose(pe[0], [0, 1, 0, 1, 0, 1], atol=1e-7)  # sin(0), cos(0)
    assert pe[1, 0] == pytest.approx(math.sin(1.0), abs=1e-6)
    assert pe[1, 1] == pytest.approx(math.cos(1.0), abs=1e-6)
    # Last pair, i = 2: wavelength 2*pi * 10000^(4/6).
    assert pe[2, 4] == pytest.approx(math.sin(2 / 10000 ** (4 / 6)), abs=1e-6)
    assert pe[2, 5] == pytest.approx(math.cos(2 / 10000 ** (4 / 6)), abs=1e-6)


@pytest.mark.parametrize("start_index", [5, np.int32(5), tf.constant(5)])
def test_start_index_shifts_positions(start_index):
    layer = SinusoidalPositionalEncoding()
    pe = keras.ops.convert_to_numpy(layer(np.zeros((2, 3, 10)), start_index=start_index))
    np.testing.assert_allclose(pe[0], reference_encoding(range(5, 8), 10), atol=1e-5)
    full = keras.ops.convert_to_numpy(layer(np.zeros((1, 8, 10))))
    np.testing.assert_allclose(pe[0], full[0, 5:], atol=1e-6)


def test_large_positions_stay_accurate():
    pe = SinusoidalPositionalEncoding()(np.zeros((1, 2, 16)), start_index=1000)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(pe)[0], reference_encoding([1000, 1001], 16), atol=1e-3
    )


def test_dynamic_length_inside_tf_function():
    layer = SinusoidalPositionalEncoding()

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, None, 4), tf.float32),
            tf.TensorSpec((), tf.int32),
        ]
    )
    def encode(x, start):
        return layer(x, start_index=start)

    for length, start in [(3, 0), (6, 2)]:
        pe = encode(tf.zeros((1, length, 4)), tf.constant(start)).numpy()
        np.testing.assert_allclose(
            pe[0], reference_encoding(range(start, start + length), 4), atol=1e-6
        )


def test_odd_d_model_raises():
    with pytest.raises(ValueError, match="even"):
        SinusoidalPositionalEncoding()(np.zeros((1, 3, 5)))


def test_layer_harness():
    # The encoding does not depend on the batch: (1, seq_len, d_model) for any input.
    x = np.random.default_rng(1).normal(size=(2, 5, 4)).astype("float32")
    run_layer_test(SinusoidalPositionalEncoding, {}, {"inputs": x}, (1, 5, 4),
                   expected_num_trainable_weights=0)
    run_layer_test(SinusoidalPositionalEncoding, {}, {"inputs": x}, (1, 5, 4),
                   call_kwargs=dict(start_index=7), run_training_check=False)
