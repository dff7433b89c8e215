"""The dynamic-int8 pass (`export.quantize`) on hand-made graphs: which matrix products it quantizes."""

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from export.quantize import _gemms_for_the_quantizer


def _dense_graph(beta: float, trans_b: int) -> onnx.ModelProto:
    """x (4, 64) -> Gemm(x, W) without a bias, as tf2onnx writes a Dense layer of the encoder."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(64, 32) if not trans_b else (32, 64)).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "w"], ["y"], alpha=1.0, beta=beta, transB=trans_b)
    graph = helper.make_graph([node], "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32])],
                              [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_a_two_input_gemm_with_beta_zero_is_quantized(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    x = np.random.default_rng(1).normal(size=(4, 64)).astype(np.float32)
    for trans_b in (0, 1):
        model = _dense_graph(beta=0.0, trans_b=trans_b)
        expected = _run(model, x)
        # Without the pass the quantizer leaves it float32: the reason the pass exists.
        quantize_dynamic(model, tmp_path / "before.onnx", weight_type=QuantType.QInt8)
        assert "MatMulInteger" not in Counter(n.op_type for n in onnx.load(str(tmp_path / "before.onnx")).graph.node)
        assert _gemms_for_the_quantizer(model) == 1
        np.testing.assert_array_equal(_run(model, x), expected)  # beta scales no C: the same graph
        quantize_dynamic(model, tmp_path / "after.onnx", weight_type=QuantType.QInt8)
        quantized = onnx.load(str(tmp_path / "after.onnx"))
        assert Counter(n.op_type for n in quantized.graph.node)["MatMulInteger"] == 1
        got = _run(quantized, x)
        assert not np.array_equal(got, expected)  # int8 weights, not the float32 product
        np.testing.assert_allclose(got, expected, atol=0.05 * np.abs(expected).max())


def test_a_gemm_whose_bias_is_scaled_is_left_alone():
    model = _dense_graph(beta=0.0, trans_b=0)
    node = model.graph.node[0]
    node.input.append("b")
    model.graph.initializer.append(numpy_helper.from_array(np.ones(32, np.float32), "b"))
    assert _gemms_for_the_quantizer(model) == 0
    assert [a.f for a in node.attribute if a.name == "beta"] == [0.0]
