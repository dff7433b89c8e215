"""The numpy searches shared by Keras-side decoding and the onnxruntime runtime."""

import itertools

import numpy as np
import pytest

from serving.options import METHODS, DecodingOptions, OptionError
from serving.search import (
    SEARCHES,
    beam_search,
    greedy_search,
    length_penalty_factor,
    log_softmax,
    sample_search,
    tempered_log_softmax,
)

PAD, BOS, EOS, VOCAB = 0, 2, 3, 6


def markov_step(seed=0):
    """A toy model: next-token logits depend on the previous token and the position only.

    The state carries a running counter, so a search that reorders hypotheses wrongly would corrupt it.
    """
    table = np.random.default_rng(seed).normal(size=(VOCAB, 8, VOCAB)) * 2.0

    def step(tokens, index, state):
        assert np.array_equal(state["steps"][:, 0], np.full(len(tokens), index)), "state out of step"
        logits = table[tokens, index].copy()
        logits[:, PAD] = -1e9  # the model never emits padding itself
        logits[:, BOS] = -1e9
        return logits, {"steps": state["steps"] + 1}, None

    return step, table


def sequence_logprob(table, seq):
    total, prev = 0.0, BOS
    for i, tok in enumerate(seq):
        logits = table[prev, i].copy()
        logits[PAD] = logits[BOS] = -1e9
        total += log_softmax(logits[None])[0, tok]
        prev = tok
    return total


def test_greedy_follows_argmax_and_stops_at_eos():
    step, table = markov_step()
    state = {"steps": np.zeros((3, 1), np.int64)}
    result = greedy_search(step, state, 3, 6, BOS, EOS)
    for row in result.tokens:
        prev = BOS
        for i, tok in enumerate(row):
            if prev == EOS or prev == PAD:
                assert tok == PAD
            else:
                logits = table[prev, i].copy()
                logits[PAD] = logits[BOS] = -1e9
                assert tok == logits.argmax()
            prev = tok


def test_beam_search_finds_the_exhaustive_best():
    step, table = markov_step(seed=3)
    max_len = 4
    # Every sequence of length <= max_len over non-special tokens that ends with EOS, or has max_len.
    best, best_score = None, -np.inf
    symbols = [1, 3, 4, 5]
    for length in range(1, max_len + 1):
        for seq in itertools.product(symbols, repeat=length):
            if EOS in seq[:-1] or (length < max_len and seq[-1] != EOS):
                continue
            if seq[-1] != EOS:
                continue  # beam search prefers finished hypotheses
            score = sequence_logprob(table, seq) / length_penalty_factor(np.array(length), 0.0)
            if score > best_score:
                best, best_score = seq, score
    result = beam_search(step, {"steps": np.zeros((1, 1), np.int64)}, 1, max_len, BOS, EOS,
                         beam_size=VOCAB * VOCAB, length_penalty=0.0)
    got = [t for t in result.tokens[0] if t != PAD]
    assert tuple(got) == best
    assert result.scores[0] == pytest.approx(best_score)


def test_beam_size_one_equals_greedy():
    step, _ = markov_step(seed=5)
    state = {"steps": np.zeros((4, 1), np.int64)}
    greedy = greedy_search(step, state, 4, 7, BOS, EOS).tokens
    beam = beam_search(step, state, 4, 7, BOS, EOS, beam_size=1, length_penalty=0.0).tokens
    width = max(greedy.shape[1], beam.shape[1])
    pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1])))  # noqa: E731
    assert np.array_equal(pad(greedy), pad(beam))


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    step, _ = markov_step(seed=7)
    state = {"steps": np.zeros((5, 1), np.int64)}
    a = sample_search(step, state, 5, 6, BOS, EOS, temperature=1.5, seed=11).tokens
    b = sample_search(step, state, 5, 6, BOS, EOS, temperature=1.5, seed=11).tokens
    assert np.array_equal(a, b)
    greedy = greedy_search(step, state, 5, 6, BOS, EOS).tokens
    assert np.array_equal(sample_search(step, state, 5, 6, BOS, EOS, top_k=1, seed=1).tokens, greedy)
    assert np.array_equal(sample_search(step, state, 5, 6, BOS, EOS, top_p=1e-6, seed=2).tokens, greedy)


def test_sampling_draws_from_the_distribution():
    """With one step and a fixed distribution, sample frequencies match the softmax."""
    probs = np.array([0.0, 0.0, 0.0, 0.5, 0.3, 0.2])
    logits = np.log(np.maximum(probs, 1e-12))

    def step(tokens, index, state):
        return np.tile(logits, (len(tokens), 1)), {}, None

    tokens = sample_search(step, {}, 4000, 1, BOS, EOS, seed=0).tokens[:, 0]
    freq = np.bincount(tokens, minlength=6) / len(tokens)
    assert np.allclose(freq, probs, atol=0.03)
    # top_p=0.6 keeps {3, 4} (mass before 4 is 0.5 < 0.6) and drops 5.
    nucleus = sample_search(step, {}, 2000, 1, BOS, EOS, top_p=0.6, seed=0).tokens[:, 0]
    assert set(np.unique(nucleus)) == {3, 4}


@pytest.mark.parametrize("kwargs", [{"temperature": 0}, {"top_p": 0}, {"top_k": -1}, {"beam_size": 0},
                                    {"temperature": float("inf")}, {"method": "nucleus"}])
def test_decoding_options_own_the_range_checks(kwargs):
    with pytest.raises(OptionError) as error:
        DecodingOptions(**kwargs).validate()
    assert error.value.option in kwargs
    assert error.value.for_flags().startswith("--") or kwargs.get("method")


def test_every_search_is_registered_with_the_options_it_takes():
    assert METHODS == tuple(SEARCHES) == ("greedy", "beam", "sample")
    assert DecodingOptions().search() is greedy_search and DecodingOptions().search_kwargs() == {}
    beam = DecodingOptions(method="beam", beam_size=3)
    assert beam.search() is beam_search
    assert beam.search_kwargs() == {"beam_size": 3, "length_penalty": 0.6, "num_hypotheses": 1}
    sample = DecodingOptions(method="sample", top_k=5, seed=1)
    assert sample.search() is sample_search
    assert sample.search_kwargs() == {"temperature": 1.0, "top_k": 5, "top_p": 1.0, "seed": 1}


@pytest.mark.parametrize("temperature", [1e-40, 1e-300, 5e-324])
def test_tiny_temperatures_are_numerically_safe_and_tend_to_greedy(temperature):
    logits = np.array([[3.0, 1.0, 3.0, -2.0], [0.5, 9.0, -1e9, 2.0]], np.float32)
    probs = np.exp(tempered_log_softmax(logits, temperature))
    assert np.array_equal(probs, [[0.5, 0, 0.5, 0], [0, 1, 0, 0]])  # ties share, the rest get 0
    step, _ = markov_step()
    state = {"steps": np.zeros((3, 1), np.int64)}
    sampled = sample_search(step, state, 3, 8, BOS, EOS, PAD, temperature=temperature, seed=1)
    assert np.array_equal(sampled.tokens, greedy_search(step, state, 3, 8, BOS, EOS, PAD).tokens)
    assert np.isfinite(sampled.scores).all()


def test_tempered_log_softmax_is_log_softmax_of_scaled_logits():
    logits = np.random.default_rng(0).normal(size=(4, 7)) * 3
    for temperature in (0.3, 1.0, 2.5):
        assert np.allclose(tempered_log_softmax(logits, temperature), log_softmax(logits / temperature))


def test_top_k_stable_is_the_stable_sort_prefix():
    from serving.search import top_k_stable

    rng = np.random.default_rng(0)
    for trial in range(50):
        # 30 values: sorted outright for k >= 2; 200: the rounds of argmax for k < 13.
        values = rng.integers(-3, 3, (4, 30 if trial % 2 else 200)).astype(float)  # many ties
        values[rng.random(values.shape) < 0.5] = -np.inf  # some rows with fewer than k finite values
        values[0, 0] = np.nan if rng.random() < 0.2 else values[0, 0]
        for k in (1, 3, 29):
            np.testing.assert_array_equal(top_k_stable(values, k),
                                          np.argsort(-values, axis=-1, kind="stable")[:, :k])


def test_token_log_probs_equal_the_log_softmax_entries():
    from serving.search import log_softmax, token_log_probs

    logits = np.random.default_rng(1).normal(size=(3, 500)).astype(np.float32) * 8
    tokens = np.array([0, 17, 499])
    expected = np.take_along_axis(log_softmax(logits), tokens[:, None], 1)[:, 0]
    np.testing.assert_allclose(token_log_probs(logits, tokens), expected, atol=1e-5)


def history_step(seed=0, width=4, max_length=8):
    """A toy model with a cache as a Transformer's: the step at `index` writes position `index` of a
    `(batch, 1, max_length, width)` cache with its token's embedding and reads positions `<= index`
    only, so its logits depend on the whole prefix and a wrong reorder corrupts them."""
    rng = np.random.default_rng(seed)
    embedding = rng.normal(size=(VOCAB, width))
    output = rng.normal(size=(width, VOCAB)) * 3.0

    def step(tokens, index, state):
        cache = state["cache"].copy()
        cache[:, 0, index] = embedding[tokens]
        logits = cache[:, 0, :index + 1].mean(axis=1) @ output  # masked: later positions are not read
        logits[:, PAD] = logits[:, BOS] = -1e9
        return logits, {"cache": cache}, None

    return step, {"cache": np.zeros((3, 1, max_length, 4))}


def test_beam_search_reorders_only_the_written_positions_to_the_same_result():
    """With `position_axes` the reorder copies positions `<= index` of the hypotheses that changed, in
    place; the search returns what a whole reorder gives, scores and n-best included."""
    step, state = history_step()
    kwargs = {"beam_size": 3, "length_penalty": 0.6, "num_hypotheses": 3}
    whole = beam_search(step, dict(state), 3, 8, BOS, EOS, **kwargs)
    # Garbage after the written positions must not matter: the step never reads it.
    seen = []

    def poisoning_step(tokens, index, state):
        seen.append(state["cache"])
        state["cache"][:, :, index + 1:] = 1e6
        return step(tokens, index, state)

    prefix = beam_search(poisoning_step, dict(state), 3, 8, BOS, EOS, position_axes={"cache": 2}, **kwargs)
    assert np.array_equal(whole.tokens, prefix.tokens) and np.array_equal(whole.scores, prefix.scores)
    assert [[list(t) for t, _ in h] for h in whole.hypotheses] == [[list(t) for t, _ in h]
                                                                   for h in prefix.hypotheses]
    assert len(seen) > 2


def test_reorder_rows_equals_fancy_indexing():
    from serving.search import _reorder_rows

    rng = np.random.default_rng(1)
    values = rng.normal(size=(6, 2, 5, 3))
    source = np.array([0, 0, 3, 3, 1, 5])  # row 1 is read and overwritten
    expected = values[source]
    moved = np.flatnonzero(source != np.arange(len(source)))
    prefix = _reorder_rows(values.copy(), source, moved, (slice(None), slice(0, 2)))
    assert np.array_equal(prefix[:, :, :2], expected[:, :, :2])
    assert np.array_equal(_reorder_rows(values.copy(), source, moved, None), expected)
    frozen = values.copy()
    frozen.flags.writeable = False
    out = _reorder_rows(frozen, source, moved, None)
    assert out is not frozen and np.array_equal(out, expected) and np.array_equal(frozen, values)


def test_row_by_row_reorder_only_where_no_moved_row_is_read():
    """`row_copies` refuses a reorder where a moved row is another's source (copied row by row, it would
    be read after it was overwritten); where it gives pairs, copying by them is the fancy-indexed reorder.
    And what `stay_in_place` orders never needs the refusal."""
    from serving.search import _reorder_rows, row_copies, stay_in_place

    rng = np.random.default_rng(2)
    values = rng.normal(size=(6, 2, 5, 3))
    read_and_moved = np.array([0, 0, 3, 3, 1, 5])  # row 1 moves and row 4 reads it
    assert row_copies(read_and_moved, np.flatnonzero(read_and_moved != np.arange(6))) is None
    source = np.array([0, 0, 2, 2, 4, 4])
    moved = np.flatnonzero(source != np.arange(6))
    copies = row_copies(source, moved)
    assert copies == [(1, 0), (3, 2), (5, 4)]
    by_rows = _reorder_rows(values.copy(), source, moved, (slice(None), slice(0, 3)), copies)
    assert np.array_equal(by_rows[:, :, :3], values[source][:, :, :3])
    assert np.array_equal(by_rows[:, :, 3:], values[:, :, 3:])  # positions not written yet are left alone
    k = 4
    parents = rng.integers(0, k, (300, k))  # the parent of each new hypothesis, best first
    for row, order in zip(parents, stay_in_place(parents), strict=True):
        step_source = row[order]
        assert row_copies(step_source, np.flatnonzero(step_source != np.arange(k))) is not None


def test_stay_in_place_keeps_each_parents_best_child_in_its_row():
    """The new hypotheses take rows so that every parent's best child stays in its parent's row and
    only the other children move, the fewest rows a reorder can copy."""
    from serving.search import stay_in_place

    assert stay_in_place(np.array([[0, 0, 1, 2]])).tolist() == [[0, 2, 3, 1]]
    assert stay_in_place(np.array([[0, 0, 0, 0]])).tolist() == [[0, 1, 2, 3]]  # the first step
    parents = np.random.default_rng(0).integers(0, 4, (200, 4))
    orders = stay_in_place(parents)  # a row's order does not depend on the others
    assert np.array_equal(np.concatenate([stay_in_place(parents[i:i + 2]) for i in range(0, 200, 2)]), orders)
    for row_parents, order in zip(parents, orders, strict=True):
        assert sorted(order) == [0, 1, 2, 3]  # each new hypothesis gets one row
        staying = row_parents[order] == np.arange(4)  # the hypothesis in row t extends row t's
        assert staying.sum() == len(set(row_parents))
        for parent in set(row_parents):
            assert order[parent] == list(row_parents).index(parent)
