"""`python -m bench [--quick]` (`make bench [QUICK=1]`): training, inference and server benchmarks.

Writes BENCHMARKS.md (repo root), docs/benchmarks.json and docs/bench_output_length.png by default;
`--out-dir DIR` puts all three in DIR instead (what `make bench QUICK=1` does: artifacts/bench-quick/).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Sizes of the full and the quick run. The quick one's benchmark took 581 s on a 2-core AVX-512 Xeon on
# 2026-12-02 (before the quick cuts below: with its SavedModel rows skipped, nothing else), over its
# 5-minute target, from the per-line seconds of its log: training 249 s (a Transformer's build and 3
# warm-up steps 13-17 s at vocabulary 64, 23-29 s at 8,000; the timed steps 21 s and 49 s), inference 73 s
# (48 s of it 16 eager Keras calls of 3 s), server 4 s, real-size 139 s (the stand-in's export 90 s, rows
# 26 s, in-graph search 12 s, server 7 s), the real pipeline 115 s (build + 10 warm-up batches 38 s, 30
# timed batches 70 s). The cuts (eager_repeats, training_warmup, training_models, pipeline_steps 12)
# brought it to 397 s in a second run (training 190 s, inference 40 s, server 4 s, real-size 49 s with
# the stand-in's export cached from the first run, pipeline 114 s), about 490 s from a fresh clone. Since
# then the stand-in exports only the graphs the benchmark runs (`bench.real_size.STAND_IN_GRAPHS`; its
# `generate` conversion was 20 of 48 s), and the pipeline part has fewer warm-up and probe steps: its
# 70 s were the timed batches plus the `train_on_batch` probe, not retracing (a probe of the recipe's
# dataset saw every batch after the first take 0.5-1.4 s, a second `fit` of 12 batches 9.6 s). Re-measured
# from a fresh clone after `make train` (2-core Xeon, AVX-512, L3 480 MiB): `make bench QUICK=1` 262 s wall,
# the dates export 31 s, the benchmark 215 s (training 78 s, inference 27 s, server 3 s, real-size 60 s
# with the stand-in's export and int8 graphs 22 s, pipeline 47 s).
# On a 2-core Zen 4 EPYC (AVX-512, 32 MiB L3; 2026-12-03) the quick benchmark took 345 s from a fresh
# clone; with the cuts since (keras-hub only at the Multi30k size, 6 timed pipeline batches after 3
# warm-up and 2 probe steps, 16 in-graph search sentences, 20 real-size server requests) 261 s there
# (training 95 s, inference 37 s, server 4 s, real-size 71 s with the stand-in's export 35 s, pipeline
# 58 s), `make bench QUICK=1` 4 min 39 s with the dates model already trained. 2 training rounds
# instead of 3 were tried and dropped: the first round still runs slow, and a median of 2 is their mean.
# On a 2-core AVX2 EPYC (2026-12-04) the same quick benchmark took 371 s from a fresh clone (training
# 142 s, 126 of it the Multi30k-size pair: each build and warm-up 35 s, the timed steps 56 s; inference
# 39 s, server 5 s, real-size 87 s with the stand-in's export 35 s, pipeline 73 s), so the quick run now
# trains the tiny configuration alone, keras-hub's peer included: the Multi30k-size model and its
# 8,000-piece vocabulary are still trained, in the pipeline part, and the full run keeps the pair. That
# gave 5 min 1 s for `make bench QUICK=1` there (285 s the benchmark: training 65 s, inference 39 s,
# server 5 s, real-size 85 s, pipeline 91 s), so the quick run also leaves out the RNN pair (14 s) and
# times 4 pipeline batches and 8 in-graph search sentences: 4 min 39 s from a fresh clone with the dates
# export made (264 s the benchmark: training 51 s, inference 38 s, server 5 s, real-size 82 s, pipeline
# 87 s, of which the model's build and 3 warm-up batches 51 s).
# The full one's real-size part alone took 24 min on the noisy 2-core EPYC of 2026-12-02, whose ratios
# near 1.0 needed 5 rounds. On the AVX2 EPYC of 2026-12-04 one-thread batch-1 samples of the same engine
# ranged 40-77 ms within a run, and two runs of the command an hour apart read 1.32 and 0.97 on the same
# row: cells of short calls (batch 1) take 15 rounds, about 2-3 min more in all.
# `real_*`: the real-size part (`bench.real_size`, `bench.pipeline`).
SETTINGS = {
    "full": dict(rounds=9, steps=10, repeats=5, lengths=(16, 32, 64, 128, 256), requests=300,
                 max_seconds=20.0, concurrencies=(1, 8, 32), real_sizes=("multi30k", "base"),
                 real_threads=(1, 2), real_rounds=5, real_short_rounds=15, real_requests=200,
                 pipeline_steps=None,
                 pipeline_warmup=10, pipeline_probe_steps=10, search_sentences=64, real_savedmodel=True,
                 eager_repeats=None, training_warmup=3, training_models=None),
    "quick": dict(rounds=3, steps=4, repeats=3, lengths=(16, 32, 64), requests=40, max_seconds=6.0,
                  concurrencies=(1, 8, 32), real_sizes=("multi30k",), real_threads=(1,), real_rounds=2,
                  real_short_rounds=None,
                  real_requests=20, pipeline_steps=4, search_sentences=8,
                  # 3 warm-up batches: the step is traced for its first shape, then once more with the
                  # lengths relaxed (`reduce_retracing`), which every later bucket shape reuses
                  pipeline_warmup=3, pipeline_probe_steps=2,
                  # the SavedModel's generation loop is traced and saved only for its 2 greedy rows
                  real_savedmodel=False,
                  # one eager call per latency row (3 s each); 2 warm-up steps (the first traces); the
                  # tiny configuration alone (`TRAINING_CONFIGS["quick"]`): ours and keras-hub's
                  # Transformers (the peer the targets name), not keras.layers.MultiHeadAttention's nor
                  # the RNN pair
                  eager_repeats=1, training_warmup=2,
                  training_models={"tiny": ("ours transformer", "keras-hub transformer")}),
}
SCALING_PATHS = ("savedmodel re-run", "savedmodel cache", "ort step+cache", "ort loop")


_STARTED = time.perf_counter()


def log(message: str) -> None:
    # Every line with the seconds since start: where the time of a run goes, read from its log.
    print(f"[{time.perf_counter() - _STARTED:5.0f} s] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("artifacts/dates-transformer"),
                        help="trained run with an export/ (default: artifacts/dates-transformer)")
    parser.add_argument("--quick", action="store_true", help="a short version (about 4.5 minutes on a 2-core machine)")
    parser.add_argument("--out-dir", type=Path, help="write all outputs here (default: repo root + docs/)")
    parser.add_argument("--work", type=Path, default=Path("artifacts/bench-work"),
                        help="scratch: the benchmark SavedModel, int8 and patched graphs")
    parser.add_argument("--skip", action="append", default=[],
                        choices=("training", "inference", "server", "real-size", "pipeline"))
    parser.add_argument("--real-run", type=Path, default=Path("artifacts/compare-multi30k/transformer"),
                        help="the trained Multi30k Transformer for the real-size part (when it has no "
                             "export/, a model of its shape with random weights stands in)")
    parser.add_argument("--multi30k", type=Path, default=Path("../shared/data/multi30k"),
                        help="Multi30k folder for the real-pipeline training throughput")
    args = parser.parse_args(argv)
    from keras_nlp_week4.quiet import import_tensorflow_quietly

    # Quiet start-up, and no retracing notices: the benchmark traces on purpose (shapes vary by row).
    import_tensorflow_quietly()
    if "real-size" not in args.skip:  # before anything runs, not after the first parts
        from bench.real_size import stand_in_problem

        problem = stand_in_problem(args.real_run, args.multi30k)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    if "inference" not in args.skip or "server" not in args.skip:
        if not (args.run / "export" / "config.json").is_file():
            print(f"error: {args.run}/export is missing; train and export a run first "
                  f"(python -m export {args.run})", file=sys.stderr)
            return 2
    if args.out_dir:
        markdown, json_path, plot = (args.out_dir / "BENCHMARKS.md", args.out_dir / "benchmarks.json",
                                     args.out_dir / "bench_output_length.png")
    else:
        markdown, json_path, plot = (Path("BENCHMARKS.md"), Path("docs/benchmarks.json"),
                                     Path("docs/bench_output_length.png"))
    mode = "quick" if args.quick else "full"
    s = SETTINGS[mode]
    from bench.report import environment, write_report

    started = time.perf_counter()
    results: dict = {"command": "make bench" + (" QUICK=1" if args.quick else ""), "quick": args.quick,
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "run": str(args.run),
                     "environment": environment(), "settings": {k: list(v) if isinstance(v, tuple) else v
                                                                for k, v in s.items()}}
    if "training" not in args.skip:
        from bench.training import TRAINING_CONFIGS, keras_hub_available, run_training

        only = s["training_models"]
        if only is not None and not keras_hub_available():  # then the other peer, so a ratio remains
            only = {preset: (*names, "keras MHA transformer") if "keras-hub transformer" in names else names
                    for preset, names in only.items()}
        results["training"] = run_training(TRAINING_CONFIGS[mode], rounds=s["rounds"], steps=s["steps"],
                                           warmup=s["training_warmup"], only=only, log=log)
        log("training done")
    if "inference" not in args.skip:
        from bench.inference import build_paths, run_inference

        paths, info = build_paths(args.run, args.work)
        results["inference"] = run_inference(paths, info["sources"], lengths=s["lengths"],
                                             scaling_paths=SCALING_PATHS, repeats=s["repeats"],
                                             eager_repeats=s["eager_repeats"], log=log)
        results["inference"]["source_tokens"] = {k: int(v.shape[1]) for k, v in info["sources"].items()}
        del paths
        log("inference done")
    if "server" not in args.skip:
        from bench.server import run_server

        results["server"] = run_server(str(args.run / "export"), s["concurrencies"], s["requests"],
                                       s["max_seconds"], log=log)
        log("server done")
    if "real-size" not in args.skip:
        from bench.real_size import prepare_models, run_generation, run_in_graph_search
        from bench.server import run_server

        models = prepare_models(args.run, args.work / "real-size", args.real_run, log=log, multi30k=args.multi30k,
                                names=s["real_sizes"])
        real = run_generation(models, args.work / "real-size", threads=s["real_threads"],
                              rounds=s["real_rounds"], with_savedmodel=s["real_savedmodel"], log=log,
                              short_rounds=s["real_short_rounds"])
        real["in_graph_search"] = run_in_graph_search(models, sentences=s["search_sentences"],
                                                      rounds=s["real_rounds"], log=log)
        multi30k = models[0]
        real["server"] = {"model": multi30k.name, "trained": multi30k.trained,
                          # The run's own validated export: `export_dir` may be the benchmark's int8 copy,
                          # whose rewritten config.json no longer matches the manifest the server checks.
                          "rows": run_server(str(multi30k.run_dir / "export"), s["concurrencies"],
                                             s["real_requests"],
                                             s["max_seconds"], log=log)}
        results["real_size"] = real
        log("real-size generation and server done")
    if "pipeline" not in args.skip:
        from bench.pipeline import run_pipeline_throughput

        results["pipeline"] = run_pipeline_throughput(args.multi30k, steps=s["pipeline_steps"],
                                                       warmup=s["pipeline_warmup"],
                                                       probe_steps=s["pipeline_probe_steps"], log=log)
        log("real-pipeline training done")
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["environment"]["load_average_end"] = list(os.getloadavg())
    write_report(results, markdown, json_path, plot)
    log(f"wrote {markdown}, {json_path}" + (f", {plot}" if results.get("plot") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
