"""`export.onnx_fusions` on hand-built graphs in tf2onnx's exact shape, checked against numpy.

Whole exported models are checked against Keras by the export tests; these pin down each pattern."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.onnx_fusions import fuse_graph_patterns


def _run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _model(nodes, inputs, output, initializers=(), opset=18) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, [output], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _select_nodes(condition: str, x: str, y: str, out: str, prefix: str) -> list:
    """tf2onnx's lowering of `tf.where(condition, x, y)`."""
    return [
        helper.make_node("Cast", [condition], [f"{prefix}c"], to=TensorProto.FLOAT),
        helper.make_node("Not", [condition], [f"{prefix}n"]),
        helper.make_node("Cast", [f"{prefix}n"], [f"{prefix}nc"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [f"{prefix}c", x], [f"{prefix}m1"]),
        helper.make_node("Mul", [y, f"{prefix}nc"], [f"{prefix}m2"]),
        helper.make_node("Add", [f"{prefix}m1", f"{prefix}m2"], [out]),
    ]


def test_select_becomes_one_where_with_tf_semantics():
    inputs = [helper.make_tensor_value_info("c", TensorProto.BOOL, [2, 3]),
              helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
              helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])]
    output = helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 3])
    model = _model(_select_nodes("c", "x", "y", "out", "s/"), inputs, output)
    c = np.array([[True, False, True], [False, True, False]])
    x = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    y = np.array([[-1, -np.inf, -3], [-4, -np.inf, -6]], np.float32)  # -inf where c is True: not taken
    feeds = {"c": c, "x": x, "y": y}
    before = _run(model, feeds)
    assert np.isnan(before[0, 1]) or np.isnan(before[1, 1])  # 0 * -inf: the lowering's flaw

    counts = fuse_graph_patterns(model)
    assert counts["where"] == 1 and counts["nodes_removed"] == 5
    assert [n.op_type for n in model.graph.node] == ["Where"]
    np.testing.assert_array_equal(_run(model, feeds), np.where(c, x, y))


def _layer_norm_nodes(x: str, out: str, epsilon_name: str) -> list:
    """tf2onnx's lowering of Keras LayerNormalization over the last axis (`tf.nn.moments` + rsqrt)."""
    return [
        helper.make_node("Reshape", ["gamma", "shape"], ["gamma_r"]),
        helper.make_node("Reshape", ["beta", "shape"], ["beta_r"]),
        helper.make_node("ReduceMean", [x, "axes"], ["mean"], keepdims=1),
        helper.make_node("Neg", ["mean"], ["neg"]),
        helper.make_node("Sub", [x, "mean"], ["diff"]),
        helper.make_node("Mul", ["diff", "diff"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "axes2"], ["var"], keepdims=1),
        helper.make_node("Add", ["var", epsilon_name], ["var_eps"]),
        helper.make_node("Sqrt", ["var_eps"], ["root"]),
        helper.make_node("Reciprocal", ["root"], ["inv"]),
        helper.make_node("Mul", ["inv", "gamma_r"], ["m"]),
        helper.make_node("Mul", [x, "m"], ["xm"]),
        helper.make_node("Mul", ["neg", "m"], ["nm"]),
        helper.make_node("Add", ["nm", "beta_r"], ["shift"]),
        helper.make_node("Add", ["xm", "shift"], [out]),
    ]


def _layer_norm_model(axis: int = -1, epsilon_constant: bool = True):
    d = 8
    rng = np.random.default_rng(0)
    gamma = rng.normal(size=d).astype(np.float32)
    beta = rng.normal(size=d).astype(np.float32)
    initializers = [numpy_helper.from_array(gamma, "gamma"), numpy_helper.from_array(beta, "beta"),
                    numpy_helper.from_array(np.array([1, 1, d], np.int64), "shape"),
                    numpy_helper.from_array(np.array([axis], np.int64), "axes"),
                    numpy_helper.from_array(np.array([axis], np.int64), "axes2")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "len", d])]
    if epsilon_constant:
        initializers.append(numpy_helper.from_array(np.array(1e-3, np.float32), "eps"))
    else:
        inputs.append(helper.make_tensor_value_info("eps", TensorProto.FLOAT, []))
    output = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "len", d])
    model = _model(_layer_norm_nodes("x", "out", "eps"), inputs, output, initializers)
    return model, gamma, beta


def test_layer_norm_becomes_one_operator_with_the_same_output():
    model, gamma, beta = _layer_norm_model()
    x = np.random.default_rng(1).normal(3.0, 2.0, size=(2, 5, 8)).astype(np.float32)
    mean = x.mean(-1, keepdims=True)
    expected = (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-3) * gamma + beta
    np.testing.assert_allclose(_run(model, {"x": x}), expected, atol=1e-5)

    counts = fuse_graph_patterns(model)
    assert counts["layer_normalization"] == 1
    assert [n.op_type for n in model.graph.node] == ["LayerNormalization"]
    (node,) = model.graph.node
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attributes["axis"] == -1 and attributes["epsilon"] == pytest.approx(1e-3)
    np.testing.assert_allclose(_run(model, {"x": x}), expected, atol=1e-5)
    # The old gamma/beta/shape/axes initializers are gone with the nodes that read them.
    assert sorted(t.name for t in model.graph.initializer) == ["out/ln_bias", "out/ln_scale"]


@pytest.mark.parametrize("change", ["first axis", "epsilon is an input", "opset 16"])
def test_layer_norm_is_left_alone_when_the_pattern_differs(change):
    model, _, _ = _layer_norm_model(axis=1 if change == "first axis" else -1,
                                    epsilon_constant=change != "epsilon is an input")
    if change == "opset 16":
        model.opset_import[0].version = 16
    before = [n.op_type for n in model.graph.node]
    counts = fuse_graph_patterns(model)
    assert counts["layer_normalization"] == 0 and counts["nodes_removed"] == 0
    assert [n.op_type for n in model.graph.node] == before


def test_a_select_inside_a_loop_body_is_folded_and_outer_names_stay_alive():
    # A Loop whose body reads `c` and `y` from the outer graph: the outer nodes producing them must stay.
    body_inputs = [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                   helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                   helper.make_tensor_value_info("acc", TensorProto.FLOAT, [3])]
    body_outputs = [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                    helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [3])]
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"])]
        + _select_nodes("c", "acc", "y", "picked", "b/")
        + [helper.make_node("Add", ["picked", "one"], ["acc_out"])],
        "body", body_inputs, body_outputs,
        [numpy_helper.from_array(np.ones(3, np.float32), "one")])
    nodes = [helper.make_node("Neg", ["y_in"], ["y"]),
             helper.make_node("Loop", ["trips", "", "start"], ["out"], body=body)]
    inputs = [helper.make_tensor_value_info("c", TensorProto.BOOL, [3]),
              helper.make_tensor_value_info("y_in", TensorProto.FLOAT, [3]),
              helper.make_tensor_value_info("start", TensorProto.FLOAT, [3])]
    output = helper.make_tensor_value_info("out", TensorProto.FLOAT, [3])
    model = _model(nodes, inputs, output, [numpy_helper.from_array(np.array(3, np.int64), "trips")])
    feeds = {"c": np.array([True, False, True]), "y_in": np.array([5, 6, 7], np.float32),
             "start": np.zeros(3, np.float32)}
    before = _run(model, feeds)

    counts = fuse_graph_patterns(model)
    assert counts["where"] == 1
    assert [n.op_type for n in model.graph.node] == ["Neg", "Loop"]
    np.testing.assert_array_equal(_run(model, feeds), before)


def test_tensordot_becomes_one_broadcasting_matmul():
    """Keras Dense on (batch, time, d) as tf2onnx writes it: flatten, MatMul, reshape to the input's
    leading axes + [f]."""
    weight = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Cast", ["s"], ["s32"], to=TensorProto.INT32),
        helper.make_node("Gather", ["s32", "free"], ["lead"], axis=0),
        helper.make_node("Concat", ["lead", "tail"], ["shape32"], axis=0),
        helper.make_node("Cast", ["shape32"], ["shape"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["x", "flat"], ["x2"]),
        helper.make_node("MatMul", ["x2", "w"], ["y2"]),
        helper.make_node("Reshape", ["y2", "shape"], ["y"]),
    ]
    initializers = [numpy_helper.from_array(weight, "w"),
                    numpy_helper.from_array(np.array([0, 1], np.int32), "free"),
                    numpy_helper.from_array(np.array([3], np.int32), "tail"),
                    numpy_helper.from_array(np.array([-1, 4], np.int64), "flat")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", 4])],
                   helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "t", 3]), initializers)
    x = np.random.default_rng(1).normal(size=(2, 5, 4)).astype(np.float32)
    before = _run(model, {"x": x})
    counts = fuse_graph_patterns(model)
    assert counts["matmul"] == 1 and counts["nodes_removed"] == 7
    assert [n.op_type for n in model.graph.node] == ["MatMul"]
    np.testing.assert_allclose(_run(model, {"x": x}), before, rtol=1e-6)
    np.testing.assert_allclose(before, x @ weight, rtol=1e-5)


def test_tensordot_reshaped_elsewhere_is_left_alone():
    """An output reshaped to a shape that is not x's leading axes + [f] must stay as it is."""
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["x2"]),
             helper.make_node("MatMul", ["x2", "w"], ["y2"]),
             helper.make_node("Reshape", ["y2", "other"], ["y"])]
    initializers = [numpy_helper.from_array(np.ones((4, 3), np.float32), "w"),
                    numpy_helper.from_array(np.array([-1, 4], np.int64), "flat"),
                    numpy_helper.from_array(np.array([-1], np.int64), "other")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 4])],
                   helper.make_tensor_value_info("y", TensorProto.FLOAT, [30]), initializers)
    assert fuse_graph_patterns(model)["matmul"] == 0 and len(model.graph.node) == 3
