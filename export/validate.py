"""Parity validation of an export: Keras vs SavedModel vs onnxruntime, every graph, every provider.

    python -m export.validate RUN [--providers cpu cuda] [--reference-only] [--threads N]

`RUN` is a trained run (its export is `RUN/export`) or an export directory itself. The export's files are
first checked against `manifest.json` and every ONNX file with `onnx.checker`; a damaged or mixed-up
export is an error naming the file (exit status 2). Then every graph is run on the reference inputs
(`reference.npz`: held-out inputs of several batch sizes and lengths, with padding) and compared output by
output with the Keras model's numbers (tolerance in `export.parity`), and greedy generation is compared
token for token on the test split: the SavedModel's `generate` and `generate_text` signatures, the ONNX
`generate` graph (one `Loop`), and the encoder + decoder-step graphs driven step by step as the serving
runtime does. onnxruntime runs on CPU always and on CUDA whenever it is available. Any mismatch exits
with status 1 and names the graph, the output, the max difference and the input.

`--reference-only` skips TensorFlow entirely (it is not even imported): the onnxruntime graphs are checked
against the Keras outputs stored in `reference.npz`, which is what a GPU machine without TensorFlow runs.
Results are merged into `parity.json` (rows of other providers from earlier runs are kept) and printed as
a table.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from export import parity
from export.manifest import mark_validated, verify_manifest
from export.onnx_check import check_onnx
from serving.errors import ExportError, ServingError, first_line
from serving.export_config import ExportConfig, Graph
from serving.tokenizer import SentencePieceTokenizer

__all__ = ["export_dir_of", "main", "validate"]

# ONNX graph name -> SavedModel signature name.
SIGNATURES = {"encoder": "encode", "decoder_step": "decode_step", "generate": "generate"}


def export_dir_of(path: Path) -> Path:
    """`path` itself if it is an export directory, else `path/export` (a run directory)."""
    path = Path(path)
    return path if (path / "manifest.json").is_file() and not (path / "model.keras").exists() \
        else path / "export"


def _check_files(export_dir: Path, config: ExportConfig) -> None:
    """The manifest's hashes and `onnx.checker` on every graph (`ExportConfig.read` has already checked
    config.json's format version)."""
    graphs = [config.graph_file(name) for name in config.graph_names]
    graphs += list(config.int8_graph_files().values())
    verify_manifest(export_dir, required=("config.json", config.tokenizer, config.reference, *graphs))
    domains = {config.graph_file(name): tuple(filter(None, [(config.graph(name).custom_ops or {}).get("domain")]))
               for name in config.graph_names}
    for relative in graphs:
        try:
            check_onnx(export_dir / relative, domains.get(relative, ()),
                       onnxruntime_ops=config.operators == "onnxruntime")
        except ValueError as e:
            raise ExportError(str(e)) from None


def _onnx_rows(export_dir: Path, config: ExportConfig, reference: parity.ReferenceData, providers: list[str],
               threads: int, decode: Callable, log: Callable) -> tuple[list[dict], dict]:
    rows, quality = [], {}

    def session(relative: str, provider: str):
        try:
            return parity.ort_session(export_dir / relative, provider, threads)
        except Exception as e:  # onnxruntime raises its own exception types
            raise ExportError(f"cannot load {export_dir / relative} on {provider}: {first_line(e)}") from None

    # A graph with operators outside standard ONNX (generate_text) is checked by `export.text_validation`,
    # where its library is installed (an optional extra); elsewhere the validator says it left it out.
    names = [name for name in config.graph_names if not config.graph(name).custom_ops]
    custom = [name for name in config.graph_names if config.graph(name).custom_ops]
    if custom and parity.extensions_library() is None:
        for name in custom:
            log(f"  {name} not validated here: it needs {config.graph(name).custom_ops['library']} "
                f"(pip install {config.graph(name).custom_ops['library']})")
        custom = []
    for provider in providers:
        sessions = {name: session(config.graph_file(name), provider) for name in names}
        for name, loaded in sessions.items():
            _check_signature(export_dir, config.graph(name), loaded)
        runners = {name: parity.onnx_runner(s) for name, s in sessions.items()}
        for graph, runner in runners.items():
            log(f"  onnxruntime [{provider}] {graph}")
            rows += parity.check_cases(reference, graph, runner, "onnxruntime", provider)
        if "decoder_step_top_k" in runners:
            rows += parity.check_top_k(reference, runners["decoder_step_top_k"], "onnxruntime", provider,
                                       min(VALIDATION_BEAM["beam_size"], config.vocab_size))
        generate = runners.get("generate")  # an export may leave it out (`export_run(graphs=...)`)
        if generate is not None:
            rows.append(parity.check_greedy(
                reference, "generate", lambda x, n, g=generate: g({"encoder_input": x,
                                                                  "max_length": np.array(n, np.int32)})["tokens"],
                "onnxruntime", provider, decode))
        runtime = parity.validation_runtime(export_dir, provider, threads)  # one per provider, for both rows
        loop = parity.runtime_generate(runtime)
        rows.append(parity.check_greedy(reference, "encoder+decoder_step", loop, "onnxruntime", provider,
                                        decode))
        if "beam_search" in runners:
            log(f"  onnxruntime [{provider}] beam_search and generate_text against the runtime's searches")
            rows += _search_rows(reference, config, runners["beam_search"], runtime, export_dir, provider,
                                 threads, decode, with_text="generate_text" in custom, log=log)
        if provider == "CPUExecutionProvider" and config.int8_graph_files():
            if generate is None:
                log("  int8 quality not measured: it decodes with the generate graph, which this export "
                    "left out")
            else:
                log("  int8 quality on the test split")
                quality = _quality(export_dir, config, reference, provider, threads, decode, generate)
    return rows, quality


# The beam the in-graph search is validated at: the serving default (`DecodingOptions`).
VALIDATION_BEAM = {"beam_size": 4, "length_penalty": 0.6}


def in_graph_search(search: Callable, pad_id: int, beam_size: int, length_penalty: float) -> Callable:
    """`beam_search.onnx` as a `generate(encoder_input, max_length)` giving ids padded to `max_length`."""
    def generate(encoder_input: np.ndarray, max_length: int) -> np.ndarray:
        tokens = search({"encoder_input": encoder_input, "max_length": np.array(max_length, np.int32),
                         "beam_size": np.array(beam_size, np.int32),
                         "length_penalty": np.array(length_penalty, np.float32),
                         "min_length": np.array(0, np.int32)})["tokens"]
        return np.pad(tokens, ((0, 0), (0, max_length - tokens.shape[1])), constant_values=pad_id)

    return generate


def _search_rows(reference, config: ExportConfig, search: Callable, runtime, export_dir: Path, provider: str,
                 threads: int, decode: Callable, with_text: bool, log: Callable) -> list[dict]:
    """The in-graph searches on the whole test split: `beam_search` at beam 1 against the Keras greedy
    ids and at `VALIDATION_BEAM` against the serving runtime's numpy beam search over the decoder step;
    with `with_text`, `generate_text` against the texts of the same two (`export.text_validation`)."""
    from export import text_validation

    pad = config.special_ids["pad"]
    beam = VALIDATION_BEAM
    runtime_beam = parity.runtime_generate(runtime, method="beam", **beam)
    max_length = int(reference.meta["max_target_length"])
    expected = [runtime_beam(encoder_input, max_length) for encoder_input, _ in reference.greedy_chunks()]
    chunks = iter(expected)
    rows = [
        parity.check_greedy(reference, "beam_search, beam 1", in_graph_search(search, pad, 1, 0.0),
                            "onnxruntime", provider, decode),
        parity.check_greedy(reference, f"beam_search, beam {beam['beam_size']}",
                            in_graph_search(search, pad, **beam), "onnxruntime", provider, decode,
                            expected=lambda x, n: next(chunks), kind="beam"),
    ]
    if with_text:
        log(f"  onnxruntime [{provider}] generate_text (onnxruntime-extensions)")
        texts = [decode(row) for chunk in expected for row in chunk]
        # onnxruntime-extensions crashes a process that has imported TensorFlow: check it in a child then.
        check = text_validation.rows_in_child if "tensorflow" in sys.modules else text_validation.text_rows
        rows += check(export_dir, provider, threads, beam, texts)
    return rows


def _check_signature(export_dir: Path, graph: Graph, session) -> None:
    """The ONNX file takes and returns what config.json says, by name and order (a mixed-up file fails)."""
    for kind, values in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        found = [v.name for v in values]
        described = [e["name"] for e in getattr(graph, kind)]
        if found != described:
            raise ExportError(f"{export_dir / graph.file} has {kind} {found}, but config.json describes "
                              f"{described}; the export is mixed up, export the run again")


def _quality(export_dir, config, reference, provider, threads, decode, fp32_generate) -> dict:
    """Test-split quality of the int8 graphs next to float32 (Keras and onnxruntime)."""
    max_length = np.array(config.max_target_length, np.int32)
    int8_generate = parity.onnx_runner(parity.ort_session(export_dir / config.graph_file("generate", int8=True),
                                                          provider, threads))
    keras_tokens, fp32_tokens, int8_tokens = [], [], []
    for encoder_input, tokens in reference.greedy_chunks():
        keras_tokens.append(tokens)
        fp32_tokens.append(fp32_generate({"encoder_input": encoder_input, "max_length": max_length})["tokens"])
        int8_tokens.append(int8_generate({"encoder_input": encoder_input, "max_length": max_length})["tokens"])
    keras_tokens, fp32_tokens, int8_tokens = (np.concatenate(t) for t in (keras_tokens, fp32_tokens,
                                                                           int8_tokens))
    exact = config.exact_match
    figures = {name: parity.quality(reference, tokens, decode, exact)
               for name, tokens in (("keras_fp32", keras_tokens), ("onnxruntime_fp32", fp32_tokens),
                                    ("onnxruntime_int8", int8_tokens))}
    metric = figures["keras_fp32"]["metric"]
    same = int((int8_tokens == fp32_tokens).all(axis=1).sum())
    return {"metric": metric, "split": "test", "sequences": len(int8_tokens),
            **{name: f["value"] for name, f in figures.items()},
            "int8_identical_to_fp32": same, "method": config.quantization_method}


def _tensorflow_rows(export_dir: Path, config: ExportConfig, reference: parity.ReferenceData, run, decode,
                     log: Callable) -> list[dict]:
    """The SavedModel's signatures (and, when `run` is None, the reloaded Keras model) vs reference."""
    from keras_nlp_week4.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the SentencePiece ops the SavedModel uses)

    device = "TensorFlow GPU" if tf.config.list_logical_devices("GPU") else "TensorFlow CPU"
    rows = []
    special = config.special_ids
    if run is None:
        from export.reference import keras_outputs
        from keras_nlp_week4.runs import load_run

        run_dir = export_dir.parent
        log(f"  keras {run_dir / 'model.keras'} (reloaded)")
        run = load_run(run_dir, compile=False)
        for graph in config.graph_names:
            rows += parity.check_cases(
                reference, graph, lambda x, g=graph: keras_outputs(run.model, g, x, config.graphs, special),
                "keras", device)
        rows.append(parity.check_greedy(
            reference, "generate", lambda x, n: keras_outputs(
                run.model, "generate", {"encoder_input": x, "max_length": np.array(n, np.int32)},
                config.graphs, special)["tokens"], "keras", device, decode))

    if config.saved_model is None:
        log("  no SavedModel in this export (exported without it)")
        return rows
    directory = export_dir / config.saved_model_dir
    try:
        loaded = tf.saved_model.load(str(directory))
    except Exception as e:  # a damaged SavedModel fails deep inside TensorFlow
        raise ExportError(f"cannot load the SavedModel {directory}: {first_line(e)}") from None
    missing = sorted({"serving_default", "generate_text", *SIGNATURES.values()} - set(loaded.signatures))
    if missing:
        raise ExportError(f"the SavedModel {directory} lacks the signatures {', '.join(missing)}; "
                          "export the run again")

    def signature(name: str):
        function = loaded.signatures[name]

        def run_signature(inputs):
            return {k: v.numpy() for k, v in function(**{k: tf.constant(v) for k, v in inputs.items()}).items()}

        return run_signature

    for graph, name in SIGNATURES.items():
        log(f"  saved_model {name}")
        rows += parity.check_cases(reference, graph, signature(name), "saved_model", device)
    generate = signature("generate")
    rows.append(parity.check_greedy(
        reference, "generate", lambda x, n: generate({"encoder_input": x,
                                                     "max_length": np.array(n, np.int32)})["tokens"],
        "saved_model", device, decode))
    log("  saved_model generate_text")
    texts = []
    text_signature = loaded.signatures["generate_text"]
    sources = reference.sources
    for start in range(0, len(sources), reference.meta["chunk_size"]):
        batch = tf.constant(sources[start:start + reference.meta["chunk_size"]])
        texts += [t.decode("utf-8") for t in text_signature(text=batch)["text"].numpy()]
    rows.append(parity.check_texts(reference, texts, decode, "generate_text", "saved_model", device))
    return rows


def validate(path: Path, providers: list[str] | None = None, reference_only: bool = False,
             threads: int = 0, run=None, verbose: bool = True, label: Path | None = None,
             mark: bool = True) -> dict:
    """Validates the export of `path` (a run or an export directory); writes and returns parity.json.

    Args:
        path: the run directory (export in `path/export`) or the export directory.
        providers: onnxruntime providers ("cpu", "cuda", full names); default CPU plus CUDA if offered.
        reference_only: check onnxruntime against `reference.npz` alone, without TensorFlow.
        threads: onnxruntime intra-op threads (0: one per physical core).
        run: the already loaded `Run` whose model produced `reference.npz` (the exporter passes it, so
            the Keras model is not loaded again); None reloads it to recompute the reference.
        verbose: print progress, the table and the mismatches.
        label: the directory to name in messages (the exporter validates a staging directory that it
            then installs as `RUN/export`).
        mark: record the verdict in `manifest.json` (what the runtime checks before it loads).

    Raises:
        ExportError: for a missing, damaged or mixed-up export (naming the file).
    """
    def log(message: str) -> None:
        if verbose:
            print(message, flush=True)

    export_dir = export_dir_of(path)
    config = ExportConfig.read(export_dir)
    _check_files(export_dir, config)
    reference = parity.ReferenceData(export_dir / config.reference)
    tokenizer = SentencePieceTokenizer(export_dir / config.tokenizer, config.special_ids)

    def decode(row: np.ndarray) -> str:
        return tokenizer.decode(tokenizer.output_ids(row))

    providers = parity.ort_providers(providers)
    label = Path(label) if label is not None else export_dir
    log(f"validating {label} ({reference.meta['test_examples']} test sequences; "
        f"providers {', '.join(providers)})")
    rows = [parity.check_tokenizer(reference, tokenizer)]
    if not reference_only:
        rows += _tensorflow_rows(export_dir, config, reference, run, decode, log)
    onnx_rows, quality = _onnx_rows(export_dir, config, reference, providers, threads, decode, log)
    rows += onnx_rows
    extra = {"export": str(label), "test_sequences": reference.meta["test_examples"]}
    if quality:
        extra["quantization"] = quality
    report = parity.write_parity(export_dir / "parity.json", rows, extra)
    current = {parity.row_key(r) for r in rows}
    report["current_passed"] = all(r["passed"] for r in rows)
    if mark:
        mark_validated(export_dir, report["current_passed"])
    if verbose:
        print()
        print(parity.format_table(rows))
        if quality:
            q = quality
            print(f"\nint8 dynamic quantization, {q['metric']} on the test split ({q['sequences']}): "
                  f"keras fp32 {_fmt(q['keras_fp32'])}, onnxruntime fp32 {_fmt(q['onnxruntime_fp32'])}, "
                  f"onnxruntime int8 {_fmt(q['onnxruntime_int8'])}; int8 greedy identical to fp32 on "
                  f"{q['int8_identical_to_fp32']}/{q['sequences']}")
        older = [r for r in report["checks"] if parity.row_key(r) not in current]
        if older:
            print(f"(parity.json also keeps {len(older)} rows of earlier runs, e.g. other providers)")
        for line in parity.failures(rows):
            print(f"MISMATCH {line}", file=sys.stderr)
        verdict = "PASSED" if report["current_passed"] else "FAILED"
        print(f"\nparity {verdict}: tolerance atol {parity.ATOL:g}, rtol {parity.RTOL:g}; "
              f"differences against the Keras model's outputs; report in {label / 'parity.json'}")
    return report


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export.validate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="run directory (export in RUN/export) or export directory")
    parser.add_argument("--providers", nargs="+", default=None,
                        help="onnxruntime providers: cpu, cuda or full names (default: CPU, and CUDA "
                             "whenever onnxruntime offers it)")
    parser.add_argument("--reference-only", action="store_true",
                        help="check onnxruntime against reference.npz only; TensorFlow is not imported")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: auto)")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    args = build_parser().parse_args(argv)
    try:
        report = validate(args.run, args.providers, args.reference_only, args.threads)
    except ServingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from keras_nlp_week4.errors import UserError

        if isinstance(e, UserError):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise
    return 0 if report["current_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
