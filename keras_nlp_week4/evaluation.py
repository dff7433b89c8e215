"""Evaluation of a trained run on its held-out splits; writes `metrics.json`."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from keras_nlp_week4.data.pipeline import encode_sources, make_dataset
from keras_nlp_week4.decoding import generate
from keras_nlp_week4.runs import Run, load_run
from keras_nlp_week4.training.losses import MaskedSparseCrossEntropy


def decode_texts(run: Run, sources: list[str], method: str = "greedy", batch_size: int = 256,
                 **options) -> list[str]:
    """Generates output text for every source with the Keras model (batched)."""
    cfg = run.config
    ids = cfg["special_ids"]
    outputs: list[str] = []
    for start in range(0, len(sources), batch_size):
        batch = encode_sources(sources[start:start + batch_size], run.tokenizer, cfg["max_source_length"])
        result = generate(run.model, batch, cfg["max_target_length"], ids["bos"], ids["eos"], ids["pad"],
                          method=method, **options)
        outputs.extend(run.tokenizer.decode(result.tokens))
    return outputs


def _token_figures(run: Run, pairs, batch_size: int) -> dict:
    """Unsmoothed masked cross-entropy (so perplexity is the model's, not the regulariser's) and accuracy."""
    cfg = run.config
    dataset = make_dataset(pairs, run.tokenizer, batch_size, cfg["max_source_length"],
                           cfg["max_target_length"])
    loss_fn = MaskedSparseCrossEntropy(label_smoothing=0.0, pad_id=cfg["special_ids"]["pad"])
    nll_sum = correct = count = 0.0
    for (source, target_in), target in dataset:
        logits = run.model((source, target_in), training=False)
        mask = np.asarray(target) != cfg["special_ids"]["pad"]
        tokens = float(mask.sum())
        nll_sum += float(loss_fn(target, logits)) * tokens
        correct += float(((np.argmax(logits, -1) == np.asarray(target)) & mask).sum())
        count += tokens
    mean_nll = nll_sum / max(count, 1.0)
    return {"cross_entropy": mean_nll, "perplexity": math.exp(min(mean_nll, 50.0)),
            "token_accuracy": correct / max(count, 1.0)}


def evaluate_run(run_dir: Path, training_seconds: float | None = None, batch_size: int = 256,
                 beam_size: int = 0, verbose: bool = True) -> dict:
    """Evaluates the best model of a run and writes `metrics.json` (keeping earlier training figures)."""
    run = load_run(run_dir)
    metrics_path = Path(run_dir) / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    if training_seconds is not None:
        metrics["training_seconds"] = round(training_seconds, 1)
    validation, test = run.pairs("validation"), run.pairs("test")

    val = _token_figures(run, validation, batch_size)
    # val_loss as Keras reports it during training: with the run's label smoothing.
    smoothing = run.config["train"].get("label_smoothing", 0.0)
    val_ds = make_dataset(validation, run.tokenizer, batch_size, run.config["max_source_length"],
                          run.config["max_target_length"])
    smoothed = MaskedSparseCrossEntropy(label_smoothing=smoothing)
    losses = [float(smoothed(t, run.model((s, ti), training=False))) for (s, ti), t in val_ds]
    metrics["val_loss"] = float(np.mean(losses))
    metrics["val_perplexity"] = val["perplexity"]
    test_figures = _token_figures(run, test, batch_size)
    metrics.update({f"test_{k}": v for k, v in test_figures.items()})

    started = time.perf_counter()
    predictions = decode_texts(run, [s for s, _ in test], "greedy", batch_size)
    metrics["test_greedy_seconds"] = round(time.perf_counter() - started, 2)
    references = [t for _, t in test]
    if run.config.get("exact_match"):
        metrics["exact_match"] = float(np.mean([p == r for p, r in zip(predictions, references, strict=True)]))
        if beam_size:
            beam = decode_texts(run, [s for s, _ in test], "beam", 64, beam_size=beam_size)
            metrics["exact_match_beam"] = float(np.mean([p == r for p, r in zip(beam, references, strict=True)]))
    metrics["num_parameters"] = run.config.get("num_parameters")
    metrics["test_examples"] = len(test)
    metrics_path.write_text(json.dumps(metrics, indent=2))
    if verbose:
        print(json.dumps({"run": str(run_dir), **metrics}, indent=2))
    return metrics
