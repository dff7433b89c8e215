"""`beam_search.onnx` (`export.search_graph`): the whole search in one graph, against the serving
runtime's numpy search (`serving.search.beam_search` over the decoder step) on the session's tiny export."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from export.onnx_check import subgraphs
from export.search_graph import GraphBuilder, block_top_k, inline_graph, top_k_block
from serving.options import DecodingOptions
from serving.runtime import Runtime
from serving.search import beam_search, greedy_search


def _session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _in_graph(session, encoder_input, max_length, beam_size, length_penalty, min_length=0):
    names = [o.name for o in session.get_outputs()]
    values = session.run(None, {"encoder_input": encoder_input, "max_length": np.array(max_length, np.int32),
                                "beam_size": np.array(beam_size, np.int32),
                                "length_penalty": np.array(length_penalty, np.float32),
                                "min_length": np.array(min_length, np.int32)})
    return dict(zip(names, values, strict=True))


@pytest.fixture(scope="module")
def sources(runtime, tiny_run):
    lines = [line.split("\t")[0] for line in (tiny_run / "test.tsv").read_text().splitlines()[:24]]
    # One long line among short ones: the batch is padded.
    lines[3] = lines[3] + " " + lines[4]
    encoder_input, _ = runtime.tokenizer.encode_sources(lines, runtime.config.max_source_length)
    return encoder_input


@pytest.mark.parametrize(("beam_size", "length_penalty", "max_length"),
                         [(4, 0.6, None), (2, 0.0, None), (5, 1.5, None), (3, 0.6, 3)])
def test_in_graph_beam_search_is_the_runtimes(runtime, tiny_export, sources, beam_size, length_penalty,
                                              max_length):
    """Tokens identical, scores and the chosen hypotheses' attention equal, at several beams and length
    penalties, and with a `max_length` too short for any hypothesis to finish (then the best unfinished
    one is returned, as the numpy search does)."""
    max_length = max_length or runtime.config.max_target_length
    session = _session(tiny_export / runtime.config.graph_file("beam_search"))
    got = _in_graph(session, sources, max_length, beam_size, length_penalty)
    expected = runtime.generate_ids(sources, DecodingOptions(method="beam", beam_size=beam_size,
                                                             length_penalty=length_penalty,
                                                             max_new_tokens=max_length), return_attention=True)
    np.testing.assert_array_equal(got["tokens"], expected.tokens)
    np.testing.assert_allclose(got["scores"], expected.scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["attention"], expected.attention[:, : got["tokens"].shape[1]],
                               rtol=1e-5, atol=1e-6)
    if max_length == 3:
        assert not (got["tokens"] == runtime.eos_id).any()


def test_min_length_is_the_runtimes_min_new_tokens(runtime, tiny_export, sources):
    """`min_length` forbids EOS before that many tokens as the numpy rule `min_new_tokens` does: the same
    tokens and scores, every output at least that long, and longer than without the rule. At beam 4: the
    tiny model's narrower searches end no output of these within max_target_length, leaving nothing to
    forbid."""
    beam_size = 4
    session = _session(tiny_export / runtime.config.graph_file("beam_search"))
    max_length = runtime.config.max_target_length
    free = _in_graph(session, sources, max_length, beam_size, 0.6)
    ends = [np.flatnonzero(row == runtime.eos_id) for row in free["tokens"]]
    min_length = int(min(end[0] for end in ends if end.size)) + 3  # above the shortest output without the rule
    assert min_length < max_length
    got = _in_graph(session, sources, max_length, beam_size, 0.6, min_length=min_length)
    expected = runtime.generate_ids(sources, DecodingOptions(method="beam", beam_size=beam_size, length_penalty=0.6,
                                                             max_new_tokens=max_length, min_new_tokens=min_length))
    np.testing.assert_array_equal(got["tokens"], expected.tokens)
    np.testing.assert_allclose(got["scores"], expected.scores, rtol=1e-5, atol=1e-5)
    for row in got["tokens"]:
        eos = np.flatnonzero(row == runtime.eos_id)
        assert not eos.size or eos[0] >= min_length
    assert not np.array_equal(got["tokens"][:, : free["tokens"].shape[1]], free["tokens"])


def test_beam_one_without_penalty_is_greedy_decoding(runtime, tiny_export, sources):
    session = _session(tiny_export / runtime.config.graph_file("beam_search"))
    max_length = runtime.config.max_target_length
    got = _in_graph(session, sources, max_length, 1, 0.0)
    greedy = runtime.generate_ids(sources, DecodingOptions(max_new_tokens=max_length))
    np.testing.assert_array_equal(got["tokens"], greedy.tokens)
    np.testing.assert_allclose(got["scores"], greedy.scores, rtol=1e-5, atol=1e-5)


def test_int8_beam_search_is_the_int8_runtimes(tiny_export, sources):
    """The int8 graph is composed from the int8 encoder and step, so it decodes as the int8 runtime does."""
    runtime = Runtime(tiny_export, intra_op_threads=1, int8=True)
    session = _session(tiny_export / runtime.config.graph_file("beam_search", int8=True))
    max_length = runtime.config.max_target_length
    got = _in_graph(session, sources, max_length, 4, 0.6)
    expected = runtime.generate_ids(sources, DecodingOptions(method="beam", max_new_tokens=max_length))
    np.testing.assert_array_equal(got["tokens"], expected.tokens)


def test_the_graph_uses_standard_operators_only(runtime, tiny_export):
    """What onnxruntime-web and other engines run: no contrib (com.microsoft) operators anywhere."""
    for int8 in (False, True):
        model = onnx.load(str(tiny_export / runtime.config.graph_file("beam_search", int8=int8)))
        domains = {node.domain for graph in subgraphs(model.graph) for node in graph.node}
        assert domains <= {"", "ai.onnx"}, domains
        assert {o.domain for o in model.opset_import} <= {"", "ai.onnx", "ai.onnx.ml"}  # standard domains


def test_inlining_refuses_an_unbound_input(tiny_export):
    step = onnx.load(str(tiny_export / "onnx" / "decoder_step.onnx"))
    with pytest.raises(ValueError, match="no value bound to its inputs"):
        inline_graph(step, "step/", {"token_ids": "token"})


# onnxruntime-extensions crashes a process that has imported TensorFlow (which other test modules do), so
# the text graph runs in a child process: this script, fed JSON on stdin, prints texts and scores.
_RUN_TEXT_GRAPH = """
import json, sys
import numpy as np, onnxruntime as ort
from onnxruntime_extensions import get_library_path
request = json.load(sys.stdin)
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.register_custom_ops_library(get_library_path())
session = ort.InferenceSession(request["graph"], options, providers=["CPUExecutionProvider"])
out = []
for beam_size, length_penalty in request["settings"]:
    texts, scores = session.run(None, {"text": np.array(request["lines"], dtype=object),
                                       "max_length": np.array(request["max_length"], np.int32),
                                       "beam_size": np.array(beam_size, np.int32),
                                       "length_penalty": np.array(length_penalty, np.float32)})
    out.append({"texts": [str(t) for t in texts], "scores": scores.tolist()})
print(json.dumps(out))
"""


def test_text_graph_translates_text_as_the_python_runtime_does(runtime, tiny_export, tiny_run):
    """`generate_text.onnx` (onnxruntime-extensions' tokenizer operators around the search): the texts
    `python -m serving` gives, greedy and beam, for test lines and for empty, blank and overlong input."""
    import json
    import subprocess
    import sys

    from export.parity import extensions_library

    if extensions_library() is None:
        pytest.skip("onnxruntime-extensions is not installed (pip install -e '.[extensions]')")
    lines = [line.split("\t")[0] for line in (tiny_run / "test.tsv").read_text().splitlines()[:20]]
    lines += ["", "   ", " ".join(lines[:6])]  # the last one is cut at max_source_length
    settings = [("greedy", 1, 0.0), ("beam", 4, 0.6), ("beam", 2, 1.0)]
    request = {"graph": str(tiny_export / runtime.config.graph_file("generate_text")), "lines": lines,
               "max_length": runtime.config.max_target_length, "settings": [s[1:] for s in settings]}
    done = subprocess.run([sys.executable, "-c", _RUN_TEXT_GRAPH], input=json.dumps(request),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for (method, beam_size, length_penalty), got in zip(settings, json.loads(done.stdout), strict=True):
        expected = runtime.generate(lines, DecodingOptions(method=method, beam_size=beam_size,
                                                           length_penalty=length_penalty))
        assert got["texts"] == [r.text for r in expected], method
        np.testing.assert_allclose(got["scores"], [r.score for r in expected], rtol=1e-5, atol=1e-5)


def test_the_top_k_step_chooses_what_the_logits_step_chooses(tiny_export, sources):
    """Beam search over `decoder_step_top_k` (beam_size x beam_size candidates per sentence) returns what
    it returns over the whole logits: ids, scores and attention, float32 and int8, several beams; with a
    constraint (which needs the logits) the runtime steps with the logits."""
    for int8 in (False, True):
        runtime = Runtime(tiny_export, intra_op_threads=1, int8=int8)
        assert runtime.has_top_k_step
        max_length = runtime.config.max_target_length
        for beam_size in (1, 2, 4, 7):
            state = runtime.initial_state(sources, max_length)
            args = (state, len(sources), max_length, runtime.bos_id, runtime.eos_id, runtime.pad_id)
            kwargs = dict(beam_size=beam_size, length_penalty=0.6, shared=runtime.shared_state,
                          return_attention=True, num_hypotheses=2)
            full = beam_search(runtime.step, *args, **kwargs)
            top_k = beam_search(runtime.step, *args, top_k_step=runtime.in_place_step(top_k=beam_size), **kwargs)
            np.testing.assert_array_equal(top_k.tokens, full.tokens, err_msg=f"int8={int8} beam {beam_size}")
            np.testing.assert_allclose(top_k.scores, full.scores, rtol=1e-6)
            np.testing.assert_allclose(top_k.attention, full.attention, rtol=1e-6, atol=1e-7)
            for got, expected in zip(top_k.hypotheses, full.hypotheses, strict=True):  # the n-best lists
                assert [ids.tolist() for ids, _ in got] == [ids.tolist() for ids, _ in expected]
                np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-6)
        # Greedy over the one-column top-k step: the same ids, scores and attention as over the logits.
        state = runtime.initial_state(sources, max_length)
        args = (state, len(sources), max_length, runtime.bos_id, runtime.eos_id, runtime.pad_id)
        full = greedy_search(runtime.step, *args, return_attention=True)
        top_one = greedy_search(runtime.step, *args, return_attention=True, top_k_step=runtime.in_place_step(top_k=1))
        np.testing.assert_array_equal(top_one.tokens, full.tokens, err_msg=f"int8={int8} greedy")
        np.testing.assert_allclose(top_one.scores, full.scores, rtol=1e-5)
        np.testing.assert_allclose(top_one.attention, full.attention, rtol=1e-6, atol=1e-7)


def test_the_runtime_steps_with_the_top_k_step_only_without_constraints(runtime, sources, monkeypatch):
    calls = []
    original = runtime.in_place_step

    def spy(top_k=None):
        calls.append(top_k)
        return original(top_k=top_k)

    monkeypatch.setattr(runtime, "in_place_step", spy)
    runtime.generate_ids(sources[:2], DecodingOptions(method="beam", beam_size=3))
    assert 3 in calls
    calls.clear()
    runtime.generate_ids(sources[:2], DecodingOptions(method="beam", beam_size=3, repetition_penalty=1.2))
    assert calls == [None]
    calls.clear()
    runtime.generate_ids(sources[:2], DecodingOptions(method="greedy"))
    assert 1 in calls
    calls.clear()
    runtime.generate_ids(sources[:2], DecodingOptions(method="greedy", no_repeat_ngram_size=2))
    assert calls == [None]
    calls.clear()
    runtime.generate_ids(sources[:2], DecodingOptions(method="sample", seed=0))
    assert calls == [None]


def _top_k_graph(vocab_size: int) -> ort.InferenceSession:
    g = GraphBuilder(iter(range(10**6)), "t/")
    block_top_k(g, "values", "k", vocab_size, outputs=["top", "ids"])
    graph = helper.make_graph(g.nodes, "top_k", [helper.make_tensor_value_info("values", TensorProto.FLOAT,
                                                                                ["rows", vocab_size]),
                                                  helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("top", TensorProto.FLOAT, ["rows", "k"]),
                               helper.make_tensor_value_info("ids", TensorProto.INT64, ["rows", "k"])],
                              g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_top_k_block_widths():
    assert top_k_block(8000) == 64 and top_k_block(2048) == 64 and top_k_block(6000) == 60
    assert top_k_block(2000) == 50  # the test Multi30k-shaped export's
    assert top_k_block(1000) is None  # small: a plain TopK
    assert top_k_block(4099) is None  # a prime: no block width divides it


@pytest.mark.parametrize("vocab_size", [8000, 2048, 4099])
def test_block_top_k_is_top_k_ties_included(vocab_size):
    """The k best by blocks against a stable sort (descending values, ties to the lower id), on values
    with many exact ties, for k from 1 to more than the number of blocks."""
    session = _top_k_graph(vocab_size)
    rng = np.random.default_rng(vocab_size)
    for rows in (1, 3, 33):
        for ties in (False, True):
            values = rng.normal(size=(rows, vocab_size)).astype(np.float32) * 3
            if ties:
                values = np.round(values)  # about 20 distinct values: ties everywhere
            for k in (1, 2, 4, 7, 40):
                top, ids = session.run(None, {"values": values, "k": np.array([k], np.int64)})
                expected = np.argsort(-values, axis=1, kind="stable")[:, :k]
                np.testing.assert_array_equal(ids, expected, err_msg=f"rows {rows} ties {ties} k {k}")
                np.testing.assert_array_equal(top, np.take_along_axis(values, expected, axis=1))


@pytest.mark.large
def test_the_searches_by_blocks_on_a_multi30k_shaped_export(multi30k_export):
    """The 2,000-piece export's top-k step and in-graph search take the top k by blocks (inside the
    search's `Loop` too): the runtime over the top-k step chooses what it chooses over the logits, and the
    in-graph beam search returns the runtime's."""
    runtime = Runtime(multi30k_export, intra_op_threads=1)
    def block_maxima(name):  # ReduceMax nodes over the log-probabilities reshaped to (rows, 40, 50)
        graphs = list(subgraphs(onnx.load(str(multi30k_export / runtime.config.graph_file(name))).graph))
        shapes = {t.name: onnx.numpy_helper.to_array(t).tolist() for g in graphs for t in g.initializer}
        reshaped = {n.output[0] for g in graphs for n in g.node
                    if n.op_type == "Reshape" and shapes.get(n.input[1]) == [0, 40, 50]}
        return sum(n.op_type == "ReduceMax" and n.input[0] in reshaped for g in graphs for n in g.node)

    assert block_maxima("decoder_step_top_k") == 1 and block_maxima("beam_search") == 1
    lines = [line.split("\t")[0] for line in (multi30k_export.parent / "test.tsv").read_text().splitlines()[:16]]
    sources, _ = runtime.tokenizer.encode_sources(lines, runtime.config.max_source_length)
    max_length = runtime.config.max_target_length
    session = _session(multi30k_export / runtime.config.graph_file("beam_search"))
    for beam_size in (1, 4):
        state = runtime.initial_state(sources, max_length)
        args = (state, len(sources), max_length, runtime.bos_id, runtime.eos_id, runtime.pad_id)
        kwargs = dict(beam_size=beam_size, length_penalty=0.6, shared=runtime.shared_state)
        full = beam_search(runtime.step, *args, **kwargs)
        top_k = beam_search(runtime.step, *args, top_k_step=runtime.in_place_step(top_k=beam_size), **kwargs)
        np.testing.assert_array_equal(top_k.tokens, full.tokens)
        got = _in_graph(session, sources, max_length, beam_size, 0.6)
        expected = runtime.generate_ids(sources, DecodingOptions(method="beam", beam_size=beam_size,
                                                                 length_penalty=0.6, max_new_tokens=max_length))
        np.testing.assert_array_equal(got["tokens"], expected.tokens)
        np.testing.assert_allclose(got["scores"], expected.scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("int8", [False, True])
def test_a_batch_one_request_runs_in_the_graph_with_the_numpy_searchs_output(tiny_export, tiny_run, int8):
    """`Runtime.generate` of one text, greedy or beam, runs `beam_search.onnx` (`runs_in_graph`) and returns
    what the numpy search returns (text, ids, score, attention); a request the graph cannot serve (two
    texts, an n-best list, a rule, sampling) and the numpy-only runtime never load the graph."""
    runtime = Runtime(tiny_export, intra_op_threads=1, int8=int8)
    numpy_only = Runtime(tiny_export, intra_op_threads=1, int8=int8, in_graph_search=False)
    lines = [line.split("\t")[0] for line in (tiny_run / "test.tsv").read_text().splitlines()[:6]]
    options = DecodingOptions(method="beam", beam_size=3)
    for other in (replace(options, num_hypotheses=2), replace(options, no_repeat_ngram_size=2),
                  replace(options, target_prefix="1"), DecodingOptions(method="sample", seed=1)):
        assert not runtime.runs_in_graph(1, other, runtime._constraints(other, 1))
        runtime.generate(lines[:1], other)
    wider = replace(options, beam_size=runtime.config.vocab_size + 1)  # the numpy search takes any width
    assert not runtime.runs_in_graph(1, wider) and runtime.runs_in_graph(1, replace(wider, beam_size=3))
    runtime.generate(lines[:2], options)
    assert runtime._beam_search is None and runtime.has_in_graph_search and not numpy_only.has_in_graph_search
    for line in lines:
        for method in (options, DecodingOptions()):
            got = runtime.generate([line], method, return_attention=True)[0].to_json(tokens=True, attention=True)
            expected = numpy_only.generate([line], method, return_attention=True)[0].to_json(tokens=True,
                                                                                             attention=True)
            assert got["text"] == expected["text"] and got["token_ids"] == expected["token_ids"]
            # int8: the same ids, scores about 2e-4 apart (relative) between the loop's inlined int8 graphs
            # and the step's own session; float32 to the tolerance of the rest of this file.
            tolerance = {"rel": 1e-3} if int8 else {"abs": 1e-5}
            assert got["score"] == pytest.approx(expected["score"], **tolerance)
            np.testing.assert_allclose(got["attention"], expected["attention"], atol=1e-3 if int8 else 1e-6)
    assert runtime._beam_search is not None and numpy_only._beam_search is None
