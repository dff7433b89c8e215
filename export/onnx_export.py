"""tf2onnx conversion of the encoder, decoder-step and greedy-generation functions (opset 18).

Each graph is converted from a `tf.function` with a named input signature (`export.functions`), then
tidied so it matches its description in `export.config` exactly: outputs in the contract's order, the
dynamic axes named "batch" / "source_length" / "max_length" instead of tf2onnx's `unk__N`, and checked
with `onnx.checker` (full check, with shape inference) plus a scan for operators that tf2onnx could not
convert (it leaves those in the graph and only logs them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import tf2onnx
from onnx import helper

from export.config import OPSET
from export.functions import GraphFunctions
from export.onnx_check import check_onnx

__all__ = ["CUSTOM_OP_HANDLERS", "convert_graph"]

_INT32_SIGN_BIT = np.int32(np.iinfo(np.int32).min)


def _float_sign_bitcast(ctx, node, name, args):
    """tf2onnx handler for TensorFlow's `Bitcast` float32 -> int32, used only to read the sign bit.

    `keras.ops.argmax` on floats maps -0.0 to -tiny before `tf.argmax` (keras-team/keras, JAX issue
    24280) and finds -0.0 with `signbit(x) = (bitcast<int32>(x) & INT32_MIN) < 0`. ONNX has no bit
    reinterpretation, but the sign bit is `x < 0 or 1 / x < 0` (1 / -0.0 = -inf), so the bitcast becomes
    `where(sign, INT32_MIN, 0)`, which keeps exactly the bit the only consumer reads. Any other use of
    Bitcast is refused rather than converted wrongly.
    """
    from tf2onnx import utils

    source_dtype = ctx.get_dtype(node.input[0])
    target_dtype = node.output_dtypes[0]
    consumers = ctx.find_output_consumers(node.output[0])
    sign_bit_only = all(
        consumer.type == "BitwiseAnd" and any(
            ctx.is_const(i) and np.array_equal(ctx.get_tensor_value(i, as_list=False), _INT32_SIGN_BIT)
            for i in consumer.input if i != node.output[0])
        for consumer in consumers)
    if (source_dtype != onnx.TensorProto.FLOAT or target_dtype != onnx.TensorProto.INT32
            or not sign_bit_only):
        raise ValueError(f"{node.name}: only the float32 sign-bit Bitcast of keras.ops.argmax converts")
    x = node.input[0]
    zero = ctx.make_const(utils.make_name("zero_f"), np.array(0.0, np.float32)).output[0]
    negative = ctx.make_node("Less", [x, zero]).output[0]
    reciprocal = ctx.make_node("Reciprocal", [x]).output[0]
    negative_zero = ctx.make_node("Less", [reciprocal, zero]).output[0]
    sign = ctx.make_node("Or", [negative, negative_zero]).output[0]
    sign_bit = ctx.make_const(utils.make_name("sign_bit"), _INT32_SIGN_BIT).output[0]
    zero_i = ctx.make_const(utils.make_name("zero_i"), np.array(0, np.int32)).output[0]
    shapes, dtypes = node.output_shapes, node.output_dtypes
    ctx.remove_node(node.name)
    ctx.make_node("Where", [sign, sign_bit, zero_i], outputs=node.output, name=node.name, shapes=shapes,
                  dtypes=dtypes)


CUSTOM_OP_HANDLERS = {"Bitcast": (_float_sign_bitcast, [])}


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
            functions.functions[graph], input_signature=functions.signature(graph), opset=opset,
            custom_op_handlers=CUSTOM_OP_HANDLERS)
    finally:
        tf2onnx_logger.setLevel(level)
    _conform(model, description, graph)
    model.doc_string = f"keras-nlp-week4 {graph} graph (see config.json)"
    model.producer_name = "keras-nlp-week4 export via tf2onnx"
    helper.set_model_props(model, {"graph": graph})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    check_onnx(path)
    return path
