"""Optional dynamic int8 quantization of the exported graphs (onnxruntime only, no TensorFlow).

Dynamic quantization (onnxruntime `quantize_dynamic`) stores the weights of MatMul and Gather (embedding)
nodes as int8 with one scale per tensor and quantizes activations on the fly, so it needs no calibration
data. Only matrix products with a constant weight are quantized (`MatMulConstBOnly`): the attention
products of two activations stay in float32. The greedy loop's body is an ONNX `Loop` subgraph, quantized
too (`EnableSubgraph`). The quantizer turns a `Gemm` into `MatMul` (+ `Add`) before quantizing only when its
`beta` is 1, and tf2onnx writes the Dense layers of the encoder as two-input `Gemm`s with `beta` 0 (no bias to
scale): those would stay float32, half the encoder's matrix products (`_gemms_for_the_quantizer`).
`quantized_ops` in config.json counts what was quantized. The int8 graphs keep the float32 graphs' inputs
and outputs; the validator reports their quality on the test split next to the float32 figure rather than a
per-number parity.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import onnx

from export.config import COMPOSED_GRAPHS

__all__ = ["INT8_DIR", "quantize_graphs"]

INT8_DIR = "onnx/int8"


def _count_ops(model: onnx.ModelProto) -> Counter:
    from export.onnx_check import subgraphs

    return Counter(node.op_type for graph in subgraphs(model.graph) for node in graph.node)


def _gemms_for_the_quantizer(model: onnx.ModelProto) -> int:
    """Sets `beta` to 1 on every `Gemm` without a `C` input, where it scales nothing (the ONNX spec), so the
    dynamic quantizer, which rewrites only `beta` = 1 `Gemm`s into the `MatMul` it quantizes, takes them
    too (int8 Multi30k encoder, 18 such nodes: 1.15-1.3x faster). Returns how many it changed."""
    from export.onnx_check import subgraphs

    changed = 0
    for graph in subgraphs(model.graph):
        for node in graph.node:
            if node.op_type != "Gemm" or len(node.input) > 2 and node.input[2]:
                continue
            for attribute in node.attribute:
                if attribute.name == "beta" and attribute.f != 1.0:
                    attribute.f = 1.0
                    changed += 1
    return changed


def quantize_graphs(export_dir: Path, graphs: dict[str, dict], state: list[dict], special_ids: dict[str, int]
                    ) -> dict:
    """Writes `onnx/int8/<graph>.onnx` for every graph in `graphs` (the config's `graphs` table): the
    converted ones quantized, the composed beam search (`export.search_graph`) composed again from the
    int8 encoder and decoder step (`state`, `special_ids` as in config.json).

    Returns:
        The config's "quantized" entry: {"method", "weight_type", "graphs": {name: {"file", "quantized_ops"}}}.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    export_dir = Path(export_dir)
    (export_dir / INT8_DIR).mkdir(parents=True, exist_ok=True)
    entries = {}
    root = logging.getLogger()
    level = root.level
    # The quantizer logs every tensor whose type it cannot infer (a whole TypeProto each) on the root logger.
    root.setLevel(logging.ERROR)
    try:
        for name, graph in graphs.items():
            if name in COMPOSED_GRAPHS:
                continue
            relative = f"{INT8_DIR}/{Path(graph['file']).name}"
            model = onnx.load(str(export_dir / graph["file"]))
            _gemms_for_the_quantizer(model)
            quantize_dynamic(model, export_dir / relative, weight_type=QuantType.QInt8,
                             extra_options={"EnableSubgraph": True, "MatMulConstBOnly": True})
            entries[name] = relative
    finally:
        root.setLevel(level)
    for name, relative in list(entries.items()):
        ops = _count_ops(onnx.load(str(export_dir / relative)))
        integer_ops = {op: n for op, n in sorted(ops.items())
                       if op in ("MatMulInteger", "DynamicQuantizeLinear", "DequantizeLinear",
                                 "QuantizeLinear", "ConvInteger", "DynamicQuantizeMatMul")}
        entries[name] = {"file": relative, "quantized_ops": integer_ops}
    quantized = {"method": "onnxruntime dynamic quantization", "weight_type": "int8", "graphs": entries}
    if any(name in graphs for name in COMPOSED_GRAPHS):
        from export.search_graph import compose_search

        entries.update(compose_search(export_dir, graphs, state, special_ids, quantized))
    return quantized
