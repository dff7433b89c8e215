"""Resuming a killed run so that it ends with the weights an uninterrupted run would have had.

Keras' `BackupAndRestore` restores the weights, the optimizer and the epoch number. Three more things
decide what the remaining epochs compute, and this module restores them too:

- the data order: `tf.data`'s reshuffling draws a new order for every iterator, and Keras makes two
  iterators per epoch (one to train on, one made ready at the epoch's end), so a resumed process would
  see other orders. The training dataset is ordered by an `EpochOrder` instead, a permutation of
  (seed, epoch), and `EpochRandomness` sets its epoch when an epoch begins;
- the random streams (dropout, scheduled sampling): each `keras.random.SeedGenerator` counts its calls
  in a state variable that is not part of the weights. `EpochRandomness` also sets every state to a
  function of (its seed, the epoch), so epoch `e` draws the same numbers in any process;
- the callbacks' memory: early stopping's best value, wait count and best weights, and the best value
  of the checkpoint that keeps `model.keras`. `ResumableBackup` writes them next to the backup at every
  epoch's end and puts them back when it restores one.

Checked for the default strategy (a test kills a run with SIGKILL after an epoch, resumes it and
compares every weight with a run that was never killed: equal, not merely close).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np

from keras_nlp_week4.data.pipeline import EpochOrder

__all__ = ["EpochRandomness", "ResumableBackup", "finished_epochs"]

# Keras writes this beside the weights; "epoch" is the number of finished epochs.
_KERAS_METADATA = "training_metadata.json"
_CALLBACK_STATE = "callback_state.json"
# Calls one seed generator may make in an epoch before its stream would run into the next epoch's.
_CALLS_PER_EPOCH = 2**20


def finished_epochs(backup_dir: Path) -> int:
    """Epochs a killed run finished (and backed up) before it stopped; 0 when there is no backup."""
    path = Path(backup_dir) / _KERAS_METADATA
    if not path.is_file():
        return 0
    return int(json.loads(path.read_text())["epoch"])


class EpochRandomness(keras.callbacks.Callback):
    """Makes the data order and every random stream of the model a function of (seed, epoch), not of
    what this process did before: at the start of epoch `e` it sets `order`'s epoch, and each
    `SeedGenerator` state becomes `[seed, e * 2**20]` (a stateless generator's counter).

    Args:
        order: the `EpochOrder` of the training dataset (None: the seed generators only).
    """

    def __init__(self, order: EpochOrder | None = None) -> None:
        super().__init__()
        self.order = order

    def set_model(self, model) -> None:
        super().set_model(model)
        self._states = [v for v in model.variables if v.name == "seed_generator_state"]
        self._seeds = [int(np.asarray(v.numpy())[0]) for v in self._states]

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if self.order is not None:
            self.order.set_epoch(epoch)
        for state, seed in zip(self._states, self._seeds, strict=True):
            state.assign(np.array([seed, epoch * _CALLS_PER_EPOCH], dtype=state.dtype))


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that also backs up the state of the early-stopping and best-checkpoint
    callbacks (module doc). Put it after them in the callback list: at an epoch's end it saves what they
    have just updated, and when training begins it overwrites the fresh state they have just set.

    Args:
        backup_dir: where the backup lives (removed when training finishes).
        early_stopping: the run's `EarlyStopping` callback.
        checkpoint: the run's `ModelCheckpoint(save_best_only=True)`, whose file holds the best weights.
    """

    def __init__(self, backup_dir: str | Path, early_stopping: keras.callbacks.EarlyStopping,
                 checkpoint: keras.callbacks.ModelCheckpoint) -> None:
        super().__init__(str(backup_dir), delete_checkpoint=True)
        self.early_stopping = early_stopping
        self.checkpoint = checkpoint
        self._state_path = Path(backup_dir) / _CALLBACK_STATE
        self._states: dict = {}  # {finished epochs: callback state}, the last two

    def on_train_begin(self, logs=None) -> None:
        super().on_train_begin(logs)  # restores weights, optimizer and the epoch number
        finished = finished_epochs(self.backup_dir)
        if not finished:
            return
        if self._state_path.is_file():
            self._states = json.loads(self._state_path.read_text())
        saved = self._states.get(str(finished))
        if saved is None:
            raise RuntimeError(f"{self._state_path} has no state for epoch {finished}; the backup is "
                               "inconsistent (delete the backup folder to start the run again)")
        stopping = self.early_stopping
        stopping.best, stopping.wait, stopping.best_epoch = saved["best"], saved["wait"], saved["best_epoch"]
        self.checkpoint.best = saved["checkpoint_best"]
        best_model = Path(self.checkpoint.filepath)
        if stopping.restore_best_weights and best_model.is_file():
            stopping.best_weights = keras.saving.load_model(best_model, compile=False).get_weights()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        # Written before the weights: if the process dies between the two writes, the state of the
        # previous epoch (which the older backup matches) is still in the file.
        stopping = self.early_stopping
        self._states[str(epoch + 1)] = {"best": _plain(stopping.best), "wait": int(stopping.wait),
                                        "best_epoch": int(stopping.best_epoch),
                                        "checkpoint_best": _plain(self.checkpoint.best)}
        self._states = {k: self._states[k] for k in sorted(self._states, key=int)[-2:]}
        Path(self.backup_dir).mkdir(parents=True, exist_ok=True)
        temporary = self._state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self._states))
        os.replace(temporary, self._state_path)
        super().on_epoch_end(epoch, logs)


def _plain(value) -> float | None:
    return None if value is None else float(value)
