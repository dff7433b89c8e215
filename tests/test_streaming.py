"""Streaming: the searches as generators (`serving.search.STREAMS`), and the ids they make final step by
step, which joined must be exactly the non-streamed output, for every method."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_decoding_constraints import KWARGS, output
from test_search import BOS, EOS, PAD, markov_step

from serving.options import DecodingOptions, OptionError
from serving.search import SEARCHES, STREAMS, Constraints, _settled, new_final_ids


def run_stream(method: str, seed: int, batch: int = 5, max_length: int = 8, constraints=None):
    step, _ = markov_step(seed=seed)
    state = {"steps": np.zeros((batch, 1), np.int64)}
    steps = STREAMS[method](step, state, batch, max_length, BOS, EOS, PAD, constraints=constraints,
                            **KWARGS[method])
    chunks, stream = [], new_final_ids(steps, EOS, PAD)
    while True:
        try:
            chunks.append(next(stream))
        except StopIteration as stop:
            return chunks, stop.value


@pytest.mark.parametrize("method", list(SEARCHES))
@pytest.mark.parametrize("seed", range(6))
def test_the_joined_stream_is_the_output(method, seed):
    rules = Constraints(no_repeat_ngram_size=2, prefix=(np.array([5]),) * 5) if seed % 2 else None
    chunks, result = run_stream(method, seed, constraints=rules)
    step, _ = markov_step(seed=seed)
    plain = SEARCHES[method](step, {"steps": np.zeros((5, 1), np.int64)}, 5, 8, BOS, EOS, PAD,
                             constraints=rules, **KWARGS[method])
    assert np.array_equal(result.tokens, plain.tokens)
    for row in range(5):
        joined = [token for chunk in chunks for token in chunk[row]]
        assert joined == output(result.tokens[row])


@pytest.mark.parametrize("method", ["greedy", "sample"])
def test_greedy_and_sampling_stream_a_token_per_step(method):
    chunks, result = run_stream(method, seed=1, batch=1, max_length=8)
    assert [len(chunk[0]) for chunk in chunks] == [1] * len(output(result.tokens[0]))


def test_beam_search_streams_before_it_ends():
    counts = []
    for seed in range(6):
        chunks, result = run_stream("beam", seed, batch=1)
        counts.append(sum(len(c[0]) for c in chunks[:-1]))  # made final before the last step
    assert any(counts)


def test_only_the_prefix_all_live_beams_share_is_final():
    history = np.array([[[4, 5, 1], [4, 5, 3], [4, 1, 1]],
                        [[1, 3, 0], [1, 3, 0], [9, 9, 9]]])
    alive = np.array([[True, True, False], [True, True, False]])  # a dead beam does not count
    tokens, final = _settled(history, alive)
    assert final.tolist() == [2, 3] and tokens.tolist() == [[4, 5, 1], [1, 3, 0]]



# ------------------------------------------------------------------------------------- the runtime

TEXTS = ["9/27/94", "Tuesday, September 27, 1994", "5.9.1994", "the 3rd of march 2001"]
METHOD_OPTIONS = [DecodingOptions(), DecodingOptions(method="beam", beam_size=4),
                  DecodingOptions(method="sample", seed=5, temperature=1.3),
                  DecodingOptions(method="beam", beam_size=3, num_hypotheses=2, target_prefix="19")]


@pytest.mark.parametrize("options", METHOD_OPTIONS, ids=["greedy", "beam", "sample", "beam-nbest-prefix"])
def test_the_joined_stream_is_what_generate_returns(runtime, options):
    events = list(runtime.generate_stream(TEXTS, options))
    expected = runtime.generate(TEXTS, options)
    for index, generation in enumerate(expected):
        mine = [e for e in events if e.index == index]
        assert [e.done for e in mine] == [False] * (len(mine) - 1) + [True]
        assert "".join(e.text for e in mine) == generation.text == mine[-1].generation.text
        assert mine[-1].generation.score == pytest.approx(generation.score)
        assert mine[-1].generation.hypotheses == generation.hypotheses
        streamed_ids = np.array([t for e in mine for t in e.token_ids], np.int64)
        assert runtime.tokenizer.output_ids(streamed_ids) == generation.token_ids


def test_greedy_streams_before_the_end(runtime):
    events = list(runtime.generate_stream(TEXTS[:1]))
    assert len(events) > 2 and all(e.text for e in events[:-1])


def test_closing_the_stream_stops_the_search(runtime):
    calls = []
    real_step_factory = runtime.in_place_step  # what the runtime's searches step with

    def counting_step_factory(top_k=None):  # greedy steps with the one-column top-k step
        step = real_step_factory(top_k=top_k)

        def counting_step(*args):
            calls.append(1)
            return step(*args)

        return counting_step

    runtime.in_place_step = counting_step_factory
    try:
        stream = runtime.generate_stream(TEXTS[:1])
        next(stream)
        stream.close()
        after_close = len(calls)
        assert after_close < runtime.max_target_length
        list(runtime.generate_stream(TEXTS[:1]))
        assert len(calls) > after_close
    finally:
        del runtime.in_place_step


def test_bad_options_fail_before_the_first_event(runtime):
    with pytest.raises(OptionError):
        next(runtime.generate_stream(TEXTS[:1], DecodingOptions(beam_size=0)))


def test_the_cli_streams(tiny_export, capsys):
    from serving.cli import main

    assert main([str(tiny_export), *TEXTS[:2], "--stream"]) == 0
    streamed = capsys.readouterr().out
    assert main([str(tiny_export), *TEXTS[:2]]) == 0
    assert streamed == capsys.readouterr().out
    assert main([str(tiny_export), TEXTS[0], "--stream", "--json", "--method", "beam"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert records[-1]["done"] is True and "score" in records[-1]
    assert "".join(r["delta"] for r in records) == records[-1]["text"]
