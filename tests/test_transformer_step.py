"""The Transformer's decoder step written from its weights (`export.transformer_step`) against
`Transformer.decode_step`, step by step, without exporting a run: post-norm and pre-norm, tied and untied
output projections, padded sources, and beams reading their sentence's cross-attention entries once."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.functions import describe_model
from export.onnx_check import unsupported_ops
from export.onnx_export import _conform
from export.transformer_step import step_positions, supports, transformer_step_graph
from keras_nlp_week4.models.registry import build_model

VOCAB, SOURCES, BEAMS, SOURCE_LENGTH, MAX_LENGTH, STEPS = 40, 3, 2, 6, 9, 6


def _model(**overrides):
    model = build_model("transformer", VOCAB, preset="tiny", **overrides)
    model((np.ones((1, 4), "int32"), np.ones((1, 4), "int32")))
    return model


def _step_graph(model) -> onnx.ModelProto:
    _, graphs = describe_model(model)
    proto = transformer_step_graph(model, graphs["decoder_step"], step_positions(MAX_LENGTH))
    _conform(proto, graphs["decoder_step"], "decoder_step")
    return proto


@pytest.mark.parametrize("overrides", [{}, {"norm_first": True}, {"target_vocab_size": VOCAB + 5}],
                         ids=["post-norm, tied", "pre-norm", "untied projection"])
def test_the_written_step_computes_what_keras_decode_step_computes(overrides):
    model = _model(**overrides)
    proto = _step_graph(model)
    onnx.checker.check_model(proto, full_check=True)
    assert unsupported_ops(proto) == []  # standard operators only: onnxruntime-web runs it too
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    rng = np.random.default_rng(0)
    source = rng.integers(4, VOCAB, (SOURCES, SOURCE_LENGTH)).astype(np.int32)
    source[1, 3:] = model.pad_id  # a padded sentence
    encoded = {k: np.asarray(v) for k, v in model.encode(source).items()}
    cache = {k: np.asarray(v) for k, v in model.initial_cache(SOURCES * BEAMS, MAX_LENGTH).items()}
    # Keras gets every entry repeated per beam; the graph the shared ones once per sentence.
    keras_state = {**{k: np.repeat(v, BEAMS, 0) for k, v in encoded.items()}, **cache}
    onnx_state = {**encoded, **cache}
    token = rng.integers(4, model.target_vocab_size, (SOURCES * BEAMS,)).astype(np.int32)
    for index in range(STEPS):
        logits, updates, attention = model.decode_step(token, np.int32(index), keras_state)
        got = dict(zip(names, session.run(None, {"token_ids": token, "index": np.array(index, np.int32),
                                                 **onnx_state}), strict=True))
        np.testing.assert_allclose(got["logits"], np.asarray(logits), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(got["attention"], np.asarray(attention), atol=1e-6)
        assert set(updates) == {n.removesuffix("_out") for n in names if n.endswith("_out")}
        for name, value in updates.items():
            np.testing.assert_allclose(got[f"{name}_out"], np.asarray(value), atol=1e-5, rtol=1e-5)
            keras_state[name], onnx_state[name] = np.asarray(value), got[f"{name}_out"]
        token = np.asarray(logits).argmax(-1).astype(np.int32)
    # Padding gets no attention; each row sums to one.
    assert np.all(got["attention"][2:4, ..., 3:] == 0.0)
    np.testing.assert_allclose(got["attention"].sum(-1), 1.0, atol=1e-5)


def test_the_written_step_is_small():
    """A 2-layer step in well under the ~230 nodes tf2onnx makes of it: the point of writing it."""
    nodes = len(_step_graph(_model()).graph.node)
    assert nodes <= 100, nodes


def test_supports_says_why_not():
    assert supports(_model()) is None
    assert supports(build_model("seq2seq-gru", VOCAB, preset="tiny")) == "not a Transformer"
    with pytest.raises(ValueError, match="not a Transformer"):
        transformer_step_graph(build_model("bahdanau", VOCAB, preset="tiny"), {}, 8)
