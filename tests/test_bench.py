"""Smoke test of the benchmark pieces on tiny models: structure of the results, never timing values."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from bench.inference import patch_generate_eos, run_inference, time_call
from bench.report import render_markdown, write_report
from bench.rerun import GenerationModule
from bench.training import run_training
from keras_nlp_week4.models.transformer import Transformer
from keras_nlp_week4.runs import RunConfig

# Two families and the RNN pair keep the test quick; the keras-hub peer is optional.
TEST_MODELS = ("ours transformer", "keras MHA transformer", "ours rnn (lstm, no attention)",
               "ours rnn (lstm, luong attention)")


@pytest.mark.large
def test_training_bench_reports_every_model_and_the_ratios():
    results = run_training([("t", "tiny", 2, 6, 5)], rounds=2, steps=1, warmup=1, vocab_size=16,
                           log=lambda _: None, only=TEST_MODELS)
    entry = results[0]
    assert set(entry["models"]) == set(TEST_MODELS)
    for figures in entry["models"].values():
        assert figures["tokens_per_s"] > 0 and len(figures["runs"]) == 2 and figures["parameters"] > 0
    assert set(entry["ratios"]) == {"ours transformer / keras MHA transformer",
                                    "ours rnn (lstm, luong attention) / ours rnn (lstm, no attention)"}


@pytest.mark.large
def test_training_bench_takes_the_models_per_preset():
    # `--quick` names the models of each configuration by its preset
    results = run_training([("t", "tiny", 2, 6, 5)], rounds=1, steps=1, warmup=1, vocab_size=16,
                           log=lambda _: None, only={"tiny": TEST_MODELS[2:], "compact": TEST_MODELS[:1]})
    assert set(results[0]["models"]) == set(TEST_MODELS[2:])
    assert set(results[0]["ratios"]) == {"ours rnn (lstm, luong attention) / ours rnn (lstm, no attention)"}


def test_rerun_and_cached_loops_generate_the_same_tokens():
    model = Transformer(source_vocab_size=20, d_model=16, num_heads=2, num_encoder_layers=1,
                        num_decoder_layers=1, d_ff=32, dropout=0.0)
    source = np.array([[5, 6, 7, 3], [8, 9, 3, 0]], np.int32)
    model((source, source))
    module = GenerationModule(model, bos_id=2, pad_id=0)
    rerun = module.generate_rerun(source, np.int32(7)).numpy()
    cached = module.generate_cached(source, np.int32(7)).numpy()
    assert rerun.shape == (2, 7)
    np.testing.assert_array_equal(rerun, cached)


def _equal_graph(path, eos: int) -> None:
    token = helper.make_tensor_value_info("token", TensorProto.INT32, [None])
    out = helper.make_tensor_value_info("is_eos", TensorProto.BOOL, [None])
    eos_const = helper.make_tensor("eos", TensorProto.INT32, [], [eos])
    graph = helper.make_graph([helper.make_node("Equal", ["token", "eos"], ["is_eos"])], "g", [token], [out],
                              [eos_const])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def test_patch_generate_eos_disables_the_eos_test(tmp_path):
    _equal_graph(tmp_path / "g.onnx", eos=3)
    assert patch_generate_eos(tmp_path / "g.onnx", tmp_path / "p.onnx", eos_id=3) == 1
    tokens = np.array([3, 1, 3], np.int32)
    before = ort.InferenceSession(str(tmp_path / "g.onnx")).run(None, {"token": tokens})[0]
    after = ort.InferenceSession(str(tmp_path / "p.onnx")).run(None, {"token": tokens})[0]
    assert before.tolist() == [True, False, True] and not after.any()


def test_inference_bench_and_report_structure(tmp_path):
    median, runs = time_call(lambda: None, repeats=3)
    assert len(runs) == 3 and median >= 0

    def fake(source, n):  # stands in for a generation path: same tokens for everyone
        return np.full((source.shape[0], n), 5, np.int32)

    paths = {"savedmodel re-run": fake, "ort step+cache": fake}
    sources = {"short": np.ones((1, 3), np.int32), "long": np.ones((1, 9), np.int32)}
    inference = run_inference(paths, sources, tokens=4, lengths=(2, 4), repeats=2, log=lambda _: None)
    inference["source_tokens"] = {"short": 3, "long": 9}
    calls = []
    eager = run_inference({"keras eager": lambda source, n: calls.append(n) or fake(source, n),
                           "ort step+cache": fake}, sources, tokens=4, lengths=(2,), repeats=3,
                          eager_repeats=1, log=lambda _: None)
    # `--quick`'s eager rows: one timed call each, no warm-up (2 inputs x 2 batches), then the sweep's
    # 1 warm-up + 3 and the agreement check's 1 with `repeats`.
    assert [len(r["runs"]) for r in eager["latency"] if r["path"] == "keras eager"] == [1, 1, 1, 1]
    assert calls.count(4) == 4 + 1 and calls.count(2) == 4
    assert len(inference["latency"]) == 2 * 2 * 2 and len(inference["scaling"]) == 2 * 2
    assert all(inference["agreement"].values())
    # The report's headline compares these two at 32 tokens; the fake paths take ~0 ms.
    inference["latency"] = [{**row, "tokens": 32, "ms": 10.0 if row["path"] == "savedmodel re-run" else 1.0}
                            for row in inference["latency"]]
    training = [{
        "config": "t", "models": {"ours transformer": {"tokens_per_s": 10.0, "step_ms": 1.0, "parameters": 5},
                                  "keras MHA transformer": {"tokens_per_s": 8.0, "step_ms": 1.2,
                                                            "parameters": 5}},
        "ratios": {"ours transformer / keras MHA transformer": 1.25}}]
    server = [{"mode": "batching on", "concurrency": 1, "requests": 3, "errors": 0, "requests_per_s": 1.0,
               "p50_ms": 1.0, "p99_ms": 2.0}]
    results = {"command": "make bench QUICK=1", "quick": True, "date": "now", "seconds": 1.0,
               "environment": {"cpu": "x", "cpu_count": 2, "platform": "p", "python": "3", "load_average": [0],
                               "versions": {"keras": "3"}},
               "training": training, "inference": inference, "server": server}
    write_report(results, tmp_path / "B.md", tmp_path / "b.json", tmp_path / "p.png")
    written = json.loads((tmp_path / "b.json").read_text())
    assert {"training", "inference", "server", "environment", "headline"} <= set(written)
    assert set(inference["paired"]) == {"slow_ms", "fast_ms", "speedup", "pairs", "block", "speedup_range"}
    inference["paired"] = None  # the headline then comes from the (fixed) table figures
    write_report(results, tmp_path / "B.md", tmp_path / "b.json", tmp_path / "p.png")
    written = json.loads((tmp_path / "b.json").read_text())
    assert written["headline"] == {"rerun_ms": 10.0, "ort_cache_ms": 1.0, "speedup": 10.0, "target": 5.0,
                                   "holds": True, "method": "latency table"}
    assert (tmp_path / "p.png").stat().st_size > 1000
    markdown = (tmp_path / "B.md").read_text()
    for section in ("## Training throughput", "## Greedy generation latency", "### Cost against output length",
                    "## HTTP server", "make bench QUICK=1", "1.25"):
        assert section in markdown
    assert markdown == render_markdown(written) + "\n"


def test_keras_hub_target_counts_only_the_configurations_with_the_peer():
    def entry(config, ratios):
        models = {name: {"tokens_per_s": 10.0, "step_ms": 1.0, "parameters": 5}
                  for name in ["ours transformer", *(n for r in ratios for n in r.split(" / "))]}
        return {"config": config, "models": models, "ratios": ratios}

    hub = "ours transformer / keras-hub transformer"
    rnn = "ours rnn (lstm, luong attention) / ours rnn (lstm, no attention)"
    results = {"command": "make bench QUICK=1", "quick": True, "date": "now", "seconds": 1.0,
               "environment": {"cpu": "x", "cpu_count": 2, "platform": "p", "python": "3", "load_average": [0],
                               "versions": {}},
               "training": [entry("tiny", {rnn: 0.6}), entry("compact", {hub: 1.04})]}
    assert "Target ours/keras-hub >= 1.0: **holds** (1.04)." in render_markdown(results)
    results["training"][1]["ratios"][hub] = 0.97
    assert "**does not hold** (0.97)" in render_markdown(results)
    results["training"] = results["training"][:1]
    assert "no keras-hub peer" in render_markdown(results)


@pytest.mark.large
def test_real_size_generation_against_ctranslate2_and_its_report(tiny_run, tmp_path):
    pytest.importorskip("ctranslate2")
    from bench.real_size import RealModel, _ctranslate2_dir, run_generation
    from bench.report import real_size_targets

    ct2_dir = _ctranslate2_dir(tiny_run, tmp_path / "ct2")
    model = RealModel("multi30k", "tiny stand-in", tiny_run, tiny_run / "export", ct2_dir, 1,
                      RunConfig.read(tiny_run).vocab_size, True)
    real = run_generation([model], tmp_path, tokens=3, batches=(1, 2), beams=(1, 2), threads=(1,), rounds=2,
                          with_savedmodel=False, log=lambda _: None)
    assert len(real["rows"]) == 4
    for row in real["rows"]:
        assert set(row["engines"]) == {"ours fp32", "ours int8", "ct2 fp32", "ct2 int8"}
        assert all(len(e["runs_ms"]) == 2 and e["tokens_per_s"] > 0 for e in row["engines"].values())
        # 3 tokens of the tiny model take milliseconds: each sample repeats the call to fill about 0.25 s.
        assert row["calls_per_sample"] > 1
        assert set(row["ratios"]) == {"ours fp32 / ct2 fp32", "ours int8 / ct2 int8", "ours int8 / ours fp32",
                                      "ct2 int8 / ct2 fp32"}  # no SavedModel here
        for pair, ratio in row["ratios"].items():
            # The report's ratio is the peer's time over ours, round by round: recomputed here from the
            # times it lists (rounded to 0.01 ms, hence the tolerance), so a swapped or unpaired ratio fails.
            mine, peer = pair.split(" / ")
            per_round = np.array(row["engines"][peer]["runs_ms"]) / np.array(row["engines"][mine]["runs_ms"])
            assert ratio["median"] == pytest.approx(np.median(per_round), rel=0.05)
            assert ratio["range"] == pytest.approx([per_round.min(), per_round.max()], rel=0.05)
    # The batch-1 greedy target is judged from its row; beam 4 / base rows were not measured here.
    verdicts = real_size_targets(real)
    assert [(v["ratio"], v["method"], v["batch"]) for v in verdicts] == [
        ("ours fp32 / ct2 fp32", "greedy", 1), ("ours int8 / ct2 int8", "greedy", 1)]
    assert [v["target"] for v in verdicts] == [1.2, 1.0]
    assert all(v["holds"] == (v["value"] >= v["target"]) for v in verdicts)
    results = {"command": "make bench", "quick": False, "date": "now", "seconds": 1.0,
               "environment": {"cpu": "x", "cpu_count": 2, "platform": "p", "python": "3",
                               "load_average": [0], "versions": {}},
               "real_size": real, "pipeline": {"skipped": "no Multi30k folder"}}
    markdown = render_markdown(results)
    assert "## Real size: generation against CTranslate2" in markdown and "no Multi30k folder" in markdown



def test_the_cuda_rows_script_end_to_end_on_the_cpu(tiny_run, tmp_path, monkeypatch):
    """`python -m bench.cuda`, which the GPU machine runs without TensorFlow: here with `--provider cpu`
    in the GPU's place, on a copy holding only the export and the test split, as travels there."""
    from helpers import copy_export

    from bench import cuda, real_size

    # The rows' layout is under test, not their timing: samples of one call, no settling pauses.
    monkeypatch.setattr(real_size, "SAMPLE_SECONDS", 0.0)
    monkeypatch.setattr(real_size, "SETTLE_SECONDS", 0.0)
    run = tmp_path / "gpu" / "tiny"
    copy_export(tiny_run / "export", run)
    shutil.copy(tiny_run / "test.tsv", run / "test.tsv")
    monkeypatch.setattr(cuda, "_machine", lambda: {"gpu": None})
    out = tmp_path / "cuda.json"
    assert cuda.main([str(run), "--out", str(out), "--provider", "cpu", "--rounds", "2", "--tokens", "3",
                      "--sentences", "4"]) == 0
    results = json.loads(out.read_text())
    rows = results["generation"]["rows"]
    assert [(r["method"], r["batch"]) for r in rows] == [("greedy", 1), ("greedy", 32), ("beam 4", 1),
                                                         ("beam 4", 32)]
    for row in rows:
        assert set(row["engines"]) == {"ours cpu", "ours cpu 1 thread", "ours cpu all cores"}
        assert all(len(e["runs_ms"]) == 2 for e in row["engines"].values())
        assert set(row["ratios"]) == {"ours cpu / ours cpu 1 thread", "ours cpu / ours cpu all cores"}
    search = results["in_graph_search"]
    assert search["provider"] == "cpu" and len(search["rows"]) == 4
    assert all(r["identical"] == 4 for r in search["rows"])  # the in-graph search returns the runtime's ids
    # A folder without its export is refused before anything runs, and nothing is written.
    (tmp_path / "empty").mkdir()
    assert cuda.main([str(tmp_path / "empty"), "--out", str(tmp_path / "no.json"), "--provider", "cpu"]) == 2
    assert not (tmp_path / "no.json").exists()


def test_the_gpu_payload_packs_into_parts_that_reassemble(tiny_run, tmp_path):
    """`bench/gpu_check.sh pack`: the exports (and onnxruntime-gpu, a stand-in file here) in parts below a
    device call's limit, which put back together match the sha256 the last call checks and unpack to
    artifacts/gpu/<run>/; a run without its export is refused before anything is written."""
    from helpers import ROOT

    work = tmp_path / "repo"
    (work / "bench").mkdir(parents=True)
    shutil.copy(ROOT / "bench" / "gpu_check.sh", work / "bench" / "gpu_check.sh")
    (tmp_path / "empty").mkdir()
    refused = subprocess.run(["bash", "bench/gpu_check.sh", "pack", str(tmp_path / "empty")], cwd=work,
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "has no export/config.json" in refused.stderr
    assert not (work / ".gpu").exists()
    (work / ".gpu").mkdir()
    (work / ".gpu" / "ort.tar.xz").write_bytes(b"onnxruntime-gpu stand-in")  # skips the 255 MB download
    size = sum(f.stat().st_size for f in (tiny_run / "export").rglob("*") if f.is_file())
    packed = subprocess.run(["bash", "bench/gpu_check.sh", "pack", str(tiny_run)], cwd=work, capture_output=True,
                            text=True, env={**os.environ, "PART_BYTES": str(size // 3)})
    assert packed.returncode == 0, packed.stderr
    parts = sorted((work / ".gpu").glob("payload.part*"))
    assert len(parts) >= 3 and all(p.stat().st_size <= size // 3 for p in parts)
    payload = b"".join(p.read_bytes() for p in parts)
    digest, name = (work / ".gpu" / "payload.sha256").read_text().split()
    assert digest == hashlib.sha256(payload).hexdigest() and name == "/tmp/payload.tar"
    (tmp_path / "payload.tar").write_bytes(payload)
    with tarfile.open(tmp_path / "payload.tar") as tar:
        names = set(tar.getnames())
    assert {"ort.tar.xz", "artifacts/gpu/run/test.tsv", "artifacts/gpu/run/export/config.json",
            "artifacts/gpu/run/export/manifest.json"} <= names

@pytest.mark.large
def test_the_random_stand_in_goes_through_every_real_size_step(tiny_run, tmp_path):
    """What `make bench QUICK=1` does without a trained Multi30k run, at a tiny size: the stand-in gets a
    tokenizer with as many pieces as its vocabulary (the server's warm-up used to decode ids beyond a
    borrowed one), exports and validates in format 2, converts to CTranslate2, generates, and serves."""
    pytest.importorskip("ctranslate2")
    from helpers import SHARED

    if not (SHARED / "multi30k" / "train.de").is_file():
        pytest.skip("needs ../shared/data/multi30k for the stand-in's tokenizer")
    from bench.real_size import STAND_IN_GRAPHS, prepare_models, run_generation, run_in_graph_search
    from bench.server import run_server
    from serving.export_config import ExportConfig

    models = prepare_models(tiny_run, tmp_path, real_run=None, log=lambda _: None, names=("multi30k",),
                            stand_in_shape={"preset": "tiny", "vocab_size": 600})
    (model,) = models
    assert not model.trained and model.vocab_size == 600
    config = ExportConfig.read(model.run_dir / "export")
    assert config.vocab_size == 600 and config.in_place_updates  # the hand-written step
    # Only what the benchmark runs: no `generate` loop, no SavedModel.
    assert set(config.graph_names) == set(STAND_IN_GRAPHS) and config.saved_model is None
    real = run_generation(models, tmp_path, tokens=3, batches=(1, 2), beams=(1, 2), threads=(1,), rounds=1,
                          with_savedmodel=False, log=lambda _: None)
    assert len(real["rows"]) == 4 and all(e["tokens_per_s"] > 0 for r in real["rows"]
                                          for e in r["engines"].values())
    # The in-graph search against the runtime's: the same outputs on every row.
    search = run_in_graph_search(models, batches=(1, 2), sentences=4, rounds=1, log=lambda _: None)
    assert len(search["rows"]) == 4 and all(r["identical"] == 4 and r["in_graph_ms"] > 0 for r in search["rows"])
    rows = run_server(str(model.run_dir / "export"), (1,), 4, 10.0, warmup=2, log=lambda _: None)
    assert rows and all(r["errors"] == 0 and r["requests"] == 4 for r in rows)


def test_the_benchmark_refuses_a_real_size_part_it_cannot_run_before_running_anything(tmp_path, capsys):
    """No trained Multi30k export and no Multi30k text for the stand-in's tokenizer: one line, exit 2,
    nothing written (the other parts would otherwise run for minutes first)."""
    from bench.__main__ import main

    out = tmp_path / "out"
    code = main(["--quick", "--out-dir", str(out), "--real-run", str(tmp_path / "no-run"),
                 "--multi30k", str(tmp_path / "no-data"), "--skip", "training"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: the real-size part needs") and err.count("\n") == 1
    assert "--skip real-size" in err and not out.exists()


def test_a_cell_of_short_calls_takes_the_short_rounds_and_a_long_one_does_not():
    """`time_engines`: where every sample repeats a short call, `short_rounds` samples per engine, the
    engines still taking turns; a cell whose call outlasts a sample keeps `rounds`."""
    from bench.real_size import SAMPLE_SECONDS, time_engines

    order = []

    def engine(name, seconds):
        def call(source, tokens, beam):
            order.append(name)
            time.sleep(seconds)
        return call

    short = {"a": engine("a", 0.001), "b": engine("b", 0.001)}
    runs, calls = time_engines(short, np.zeros((1, 3), np.int32), 4, 1, rounds=2, short_rounds=5)
    assert calls > 1 and [len(runs[name]) for name in short] == [5, 5]
    assert order[4:4 + calls] == ["a"] * calls and order[4 + calls:4 + 2 * calls] == ["b"] * calls
    long = {"a": engine("a", SAMPLE_SECONDS * 1.2)}
    runs, calls = time_engines(long, np.zeros((1, 3), np.int32), 4, 1, rounds=2, short_rounds=5)
    assert calls == 1 and len(runs["a"]) == 2
