"""Export of each model family to SavedModel + ONNX, and the parity validation that guards it.

One tiny run per family (1 epoch on 300 examples) is trained and exported once per session, lazily, and
shared by every test here; the Transformer's is the session's `tiny_run` (conftest.py), which the
serving tests share. The greedy reference covers the first 300 lines of the test split. Numbers
are also checked here directly against the Keras model on inputs the reference does not contain, so the
validator is not the only judge of itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import ROOT, TINY_RUN_TEST_EXAMPLES

from export import parity
from export.config import describe_graphs
from export.manifest import verify_manifest, write_manifest
from serving.errors import ExportError
from serving.export_config import ExportConfig
from serving.manifest import Manifest
from serving.options import DecodingOptions

# Transformer, RNN seq2seq, attention seq2seq (additive, and multiplicative with keys projected once).
MODELS = ("transformer", "seq2seq-gru", "bahdanau", "luong-general")
# The Transformer is exported in every `make test` (test_state_specs checks every model's state layout
# without exporting; the serving tests export a Transformer too); the RNN families in the large tier.
MODEL_PARAMS = [pytest.param(m, marks=() if m == "transformer" else pytest.mark.large) for m in MODELS]
# Their decoding state at the tiny preset, written out by hand from each design (not taken from
# `state_specs()`, which config.json is built from): (name, shape, dtype, source, updated).
_MASK = ("encoder_padding_mask", ["batch", "source_length"], "bool", "encode", False)
EXPECTED_STATE = {
    # 2 decoder layers, a key and a value entry each, 4 heads of 64 / 4 = 16; the source side once per
    # sentence for all its beams
    "transformer": [("encoder_padding_mask", ["source_batch", "source_length"], "bool", "encode", False),
                    *((f"cross_{kind}_{i}", ["source_batch", 4, "source_length", 16], "float32", "encode", False)
                      for i in range(2) for kind in ("key", "value")),
                    *((f"self_{kind}_{i}", ["batch", 4, "max_length", 16], "float32", "cache", True)
                      for i in range(2) for kind in ("key", "value"))],
    # one GRU layer of 64, h only; Cho et al.'s context fed to every step
    "seq2seq-gru": [("decoder_state", ["batch", 1, 1, 64], "float32", "encode", True),
                    ("context", ["batch", 64], "float32", "encode", False)],
    # a bidirectional GRU encoder: a decoder of 2 x 64, additive keys as wide
    "bahdanau": [("decoder_state", ["batch", 1, 1, 128], "float32", "encode", True),
                 ("encoder_outputs", ["batch", "source_length", 128], "float32", "encode", False), _MASK,
                 ("attention_keys", ["batch", "source_length", 128], "float32", "encode", False)],
    # one LSTM layer of 64, h and c; "general" maps the keys to the query's width
    "luong-general": [("decoder_state", ["batch", 1, 2, 64], "float32", "encode", True),
                      ("encoder_outputs", ["batch", "source_length", 64], "float32", "encode", False), _MASK,
                      ("attention_keys", ["batch", "source_length", 64], "float32", "encode", False)],
}


def _layout(entry: dict) -> tuple:
    return entry["name"], entry["shape"], entry["dtype"], entry["source"], entry["updated"]
TEST_EXAMPLES = TINY_RUN_TEST_EXAMPLES
_RUNS: dict[str, Path] = {}


@pytest.fixture(scope="session")
def export_of(tmp_path_factory, request):
    """`export_of(model)` -> a trained, exported run directory (built on first use)."""

    def build(model: str) -> Path:
        if model == "transformer":
            # Exporting a second tiny Transformer would cost make test 80 s and check nothing new.
            return request.getfixturevalue("tiny_run")
        if model not in _RUNS:
            from export.exporter import export_run
            from keras_nlp_week4.training.trainer import TrainConfig, train

            out = tmp_path_factory.mktemp("export") / model
            run_dir = train(TrainConfig(model=model, preset="tiny", epochs=1, max_train_examples=300,
                                        verbose=0, out=str(out)))
            export_run(run_dir, max_test_examples=TEST_EXAMPLES, threads=1, verbose=False)
            _RUNS[model] = Path(run_dir)
        return _RUNS[model]

    return build


@pytest.fixture(scope="session")
def keras_run():
    from keras_nlp_week4.runs import load_run

    cache = {}

    def load(run_dir: Path):
        if run_dir not in cache:
            cache[run_dir] = load_run(run_dir, compile=False)
        return cache[run_dir]

    return load


def _config(run_dir: Path) -> ExportConfig:
    return ExportConfig.read(run_dir / "export")


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _copy_export(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "export"
    shutil.copytree(run_dir / "export", target)
    return target


# ------------------------------------------------------------------------------------ files and config
@pytest.mark.parametrize("model", MODEL_PARAMS)
def test_export_layout_config_and_manifest(export_of, keras_run, model):
    run_dir = export_of(model)
    export = run_dir / "export"
    run = keras_run(run_dir)
    config = _config(run_dir)
    assert config.format_version == 2 and config.opset <= 18
    assert config.model == model and config.family == run.config.family
    assert config.special_ids == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    for key in ("max_source_length", "max_target_length", "vocab_size"):
        assert getattr(config, key) == getattr(run.config, key)
    assert [_layout(entry) for entry in config.state] == EXPECTED_STATE[model]
    assert all(entry["description"] for entry in config.state)
    assert set(config.cache_layout) >= {entry["name"] for entry in config.state}

    state = config.state
    graphs = config.graphs
    assert [i["name"] for i in graphs["encoder"]["inputs"]] == ["encoder_input"]
    assert [o["name"] for o in graphs["encoder"]["outputs"]] == [s["name"] for s in state
                                                                 if s["source"] == "encode"]
    assert [i["name"] for i in graphs["decoder_step"]["inputs"]] == \
        ["token_ids", "index", *(s["name"] for s in state)]
    expected_outputs = ["logits", *(["attention"] if run.model.has_attention else []),
                        *(f"{s['name']}_out" for s in state if s["updated"])]
    assert [o["name"] for o in graphs["decoder_step"]["outputs"]] == expected_outputs
    assert graphs["decoder_step"]["outputs"][0]["shape"] == ["batch", run.config.vocab_size]
    assert graphs["decoder_step"]["inputs"][1] == {"name": "index", "dtype": "int32", "shape": []}
    assert graphs["generate"]["outputs"] == [{"name": "tokens", "dtype": "int32",
                                              "shape": ["batch", "max_length"]}]
    assert set(config.saved_model["signatures"]) == {"generate_text", "encode", "decode_step", "generate"}

    assert (export / "tokenizer.model").read_bytes() == (run_dir / "tokenizer.model").read_bytes()
    files = verify_manifest(export)
    on_disk = {p.relative_to(export).as_posix() for p in export.rglob("*") if p.is_file()}
    assert set(files) == on_disk - {"manifest.json", "parity.json"}
    assert {"config.json", "tokenizer.model", "reference.npz", "saved_model/saved_model.pb",
            *(g["file"] for g in graphs.values())} <= set(files)
    assert not list(run_dir.glob(".export-*")), "staging directories left behind"


@pytest.mark.parametrize("model", MODEL_PARAMS)
def test_onnx_graphs_are_checked_dynamic_and_named_as_described(export_of, model):
    run_dir = export_of(model)
    config = _config(run_dir)
    for name in config.graph_names:
        graph = config.graph(name)
        path = run_dir / "export" / graph.file
        onnx.checker.check_model(str(path), full_check=True)
        proto = onnx.load(str(path))
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) <= 18
        assert proto.ir_version == 8, name  # opset 18's; onnxruntime-node/-web 1.30 read at most 13
        for values, described in ((proto.graph.input, graph.inputs), (proto.graph.output, graph.outputs)):
            assert [v.name for v in values] == [d["name"] for d in described]
            for value, entry in zip(values, described, strict=True):
                dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
                assert dims == entry["shape"], (name, value.name)
        top_level_ops = {node.op_type for node in proto.graph.node}
        # The whole generation is one Loop (beam search: the search, then the walk back through the
        # parents; generate_text: those, then one decoding each row); the step graph is loop-free (one
        # call per token). An RNN encoder is a Loop over time steps as well, the Transformer's is not.
        if name != "encoder":
            assert ("Loop" in top_level_ops) == (name in ("generate", "beam_search", "generate_text"))
        else:
            assert ("Loop" in top_level_ops) == (config.family == "rnn")


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("model", MODEL_PARAMS)
def test_parity_report_passes_for_every_graph_and_runtime(export_of, model):
    report = json.loads((export_of(model) / "export" / "parity.json").read_text())
    assert report["passed"] is True
    assert report["tolerance"]["atol"] == 1e-5
    tensors = [r for r in report["checks"] if r["kind"] == "tensor"]
    for runtime in ("saved_model", "onnxruntime"):
        graphs = {r["graph"] for r in tensors if r["runtime"] == runtime}
        # The top-k step is onnxruntime's alone, checked against the log-softmax of the Keras logits.
        assert graphs == {"encoder", "decoder_step", "generate"} | ({"decoder_step_top_k"} if runtime == "onnxruntime"
                                                                    else set())
    logits = [r["max_abs_diff"] for r in tensors if r["output"] == "logits"]
    assert logits and max(logits) <= 1e-5
    top_k = [r for r in tensors if r["graph"] == "decoder_step_top_k"]
    assert {r["output"] for r in top_k} == {"top_log_probs", "top_ids"} and all(r["passed"] for r in top_k)
    # Several batch sizes and lengths, with padding, and several decoder indices.
    cases = {r["case"] for r in tensors if r["graph"] == "decoder_step"}
    assert len(cases) >= 9 and any("padded" in c for c in cases)
    greedy = {(r["graph"], r["runtime"]): r for r in report["checks"] if r["kind"] == "greedy"}
    for key in (("generate", "saved_model"), ("generate_text", "saved_model"), ("generate", "onnxruntime"),
                ("encoder+decoder_step", "onnxruntime"), ("tokenizer", "sentencepiece"),
                ("beam_search, beam 1", "onnxruntime")):
        assert greedy[key]["sequences"] == TEST_EXAMPLES
        assert greedy[key]["identical"] == TEST_EXAMPLES, greedy[key]
    # The in-graph beam search against the serving runtime's numpy one, on the same test lines.
    beam = [r for r in report["checks"] if r["kind"] == "beam"]
    # generate_text (onnxruntime-extensions, a dev dependency) is checked in a child process, texts
    # against the Keras greedy ones and the runtime's beam ones.
    assert [r["graph"] for r in beam] == ["beam_search, beam 4", "generate_text, beam 4"]
    assert greedy[("generate_text, beam 1", "onnxruntime+extensions")]["identical"] == TEST_EXAMPLES
    for row in beam:
        assert row["sequences"] == TEST_EXAMPLES and row["identical"] == TEST_EXAMPLES, row


def _keras_state(model, encoder_input, max_length):
    state = {k: np.asarray(v) for k, v in model.encode(encoder_input).items()}
    state.update({k: np.asarray(v) for k, v in model.initial_cache(encoder_input.shape[0], max_length).items()})
    return state


@pytest.mark.parametrize("model", MODEL_PARAMS)
def test_onnx_graphs_match_keras_on_unseen_batches(export_of, keras_run, model):
    """Direct check, outside the validator: batch sizes and cache lengths the reference does not hold."""
    from keras_nlp_week4.data.pipeline import encode_sources
    from keras_nlp_week4.decoding import generate

    run_dir = export_of(model)
    run = keras_run(run_dir)
    export = run_dir / "export"
    config = _config(run_dir)
    texts = [source for source, _ in run.pairs("test")[-5:]]
    encoder_input = encode_sources(texts, run.tokenizer, run.config.max_source_length)  # (5, longest)
    max_length = run.config.max_target_length + 2

    encoder = _session(export / "onnx" / "encoder.onnx")
    step = _session(export / "onnx" / "decoder_step.onnx")
    expected = _keras_state(run.model, encoder_input, max_length)
    got = dict(zip([o.name for o in encoder.get_outputs()],
                   encoder.run(None, {"encoder_input": encoder_input}), strict=True))
    for name, value in got.items():
        np.testing.assert_allclose(value, expected[name], atol=1e-5, rtol=1e-5, err_msg=name)
    state = dict(expected)
    state_names = [s["name"] for s in config.state]
    output_names = [o.name for o in step.get_outputs()]
    token = np.full((5,), 2, np.int32)
    for index in range(4):
        logits, updates, _ = run.model.decode_step(token, np.int32(index), state)
        outputs = dict(zip(output_names, step.run(None, {"token_ids": token, "index": np.array(index, np.int32),
                                                        **{n: state[n] for n in state_names}}), strict=True))
        np.testing.assert_allclose(outputs["logits"], np.asarray(logits), atol=1e-5, rtol=1e-5)
        for name, value in updates.items():
            np.testing.assert_allclose(outputs[f"{name}_out"], np.asarray(value), atol=1e-5, rtol=1e-5)
        state.update({k: np.asarray(v) for k, v in updates.items()})
        token = np.asarray(logits).argmax(-1).astype(np.int32)

    texts = [source for source, _ in run.pairs("test")[-7:]]
    encoder_input = encode_sources(texts, run.tokenizer, run.config.max_source_length)
    tokens = _session(export / "onnx" / "generate.onnx").run(
        None, {"encoder_input": encoder_input, "max_length": np.array(max_length, np.int32)})[0]
    ids = run.config.special_ids
    keras_tokens = generate(run.model, encoder_input, max_length, ids["bos"], ids["eos"], ids["pad"]).tokens
    np.testing.assert_array_equal(tokens, keras_tokens)


@pytest.mark.parametrize("model", MODEL_PARAMS)
def test_saved_model_signatures_text_and_ids(export_of, keras_run, model):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    from keras_nlp_week4.evaluation import decode_texts

    run_dir = export_of(model)
    run = keras_run(run_dir)
    loaded = tf.saved_model.load(str(run_dir / "export" / "saved_model"))
    assert {"serving_default", "generate_text", "encode", "decode_step", "generate"} <= set(loaded.signatures)
    config = _config(run_dir)
    _, kwargs = loaded.signatures["decode_step"].structured_input_signature
    assert set(kwargs) == {i["name"] for i in config.graph("decoder_step").inputs}
    texts = ["september 27, 1994", "9/27/94", run.pairs("test")[0][0]]
    got = loaded.signatures["serving_default"](text=tf.constant(texts))["text"].numpy()
    assert [t.decode() for t in got] == decode_texts(run, texts)


def test_reference_only_validation_needs_no_tensorflow(export_of):
    run_dir = export_of("transformer")
    code = ("import sys; from export.validate import main; rc = main([sys.argv[1], '--reference-only', "
            "'--threads', '1']); loaded = [m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'tf2onnx', 'tensorflow_text')]; print('TF-MODULES', loaded); "
            "sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, str(run_dir)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "TF-MODULES []" in done.stdout
    assert "encoder+decoder_step" in done.stdout and "parity PASSED" in done.stdout
    report = json.loads((run_dir / "export" / "parity.json").read_text())
    assert report["passed"] and any(r["runtime"] == "saved_model" for r in report["checks"])  # kept


@pytest.mark.large
def test_full_validation_of_an_existing_export_reloads_keras(export_of):
    from export.validate import validate

    run_dir = export_of("seq2seq-gru")
    report = validate(run_dir, threads=1, verbose=False)
    assert report["current_passed"]
    keras_rows = [r for r in report["checks"] if r["runtime"] == "keras"]
    assert {r["graph"] for r in keras_rows} == {"encoder", "decoder_step", "generate"}


def test_cuda_provider_when_offered(export_of):
    from export.validate import validate

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ExportError, match="'cuda' is not available"):
            validate(export_of("transformer"), providers=["cuda"], reference_only=True, verbose=False)
        pytest.skip("onnxruntime here has no CUDAExecutionProvider")
    report = validate(export_of("transformer"), providers=["cuda"], reference_only=True, verbose=False)
    assert report["current_passed"]  # pragma: no cover - GPU machines only


# ------------------------------------------------------------------------------ damaged or wrong exports
@pytest.mark.parametrize("damage, message", [
    ("flip_byte", r"onnx/decoder_step\.onnx does not match its sha256"),
    ("garbage_rehashed", r"onnx/encoder\.onnx fails onnx\.checker"),
    ("mixed_up_rehashed", r"onnx/encoder\.onnx has inputs .* config\.json describes"),
    ("deleted", r"onnx/generate\.onnx is missing"),
])
def test_damaged_export_is_an_error_naming_the_file(export_of, tmp_path, capsys, damage, message):
    from export.validate import main

    export = _copy_export(export_of("transformer"), tmp_path)
    if damage == "flip_byte":
        data = bytearray((export / "onnx" / "decoder_step.onnx").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (export / "onnx" / "decoder_step.onnx").write_bytes(bytes(data))
    elif damage == "garbage_rehashed":
        (export / "onnx" / "encoder.onnx").write_bytes(b"not a protobuf" * 50)
        write_manifest(export)  # the manifest agrees: only the ONNX check can tell
    elif damage == "mixed_up_rehashed":
        shutil.copyfile(export / "onnx" / "generate.onnx", export / "onnx" / "encoder.onnx")
        write_manifest(export)
    else:
        (export / "onnx" / "generate.onnx").unlink()
    assert main([str(export), "--reference-only", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err), err


@pytest.mark.large  # exports an RNN run (the large tier's)
def test_numeric_mismatch_fails_naming_output_diff_and_input(export_of, tmp_path, capsys):
    from export.validate import main

    export = _copy_export(export_of("bahdanau"), tmp_path)
    with np.load(export / "reference.npz") as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    case = next(c["case"] for c in meta["cases"] if c["graph"] == "decoder_step" and "batch4" in c["case"])
    key = f"case/decoder_step/{case}/out/logits"
    arrays[key] = arrays[key].copy()
    arrays[key][2, 7] += 1e-3
    chunk = f"greedy/{meta['greedy_chunks'][0]}/tokens"
    arrays[chunk] = arrays[chunk].copy()
    arrays[chunk][5, 0] = (arrays[chunk][5, 0] + 1) % 60 + 4
    np.savez_compressed(export / "reference.npz", **arrays)
    write_manifest(export)

    assert main([str(export), "--reference-only", "--threads", "1"]) == 1
    err = capsys.readouterr().err
    case_text = parity.ReferenceData(export / "reference.npz").texts({"graph": "decoder_step", "case": case})[2]
    line = next(x for x in err.splitlines() if "'logits'" in x)
    assert "decoder_step on onnxruntime" in line and case in line and case_text in line
    assert "0.001" in line and "element [2, 7]" in line
    greedy = [x for x in err.splitlines() if "outputs differ" in x]
    assert any("generate on onnxruntime" in x and "1 of 300" in x for x in greedy)
    assert any(parity.ReferenceData(export / "reference.npz").sources[5] in x for x in greedy)
    report = json.loads((export / "parity.json").read_text())
    assert report["passed"] is False


# --------------------------------------------------------------------------- re-export, atomicity, int8
@pytest.mark.large  # exports an RNN run (the large tier's)
def test_reexport_overwrites_and_quantizes(export_of):
    from export.exporter import export_run

    run_dir = export_of("seq2seq-gru")
    before = verify_manifest(run_dir / "export")
    export_run(run_dir, quantize=True, max_test_examples=TEST_EXAMPLES, threads=1, verbose=False)
    export = run_dir / "export"
    files = verify_manifest(export)
    config = _config(run_dir)
    int8 = config.quantized["graphs"]
    # Every graph but the text one; the composed ones are composed again from the int8 encoder and step.
    assert set(int8) == {"encoder", "decoder_step", "generate", "beam_search", "decoder_step_top_k"}
    assert all(entry["file"] in files and entry["quantized_ops"].get("MatMulInteger", 0) > 0
               for entry in int8.values())
    assert set(files) - set(before) == set(config.int8_graph_files().values())
    quality = json.loads((export / "parity.json").read_text())["quantization"]
    assert quality["metric"] == "exact_match" and quality["sequences"] == TEST_EXAMPLES
    assert quality["keras_fp32"] == quality["onnxruntime_fp32"]
    assert 0.0 <= quality["onnxruntime_int8"] <= 1.0
    assert not list(run_dir.glob(".export-*")) and not (run_dir / "export.failed").exists()


@pytest.mark.large  # exports an RNN run (the large tier's)
def test_crash_mid_export_leaves_the_previous_export(export_of, monkeypatch):
    import export.saved_model
    from export.exporter import export_run

    run_dir = export_of("seq2seq-gru")
    before = verify_manifest(run_dir / "export")

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash while writing the SavedModel")

    monkeypatch.setattr(export.saved_model, "save", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        export_run(run_dir, validate=False, verbose=False)
    assert verify_manifest(run_dir / "export") == before
    assert not list(run_dir.glob(".export-*"))


@pytest.mark.large  # exports an RNN run (the large tier's)
def test_export_failing_validation_is_not_installed_nor_loadable(export_of, monkeypatch, tmp_path):
    import export.validate
    from export.exporter import ExportFailed, export_run
    from serving.errors import ExportError
    from serving.runtime import Runtime

    run_dir = export_of("seq2seq-gru")
    before = verify_manifest(run_dir / "export")
    left_behind = tmp_path / ".export-staging-killed"

    def fails(staging, **kwargs):
        # What `kill -9` during validation leaves: the staging directory, manifest and all.
        shutil.copytree(staging, left_behind)
        return {"current_passed": False}

    monkeypatch.setattr(export.validate, "validate", fails)
    with pytest.raises(ExportFailed, match="export.failed"):
        export_run(run_dir, max_test_examples=20, verbose=False)
    monkeypatch.undo()
    assert verify_manifest(run_dir / "export") == before
    assert (run_dir / "export.failed" / "manifest.json").is_file()
    for unvalidated in (left_behind, run_dir / "export.failed"):
        with pytest.raises(ExportError, match="has not passed parity validation.*export.validate"):
            Runtime(unvalidated)
    shutil.rmtree(run_dir / "export.failed")
    # Validation that passes makes it loadable (and the installed export always was).
    assert export.validate.main([str(left_behind), "--reference-only", "--threads", "1"]) == 0
    assert Manifest.read(left_behind).validated is True
    assert Runtime(left_behind).generate(["9/27/94"])[0].text == \
        Runtime(run_dir / "export").generate(["9/27/94"])[0].text


# The opt-in fused variant's whole export (15 s on a 2-core AVX2 EPYC): large tier, which CI runs; its step
# against Keras is in tests/test_transformer_step.py.
@pytest.mark.large
def test_an_export_of_some_graphs_with_fused_attention_is_validated_and_served(tiny_run, tmp_path):
    """`export_run(graphs=..., saved_model=False)` (what the benchmark's stand-in uses): only those graphs
    are written and described, validation checks them (the runtime's greedy loop against Keras) and
    passes, and the runtime serves the export as it serves a whole one. With `fused_attention` the step
    and the in-graph search hold onnxruntime's decoding attention (a default export: standard operators
    only) and the same texts come out; validation refuses a config.json that claims standard operators
    over them."""
    from export.exporter import export_run
    from export.onnx_check import nonstandard_ops
    from export.validate import validate
    from serving.runtime import Runtime

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns("export*", "plots"))
    names = ("encoder", "decoder_step", "beam_search", "decoder_step_top_k")
    export = export_run(run_dir, max_test_examples=4, threads=1, verbose=False, graphs=names,
                        saved_model=False, fused_attention=True)
    config = ExportConfig.read(export)
    assert config.graph_names == names and config.saved_model is None and config.operators == "onnxruntime"
    assert not (export / "saved_model").exists() and not (export / "onnx" / "generate.onnx").exists()
    report = json.loads((export / "parity.json").read_text())
    graphs = {row["graph"] for row in report["checks"]}
    assert report["passed"] and "encoder+decoder_step" in graphs and "generate" not in graphs
    for name in ("decoder_step", "beam_search", "decoder_step_top_k"):
        ops = nonstandard_ops(onnx.load(str(export / config.graph_file(name))))
        assert ops == ["com.microsoft.DecoderMaskedMultiHeadAttention"], (name, ops)
    default = ExportConfig.read(tiny_run / "export")
    assert default.operators is None and "operators" not in json.loads((tiny_run / "export" / "config.json").read_text())
    for name in default.graph_names:
        custom = (default.graph(name).custom_ops or {}).get("domain")
        assert nonstandard_ops(onnx.load(str(tiny_run / "export" / default.graph_file(name))),
                               (custom,) if custom else ()) == [], name
    texts = ["9/27/94", "March 3, 2001"]
    for method in ("greedy", "beam"):
        options = DecodingOptions(method=method, beam_size=3)
        assert [r.text for r in Runtime(export).generate(texts, options)] == \
            [r.text for r in Runtime(tiny_run / "export").generate(texts, options)]
    # config.json saying "standard" over the fused graphs is refused, in one line
    values = json.loads((export / "config.json").read_text())
    (export / "config.json").write_text(json.dumps({**values, "operators": "standard"}))
    write_manifest(export)
    with pytest.raises(ExportError, match="standard operators only; export the run again"):
        validate(export, providers=["CPUExecutionProvider"], threads=1, verbose=False)


@pytest.mark.parametrize("graphs, message", [
    (("encoder", "decoder_step", "beam_search"), "also needs decoder_step_top_k"),
    (("encoder", "generate"), "also needs decoder_step"),
    (("encoder", "decoder_step", "greedy"), "unknown graphs greedy"),
])
def test_an_export_of_graphs_that_cannot_stand_alone_is_refused(tmp_path, graphs, message):
    from export.exporter import export_run

    with pytest.raises(ValueError, match=message):
        export_run(tmp_path / "no-run", graphs=graphs, verbose=False)
    assert not (tmp_path / "no-run").exists()


def test_interrupted_install_is_recovered(tmp_path):
    from export.exporter import _recover

    dead = "4194305"  # above Linux's pid_max: no such process
    old = tmp_path / f".export-old-{dead}"
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    (tmp_path / f".export-staging-{dead}").mkdir()
    _recover(tmp_path)
    assert (tmp_path / "export" / "manifest.json").is_file()
    assert not list(tmp_path.glob(".export-*"))


def test_cli_without_a_trained_run(tmp_path, monkeypatch, capsys):
    from export.__main__ import main

    monkeypatch.chdir(tmp_path)
    assert main([]) == 2
    assert "no trained run under artifacts" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ unit pieces
def test_compare_follows_the_stated_tolerance():
    ref = np.array([[0.0, 1.0], [100.0, -3.0]], np.float32)
    # atol + rtol * |ref|: 1e-5 at 0, 1.01e-3 at 100.
    assert parity.compare(ref + np.float32(9e-6), ref).passed
    assert not parity.compare(ref + np.array([[2e-5, 0], [0, 0]], np.float32), ref).passed
    near_100 = ref + np.array([[0, 0], [9e-4, 0]], np.float32)
    diff = parity.compare(near_100, ref)
    assert diff.passed and diff.max_abs == pytest.approx(9e-4, rel=1e-2)
    far = parity.compare(ref + np.array([[0, 0], [0, 1e-3]], np.float32), ref)
    assert not far.passed and far.worst == (1, 1)
    assert not parity.compare(ref[:1], ref).passed  # shape mismatch
    assert not parity.compare(np.array([True, False]), np.array([True, True])).passed
    assert parity.compare(np.array([[2, 3]], np.int32), np.array([[2, 3]], np.int32)).passed
    assert not parity.compare(np.array([np.nan], np.float32), np.array([1.0], np.float32)).passed


def test_graph_description_follows_the_contract():
    state = [{"name": "memory", "shape": ["batch", "source_length", 8], "dtype": "float32",
              "source": "encode", "updated": False},
             {"name": "cache", "shape": ["batch", "max_length", 8], "dtype": "float32", "source": "cache",
              "updated": True}]
    graphs = describe_graphs(state, vocab_size=11, attention=(2, 4))
    assert [o["name"] for o in graphs["encoder"]["outputs"]] == ["memory"]
    assert [i["name"] for i in graphs["decoder_step"]["inputs"]] == ["token_ids", "index", "memory", "cache"]
    assert [o["name"] for o in graphs["decoder_step"]["outputs"]] == ["logits", "attention", "cache_out"]
    assert graphs["decoder_step"]["outputs"][1]["shape"] == ["batch", 2, 4, "source_length"]
    no_attention = describe_graphs(state, vocab_size=11, attention=None)
    assert "attention" not in [o["name"] for o in no_attention["decoder_step"]["outputs"]]
    with pytest.raises(ValueError, match="reserved"):
        describe_graphs([{**state[0], "name": "logits"}], vocab_size=11, attention=None)


def test_greedy_token_choice_converts_and_breaks_ties_like_argmax():
    """The greedy loop picks tokens with top_k(1): it converts to ONNX TopK (keras.ops.argmax would emit
    an unconvertible Bitcast) and, like numpy's argmax, takes the lowest index among equal maxima."""
    import keras
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec([None, 4], tf.float32, name="x")]

    @tf.function(input_signature=spec)
    def pick(x):
        return {"index": keras.ops.top_k(x, 1)[1][:, 0]}

    x = np.array([[-0.0, 0.0, -1.0, -2.0], [-5.0, -3.0, -1.0, -0.5], [1.0, 3.0, 3.0, -np.inf],
                  [-np.inf, -np.inf, -1e-30, -1e-30]], np.float32)
    proto, _ = tf2onnx.convert.from_function(pick, input_signature=spec, opset=18)
    assert "TopK" in {node.op_type for node in proto.graph.node}
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    np.testing.assert_array_equal(got, pick(x)["index"].numpy())
    np.testing.assert_array_equal(got, np.argmax(x, axis=-1))


# ---------------------------------------------------------------- Triton / TensorFlow Serving layouts
ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT32: "TYPE_INT32",
                  onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.BOOL: "TYPE_BOOL"}


def parse_pbtxt(text: str) -> dict:
    """The fields our config.pbtxt files use: name, platform and the input/output tensor blocks."""
    import re

    def tensors(kind):
        block = re.search(kind + r" \[\n(.*?)\n\]", text, re.S).group(1)
        found = []
        for entry in re.findall(r"\{(.*?)\n  \}", block, re.S):
            dims = [int(d) for d in re.search(r"dims: \[([^\]]*)\]", entry).group(1).split(",")
                    if d.strip()]
            reshape = re.search(r"reshape: \{ shape: \[([^\]]*)\] \}", entry)
            if reshape is not None:
                dims = [int(d) for d in reshape.group(1).split(",") if d.strip()]
            found.append({"name": re.search(r'name: "([^"]+)"', entry).group(1),
                          "data_type": re.search(r"data_type: (\w+)", entry).group(1), "dims": dims})
        return found

    return {"name": re.search(r'^name: "([^"]+)"', text, re.M).group(1),
            "platform": re.search(r'platform: "([^"]+)"', text).group(1),
            "input": tensors("input"), "output": tensors("output")}


def onnx_signature(values) -> list[dict]:
    result = []
    for v in values:
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
        result.append({"name": v.name, "data_type": ONNX_TO_TRITON[v.type.tensor_type.elem_type],
                       "dims": dims})
    return result


@pytest.mark.parametrize("model", [MODEL_PARAMS[0], MODEL_PARAMS[1]])
def test_triton_repository_matches_the_onnx_graphs(export_of, model):
    from export.serving_layouts import SAVED_MODEL_NAME, write_target

    run_dir = export_of(model)
    repository = write_target("triton", run_dir)
    config = _config(run_dir)
    graphs = [name for name in config.graph_names if not config.graph(name).custom_ops]
    assert "generate_text" not in graphs  # onnxruntime-extensions' operators: not for Triton
    assert {p.name for p in repository.iterdir() if p.is_dir()} == set(graphs) | {SAVED_MODEL_NAME}
    for name in graphs:
        pbtxt = parse_pbtxt((repository / name / "config.pbtxt").read_text())
        graph = onnx.load(repository / name / "1" / "model.onnx").graph
        assert pbtxt["name"] == name and pbtxt["platform"] == "onnxruntime_onnx"
        # Names, order, dtypes and dims (-1 for dynamic axes) are the graph's own.
        assert pbtxt["input"] == onnx_signature(graph.input)
        assert pbtxt["output"] == onnx_signature(graph.output)
    saved = parse_pbtxt((repository / SAVED_MODEL_NAME / "config.pbtxt").read_text())
    assert saved["platform"] == "tensorflow_savedmodel"
    assert saved["input"] == [{"name": "text", "data_type": "TYPE_STRING", "dims": [-1]}]
    assert (repository / SAVED_MODEL_NAME / "1" / "model.savedmodel" / "saved_model.pb").is_file()
    # Writing again replaces the repository whole.
    (repository / "stray").mkdir()
    write_target("triton", run_dir)
    assert not (repository / "stray").exists()


def test_tfserving_layout_has_a_version_directory(export_of):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops the text signature uses)

    from export.serving_layouts import write_target

    base = write_target("tfserving", export_of("transformer"))  # --model_base_path for tf serving
    assert base.name == "dates_transformer" and [p.name for p in base.iterdir()] == ["1"]
    version = base / "1"
    assert (version / "saved_model.pb").is_file()
    loaded = tf.saved_model.load(str(version))
    out = loaded.signatures["serving_default"](text=tf.constant(["september 27, 1994"]))
    assert out["text"].shape == (1,)
