"""Trains every model family on the same splits and tabulates them, like the classic seq2seq tutorials.

`compare` trains seq2seq-LSTM, seq2seq-GRU, Bahdanau, Luong and the Transformer one after the other with
the same task, data and seed (so the same train/validation/test splits and tokenizer settings), evaluates
each on the test split, and writes ``comparison.md`` and ``comparison.json`` into the output directory:
model, parameters, test perplexity, BLEU and chrF (greedy and beam), training time.

A run that already finished with the same settings is reused, and a killed one resumes, so re-running
the same command after an interruption only trains what is missing.

Example:

>>> from keras_nlp_week4.training.trainer import TrainConfig  # doctest: +SKIP
>>> compare(TrainConfig(task="translate", data="../shared/data/kor-eng/kor.txt"))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import replace
from pathlib import Path

from keras_nlp_week4.errors import UserError
from keras_nlp_week4.runs import RunConfig, RunMetrics, TrainSettings

__all__ = ["DEFAULT_MODELS", "compare", "format_markdown"]

# One model per family of the lecture: no attention (both cells), additive attention, multiplicative
# attention, and self-attention. A task with published anchors compares the anchored families.
DEFAULT_MODELS = ("seq2seq-lstm", "seq2seq-gru", "bahdanau", "luong-general", "transformer")

_COLUMNS = (  # (key in a row, Markdown header)
    ("model", "model"),
    ("parameters", "parameters"),
    ("epochs", "epochs"),
    ("test_perplexity", "test perplexity"),
    ("bleu_lowercase_greedy", "BLEU lc greedy"),
    ("bleu_lowercase_beam", "BLEU lc beam"),
    ("bleu_greedy", "sacreBLEU greedy"),
    ("bleu_beam", "sacreBLEU beam"),
    ("chrf_greedy", "chrF greedy"),
    ("chrf_beam", "chrF beam"),
    ("training_minutes", "training time (min)"),
)
# Added when the task has published anchors (`TaskSpec.anchors`).
_ANCHOR_COLUMNS = (("anchor_bleu", "anchor BLEU lc greedy"), ("anchor_parameters", "anchor parameters"))


def default_models(task: str) -> tuple[str, ...]:
    """The models `compare` trains when none are named: the task's anchored ones, else one per family."""
    from keras_nlp_week4.tasks import get_task

    anchors = get_task(task).anchors
    return tuple(name for name in DEFAULT_MODELS if name in anchors) if anchors else DEFAULT_MODELS


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _finished_with(run_dir: Path, settings: TrainSettings) -> bool:
    """True when `run_dir` holds a finished, evaluated run trained with exactly `settings`."""
    from keras_nlp_week4.training.trainer import same_training

    try:
        config = RunConfig.read(run_dir)
        metrics = RunMetrics.read(run_dir)
    except (UserError, OSError):
        return False
    return (same_training(config.train, settings) and metrics.training_seconds is not None
            and (run_dir / "model.keras").is_file() and not (run_dir / "backup").exists())


def _row(run_dir: Path) -> dict:
    config = RunConfig.read(run_dir)
    metrics = RunMetrics.read(run_dir)
    with open(run_dir / "training_log.csv", encoding="utf-8", newline="") as f:
        epochs = len(list(csv.DictReader(f)))
    return {
        "model": config.model,
        "family": config.family,
        "preset": config.preset,
        "parameters": config.num_parameters,
        "epochs": epochs,
        "test_perplexity": metrics.test_perplexity,
        "test_token_accuracy": metrics.test_token_accuracy,
        "bleu_lowercase_greedy": metrics.test_bleu_lowercase_greedy,
        "bleu_lowercase_beam": metrics.test_bleu_lowercase_beam,
        "bleu_greedy": metrics.test_bleu_greedy,
        "bleu_beam": metrics.test_bleu_beam,
        "chrf_greedy": metrics.test_chrf_greedy,
        "chrf_beam": metrics.test_chrf_beam,
        "training_minutes": (metrics.training_seconds / 60.0
                             if metrics.training_seconds is not None else None),
        "run": str(run_dir),
    }


def _logs_validation_bleu(run_dir: Path) -> bool:
    with open(run_dir / "training_log.csv", encoding="utf-8", newline="") as f:
        return "val_bleu" in (csv.DictReader(f).fieldnames or [])


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key in ("parameters", "anchor_parameters"):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.1f}" if key != "test_perplexity" else f"{value:.2f}"
    return str(value)


def format_markdown(result: dict) -> str:
    """The comparison as a Markdown table with a line on the data and the metrics."""
    columns = _COLUMNS + (_ANCHOR_COLUMNS if result.get("anchors") else ())
    lines = [f"Task `{result['task']}`, data `{result['data']}`, splits {result['splits']} "
             f"(the same for every model), beam size {result['beam_size']}.", "",
             "| " + " | ".join(header for _, header in columns) + " |",
             "| " + " | ".join("---" for _ in columns) + " |"]
    for row in result["rows"]:
        lines.append("| " + " | ".join(_cell(key, row.get(key)) for key, _ in columns) + " |")
    lines += ["", f"BLEU lc: sacrebleu `{result.get('bleu_lowercase_signature')}` (lowercased, 13a tokens); "
              f"sacreBLEU: `{result['bleu_signature']}`; chrF: `{result['chrf_signature']}`.",
              "Perplexity: teacher-forced, no label smoothing. Training time: wall clock of `model.fit`."]
    if result.get("anchors"):
        lines.append("Anchors, greedy decoding: " + "; ".join(
            f"{name}: {anchor['source']}" for name, anchor in result["anchors"].items()) + ".")
    return "\n".join(lines) + "\n"


def compare(base, models=None, out_dir: str | Path | None = None,
            transformer_preset: str | None = None, rnn_preset: str | None = None,
            verbose: bool = True) -> dict:
    """Trains and evaluates `models` on the same data and writes the comparison table.

    Args:
        base: a `TrainConfig` with the task, data and shared settings; its `model`, `preset` and `out`
            are replaced per model.
        models: model names (see `keras_nlp_week4.models.registry.MODEL_NAMES`; default:
            `default_models(base.task)`).
        out_dir: where the runs (one sub-directory per model) and the tables go
            (default ``artifacts/compare-<task>``).
        transformer_preset, rnn_preset: model sizes (default: the task's).
        verbose: print progress and the table.

    Returns:
        ``{"task", "data", "splits", "beam_size", "rows": [...], ...}``, as saved to ``comparison.json``.

    Raises:
        UserError: for an unknown model, bad data, or runs whose test splits differ.
    """
    from keras_nlp_week4.models.registry import model_family
    from keras_nlp_week4.plots import plot_validation_bleu
    from keras_nlp_week4.tasks import get_task
    from keras_nlp_week4.training.trainer import resolve_settings, train

    anchors = get_task(base.task).anchors
    models = list(default_models(base.task) if models is None else models)
    if not models:
        raise UserError("give at least one model to compare")
    for name in models:
        model_family(name)  # fails early, with the list of names, before hours of training
    out_dir = Path(out_dir or Path("artifacts") / f"compare-{base.task}")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in models:
        preset = transformer_preset if model_family(name) == "transformer" else rnn_preset
        config = replace(base, model=name, preset=preset, out=str(out_dir / name))
        run_dir = out_dir / name
        if _finished_with(run_dir, resolve_settings(config)):
            if verbose:
                print(f"== {name}: reusing the finished run in {run_dir}")
        else:
            if verbose:
                print(f"== {name}: training into {run_dir}")
            train(config)
        row = _row(run_dir)
        if name in anchors:
            row.update(anchor_bleu=anchors[name]["bleu"], anchor_parameters=anchors[name]["parameters"])
        rows.append(row)

    test_hashes = {_sha256(Path(row["run"]) / "test.tsv") for row in rows}
    if len(test_hashes) != 1:
        raise UserError(f"the runs in {out_dir} were evaluated on different test splits; delete the "
                        "directory and compare again")
    first = Path(rows[0]["run"])
    metrics = RunMetrics.read(first)
    run_config = RunConfig.read(first)

    train_settings = run_config.train
    data = (train_settings.data or (f"{train_settings.src} -> {train_settings.tgt}"
                                    if train_settings.src else get_task(base.task).default_data))
    result = {
        "task": base.task,
        "data": data + (" (reversed)" if train_settings.reverse else ""),
        "splits": run_config.splits,
        "test_sha256": test_hashes.pop(),
        "beam_size": metrics.beam_size or 0,
        "bleu_signature": metrics.bleu_signature,
        "bleu_lowercase_signature": metrics.bleu_lowercase_signature,
        "chrf_signature": metrics.chrf_signature,
        "rows": rows,
        "anchors": {row["model"]: anchors[row["model"]] for row in rows if row["model"] in anchors},
    }
    bleu_logged = [Path(row["run"]) for row in rows if _logs_validation_bleu(Path(row["run"]))]
    if bleu_logged:
        result["validation_bleu_plot"] = str(plot_validation_bleu(
            bleu_logged, out_dir / "validation_bleu.png",
            f"{base.task}: validation BLEU against training time (star: the kept epoch)"))
    (out_dir / "comparison.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    markdown = format_markdown(result)
    (out_dir / "comparison.md").write_text(markdown)
    if verbose:
        print(markdown)
        print(f"Written: {out_dir / 'comparison.md'}, {out_dir / 'comparison.json'}")
    return result
