"""The decoding rules every search honours (`serving.search.Constraints`, named in `DecodingOptions`):
a forced target prefix, the repetition penalty, no repeated n-grams, a minimum length, and n-best lists
from beam search. Each against a small numpy or brute-force reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from test_search import BOS, EOS, PAD, VOCAB, markov_step, sequence_logprob

from serving.options import DecodingOptions, OptionError
from serving.search import (
    SEARCHES,
    Constraints,
    _repeating_ngram_completions,
    beam_search,
    greedy_search,
    length_penalty_factor,
    sample_search,
)

KWARGS = {"greedy": {}, "beam": {"beam_size": 3, "length_penalty": 0.6}, "sample": {"seed": 4}}


def search(method: str, step, batch: int, max_length: int, constraints=None, **extra):
    state = {"steps": np.zeros((batch, 1), np.int64)}
    return SEARCHES[method](step, state, batch, max_length, BOS, EOS, PAD, constraints=constraints,
                            **{**KWARGS[method], **extra})


def output(row: np.ndarray) -> list[int]:
    """The ids up to and including EOS."""
    ids = [int(t) for t in row if t != PAD]
    return ids[: ids.index(EOS) + 1] if EOS in ids else ids


def repeater_step(favourite: int = 4):
    """A model that always prefers the same token, then EOS: the case the repetition rules are for."""

    def step(tokens, index, state):
        logits = np.full((len(tokens), VOCAB), -2.0)
        logits[:, PAD] = logits[:, BOS] = -1e9
        logits[:, favourite] = 3.0
        logits[:, 5] = 1.0
        logits[:, 1] = 0.5
        logits[:, EOS] = 0.0 if index < 6 else 5.0
        return logits, {"steps": state["steps"] + 1}, None

    return step


@pytest.mark.parametrize("method", list(SEARCHES))
def test_the_defaults_change_nothing(method):
    step, _ = markov_step(seed=2)
    plain = search(method, step, 4, 7)
    ruled = search(method, step, 4, 7, Constraints())
    assert np.array_equal(plain.tokens, ruled.tokens) and np.allclose(plain.scores, ruled.scores)
    assert DecodingOptions(method=method).constraints(4, 7, encode=lambda text: [1]) is None
    assert not Constraints() and Constraints(min_new_tokens=1)


@pytest.mark.parametrize("method", list(SEARCHES))
def test_a_target_prefix_is_honoured_and_the_search_continues_after_it(method):
    step, table = markov_step(seed=3)
    prefixes = (np.array([5, 5, 1]), np.array([4]))
    result = search(method, step, 2, 7, Constraints(prefix=prefixes))
    for row, prefix in zip(result.tokens, prefixes, strict=True):
        ids = output(row)
        assert ids[: len(prefix)] == list(prefix) and len(ids) > len(prefix)
    if method == "greedy":  # after the prefix, greedy takes the argmax; the score counts every token
        for b, prefix in enumerate(prefixes):
            ids, prev = output(result.tokens[b]), int(prefix[-1])
            for i in range(len(prefix), len(ids)):
                logits = table[prev, i].copy()
                logits[PAD] = logits[BOS] = -1e9
                assert ids[i] == logits.argmax()
                prev = ids[i]
            assert result.scores[b] == pytest.approx(sequence_logprob(table, ids), rel=1e-5)


def test_beam_with_a_prefix_is_the_best_continuation_of_it():
    step, table = markov_step(seed=6)
    prefix, max_len = [4, 1], 5
    best, best_score = None, -np.inf
    for length in range(1, max_len - len(prefix) + 1):
        for tail in itertools.product([1, 3, 4, 5], repeat=length):
            if tail[-1] != EOS or EOS in tail[:-1]:
                continue
            seq = [*prefix, *tail]
            score = sequence_logprob(table, seq) / length_penalty_factor(np.array(len(seq)), 0.6)
            if score > best_score:
                best, best_score = seq, score
    result = beam_search(step, {"steps": np.zeros((1, 1), np.int64)}, 1, max_len, BOS, EOS, beam_size=64,
                         length_penalty=0.6, constraints=Constraints(prefix=(np.array(prefix),)))
    assert output(result.tokens[0]) == best and result.scores[0] == pytest.approx(best_score, rel=1e-5)


@pytest.mark.parametrize("method", list(SEARCHES))
@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_n_gram_repeats(method, n):
    result = search(method, repeater_step(), 3, 12, Constraints(no_repeat_ngram_size=n))
    assert len(output(search(method, repeater_step(), 3, 12).tokens[0])) > 3  # it does repeat without
    for row in result.tokens:
        ids = [t for t in output(row) if t != EOS]
        grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
        assert len(grams) == len(set(grams)), ids


def test_the_repeated_n_gram_rule_against_a_brute_force_reference():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 4):
        history = rng.integers(0, 4, size=(6, 9))
        banned = set(zip(*(a.tolist() for a in _repeating_ngram_completions(history, n)), strict=True))
        expected = set()
        for row, ids in enumerate(history.tolist()):
            context = tuple(ids[len(ids) - n + 1:]) if n > 1 else ()
            for i in range(len(ids) - n + 1):
                if tuple(ids[i:i + n - 1]) == context:
                    expected.add((row, ids[i + n - 1]))
        assert banned == expected


def test_the_repetition_penalty_follows_ctrl():
    logits = np.array([[2.0, -1.0, 0.5, -3.0, 1.0]], np.float32)
    history = np.array([[0, 1, 1]])
    adjusted = Constraints(repetition_penalty=2.0).apply(logits, history, index=3, eos_id=4)
    assert np.allclose(adjusted, [[1.0, -2.0, 0.5, -3.0, 1.0]])  # seen: 2 / 2, -1 * 2; the rest unchanged


@pytest.mark.parametrize("method", list(SEARCHES))
def test_the_penalty_lowers_repeated_tokens_scores(method):
    plain = search(method, repeater_step(), 2, 10)
    penalised = search(method, repeater_step(), 2, 10, Constraints(repetition_penalty=5.0))
    count = lambda result: sum(output(row).count(4) for row in result.tokens)  # noqa: E731
    assert count(penalised) < count(plain)


@pytest.mark.parametrize("method", list(SEARCHES))
def test_min_new_tokens_keeps_eos_away(method):
    def eager_step(tokens, index, state):  # wants to stop at once
        logits = np.zeros((len(tokens), VOCAB))
        logits[:, PAD] = logits[:, BOS] = -1e9
        logits[:, EOS] = 9.0
        return logits, {"steps": state["steps"] + 1}, None

    assert [len(output(r)) for r in search(method, eager_step, 2, 9).tokens] == [1, 1]
    result = search(method, eager_step, 2, 9, Constraints(min_new_tokens=4))
    for row in result.tokens:
        ids = output(row)
        assert EOS not in ids[:4] and ids[4] == EOS


def test_n_best_is_sorted_distinct_and_scored():
    step, table = markov_step(seed=8)
    state = {"steps": np.zeros((3, 1), np.int64)}
    result = beam_search(step, state, 3, 6, BOS, EOS, beam_size=4, length_penalty=0.6, num_hypotheses=3)
    single = beam_search(step, state, 3, 6, BOS, EOS, beam_size=4, length_penalty=0.6)
    assert np.array_equal(result.tokens, single.tokens) and single.hypotheses is None
    for b, hypotheses in enumerate(result.hypotheses):
        assert 1 <= len(hypotheses) <= 3
        scores = [score for _, score in hypotheses]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(ids) for ids, _ in hypotheses}) == len(hypotheses)
        assert output(hypotheses[0][0]) == output(result.tokens[b]) and scores[0] == result.scores[b]
        for ids, score in hypotheses:
            ids = output(ids)
            expected = sequence_logprob(table, ids) / length_penalty_factor(np.array(len(ids)), 0.6)
            assert score == pytest.approx(expected, rel=1e-5)


def test_options_name_and_check_the_rules():
    options = DecodingOptions(method="beam", num_hypotheses=2, target_prefix="ab", repetition_penalty=1.2,
                              no_repeat_ngram_size=3, min_new_tokens=2)
    options.validate(max_new_tokens_limit=10)
    assert options.search_kwargs()["num_hypotheses"] == 2
    rules = options.constraints(2, 10, encode=lambda text: [ord(c) for c in text])
    assert rules.min_new_tokens == 2 and rules.repetition_penalty == 1.2 and rules.no_repeat_ngram_size == 3
    assert [list(p) for p in rules.prefix] == [[97, 98], [97, 98]]
    with pytest.raises(OptionError, match="target_prefix is 3 tokens; at most 2 fit") as error:
        DecodingOptions(target_prefix="abc").constraints(1, 3, encode=lambda text: [1] * len(text))
    assert error.value.option == "target_prefix"


@pytest.mark.parametrize("kwargs, option", [
    ({"num_hypotheses": 0}, "num_hypotheses"),
    ({"num_hypotheses": 2}, "num_hypotheses"),  # greedy gives one
    ({"method": "beam", "beam_size": 2, "num_hypotheses": 3}, "num_hypotheses"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"repetition_penalty": float("nan")}, "repetition_penalty"),
    ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
    ({"min_new_tokens": -1}, "min_new_tokens"),
    ({"min_new_tokens": 12}, "min_new_tokens"),  # no room for EOS in 12 tokens
    ({"max_new_tokens": 5, "min_new_tokens": 5}, "min_new_tokens"),
])
def test_out_of_range_rules_are_refused(kwargs, option):
    with pytest.raises(OptionError) as error:
        DecodingOptions(**kwargs).validate(max_new_tokens_limit=12)
    assert error.value.option == option and error.value.for_flags().startswith("--")


def test_sampling_with_rules_stays_reproducible():
    rules = Constraints(repetition_penalty=1.5, no_repeat_ngram_size=2, prefix=(np.array([5]),) * 3)
    step, _ = markov_step(seed=9)
    first = sample_search(step, {"steps": np.zeros((3, 1), np.int64)}, 3, 7, BOS, EOS, seed=3, constraints=rules)
    again = sample_search(step, {"steps": np.zeros((3, 1), np.int64)}, 3, 7, BOS, EOS, seed=3, constraints=rules)
    assert np.array_equal(first.tokens, again.tokens)
    assert np.array_equal(greedy_search(step, {"steps": np.zeros((3, 1), np.int64)}, 3, 7, BOS, EOS,
                                        constraints=rules).tokens[:, 0], [5, 5, 5])


# ------------------------------------------------------------------ through the runtime and the Keras model

TEXTS = ["9/27/94", "Tuesday, September 27, 1994", "5.9.1994"]


def test_the_runtime_honours_every_rule(runtime):
    plain = runtime.generate(TEXTS, DecodingOptions(method="beam"))
    neutral = DecodingOptions(method="beam", repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0,
                              target_prefix=None, num_hypotheses=1)
    assert [g.text for g in runtime.generate(TEXTS, neutral)] == [g.text for g in plain]
    prefixed = runtime.generate(TEXTS, DecodingOptions(target_prefix="20"))
    assert all(g.text.startswith("20") for g in prefixed)
    nbest = runtime.generate(TEXTS, DecodingOptions(method="beam", beam_size=4, num_hypotheses=3))
    for g, best in zip(nbest, plain, strict=True):
        texts, scores = zip(*g.hypotheses, strict=True)
        assert texts[0] == g.text == best.text and scores[0] == pytest.approx(g.score)
        assert list(scores) == sorted(scores, reverse=True) and 1 <= len(texts) <= 3
        assert g.to_json()["hypotheses"][0]["text"] == g.text
    with pytest.raises(OptionError, match="target_prefix is"):
        runtime.generate(TEXTS[:1], DecodingOptions(target_prefix="1" * 40))


def test_keras_and_the_runtime_apply_the_rules_alike(tiny_run, runtime):
    from keras_nlp_week4.evaluation import decode_texts
    from keras_nlp_week4.runs import load_run

    run = load_run(tiny_run, compile=False)
    for options in (DecodingOptions(target_prefix="19", no_repeat_ngram_size=2),
                    DecodingOptions(method="beam", repetition_penalty=1.3, min_new_tokens=3)):
        keras_texts = decode_texts(run, TEXTS, options.method, **options.search_kwargs(), **options.rule_kwargs())
        assert keras_texts == [g.text for g in runtime.generate(TEXTS, options)]
