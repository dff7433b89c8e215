"""Masked cross-entropy with label smoothing and masked token accuracy for padded target sequences."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_nlp_week4")
class MaskedSparseCrossEntropy(keras.losses.Loss):
    """Token-level cross-entropy that ignores padding, with label smoothing.

    Label smoothing (Szegedy et al., 2016; used with epsilon_ls = 0.1 in Vaswani et al., 2017, section 5.4)
    replaces the one-hot target by `(1 - eps) * one_hot + eps / vocab_size`, so
    `loss = (1 - eps) * NLL(target) + eps * mean_v(-log p_v)`. The loss of a batch is the mean over its
    non-padding tokens (not over sequences), so long and short targets weigh the same per token.

    Args:
        label_smoothing: eps in [0, 1).
        pad_id: the target id that marks padding; those positions contribute nothing.

    Call arguments:
        y_true: int targets, `(batch, tgt_len)`.
        y_pred: logits, `(batch, tgt_len, vocab)`.
    """

    def __init__(self, label_smoothing: float = 0.0, pad_id: int = 0, name: str = "masked_cross_entropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.label_smoothing = float(label_smoothing)
        self.pad_id = int(pad_id)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)  # (batch, tgt_len, vocab)
        nll = -ops.squeeze(ops.take_along_axis(log_probs, y_true[..., None], axis=-1), axis=-1)
        if self.label_smoothing > 0.0:
            smooth = -ops.mean(log_probs, axis=-1)
            nll = (1.0 - self.label_smoothing) * nll + self.label_smoothing * smooth
        mask = ops.cast(ops.not_equal(y_true, self.pad_id), "float32")
        # One scalar per batch: Keras' own reduction then leaves it unchanged.
        return ops.sum(nll * mask) / ops.maximum(ops.sum(mask), 1.0)

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "pad_id": self.pad_id}


@keras.saving.register_keras_serializable(package="keras_nlp_week4")
class MaskedAccuracy(keras.metrics.Metric):
    """Fraction of non-padding target tokens whose argmax prediction is right, over all batches seen."""

    def __init__(self, pad_id: int = 0, name: str = "masked_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pad_id = int(pad_id)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        mask = ops.cast(ops.not_equal(y_true, self.pad_id), "float32")
        self.correct.assign_add(ops.sum(ops.cast(ops.equal(predicted, y_true), "float32") * mask))
        self.total.assign_add(ops.sum(mask))

    def result(self):
        return self.correct / ops.maximum(self.total, 1.0)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)

    def get_config(self) -> dict:
        return {**super().get_config(), "pad_id": self.pad_id}
