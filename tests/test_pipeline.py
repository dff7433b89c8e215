"""Tests for the tf.data pipelines (keras_nlp_week4/data/pipeline.py)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from keras_nlp_week4.data.dates import generate_date_pairs
from keras_nlp_week4.data.pipeline import (
    EpochOrder,
    encode_sources,
    length_buckets,
    make_dataset,
    max_lengths,
    token_lengths,
)
from keras_nlp_week4.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, train_sentencepiece
from keras_nlp_week4.errors import UserError


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    return generate_date_pairs(300, seed=21)


@pytest.fixture(scope="module")
def tokenizer(pairs, tmp_path_factory) -> Tokenizer:
    texts = [text for pair in pairs for text in pair]
    path = tmp_path_factory.mktemp("pipeline") / "char.model"
    return Tokenizer(train_sentencepiece(texts, path, model_type="char"))


def pad(rows: list[list[int]]) -> np.ndarray:
    width = max(map(len, rows))
    return np.array([row + [PAD_ID] * (width - len(row)) for row in rows], dtype=np.int32)


def reference_batch(batch_pairs, tokenizer, max_source_length, max_target_length):
    """The documented rules, in plain Python on sentencepiece ids."""
    sources = tokenizer.encode([s for s, _ in batch_pairs])
    targets = tokenizer.encode([t for _, t in batch_pairs])
    encoder_input = [s[: max_source_length - 1] + [EOS_ID] for s in sources]
    decoder_input = [[BOS_ID] + t[: max_target_length - 1] for t in targets]
    target = [t[: max_target_length - 1] + [EOS_ID] for t in targets]
    return pad(encoder_input), pad(decoder_input), pad(target)


def batches(dataset):
    return [
        (encoder_input.numpy(), decoder_input.numpy(), target.numpy())
        for (encoder_input, decoder_input), target in dataset
    ]


@pytest.mark.parametrize("max_source_length, max_target_length", [(64, 16), (6, 5)])
def test_batches_follow_the_documented_rules(
    pairs, tokenizer, max_source_length, max_target_length
):
    dataset = make_dataset(pairs[:10], tokenizer, 4, max_source_length, max_target_length)
    spec = dataset.element_spec
    for tensor_spec in tf.nest.flatten(spec):
        assert tensor_spec.dtype == tf.int32 and tensor_spec.shape.as_list() == [None, None]
    got = batches(dataset)
    assert [len(b[0]) for b in got] == [4, 4, 2]
    for index, (encoder_input, decoder_input, target) in enumerate(got):
        chunk = pairs[:10][index * 4 : index * 4 + 4]
        expected = reference_batch(chunk, tokenizer, max_source_length, max_target_length)
        np.testing.assert_array_equal(encoder_input, expected[0])
        np.testing.assert_array_equal(decoder_input, expected[1])
        np.testing.assert_array_equal(target, expected[2])
        assert encoder_input.shape[1] <= max_source_length
        assert decoder_input.shape == target.shape and target.shape[1] <= max_target_length


def test_truncation_padding_and_special_placement(pairs, tokenizer):
    (encoder_input, decoder_input), target = next(iter(make_dataset(pairs, tokenizer, 32, 6, 5)))
    encoder_input, decoder_input, target = (
        encoder_input.numpy(),
        decoder_input.numpy(),
        target.numpy(),
    )
    # Every date is longer than the limits, so every row is truncated to full length.
    assert encoder_input.shape == (32, 6) and target.shape == (32, 5)
    assert (encoder_input[:, -1] == EOS_ID).all() and (target[:, -1] == EOS_ID).all()
    assert (decoder_input[:, 0] == BOS_ID).all()
    # Teacher forcing: the decoder sees the target shifted right by one.
    np.testing.assert_array_equal(decoder_input[:, 1:], target[:, :-1])

    (encoder_input, _), target = next(iter(make_dataset(pairs, tokenizer, 32, 200, 200)))
    for row in encoder_input.numpy():
        length = int(np.argmax(row == EOS_ID)) + 1
        assert row[length - 1] == EOS_ID and (row[length:] == PAD_ID).all()
        assert (row[: length - 1] > EOS_ID).all()  # no special id inside the text
    assert (encoder_input.numpy() == PAD_ID).any()  # dates differ in length, so some padding


def test_drop_remainder(pairs, tokenizer):
    dataset = make_dataset(pairs[:10], tokenizer, 4, 40, 12, drop_remainder=True)
    assert [b[0].shape[0] for b in batches(dataset)] == [4, 4]


def _source_order(dataset, tokenizer):
    return [s for encoder_input, _, _ in batches(dataset) for s in tokenizer.decode(encoder_input)]


def test_shuffle_is_seeded_and_reshuffles_each_epoch(pairs, tokenizer):
    data = pairs[:64]
    sources = [s for s, _ in data]
    dataset = make_dataset(data, tokenizer, 16, 40, 12, shuffle=True, seed=3)
    epoch_1 = _source_order(dataset, tokenizer)
    epoch_2 = _source_order(dataset, tokenizer)
    assert sorted(epoch_1) == sorted(sources) == sorted(epoch_2)
    assert epoch_1 != sources and epoch_2 != epoch_1
    again = make_dataset(data, tokenizer, 16, 40, 12, shuffle=True, seed=3)
    assert _source_order(again, tokenizer) == epoch_1
    assert _source_order(again, tokenizer) == epoch_2
    other = make_dataset(data, tokenizer, 16, 40, 12, shuffle=True, seed=4)
    assert _source_order(other, tokenizer) != epoch_1
    unshuffled = make_dataset(data, tokenizer, 16, 40, 12)
    assert _source_order(unshuffled, tokenizer) == sources


def test_epoch_order_is_a_function_of_seed_and_epoch_alone(pairs, tokenizer):
    data = pairs[:64]
    order = EpochOrder(seed=3)
    dataset = make_dataset(data, tokenizer, 16, 40, 12, order=order)
    epoch_0 = _source_order(dataset, tokenizer)
    assert _source_order(dataset, tokenizer) == epoch_0  # iterating again does not reshuffle
    order.set_epoch(5)
    epoch_5 = _source_order(dataset, tokenizer)
    assert sorted(epoch_5) == sorted(epoch_0) == sorted(s for s, _ in data) and epoch_5 != epoch_0
    # Another process (a resumed run) that starts at epoch 5 sees the same order.
    fresh = EpochOrder(seed=3)
    fresh.set_epoch(5)
    assert _source_order(make_dataset(data, tokenizer, 16, 40, 12, order=fresh), tokenizer) == epoch_5
    other_seed = EpochOrder(seed=4)
    assert _source_order(make_dataset(data, tokenizer, 16, 40, 12, order=other_seed), tokenizer) != epoch_0


def test_bucketing_groups_by_example_length(pairs, tokenizer):
    boundaries = [12, 18, 24]
    dataset = make_dataset(pairs, tokenizer, 8, 40, 12, bucket_boundaries=boundaries)
    got = batches(dataset)
    seen = []
    for encoder_input, decoder_input, target in got:
        assert encoder_input.dtype == np.int32 and decoder_input.shape == target.shape
        # An example's length is the longer of its encoder input and its target.
        lengths = np.maximum((encoder_input != PAD_ID).sum(axis=1), (target != PAD_ID).sum(axis=1))
        buckets = {int(np.searchsorted(boundaries, length, side="right")) for length in lengths}
        assert len(buckets) == 1, lengths  # one bucket per batch
        assert encoder_input.shape[1] == (encoder_input != PAD_ID).sum(axis=1).max()  # padded to the longest
        seen += tokenizer.decode(encoder_input)
    assert sorted(seen) == sorted(s for s, _ in pairs)
    assert max(b[0].shape[0] for b in got) == 8


def test_length_buckets_span_the_example_lengths(pairs, tokenizer):
    boundaries = length_buckets(token_lengths(pairs, tokenizer), 40, 12, width=2)
    lengths = [max(min(len(s) + 1, 40), min(len(t) + 1, 12))
               for s, t in zip(tokenizer.encode([s for s, _ in pairs]), tokenizer.encode([t for _, t in pairs]),
                               strict=True)]
    assert boundaries[0] == min(lengths) + 2 and boundaries[-1] <= max(lengths) + 1
    assert all(b - a == 2 for a, b in zip(boundaries, boundaries[1:], strict=False))


def test_encode_sources_matches_encoder_input(pairs, tokenizer):
    sources = [s for s, _ in pairs[:12]]
    (encoder_input, _), _ = next(iter(make_dataset(pairs[:12], tokenizer, 12, 9, 12)))
    encoded = encode_sources(sources, tokenizer, 9)
    assert encoded.dtype == np.int32
    np.testing.assert_array_equal(encoded, encoder_input.numpy())


def test_max_lengths(pairs, tokenizer):
    source_lengths = [len(ids) + 1 for ids in tokenizer.encode([s for s, _ in pairs])]
    target_lengths = [len(ids) + 1 for ids in tokenizer.encode([t for _, t in pairs])]
    assert max_lengths(pairs, tokenizer) == (max(source_lengths), max(target_lengths))
    median_source, _ = max_lengths(pairs, tokenizer, quantile=0.5)
    assert median_source in source_lengths and median_source < max(source_lengths)
    # With the measured limits nothing is truncated.
    source_length, target_length = max_lengths(pairs, tokenizer)
    dataset = make_dataset(pairs, tokenizer, 300, source_length, target_length)
    encoder_input, _, target = batches(dataset)[0]
    assert tokenizer.decode(encoder_input) == [s for s, _ in pairs]
    assert tokenizer.decode(target) == [t for _, t in pairs]


def test_invalid_arguments(pairs, tokenizer):
    with pytest.raises(UserError, match="dataset is empty"):
        make_dataset([], tokenizer, 4, 40, 12)
    with pytest.raises(UserError, match="dataset is empty"):
        max_lengths([], tokenizer)
    with pytest.raises(UserError, match="max_source_length"):
        make_dataset(pairs, tokenizer, 4, 1, 12)
    with pytest.raises(UserError, match="batch_size"):
        make_dataset(pairs, tokenizer, 0, 40, 12)
    with pytest.raises(UserError, match="bucket_boundaries"):
        make_dataset(pairs, tokenizer, 4, 40, 12, bucket_boundaries=[20, 10])
    with pytest.raises(UserError, match="no source texts"):
        encode_sources([], tokenizer, 40)
