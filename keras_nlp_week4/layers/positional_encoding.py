"""Fixed sinusoidal positional encoding (Vaswani et al. 2017, section 3.5)."""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_nlp_week4")
class SinusoidalPositionalEncoding(keras.layers.Layer):
    """Sinusoidal positional encoding of "Attention Is All You Need".

    Vaswani et al. 2017, section 3.5:

    ```
    PE(pos, 2i)     = sin(pos / 10000^(2i / d_model))
    PE(pos, 2i + 1) = cos(pos / 10000^(2i / d_model))
    ```

    The layer returns the encoding only; the caller adds it to the (scaled) token
    embeddings. It is computed from `arange` on every call rather than read from a table
    of a fixed maximum length, so any sequence length works, including a dynamic one
    inside a `tf.function` or an exported graph. The layer has no weights.

    Args:
        **kwargs: other keyword arguments passed to `keras.layers.Layer` (`name`,
            `dtype`, ...).

    Call arguments:
        inputs: float tensor `(batch, seq_len, d_model)`. Only its shape is used;
            `d_model` must be static and even.
        start_index: python int or scalar int tensor. Position of the first token of
            `inputs`; nonzero when decoding incrementally (token `t` is fed alone and
            must get the encoding of position `t`). Defaults to 0.

    Returns:
        Tensor `(1, seq_len, d_model)` in the layer's compute dtype, broadcastable
        against `inputs`. It is NOT added to `inputs`.

    Example:

    ```python
    x = np.zeros((2, 5, 8), "float32")
    pe = SinusoidalPositionalEncoding()(x)          # (1, 5, 8)
    step = SinusoidalPositionalEncoding()(x[:, :1], start_index=3)  # position 3 only
    ```
    """

    def call(self, inputs, start_index=0):
        d_model = inputs.shape[-1]
        if d_model is None:
            raise ValueError("SinusoidalPositionalEncoding needs a static last dimension.")
        if d_model % 2:
            raise ValueError(
                f"SinusoidalPositionalEncoding needs an even d_model, got {d_model}: "
                "dimensions come in (sin, cos) pairs."
            )
        seq_len = ops.shape(inputs)[1]
        # float32 even under mixed precision: float16 positions and angles lose whole
        # periods of the high-frequency sinusoids after a few hundred positions.
        positions = ops.cast(ops.arange(seq_len), "float32") + ops.cast(start_index, "float32")
        # 1 / 10000^(2i / d_model) for i = 0 .. d_model/2 - 1
        two_i = ops.arange(0, d_model, 2, dtype="float32")  # (d_model / 2,)
        inverse_frequencies = ops.exp(two_i * (-math.log(10000.0) / d_model))
        # (seq_len, 1) * (1, d_model / 2) -> (seq_len, d_model / 2)
        angles = ops.expand_dims(positions, -1) * ops.expand_dims(inverse_frequencies, 0)
        # Interleave so that even dimensions hold sin and odd dimensions hold cos.
        encoding = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)  # (seq, d/2, 2)
        encoding = ops.reshape(encoding, (1, -1, d_model))  # (1, seq_len, d_model)
        return ops.cast(encoding, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (1, input_shape[1], input_shape[-1])
