"""Training throughput in the real pipeline: `model.fit` over the Multi30k recipe's own `tf.data` input.

`bench.training` times `train_on_batch` on random full-length batches: the model's speed with nothing
else in the way. Here the recipe's pieces run as `make train TASK=multi30k` runs them (`resolve_settings`,
`prepare_data` with its learned 8,000-piece BPE, length bucketing with partial buckets dropped, the
compiled training model with label smoothing and masked accuracy), for a whole epoch (`--quick`: its
first `steps` batches), and three figures come out:

- real tokens/s: non-padding source + target tokens of the epoch's batches / wall time of `fit`;
- positions/s of `train_on_batch` on random batches of the epoch's mean shape, same model: the ceiling;
- padding: the share of padding positions per batch (mean and worst), what bucketing leaves.

The target is real tokens/s >= 0.8x the `train_on_batch` positions/s (padding and the input pipeline
together cost at most a fifth).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["run_pipeline_throughput"]


def run_pipeline_throughput(folder: Path, steps: int | None = None, warmup: int = 10, probe_steps: int = 10,
                            log: Callable[[str], None] = print) -> dict:
    """Real tokens/s of one epoch of the Multi30k recipe against `train_on_batch` positions/s.

    Args:
        folder: a Multi30k folder (`train`, `val`, `test_2016_flickr` `.de`/`.en`).
        steps: time only the first `steps` batches of the epoch (default: all of it).
        warmup: untimed batches first (tracing a few of the bucket shapes).
        probe_steps: `train_on_batch` steps timed on the mean-shape batch.

    Returns:
        {"skipped": reason} when the data is missing, else the figures described in the module docstring.
    """
    import keras
    import tensorflow as tf

    from keras_nlp_week4.data.pipeline import EpochOrder
    from keras_nlp_week4.data.tokenizer import PAD_ID
    from keras_nlp_week4.tasks import get_task
    from keras_nlp_week4.training.trainer import (
        TrainConfig,
        build_training_model,
        make_datasets,
        prepare_data,
        resolve_settings,
    )

    folder = Path(folder)
    if not (folder / "train.de").is_file():
        return {"skipped": f"no Multi30k folder at {folder} (give --multi30k DIR)"}
    with tempfile.TemporaryDirectory() as scratch:
        config = TrainConfig(task="multi30k", model="transformer", data=str(folder), out=scratch, verbose=0)
        settings = resolve_settings(config)
        started = time.perf_counter()
        data = prepare_data(settings, Path(scratch), resuming=False)
        tokenizer_seconds = time.perf_counter() - started
        log(f"pipeline: data prepared ({tokenizer_seconds:.0f} s)")
        batch_size = settings.batch_size
        dataset, _ = make_datasets(data, settings, get_task(settings.task), EpochOrder(settings.seed))

        # One pass alone: what the input pipeline costs by itself, and every batch's real tokens.
        started = time.perf_counter()
        shapes, real, positions = [], [], []
        for (encoder_input, _), target in dataset:
            shapes.append((int(encoder_input.shape[0]), int(encoder_input.shape[1]), int(target.shape[1])))
            real.append(int(tf.math.count_nonzero(encoder_input != PAD_ID)) +
                        int(tf.math.count_nonzero(target != PAD_ID)))
            positions.append(int(tf.size(encoder_input)) + int(tf.size(target)))
        pipeline_seconds = time.perf_counter() - started
        log(f"pipeline: one pass over the input alone ({pipeline_seconds:.0f} s)")
        real, positions = np.array(real), np.array(positions)
        drop = all(shape[0] == batch_size for shape in shapes)  # no partial batch: make_datasets dropped them
        padding = 1.0 - real / positions
        timed = len(real) if steps is None else min(steps, len(real) - warmup)

        model = build_training_model(settings, data.tokenizer.vocab_size, tf.distribute.get_strategy())
        model.fit(dataset.take(warmup), epochs=1, verbose=0)
        log(f"pipeline: model built, {warmup} warm-up batches done")
        timed_data = dataset.take(timed) if steps is not None else dataset
        started = time.perf_counter()
        model.fit(timed_data, epochs=1, verbose=0)
        fit_seconds = time.perf_counter() - started
        # With `steps`, fit sees the epoch's first batches again (the order is a function of the epoch).
        fit_real = int(real[:timed].sum())
        fit_positions = int(positions[:timed].sum())

        # The same model on random batches of the epoch's mean shape, no padding: its ceiling.
        batch = int(round(np.mean([s[0] for s in shapes])))
        source_width = int(round(np.mean([s[1] for s in shapes])))
        target_width = int(round(np.mean([s[2] for s in shapes])))
        rng = np.random.default_rng(0)
        vocab = data.tokenizer.vocab_size
        source = rng.integers(4, vocab, (batch, source_width), dtype=np.int32)
        target = rng.integers(4, vocab, (batch, target_width + 1), dtype=np.int32)
        inputs, labels = (source, target[:, :-1]), target[:, 1:]
        for _ in range(2):  # the first traces `train_on_batch`'s function for this shape
            model.train_on_batch(inputs, labels)
        started = time.perf_counter()
        for _ in range(probe_steps):
            model.train_on_batch(inputs, labels)
        probe_seconds = (time.perf_counter() - started) / probe_steps
        keras.backend.clear_session()

    real_per_s = fit_real / fit_seconds
    probe_per_s = batch * (source_width + target_width) / probe_seconds
    result = {
        "model": f"transformer {settings.preset}", "parameters": int(model.count_params()),
        "vocab_size": int(vocab), "batch_size": batch_size, "batches_in_epoch": len(real),
        "timed_batches": timed, "whole_epoch": steps is None, "dropped_partial_buckets": bool(drop),
        "fit_seconds": round(fit_seconds, 1), "real_tokens_per_s": round(real_per_s, 1),
        "positions_per_s_in_fit": round(fit_positions / fit_seconds, 1),
        "train_on_batch_shape": [batch, source_width, target_width],
        "train_on_batch_positions_per_s": round(probe_per_s, 1),
        "ratio_real_to_train_on_batch": round(real_per_s / probe_per_s, 3),
        "padding_mean": round(float(padding.mean()), 4), "padding_max": round(float(padding.max()), 4),
        "pipeline_alone_seconds": round(pipeline_seconds, 1), "tokenizer_seconds": round(tokenizer_seconds, 1),
    }
    log(f"pipeline: {result['real_tokens_per_s']:.0f} real tok/s in fit vs {probe_per_s:.0f} positions/s "
        f"train_on_batch ({result['ratio_real_to_train_on_batch']}x), padding {padding.mean():.1%} mean")
    return result
