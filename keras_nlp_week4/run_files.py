"""The schemas of the files a run directory hands to the later stages: `config.json` and `metrics.json`.

Each file has one typed class with one writer and one reader:

| file | schema | writer | reader |
| --- | --- | --- | --- |
| `config.json` | `RunConfig` (its `train` a `TrainSettings`) | `RunConfig.write` (the trainer, bench's stand-in runs) | `RunConfig.read` (`runs.load_run`, compare, export, bench) |
| `metrics.json` | `RunMetrics` | `RunMetrics.write` (`evaluation.evaluate_run`) | `RunMetrics.read` (compare, evaluation, notebooks) |

Unknown or missing fields are a one-line `UserError` naming the file. Imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from keras_nlp_week4.data.readers import DataSources
from keras_nlp_week4.errors import UserError
from serving.manifest import read_json_object

__all__ = ["CONFIG", "METRICS", "RunConfig", "RunMetrics", "TrainSettings"]

CONFIG = "config.json"
METRICS = "metrics.json"


def _check_fields(cls, values: dict, path, what: str, again: str) -> None:
    """Refuses unknown keys and missing required ones of `cls` in `values`, in one line."""
    names = {f.name for f in fields(cls)}
    required = [f.name for f in fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"{path} has unknown {what} {', '.join(unknown)}; {again}")
    missing = [name for name in required if name not in values]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; {again}")


def _read_object(path: Path, missing: str, again: str) -> dict:
    return read_json_object(path, path.name, missing=missing, again=again, error=UserError)


def _write_object(path: Path, values: dict) -> Path:
    path.write_text(json.dumps(values, indent=2))
    return path


@dataclass(frozen=True, kw_only=True)
class TrainSettings(DataSources):
    """The effective settings of one training run: `training.trainer.TrainConfig` with every "task
    default" filled in (`trainer.resolve_settings`), plus the model's family, the output folder and the
    replica count; recorded as `config.json`'s `train`. The data options are `DataSources`'."""

    task: str
    model: str
    family: str
    preset: str | None
    out: str
    epochs: int
    batch_size: int
    learning_rate: float  # peak learning rate
    warmup_steps: int
    label_smoothing: float
    dropout: float | None
    teacher_forcing_ratio: float
    vocab_size: int | None  # None: the tokenizer's own (a char vocabulary)
    max_source_length: int
    max_target_length: int
    patience: int
    max_train_examples: int | None
    time_budget_minutes: float | None  # None: no budget
    seed: int
    verbose: int
    strategy: str
    precision: str
    jit: bool
    num_replicas: int | None = None  # set by `trainer.train` from the strategy

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))

    @classmethod
    def from_json(cls, values: dict, path: Path | str = CONFIG) -> TrainSettings:
        if not isinstance(values, dict):
            raise UserError(f"{path} has no 'train' settings table; train the run again")
        _check_fields(cls, values, f"{path} 'train'", "settings", "train the run again")
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """A run's `config.json`: everything needed to rebuild, evaluate and export the run.

    Example:

    >>> config = RunConfig.read(Path("artifacts/dates-transformer"))  # doctest: +SKIP
    >>> config.max_target_length, config.train.batch_size  # doctest: +SKIP
    (12, 64)
    """

    task: str
    model: str
    family: str
    preset: str | None = None
    model_class: str | None = None
    model_config: dict = field(default_factory=dict)
    num_parameters: int
    tokenizer: str = "tokenizer.model"
    tokenizer_type: str | None = None
    vocab_size: int
    special_ids: dict[str, int]
    max_source_length: int
    max_target_length: int
    exact_match: bool = False
    splits: dict[str, int] = field(default_factory=dict)
    train: TrainSettings
    versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))

    @classmethod
    def from_json(cls, values: dict, path: Path | str = CONFIG) -> RunConfig:
        _check_fields(cls, values, path, "keys", "train the run again")
        return cls(**{**values, "special_ids": {k: int(v) for k, v in values["special_ids"].items()},
                      "train": TrainSettings.from_json(values["train"], path)})

    def write(self, run_dir: Path) -> Path:
        """The one writer of a run's `config.json`."""
        return _write_object(Path(run_dir) / CONFIG, self.to_json())

    @classmethod
    def read(cls, run_dir: Path) -> RunConfig:
        """The one reader of a run's `config.json`, with one-line errors for a missing or damaged run."""
        run_dir = Path(run_dir)
        path = run_dir / CONFIG
        if not run_dir.is_dir():
            raise UserError(f"run directory {run_dir} does not exist; train first (make train) or pass RUN=...")
        values = _read_object(path, f"{path} is missing; {run_dir} is not a finished training run",
                              "train the run again")
        return cls.from_json(values, path)


@dataclass(frozen=True, kw_only=True)
class RunMetrics:
    """A run's `metrics.json`: the held-out figures of `evaluation.evaluate_run` and the training time.
    `None`: not measured (not written)."""

    training_seconds: float | None = None
    val_loss: float | None = None  # with the run's label smoothing, as Keras reports it in training
    val_perplexity: float | None = None
    test_cross_entropy: float | None = None
    test_perplexity: float | None = None
    test_token_accuracy: float | None = None
    test_greedy_seconds: float | None = None
    test_beam_seconds: float | None = None
    beam_size: int | None = None
    test_bleu_greedy: float | None = None
    test_bleu_lowercase_greedy: float | None = None
    test_chrf_greedy: float | None = None
    test_bleu_beam: float | None = None
    test_bleu_lowercase_beam: float | None = None
    test_chrf_beam: float | None = None
    bleu_signature: str | None = None
    bleu_lowercase_signature: str | None = None
    chrf_signature: str | None = None
    exact_match: float | None = None
    exact_match_beam: float | None = None
    valid_outputs: float | None = None
    num_parameters: int | None = None
    test_examples: int | None = None
    test_sources: int | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, values: dict, path: Path | str = METRICS) -> RunMetrics:
        _check_fields(cls, values, path, "keys", "evaluate the run again")
        return cls(**values)

    def write(self, run_dir: Path) -> Path:
        """The one writer of a run's `metrics.json`."""
        return _write_object(Path(run_dir) / METRICS, self.to_json())

    @classmethod
    def read(cls, run_dir: Path) -> RunMetrics:
        """The one reader of a run's `metrics.json`."""
        path = Path(run_dir) / METRICS
        values = _read_object(path, f"{path} is missing; evaluate the run (python -m keras_nlp_week4 evaluate "
                                    f"{run_dir})", "evaluate the run again")
        return cls.from_json(values, path)

    @classmethod
    def read_or_empty(cls, run_dir: Path) -> RunMetrics:
        """`read`, or no figures when the run has not been evaluated yet."""
        return cls.read(run_dir) if (Path(run_dir) / METRICS).is_file() else cls()
