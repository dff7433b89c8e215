"""Greedy-generation latency of every inference path, and how it grows with the output length.

Paths (all generate exactly `n` tokens: EOS never stops them, so every path does the same work):

- keras eager: `greedy_generate` on the Keras model, eagerly (cache, one Python-driven step per token).
- savedmodel re-run: the tutorials' loop, `bench.rerun`: the whole teacher-forced model on the whole prefix
  at every step (no cache), as a SavedModel.
- savedmodel cache: `greedy_generate` (encode once, key/value cache) in a `tf.function`, as a SavedModel.
- ort step+cache: onnxruntime, `decoder_step.onnx` driven from Python with the cache (what the server runs).
- ort loop: onnxruntime, `generate.onnx` (the whole greedy loop as one ONNX `Loop`).
- ort int8 step+cache / ort int8 loop: the same on the dynamic-int8 graphs.

Each figure is the median of `repeats` calls after one warm-up call; every path runs in this process.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

__all__ = ["INPUT_TEXTS", "build_paths", "paired_speedup", "patch_generate_eos", "run_inference", "time_call"]

INPUT_TEXTS = {"short": "9/27/94", "long": "Tuesday, September 27, 1994 at noon, in the year of our Lord"}
NEVER = -1  # an EOS id no token has: generation always runs `n` steps


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median milliseconds of `fn()` over `repeats` calls after `warmup` unmeasured ones."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        runs.append(1000 * (time.perf_counter() - started))
    return float(np.median(runs)), runs


def patch_generate_eos(source: Path, target: Path, eos_id: int, new_eos: int = NEVER) -> int:
    """Copies the whole-loop graph with its EOS test (`Equal(token, eos_id)` inside the `Loop`) compared
    against `new_eos` instead, so it generates the full `max_length`. Returns how many tests it changed."""
    import onnx
    from onnx import numpy_helper

    from export.onnx_check import constant_tensors, subgraphs

    model = onnx.load(str(source))
    changed = 0
    for graph in subgraphs(model.graph):
        tensors = constant_tensors(graph)
        for node in graph.node:
            if node.op_type != "Equal":
                continue
            for name in node.input:
                tensor = tensors.get(name)
                if tensor is None:
                    continue
                value = numpy_helper.to_array(tensor)
                if value.dtype.kind == "i" and value.size == 1 and int(value.reshape(-1)[0]) == eos_id:
                    tensor.CopyFrom(numpy_helper.from_array(np.full_like(value, new_eos), tensor.name))
                    changed += 1
    if not changed:
        raise RuntimeError(f"{source}: found no EOS test to patch")
    onnx.save(model, str(target))
    return changed


def _int8_export(export_dir: Path, work: Path) -> Path:
    """A copy of the export with dynamic-int8 graphs (the export's own if it was made with --quantize),
    its config and manifest written by their one writers (the manifest keeps the export's verdict: the
    float32 graphs are the validated ones, the int8 graphs are made as `python -m export --quantize`
    makes them)."""
    from export.manifest import write_manifest
    from serving.export_config import ExportConfig
    from serving.manifest import Manifest

    config = ExportConfig.read(export_dir)
    if config.quantized:
        return export_dir
    from export.quantize import quantize_graphs

    copy = work / "export-int8"
    if not (copy / "config.json").is_file():
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(export_dir, copy, ignore=shutil.ignore_patterns("saved_model"))
        replace(config, quantized=quantize_graphs(copy, config.graphs, config.state,
                                                                  config.special_ids)).write(copy)
        write_manifest(copy, validated=Manifest.read(export_dir).validated)
    return copy


def build_paths(run_dir: Path, work: Path, int8: bool = True) -> tuple[dict, dict]:
    """Loads every path of the run `run_dir` (with `run_dir/export`).

    Returns:
        `(paths, info)`: `paths` maps a name to `fn(source_ids (batch, src_len) int32, n) -> tokens`;
        `info` holds the encoded inputs and special ids.
    """
    import keras
    import onnxruntime as ort
    import tensorflow as tf

    from bench.rerun import save_generation_module
    from keras_nlp_week4.decoding.greedy import greedy_generate
    from serving.runtime import Runtime, session_options
    from serving.search import greedy_search

    export_dir = run_dir / "export"
    work.mkdir(parents=True, exist_ok=True)
    runtime = Runtime(export_dir)
    bos, pad, eos = runtime.bos_id, runtime.pad_id, runtime.eos_id
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    saved_dir = save_generation_module(model, work / "bench_saved_model", bos, pad)
    loaded = tf.saved_model.load(str(saved_dir))

    def ort_step(rt):
        def generate(source, n):
            state = rt.initial_state(source, n)
            return greedy_search(rt.step, state, source.shape[0], n, bos, NEVER, pad).tokens
        return generate

    def ort_loop(graph: Path):
        patched = work / f"{graph.parent.name}-{graph.name}"
        patch_generate_eos(graph, patched, eos)
        session = ort.InferenceSession(str(patched), sess_options=session_options(),
                                       providers=["CPUExecutionProvider"])
        return lambda source, n: session.run(None, {"encoder_input": source,
                                                    "max_length": np.asarray(n, np.int32)})[0]

    def tf_call(signature: str):
        # `loaded` must stay referenced: its functions do not keep its variables alive.
        return lambda source, n: getattr(loaded, signature)(
            tf.constant(source), tf.constant(n, tf.int32)).numpy()

    paths = {
        "keras eager": lambda source, n: np.asarray(greedy_generate(model, source, n, bos, NEVER, pad)),
        "savedmodel re-run": tf_call("generate_rerun"),
        "savedmodel cache": tf_call("generate_cached"),
        "ort step+cache": ort_step(runtime),
        "ort loop": ort_loop(export_dir / "onnx" / "generate.onnx"),
    }
    if int8:
        int8_dir = _int8_export(export_dir, work)
        int8_runtime = Runtime(int8_dir, verify=False, int8=True)
        paths["ort int8 step+cache"] = ort_step(int8_runtime)
        paths["ort int8 loop"] = ort_loop(int8_dir / int8_runtime.config.graph_file("generate", int8=True))
    sources = {}
    for label, text in INPUT_TEXTS.items():
        ids, _ = runtime.tokenizer.encode_sources([text], runtime.max_source_length)
        sources[label] = ids.astype(np.int32)
    info = {"sources": sources, "bos": bos, "eos": eos, "pad": pad,
            "max_source_length": runtime.max_source_length}
    return paths, info


def paired_speedup(slow: Callable, fast: Callable, source, tokens: int = 32, pairs: int = 6,
                   block: int = 5) -> dict:
    """`slow` vs `fast` in alternating blocks, back to back: `pairs` block pairs, each block one untimed
    call and then `block` timed ones; the speedup is the median over pairs of (median of the slow block)
    / (median of the fast block), so both sides of every ratio see the same load from other processes.

    Blocks rather than single calls alternating: after a call TensorFlow's thread pools keep spinning
    for a while, and a single onnxruntime call right after one would be charged for TensorFlow's
    threads (a server running only onnxruntime has none); the untimed first call absorbs that."""
    slow_medians, fast_medians = [], []
    for _ in range(pairs):
        for fn, medians in ((slow, slow_medians), (fast, fast_medians)):
            medians.append(time_call(lambda fn=fn: fn(source, tokens), repeats=block)[0])
    ratios = np.array(slow_medians) / np.array(fast_medians)
    return {"slow_ms": round(float(np.median(slow_medians)), 2),
            "fast_ms": round(float(np.median(fast_medians)), 2),
            "speedup": round(float(np.median(ratios)), 2), "pairs": pairs, "block": block,
            "speedup_range": [round(float(ratios.min()), 2), round(float(ratios.max()), 2)]}


def run_inference(paths: dict, sources: dict, batches=(1, 32), tokens: int = 32,
                  lengths=(16, 32, 64, 128, 256), scaling_paths=None, repeats: int = 5,
                  eager_repeats: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Latency table (path x batch x input length at `tokens` output tokens) and the output-length sweep
    (batch 1, short input).

    `eager_repeats`: timed calls of the "keras eager" path, with no warm-up call (default: `repeats`
    after one warm-up): at 3 s a call it was two thirds of `--quick`'s inference part.

    Returns:
        {"latency": [{"path", "batch", "input", "source_tokens", "tokens", "ms", "runs"}],
         "scaling": [{"path", "tokens", "ms", "runs"}], "agreement": {path: bool},
         "paired": `paired_speedup` of the re-run SavedModel vs ORT with the cache (or None)}.
    """
    latency = []
    for label, source in sources.items():
        for batch in batches:
            x = np.repeat(source, batch, axis=0)
            for name, fn in paths.items():
                eager = name == "keras eager" and eager_repeats is not None
                ms, runs = time_call(lambda fn=fn, x=x: fn(x, tokens), eager_repeats if eager else repeats,
                                     warmup=0 if eager else 1)
                latency.append({"path": name, "batch": batch, "input": label,
                                "source_tokens": int(source.shape[1]), "tokens": tokens,
                                "ms": round(ms, 2), "runs": [round(r, 2) for r in runs]})
                log(f"latency {name:<22} batch {batch:>2} {label:<5} {ms:9.2f} ms")
    scaling = []
    short = next(iter(sources.values()))
    for name in scaling_paths or list(paths):
        for n in lengths:
            ms, runs = time_call(lambda name=name, n=n: paths[name](short, n), repeats)
            scaling.append({"path": name, "tokens": n, "ms": round(ms, 2),
                            "runs": [round(r, 2) for r in runs]})
            log(f"scaling {name:<22} {n:>4} tokens {ms:9.2f} ms")
    # The headline: ORT with the cache vs the tutorials' re-run loop, 32 tokens, batch 1, short input.
    headline = None
    if "savedmodel re-run" in paths and "ort step+cache" in paths:
        headline = paired_speedup(paths["savedmodel re-run"], paths["ort step+cache"], short, tokens,
                                  pairs=max(repeats, 6))
        log(f"paired: re-run {headline['slow_ms']} ms / ort step+cache {headline['fast_ms']} ms = "
            f"{headline['speedup']}x")
    # Every path computes the same greedy tokens (compared on the short input, batch 1).
    reference = np.asarray(paths["ort step+cache"](short, tokens))
    agreement = {name: bool(np.array_equal(np.asarray(fn(short, tokens))[:, :12], reference[:, :12]))
                 for name, fn in paths.items()}
    return {"latency": latency, "scaling": scaling, "agreement": agreement, "paired": headline}
