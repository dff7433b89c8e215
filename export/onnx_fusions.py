"""Graph rewrites after tf2onnx: the same numbers from fewer nodes.

On these small models onnxruntime spends most of a decoder step on per-node overhead, not on arithmetic
(the dates Transformer's step graph: about 480 nodes, 13 of them matrix products), so every node saved
is time saved per generated token. Two patterns that tf2onnx emits are folded back into one standard
ONNX operator each:

- `tf.where` (TF `SelectV2`): tf2onnx writes `Add(Mul(Cast(c), x), Mul(y, Cast(Not(c))))` on purpose
  (its comment: old onnxruntime's `Where` was slow). That is 6 nodes, and it turns an infinite or NaN
  value in the branch *not* taken into NaN (0 * inf). `Where(c, x, y)` is one node and is exactly TF's
  semantics.
- Keras `LayerNormalization` (mean and variance from `tf.nn.moments`, then `rsqrt`): 13 nodes become
  one `LayerNormalization` (ONNX opset 17+), with the same epsilon, scale and bias.

- Keras `Dense` on a 3-D input (TF `Tensordot`): `Reshape(MatMul(Reshape(x, [-1, d]), W), shape)` with
  `shape = Concat(Gather(Shape(x), leading axes), [f])`, 8 nodes, is `MatMul(x, W)`: ONNX `MatMul`
  broadcasts over the leading axes. Six per decoder step of a 3-layer Transformer.

The rewrites only replace nodes whose pattern matches exactly (constant epsilon, constant 1-D scale and
bias, reduction over the last axis); anything else is left alone. Export validation then compares the
rewritten graphs against Keras as it does for every graph, so a wrong fold cannot go unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.onnx_check import constant_tensors, nested_graphs, subgraphs

__all__ = ["fuse_graph_patterns"]

# LayerNormalization became a standard ONNX operator in opset 17.
_LAYER_NORM_OPSET = 17


class _Graph:
    """Producer/consumer lookups over one (sub)graph."""

    def __init__(self, graph: onnx.GraphProto, outer_constants: dict | None = None):
        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        # A Loop body reads the weights of the graph around it by name. Tensors, turned into arrays
        # only when a pattern asks for one.
        self.constants = {**(outer_constants or {}), **constant_tensors(graph)}

    def op(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def constant(self, name: str) -> np.ndarray | None:
        tensor = self.constants.get(name)
        if tensor is None:
            node = self.producer.get(name)
            # A constant reshaped (Keras broadcasts gamma/beta to the input's rank): still a constant.
            if node is not None and node.op_type == "Reshape":
                tensor = self.constants.get(node.input[0])
        return None if tensor is None else numpy_helper.to_array(tensor)


def _remove_dead_nodes(graph: onnx.GraphProto) -> None:
    """Drops nodes none of whose outputs is used (in this graph, a nested one, or as an output), then
    the initializers nothing reads any more."""
    # Every name read inside the Loop/If bodies (outer-scope reads included); removing nodes of
    # `graph` does not change them.
    nested = set()
    for sub in nested_graphs(graph):
        for inner in subgraphs(sub):
            nested.update(name for node in inner.node for name in node.input)
            nested.update(o.name for o in inner.output)
    while True:
        used = {name for node in graph.node for name in node.input}
        used |= {o.name for o in graph.output} | nested
        keep = [n for n in graph.node if any(out in used for out in n.output if out)]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
    initializers = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def _graphs(graph: onnx.GraphProto, outer_constants: dict | None = None) -> Iterator[_Graph]:
    """`graph` and, recursively, every Loop/If body in it (which sees the outer graphs' constants)."""
    current = _Graph(graph, outer_constants)
    yield current
    for sub in nested_graphs(graph):
        yield from _graphs(sub, current.constants)


def _either(pair, check):
    """`check(a, b)` for the pair in both orders (commutative ops); the first match or None."""
    a, b = pair
    return check(a, b) or check(b, a)


def _fold_adds(g: _Graph, match: Callable, rewrite: Callable[[onnx.NodeProto, tuple], onnx.NodeProto]
               ) -> int:
    """Replaces every two-input `Add` whose inputs `match` (in either order) by `rewrite(add, found)`;
    returns how many it replaced."""
    folded = 0
    for node in g.graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        found = _either(node.input, match)
        if found is None:
            continue
        node.CopyFrom(rewrite(node, found))
        folded += 1
    return folded


def _fold_tensordots(g: _Graph) -> int:
    """`Reshape(MatMul(Reshape(x, [-1, d]), W (d, f)), Concat(Gather(Shape(x), [0..r-2]), [f]))`, the
    leading axes gathered from x's own shape, -> `MatMul(x, W)`."""
    folded = 0
    for node in g.graph.node:
        if node.op_type != "Reshape":
            continue
        matmul = g.op(node.input[0], "MatMul")
        flatten = g.op(matmul.input[0], "Reshape") if matmul is not None else None
        weight = g.constant(matmul.input[1]) if matmul is not None else None
        if flatten is None or weight is None or weight.ndim != 2:
            continue
        x = flatten.input[0]
        flat_shape = g.constant(flatten.input[1])
        if flat_shape is None or flat_shape.tolist() != [-1, weight.shape[0]]:
            continue
        if not _is_leading_shape_of(g, node.input[1], x, weight.shape[1]):
            continue
        node.CopyFrom(helper.make_node("MatMul", [x, matmul.input[1]], list(node.output), name=node.name))
        folded += 1
    return folded


def _is_leading_shape_of(g: _Graph, name: str, x: str, last: int) -> bool:
    """`name` computes `shape(x)[:-1] + [last]` as tf2onnx writes it: (Cast of) Concat(Gather((Cast of)
    Shape(x), constant leading axes), constant [last])."""
    concat = _through_cast(g, name, "Concat")
    if concat is None or len(concat.input) != 2:
        return False
    gather, tail = g.op(concat.input[0], "Gather"), g.constant(concat.input[1])
    if gather is None or tail is None or tail.reshape(-1).tolist() != [last]:
        return False
    shape = _through_cast(g, gather.input[0], "Shape")
    axes = g.constant(gather.input[1])
    if shape is None or shape.input[0] != x or axes is None:
        return False
    rank = _rank(g, x)
    leading = axes.reshape(-1).tolist()
    return leading == list(range(len(leading))) and (rank is None or len(leading) == rank - 1)


def _through_cast(g: _Graph, name: str, op_type: str) -> onnx.NodeProto | None:
    """The `op_type` node producing `name`, directly or through one `Cast` (tf2onnx casts shapes)."""
    cast = g.op(name, "Cast")
    return g.op(cast.input[0], op_type) if cast is not None else g.op(name, op_type)


def _fold_selects(g: _Graph) -> int:
    """`Add(Mul(Cast(c), x), Mul(y, Cast(Not(c))))` -> `Where(c, x, y)`."""

    def match(a, b):
        taken, other = g.op(a, "Mul"), g.op(b, "Mul")
        if taken is None or other is None:
            return None
        for cast_c, x in (taken.input, reversed(taken.input)):
            cast = g.op(cast_c, "Cast")
            if cast is None:
                continue
            for cast_not, y in (other.input, reversed(other.input)):
                cast2 = g.op(cast_not, "Cast")
                negation = g.op(cast2.input[0], "Not") if cast2 is not None else None
                if negation is not None and negation.input[0] == cast.input[0]:
                    return cast.input[0], x, y
        return None

    return _fold_adds(g, match, lambda add, found: helper.make_node(
        "Where", list(found), list(add.output), name=add.name))


def _fold_layer_norms(g: _Graph) -> int:
    """tf2onnx's lowering of Keras LayerNormalization (axis -1) -> `LayerNormalization`.

    Matched (the multiplier `m = Reciprocal(Sqrt(Add(var, eps))) * gamma`):
    ``out = Add(Mul(x, m), Add(Mul(Neg(mean), m), beta))`` with ``mean = ReduceMean(x)`` and
    ``var = ReduceMean(Mul(Sub(x, mean), Sub(x, mean)))``, both over the last axis only.
    """
    new_initializers = []

    def match(scaled_name, shifted_name):
        scaled, shifted = g.op(scaled_name, "Mul"), g.op(shifted_name, "Add")
        if scaled is None or shifted is None:
            return None
        for x, m in (scaled.input, reversed(scaled.input)):
            found = _either(shifted.input, lambda a, b, x=x, m=m: _layer_norm_shift(g, x, m, a, b))
            if found is not None:
                return (x, *found)
        return None

    def rewrite(add: onnx.NodeProto, found: tuple) -> onnx.NodeProto:
        x, gamma, beta, epsilon = found
        # Named after the output, which is unique (node names may be empty).
        scale_name, bias_name = f"{add.output[0]}/ln_scale", f"{add.output[0]}/ln_bias"
        new_initializers.extend([numpy_helper.from_array(gamma.reshape(-1).astype(np.float32), scale_name),
                                 numpy_helper.from_array(beta.reshape(-1).astype(np.float32), bias_name)])
        return helper.make_node("LayerNormalization", [x, scale_name, bias_name], list(add.output),
                                name=add.name, axis=-1, epsilon=float(epsilon))

    folded = _fold_adds(g, match, rewrite)
    g.graph.initializer.extend(new_initializers)
    return folded


def _layer_norm_shift(g: _Graph, x: str, m: str, neg_part: str, beta_name: str):
    """Checks `Mul(Neg(mean), m)` + beta and the multiplier `m`; returns (gamma, beta, epsilon)."""
    shift = g.op(neg_part, "Mul")
    beta = g.constant(beta_name)
    if shift is None or beta is None or m not in shift.input:
        return None
    negated = g.op(shift.input[0] if shift.input[1] == m else shift.input[1], "Neg")
    if negated is None or not _is_last_axis_mean(g, negated.input[0], x):
        return None
    mean = negated.input[0]
    scale = g.op(m, "Mul")
    if scale is None:
        return None
    for inverse_name, gamma_name in (scale.input, reversed(scale.input)):
        inverse, gamma = g.op(inverse_name, "Reciprocal"), g.constant(gamma_name)
        root = g.op(inverse.input[0], "Sqrt") if inverse is not None else None
        plus_eps = g.op(root.input[0], "Add") if root is not None else None
        if gamma is None or plus_eps is None:
            continue
        for var_name, eps_name in (plus_eps.input, reversed(plus_eps.input)):
            eps = g.constant(eps_name)
            if eps is None or eps.size != 1 or not _is_variance(g, var_name, x, mean):
                continue
            if gamma.size != beta.size or gamma.size != max(gamma.shape or (1,)):
                return None  # not 1-D along the normalised axis
            return gamma, beta, float(eps.reshape(-1)[0])
    return None


def _reduced_axes(g: _Graph, node: onnx.NodeProto) -> list[int] | None:
    """The axes a ReduceMean keeps-dims-reduces over (None: not a constant, keep-dims reduction)."""
    if not next((a.i for a in node.attribute if a.name == "keepdims"), 1):
        return None
    axes = g.constant(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    if axes is None:
        attribute = next((a for a in node.attribute if a.name == "axes"), None)
        axes = np.array(attribute.ints) if attribute is not None else None
    return None if axes is None else [int(a) for a in axes.reshape(-1)]


def _is_last_axis_mean(g: _Graph, name: str, x: str) -> bool:
    node = g.op(name, "ReduceMean")
    if node is None or node.input[0] != x:
        return False
    axes = _reduced_axes(g, node)
    return axes is not None and len(axes) == 1 and _is_last(axes[0], g, x)


def _is_last(axis: int, g: _Graph, x: str) -> bool:
    if axis == -1:
        return True
    rank = _rank(g, x)
    return rank is not None and axis == rank - 1


def _rank(g: _Graph, name: str) -> int | None:
    for value in list(g.graph.value_info) + list(g.graph.input) + list(g.graph.output):
        if value.name == name and value.type.tensor_type.HasField("shape"):
            return len(value.type.tensor_type.shape.dim)
    return None


def _is_variance(g: _Graph, name: str, x: str, mean: str) -> bool:
    node = g.op(name, "ReduceMean")
    square = g.op(node.input[0], "Mul") if node is not None else None
    if square is None or square.input[0] != square.input[1]:
        return False
    difference = g.op(square.input[0], "Sub")
    if difference is None or list(difference.input) != [x, mean]:
        return False
    # The same reduction as the mean's (over the last axis, keeping it).
    axes = _reduced_axes(g, node)
    return axes is not None and axes == _reduced_axes(g, g.producer[mean])


def fuse_graph_patterns(model: onnx.ModelProto) -> dict[str, int]:
    """Rewrites `model` in place (every subgraph too); returns how many patterns of each kind it folded
    and how many nodes it removed."""
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)
    before = sum(len(graph.node) for graph in subgraphs(model.graph))
    counts = {"where": 0, "layer_normalization": 0, "matmul": 0}
    for g in list(_graphs(model.graph)):
        counts["where"] += _fold_selects(g)
        counts["matmul"] += _fold_tensordots(_Graph(g.graph, g.constants))
        if opset >= _LAYER_NORM_OPSET:
            g = _Graph(g.graph, g.constants)  # fresh lookups after the first rewrite
            counts["layer_normalization"] += _fold_layer_norms(g)
    # Bodies are cleaned before the graphs around them (their reads of outer names count as uses).
    for graph in reversed(list(subgraphs(model.graph))):
        _remove_dead_nodes(graph)
    counts["nodes_removed"] = before - sum(len(graph.node) for graph in subgraphs(model.graph))
    return counts
