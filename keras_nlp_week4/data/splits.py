"""Train/validation/test splits: the container every task returns, and splitting pairs read from files
with no source sentence in two splits (`grouped_split`, `load_pair_splits`). Reading is `readers`'."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from keras_nlp_week4.data.readers import Pair, read_aligned_files, read_qa_csv, read_tsv_pairs
from keras_nlp_week4.errors import UserError

__all__ = ["DatasetSplits", "Pair", "grouped_split", "load_pair_splits", "source_key"]

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class DatasetSplits:
    """Train, validation and test examples of a sequence-to-sequence task.

    Args:
        train: ``(source, target)`` pairs to fit on.
        validation: pairs for model selection and early stopping.
        test: held-out pairs, reported once.

    Example:

    >>> splits = DatasetSplits(train=[("a", "b")], validation=[], test=[("c", "d")])
    >>> splits.sizes()
    {'train': 1, 'validation': 0, 'test': 1}
    """

    train: list[Pair]
    validation: list[Pair]
    test: list[Pair]

    def sizes(self) -> dict[str, int]:
        """Returns the number of pairs in each split, keyed by split name."""
        return {
            "train": len(self.train),
            "validation": len(self.validation),
            "test": len(self.test),
        }

    def overlapping_sources(self) -> set[str]:
        """Returns the source strings that appear in more than one split (empty if disjoint)."""
        train = {source for source, _ in self.train}
        validation = {source for source, _ in self.validation}
        test = {source for source, _ in self.test}
        return (train & validation) | (train & test) | (validation & test)


def source_key(text: str) -> str:
    """The identity of a source sentence for splitting: case and whitespace folded.

    Example:

    >>> source_key("  Hi,  Tom. ") == source_key("hi, tom.")
    True
    """
    return " ".join(text.split()).casefold()


# ------------------------------------------------------------------------------------ file access


def grouped_split(pairs: list[Pair], validation_fraction: float, test_fraction: float,
                  seed: int = 0) -> DatasetSplits:
    """Splits pairs into train/validation/test with every source sentence in exactly one split.

    Pairs are grouped by `source_key`; the groups are shuffled with a private
    ``random.Random(seed)`` (after sorting, so the result depends only on the pairs and the seed)
    and dealt out to test, then validation, then train, until each held-out split holds at least
    its fraction of the pairs (at least one group each when the fraction is positive).

    Args:
        pairs: ``(source, target)`` pairs.
        validation_fraction: share of the pairs for validation, in [0, 1).
        test_fraction: share of the pairs for test, in [0, 1).
        seed: the shuffle seed.

    Returns:
        A `DatasetSplits`; within a split, pairs keep their file order.

    Raises:
        UserError: a fraction is out of range, or there are too few distinct sources to fill
            every split.

    Example:

    >>> pairs = [("a", "1"), ("A", "2"), ("b", "3"), ("c", "4"), ("d", "5")]
    >>> splits = grouped_split(pairs, 0.2, 0.2, seed=0)
    >>> splits.sizes()["train"] >= 1 and not splits.overlapping_sources()
    True
    """
    for name, value in (("validation_fraction", validation_fraction),
                        ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise UserError(f"{name} must be in [0, 1), got {value}")
    groups: dict[str, list[int]] = {}
    for index, (source, _) in enumerate(pairs):
        groups.setdefault(source_key(source), []).append(index)
    needed = 1 + (validation_fraction > 0) + (test_fraction > 0)
    if len(groups) < needed:
        raise UserError(f"only {len(groups)} distinct source sentences; need at least {needed} to "
                        "fill the train, validation and test splits")
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    assignment = dict.fromkeys(keys, "train")
    held_out = [(name, fraction * len(pairs)) for name, fraction in
                (("test", test_fraction), ("validation", validation_fraction)) if fraction > 0]
    position = 0
    for rank, (name, target) in enumerate(held_out):
        # Keep one group back for every later split and for train, so none ends up empty.
        reserve = len(held_out) - rank
        count = 0
        while position < len(keys) - reserve and (count == 0 or count < target):
            assignment[keys[position]] = name
            count += len(groups[keys[position]])
            position += 1
    out: dict[str, list[Pair]] = {"train": [], "validation": [], "test": []}
    for pair in pairs:
        out[assignment[source_key(pair[0])]].append(pair)
    return DatasetSplits(train=out["train"], validation=out["validation"], test=out["test"])


def _drop_sources(pairs: list[Pair], held_out: list[Pair], what: str, where: str) -> list[Pair]:
    keys = {source_key(source) for source, _ in held_out}
    kept = [pair for pair in pairs if source_key(pair[0]) not in keys]
    if len(kept) < len(pairs):
        log.warning("warning: dropped %d %s pairs whose source sentence is also in the %s split",
                    len(pairs) - len(kept), what, where)
    return kept


def load_pair_splits(sources, seed: int, file_format: str,
                     validation_fraction: float, test_fraction: float,
                     task_name: str = "this task", example_data: str | None = None) -> DatasetSplits:
    """Reads a text task's data (`DataSources`) with `readers` and returns disjoint splits.

    Args:
        sources: the data options, a `readers.DataSources`.
        seed: seed of `grouped_split`.
        file_format: format of `data`, ``"qa_csv"`` or ``"tsv"``.
        validation_fraction, test_fraction: shares cut from the training data for the splits
            that are not given as files.
        task_name: the task's name, for messages.
        example_data: a data path to suggest when none is given.

    Returns:
        A `DatasetSplits` in which no source sentence appears in two splits (pairs in given
        held-out files win: training pairs with their sources are dropped, with a warning).

    Raises:
        UserError: for missing, contradictory or unusable data options and files.
    """
    readers = {"qa_csv": read_qa_csv, "tsv": read_tsv_pairs}
    if file_format not in readers:
        raise ValueError(f"unknown file format {file_format!r}")
    read = readers[file_format]
    options = dict(encoding=sources.encoding, reverse=sources.reverse)

    # (data, src, tgt) of each split, keyed by the prefix of its fields.
    split_files = {"": (sources.data, sources.src, sources.tgt),
                   "validation_": (sources.validation_data, sources.validation_src,
                                   sources.validation_tgt),
                   "test_": (sources.test_data, sources.test_src, sources.test_tgt)}
    # Check the combination of options before reading anything, so a mistake costs no time.
    for name, (data, src, tgt) in split_files.items():
        fields = (f"{name}data", f"{name}src", f"{name}tgt")
        if bool(src) != bool(tgt):
            raise UserError(f"give both {name}src and {name}tgt, or neither", fields=fields)
        if data and src:
            raise UserError(f"give either {name}data or {name}src/{name}tgt, not both", fields=fields)
    if not sources.data and not sources.src:
        hint = f", e.g. data={example_data}" if example_data else ""
        raise UserError(f"{task_name} has nothing to train on: give data (a file of pairs){hint}, or "
                        "line-aligned src and tgt files", fields=("data", "src", "tgt"))

    def load(data, src, tgt):
        if data:
            return read(data, **options).pairs
        return read_aligned_files(src, tgt, **options).pairs if src else None

    train, validation, test = (load(*files) for files in split_files.values())

    if validation is not None and test is not None:
        validation = _drop_sources(validation, test, "validation", "test")
        train = _drop_sources(train, validation + test, "training", "validation or test")
        return DatasetSplits(train=train, validation=validation, test=test)
    if test is not None:
        train = _drop_sources(train, test, "training", "test")
        splits = grouped_split(train, validation_fraction, 0.0, seed)
        return DatasetSplits(train=splits.train, validation=splits.validation, test=test)
    if validation is not None:
        train = _drop_sources(train, validation, "training", "validation")
        splits = grouped_split(train, 0.0, test_fraction, seed)
        return DatasetSplits(train=splits.train, validation=validation, test=splits.test)
    return grouped_split(train, validation_fraction, test_fraction, seed)
