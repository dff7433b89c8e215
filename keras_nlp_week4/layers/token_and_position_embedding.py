"""Token embedding scaled by sqrt(d_model) plus sinusoidal positions (Vaswani et al. 2017)."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_nlp_week4.layers.masks import padding_mask
from keras_nlp_week4.layers.positional_encoding import SinusoidalPositionalEncoding


@keras.saving.register_keras_serializable(package="keras_nlp_week4")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Input embedding of the Transformer: `dropout(E[token] * sqrt(d_model) + PE)`.

    Vaswani et al. 2017, section 3.4 ("In the embedding layers, we multiply those weights
    by sqrt(d_model)"), section 3.5 (sinusoidal positional encoding, see
    `SinusoidalPositionalEncoding`) and section 5.4 (dropout on the sums of the
    embeddings and the positional encodings).

    The embedding matrix `E` can double as the pre-softmax projection (section 3.4,
    weight tying, Press & Wolf 2017): `logits(x) = x @ E^T`.

    The layer carries the padding mask: `compute_mask` returns `token_ids != pad_id`, so
    downstream Keras layers receive it automatically.

    Args:
        vocab_size: int. Number of rows of `E`.
        d_model: int. Embedding width; must be even (sin/cos pairs).
        dropout: float in [0, 1). Dropout rate after the sum. Defaults to 0.
        pad_id: int or None. Padding token id for the output mask; None disables the
            mask. Defaults to 0.
        scale_by_sqrt_d_model: bool. Multiply the embeddings by `sqrt(d_model)` before
            adding the positions, as in the paper. Defaults to True.
        embeddings_initializer: initializer for `E`. Defaults to
            `RandomNormal(stddev=d_model ** -0.5)`, so that `E * sqrt(d_model)` has unit
            scale, matching the positional encoding, and tied logits start small (the
            Tensor2Tensor choice; the paper does not say).
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        token_ids: int tensor `(batch, seq_len)`.
        start_index: python int or scalar int tensor. Position of the first token, for
            incremental decoding. Defaults to 0.
        training: python bool, whether dropout is active.

    Returns:
        float tensor `(batch, seq_len, d_model)` with a Keras mask
        `(batch, seq_len)` (`True` = real token).

    Example:

    ```python
    embed = TokenAndPositionEmbedding(vocab_size=100, d_model=16)
    x = embed(np.array([[5, 7, 0]]))    # (1, 3, 16), mask [[True, True, False]]
    logits = embed.logits(x)            # (1, 3, 100), tied output projection
    ```
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        dropout: float = 0.0,
        pad_id: int | None = 0,
        scale_by_sqrt_d_model: bool = True,
        embeddings_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.d_model = int(d_model)
        self.dropout = float(dropout)
        self.pad_id = None if pad_id is None else int(pad_id)
        self.scale_by_sqrt_d_model = bool(scale_by_sqrt_d_model)
        self.embeddings_initializer = (
            None
            if embeddings_initializer is None
            else keras.initializers.get(embeddings_initializer)
        )
        initializer = self.embeddings_initializer or keras.initializers.RandomNormal(
            stddev=self.d_model**-0.5
        )
        self.token_embedding = keras.layers.Embedding(
            self.vocab_size,
            self.d_model,
            embeddings_initializer=initializer,
            dtype=self.dtype_policy,
            name="token_embedding",
        )
        self.position_encoding = SinusoidalPositionalEncoding(
            dtype=self.dtype_policy, name="position_encoding"
        )
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.supports_masking = True

    def build(self, token_ids_shape=None):
        self.token_embedding.build(token_ids_shape)
        self.built = True

    @property
    def embeddings(self):
        """The embedding matrix `E`, a `(vocab_size, d_model)` variable."""
        return self.token_embedding.embeddings

    def call(self, token_ids, start_index=0, training=None):
        x = self.token_embedding(token_ids)  # (batch, seq_len, d_model)
        if self.scale_by_sqrt_d_model:
            x = x * ops.cast(math.sqrt(self.d_model), x.dtype)
        x = x + self.position_encoding(x, start_index=start_index)
        return self.dropout_layer(x, training=training)

    def compute_mask(self, token_ids, previous_mask=None):
        if self.pad_id is None:
            return None
        return padding_mask(token_ids, self.pad_id)

    def logits(self, x):
        """Projects decoder outputs onto the vocabulary with the shared matrix.

        Args:
            x: float tensor `(batch, seq_len, d_model)`.

        Returns:
            float tensor `(batch, seq_len, vocab_size)`, `x @ E^T`.
        """
        embeddings = ops.cast(self.embeddings, x.dtype)
        # (batch, seq, d_model) @ (d_model, vocab) -> (batch, seq, vocab)
        return ops.matmul(x, ops.transpose(embeddings))

    def compute_output_shape(self, token_ids_shape):
        return tuple(token_ids_shape) + (self.d_model,)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "d_model": self.d_model,
                "dropout": self.dropout,
                "pad_id": self.pad_id,
                "scale_by_sqrt_d_model": self.scale_by_sqrt_d_model,
                "embeddings_initializer": (
                    None
                    if self.embeddings_initializer is None
                    else keras.initializers.serialize(self.embeddings_initializer)
                ),
            }
        )
        return config
