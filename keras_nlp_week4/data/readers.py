"""Readers for real text data: question/answer CSV, tab-separated pairs, and two line-aligned files.

Real files are messy (see ``../shared/data/README.md``): CRLF line endings, a byte-order mark,
quoted fields with commas, trailing spaces in a label, empty lines, rows with a missing or an extra
column, lines in another encoding. Every reader here either

* skips a bad row and counts it, reporting one warning line per file with the counts by reason
  (``warning: kor.txt: skipped 2 of 5751 rows (1 empty line, 1 row with fewer than 2 columns)``);
  or
* stops with a `UserError` (one line, what is wrong and how to fix it) when the file as a whole
  is unusable: missing, not text, in another encoding, without the needed columns, empty.

so a bad file never surfaces as a stack trace from inside ``tf.data``.

`grouped_split` cuts the examples into train/validation/test so that one source sentence (compared
after folding case and whitespace) never lands in two splits: ``kor.txt`` lists 619 English
sentences twice with different translations, and ``ChatbotData.csv`` repeats 161 questions, so a
split by line would leak test sources into training.

Example:

>>> examples = read_tsv_pairs("../shared/data/kor-eng/kor.txt")  # doctest: +SKIP
>>> splits = grouped_split(examples.pairs, 0.05, 0.1, seed=0)  # doctest: +SKIP
>>> splits.overlapping_sources()  # doctest: +SKIP
set()
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path

from keras_nlp_week4.errors import UserError

Pair = tuple[str, str]

__all__ = [
    "DataSources",
    "Examples",
    "read_aligned_files",
    "read_qa_csv",
    "read_tsv_pairs",
]

log = logging.getLogger(__name__)

# Header names accepted for each column of a question/answer CSV (compared lower-cased).
_QUESTION_NAMES = ("q", "question", "source", "input")
_ANSWER_NAMES = ("a", "answer", "target", "output", "response")
_LABEL_NAMES = ("label", "labels", "category")
# More undecodable lines than this fraction means the file is in another encoding, not damaged.
_MAX_UNDECODABLE_FRACTION = 0.1


@dataclass
class Examples:
    """Pairs read from one source, with what was skipped.

    Args:
        pairs: ``(source, target)`` pairs, in file order, surrounding whitespace stripped.
        skipped: number of skipped rows by reason.
        rows: number of rows (lines, for line formats) the file held, skipped ones included.
        labels: one label per pair for a CSV with a label column (None where unreadable).
    """

    pairs: list[Pair]
    skipped: Counter = field(default_factory=Counter)
    rows: int = 0
    labels: list[int | None] | None = None


def _data_option(help: str, default=None):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class DataSources:
    """Where a text task's data comes from: the one declaration of the data options (the command line's
    flags and `TrainConfig`'s fields are derived from it).

    Give either `data` (one file of pairs) or `src` and `tgt` (line-aligned files). Held-out data
    may come from files too: `validation_data`/`test_data` in the format of `data`, or
    `validation_src`/`validation_tgt` and `test_src`/`test_tgt`; splits not given are cut from the
    training data (`splits.grouped_split`).
    """

    data: str | None = _data_option("data file for tasks that read one (chatbot: CSV Q,A[,label]; "
                                    "translate: source<TAB>target lines)")
    src: str | None = _data_option("line-aligned source file (with tgt, instead of data)")
    tgt: str | None = _data_option("line-aligned target file")
    validation_data: str | None = _data_option("validation file in the format of data (default: cut from "
                                               "the data)")
    test_data: str | None = _data_option("test file in the format of data")
    validation_src: str | None = _data_option("line-aligned validation source file")
    validation_tgt: str | None = _data_option("line-aligned validation target file")
    test_src: str | None = _data_option("line-aligned test source file")
    test_tgt: str | None = _data_option("line-aligned test target file")
    reverse: bool = _data_option("swap source and target (e.g. Korean -> English from kor.txt)", False)
    encoding: str = _data_option("text encoding of the data files", "utf-8")

    _NOT_FILES = ("reverse", "encoding")

    @classmethod
    def of(cls, settings) -> DataSources:
        """The data options of any object with these attributes (a `TrainConfig`)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})

    def given(self) -> list[str]:
        """Names of the file options that are set."""
        return [f.name for f in fields(self) if f.name not in self._NOT_FILES and getattr(self, f.name)]


def _read_bytes(path: str | Path) -> bytes:
    path = Path(path)
    if not path.exists():
        raise UserError(f"data file {str(path)!r} not found; check the path")
    if path.is_dir():
        raise UserError(f"{str(path)!r} is a directory; give the data file inside it")
    try:
        return path.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read {str(path)!r}: {error.strerror}") from None


def _decode_lines(path: str | Path, encoding: str) -> tuple[list[str | None], int]:
    """Splits a file into lines (without line ends) decoded one by one.

    Returns the lines, with None for each line that does not decode, and the number of those.
    Decoding line by line lets a file with a few damaged lines still be read.
    """
    raw = _read_bytes(path)
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UserError(f"{str(path)!r} is UTF-16 text; convert it to UTF-8 "
                        "(iconv -f UTF-16 -t UTF-8) and try again")
    if b"\x00" in raw[:8192]:
        raise UserError(f"{str(path)!r} is not a text file (it contains NUL bytes)")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte-order mark would otherwise glue onto the first field
    try:
        "".encode(encoding)
    except LookupError:
        raise UserError(f"unknown text encoding {encoding!r}; try utf-8, cp949 or euc-kr") from None
    # Split on "\n" only: str.splitlines would also split on U+2028 and friends and break the
    # line alignment of SRC/TGT files.
    chunks = raw.split(b"\n")
    if chunks and chunks[-1] == b"":
        chunks.pop()  # the final line end
    lines: list[str | None] = []
    bad = 0
    first_bad = None
    for number, chunk in enumerate(chunks, start=1):
        try:
            lines.append(chunk.rstrip(b"\r").decode(encoding))
        except UnicodeDecodeError:
            lines.append(None)
            bad += 1
            first_bad = first_bad or number
    if bad and bad > _MAX_UNDECODABLE_FRACTION * max(1, len(chunks)):
        raise UserError(
            f"{str(path)!r} is not {encoding} text ({bad} of {len(chunks)} lines cannot be decoded, "
            f"the first is line {first_bad}); convert it, e.g. iconv -f cp949 -t utf-8, or give "
            "its encoding with --encoding")
    return lines, bad


def _warn_skipped(path: str | Path, examples: Examples) -> None:
    total = sum(examples.skipped.values())
    if not total:
        return
    reasons = ", ".join(f"{count} {reason}" for reason, count in examples.skipped.most_common())
    log.warning("warning: %s: skipped %d of %d rows (%s)", path, total, examples.rows, reasons)


def _require_pairs(path: str | Path, examples: Examples, what: str) -> Examples:
    if not examples.pairs:
        reasons = ", ".join(f"{c} {r}" for r, c in examples.skipped.most_common()) or "no rows"
        raise UserError(f"{str(path)!r} holds no usable {what} ({reasons})")
    _warn_skipped(path, examples)
    return examples


def _swap(examples: Examples) -> Examples:
    examples.pairs = [(target, source) for source, target in examples.pairs]
    return examples


# ---------------------------------------------------------------------------------------- readers


def _find_column(header: list[str], names: tuple[str, ...]) -> int | None:
    for index, cell in enumerate(header):
        if cell in names:
            return index
    return None


def read_qa_csv(path: str | Path, encoding: str = "utf-8", reverse: bool = False) -> Examples:
    """Reads a question/answer CSV with a header row naming the columns ``Q`` and ``A``.

    An optional ``label`` column is read as an int (surrounding spaces ignored). Fields may be
    quoted (``"yes, really"``); line ends may be LF or CRLF; extra empty trailing fields are
    ignored. Skipped and counted: empty lines, rows whose number of fields differs from the
    header's, rows with an empty question or answer, lines that do not decode.

    Args:
        path: the CSV file.
        encoding: its text encoding.
        reverse: return ``(answer, question)`` pairs.

    Returns:
        `Examples` with ``(question, answer)`` pairs and, if the file has a label column, labels.

    Raises:
        UserError: the file is missing or not text, its header has no Q or A column, or it holds
            no usable pair.

    Example:

    >>> read_qa_csv("../shared/data/chatbot/ChatbotData.csv").pairs[0]  # doctest: +SKIP
    ('12시 땡!', '하루가 또 가네요.')
    """
    lines, undecodable = _decode_lines(path, encoding)
    examples = Examples(pairs=[], rows=0)
    if undecodable:
        examples.skipped["undecodable lines"] += undecodable
    # csv joins a quoted field that spans lines back together, so it gets the line ends back.
    reader = csv.reader(line + "\n" for line in lines if line is not None)
    header = None
    for row in reader:
        if any(cell.strip() for cell in row):
            header = [cell.strip().lower() for cell in row]
            break
    if header is None:
        raise UserError(f"{str(path)!r} is empty; it needs a header row Q,A and question/answer rows")
    q_col, a_col = _find_column(header, _QUESTION_NAMES), _find_column(header, _ANSWER_NAMES)
    label_col = _find_column(header, _LABEL_NAMES)
    missing = [name for name, col in (("Q", q_col), ("A", a_col)) if col is None]
    if missing:
        raise UserError(
            f"{str(path)!r}: the header row {','.join(header)!r} has no column "
            f"{' or '.join(missing)}; the file needs a header row naming the columns Q,A "
            "(and optionally label)")
    labels: list[int | None] = []
    width = len(header)
    for row in reader:
        examples.rows += 1
        while len(row) > width and not row[-1].strip():
            row = row[:-1]  # "q,a,0," has a harmless trailing separator
        if not any(cell.strip() for cell in row):
            examples.skipped["empty lines"] += 1
            continue
        if len(row) != width:
            examples.skipped[f"rows with {'fewer' if len(row) < width else 'more'} than "
                             f"{width} fields"] += 1
            continue
        question, answer = row[q_col].strip(), row[a_col].strip()
        if not question or not answer:
            examples.skipped["rows with an empty question or answer"] += 1
            continue
        examples.pairs.append((question, answer))
        if label_col is not None:
            try:
                labels.append(int(row[label_col].strip()))
            except ValueError:
                labels.append(None)
    examples.rows += undecodable
    if label_col is not None:
        examples.labels = labels
    _require_pairs(path, examples, "question/answer rows")
    return _swap(examples) if reverse else examples


def read_tsv_pairs(path: str | Path, encoding: str = "utf-8", reverse: bool = False) -> Examples:
    """Reads ``source \\t target`` lines; columns after the second (e.g. attribution) are ignored.

    Quotes have no special meaning (sentences contain them). Skipped and counted: empty lines,
    lines with fewer than 2 columns, lines with an empty source or target, lines that do not
    decode.

    Args:
        path: the file, e.g. ``kor.txt`` (``English \\t Korean \\t attribution``).
        encoding: its text encoding.
        reverse: return ``(target, source)`` pairs (Korean -> English for ``kor.txt``).

    Returns:
        `Examples` with the pairs in file order.

    Raises:
        UserError: the file is missing or not text, has no tab at all, or holds no usable pair.

    Example:

    >>> read_tsv_pairs("../shared/data/kor-eng/kor.txt").pairs[1]  # doctest: +SKIP
    ('Hi.', '안녕.')
    """
    lines, undecodable = _decode_lines(path, encoding)
    if not any(line and "\t" in line for line in lines):
        if any(line and line.strip() for line in lines):
            raise UserError(
                f"{str(path)!r} has no tab-separated columns; the translate task reads "
                "'source<TAB>target' lines (or give line-aligned src and tgt files)", fields=("src", "tgt"))
    examples = Examples(pairs=[], rows=len(lines))
    if undecodable:
        examples.skipped["undecodable lines"] += undecodable
    for line in lines:
        if line is None:
            continue
        if not line.strip():
            examples.skipped["empty lines"] += 1
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            examples.skipped["lines with fewer than 2 columns"] += 1
            continue
        source, target = fields[0].strip(), fields[1].strip()
        if not source or not target:
            examples.skipped["lines with an empty source or target"] += 1
            continue
        examples.pairs.append((source, target))
    _require_pairs(path, examples, "tab-separated pairs")
    return _swap(examples) if reverse else examples


def read_aligned_files(src: str | Path, tgt: str | Path, encoding: str = "utf-8",
                       reverse: bool = False) -> Examples:
    """Reads two line-aligned files: line i of `src` translates to line i of `tgt`.

    Skipped and counted: line pairs where either side is empty or does not decode. A different
    number of lines means the files are not aligned, and stops with an error.

    Args:
        src: source sentences, one per line.
        tgt: target sentences, one per line.
        encoding: the files' text encoding.
        reverse: return ``(target, source)`` pairs.

    Returns:
        `Examples` with the pairs in file order.

    Raises:
        UserError: a file is missing or not text, the line counts differ, or no pair is usable.
    """
    src_lines, _ = _decode_lines(src, encoding)
    tgt_lines, _ = _decode_lines(tgt, encoding)
    if len(src_lines) != len(tgt_lines):
        raise UserError(f"{str(src)!r} has {len(src_lines)} lines but {str(tgt)!r} has "
                        f"{len(tgt_lines)}; line-aligned files need one target line per source line")
    examples = Examples(pairs=[], rows=len(src_lines))
    for source, target in zip(src_lines, tgt_lines, strict=True):
        if source is None or target is None:
            examples.skipped["lines that cannot be decoded"] += 1
            continue
        source, target = source.strip(), target.strip()
        if not source and not target:
            examples.skipped["empty lines"] += 1
        elif not source or not target:
            examples.skipped["lines empty on one side"] += 1
        else:
            examples.pairs.append((source, target))
    _require_pairs(f"{src} + {tgt}", examples, "line pairs")
    return _swap(examples) if reverse else examples
