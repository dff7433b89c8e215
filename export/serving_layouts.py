"""Lays a validated export out for standard inference servers, from its `config.json` alone (no TensorFlow).

- Triton Inference Server: a model repository with one model per ONNX graph (onnxruntime backend) and the
  SavedModel's text-in/text-out signature (TensorFlow backend), each with a `config.pbtxt` that names the
  graph's real inputs and outputs, dtypes and dynamic axes (-1).
- TensorFlow Serving: the SavedModel under `<model_name>/<version>/`, the layout `tensorflow_model_server
  --model_base_path` expects.

Each layout is written to a temporary folder beside its destination and renamed into place, so an
interrupted run never leaves a half-written repository under the final name.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from serving.errors import ExportError
from serving.export_config import ExportConfig

TARGETS = ("triton", "tfserving")

# config.json dtype -> Triton data type (model_config.proto).
TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16",
                 "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL",
                 "string": "TYPE_STRING"}
SAVED_MODEL_NAME = "text_generation_savedmodel"


def _dims(shape: list) -> str:
    """Triton dims: named (dynamic) axes become -1. A scalar is declared [1] and reshaped to []."""
    if not shape:
        return "dims: [ 1 ]\n    reshape: { shape: [ ] }"
    return "dims: [ " + ", ".join("-1" if isinstance(d, str) else str(int(d)) for d in shape) + " ]"


def _tensor_block(kind: str, tensors: list[dict]) -> str:
    entries = []
    for t in tensors:
        if t["dtype"] not in TRITON_DTYPES:
            raise ValueError(f"no Triton data type for {t['name']}'s dtype {t['dtype']!r}")
        entries.append("  {\n"
                       f"    name: \"{t['name']}\"\n"
                       f"    data_type: {TRITON_DTYPES[t['dtype']]}\n"
                       f"    {_dims(t['shape'])}\n"
                       "  }")
    return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"


def triton_config(name: str, platform: str, inputs: list[dict], outputs: list[dict]) -> str:
    """A Triton `config.pbtxt`. Batching stays with the client (max_batch_size 0): the decoder step takes
    a scalar `index` shared by the whole batch, which Triton's batcher cannot concatenate."""
    return (f"name: \"{name}\"\n"
            f"platform: \"{platform}\"\n"
            "max_batch_size: 0\n"
            + _tensor_block("input", inputs)
            + _tensor_block("output", outputs))


def _atomic_dir(final: Path):
    staging = final.with_name(f".{final.name}-staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _install(staging: Path, final: Path) -> None:
    old = final.with_name(f".{final.name}-old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def write_triton_repository(export_dir: Path, destination: Path) -> Path:
    """Writes a Triton model repository for `export_dir` at `destination` and returns it."""
    export_dir, destination = Path(export_dir), Path(destination)
    config = ExportConfig.read(export_dir)
    if config.operators == "onnxruntime":
        raise ExportError(f"{export_dir} uses onnxruntime's fused attention, which needs onnxruntime >= 1.32 "
                          "and Triton's backend may bundle an older one; export the run again without "
                          "--fused-attention")
    staging = _atomic_dir(destination)
    for name in config.graph_names:
        graph = config.graph(name)
        if graph.custom_ops:
            continue  # Triton's onnxruntime backend is not built with onnxruntime-extensions' operators
        model_dir = staging / name
        (model_dir / "1").mkdir(parents=True)
        shutil.copyfile(export_dir / graph.file, model_dir / "1" / "model.onnx")
        (model_dir / "config.pbtxt").write_text(
            triton_config(name, "onnxruntime_onnx", graph.inputs, graph.outputs))
    saved_model = config.saved_model
    if saved_model:
        signature = saved_model["signatures"]["generate_text"]
        model_dir = staging / SAVED_MODEL_NAME
        (model_dir / "1").mkdir(parents=True)
        shutil.copytree(export_dir / saved_model["dir"], model_dir / "1" / "model.savedmodel")
        (model_dir / "config.pbtxt").write_text(
            triton_config(SAVED_MODEL_NAME, "tensorflow_savedmodel", signature["inputs"],
                          signature["outputs"]))
    shutil.copyfile(export_dir / config.tokenizer, staging / "tokenizer.model")
    _install(staging, destination)
    return destination


def tfserving_model_name(config: ExportConfig) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{config.task}_{config.model}")


def write_tfserving_layout(export_dir: Path, destination: Path, version: int = 1) -> Path:
    """Copies the SavedModel to `destination/<model_name>/<version>/`; returns the model's base path."""
    export_dir, destination = Path(export_dir), Path(destination)
    config = ExportConfig.read(export_dir)
    staging = _atomic_dir(destination)
    base = staging / tfserving_model_name(config)
    shutil.copytree(export_dir / config.saved_model_dir, base / str(version))
    _install(staging, destination)
    return destination / tfserving_model_name(config)


def write_target(target: str, run_dir: Path) -> Path:
    """Writes `RUN/<target>/` from `RUN/export/` for a target in `TARGETS`."""
    run_dir = Path(run_dir)
    if target == "triton":
        return write_triton_repository(run_dir / "export", run_dir / "triton")
    if target == "tfserving":
        return write_tfserving_layout(run_dir / "export", run_dir / "tfserving")
    raise ValueError(f"unknown target {target!r}; choose one of: {', '.join(TARGETS)}")
