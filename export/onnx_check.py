"""Checks that an ONNX file is well-formed and runnable: `onnx.checker`, opset, and operators that
onnxruntime runs: standard ONNX ones, onnxruntime's own (`com.microsoft`, the fused decoder attention of
`export.transformer_step`) and those of a library the graph's description names.

Imports onnx, onnxruntime and `serving.errors` alone (no TensorFlow, no tf2onnx), so validation can
re-check files on any machine.
"""

from __future__ import annotations

import functools
from pathlib import Path

import onnx

from export.config import OPSET
from serving.errors import first_line

__all__ = ["ONNXRUNTIME_DOMAIN", "check_onnx", "constant_tensors", "nested_graphs", "nonstandard_ops", "subgraphs",
           "unsupported_ops", "uses_onnxruntime_ops"]

# onnxruntime's contrib operators, which its CPU, CUDA and WebAssembly builds register.
ONNXRUNTIME_DOMAIN = "com.microsoft"


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


@functools.cache
def _onnxruntime_ops() -> frozenset[str]:
    """The `com.microsoft` operators the installed onnxruntime has schemas for."""
    from onnxruntime.capi import onnxruntime_pybind11_state

    return frozenset(schema.name for schema in onnxruntime_pybind11_state.get_all_operator_schema()
                     if schema.domain == ONNXRUNTIME_DOMAIN)


def unsupported_ops(model: onnx.ModelProto, custom_domains: tuple[str, ...] = ()) -> list[str]:
    """Node types (in any subgraph) that are neither standard ONNX operators of the model's opset nor
    onnxruntime's own operators (`ONNXRUNTIME_DOMAIN`), besides those of `custom_domains` (a library the
    graph's description names, e.g. onnxruntime-extensions'). tf2onnx leaves the TensorFlow operations it
    cannot convert in the graph under their own names, which this finds."""
    opset = {entry.domain: entry.version for entry in model.opset_import}
    bad = set()
    for graph in subgraphs(model.graph):
        for node in graph.node:
            domain = node.domain or ""
            if domain in custom_domains:
                continue
            if domain == ONNXRUNTIME_DOMAIN and domain in opset and node.op_type in _onnxruntime_ops():
                continue
            if domain not in ("", "ai.onnx") or not onnx.defs.has(node.op_type, opset.get(domain, OPSET),
                                                                   domain):
                bad.add(f"{domain + '.' if domain else ''}{node.op_type}")
    return sorted(bad)


def nonstandard_ops(model: onnx.ModelProto, custom_domains: tuple[str, ...] = ()) -> list[str]:
    """`domain.op_type` of the nodes (in any subgraph) outside standard ONNX, besides those of
    `custom_domains`: what an export with standard operators only (the default, without
    `export_run(fused_attention=True)`) must not hold."""
    return sorted({f"{node.domain}.{node.op_type}" for graph in subgraphs(model.graph) for node in graph.node
                   if (node.domain or "") not in ("", "ai.onnx", *custom_domains)})


def uses_onnxruntime_ops(model: onnx.ModelProto) -> bool:
    """Whether `model` imports onnxruntime's operator set (a graph composed from a fused step does)."""
    return any(entry.domain == ONNXRUNTIME_DOMAIN for entry in model.opset_import)


def check_onnx(path: Path, custom_domains: tuple[str, ...] = (), onnxruntime_ops: bool = False) -> onnx.ModelProto:
    """`onnx.checker` (full check with shape inference), the opset limit and the operators; raises
    ValueError naming the file. Operators of `custom_domains` are allowed (`unsupported_ops`), and
    onnxruntime's own only with `onnxruntime_ops` (an export with config.json's `operators`
    "onnxruntime"): else the graph has standard operators only."""
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
    extra = [] if onnxruntime_ops else nonstandard_ops(model, custom_domains)
    if extra:
        raise ValueError(f"{path} holds {', '.join(extra)}, but the export has standard operators only; "
                         "export the run again")
    return model
