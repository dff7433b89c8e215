"""tf2onnx conversion of the encoder, decoder-step and greedy-generation functions (opset 18), and the
Transformer's decoder step written from its weights instead (`export.transformer_step`, format 2).

Each graph is converted from a `tf.function` with a named input signature (`export.functions`), then
tidied so it matches its description in `export.config` exactly: outputs in the contract's order, the
dynamic axes named "batch" / "source_length" / "max_length" instead of tf2onnx's `unk__N`, with two of
tf2onnx's many-node lowerings folded back into single operators (`export.onnx_fusions`), and checked
with `onnx.checker` (full check, with shape inference) plus a scan for operators that tf2onnx could not
convert (it leaves those in the graph and only logs them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import onnx
import tf2onnx
from onnx import helper

from export.config import OPSET
from export.functions import GraphFunctions
from export.onnx_check import check_onnx
from export.onnx_fusions import fuse_graph_patterns

__all__ = ["convert_graph", "save_graph", "write_transformer_encoder", "write_transformer_step"]

def _set_shape(value: onnx.ValueInfoProto, shape: list) -> None:
    """Declares `shape` (ints and symbolic axis names) on a graph input/output."""
    tensor_type = value.type.tensor_type
    tensor_type.ClearField("shape")
    tensor_type.shape.SetInParent()  # a scalar keeps an empty, but present, shape
    for dim in shape:
        new = tensor_type.shape.dim.add()
        if isinstance(dim, str):
            new.dim_param = dim
        else:
            new.dim_value = int(dim)


def _conform(model: onnx.ModelProto, description: Mapping, graph: str) -> None:
    """Orders and shapes the graph's inputs and outputs as the description says."""
    for kind, values in (("inputs", model.graph.input), ("outputs", model.graph.output)):
        by_name = {v.name: v for v in values}
        wanted = [entry["name"] for entry in description[kind]]
        if set(by_name) != set(wanted):
            raise ValueError(f"{graph}: the converted graph has {kind} {sorted(by_name)}, "
                             f"the description lists {wanted}")
        ordered = []
        for entry in description[kind]:
            value = onnx.ValueInfoProto()
            value.CopyFrom(by_name[entry["name"]])
            _set_shape(value, entry["shape"])
            ordered.append(value)
        del values[:]
        values.extend(ordered)


def convert_graph(functions: GraphFunctions, graph: str, path: Path, opset: int = OPSET) -> Path:
    """Converts one graph of `functions` to ONNX at `path` and checks it."""
    description = functions.graphs[graph]
    tf2onnx_logger = logging.getLogger("tf2onnx")
    level = tf2onnx_logger.level
    tf2onnx_logger.setLevel(logging.ERROR)
    try:
        model, _ = tf2onnx.convert.from_function(
            functions.functions[graph], input_signature=functions.signature(graph), opset=opset)
    finally:
        tf2onnx_logger.setLevel(level)
    _conform(model, description, graph)
    # Fewer nodes, same numbers: onnxruntime's per-node overhead dominates a decoder step.
    folded = fuse_graph_patterns(model)
    logging.getLogger(__name__).info("%s: %s", graph, folded)
    return save_graph(model, description, graph, path, "keras-nlp-week4 export via tf2onnx")


def write_transformer_step(model, description: Mapping, path: Path, max_positions: int,
                           opset: int = OPSET, fused_attention: bool = False) -> Path:
    """The Transformer's decoder step written from its weights (`export.transformer_step`, with
    onnxruntime's fused self-attention or standard operators only), saved and checked like a converted
    graph."""
    from export.transformer_step import transformer_step_graph

    proto = transformer_step_graph(model, description, max_positions, opset, fused_attention=fused_attention)
    _conform(proto, description, "decoder_step")
    return save_graph(proto, description, "decoder_step", path, "keras-nlp-week4 export/transformer_step",
                      onnxruntime_ops=fused_attention)


def write_transformer_encoder(model, description: Mapping, path: Path, max_positions: int,
                              opset: int = OPSET) -> Path:
    """The Transformer's encoder written from its weights (`export.transformer_encoder`), saved and
    checked like a converted graph."""
    from export.transformer_encoder import transformer_encoder_graph

    proto = transformer_encoder_graph(model, description, max_positions, opset)
    _conform(proto, description, "encoder")
    return save_graph(proto, description, "encoder", path, "keras-nlp-week4 export/transformer_encoder")


def save_graph(model: onnx.ModelProto, description: Mapping, graph: str, path: Path, producer: str,
               onnxruntime_ops: bool = False) -> Path:
    """Names, saves and checks (`check_onnx`) one graph of the export; standard operators only unless
    `onnxruntime_ops` (the fused step)."""
    model.doc_string = f"keras-nlp-week4 {graph} graph (see config.json)"
    model.producer_name = producer
    helper.set_model_props(model, {"graph": graph})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    check_onnx(path, onnxruntime_ops=onnxruntime_ops)
    return path
