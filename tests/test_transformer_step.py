"""The Transformer's decoder step written from its weights (`export.transformer_step`) against
`Transformer.decode_step`, step by step, without exporting a run: post-norm and pre-norm, tied and untied
output projections, padded sources, beams reading their sentence's cross-attention entries once, with
onnxruntime's fused self-attention and with standard operators only, the caches copied or written in
place."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.functions import describe_model
from export.onnx_check import nonstandard_ops, unsupported_ops
from export.onnx_export import _conform
from export.transformer_step import step_positions, supports, transformer_step_graph
from keras_nlp_week4.models.registry import build_model

VOCAB, SOURCES, BEAMS, SOURCE_LENGTH, MAX_LENGTH, STEPS = 40, 3, 2, 6, 9, 6


def _model(**overrides):
    model = build_model("transformer", VOCAB, preset="tiny", **overrides)
    model((np.ones((1, 4), "int32"), np.ones((1, 4), "int32")))
    return model


def _step_graph(model, fused_attention: bool = False) -> onnx.ModelProto:
    _, graphs = describe_model(model)
    proto = transformer_step_graph(model, graphs["decoder_step"], step_positions(MAX_LENGTH),
                                   fused_attention=fused_attention)
    _conform(proto, graphs["decoder_step"], "decoder_step")
    return proto


@pytest.mark.parametrize("fused_attention", [False, True], ids=["standard operators", "fused attention"])
@pytest.mark.parametrize("overrides", [{}, {"norm_first": True}, {"target_vocab_size": VOCAB + 5}],
                         ids=["post-norm, tied", "pre-norm", "untied projection"])
def test_the_written_step_computes_what_keras_decode_step_computes(overrides, fused_attention):
    model = _model(**overrides)
    proto = _step_graph(model, fused_attention)
    onnx.checker.check_model(proto, full_check=True)
    assert unsupported_ops(proto) == []
    # Standard operators only, for any runtime; or onnxruntime's decoding attention, one per layer.
    fused = [n for n in proto.graph.node if n.op_type == "DecoderMaskedMultiHeadAttention"]
    assert len(fused) == (len(model.decoder_layers) if fused_attention else 0)
    assert nonstandard_ops(proto) == (["com.microsoft.DecoderMaskedMultiHeadAttention"] if fused_attention else [])
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
    """A 2-layer step in well under the ~230 nodes tf2onnx makes of it: the point of writing it; the
    Multi30k model's 3 layers in under 100 with the fused attention (93 against 126)."""
    nodes = len(_step_graph(_model()).graph.node)
    assert nodes <= 100, nodes
    three_layers = _model(num_decoder_layers=3)
    standard, fused = (len(_step_graph(three_layers, f).graph.node) for f in (False, True))
    assert fused < 100 and fused <= standard - 30, (standard, fused)


def test_the_fused_step_writes_the_caches_in_place():
    """Bound as input and output at once (what `serving.runtime.Runtime.in_place_step` does), the fused
    attention writes each new key and value into the caller's buffer and gives what a plain run gives."""
    model = _model()
    session = ort.InferenceSession(_step_graph(model, True).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(1)
    source = rng.integers(4, VOCAB, (SOURCES, SOURCE_LENGTH)).astype(np.int32)
    encoded = {k: np.ascontiguousarray(v) for k, v in model.encode(source).items()}
    plain = {k: np.asarray(v) for k, v in model.initial_cache(SOURCES, MAX_LENGTH).items()}
    buffers = {k: np.array(v) for k, v in plain.items()}
    binding = session.io_binding()
    binding.bind_output("logits")  # the first of `get_outputs()`
    values = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in buffers.items()}  # share the arrays
    for name, value in values.items():
        binding.bind_ortvalue_input(name, value)
        binding.bind_ortvalue_output(f"{name}_out", value)
    for name, value in encoded.items():
        binding.bind_cpu_input(name, value)
    token = np.full((SOURCES,), 1, np.int32)  # any id: BOS here
    for index in range(STEPS):
        feeds = {"token_ids": token, "index": np.array(index, np.int32)}
        got = dict(zip(names, session.run(None, {**feeds, **encoded, **plain}), strict=True))
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        session.run_with_iobinding(binding)
        logits = binding.get_outputs()[0].numpy()
        np.testing.assert_allclose(logits, got["logits"], atol=1e-6)
        for name in plain:
            plain[name] = got[f"{name}_out"]
            np.testing.assert_array_equal(buffers[name], plain[name])  # written into the caller's array
        token = got["logits"].argmax(-1).astype(np.int32)
    assert np.abs(buffers["self_key_0"][:, :, :STEPS]).max() > 0  # the steps did write


def test_supports_says_why_not():
    assert supports(_model()) is None
    assert supports(build_model("seq2seq-gru", VOCAB, preset="tiny")) == "not a Transformer"
    with pytest.raises(ValueError, match="not a Transformer"):
        transformer_step_graph(build_model("bahdanau", VOCAB, preset="tiny"), {}, 8)
