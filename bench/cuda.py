"""The CUDA rows: our runtime and the in-graph search on an NVIDIA GPU, on a machine without TensorFlow.

    python -m bench.cuda RUN [RUN ...] --out cuda.json [--rounds 3] [--tokens 32]

Each `RUN` is a directory holding `export/` (a float32 export; `make export`) and `test.tsv` (the run's
test split): a trained run, or a copy of its export and test split alone, which is what travels to a GPU
machine (`bench/gpu_check.sh`). Needs onnxruntime-gpu, numpy and sentencepiece, no TensorFlow.

Two tables, as in `bench.real_size`, for every run:
- generation, every path forced to `tokens` tokens (an EOS id no token has), greedy and beam 4 at
  batches 1 and 32: `serving.runtime.Runtime` with `serving.search`'s searches (what `python -m serving
  --provider cuda` runs) on CUDA, against the same runtime on the CPU with one thread and with all cores;
  a ratio is the median of per-round ratios, the engines taking turns within a round;
- the in-graph search (`beam_search.onnx`, the whole search in one `session.run`) against the runtime's
  numpy search, both on CUDA, on the first test lines (both stop at EOS: identical ids mean equal work).

CTranslate2 on CUDA is not among the engines: its PyPI wheels load CUDA 12's cuBLAS (`libcublas.so.12`),
and onnxruntime-gpu's current wheels CUDA 13's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.real_size import (
    NEVER,
    RealModel,
    _ours,
    _sources,
    run_in_graph_search,
    summarize,
    time_engines,
)

__all__ = ["export_stand_in", "main", "run_cuda_generation"]


def _model(run_dir: Path) -> RealModel:
    from serving.export_config import ExportConfig

    config = ExportConfig.read(run_dir / "export")
    return RealModel(run_dir.name, f"vocabulary {int(config.vocab_size):,}", run_dir, run_dir / "export",
                     run_dir, 0, int(config.vocab_size), False)


def run_cuda_generation(models: list[RealModel], tokens: int = 32, batches=(1, 32), beams=(1, 4),
                        rounds: int = 3, provider: str = "cuda", log=print) -> dict:
    """Tokens/s of the runtime on `provider` and on the CPU for every (size, method, batch), forced to
    `tokens` tokens, and the ratios `provider` / CPU (rows as `bench.real_size.run_generation`'s)."""
    rows = []
    mine = f"ours {provider}"
    pairs = ((mine, "ours cpu 1 thread"), (mine, "ours cpu all cores"))
    for model in models:
        engines = {mine: _ours(model.export_dir, 0, int8=False, provider=provider),
                   "ours cpu 1 thread": _ours(model.export_dir, 1, int8=False),
                   "ours cpu all cores": _ours(model.export_dir, 0, int8=False)}
        for beam in beams:
            for batch in batches:
                runs, calls = time_engines(engines, _sources(model.vocab_size, batch), tokens, beam, rounds,
                                           settle=True)
                row = {"size": model.name, "method": "greedy" if beam == 1 else f"beam {beam}", "batch": batch,
                       "calls_per_sample": calls}
                row["engines"], row["ratios"] = summarize(runs, batch * tokens, pairs)
                rows.append(row)
                log(f"{provider} {model.name:<10} {row['method']:<7} batch {batch:>2}: "
                    + ", ".join(f"{k} {v['tokens_per_s']:.0f}" for k, v in row["engines"].items()) + " tok/s")
    return {"tokens": tokens, "eos": NEVER, "rounds": rounds, "provider": provider, "rows": rows}


def export_stand_in(base_run: Path, destination: Path, multi30k: Path = Path("../shared/data/multi30k"),
                    test_examples: int = 256) -> Path:
    """A random model of the Multi30k Transformer's shape (`bench.real_size`'s stand-in) exported with the
    graphs the runtime runs, its Keras reference on the first `test_examples` test lines, and checked here
    on the CPU: what travels to the GPU machine when no trained Multi30k run is at hand (needs
    TensorFlow; the trained run's export is `make export RUN=artifacts/compare-multi30k/transformer`)."""
    from bench.real_size import MULTI30K_SHAPE, _exported, _stand_in_run

    run_dir = _stand_in_run(Path(base_run), Path(destination), **MULTI30K_SHAPE, multi30k=Path(multi30k))
    _exported(run_dir, print, test_examples)
    return run_dir


def _machine() -> dict:
    """`bench.report.environment()`, the GPU, and the onnxruntime that runs (carried onnxruntime-gpu
    shadows the machine's own onnxruntime, whose package metadata `environment` would report)."""
    import onnxruntime as ort

    from bench.report import environment

    gpu = None
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {**environment(), "gpu": gpu, "onnxruntime": ort.__version__,
            "providers": ort.get_available_providers()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cuda", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="directories holding export/ and test.tsv")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON results go")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=64, help="test lines of the in-graph search rows")
    parser.add_argument("--provider", default="cuda",
                        help="the provider measured against the CPU (cpu: a smoke test of this script)")
    args = parser.parse_args(argv)
    from serving.errors import ServingError, first_line
    from serving.runtime import resolve_providers

    for run in args.runs:
        missing = [name for name in ("export/config.json", "test.tsv") if not (run / name).is_file()]
        if missing:
            print(f"error: {run} lacks {', '.join(missing)}; give a run directory (make export first)",
                  file=sys.stderr)
            return 2
    try:
        resolve_providers(args.provider)
        models = [_model(run) for run in args.runs]
        results = {"machine": _machine(), "generation": run_cuda_generation(
            models, args.tokens, rounds=args.rounds, provider=args.provider)}
        results["in_graph_search"] = run_in_graph_search(models, sentences=args.sentences, rounds=args.rounds,
                                                         provider=args.provider, threads=0)
    except ServingError as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
