"""Evaluation of a trained run on its held-out splits; writes `metrics.json` and `samples.json`.

Figures on the test split:
- perplexity and token accuracy of the teacher-forced model (no label smoothing);
- corpus BLEU (Papineni et al., 2002) and chrF (Popovic, 2015) with sacrebleu, for greedy decoding and,
  when a beam size is given, for beam search. A source that occurs several times in the test split
  (kor.txt lists some English sentences with several translations) is decoded once and scored against
  all its references;
- exact match for tasks whose outputs have one right spelling (dates).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from keras_nlp_week4.data.pipeline import encode_sources, make_dataset
from keras_nlp_week4.decoding import generate
from keras_nlp_week4.errors import UserError
from keras_nlp_week4.runs import Run, RunConfig, RunMetrics, load_run
from keras_nlp_week4.training.losses import MaskedSparseCrossEntropy


def decode_texts(run: Run, sources: list[str], method: str = "greedy", batch_size: int = 256,
                 max_new_tokens: int | None = None, **options) -> list[str]:
    """Generates output text for every source with the Keras model (batched); `method` and `options` as
    `serving.options.DecodingOptions`, `max_new_tokens` None for the model's `max_target_length`."""
    config = run.config
    return generate_texts(run.model, run.tokenizer, sources, config.max_source_length,
                          max_new_tokens or config.max_target_length, config.special_ids, method,
                          batch_size, **options)


def generate_texts(model, tokenizer, sources: list[str], max_source_length: int, max_new_tokens: int,
                   special_ids: dict, method: str = "greedy", batch_size: int = 256, **options) -> list[str]:
    """`decode_texts` for a model that is not (yet) a run, such as one being trained."""
    outputs: list[str] = []
    for start in range(0, len(sources), batch_size):
        batch = encode_sources(sources[start:start + batch_size], tokenizer, max_source_length)
        result = generate(model, batch, max_new_tokens, special_ids["bos"], special_ids["eos"],
                          special_ids["pad"], method=method, encode=lambda text: tokenizer.encode([text])[0],
                          **options)
        outputs.extend(tokenizer.decode(result.tokens))
    return outputs


def _token_figures(run: Run, pairs, batch_size: int, label_smoothing: float | None = None) -> dict:
    """Unsmoothed masked cross-entropy (so perplexity is the model's, not the regulariser's) and accuracy.

    With `label_smoothing`, the same pass also gives ``smoothed_loss``: the mean over batches of the
    smoothed loss, as Keras reports ``val_loss`` during training.
    """
    config = run.config
    dataset = make_dataset(pairs, run.tokenizer, batch_size, config.max_source_length,
                           config.max_target_length)
    loss_fn = MaskedSparseCrossEntropy(label_smoothing=0.0, pad_id=config.special_ids["pad"])
    smoothed_fn = (None if label_smoothing is None
                   else MaskedSparseCrossEntropy(label_smoothing=label_smoothing))
    nll_sum = correct = count = 0.0
    smoothed_losses = []
    for (source, target_in), target in dataset:
        logits = run.model((source, target_in), training=False)
        mask = np.asarray(target) != config.special_ids["pad"]
        tokens = float(mask.sum())
        nll_sum += float(loss_fn(target, logits)) * tokens
        correct += float(((np.argmax(logits, -1) == np.asarray(target)) & mask).sum())
        count += tokens
        if smoothed_fn is not None:
            smoothed_losses.append(float(smoothed_fn(target, logits)))
    mean_nll = nll_sum / max(count, 1.0)
    figures = {"cross_entropy": mean_nll, "perplexity": math.exp(min(mean_nll, 50.0)),
               "token_accuracy": correct / max(count, 1.0)}
    if smoothed_fn is not None:
        figures["smoothed_loss"] = float(np.mean(smoothed_losses))
    return figures


# Sampling settings of the sample outputs: a slightly cooled softmax cut to its nucleus (Holtzman et al., 2020).
SAMPLING = {"temperature": 0.8, "top_p": 0.9, "seed": 0}
NUM_TEST_SAMPLES = 5


def group_references(pairs) -> tuple[list[str], list[list[str]]]:
    """Unique sources in order of first appearance, and every reference of each."""
    references: dict[str, list[str]] = {}
    for source, target in pairs:
        references.setdefault(source, []).append(target)
    return list(references), list(references.values())


def corpus_scores(hypotheses: list[str], references: list[list[str]]) -> dict:
    """Corpus BLEU and chrF (sacrebleu defaults: 13a tokenization, chrF2) against one or more references,
    and BLEU on lowercased text as the seq2seq literature reports it on Multi30k.

    The lowercased BLEU is sacrebleu's BLEU with ``lowercase=True``: both sides are lowercased, then split
    by the 13a tokenizer (mteval-v13a: punctuation and symbols become tokens of their own, except a period
    or comma between digits), then scored with the standard corpus BLEU (4-grams, uniform weights, brevity
    penalty, no smoothing needed at corpus level). The PyTorch tutorials tokenize with spaCy instead, which
    splits a few more cases (clitics such as "'s"); both split off punctuation, which is what moves the score.

    Args:
        hypotheses: one output per source.
        references: the references of each source (any number, at least one).

    Returns:
        ``{"bleu", "bleu_lowercase", "chrf", "bleu_signature", "bleu_lowercase_signature",
        "chrf_signature"}``; scores are 0..100.
    """
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError("need one non-empty reference list per hypothesis")
    width = max(len(refs) for refs in references)
    # sacrebleu takes one stream per reference position; None marks a missing reference.
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(width)]
    bleu, bleu_lowercase, chrf = BLEU(), BLEU(lowercase=True), CHRF()
    return {"bleu": bleu.corpus_score(hypotheses, streams).score,
            "bleu_lowercase": bleu_lowercase.corpus_score(hypotheses, streams).score,
            "chrf": chrf.corpus_score(hypotheses, streams).score,
            "bleu_signature": str(bleu.get_signature()),
            "bleu_lowercase_signature": str(bleu_lowercase.get_signature()),
            "chrf_signature": str(chrf.get_signature())}


def _task_setting(config: RunConfig, name: str, default):
    from keras_nlp_week4.tasks import TASKS

    task = TASKS.get(config.task)
    return getattr(task, name) if task is not None else default


def write_samples(run: Run, inputs: list[str] | None = None, verbose: bool = True) -> dict:
    """Decodes sample inputs greedily and by sampling; writes `samples.json` and prints them.

    Args:
        run: a loaded run.
        inputs: texts to answer; default: the task's fixed sample inputs, or else the first few test
            sources (then the references are saved too).
        verbose: print the samples.

    Returns:
        The saved dict: ``{"sampling": {...}, "samples": [{"input", "greedy", "sampled"[, "references"]}]}``.
    """
    references = None
    if inputs is None:
        inputs = list(_task_setting(run.config, "sample_inputs", ()))
    if not inputs:
        sources, refs = group_references(run.pairs("test"))
        inputs, references = sources[:NUM_TEST_SAMPLES], refs[:NUM_TEST_SAMPLES]
    greedy = decode_texts(run, inputs, "greedy")
    sampled = decode_texts(run, inputs, "sample", **SAMPLING)
    samples = []
    for i, text in enumerate(inputs):
        entry = {"input": text, "greedy": greedy[i], "sampled": sampled[i]}
        if references is not None:
            entry["references"] = references[i]
        samples.append(entry)
    result = {"sampling": SAMPLING, "samples": samples}
    (Path(run.path) / "samples.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    if verbose:
        print(f"Sample outputs (greedy | sampled at temperature {SAMPLING['temperature']}, "
              f"top-p {SAMPLING['top_p']}):")
        for entry in samples:
            print(f"  {entry['input']}\n    greedy:  {entry['greedy']}\n    sampled: {entry['sampled']}")
            if "references" in entry:
                print(f"    reference: {' | '.join(entry['references'])}")
    return result


def evaluate_run(run_dir: Path, training_seconds: float | None = None, batch_size: int = 256,
                 beam_size: int | None = None, verbose: bool = True, samples: bool = True) -> RunMetrics:
    """Evaluates the best model of a run and writes `metrics.json` (`RunMetrics`, keeping earlier
    training figures).

    Args:
        run_dir: the run directory.
        training_seconds: wall time of training, to record.
        batch_size: sequences per batch.
        beam_size: beam width for the beam-search figures; 0 skips them, None takes the task's
            default (`TaskSpec.evaluation_beam_size`).
        verbose: print the figures and the samples.
        samples: also write `samples.json` (see `write_samples`).

    Returns:
        The metrics written.
    """
    run = load_run(run_dir)
    if beam_size is None:
        beam_size = _task_setting(run.config, "evaluation_beam_size", 0)
    if beam_size < 0:
        raise UserError(f"beam size must be >= 0, got {beam_size}")
    previous = RunMetrics.read_or_empty(run_dir)
    metrics = {}  # the figures measured now, by `RunMetrics` field
    if training_seconds is not None:
        metrics["training_seconds"] = round(training_seconds, 1)
    validation, test = run.pairs("validation"), run.pairs("test")

    # val_loss as Keras reports it during training: with the run's label smoothing.
    val = _token_figures(run, validation, batch_size,
                         label_smoothing=run.config.train.label_smoothing)
    metrics["val_loss"] = val["smoothed_loss"]
    metrics["val_perplexity"] = val["perplexity"]
    test_figures = _token_figures(run, test, batch_size)
    metrics.update({f"test_{k}": v for k, v in test_figures.items()})

    sources, references = group_references(test)
    outputs = {}
    started = time.perf_counter()
    outputs["greedy"] = decode_texts(run, sources, "greedy", batch_size)
    metrics["test_greedy_seconds"] = round(time.perf_counter() - started, 2)
    if beam_size:
        started = time.perf_counter()
        outputs["beam"] = decode_texts(run, sources, "beam", 64, beam_size=beam_size)
        metrics["test_beam_seconds"] = round(time.perf_counter() - started, 2)
        metrics["beam_size"] = beam_size
    for method, predictions in outputs.items():
        scores = corpus_scores(predictions, references)
        metrics[f"test_bleu_{method}"] = scores["bleu"]
        metrics[f"test_bleu_lowercase_{method}"] = scores["bleu_lowercase"]
        metrics[f"test_chrf_{method}"] = scores["chrf"]
        for key in ("bleu_signature", "bleu_lowercase_signature", "chrf_signature"):
            metrics[key] = scores[key]
        if run.config.exact_match:
            # Per test pair, as a source may have several references.
            by_source = dict(zip(sources, predictions, strict=True))
            key = "exact_match" if method == "greedy" else "exact_match_beam"
            metrics[key] = float(np.mean([by_source[s] == t for s, t in test]))
    valid_output = _task_setting(run.config, "valid_output", None)
    if valid_output is not None:
        metrics["valid_outputs"] = float(np.mean([valid_output(text) for text in outputs["greedy"]]))
    metrics["num_parameters"] = run.config.num_parameters
    metrics["test_examples"] = len(test)
    metrics["test_sources"] = len(sources)
    metrics = replace(previous, **metrics)
    metrics.write(run_dir)
    if verbose:
        print(json.dumps({"run": str(run_dir), **metrics.to_json()}, indent=2))
    if samples:
        write_samples(run, verbose=verbose)
    return metrics
