"""``tf.data`` input pipelines for teacher-forced sequence-to-sequence training.

For a pair ``(source, target)`` with source ids ``s`` and target ids ``t`` (no specials):

* ``encoder_input = s[:max_source_length - 1] + [EOS]``
* ``decoder_input = [BOS] + t[:max_target_length - 1]``
* ``target        = t[:max_target_length - 1] + [EOS]``

so ``decoder_input`` is ``target`` shifted right by one position (teacher forcing, Sutskever et
al. 2014, Section 3.2), and both have the same length. Batches are padded with ``PAD_ID`` to the
longest sequence in the batch (or bucket), so lengths vary between batches.

Tokenization runs inside the ``tf.data`` graph with the tokenizer's TensorFlow Text op. Without
bucketing the pipeline batches the raw strings first and tokenizes whole batches: one op call per
batch instead of one per example, which on a 2-core machine is about 6 times faster than mapping
over single strings (20,000 dates: 0.09 s against 0.5 s per epoch). Bucketing needs each
example's length before batching, so that path tokenizes batches of 1024 strings and splits them
back into examples before bucketing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_nlp_week4.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from keras_nlp_week4.errors import UserError

__all__ = [
    "EpochOrder", "encode_sources", "length_buckets", "make_dataset", "max_lengths", "remainder_share",
    "token_lengths",
]

# Strings per TensorFlow Text call on the bucketing path (larger amortizes the op overhead).
_TOKENIZE_BATCH_SIZE = 1024


class EpochOrder:
    """The order in which a training dataset visits its examples: a permutation that is a pure function
    of `(seed, epoch)`, so epoch 7 sees the same order in a run that was killed and resumed as in one
    that never stopped (`tf.data`'s own reshuffling depends on how many iterators were made before).

    `epoch` is a variable the dataset reads when an iterator starts; the training loop sets it at the
    start of every epoch (`keras_nlp_week4.training.resume.EpochRandomness`).

    Example:

    >>> order = EpochOrder(seed=3)
    >>> first = order.permutation(5).numpy()
    >>> order.set_epoch(1)
    >>> sorted(order.permutation(5).numpy()) == sorted(first)  # another order of the same examples
    True
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_order_epoch")

    def set_epoch(self, epoch: int) -> None:
        self.epoch.assign(epoch)

    def permutation(self, size: int) -> tf.Tensor:
        seed = tf.stack([tf.constant(self.seed, tf.int64), self.epoch.read_value()])
        return tf.random.experimental.stateless_shuffle(tf.range(size, dtype=tf.int64), seed=seed)


def _check_length(name: str, value: int) -> None:
    # One slot is always taken by EOS (or BOS), so a length of 1 would leave no room for text.
    if value < 2:
        raise UserError(f"{name} must be >= 2 (it counts the EOS/BOS token), got {value}")


def _with_special(
    ids: tf.RaggedTensor, max_length: int, prefix: int | None, suffix: int | None
) -> tf.RaggedTensor:
    """Truncates each row to ``max_length - 1`` ids and adds `prefix` and/or `suffix`."""
    ids = ids[:, : max_length - 1]
    batch = ids.nrows()
    parts = []
    if prefix is not None:
        parts.append(tf.fill([batch, 1], tf.constant(prefix, tf.int32)))
    parts.append(ids)
    if suffix is not None:
        parts.append(tf.fill([batch, 1], tf.constant(suffix, tf.int32)))
    return tf.concat(parts, axis=1)


def _encode_batch(
    tokenizer: Tokenizer,
    sources: tf.Tensor,
    targets: tf.Tensor,
    max_source_length: int,
    max_target_length: int,
) -> tuple[tuple[tf.RaggedTensor, tf.RaggedTensor], tf.RaggedTensor]:
    """Maps ``(batch,)`` source/target strings to ragged ``((enc, dec), target)`` ids."""
    encoder_input = _with_special(tokenizer.tokenize(sources), max_source_length, None, EOS_ID)
    target_ids = tokenizer.tokenize(targets)
    decoder_input = _with_special(target_ids, max_target_length, BOS_ID, None)
    target = _with_special(target_ids, max_target_length, None, EOS_ID)
    return (encoder_input, decoder_input), target


def _as_dense_example(inputs, target):
    def dense(ids):
        return ids.to_tensor(PAD_ID) if isinstance(ids, tf.RaggedTensor) else ids

    return tf.nest.map_structure(dense, (inputs, target))


def make_dataset(
    pairs: Sequence[tuple[str, str]],
    tokenizer: Tokenizer,
    batch_size: int,
    max_source_length: int,
    max_target_length: int,
    shuffle: bool = False,
    seed: int = 0,
    bucket_boundaries: Sequence[int] | None = None,
    drop_remainder: bool = False,
    order: EpochOrder | None = None,
) -> tf.data.Dataset:
    """Builds a batched, padded teacher-forcing dataset from ``(source, target)`` strings.

    Args:
        pairs: ``(source, target)`` string pairs.
        tokenizer: the task's tokenizer.
        batch_size: examples per batch.
        max_source_length: maximum encoder length, EOS included (>= 2).
        max_target_length: maximum decoder/target length, BOS or EOS included (>= 2).
        shuffle: shuffle the examples (a full shuffle) and reshuffle at every epoch.
        seed: shuffle seed; a given seed gives the same sequence of epoch orders. As for every
            seeded TensorFlow op, the order also depends on the global seed if one is set
            (``keras.utils.set_random_seed``).
        bucket_boundaries: if given, group examples of similar length (the longer of the encoder
            input and the target, in tokens; see `length_buckets`) with
            ``tf.data.Dataset.bucket_by_sequence_length`` so batches carry less padding; each
            batch is padded to its own longest example. Its per-example steps
            cost time: about 1.3 s per epoch of 20,000 dates on 2 cores, against 0.2 s without.
        drop_remainder: drop the last, smaller batch (of each bucket, with bucketing).
        order: visit the examples in `order`'s permutation for its current epoch instead (what
            training uses: reproducible per epoch, so a resumed run sees the same data; see
            `EpochOrder`). `shuffle` and `seed` are then ignored.

    Returns:
        A dataset of ``((encoder_input, decoder_input), target)``, all int32 of shape
        ``(batch, None)``, padded with `PAD_ID`; ``decoder_input`` and ``target`` have the same
        shape.

    Raises:
        UserError: if `pairs` is empty or a size argument is invalid.

    Example:

    >>> dataset = make_dataset(pairs, tokenizer, batch_size=64,  # doctest: +SKIP
    ...                        max_source_length=32, max_target_length=12, shuffle=True)
    >>> (encoder_input, decoder_input), target = next(iter(dataset))  # doctest: +SKIP
    """
    if len(pairs) == 0:
        raise UserError("the dataset is empty; give at least one (source, target) pair")
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    _check_length("max_source_length", max_source_length)
    _check_length("max_target_length", max_target_length)
    sources, targets = zip(*pairs, strict=True)
    sources, targets = tf.constant(sources, tf.string), tf.constant(targets, tf.string)
    if order is not None:
        # One element, the whole split in this epoch's order, read when an iterator starts.
        def ordered(_):
            permutation = order.permutation(len(pairs))
            return tf.gather(sources, permutation), tf.gather(targets, permutation)

        dataset = tf.data.Dataset.range(1).map(ordered).unbatch()
    else:
        dataset = tf.data.Dataset.from_tensor_slices((sources, targets))
    if shuffle and order is None:
        dataset = dataset.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)

    def encode_ragged(source, target):
        return _encode_batch(tokenizer, source, target, max_source_length, max_target_length)

    if bucket_boundaries is None:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        dataset = dataset.map(
            lambda source, target: _as_dense_example(*encode_ragged(source, target)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return dataset.prefetch(tf.data.AUTOTUNE)

    boundaries = [int(b) for b in bucket_boundaries]
    if not boundaries or boundaries != sorted(set(boundaries)) or boundaries[0] < 1:
        raise UserError(
            f"bucket_boundaries must be a non-empty increasing list of positive lengths, "
            f"got {list(bucket_boundaries)}"
        )

    # Tokenize in large batches, then split back into examples for the bucketing transform.
    dataset = dataset.batch(_TOKENIZE_BATCH_SIZE)
    dataset = dataset.map(encode_ragged, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    # Unbatched rows keep a (rank-0-ragged) RaggedTensorSpec that bucketing rejects; passing them
    # through a map function turns them into plain 1-D tensors.
    dataset = dataset.map(_as_dense_example)
    pad = tf.constant(PAD_ID, tf.int32)
    dataset = dataset.bucket_by_sequence_length(
        element_length_func=lambda inputs, target: tf.maximum(tf.shape(inputs[0])[0], tf.shape(target)[0]),
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        padding_values=((pad, pad), pad),
        drop_remainder=drop_remainder,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def token_lengths(
    pairs: Sequence[tuple[str, str]], tokenizer: Tokenizer
) -> tuple[np.ndarray, np.ndarray]:
    """Source and target lengths in tokens as the pipeline counts them: the source with its EOS, the
    target with its BOS (equivalently its EOS), before any cut at the maxima. Measured once per split
    and shared by `max_lengths`, `length_buckets` and the trainer's over-length warning.

    Raises:
        UserError: if `pairs` is empty.
    """
    if len(pairs) == 0:
        raise UserError("the dataset is empty; give at least one (source, target) pair")
    sources, targets = zip(*pairs, strict=True)
    return (np.array([len(ids) + 1 for ids in tokenizer.encode(sources)]),
            np.array([len(ids) + 1 for ids in tokenizer.encode(targets)]))


def length_buckets(
    lengths: tuple[np.ndarray, np.ndarray],
    max_source_length: int,
    max_target_length: int,
    width: int = 2,
) -> list[int]:
    """Bucket boundaries for `make_dataset`: one bucket per `width` tokens of example length.

    An example's length is the longer of its encoder input and its target (specials included, cut
    at the maxima), as `make_dataset` measures it; `lengths` are `token_lengths` of the split.
    Buckets `width` tokens wide pad each batch by at most `width - 1` positions beyond its shortest
    example (on Multi30k: 6 % of the positions instead of about half with one batch order over the
    whole split).

    Example:

    >>> length_buckets(token_lengths(pairs, tokenizer), 80, 80)  # doctest: +SKIP
    [7, 9, 11, ..., 61]
    """
    if width < 1:
        raise UserError(f"bucket width must be >= 1, got {width}")
    example_lengths = _example_lengths(lengths, max_source_length, max_target_length)
    shortest, longest = int(example_lengths.min()), int(example_lengths.max())
    return list(range(shortest + width, longest + 1, width)) or [longest + 1]


def remainder_share(
    lengths: tuple[np.ndarray, np.ndarray],
    bucket_boundaries: Sequence[int],
    batch_size: int,
    max_source_length: int,
    max_target_length: int,
) -> float:
    """The share of examples that fall into each bucket's last, partial batch (what
    ``make_dataset(..., drop_remainder=True)`` would leave out of an epoch).

    Bucket membership does not depend on the order, so this is the same every epoch.
    """
    example_lengths = _example_lengths(lengths, max_source_length, max_target_length)
    # bucket_by_sequence_length puts a length in bucket i when boundaries[i-1] <= length < boundaries[i].
    buckets = np.searchsorted(np.asarray(bucket_boundaries), example_lengths, side="right")
    counts = np.bincount(buckets)
    return float((counts % batch_size).sum() / len(example_lengths))


def _example_lengths(
    lengths: tuple[np.ndarray, np.ndarray], max_source_length: int, max_target_length: int
) -> np.ndarray:
    """What `make_dataset` buckets by: the longer of encoder input and target, cut at the maxima."""
    source_lengths, target_lengths = lengths
    return np.maximum(np.minimum(source_lengths, max_source_length),
                      np.minimum(target_lengths, max_target_length))


def encode_sources(
    texts: Sequence[str], tokenizer: Tokenizer, max_source_length: int
) -> np.ndarray:
    """Encodes source strings exactly like ``encoder_input`` in `make_dataset`.

    Args:
        texts: source strings.
        tokenizer: the task's tokenizer.
        max_source_length: maximum length, EOS included (>= 2).

    Returns:
        An int32 array of shape ``(len(texts), longest)``, padded with `PAD_ID`.

    Raises:
        UserError: if `texts` is empty or `max_source_length` < 2.
    """
    if isinstance(texts, str):
        raise TypeError("encode_sources expects a list of strings, not a single string")
    if len(texts) == 0:
        raise UserError("no source texts to encode; give at least one string")
    _check_length("max_source_length", max_source_length)
    ids = tokenizer.tokenize(tf.constant(list(texts), tf.string))
    encoder_input = _with_special(ids, max_source_length, None, EOS_ID)
    return encoder_input.to_tensor(PAD_ID).numpy().astype(np.int32)


def max_lengths(
    pairs: Sequence[tuple[str, str]], tokenizer: Tokenizer, quantile: float = 1.0
) -> tuple[int, int]:
    """Measures source and target lengths in tokens, to help choose the maximum lengths.

    Args:
        pairs: ``(source, target)`` string pairs.
        tokenizer: the task's tokenizer.
        quantile: which quantile of the lengths to return (1.0 is the maximum); the value is an
            observed length (rounded up to the next observed one).

    Returns:
        ``(source_length, target_length)``: the source length counts the EOS, the target length
        counts the BOS (equivalently the EOS), so they can be passed directly as
        ``max_source_length`` and ``max_target_length``.

    Raises:
        UserError: if `pairs` is empty or `quantile` is outside [0, 1].
    """
    if not 0.0 <= quantile <= 1.0:
        raise UserError(f"quantile must be in [0, 1], got {quantile}")
    source_lengths, target_lengths = token_lengths(pairs, tokenizer)
    return (
        int(np.quantile(source_lengths, quantile, method="higher")),
        int(np.quantile(target_lengths, quantile, method="higher")),
    )
