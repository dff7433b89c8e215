"""The train/validation/test container shared by every task."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DatasetSplits", "Pair"]

Pair = tuple[str, str]
"""One example: ``(source, target)``."""


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
