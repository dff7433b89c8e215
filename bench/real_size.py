"""Generation speed at real size: our onnxruntime runtime against CTranslate2 on the same weights.

Two sizes: the Multi30k Transformer (the trained run of `make train TASK=multi30k` when it has an export,
else a model of the same shape with random weights) and the paper's `base` (random weights, the Multi30k
vocabulary size). Random weights are as good as trained ones for speed: every path is forced to generate
exactly `tokens` tokens (our numpy searches get an EOS id no token has, our in-graph one and CTranslate2
`min_length` / `min_decoding_length = max_decoding_length = tokens`), so all do the same work.

Engines, each on the same source ids:
- ours fp32 / ours int8: `serving.runtime.Runtime` (encoder once, then `decoder_step_top_k.onnx` per token
  with the key/value caches, each hypothesis's best continuations from the graph), with `serving.search`'s
  greedy or beam search; at batch 1 `beam_search.onnx`, the same search in one graph, whose `min_length`
  keeps EOS out as CTranslate2's `min_decoding_length` does: what `python -m serving` runs.
- ct2 fp32 / ct2 int8: `ctranslate2.Translator` on the model `export.ctranslate2_target` converts from
  the same Keras weights (compute type float32 or int8).
- savedmodel: the export's TensorFlow path (`bench.rerun`'s cached greedy loop as a SavedModel), greedy
  only, with TensorFlow's own thread pools (all cores): shown in the 2-thread rows.

Figures are output tokens per second (`batch * tokens / seconds`; beam hypotheses are not counted). Every
cell is measured in `rounds` rounds, the engines taking turns within a round; a ratio is the median over
rounds of the per-round ratios, with their range, so both sides of a ratio see the same machine load.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_REAL_RUN", "RealModel", "prepare_models", "run_generation", "run_in_graph_search"]

DEFAULT_REAL_RUN = Path("artifacts/compare-multi30k/transformer")
MULTI30K_SHAPE = {"preset": "compact", "vocab_size": 8000}
NEVER = -1  # an EOS id no token has
# Longer than OpenMP's default spin time (KMP_BLOCKTIME, 200 ms) and onnxruntime's.
SETTLE_SECONDS = 0.3
# A timed sample repeats a short call until it lasts about this long: a single batch-1 call of the
# Multi30k model's int8 graphs takes 30-50 ms, where one preempted time slice on a shared 2-vCPU machine
# swung the per-round ratio from 0.55 to 1.47.
SAMPLE_SECONDS = 0.25
SOURCE_TOKENS = 20  # a typical Multi30k German sentence in 8,000 BPE pieces, EOS included
RATIO_PAIRS = (("ours fp32", "ct2 fp32"), ("ours int8", "ct2 int8"), ("ours int8", "ours fp32"),
               ("ct2 int8", "ct2 fp32"), ("ours fp32", "savedmodel"))


@dataclass
class RealModel:
    """One benchmarked size: its export (ONNX + SavedModel), its CTranslate2 directory, and what it is."""

    name: str
    description: str
    run_dir: Path
    export_dir: Path
    ct2_dir: Path
    parameters: int
    vocab_size: int
    trained: bool


# ---------------------------------------------------------------------------------------------- models
def _training_text(folder: Path) -> list[Path]:
    from keras_nlp_week4.tasks import MULTI30K_FILES, MULTI30K_LANGUAGES

    return [Path(folder) / f"{MULTI30K_FILES['train']}.{language}" for language in MULTI30K_LANGUAGES]


def stand_in_problem(real_run: Path | None, multi30k: Path) -> str | None:
    """Why the real-size part cannot run (one line), or None: without a trained export at `real_run`,
    its random stand-in needs Multi30k's training text in `multi30k` for its tokenizer."""
    if real_run is not None and (Path(real_run) / "export" / "config.json").is_file():
        return None
    missing = [str(f) for f in _training_text(multi30k) if not f.is_file()]
    if not missing:
        return None
    return (f"the real-size part needs a trained Multi30k export ({real_run}/export) or, for its random "
            f"stand-in's tokenizer, Multi30k's training text: missing {', '.join(missing)} (point --multi30k "
            "at the folder, see ../shared/data/README.md, or add --skip real-size)")


def _stand_in_tokenizer(destination: Path, vocab_size: int, multi30k: Path) -> Path:
    """A BPE tokenizer of `vocab_size` pieces trained on Multi30k's training text (in `multi30k`), as the
    recipe's is, so every id the random model can generate is a piece the server can detokenize (a
    borrowed dates tokenizer has a few dozen: its warm-up failed on the first id beyond them)."""
    from keras_nlp_week4.data.tokenizer import train_sentencepiece

    problem = stand_in_problem(None, multi30k)
    if problem:
        raise FileNotFoundError(problem)
    files = _training_text(multi30k)
    # Trained once per work folder: the Multi30k and `base` stand-ins share it.
    shared = destination.parent / f"stand-in-tokenizer-{vocab_size}.model"
    if not shared.is_file():
        texts = [line for f in files for line in f.read_text(encoding="utf-8").splitlines()]
        train_sentencepiece(texts, shared, vocab_size=vocab_size, model_type="bpe")
    shutil.copyfile(shared, destination / "tokenizer.model")
    return destination / "tokenizer.model"


def _stand_in_run(base_run: Path, destination: Path, preset: str, vocab_size: int, multi30k: Path) -> Path:
    """A run directory with a randomly initialised Transformer of `preset` and `vocab_size` in place of
    `base_run`'s model, with a tokenizer of as many pieces (`_stand_in_tokenizer`); `base_run`'s splits
    are reused (only ids are benchmarked, and the export's check decodes a few test lines)."""
    import keras

    from keras_nlp_week4.models.registry import build_model
    from keras_nlp_week4.runs import RunConfig

    if (destination / "model.keras").is_file():
        return destination
    shutil.rmtree(destination, ignore_errors=True)
    destination.mkdir(parents=True)
    for name in ("validation.tsv", "test.tsv"):
        if (base_run / name).is_file():
            shutil.copyfile(base_run / name, destination / name)
    import sentencepiece as spm

    tokenizer = spm.SentencePieceProcessor(model_file=str(_stand_in_tokenizer(destination, vocab_size, multi30k)))
    vocab_size = tokenizer.get_piece_size()  # an upper bound for train_sentencepiece; Multi30k reaches it
    config = RunConfig.read(base_run)
    keras.utils.set_random_seed(0)
    model = build_model("transformer", vocab_size, preset)
    model((np.ones((1, 4), "int32"), np.ones((1, 4), "int32")))
    model.save(destination / "model.keras")
    replace(config, model="transformer", family="transformer", preset=preset, model_class="Transformer",
            model_config=model.get_config(), num_parameters=int(model.count_params()),
            vocab_size=vocab_size, tokenizer_type="bpe",
            task=f"{config.task} (random {preset}, benchmark stand-in)").write(destination)
    return destination


def _ctranslate2_dir(run_dir: Path, destination: Path) -> Path:
    """`export.ctranslate2_target.convert_run` of the run (cached), with positions for long benchmarks."""
    from export.ctranslate2_target import convert_run
    from keras_nlp_week4.runs import load_run

    if (destination / "model.bin").is_file():
        return destination
    run = load_run(run_dir, compile=False)
    return convert_run(run, destination, max_length=max(run.config.max_source_length,
                                                        run.config.max_target_length, 256))


# What the benchmark runs of a stand-in's export: the runtime's graphs and the in-graph search. Not the
# `generate` loop (its conversion took 20 of the 48 s of the Multi30k stand-in's export on a 2-core Xeon)
# nor the SavedModel (the SavedModel rows trace their own loop from the Keras model, `_savedmodel`).
STAND_IN_GRAPHS = ("encoder", "decoder_step", "decoder_step_top_k", "beam_search")


def _exported(run_dir: Path, log: Callable[[str], None], test_examples: int = 2) -> Path:
    """The stand-in run's export (`STAND_IN_GRAPHS`), made and checked when missing: against its Keras
    reference (greedy on the first `test_examples` test lines) in onnxruntime only, as the numbers are all
    a benchmark of random weights relies on."""
    from export.exporter import export_run
    from export.validate import validate

    if not (run_dir / "export" / "config.json").is_file():
        log(f"exporting {run_dir} ({', '.join(STAND_IN_GRAPHS)}; checked on {test_examples} test sequences; "
            "int8 after)")
        # No int8 quality check here either: it decodes generated ids to text.
        export_run(run_dir, validate=False, max_test_examples=test_examples, verbose=False,
                   graphs=STAND_IN_GRAPHS, saved_model=False)
        validate(run_dir / "export", reference_only=True, verbose=False)
    return run_dir / "export"


def prepare_models(base_run: Path, work: Path, real_run: Path | None = DEFAULT_REAL_RUN,
                   log: Callable[[str], None] = print,
                   names: tuple[str, ...] = ("multi30k", "base"),
                   stand_in_shape: dict = MULTI30K_SHAPE,
                   multi30k: Path = Path("../shared/data/multi30k")) -> list[RealModel]:
    """The Multi30k model (trained when `real_run` has an export, else a random model of
    `stand_in_shape`, with a tokenizer learned from the training text in `multi30k`) and `base`
    (random), exported to ONNX (fp32 + int8) and converted to CTranslate2, cached under `work/`."""
    from keras_nlp_week4.models.transformer import TRANSFORMER_PRESETS
    from keras_nlp_week4.runs import RunConfig

    work = Path(work)
    models = []
    if real_run is not None and (Path(real_run) / "export" / "config.json").is_file():
        run_dir, trained = Path(real_run), True
        vocab_size = RunConfig.read(run_dir).vocab_size
    else:
        run_dir, trained = _stand_in_run(base_run, work / "multi30k-random", **stand_in_shape,
                                              multi30k=multi30k), False
        vocab_size = RunConfig.read(run_dir).vocab_size
    sizes = [("multi30k", run_dir, trained, vocab_size)]
    if "base" in names:  # only what is asked for: `--quick` measures the Multi30k size alone
        sizes.append(("base", _stand_in_run(base_run, work / "base-random", "base", vocab_size, multi30k), False,
                      vocab_size))
    for name, run_dir, trained, vocab in sizes:
        export_dir = _exported(run_dir, log)
        from serving.export_config import ExportConfig

        if not ExportConfig.read(export_dir).quantized:
            from bench.inference import _int8_export

            export_dir = _int8_export(export_dir, work / f"{name}-int8")
        log(f"real-size {name}: exported, int8 graphs made")
        ct2_dir = _ctranslate2_dir(run_dir, work / f"{name}-ctranslate2")
        log(f"real-size {name}: CTranslate2 model converted")
        config = RunConfig.read(run_dir)
        shape = TRANSFORMER_PRESETS[config.preset or "base"]
        description = (f"{'trained' if trained else 'random weights'}, d_model {shape['d_model']}, "
                       f"{shape['num_heads']} heads, {shape['num_encoder_layers']}+{shape['num_decoder_layers']} "
                       f"layers, d_ff {shape['d_ff']}, vocabulary {vocab:,}")
        models.append(RealModel(name, description, run_dir, export_dir, ct2_dir,
                                config.num_parameters, vocab, trained))
    return models


# ---------------------------------------------------------------------------------------------- engines
def _ours(export_dir: Path, threads: int, int8: bool, provider: str = "cpu") -> Callable:
    from serving.options import DecodingOptions
    from serving.runtime import Runtime
    from serving.search import beam_search, greedy_search

    runtime = Runtime(export_dir, provider=provider, intra_op_threads=threads, verify=False, int8=int8)
    bos, pad = runtime.bos_id, runtime.pad_id

    def generate(source: np.ndarray, tokens: int, beam: int) -> np.ndarray:
        options = DecodingOptions(method="beam", beam_size=beam) if beam > 1 else DecodingOptions()
        if runtime.runs_in_graph(source.shape[0], options):
            # As the runtime searches a batch-1 request; EOS is kept out by the graph's min_length instead.
            return runtime.in_graph_search(source, tokens, beam, 0.6 if beam > 1 else 0.0, min_length=tokens).tokens
        state, step, top_k = runtime.search_start(source, tokens, beam)  # as the runtime's own searches
        if beam == 1:
            return greedy_search(step, state, source.shape[0], tokens, bos, NEVER, pad, top_k_step=top_k).tokens
        return beam_search(step, state, source.shape[0], tokens, bos, NEVER, pad, beam_size=beam,
                           length_penalty=0.6, shared=runtime.shared_state, top_k_step=top_k,
                           position_axes=runtime.position_axes).tokens

    return generate


def _ct2(ct2_dir: Path, threads: int, compute_type: str) -> Callable:
    from export.ctranslate2_target import ctranslate2_translator

    translator = ctranslate2_translator(ct2_dir, threads=threads, compute_type=compute_type)
    vocabulary = json.loads((ct2_dir / "shared_vocabulary.json").read_text())

    def generate(source: np.ndarray, tokens: int, beam: int) -> list:
        batch = [[vocabulary[i] for i in row if i > 3] for row in source]  # CTranslate2 appends the EOS
        return translator.translate_batch(batch, beam_size=beam, min_decoding_length=tokens,
                                          max_decoding_length=tokens, max_batch_size=0)

    return generate


def _savedmodel(run_dir: Path, work: Path) -> Callable:
    import keras
    import tensorflow as tf

    from bench.rerun import save_generation_module
    from keras_nlp_week4.data.tokenizer import BOS_ID, PAD_ID

    directory = work / "savedmodel"
    if not (directory / "saved_model.pb").is_file():
        model = keras.models.load_model(run_dir / "model.keras", compile=False)
        save_generation_module(model, directory, BOS_ID, PAD_ID)
    loaded = tf.saved_model.load(str(directory))

    def generate(source: np.ndarray, tokens: int, beam: int):
        # `loaded` stays referenced by this closure: its functions do not keep its variables alive.
        return loaded.generate_cached(tf.constant(source), tf.constant(tokens, tf.int32)).numpy()

    return generate


def _sources(vocab_size: int, batch: int) -> np.ndarray:
    """`batch` distinct random sentences of `SOURCE_TOKENS` ids, EOS last, no padding."""
    rng = np.random.default_rng(0)
    ids = rng.integers(4, vocab_size, (batch, SOURCE_TOKENS), dtype=np.int32)
    ids[:, -1] = 3
    return ids


# ---------------------------------------------------------------------------------------------- timing
def time_engines(engines: dict[str, Callable], source: np.ndarray, tokens: int, beam: int, rounds: int,
                 settle: bool = False, last: tuple[str, ...] = (), short_rounds: int | None = None
                 ) -> tuple[dict[str, list[float]], int]:
    """Seconds per call of every engine on one cell, `rounds` samples each, and the calls per sample.

    The engines take turns within a round, starting one later each round, so every engine sees the same
    machine load; the ones in `last` (the SavedModel) go last in every round. Every sample repeats the
    call as often for every engine, from the fastest engine's warm call (`SAMPLE_SECONDS`). A cell whose
    fastest call is shorter than a sample (the batch-1 rows) is measured in `short_rounds` rounds where
    that is more: its rounds cost a second or two, and on a shared 2-vCPU machine one sample swung 2x.
    """
    warm = {}
    for name, engine in engines.items():  # warm-up: first-call allocations and graph tracing
        engine(source, tokens, beam)
        started = time.perf_counter()
        engine(source, tokens, beam)
        warm[name] = time.perf_counter() - started
    calls = max(1, math.ceil(SAMPLE_SECONDS / max(min(warm.values()), 1e-6)))
    if calls > 1 and short_rounds:
        rounds = max(rounds, short_rounds)
    turns = [name for name in engines if name not in last]
    runs: dict[str, list[float]] = {name: [] for name in engines}
    for round_index in range(rounds):
        shift = round_index % len(turns)
        # Thread pools keep spinning for a moment after a call (TensorFlow's, CTranslate2's OpenMP
        # workers, onnxruntime's): with `settle` (more than one thread) every call is followed by an
        # untimed pause, so no engine pays for the one before.
        for name in turns[shift:] + turns[:shift] + [name for name in last if name in engines]:
            started = time.perf_counter()
            for _ in range(calls):
                engines[name](source, tokens, beam)
            runs[name].append((time.perf_counter() - started) / calls)
            if settle or name in last:
                time.sleep(SETTLE_SECONDS)
    return runs, calls


def summarize(runs: dict[str, list[float]], tokens: int, pairs) -> tuple[dict, dict]:
    """Per engine, tokens/s and ms of the median sample (and every sample's ms); per pair (mine, peer)
    present in `runs`, the median and range over rounds of the per-round speed ratio mine / peer."""
    engines = {}
    for name, seconds in runs.items():
        median = float(np.median(seconds))
        engines[name] = {"tokens_per_s": round(tokens / median, 1), "ms": round(1000 * median, 2),
                         "runs_ms": [round(1000 * s, 2) for s in seconds]}
    ratios = {}
    for mine, peer in pairs:
        if mine in runs and peer in runs:
            per_round = np.array(runs[peer]) / np.array(runs[mine])
            ratios[f"{mine} / {peer}"] = {"median": round(float(np.median(per_round)), 3),
                                          "range": [round(float(per_round.min()), 3),
                                                    round(float(per_round.max()), 3)]}
    return engines, ratios


def run_generation(models: list[RealModel], work: Path, tokens: int = 32, batches=(1, 32),
                   beams=(1, 4), threads=(1, 2), rounds: int = 3, with_savedmodel: bool = True,
                   log: Callable[[str], None] = print, short_rounds: int | None = None) -> dict:
    """Tokens/s of every engine for every (size, method, batch, threads), and the ratios per pair; a
    cell of short calls in `short_rounds` rounds where that is more (`time_engines`).

    Returns:
        {"tokens", "source_tokens", "rounds", "models": [...], "rows": [{"size", "method", "batch",
        "threads", "engines": {engine: {"tokens_per_s", "ms", "runs_ms"}}, "ratios": {pair: {"median",
        "range"}}}]}.
    """
    rows = []
    for model in models:
        savedmodel = None
        if with_savedmodel:
            savedmodel = _savedmodel(model.run_dir, work / f"{model.name}-savedmodel")
            log(f"real-size {model.name}: SavedModel generation loop ready")
        for n_threads in threads:
            engines = {
                "ours fp32": _ours(model.export_dir, n_threads, int8=False),
                "ours int8": _ours(model.export_dir, n_threads, int8=True),
                "ct2 fp32": _ct2(model.ct2_dir, n_threads, "float32"),
                "ct2 int8": _ct2(model.ct2_dir, n_threads, "int8"),
            }
            if savedmodel is not None and n_threads == max(threads):
                engines["savedmodel"] = savedmodel
            for beam in beams:
                for batch in batches:
                    source = _sources(model.vocab_size, batch)
                    names = [e for e in engines if not (e == "savedmodel" and beam > 1)]
                    runs, calls = time_engines({name: engines[name] for name in names}, source, tokens, beam,
                                               rounds, settle=n_threads > 1, last=("savedmodel",),
                                               short_rounds=short_rounds)
                    row = {"size": model.name, "method": "greedy" if beam == 1 else f"beam {beam}",
                           "batch": batch, "threads": n_threads, "calls_per_sample": calls, "engines": {},
                           "ratios": {}}
                    row["engines"], row["ratios"] = summarize(runs, batch * tokens, RATIO_PAIRS)
                    rows.append(row)
                    log(f"real-size {model.name:<8} {row['method']:<7} batch {batch:>2} threads {n_threads}: "
                        + ", ".join(f"{k} {v['tokens_per_s']:.0f}" for k, v in row["engines"].items())
                        + f" tok/s | ours/ct2 fp32 {row['ratios']['ours fp32 / ct2 fp32']['median']}x")
            del engines
    return {"tokens": tokens, "source_tokens": SOURCE_TOKENS, "rounds": rounds, "short_rounds": short_rounds,
            "models": [{"name": m.name, "description": m.description, "parameters": m.parameters,
                        "trained": m.trained, "run": str(m.run_dir)} for m in models],
            "rows": rows}


# ------------------------------------------------------------------------------ the in-graph search
def _in_graph_tokens(session, sources: list[np.ndarray], feeds: dict) -> list[np.ndarray]:
    return [session.run(None, {"encoder_input": source, **feeds})[0] for source in sources]


def _runtime_tokens(runtime, sources: list[np.ndarray], options) -> list[np.ndarray]:
    return [runtime.generate_ids(source, options).tokens for source in sources]


def run_in_graph_search(models: list[RealModel], batches=(1, 32), sentences: int = 64, rounds: int = 3,
                        log: Callable[[str], None] = print, provider: str = "cpu", threads: int = 1) -> dict:
    """`beam_search.onnx` (the whole search in one `session.run`) against the runtime's numpy search over
    `decoder_step_top_k.onnx` (what `python -m serving` runs for more than one sentence; for one it runs
    the graph, `Runtime.runs_in_graph`), float32, both on `provider` with `threads`
    intra-op threads, on the first `sentences` test lines of each model's run, in batches of `batch`;
    both stop at EOS, so both do the same work only where they return the same ids, which every row counts.

    Returns:
        {"sentences", "rounds", "rows": [{"size", "method", "batch", "in_graph_ms", "runtime_ms",
        "ratio": {"median", "range"}, "identical"}]} (ms: the whole `sentences`, median over rounds).
    """
    import onnxruntime as ort

    from serving.options import DecodingOptions
    from serving.runtime import Runtime, check_providers_loaded, session_options

    rows = []
    for model in models:
        runtime = Runtime(model.run_dir / "export", provider=provider, intra_op_threads=threads,
                          in_graph_search=False)  # the numpy search, at every batch
        if "beam_search" not in runtime.config.graph_names:
            log(f"in-graph search: {model.name} has no beam_search graph (export the run again)")
            continue
        session = ort.InferenceSession(str(model.run_dir / "export" / runtime.config.graph_file("beam_search")),
                                       session_options(intra_op_threads=threads), providers=runtime.providers)
        check_providers_loaded(session, runtime.providers)  # as the runtime's own sessions
        texts = [line.split("\t")[0] for line in (model.run_dir / "test.tsv").read_text(encoding="utf-8")
                 .splitlines()[:sentences]]
        max_length = runtime.config.max_target_length
        for method, beam_size, length_penalty in (("greedy", 1, 0.0), ("beam 4", 4, 0.6)):
            options = DecodingOptions(method="greedy" if beam_size == 1 else "beam", beam_size=beam_size,
                                      length_penalty=length_penalty, max_new_tokens=max_length)
            feeds = {"max_length": np.array(max_length, np.int32), "beam_size": np.array(beam_size, np.int32),
                     "length_penalty": np.array(length_penalty, np.float32), "min_length": np.array(0, np.int32)}
            for batch in batches:
                sources = [runtime.tokenizer.encode_sources(texts[i:i + batch], runtime.config.max_source_length)[0]
                           for i in range(0, len(texts), batch)]

                in_graph = functools.partial(_in_graph_tokens, session, sources, feeds)
                numpy_search = functools.partial(_runtime_tokens, runtime, sources, options)
                got, expected = in_graph(), numpy_search()  # warm-up, and the outputs compared
                identical = sum(int(np.array_equal(a, b)) for g, e in zip(got, expected, strict=True)
                                for a, b in zip(g, e, strict=True))
                times = {"in_graph": [], "runtime": []}
                for round_index in range(rounds):
                    order = [("in_graph", in_graph), ("runtime", numpy_search)]
                    for name, run in order if round_index % 2 == 0 else order[::-1]:
                        started = time.perf_counter()
                        run()
                        times[name].append(time.perf_counter() - started)
                ratios = np.array(times["runtime"]) / np.array(times["in_graph"])
                row = {"size": model.name, "method": method, "batch": batch,
                       "in_graph_ms": round(1000 * float(np.median(times["in_graph"])), 1),
                       "runtime_ms": round(1000 * float(np.median(times["runtime"])), 1),
                       "ratio": {"median": round(float(np.median(ratios)), 3),
                                 "range": [round(float(ratios.min()), 3), round(float(ratios.max()), 3)]},
                       "identical": identical}
                rows.append(row)
                log(f"in-graph search {model.name:<8} {method:<7} batch {batch:>2}: graph {row['in_graph_ms']} ms, "
                    f"runtime {row['runtime_ms']} ms for {len(texts)} sentences | in-graph/runtime speed "
                    f"{row['ratio']['median']}x, identical {identical}/{len(texts)}")
    return {"sentences": sentences, "rounds": rounds, "threads": threads, "provider": provider, "rows": rows}
