"""Checks that an ONNX file is well-formed and runnable: `onnx.checker`, opset, standard operators only.

Imports onnx alone (no TensorFlow, no tf2onnx), so validation can re-check files on any machine.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from export.config import OPSET

__all__ = ["check_onnx", "subgraphs", "unsupported_ops"]


def subgraphs(graph: onnx.GraphProto):
    """`graph` and, recursively, every graph nested in its nodes' attributes (Loop / If bodies)."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from subgraphs(attribute.g)
            for sub in attribute.graphs:
                yield from subgraphs(sub)


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """Node types (in any subgraph) that are not standard ONNX operators of the model's opset."""
    opset = {entry.domain: entry.version for entry in model.opset_import}
    bad = set()
    for graph in subgraphs(model.graph):
        for node in graph.node:
            domain = node.domain or ""
            if domain not in ("", "ai.onnx") or not onnx.defs.has(node.op_type, opset.get(domain, OPSET),
                                                                   domain):
                bad.add(f"{domain + '.' if domain else ''}{node.op_type}")
    return sorted(bad)


def check_onnx(path: Path) -> onnx.ModelProto:
    """`onnx.checker` (full check with shape inference) and the opset limit; raises ValueError naming the
    file."""
    path = Path(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path))
    except Exception as e:  # ValidationError, InferenceError, DecodeError of a damaged protobuf, OSError
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} fails onnx.checker: {first}") from None
    opset = max((e.version for e in model.opset_import if e.domain in ("", "ai.onnx")), default=0)
    if opset > OPSET:
        raise ValueError(f"{path} uses opset {opset}, above the contract's {OPSET}")
    bad = unsupported_ops(model)
    if bad:
        raise ValueError(f"{path} holds operators onnxruntime cannot run: {', '.join(bad)}")
    return model
