"""Loading an export in the serving runtime: the shared tiny export, manifest checks, one-line errors.

The `tiny_run` / `tiny_export` / `runtime` fixtures live in `conftest.py`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_RUN_TEST_EXAMPLES, copy_export

from serving.errors import ExportError, ServingError
from serving.export_config import ExportConfig
from serving.manifest import Manifest, sha256_file, verify_manifest
from serving.runtime import Runtime, check_providers_loaded, resolve_providers


def rewrite_manifest(export_dir: Path) -> None:
    """Re-hashes the listed files that are still there (a damaged export whose manifest agrees)."""
    manifest = Manifest.read(export_dir)
    replace(manifest, files={k: sha256_file(export_dir / k) for k in manifest.files
                             if (export_dir / k).is_file()}).write(export_dir)


def test_an_export_without_its_saved_model_still_serves(tiny_export, tmp_path):
    slim = copy_export(tiny_export, tmp_path)
    listed = Manifest.read(slim).files
    assert any(name.startswith("saved_model/") for name in listed)
    with pytest.raises(ExportError, match="saved_model/.* is missing"):
        verify_manifest(slim)  # the full check sees the gap
    assert Runtime(slim).generate(["9/27/94"])[0].text == Runtime(tiny_export).generate(["9/27/94"])[0].text


def test_export_has_what_serving_reads(tiny_export):
    config = ExportConfig.read(tiny_export)
    files = verify_manifest(tiny_export)
    assert set(config.served_files()) <= set(files)
    assert config.tokenizer in files and "config.json" in files
    assert {s["name"] for s in config.state} >= {"encoder_padding_mask", "self_key_0", "cross_value_1"}


def test_runtime_loads_and_describes(runtime):
    info = runtime.describe()
    assert info["providers"] == ["CPUExecutionProvider"]
    assert info["has_attention"] is True
    assert runtime.max_source_length == runtime.config.max_source_length


@pytest.mark.parametrize("damage, expected", [
    ("missing_dir", "does not exist"),
    ("no_manifest", "manifest.json is missing"),
    ("no_config", "config.json is missing"),
    ("config_not_json", "config.json is not valid JSON"),
    ("old_format", "format_version"),
    ("unknown_operators", "operators 'tensorrt', not one of standard, onnxruntime"),
    ("fused_on_old_onnxruntime", "needs onnxruntime >= 1.32 (this is 1.30.0): pip install -U onnxruntime"),
    ("tokenizer_changed", "tokenizer.model does not match its sha256"),
    ("onnx_truncated", "decoder_step.onnx does not match its sha256"),
    ("onnx_deleted", "encoder.onnx is missing"),
    ("manifest_lacks_graph", "does not list onnx/decoder_step.onnx"),
])
def test_damaged_export_is_a_one_line_error_naming_the_file(tiny_export, tmp_path, damage, expected, monkeypatch):
    export = copy_export(tiny_export, tmp_path)
    manifest = json.loads((export / "manifest.json").read_text())
    if damage == "missing_dir":
        export = tmp_path / "nowhere"
    elif damage == "no_manifest":
        (export / "manifest.json").unlink()
    elif damage == "no_config":
        (export / "config.json").unlink()
    elif damage == "config_not_json":
        (export / "config.json").write_text("{ not json")
    elif damage == "old_format":
        config = json.loads((export / "config.json").read_text())
        (export / "config.json").write_text(json.dumps({**config, "format_version": 1}))
    elif damage in ("unknown_operators", "fused_on_old_onnxruntime"):
        config = json.loads((export / "config.json").read_text())
        operators = "tensorrt" if damage == "unknown_operators" else "onnxruntime"
        (export / "config.json").write_text(json.dumps({**config, "operators": operators}))
        rewrite_manifest(export)
        monkeypatch.setattr("serving.runtime.ort.__version__", "1.30.0")
    elif damage == "tokenizer_changed":
        data = bytearray((export / "tokenizer.model").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (export / "tokenizer.model").write_bytes(bytes(data))
    elif damage == "onnx_truncated":
        path = export / "onnx" / "decoder_step.onnx"
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "onnx_deleted":
        (export / "onnx" / "encoder.onnx").unlink()
    elif damage == "manifest_lacks_graph":
        del manifest["files"]["onnx/decoder_step.onnx"]
        (export / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError) as error:
        Runtime(export)
    message = str(error.value)
    assert expected in message and "\n" not in message


def test_manifest_paths_may_not_leave_the_export(tiny_export, tmp_path):
    export = copy_export(tiny_export, tmp_path)
    rewrite_manifest(export)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["files"]["../outside"] = "0" * 64
    (export / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="outside the export directory"):
        verify_manifest(export)


def test_corrupt_onnx_with_a_matching_manifest_names_the_file(tiny_export, tmp_path):
    export = copy_export(tiny_export, tmp_path)
    path = export / "onnx" / "decoder_step.onnx"
    path.write_bytes(b"this is not a protobuf" * 10)
    rewrite_manifest(export)  # the manifest agrees, so only onnxruntime can notice
    with pytest.raises(ExportError, match=r"cannot load .*decoder_step\.onnx"):
        Runtime(export)


def test_verification_can_be_skipped(tiny_export, tmp_path):
    export = copy_export(tiny_export, tmp_path)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["files"]["config.json"] = "0" * 64
    (export / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="config.json does not match"):
        Runtime(export)
    # Skipping the check loads the same graphs: the same output as the intact export.
    expected = Runtime(tiny_export).generate(["9/27/94"])[0]
    got = Runtime(export, verify=False).generate(["9/27/94"])[0]
    assert got.token_ids == expected.token_ids and got.text == expected.text


def test_graph_without_a_state_entry_is_refused(tiny_export, tmp_path):
    export = copy_export(tiny_export, tmp_path)
    config = json.loads((export / "config.json").read_text())
    config["state"].append({"name": "imaginary", "shape": ["batch"], "dtype": "float32", "source": "encode",
                            "updated": False})
    (export / "config.json").write_text(json.dumps(config))
    rewrite_manifest(export)
    with pytest.raises(ExportError, match="lacks the outputs imaginary"):
        Runtime(export)


def test_tokenizer_with_other_special_ids_is_refused(tiny_export, tmp_path):
    export = copy_export(tiny_export, tmp_path)
    config = json.loads((export / "config.json").read_text())
    config["special_ids"] = {**config["special_ids"], "eos": 7}
    (export / "config.json").write_text(json.dumps(config))
    rewrite_manifest(export)
    with pytest.raises(ExportError, match="special ids"):
        Runtime(export)


def test_providers():
    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    assert resolve_providers("auto")[-1] == "CPUExecutionProvider"
    assert resolve_providers(["CPUExecutionProvider", "cpu"]) == ["CPUExecutionProvider"]
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(ExportError, match="'cuda' is not available .*onnxruntime-gpu"):
            resolve_providers("cuda")
    else:  # pragma: no cover - only on a CUDA build
        assert resolve_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(ExportError, match="'tpu' is not available"):
        resolve_providers("tpu")



def test_a_provider_that_did_not_start_is_an_error_not_a_quiet_cpu_run():
    class FellBack:  # what onnxruntime-gpu gives when CUDA's libraries are missing: a CPU-only session
        def get_providers(self):
            return ["CPUExecutionProvider"]

    check_providers_loaded(FellBack(), ["CPUExecutionProvider"])  # the CPU alone was asked for: fine
    with pytest.raises(ServingError, match=r"^CUDAExecutionProvider did not start \(onnxruntime fell back to "
                       r"CPUExecutionProvider\); install the CUDA .* or run with --provider cpu$"):
        check_providers_loaded(FellBack(), ["CUDAExecutionProvider", "CPUExecutionProvider"])

def test_thread_settings_give_the_same_outputs(tiny_export, runtime):
    texts = ["9/27/94", "sept. 3, 2001"]
    other = Runtime(tiny_export, intra_op_threads=2, allow_spinning=False)
    a = [g.token_ids for g in runtime.generate(texts)]
    b = [g.token_ids for g in other.generate(texts)]
    assert a == b
    assert np.isclose(runtime.generate(texts)[0].score, other.generate(texts)[0].score, atol=1e-4)


def _initializers(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    from export.onnx_check import subgraphs

    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for graph in subgraphs(model.graph) for t in graph.initializer}


def test_int8_graphs_are_listed_verified_and_hold_the_float_weights_to_half_a_step(tiny_export):
    """What `export/quantize.py` promises, checked on the files (no int8 kernel runs, so no CPU dependence):
    every graph has an int8 copy under onnx/int8/ that the manifest lists and verifies, its integer ops
    are the ones config.json counts, and every weight it stores as int8 dequantizes to the float32 graph's
    weight within half a quantization step, with one scale per tensor."""
    import onnx

    from export.config import COMPOSED_GRAPHS
    from export.quantize import _count_ops  # the exporter's counter, run here on the files on disk

    config = ExportConfig.read(tiny_export)
    quantized = config.quantized["graphs"]
    # Every graph but the text one (its tokenizer operators have no int8 form; it is float32 only); the
    # composed ones are composed again from the int8 encoder and step, under the same weight names.
    assert set(quantized) == set(config.graph_names) - {"generate_text"} == {
        "encoder", "decoder_step", "generate", "beam_search", "decoder_step_top_k"}
    files = verify_manifest(tiny_export, required=tuple(q["file"] for q in quantized.values()),
                            require_validated=True)
    for name, entry in quantized.items():
        assert entry["file"] == f"onnx/int8/{Path(config.graph_file(name)).name}" and entry["file"] in files
        ops = _count_ops(onnx.load(str(tiny_export / entry["file"])))
        assert entry["quantized_ops"] == {op: n for op, n in ops.items() if op in entry["quantized_ops"]}
        assert entry["quantized_ops"].get("MatMulInteger", 0) > 0
        if name in COMPOSED_GRAPHS:
            continue  # made of the int8 encoder and step checked here (equal tensors, zero points too, kept once)
        int8 = _initializers(tiny_export / entry["file"])
        fp32 = _initializers(tiny_export / config.graph_file(name))
        weights = [key[: -len("_quantized")] for key, value in int8.items()
                   if key.endswith("_quantized") and value.dtype == np.int8]
        assert weights, f"{name}: no int8 weights"
        for weight in weights:
            q, scale, zero = (int8[f"{weight}{suffix}"] for suffix in ("_quantized", "_scale", "_zero_point"))
            # The quantizer stores a Gemm's transposed weight (transB=1, the tied logits) transposed.
            base = weight.removesuffix("_Transposed")
            original = fp32[base].astype(np.float64)
            original = original.T if base != weight else original
            assert scale.size == 1 and np.all(zero == 0)  # symmetric, one scale per tensor
            assert q.shape == original.shape
            assert float(scale) <= np.abs(original).max() / 127 * (1 + 1e-6)  # the range is not wasted
            error = np.abs((q.astype(np.float64) - zero) * float(scale) - original).max()
            assert error <= float(scale) / 2 * (1 + 1e-5), f"{name}: {weight} is off by {error}"


def test_int8_graphs_load_and_decode_validly(tiny_export, tmp_path):
    """The int8 runtime's outputs are well formed (their numbers depend on the CPU's int8 kernels, so they
    are not compared with float32 here; the validator's quality report is checked below)."""
    int8 = Runtime(tiny_export, int8=True)
    assert all(f.startswith("onnx/int8/") for f in int8.graph_files.values()) and int8.describe()["int8"]
    fp32 = Runtime(tiny_export)
    vocab = int8.config.vocab_size
    ends = [int8.pad_id, int8.bos_id, int8.eos_id]
    texts = ["9/27/94", "sept. 3, 2001", "MONDAY, NOVEMBER 30, 1992"]
    encoder_input, _ = int8.tokenizer.encode_sources(texts, int8.max_source_length)
    # One step: the same names, shapes and dtypes as float32, finite logits over the vocabulary.
    state, fp32_state = int8.initial_state(encoder_input, 4), fp32.initial_state(encoder_input, 4)
    assert {k: (v.shape, v.dtype) for k, v in state.items()} == {k: (v.shape, v.dtype)
                                                                 for k, v in fp32_state.items()}
    bos = np.full(len(texts), int8.bos_id, np.int32)
    logits, updates, _ = int8.step(bos, 0, state)
    fp32_logits, fp32_updates, _ = fp32.step(bos, 0, fp32_state)
    assert logits.shape == fp32_logits.shape == (len(texts), vocab) and np.isfinite(logits).all()
    assert {k: (v.shape, v.dtype) for k, v in updates.items()} == {k: (v.shape, v.dtype)
                                                                   for k, v in fp32_updates.items()}
    # Whole generations: ids in the vocabulary, PAD after EOS, EOS-terminated unless the length limit was
    # reached (an untrained model may well emit BOS or PAD before that); a finite log-probability, and
    # the text decoded from the ids before EOS without PAD/BOS.
    result = int8.generate_ids(encoder_input)
    assert result.tokens.shape[0] == len(texts) and result.tokens.shape[1] <= int8.max_target_length
    for row in result.tokens:
        assert ((0 <= row) & (row < vocab)).all()
        eos = np.flatnonzero(row == int8.eos_id)
        produced = int(eos[0]) if eos.size else len(row)
        assert eos.size or len(row) == int8.max_target_length
        assert (row[produced + 1:] == int8.pad_id).all()
    for generation in int8.generate(texts):
        assert len(generation.tokens) <= int8.max_target_length and np.isfinite(generation.score)
        assert generation.score <= 0 and all(0 <= i < vocab and i not in ends for i in generation.token_ids)
        assert generation.text == int8.tokenizer.decode(generation.token_ids)
    # An export without int8 graphs says how to get them.
    plain = copy_export(tiny_export, tmp_path)
    config = json.loads((plain / "config.json").read_text())
    del config["quantized"]
    (plain / "config.json").write_text(json.dumps(config))
    rewrite_manifest(plain)
    with pytest.raises(ExportError, match="no int8 encoder graph; export the run with --quantize"):
        Runtime(plain, int8=True)


def test_int8_quality_report(tiny_export):
    """The validator's int8 report (`export/validate.py`): on the whole validated test split, next to the
    float32 figures, which equal Keras' (parity: identical greedy ids), and internally consistent."""
    report = json.loads((tiny_export / "parity.json").read_text())
    quality = report["quantization"]
    assert quality["split"] == "test" and quality["sequences"] == report["test_sequences"] == TINY_RUN_TEST_EXAMPLES
    assert quality["metric"] == "exact_match" and quality["method"] == "onnxruntime dynamic quantization"
    assert quality["keras_fp32"] == quality["onnxruntime_fp32"]
    assert all(0.0 <= quality[k] <= 1.0 for k in ("keras_fp32", "onnxruntime_fp32", "onnxruntime_int8"))
    assert 0 <= quality["int8_identical_to_fp32"] <= quality["sequences"]
    # Exact match counts whole sequences, so int8 can differ from float32 only where its ids do.
    changed = (quality["sequences"] - quality["int8_identical_to_fp32"]) / quality["sequences"]
    assert abs(quality["onnxruntime_int8"] - quality["onnxruntime_fp32"]) <= changed + 1e-9
