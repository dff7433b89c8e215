"""Loading an export in the serving runtime: the shared tiny export, manifest checks, one-line errors.

The `tiny_run` / `tiny_export` / `runtime` fixtures live in `conftest.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import copy_export

from serving.errors import ExportError
from serving.manifest import sha256_file, verify_manifest
from serving.runtime import Runtime, resolve_providers


def rewrite_manifest(export_dir: Path) -> None:
    manifest = json.loads((export_dir / "manifest.json").read_text())
    manifest["files"] = {k: sha256_file(export_dir / k) for k in manifest["files"]
                         if (export_dir / k).is_file()}
    (export_dir / "manifest.json").write_text(json.dumps(manifest))


def test_an_export_without_its_saved_model_still_serves(tiny_export, tmp_path):
    slim = copy_export(tiny_export, tmp_path)
    listed = json.loads((slim / "manifest.json").read_text())["files"]
    assert any(name.startswith("saved_model/") for name in listed)
    with pytest.raises(ExportError, match="saved_model/.* is missing"):
        verify_manifest(slim)  # the full check sees the gap
    assert Runtime(slim).generate(["9/27/94"])[0].text == Runtime(tiny_export).generate(["9/27/94"])[0].text


def test_export_has_what_serving_reads(tiny_export):
    config = json.loads((tiny_export / "config.json").read_text())
    files = verify_manifest(tiny_export)
    for name in ("encoder", "decoder_step"):
        assert config["graphs"][name]["file"] in files
    assert config["tokenizer"] in files and "config.json" in files
    assert {s["name"] for s in config["state"]} >= {"encoder_padding_mask", "self_attention_cache"}


def test_runtime_loads_and_describes(runtime):
    info = runtime.describe()
    assert info["providers"] == ["CPUExecutionProvider"]
    assert info["has_attention"] is True
    assert runtime.max_source_length == runtime.config["max_source_length"]


@pytest.mark.parametrize("damage, expected", [
    ("missing_dir", "does not exist"),
    ("no_manifest", "manifest.json is missing"),
    ("no_config", "config.json is missing"),
    ("config_not_json", "config.json is not valid JSON"),
    ("old_format", "format_version"),
    ("tokenizer_changed", "tokenizer.model does not match its sha256"),
    ("onnx_truncated", "decoder_step.onnx does not match its sha256"),
    ("onnx_deleted", "encoder.onnx is missing"),
    ("manifest_lacks_graph", "does not list onnx/decoder_step.onnx"),
])
def test_damaged_export_is_a_one_line_error_naming_the_file(tiny_export, tmp_path, damage, expected):
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
        (export / "config.json").write_text(json.dumps({**config, "format_version": 0}))
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


def test_thread_settings_give_the_same_outputs(tiny_export, runtime):
    texts = ["9/27/94", "sept. 3, 2001"]
    other = Runtime(tiny_export, intra_op_threads=2, allow_spinning=False)
    a = [g.token_ids for g in runtime.generate(texts)]
    b = [g.token_ids for g in other.generate(texts)]
    assert a == b
    assert np.isclose(runtime.generate(texts)[0].score, other.generate(texts)[0].score, atol=1e-4)


def test_int8_graphs(tiny_export, tmp_path):
    int8 = Runtime(tiny_export, int8=True)
    assert int8.graph_files["decoder_step"].startswith("onnx/int8/") and int8.describe()["int8"]
    fp32 = Runtime(tiny_export)
    texts = ["9/27/94", "sept. 3, 2001", "MONDAY, NOVEMBER 30, 1992"]
    for a, b in zip(int8.generate(texts), fp32.generate(texts), strict=True):
        assert len(a.tokens) <= fp32.max_target_length and a.score == pytest.approx(b.score, rel=0.2)
    plain = copy_export(tiny_export, tmp_path)
    config = json.loads((plain / "config.json").read_text())
    del config["quantized"]
    (plain / "config.json").write_text(json.dumps(config))
    rewrite_manifest(plain)
    with pytest.raises(ExportError, match="no int8 encoder graph; export the run with --quantize"):
        Runtime(plain, int8=True)
