"""`export_run`: a trained run -> `RUN/export/` (SavedModel, ONNX graphs, reference, config, manifest).

The export is built in a staging directory next to it (`RUN/.export-staging-<pid>`), validated there, and
only then moved into place: the old export is renamed away, the staged one renamed to `export`, the old
one deleted. Every step is a rename within one directory, so a crash leaves either the old export, the
new one, or no `export/` at all (with the old one still beside it as `.export-old-<pid>`, restored by the
next run) -- never a half-written directory under the name `export`. `manifest.json` is written last
inside the staging directory, so even a staging directory is never complete-looking before its files
are, and it says `"validated": false` until validation has passed, so the runtime refuses a staging
directory that a killed export left behind (and an export made with `--no-validate` until
`python -m export.validate` passes on it). An export that fails validation is kept as
`RUN/export.failed/` for inspection and not installed.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Collection
from pathlib import Path

from export.config import COMPOSED_GRAPHS, GRAPH_FILES, OPSET, build_export_config
from export.manifest import write_manifest
from keras_nlp_week4.errors import UserError
from serving.export_config import SERVED_GRAPHS

__all__ = ["ExportFailed", "export_run"]

STAGING_PREFIX = ".export-staging-"
OLD_PREFIX = ".export-old-"


class ExportFailed(UserError):
    """The export was written but failed parity validation."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _recover(run_dir: Path) -> None:
    """Removes what an interrupted export left behind; restores an export lost between two renames."""
    for path in sorted(run_dir.glob(f"{STAGING_PREFIX}*")) + sorted(run_dir.glob(f"{OLD_PREFIX}*")):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and _alive(int(pid)) and int(pid) != os.getpid():
            continue  # another export of this run is running right now
        if path.name.startswith(OLD_PREFIX) and not (run_dir / "export").exists() \
                and (path / "manifest.json").is_file():
            path.rename(run_dir / "export")
            continue
        shutil.rmtree(path, ignore_errors=True)


def _install(staging: Path, final: Path) -> None:
    old = final.with_name(f"{OLD_PREFIX}{os.getpid()}")
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(final.with_name("export.failed"), ignore_errors=True)  # superseded


def _checked_graph_names(graphs: Collection[str] | None) -> frozenset[str]:
    """`graphs` (default: every graph) as a set that stands on its own, or a ValueError saying why not."""
    if graphs is None:
        return frozenset(GRAPH_FILES)
    names = frozenset(graphs)
    unknown = sorted(names - set(GRAPH_FILES))
    if unknown:
        raise ValueError(f"unknown graphs {', '.join(unknown)}; the export's graphs are {', '.join(GRAPH_FILES)}")
    # A composed graph needs what it is composed with; compose_search writes its two graphs together.
    needs = {"beam_search": ("decoder_step_top_k",), "decoder_step_top_k": ("beam_search",),
             "generate_text": ("beam_search",)}
    missing = sorted(set(SERVED_GRAPHS) - names) + sorted(
        {need for name in names for need in needs.get(name, ())} - names)
    if missing:
        raise ValueError(f"an export of {', '.join(sorted(names))} also needs {', '.join(missing)} (the runtime "
                         f"serves {' and '.join(SERVED_GRAPHS)}; beam_search and decoder_step_top_k are composed "
                         "together, generate_text around beam_search)")
    return names


def export_run(run_dir: Path, quantize: bool = False, validate: bool = True,
               max_test_examples: int | None = None, providers: list[str] | None = None,
               threads: int = 0, verbose: bool = True, graphs: Collection[str] | None = None,
               saved_model: bool = True, fused_attention: bool = False) -> Path:
    """Exports the run at `run_dir` into `run_dir/export` and validates it.

    Args:
        run_dir: a trained run (`keras_nlp_week4.runs`).
        quantize: also write dynamic-int8 graphs (`onnx/int8/`) and report their test-split quality.
        validate: run `export.validate` on the staged export before installing it.
        max_test_examples: use only the first N test sequences for the greedy reference (default all).
        providers: onnxruntime providers for validation (default CPU, plus CUDA when offered).
        threads: onnxruntime intra-op threads for validation (0: auto).
        graphs: the graphs to write (names in `export.config.GRAPH_FILES`; default all). An export for
            the serving runtime alone needs `encoder` and `decoder_step`; `beam_search` and
            `decoder_step_top_k` are composed together from them, `generate_text` from `beam_search`.
            The benchmark's random stand-in leaves out `generate`, the slowest graph to convert.
        saved_model: also write the SavedModel (`saved_model/`).
        fused_attention: a Transformer's decoder step with onnxruntime's fused decoding self-attention
            (`export.transformer_step`: 93 nodes for the Multi30k model against 126; config.json's
            `operators` is then "onnxruntime"), for onnxruntime 1.32 or newer only: 1.30, the newest
            onnxruntime-node and onnxruntime-web, computes its first position wrongly (native) or hangs
            (WebAssembly). By default every graph has standard ONNX operators only, and runs anywhere.

    Returns:
        The export directory.

    Raises:
        UserError: for a missing or damaged run; `ExportFailed` when validation finds a mismatch.
        ValueError: for a set of `graphs` that cannot stand on its own.
    """
    from export import onnx_export, reference
    from export import saved_model as export_saved_model
    from export.functions import GraphFunctions, describe_model
    from export.search_graph import compose_search
    from export.text_graph import write_generate_text
    from export.transformer_step import in_place_updates, step_positions, supports
    from keras_nlp_week4.runs import load_run

    def log(message: str) -> None:
        if verbose:
            print(message, flush=True)

    written = _checked_graph_names(graphs)
    run_dir = Path(run_dir)
    started = time.perf_counter()
    run = load_run(run_dir, compile=False)
    _recover(run_dir)
    staging = run_dir / f"{STAGING_PREFIX}{os.getpid()}"
    staging.mkdir()
    try:
        state, described = describe_model(run.model)
        # The SavedModel always has every computation; the ONNX graphs and config.json only `written`.
        functions = GraphFunctions(run.model, described, run.config.special_ids)
        graphs = {name: graph for name, graph in described.items() if name in written}
        shutil.copyfile(run.tokenizer.model_path, staging / "tokenizer.model")
        # A Transformer's encoder and step are written from its weights, for speed
        # (export.transformer_encoder, export.transformer_step).
        step_by_hand = supports(run.model) is None
        fused = step_by_hand and fused_attention
        if fused_attention and not fused:
            log(f"--fused-attention ignored: {supports(run.model)}; the step is converted with standard operators")
        for name in GRAPH_FILES:
            if name in COMPOSED_GRAPHS or name not in graphs:
                continue  # composed from the converted graphs below, or left out
            if name == "encoder" and step_by_hand:
                log("writing encoder as ONNX from the weights (export.transformer_encoder)")
                onnx_export.write_transformer_encoder(run.model, graphs[name], staging / graphs[name]["file"],
                                                      step_positions(run.config.max_source_length))
                continue
            if name == "decoder_step" and step_by_hand:
                log("writing decoder_step as ONNX from the weights (export.transformer_step"
                    f"{', fused attention' if fused else ', standard operators'})")
                onnx_export.write_transformer_step(run.model, graphs[name], staging / graphs[name]["file"],
                                                   step_positions(run.config.max_target_length),
                                                   fused_attention=fused)
                continue
            log(f"converting {name} to ONNX (opset {OPSET})")
            onnx_export.convert_graph(functions, name, staging / graphs[name]["file"])
        if "beam_search" in graphs:
            log("composing beam_search from the encoder and decoder_step (export.search_graph)")
            compose_search(staging, graphs, state, run.config.special_ids)
        if "generate_text" in graphs:
            log("composing generate_text around beam_search (export.text_graph)")
            write_generate_text(staging, graphs, "tokenizer.model", run.config.special_ids,
                                run.config.max_source_length)
        if saved_model:
            log("writing the SavedModel")
            export_saved_model.save(functions, run.tokenizer, run.config.max_source_length,
                                    run.config.max_target_length, staging / "saved_model")
        log("computing the Keras reference outputs")
        meta = reference.build_reference(run, graphs, state, staging / "reference.npz", max_test_examples)
        quantized = None
        if quantize:
            from export.quantize import quantize_graphs

            log("quantizing (dynamic int8)")
            quantized = quantize_graphs(staging, graphs, state, run.config.special_ids)
        build_export_config(run.config, state, graphs, reference_cases=len(meta["cases"]),
                            test_examples=meta["test_examples"], quantized=quantized,
                            in_place_updates=in_place_updates(state) if step_by_hand else (),
                            operators="onnxruntime" if fused else "standard",
                            saved_model_graphs=described if saved_model else None).write(staging)
        write_manifest(staging)
        if validate:
            from export.validate import validate as run_validation

            report = run_validation(staging, providers=providers, threads=threads, run=run,
                                    verbose=verbose, label=run_dir / "export")
            if not report["current_passed"]:
                failed = run_dir / "export.failed"
                shutil.rmtree(failed, ignore_errors=True)
                staging.rename(failed)
                raise ExportFailed(f"the export does not compute what the Keras model computes (see the "
                                   f"mismatches above and {failed / 'parity.json'}); kept in {failed}, "
                                   f"{run_dir / 'export'} left unchanged")
        _install(staging, run_dir / "export")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"exported {run_dir / 'export'} in {time.perf_counter() - started:.0f} s")
    return run_dir / "export"
