"""The onnxruntime runtime against the Keras model it was exported from, and its TensorFlow-free promise."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
from helpers import ROOT, run_module

from serving.errors import RequestError
from serving.runtime import DecodingOptions

FORBIDDEN = ("tensorflow", "keras", "tf2onnx", "tensorflow_text", "keras_nlp_week4", "tf_keras")


@pytest.fixture(scope="module")
def keras_run(tiny_run):
    from keras_nlp_week4.runs import load_run

    return load_run(tiny_run, compile=False)


@pytest.fixture(scope="module")
def test_sources(keras_run):
    return [source for source, _ in keras_run.pairs("test")]


def _keras_generate(keras_run, texts, method="greedy", **options):
    from keras_nlp_week4.data.pipeline import encode_sources
    from keras_nlp_week4.decoding import generate

    config = keras_run.config
    ids = config.special_ids
    encoder_input = encode_sources(texts, keras_run.tokenizer, config.max_source_length)
    return generate(keras_run.model, encoder_input, config.max_target_length, ids["bos"], ids["eos"],
                    ids["pad"], method=method, **options)


def test_nothing_under_serving_imports_tensorflow_or_keras():
    for path in sorted((ROOT / "serving").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_generating_leaves_tensorflow_and_keras_unimported(tiny_export):
    script = textwrap.dedent(f"""
        import json, sys
        from serving.runtime import DecodingOptions, Runtime
        import serving.batching, serving.cli, serving.loadtest, serving.server
        runtime = Runtime({str(tiny_export)!r})
        outputs = [g.text for g in runtime.generate(["9/27/94", "sept. 3, 2001"])]
        runtime.generate(["9/27/94"], DecodingOptions(method="beam"), return_attention=True)
        runtime.generate(["9/27/94"], DecodingOptions(method="sample", seed=0))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r})
        print(json.dumps({{"outputs": outputs, "loaded": loaded}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["outputs"]) == 2
    assert result["loaded"] == []


def test_tokenizer_ids_equal_the_training_tokenizer(runtime, keras_run):
    from keras_nlp_week4.data.pipeline import encode_sources

    texts = [s for split in ("test", "validation") for s, _ in keras_run.pairs(split)]
    texts += ["9" * 200, "Ünïcödé 27 ☃ 1994", "  leading and trailing  ", "a\tb"]
    expected = encode_sources(texts, keras_run.tokenizer, runtime.max_source_length)
    got, lengths = runtime.tokenizer.encode_sources(texts, runtime.max_source_length)
    assert got.dtype == np.int32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(lengths, (expected != 0).sum(axis=1))
    assert lengths.max() == runtime.max_source_length  # the long text was truncated, EOS kept


def test_greedy_equals_keras_on_the_whole_test_split(runtime, keras_run, test_sources):
    from keras_nlp_week4.evaluation import decode_texts

    expected = decode_texts(keras_run, test_sources)
    got = [g.text for g in runtime.generate(test_sources)]
    mismatches = [(s, e, g) for s, e, g in zip(test_sources, expected, got, strict=True) if e != g]
    assert len(test_sources) >= 500 and not mismatches, mismatches[:5]


def test_greedy_ids_equal_keras_ids(runtime, keras_run, test_sources):
    texts = test_sources[:64]
    keras_tokens = _keras_generate(keras_run, texts).tokens
    for row, generation in zip(keras_tokens, runtime.generate(texts), strict=True):
        assert generation.token_ids == runtime.tokenizer.output_ids(row)


def test_mixed_lengths_in_one_batch_equal_one_at_a_time(runtime, test_sources):
    texts = sorted(test_sources[:40], key=len)[::4] + ["9/27/94", "Tuesday, September 27, 1994 at noon"]
    batched = runtime.generate(texts, batch_size=64)
    for text, generation in zip(texts, batched, strict=True):
        alone = runtime.generate([text])[0]
        assert alone.token_ids == generation.token_ids
        assert alone.score == pytest.approx(generation.score, abs=1e-4)


def test_beam_search_equals_keras_beam_search(runtime, keras_run, test_sources):
    texts = test_sources[:6]
    expected = _keras_generate(keras_run, texts, "beam", beam_size=3, length_penalty=0.6)
    got = runtime.generate(texts, DecodingOptions(method="beam", beam_size=3, length_penalty=0.6))
    for row, score, generation in zip(expected.tokens, expected.scores, got, strict=True):
        assert generation.token_ids == runtime.tokenizer.output_ids(row)
        assert generation.score == pytest.approx(float(score), abs=1e-3)


def test_beam_of_one_is_greedy(runtime, test_sources):
    texts = test_sources[:8]
    beam = runtime.generate(texts, DecodingOptions(method="beam", beam_size=1, length_penalty=0.0))
    greedy = runtime.generate(texts)
    assert [g.token_ids for g in beam] == [g.token_ids for g in greedy]


def test_sampling_is_seeded_and_top_k_one_is_greedy(runtime, test_sources):
    texts = test_sources[:8]
    options = DecodingOptions(method="sample", temperature=1.5, top_p=0.95, seed=7)
    first = [g.token_ids for g in runtime.generate(texts, options)]
    again = [g.token_ids for g in runtime.generate(texts, options)]
    other = [g.token_ids for g in runtime.generate(texts, DecodingOptions(method="sample", temperature=1.5,
                                                                          seed=8))]
    assert first == again and first != other
    top1 = runtime.generate(texts, DecodingOptions(method="sample", top_k=1, seed=3))
    assert [g.token_ids for g in top1] == [g.token_ids for g in runtime.generate(texts)]


def test_a_seeded_sample_does_not_depend_on_the_batching(runtime, test_sources):
    texts = test_sources[:9]
    options = DecodingOptions(method="sample", temperature=1.5, seed=21)
    together = [g.token_ids for g in runtime.generate(texts, options, batch_size=64)]
    in_pairs = [g.token_ids for g in runtime.generate(texts, options, batch_size=2)]
    assert together == in_pairs
    # Explicit per-text seeds: text 4 with the seed it had at position 4, alone.
    alone = runtime.generate([texts[4]], options, seeds=[(21, 4)])[0].token_ids
    assert alone == together[4]


def test_per_row_seeds_in_sample_search():
    """A row's draws come from its own generator: the same with or without other rows."""
    from serving.search import sample_search

    table = np.random.default_rng(0).normal(size=(6, 5, 6))

    def step(tokens, index, state):
        return table[tokens, index], {}, None

    rows = sample_search(step, {}, 3, 5, 2, 3, seed=[(1, 0), (1, 1), (1, 2)]).tokens
    middle = sample_search(step, {}, 1, 5, 2, 3, seed=[(1, 1)]).tokens
    np.testing.assert_array_equal(rows[1, : middle.shape[1]], middle[0])
    with pytest.raises(ValueError, match="2 seeds for a batch of 3"):
        sample_search(step, {}, 3, 5, 2, 3, seed=[1, 2])


def test_attention_equals_keras_and_is_a_distribution_over_the_source(runtime, keras_run,
                                                                      test_sources):
    texts = [test_sources[0], "9/27/94"]
    expected = _keras_generate(keras_run, texts, return_attention=True)
    got = runtime.generate(texts, return_attention=True)
    cfg = keras_run.model.get_config()
    for b, generation in enumerate(got):
        steps, src = len(generation.tokens), len(generation.source_tokens)
        assert generation.attention.shape == (steps, cfg["num_decoder_layers"], cfg["num_heads"], src)
        np.testing.assert_allclose(generation.attention, expected.attention[b, :steps, ..., :src], atol=1e-4)
        np.testing.assert_allclose(generation.attention.sum(-1), 1.0, atol=1e-4)
        assert generation.alignment().shape == (steps, src)
        body = generation.to_json(attention=True)
        assert np.array(body["attention"]).shape == (steps, src)
        assert body["source_tokens"][-1] == "</s>" and len(body["tokens"]) == steps


def test_max_new_tokens_bounds_the_output(runtime, test_sources):
    for limit in (1, 3):
        for generation in runtime.generate(test_sources[:5], DecodingOptions(max_new_tokens=limit)):
            assert len(generation.tokens) <= limit
    full = runtime.generate(test_sources[:5])
    assert max(len(g.tokens) for g in full) <= runtime.max_target_length


def test_max_new_tokens_above_the_model_limit_is_refused(runtime):
    too_many = DecodingOptions(max_new_tokens=runtime.max_target_length + 1)
    with pytest.raises(RequestError, match=f"above the limit {runtime.max_target_length}"):
        runtime.generate(["9/27/94"], too_many)
    with pytest.raises(RequestError, match="above the limit"):
        runtime.generate_ids(np.ones((1, 3), np.int32), too_many)


def test_texts_are_checked(runtime):
    assert runtime.check_texts(["9/27/94"]) == [len(runtime.tokenizer.encode(["9/27/94"])[0]) + 1]
    for texts, status, message in [
        ([""], 422, "input 0 is empty"),
        (["ok", "   "], 422, "input 1 is empty"),
        (["\ud800"], 422, "lone surrogate"),
        ([3], 422, "must be a string"),
        (["9" * 100], 413, "tokens long"),
    ]:
        with pytest.raises(RequestError, match=message) as error:
            runtime.check_texts(texts, max_input_tokens=48)
        assert error.value.status == status
    with pytest.raises(TypeError):
        runtime.generate("a single string")


@pytest.mark.parametrize("options, message", [
    (DecodingOptions(method="nucleus"), "unknown method"),
    (DecodingOptions(max_new_tokens=0), "max_new_tokens must be >= 1"),
    (DecodingOptions(beam_size=0), "beam_size must be >= 1"),
    (DecodingOptions(length_penalty=float("nan")), "length_penalty"),
    (DecodingOptions(temperature=0.0), "temperature"),
    (DecodingOptions(top_k=-1), "top_k"),
    (DecodingOptions(top_p=1.5), "top_p"),
    (DecodingOptions(seed=-1), "seed"),
])
def test_invalid_options_are_request_errors(options, message):
    with pytest.raises(RequestError, match=message):
        options.validate()


def test_option_limits():
    with pytest.raises(RequestError, match="above the limit 12"):
        DecodingOptions(max_new_tokens=13).validate(max_new_tokens_limit=12)
    with pytest.raises(RequestError, match="beam_size 9 is above the limit 8"):
        DecodingOptions(beam_size=9).validate(max_beam_size=8)
    DecodingOptions(max_new_tokens=12, beam_size=8).validate(max_new_tokens_limit=12, max_beam_size=8)


def test_serving_installs_without_tensorflow(tmp_path):
    """`pip install ./serving` builds a distribution that requires no TensorFlow or Keras."""
    source = tmp_path / "src"
    shutil.copytree(ROOT / "serving", source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    built = run_module("pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                       "-w", str(tmp_path / "wheel"), timeout=120)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith("METADATA"))
    assert {"serving/runtime.py", "serving/server.py", "serving/search.py"} <= names
    requires = [line.split(":", 1)[1].strip().lower() for line in metadata.splitlines()
                if line.startswith("Requires-Dist:")]
    assert any(r.startswith("onnxruntime") for r in requires)
    assert not [r for r in requires if r.split(">")[0].split("=")[0].split(";")[0].strip() in FORBIDDEN]


def test_readme_documents_serving():
    text = (ROOT / "README.md").read_text()
    assert "## Serving" in text and "make serve" in text and "make infer" in text


@pytest.mark.parametrize("method,kwargs", [("greedy", {}), ("beam", {"beam_size": 3, "length_penalty": 0.6})])
def test_the_in_place_step_searches_as_the_pure_step(runtime, method, kwargs):
    """The searches' IO-bound step (caches written in place) gives the ids, scores and attention of
    `Runtime.step`, and really writes in place: its updates are the arrays it was given."""
    from serving.search import SEARCHES

    encoder_input, _ = runtime.tokenizer.encode_sources(["9/27/94", "sept. 3, 2001", "1 jan 2000"],
                                                        runtime.max_source_length)
    if method == "beam":
        kwargs = {**kwargs, "shared": runtime.shared_state}
    results = []
    for step in (runtime.step, runtime.in_place_step()):
        state = runtime.initial_state(encoder_input, runtime.max_target_length)
        results.append(SEARCHES[method](step, state, 3, runtime.max_target_length, runtime.bos_id,
                                        runtime.eos_id, runtime.pad_id, return_attention=True, **kwargs))
    pure, in_place = results
    np.testing.assert_array_equal(in_place.tokens, pure.tokens)
    np.testing.assert_allclose(in_place.scores, pure.scores, rtol=1e-6)
    np.testing.assert_allclose(in_place.attention, pure.attention, atol=1e-6)

    assert runtime.config.in_place_updates == [s["name"] for s in runtime.state_specs if s["updated"]]
    step = runtime.in_place_step()
    state = runtime.initial_state(encoder_input, 4)
    first, updates, _ = step(np.full((3,), runtime.bos_id, np.int32), 0, state)
    assert updates and all(updates[name] is state[name] for name in updates)
    assert all(state[name][:, :, 0].any() and not state[name][:, :, 1:].any() for name in updates)
    # From the second call on, the logits come back in the array bound as the output, rewritten.
    values = first.copy()
    second, _, _ = step(first.argmax(-1).astype(np.int32), 1, state)
    assert second is first and not np.array_equal(second, values)


def test_growing_caches_double_from_a_few_positions_and_change_nothing(runtime, monkeypatch):
    """Caches that start with 2 positions and double as the output grows (`growing_caches`) give the
    texts, scores and attention of caches sized for the whole output up front (the tiny model's
    max_target_length is under the runtime's 16 first positions), in every search; the written
    positions are copied, doubling stops at max_length."""
    from serving import runtime as runtime_module
    from serving.runtime import growing_caches

    texts = ["9/27/94", "sept. 3, 2001", "1 jan 2000", "Thursday, September 18, 2025"]
    options = [DecodingOptions(), DecodingOptions(method="beam", beam_size=3),
               DecodingOptions(method="sample", seed=3, temperature=0.8)]
    assert runtime.max_target_length <= runtime_module.FIRST_CACHE_POSITIONS
    full = [runtime.generate(texts, o, return_attention=True) for o in options]
    monkeypatch.setattr(runtime_module, "FIRST_CACHE_POSITIONS", 2)
    grown = [runtime.generate(texts, o, return_attention=True) for o in options]
    for a, b in zip(full, grown, strict=True):
        assert [g.text for g in a] == [g.text for g in b]
        np.testing.assert_allclose([g.score for g in a], [g.score for g in b], rtol=1e-6)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x.attention, y.attention, atol=1e-6)

    seen = []
    def step(token_ids, index, state):
        seen.append(state["cache"].shape[2])
        state["cache"][:, :, index] = index + 1  # what a step writes at `index`
        return None, {"cache": state["cache"]}, None
    state = {"cache": np.zeros((2, 3, 2, 4), np.float32), "other": np.ones(1)}
    wrapped = growing_caches(step, {"cache": 2}, max_length=5)
    for index in range(5):
        _, updates, _ = wrapped(None, index, state)
        state.update(updates)
    assert seen == [2, 2, 4, 4, 5]  # doubled, capped at max_length
    np.testing.assert_array_equal(state["cache"][0, 0, :, 0], [1, 2, 3, 4, 5])
    assert growing_caches(step, {}, 5) is step
