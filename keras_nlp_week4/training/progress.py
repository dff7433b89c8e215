"""Callbacks that measure training against the clock: validation BLEU after every epoch, and a time budget.

Both write into the epoch's `logs`, so put them before the `CSVLogger` in the callback list: then
`training_log.csv` has, per epoch, `minutes` (wall clock of `model.fit` so far, across resumed processes)
and `val_bleu`, the columns of the time-to-quality picture (`plots.plot_validation_bleu`).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import keras

from keras_nlp_week4.evaluation import corpus_scores, generate_texts, group_references

__all__ = ["TimeBudget", "ValidationBLEU", "epochs_left", "logged_minutes"]


def logged_minutes(training_log: Path) -> float:
    """The `minutes` of the last epoch in a run's `training_log.csv` (0.0 when there is none), where a
    resumed run's clock starts."""
    try:
        with open(training_log, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return 0.0
    return float(rows[-1].get("minutes") or 0.0) if rows else 0.0


def epochs_left(epochs_done: int, epoch_cap: int, patience: int | None = None,
                epochs_without_improvement: int = 0) -> tuple[int, int]:
    """`(fewest, most)` epochs still to train: the fewest if the monitored figure never improves again
    (early stopping ends training once `patience` epochs in a row have not improved it), the most if it
    keeps improving (the epoch cap).

    >>> epochs_left(5, 40, patience=4, epochs_without_improvement=1)
    (3, 35)
    >>> epochs_left(5, 40)  # no early stopping
    (35, 35)
    """
    most = max(0, epoch_cap - epochs_done)
    if patience is None:
        return most, most
    return min(most, max(0, patience - epochs_without_improvement)), most


class TimeBudget(keras.callbacks.Callback):
    """Logs `minutes` of training per epoch, prints the time left, and stops before an epoch that would
    end past the budget.

    The next epoch is assumed to take as long as the longest so far, so training stops early rather
    than overrunning; the epoch under way is never cut short (its weights would be half-trained). After
    every epoch it prints the elapsed time and an estimate of the time left for the whole run, from the
    mean epoch so far and `epochs_left`, and logs the upper estimate as `minutes_left` (so it lands in
    `training_log.csv` too).

    Args:
        budget_minutes: the budget for `model.fit` in minutes (None: only log the time).
        start_minutes: minutes already trained by earlier processes of a resumed run.
        early_stopping: the run's `keras.callbacks.EarlyStopping`, whose patience and count of epochs
            without improvement give the fewest epochs left (None: training runs to the epoch cap).
    """

    def __init__(self, budget_minutes: float | None, start_minutes: float = 0.0,
                 early_stopping: keras.callbacks.EarlyStopping | None = None) -> None:
        super().__init__()
        self.budget_minutes = budget_minutes
        self.start_minutes = float(start_minutes)
        self.early_stopping = early_stopping
        self.stopped_for_time = False

    def on_train_begin(self, logs=None) -> None:
        self._started = time.perf_counter()
        self._epoch_started = self._started
        self._longest_epoch = 0.0
        self._epochs = 0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        now = time.perf_counter()
        self._longest_epoch = max(self._longest_epoch, now - self._epoch_started)
        self._epochs += 1
        minutes = self.start_minutes + (now - self._started) / 60.0
        fewest, most = self._epochs_left(epoch, logs or {})
        per_epoch = (now - self._started) / 60.0 / self._epochs
        most_minutes = most * per_epoch
        if self.budget_minutes is not None:
            most_minutes = min(most_minutes, max(0.0, self.budget_minutes - minutes))
        if logs is not None:
            logs["minutes"] = minutes
            logs["minutes_left"] = most_minutes
        print(self._progress_line(epoch, minutes, per_epoch, fewest, most, most_minutes), flush=True)
        if self.budget_minutes is not None and minutes + self._longest_epoch / 60.0 > self.budget_minutes:
            self.stopped_for_time = True
            self.model.stop_training = True
            print(f"Time budget: stopping after epoch {epoch + 1} ({minutes:.1f} of "
                  f"{self.budget_minutes:g} minutes; another epoch would overrun it)")

    def _epochs_left(self, epoch: int, logs: dict) -> tuple[int, int]:
        cap = int((self.params or {}).get("epochs") or epoch + 1)
        stopping = self.early_stopping
        if stopping is None:
            return epochs_left(epoch + 1, cap)
        # EarlyStopping runs after this callback, so its count is still the previous epoch's.
        current, best = logs.get(stopping.monitor), stopping.best
        if current is None:
            return epochs_left(epoch + 1, cap, stopping.patience, stopping.wait)
        higher_is_better = getattr(stopping, "mode", "min") == "max"
        improved = best is None or (current > best if higher_is_better else current < best)
        waited = 0 if improved else stopping.wait + 1
        return epochs_left(epoch + 1, cap, stopping.patience, waited)

    def _progress_line(self, epoch: int, minutes: float, per_epoch: float, fewest: int, most: int,
                       most_minutes: float) -> str:
        cap = int((self.params or {}).get("epochs") or epoch + 1)
        line = f"Epoch {epoch + 1}/{cap}: {minutes:.1f} min elapsed, {per_epoch:.2f} min an epoch"
        if most == 0:
            return line + "; the epoch cap is reached"
        limit = "the time budget" if self.budget_minutes is not None and most_minutes < most * per_epoch \
            else f"{most} more epochs, the cap"
        if fewest == 0:
            return line + f"; early stopping ends it now (at most {most_minutes:.1f} min left otherwise)"
        if fewest < most:
            return line + (f"; {fewest * per_epoch:.1f} min left if early stopping ends it ({fewest} more "
                           f"epochs without improvement), at most {most_minutes:.1f} min ({limit})")
        return line + f"; {most_minutes:.1f} min left ({limit})"


class ValidationBLEU(keras.callbacks.Callback):
    """Greedy-decodes fixed validation sources after every epoch and logs their corpus BLEU as `val_bleu`.

    The score is `evaluation.corpus_scores`' lowercased BLEU (the figure the Multi30k table leads with),
    on the same sources every epoch, so the curve compares epochs and runs.

    Args:
        pairs: `(source, target)` validation pairs; the first `max_examples` are decoded.
        tokenizer: the run's tokenizer.
        max_source_length, max_target_length: the run's lengths.
        special_ids: `{"bos", "eos", "pad"}` ids.
        max_examples: how many pairs to decode.
        batch_size: sources per generation batch.
    """

    def __init__(self, pairs, tokenizer, max_source_length: int, max_target_length: int,
                 special_ids: dict, max_examples: int, batch_size: int = 256) -> None:
        super().__init__()
        self.sources, self.references = group_references(list(pairs)[:max_examples])
        self.tokenizer = tokenizer
        self.max_source_length, self.max_target_length = max_source_length, max_target_length
        self.special_ids = special_ids
        self.batch_size = batch_size

    def score(self) -> float:
        outputs = generate_texts(self.model, self.tokenizer, self.sources, self.max_source_length,
                                 self.max_target_length, self.special_ids, "greedy", self.batch_size)
        return corpus_scores(outputs, self.references)["bleu_lowercase"]

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        started = time.perf_counter()
        bleu = self.score()
        if logs is not None:
            logs["val_bleu"] = bleu
        print(f"Epoch {epoch + 1}: val_bleu {bleu:.2f} (greedy, {len(self.sources)} validation sources, "
              f"{time.perf_counter() - started:.1f} s)")
