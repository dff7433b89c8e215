"""The Transformer's encoder written from its weights (`export.transformer_encoder`) against
`Transformer.encode`, without exporting a run: post-norm and pre-norm, padded and unpadded sources of
several lengths, and its size against tf2onnx's."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.functions import describe_model
from export.onnx_check import nonstandard_ops, unsupported_ops
from export.onnx_export import _conform
from export.transformer_encoder import transformer_encoder_graph
from export.transformer_step import step_positions
from keras_nlp_week4.models.registry import build_model

VOCAB = 40


def _model(**overrides):
    model = build_model("transformer", VOCAB, preset="tiny", **overrides)
    model((np.ones((1, 4), "int32"), np.ones((1, 4), "int32")))
    return model


def _encoder_graph(model) -> onnx.ModelProto:
    _, graphs = describe_model(model)
    proto = transformer_encoder_graph(model, graphs["encoder"], step_positions(16))
    _conform(proto, graphs["encoder"], "encoder")
    return proto


@pytest.mark.parametrize("overrides", [{}, {"norm_first": True}, {"num_decoder_layers": 3}],
                         ids=["post-norm", "pre-norm", "more decoder layers"])
def test_the_written_encoder_computes_what_keras_encode_computes(overrides):
    model = _model(**overrides)
    proto = _encoder_graph(model)
    onnx.checker.check_model(proto, full_check=True)
    assert unsupported_ops(proto) == [] and nonstandard_ops(proto) == []
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(0)
    for batch, length in ((1, 1), (1, 7), (3, 6)):
        source = rng.integers(4, VOCAB, (batch, length)).astype(np.int32)
        if batch > 1:
            source[1, 3:] = model.pad_id  # a padded sentence: its padded positions are compared too
        expected = {k: np.asarray(v) for k, v in model.encode(source).items()}
        got = dict(zip(names, session.run(None, {"encoder_input": source}), strict=True))
        assert set(got) == set(expected)
        for name, value in expected.items():
            assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
            np.testing.assert_allclose(got[name], value, atol=1e-5, rtol=1e-5, err_msg=name)


def test_the_written_encoder_is_small():
    """The Multi30k model's shape of encoder (3 layers, 3 decoder layers' cross entries) in well under the
    215 nodes onnxruntime keeps of tf2onnx's: the point of writing it."""
    nodes = len(_encoder_graph(_model(num_encoder_layers=3, num_decoder_layers=3)).graph.node)
    assert nodes <= 85, nodes
