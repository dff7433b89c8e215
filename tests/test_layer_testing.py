"""The layer-test harness can fail: each check catches the mistake it is there for."""

import keras
import numpy as np
import pytest
from layer_testing import check_mixed_precision, check_serialization, rand, run_layer_test


class ForgetsAnArgument(keras.layers.Layer):
    """`get_config` has `shift` but not `scale`: a .keras file would rebuild the layer with scale = 1."""

    def __init__(self, scale: float = 1.0, shift: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.shift = scale, shift

    def call(self, x):
        return x * self.scale + self.shift

    def get_config(self):
        return {**super().get_config(), "shift": self.shift}


class FixedDtypeSublayer(keras.layers.Layer):
    """Its Dense ignores the layer's dtype policy: under mixed_float16 it computes in float32."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(3)

    def call(self, x):
        return self.dense(x)


@keras.saving.register_keras_serializable(package="test_layer_testing")
class OverflowsInFloat16(keras.layers.Layer):
    """Masks with -1e9 in the compute dtype: -inf in float16 (max ~6.5e4)."""

    def call(self, x):
        return x + keras.ops.cast(-1e9, self.compute_dtype)


def test_config_must_name_every_constructor_argument():
    with pytest.raises(AssertionError, match="lacks \\['scale'\\]"):
        check_serialization(ForgetsAnArgument, {"scale": 2.0}, {"x": rand(2, 3)}, {})


def test_every_sublayer_must_follow_the_dtype_policy():
    layer = FixedDtypeSublayer()
    with pytest.raises(AssertionError, match="dense"):
        check_mixed_precision(layer, FixedDtypeSublayer, {}, {"x": rand(2, 4)}, {}, atol=5e-2)


def test_outputs_must_stay_finite_under_mixed_float16():
    x = rand(2, 4)
    assert np.all(np.isfinite(np.asarray(OverflowsInFloat16()(x))))  # fine in float32
    with pytest.raises(AssertionError, match="non-finite"):
        run_layer_test(OverflowsInFloat16, {}, {"x": x}, (2, 4))
