"""Reading a run directory written by training (see `keras_nlp_week4.training.trainer`)."""

from __future__ import annotations

import csv
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from keras_nlp_week4.errors import UserError


def write_pairs(path: Path, pairs) -> None:
    """Writes (source, target) pairs as a two-column TSV (quoted where needed)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter="\t", lineterminator="\n").writerows(pairs)


def read_pairs(path: Path) -> list[tuple[str, str]]:
    if not Path(path).is_file():
        raise UserError(f"{path} not found; it is written by training, so train this run again")
    with open(path, encoding="utf-8", newline="") as f:
        return [(row[0], row[1]) for row in csv.reader(f, delimiter="\t") if len(row) >= 2]


@dataclass
class Run:
    """A trained run: its directory, config, Keras model and tokenizer."""

    path: Path
    config: dict
    model: object
    tokenizer: object

    @functools.cached_property
    def settings(self) -> RunConfig:
        """`config`, typed (read once)."""
        return RunConfig.from_dict(self.config, self.path / "config.json")

    def pairs(self, split: str) -> list[tuple[str, str]]:
        return read_pairs(self.path / f"{split}.tsv")


@dataclass(frozen=True)
class RunConfig:
    """A run's `config.json`, typed: the keys evaluation, comparison and export read (written by
    `training.trainer.train`).

    Example:

    >>> config = RunConfig.read(Path("artifacts/dates-transformer"))  # doctest: +SKIP
    >>> config.max_target_length, config.train["batch_size"]  # doctest: +SKIP
    (12, 64)
    """

    task: str
    model: str
    family: str
    preset: str | None
    num_parameters: int
    vocab_size: int
    special_ids: dict
    max_source_length: int
    max_target_length: int
    exact_match: bool
    splits: dict
    train: dict

    @classmethod
    def from_dict(cls, config: dict, path: Path | str = "config.json") -> RunConfig:
        missing = [name for name in _REQUIRED_CONFIG_KEYS if name not in config]
        if missing:
            raise UserError(f"{path} lacks {', '.join(missing)}; train the run again")
        return cls(task=config["task"], model=config["model"], family=config["family"],
                   preset=config.get("preset"), num_parameters=int(config["num_parameters"]),
                   vocab_size=int(config["vocab_size"]),
                   special_ids={k: int(v) for k, v in config["special_ids"].items()},
                   max_source_length=int(config["max_source_length"]),
                   max_target_length=int(config["max_target_length"]),
                   exact_match=bool(config.get("exact_match", False)), splits=dict(config.get("splits") or {}),
                   train=dict(config.get("train") or {}))

    @classmethod
    def read(cls, run_dir: Path) -> RunConfig:
        return cls.from_dict(read_config(run_dir), Path(run_dir) / "config.json")


_REQUIRED_CONFIG_KEYS = ("task", "model", "family", "num_parameters", "vocab_size", "special_ids",
                         "max_source_length", "max_target_length")


def read_config(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist; train first (make train) or pass RUN=...")
    if not path.is_file():
        raise UserError(f"{path} is missing; {run_dir} is not a finished training run")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); train the run again") from None


def load_run(run_dir: Path, compile: bool = True) -> Run:
    """Loads the best model and the tokenizer of a run, with one-line errors for a damaged run."""
    import keras

    import keras_nlp_week4.models  # noqa: F401  (registers the model classes for deserialization)
    import keras_nlp_week4.training.losses  # noqa: F401
    import keras_nlp_week4.training.schedule  # noqa: F401
    from keras_nlp_week4.data.tokenizer import Tokenizer
    from serving.errors import first_line

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    model_path = run_dir / "model.keras"
    if not model_path.is_file():
        raise UserError(f"{model_path} is missing; training did not finish an epoch, run it again")
    try:
        model = keras.models.load_model(model_path, compile=compile)
    except Exception as e:  # a truncated or foreign file fails deep inside zipfile/h5py
        raise UserError(f"cannot load {model_path}: {type(e).__name__}: {first_line(e)}; "
                        "the file is damaged, train the run again") from None
    tokenizer = Tokenizer(run_dir / config.get("tokenizer", "tokenizer.model"))
    return Run(path=run_dir, config=config, model=model, tokenizer=tokenizer)


def latest_run(root: Path = Path("artifacts")) -> Path:
    """The most recently trained run under `root` (by its model file's time)."""
    runs = sorted(root.glob("*/model.keras"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UserError(f"no trained run under {root}/; run `make train` first")
    return runs[-1].parent
