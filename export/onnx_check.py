"""Checks that an ONNX file is well-formed and runnable: `onnx.checker`, opset, standard operators only.

Imports onnx and `serving.errors` alone (no TensorFlow, no tf2onnx), so validation can re-check files on
any machine.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from export.config import OPSET
from serving.errors import first_line

__all__ = ["check_onnx", "constant_tensors", "nested_graphs", "subgraphs", "unsupported_ops"]


def nested_graphs(graph: onnx.GraphProto):
    """The graphs held directly in `graph`'s nodes' attributes (Loop / If bodies), not their own."""
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield attribute.g
            yield from attribute.graphs


def subgraphs(graph: onnx.GraphProto):
    """`graph` and, recursively, every graph nested in its nodes' attributes (Loop / If bodies)."""
    yield graph
    for sub in nested_graphs(graph):
        yield from subgraphs(sub)


def constant_tensors(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """{name: tensor} of `graph`'s own initializers and `Constant` nodes (a `value` attribute), by
    reference: changing a tensor changes the graph."""
    tensors = {t.name: t for t in graph.initializer}
    tensors.update({node.output[0]: node.attribute[0].t for node in graph.node
                    if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value"})
    return tensors


def unsupported_ops(model: onnx.ModelProto, custom_domains: tuple[str, ...] = ()) -> list[str]:
    """Node types (in any subgraph) that are not standard ONNX operators of the model's opset, besides
    those of `custom_domains` (a library the graph's description names, e.g. onnxruntime-extensions')."""
    opset = {entry.domain: entry.version for entry in model.opset_import}
    bad = set()
    for graph in subgraphs(model.graph):
        for node in graph.node:
            domain = node.domain or ""
            if domain in custom_domains:
                continue
            if domain not in ("", "ai.onnx") or not onnx.defs.has(node.op_type, opset.get(domain, OPSET),
                                                                   domain):
                bad.add(f"{domain + '.' if domain else ''}{node.op_type}")
    return sorted(bad)


def check_onnx(path: Path, custom_domains: tuple[str, ...] = ()) -> onnx.ModelProto:
    """`onnx.checker` (full check with shape inference) and the opset limit; raises ValueError naming the
    file. Operators of `custom_domains` are allowed (`unsupported_ops`)."""
    path = Path(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path))
    except Exception as e:  # ValidationError, InferenceError, DecodeError of a damaged protobuf, OSError
        raise ValueError(f"{path} fails onnx.checker: {first_line(e, 300)}") from None
    opset = max((e.version for e in model.opset_import if e.domain in ("", "ai.onnx")), default=0)
    if opset > OPSET:
        raise ValueError(f"{path} uses opset {opset}, above the contract's {OPSET}")
    bad = unsupported_ops(model, custom_domains)
    if bad:
        raise ValueError(f"{path} holds operators onnxruntime cannot run: {', '.join(bad)}")
    return model
