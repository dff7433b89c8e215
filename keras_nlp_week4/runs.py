"""Reading a run directory written by training (see `keras_nlp_week4.training.trainer`; the schemas of
its `config.json` and `metrics.json` are `keras_nlp_week4.run_files`)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from keras_nlp_week4.errors import UserError
from keras_nlp_week4.run_files import RunConfig, RunMetrics, TrainSettings

__all__ = ["Run", "RunConfig", "RunMetrics", "TrainSettings", "latest_run", "load_run", "read_pairs",
           "write_pairs"]


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
    """A trained run: its directory, `config.json` (typed), Keras model and tokenizer."""

    path: Path
    config: RunConfig
    model: object
    tokenizer: object

    def pairs(self, split: str) -> list[tuple[str, str]]:
        return read_pairs(self.path / f"{split}.tsv")


def load_run(run_dir: Path, compile: bool = True) -> Run:
    """Loads the best model and the tokenizer of a run, with one-line errors for a damaged run."""
    import keras

    import keras_nlp_week4.models  # noqa: F401  (registers the model classes for deserialization)
    import keras_nlp_week4.training.losses  # noqa: F401
    import keras_nlp_week4.training.schedule  # noqa: F401
    from keras_nlp_week4.data.tokenizer import Tokenizer
    from serving.errors import first_line

    run_dir = Path(run_dir)
    config = RunConfig.read(run_dir)
    model_path = run_dir / "model.keras"
    if not model_path.is_file():
        raise UserError(f"{model_path} is missing; training did not finish an epoch, run it again")
    try:
        model = keras.models.load_model(model_path, compile=compile)
    except Exception as e:  # a truncated or foreign file fails deep inside zipfile/h5py
        raise UserError(f"cannot load {model_path}: {type(e).__name__}: {first_line(e)}; "
                        "the file is damaged, train the run again") from None
    tokenizer = Tokenizer(run_dir / config.tokenizer)
    return Run(path=run_dir, config=config, model=model, tokenizer=tokenizer)


def latest_run(root: Path = Path("artifacts")) -> Path:
    """The most recently trained run under `root` (by its model file's time)."""
    runs = sorted(root.glob("*/model.keras"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UserError(f"no trained run under {root}/; run `make train` first")
    return runs[-1].parent
