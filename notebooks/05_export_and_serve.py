# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Export and serve: SavedModel, ONNX, parity, onnxruntime alone
#
# **Lecture section:** after training, the model leaves Python's training stack: it is exported, proven to
# compute what the trained model computes, and served by a small runtime. This is `make train`,
# `make export`, `make infer` in notebook form.
#
# 1. Train the dates Transformer (small here).
# 2. Export it: a TensorFlow SavedModel and three ONNX graphs (encoder, one decoder step with its
#    key/value cache, and the whole greedy loop), validated output by output against the Keras model.
# 3. Generate with `serving.Runtime`: onnxruntime, numpy and sentencepiece, no TensorFlow.
# 4. Why the cache matters: one decoder step per token instead of re-running the decoder on the prefix.

# %%
# Colab, or any environment without this project: this cell installs it (and does nothing where it
# imports). From $KERAS_NLP_WEEK4_SOURCE (a folder, or anything `pip install` accepts), else from a
# clone in or above the working directory, else from /content/keras-nlp-week4 (Colab's upload place).
import importlib.util


def _install_keras_nlp_week4():
    import os
    import subprocess
    import sys
    from pathlib import Path

    def is_clone(folder):
        toml = folder / "pyproject.toml"
        return toml.is_file() and 'name = "keras-nlp-week4"' in toml.read_text(encoding="utf-8")

    here = Path.cwd().resolve()
    places = [d for p in (here, *here.parents, Path("/content")) for d in (p, *p.glob("keras-nlp-week4*"))]
    source = os.environ.get("KERAS_NLP_WEEK4_SOURCE") or next((str(d) for d in places if is_clone(d)), None)
    if source is None:
        raise ModuleNotFoundError(
            "keras_nlp_week4 is not installed and no copy of the project was found. In Colab, put the "
            "project at /content/keras-nlp-week4: `!git clone <the repository's URL> /content/keras-nlp-week4`, "
            "or upload a zip of it (Files pane) and `!unzip -q keras-nlp-week4*.zip -d /content`. Elsewhere, "
            "set os.environ['KERAS_NLP_WEEK4_SOURCE'] to the project's folder (or anything `pip install` "
            "accepts). Then run this cell again.")
    print(f"Installing keras-nlp-week4 from {source} (a few minutes the first time) ...")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)
    importlib.invalidate_caches()


if importlib.util.find_spec("keras_nlp_week4") is None:
    _install_keras_nlp_week4()

# %% tags=["parameters"]
import os

SMALL = os.environ.get("NOTEBOOK_SMALL") == "1"
TRAIN_EXAMPLES = 1000 if SMALL else None  # None: the whole default task, as `make train`
EPOCHS = 2 if SMALL else None  # None: the task's default
TEST_EXAMPLES = 30 if SMALL else None  # test sequences the export is validated on (None: all 1,000)

# %%
import json
import tempfile
import time
from pathlib import Path

from keras_nlp_week4.quiet import import_tensorflow_quietly

import_tensorflow_quietly()

import numpy as np

from export.exporter import export_run
from export.parity import format_table
from keras_nlp_week4.training.trainer import TrainConfig, train
from serving.manifest import Manifest

workdir = Path(tempfile.mkdtemp(prefix="export-notebook-"))

# %% [markdown]
# ## 1. Train

# %%
run_dir = train(TrainConfig(task="dates", model="transformer", epochs=EPOCHS, max_train_examples=TRAIN_EXAMPLES,
                            out=str(workdir / "dates-transformer"), verbose=0))
print(sorted(p.name for p in run_dir.iterdir()))

# %% [markdown]
# ## 2. Export, with parity validation
# The export is written to a staging folder, validated there, and only then installed as
# `RUN/export/`. Validation runs every graph on held-out inputs (one sequence, a padded batch of mixed
# lengths, a full-length batch; the decoder step at several positions) and compares every output with
# the Keras model's (tolerance `atol = rtol = 1e-5`), then compares greedy outputs token for token on the
# test split. A single mismatch stops the export.

# %%
export_dir = export_run(run_dir, max_test_examples=TEST_EXAMPLES, threads=1, verbose=False)
print(sorted(str(p.relative_to(export_dir)) for p in export_dir.rglob("*") if p.is_file())[:12])
parity = json.loads((export_dir / "parity.json").read_text())
print(format_table(parity["checks"]))
assert parity["passed"], "parity failed"
assert Manifest.read(export_dir).validated is True

# %% [markdown]
# ## 3. Serve with onnxruntime alone
# `serving.Runtime` loads the encoder and decoder-step graphs and the sentencepiece model, after checking
# every file against the manifest's sha256. Its package imports no TensorFlow or Keras: a server installs a
# few megabytes (`pip install ./serving`), not TensorFlow.

# %%
import sys

from serving.runtime import DecodingOptions, Runtime

runtime = Runtime(export_dir)
texts = ["Tuesday, September 27, 1994", "9/27/94", "27.09.1994", "the 1st of march 2001"]
for text, greedy, beam in zip(texts, runtime.generate(texts),
                              runtime.generate(texts, DecodingOptions(method="beam", beam_size=4)), strict=True):
    print(f"{text:30} greedy {greedy.text:12} beam {beam.text}")
print("serving modules import TensorFlow:", any(m.startswith("serving") and "tensorflow" in m for m in sys.modules))

# The runtime's greedy output equals the Keras model's on the same inputs.
from keras_nlp_week4.evaluation import decode_texts
from keras_nlp_week4.runs import load_run

run = load_run(run_dir, compile=False)
assert [g.text for g in runtime.generate(texts)] == decode_texts(run, texts)

# %% [markdown]
# ## 4. Why the decoder step has a cache
# Without a cache, generating token *t* means running the decoder over the whole prefix `0..t` again: the
# work grows with the square of the output length. With the cache, each step feeds one token and reuses
# the keys and values of the earlier ones. Both give the same tokens; we time 128 tokens of each with the
# Keras model (compiled with `tf.function`), then the cached ONNX step under onnxruntime.

# %%
import warnings

import tensorflow as tf

from keras_nlp_week4.data.pipeline import encode_sources

model, bos, eos = run.model, 2, 3
source = encode_sources(texts[:1], run.tokenizer, run.config.max_source_length)
# Long enough for the re-run's quadratic cost to show over the per-call overhead of so small a model.
TOKENS = 32 if SMALL else 128


# A prefix of one token attends over one key: Keras warns that such a softmax is always 1, which is right.
warnings.filterwarnings("ignore", message="You are using a softmax over axis")
ids = tf.TensorSpec([None, None], tf.int32)


@tf.function(input_signature=[ids, ids])  # one graph for every prefix length
def full_decoder(source, prefix):
    return model((source, prefix))[:, -1]  # logits of the next token, from the whole prefix


@tf.function(reduce_retracing=True)
def cached_step(token, index, state):
    return model.decode_step(token, index, state)


def rerun(source):
    prefix = np.full((1, 1), bos, "int32")
    for _ in range(TOKENS):
        token = np.asarray(full_decoder(source, prefix)).argmax(-1).astype("int32")
        prefix = np.concatenate([prefix, token[:, None]], axis=1)
    return prefix[0, 1:]


def cached(source):
    state = {**model.encode(source), **model.initial_cache(1, TOKENS)}
    token, out = np.full((1,), bos, "int32"), []
    for index in range(TOKENS):
        logits, updates, _ = cached_step(token, tf.constant(index, tf.int32), state)
        state.update(updates)
        token = np.asarray(logits).argmax(-1).astype("int32")
        out.append(int(token[0]))
    return np.array(out)


def best_of(fn, repeats=3):
    fn()  # trace / warm up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times) * 1000, result


rerun_ms, rerun_tokens = best_of(lambda: rerun(source))
cached_ms, cached_tokens = best_of(lambda: cached(source))
# The same output up to EOS (what a generation returns; after it the model is outside anything it was
# trained on, where near-ties may break either way between the two orders of summation).
end = int(np.argmax(cached_tokens == eos)) + 1 if (cached_tokens == eos).any() else TOKENS
assert np.array_equal(rerun_tokens[:end], cached_tokens[:end])
ort_options = DecodingOptions(max_new_tokens=runtime.max_target_length)
ort_ms, _ = best_of(lambda: runtime.generate(texts[:1], ort_options))
print(f"Keras, re-running the decoder : {rerun_ms:7.1f} ms for {TOKENS} tokens")
print(f"Keras, cached decoder step    : {cached_ms:7.1f} ms for {TOKENS} tokens "
      f"({rerun_ms / cached_ms:.1f}x faster)")
print(f"onnxruntime, cached step      : {ort_ms:7.1f} ms for up to {runtime.max_target_length} tokens "
      "(stops at EOS)")

# %% [markdown]
# `make bench` measures these paths properly (alternating runs, medians, batch 1 and 32) and writes
# `BENCHMARKS.md`.
#
# ## What to try next
# - `make export QUANTIZE=1`: dynamic int8 graphs, and their test-split exact match next to float32.
# - `python -m serving.server RUN/export` and `curl -H 'Content-Type: application/json'
#   -d '{"inputs": "9/27/94"}' http://127.0.0.1:8000/v1/generate`.
# - Damage a byte of `RUN/export/onnx/encoder.onnx` and load it again: the runtime names the file.
