"""The training clock's line after every epoch: elapsed time and the time left for the whole run."""

from __future__ import annotations

import doctest
import re

import keras
import pytest

import keras_nlp_week4.training.progress as progress
from keras_nlp_week4.training.progress import TimeBudget, epochs_left


def test_the_doctests_hold():
    assert doctest.testmod(progress).failed == 0


@pytest.mark.parametrize("done, cap, patience, waited, expected", [
    (1, 10, None, 0, (9, 9)),
    (1, 10, 3, 0, (3, 9)),
    (8, 10, 3, 0, (2, 2)),   # the cap comes before early stopping could
    (5, 10, 3, 3, (0, 5)),   # patience used up: early stopping ends it now
    (10, 10, 3, 1, (0, 0)),
])
def test_epochs_left(done, cap, patience, waited, expected):
    assert epochs_left(done, cap, patience, waited) == expected


def run_epochs(clock: TimeBudget, losses: list[float], early_stopping=None) -> list[dict]:
    """Drives the callbacks as `model.fit` does (the clock before early stopping), returns each epoch's logs."""
    model = keras.Sequential([keras.layers.Dense(1)])
    callbacks = [clock] + ([early_stopping] if early_stopping else [])
    for callback in callbacks:
        callback.set_model(model)
        callback.set_params({"epochs": 10})
        callback.on_train_begin()
    history = []
    for epoch, loss in enumerate(losses):
        logs = {"val_loss": loss}
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)
        history.append(logs)
    return history


def test_it_prints_the_elapsed_time_and_the_time_left_every_epoch(capsys):
    stopping = keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=3)
    logs = run_epochs(TimeBudget(None, early_stopping=stopping), [3.0, 2.0, 2.5, 2.6], stopping)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch")]
    assert [line.split(":")[0] for line in lines] == [f"Epoch {i}/10" for i in range(1, 5)]
    assert all("min elapsed" in line and "min an epoch" in line for line in lines)
    # Epoch 2 improved: early stopping needs 3 more epochs without improvement, the cap allows 8.
    assert "(3 more epochs without improvement)" in lines[1] and "8 more epochs, the cap" in lines[1]
    # Epochs 3 and 4 did not improve: 2, then 1 epoch left before early stopping.
    assert "(2 more epochs" in lines[2] and "(1 more epochs" in lines[3]
    assert [round(entry["minutes_left"] / max(entry["minutes"], 1e-12) * (i + 1)) for i, entry in
            enumerate(logs)] == [9, 8, 7, 6]  # the upper estimate: the epochs to the cap at the mean pace


def test_without_early_stopping_it_counts_to_the_cap(capsys):
    run_epochs(TimeBudget(None), [1.0, 1.0])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch")]
    assert re.search(r"min left \(9 more epochs, the cap\)$", lines[0])
    assert "early stopping" not in "".join(lines)


def test_a_time_budget_caps_the_estimate(capsys):
    logs = run_epochs(TimeBudget(budget_minutes=1e-12), [1.0])
    out = capsys.readouterr().out
    assert "(the time budget)" in out and "Time budget: stopping after epoch 1" in out
    assert logs[0]["minutes_left"] == 0.0


def test_patience_used_up_says_early_stopping_ends_it(capsys):
    stopping = keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=1)
    run_epochs(TimeBudget(None, early_stopping=stopping), [1.0, 2.0], stopping)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch")]
    assert "early stopping ends it now" in lines[1] and stopping.model.stop_training
