"""The schemas of the files the stages hand each other (docs/architecture.md): each round-trips through
its one writer and one reader, and a missing or unknown field is a one-line error naming the file."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import pytest

from keras_nlp_week4.errors import UserError
from keras_nlp_week4.run_files import RunConfig, RunMetrics, TrainSettings
from serving.errors import ExportError
from serving.export_config import FORMAT_VERSION, ExportConfig
from serving.manifest import Manifest


def _settings(**overrides) -> TrainSettings:
    values = dict(task="dates", model="transformer", family="transformer", preset="tiny", out="artifacts/x",
                  epochs=2, batch_size=8, learning_rate=1e-3, warmup_steps=10, label_smoothing=0.1,
                  dropout=0.0, teacher_forcing_ratio=1.0, vocab_size=None, max_source_length=16,
                  max_target_length=12, patience=3, max_train_examples=None, time_budget_minutes=None,
                  seed=0, verbose=0, strategy="default", precision="float32", jit=False, num_replicas=1)
    return TrainSettings(**{**values, **overrides})


def _run_config() -> RunConfig:
    return RunConfig(task="dates", model="transformer", family="transformer", preset="tiny",
                     model_class="Transformer", model_config={"d_model": 64}, num_parameters=1000,
                     tokenizer_type="char", vocab_size=40, special_ids={"pad": 0, "unk": 1, "bos": 2, "eos": 3},
                     max_source_length=16, max_target_length=12, exact_match=True,
                     splits={"train": 8, "validation": 2, "test": 2}, train=_settings(),
                     versions={"numpy": "2"})


def _damage(path, change) -> None:
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))


def test_train_settings_hold_every_train_config_field():
    from keras_nlp_week4.training.trainer import TrainConfig

    assert {f.name for f in fields(TrainConfig)} <= {f.name for f in fields(TrainSettings)}


def test_run_config_round_trip_and_one_line_errors(tmp_path):
    config = _run_config()
    config.write(tmp_path)
    assert RunConfig.read(tmp_path) == config
    cases = [
        (lambda v: v.pop("vocab_size"), "lacks vocab_size; train the run again"),
        (lambda v: v.update(colour="red"), "unknown keys colour; train the run again"),
        (lambda v: v["train"].pop("epochs"), "lacks epochs; train the run again"),
        (lambda v: v["train"].update(speed=3), "unknown settings speed; train the run again"),
    ]
    for change, message in cases:
        config.write(tmp_path)
        _damage(tmp_path / "config.json", change)
        with pytest.raises(UserError, match=message) as error:
            RunConfig.read(tmp_path)
        assert "\n" not in str(error.value) and "config.json" in str(error.value)
    with pytest.raises(UserError, match="does not exist"):
        RunConfig.read(tmp_path / "nowhere")


def test_same_training_ignores_what_does_not_define_the_training():
    from keras_nlp_week4.training.trainer import same_training

    recorded = _settings()
    assert same_training(recorded, replace(recorded, verbose=2, num_replicas=None, out="elsewhere"))
    assert not same_training(recorded, replace(recorded, epochs=3))
    # Through the file: what was recorded compares equal to what is requested.
    assert same_training(TrainSettings.from_json(json.loads(json.dumps(recorded.to_json()))), recorded)


def test_metrics_round_trip_omit_unmeasured_figures_and_refuse_unknown_ones(tmp_path):
    assert RunMetrics.read_or_empty(tmp_path) == RunMetrics()
    with pytest.raises(UserError, match="metrics.json is missing; evaluate the run"):
        RunMetrics.read(tmp_path)
    metrics = RunMetrics(val_loss=1.5, test_bleu_greedy=20.0, beam_size=4)
    metrics.write(tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"val_loss": 1.5, "test_bleu_greedy": 20.0,
                                                                   "beam_size": 4}
    assert RunMetrics.read(tmp_path) == metrics
    _damage(tmp_path / "metrics.json", lambda v: v.update(bleu=1.0))
    with pytest.raises(UserError, match="unknown keys bleu; evaluate the run again"):
        RunMetrics.read(tmp_path)


def _export_config(**overrides) -> ExportConfig:
    graphs = {name: {"file": f"onnx/{name}.onnx", "inputs": [{"name": "x", "dtype": "int32", "shape": []}],
                     "outputs": []} for name in ("encoder", "decoder_step", "generate")}
    return ExportConfig(**{**dict(special_ids={"pad": 0, "unk": 1, "bos": 2, "eos": 3}, max_source_length=16,
                                  max_target_length=12, vocab_size=40, state=[], graphs=graphs), **overrides})


def test_export_config_round_trip_accessors_and_one_line_errors(tmp_path):
    config = _export_config(quantized={"method": "dynamic", "graphs": {"encoder": {"file": "onnx/int8/e.onnx"}}})
    config.write(tmp_path)
    read = ExportConfig.read(tmp_path)
    assert read == config and read.format_version == FORMAT_VERSION
    assert read.graph("decoder_step").file == read.graph_file("decoder_step") == "onnx/decoder_step.onnx"
    assert read.graph("encoder").inputs[0]["name"] == "x"
    assert read.graph_file("encoder", int8=True) == "onnx/int8/e.onnx"
    assert read.served_files() == ("config.json", "tokenizer.model", "onnx/encoder.onnx",
                                   "onnx/decoder_step.onnx")
    with pytest.raises(ExportError, match="no int8 decoder_step graph; export the run with --quantize"):
        read.graph_file("decoder_step", int8=True)
    _export_config().write(tmp_path)
    assert "quantized" not in json.loads((tmp_path / "config.json").read_text())  # None is not written
    cases = [
        (lambda v: v.update(format_version=0), "format_version 0"),
        (lambda v: v.pop("state"), "lacks state; export the run again"),
        (lambda v: v.update(colour="red"), "unknown keys colour; export the run again"),
        (lambda v: v["graphs"].pop("encoder"), "does not describe the 'encoder' graph"),
    ]
    for change, message in cases:
        _export_config().write(tmp_path)
        _damage(tmp_path / "config.json", change)
        with pytest.raises(ExportError, match=message) as error:
            ExportConfig.read(tmp_path)
        assert "\n" not in str(error.value)


def test_manifest_round_trip_and_one_line_errors(tmp_path):
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "a.onnx").write_bytes(b"graph")
    (tmp_path / "parity.json").write_text("{}")  # written after the manifest: never listed
    manifest = Manifest.of_directory(tmp_path)
    assert list(manifest.files) == ["onnx/a.onnx"] and manifest.validated is False
    replace(manifest, validated=True).write(tmp_path)
    assert Manifest.read(tmp_path) == replace(manifest, validated=True)
    _damage(tmp_path / "manifest.json", lambda v: v.update(signed=True))
    with pytest.raises(ExportError, match="unknown keys signed; export the run again"):
        Manifest.read(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"validated": True}))
    with pytest.raises(ExportError, match="no 'files' table"):
        Manifest.read(tmp_path)
