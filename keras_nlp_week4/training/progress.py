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

__all__ = ["TimeBudget", "ValidationBLEU", "logged_minutes"]


def logged_minutes(training_log: Path) -> float:
    """The `minutes` of the last epoch in a run's `training_log.csv` (0.0 when there is none), where a
    resumed run's clock starts."""
    try:
        with open(training_log, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return 0.0
    return float(rows[-1].get("minutes") or 0.0) if rows else 0.0


class TimeBudget(keras.callbacks.Callback):
    """Logs `minutes` of training per epoch and stops before an epoch that would end past the budget.

    The next epoch is assumed to take as long as the longest so far, so training stops early rather
    than overrunning; the epoch under way is never cut short (its weights would be half-trained).

    Args:
        budget_minutes: the budget for `model.fit` in minutes (None: only log the time).
        start_minutes: minutes already trained by earlier processes of a resumed run.
    """

    def __init__(self, budget_minutes: float | None, start_minutes: float = 0.0) -> None:
        super().__init__()
        self.budget_minutes = budget_minutes
        self.start_minutes = float(start_minutes)
        self.stopped_for_time = False

    def on_train_begin(self, logs=None) -> None:
        self._started = time.perf_counter()
        self._epoch_started = self._started
        self._longest_epoch = 0.0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        now = time.perf_counter()
        self._longest_epoch = max(self._longest_epoch, now - self._epoch_started)
        minutes = self.start_minutes + (now - self._started) / 60.0
        if logs is not None:
            logs["minutes"] = minutes
        if self.budget_minutes is not None and minutes + self._longest_epoch / 60.0 > self.budget_minutes:
            self.stopped_for_time = True
            self.model.stop_training = True
            print(f"Time budget: stopping after epoch {epoch + 1} ({minutes:.1f} of "
                  f"{self.budget_minutes:g} minutes; another epoch would overrun it)")


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
