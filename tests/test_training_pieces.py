"""The learning-rate schedule, the masked label-smoothed loss and the masked accuracy vs numpy."""

import keras
import numpy as np
import pytest

from keras_nlp_week4.training.losses import MaskedAccuracy, MaskedSparseCrossEntropy
from keras_nlp_week4.training.schedule import TransformerSchedule


def test_schedule_matches_the_paper_formula():
    schedule = TransformerSchedule(d_model=512, warmup_steps=4000)
    for step in [0, 1, 100, 3999, 4000, 10000, 100000]:
        n = step + 1
        expected = 512**-0.5 * min(n**-0.5, n * 4000**-1.5)
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5)
    # The peak is at the end of warm-up.
    values = [float(schedule(s)) for s in range(0, 8000, 50)]
    assert int(np.argmax(values)) * 50 in range(3900, 4050)


def test_schedule_serializes_inside_an_optimizer():
    optimizer = keras.optimizers.Adam(TransformerSchedule(64, 300, scale=2.0))
    restored = keras.optimizers.Adam.from_config(optimizer.get_config())
    assert float(restored.learning_rate) == pytest.approx(float(optimizer.learning_rate))


def reference_loss(y_true, logits, eps, pad=0):
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    vocab = logits.shape[-1]
    target = np.eye(vocab)[y_true] * (1 - eps) + eps / vocab
    per_token = -(target * logp).sum(-1)
    mask = y_true != pad
    return (per_token * mask).sum() / mask.sum()


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_masked_loss_matches_numpy_and_ignores_padding(eps):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7)).astype("float32")
    y = np.array([[4, 5, 3, 0, 0], [1, 2, 3, 4, 5], [6, 0, 0, 0, 0]])
    loss = MaskedSparseCrossEntropy(label_smoothing=eps)
    assert float(loss(y, logits)) == pytest.approx(reference_loss(y, logits, eps), rel=1e-5)
    # Changing logits at padded positions changes nothing.
    changed = logits.copy()
    changed[y == 0] += rng.normal(size=changed[y == 0].shape).astype("float32") * 10
    assert float(loss(y, changed)) == pytest.approx(float(loss(y, logits)), rel=1e-6)
    restored = MaskedSparseCrossEntropy.from_config(loss.get_config())
    assert restored.label_smoothing == eps


def test_loss_rejects_bad_smoothing():
    with pytest.raises(ValueError):
        MaskedSparseCrossEntropy(label_smoothing=1.0)


def test_masked_accuracy_counts_real_tokens_only():
    metric = MaskedAccuracy()
    y = np.array([[1, 2, 0], [3, 0, 0]])
    logits = np.zeros((2, 3, 4), "float32")
    logits[0, 0, 1] = logits[0, 1, 3] = logits[1, 0, 3] = 1.0  # right, wrong, right
    logits[0, 2, 2] = logits[1, 1, 2] = logits[1, 2, 2] = 1.0  # padding: wrong, ignored
    metric.update_state(y, logits)
    assert float(metric.result()) == pytest.approx(2 / 3)
