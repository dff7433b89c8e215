"""Tasks: where a task's data comes from and the settings that suit it (tokenizer, lengths, schedule)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from keras_nlp_week4.errors import UserError


@dataclass(frozen=True)
class TaskSpec:
    """What `train` needs to know about a task beyond its data.

    `load_splits(data_path, seed)` returns a `DatasetSplits`; the rest are defaults any CLI flag overrides.
    """

    name: str
    load_splits: Callable
    tokenizer_type: str = "bpe"
    vocab_size: int | None = None  # None: as many as the tokenizer type needs (char models)
    max_source_length: int = 64
    max_target_length: int = 64
    epochs: int = 10
    batch_size: int = 64
    transformer_preset: str = "small"
    rnn_preset: str = "small"
    peak_learning_rate: float = 1e-3
    warmup_steps: int = 1000
    patience: int = 3
    exact_match: bool = False  # report the fraction of outputs equal to the reference, character for character
    # Per-family replacements of the defaults above, e.g. {"rnn": {"batch_size": 128}}.
    family_defaults: dict = field(default_factory=dict)


def _dates_splits(data_path: Path | None, seed: int):
    from keras_nlp_week4.data.dates import date_splits

    if data_path is not None:
        raise UserError("the dates task generates its own data; drop --data (or DATA=) for TASK=dates")
    return date_splits(seed=seed)


TASKS: dict[str, TaskSpec] = {
    "dates": TaskSpec(
        name="dates", load_splits=_dates_splits, tokenizer_type="char", max_source_length=48,
        max_target_length=12, epochs=10, batch_size=64, transformer_preset="tiny", rnn_preset="small",
        peak_learning_rate=2e-3, warmup_steps=300, patience=3, exact_match=True,
        # An RNN step is sequential in time, so bigger batches pay; it also tolerates a higher rate.
        family_defaults={"rnn": {"epochs": 6, "batch_size": 128, "peak_learning_rate": 5e-3,
                                 "warmup_steps": 200}}),
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name]
