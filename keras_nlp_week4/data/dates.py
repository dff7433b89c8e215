"""The embedded default task: human-written dates -> ISO 8601 dates.

The task follows the classic "neural machine translation of dates" exercise used to teach
attention (Bahdanau et al. 2015 applied to a toy language): the source is a date written the way
people write it ("Tuesday, September 27, 1994", "27.09.1994", "9/27/94") and the target is
``"1994-09-27"``. It needs no download, trains in minutes on a CPU and its attention maps are easy
to read, which makes it the project's smoke-test task.

Conventions (they make every rendered string map back to exactly one date):

* Dates span 1900-01-01 .. 2099-12-31.
* Slashes mean US order, month/day/year: ``"9/27/94"`` and ``"09/27/1994"`` are September 27.
* Dots mean day.month.year: ``"27.09.1994"`` and ``"5.9.1994"`` (5 September).
* Hyphens only appear with a month name: ``"27-Sep-1994"``.
* Two-digit years map into 1950 .. 2049 (``"94"`` -> 1994, ``"07"`` -> 2007), so formats with a
  two-digit year are only used for dates in that window; other dates use four-digit-year formats.
* Month and weekday names are English and independent of the locale; abbreviations come with and
  without a period (``"sep"``, ``"sep."``, ``"sept."``, ``"sept"``; ``"tue"``, ``"tues."``), and May is
  never abbreviated with a dot.
* Days beside a month name are written plain or zero-padded (``"september 07, 1994"``), as `strftime`'s
  ``%d`` does. Extra spaces are not generated: the task's tokenizer squeezes them away.
* The weekday, when present, is the true weekday of the date.
* Letter case carries no meaning: each example is rendered in lower, UPPER or Title case.
* ISO-like inputs (``"1994/09/27"``, ``"1994-09-27"``) are deliberately absent so the model cannot
  solve the task by copying.

Example:

>>> import datetime
>>> render_date(datetime.date(1994, 9, 27), "{weekday}, {month} {day}, {yyyy}", case="title")
'Tuesday, September 27, 1994'
>>> generate_date_pairs(2, seed=0)
[('apr 1 2038', '2038-04-01'), ('THE 30TH OF NOVEMBER, 1992', '1992-11-30')]
"""

from __future__ import annotations

import datetime
import random
import re
import string

from keras_nlp_week4.data.splits import DatasetSplits, Pair
from keras_nlp_week4.errors import UserError

__all__ = [
    "CASES",
    "DATE_FORMATS",
    "MAX_DATE",
    "MIN_DATE",
    "TWO_DIGIT_YEAR_RANGE",
    "DatasetSplits",
    "date_splits",
    "generate_date_pairs",
    "is_iso_date",
    "render_date",
]

MIN_DATE = datetime.date(1900, 1, 1)
MAX_DATE = datetime.date(2099, 12, 31)
TWO_DIGIT_YEAR_RANGE = (1950, 2049)
"""Inclusive range of years that a two-digit year denotes."""

CASES = ("lower", "upper", "title")

# Fixed English names: `calendar.month_name` follows the process locale and would make the data
# depend on the machine.
_MONTHS = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DOTTED_MONTHS = (
    "jan.", "feb.", "mar.", "apr.", "may", "jun.",
    "jul.", "aug.", "sept.", "oct.", "nov.", "dec.",
)  # fmt: skip

DATE_FORMATS = [
    "{month} {day}, {yyyy}",  # september 27, 1994
    "{month} {day} {yyyy}",  # september 27 1994
    "{mon} {day} {yyyy}",  # sep 27 1994
    "{mon} {day}, {yyyy}",  # sep 27, 1994
    "{mon_dot} {day}, {yyyy}",  # sept. 27, 1994
    "{mon} {day}, '{yy}",  # sep 27, '94
    "{day} {month} {yyyy}",  # 27 september 1994
    "{day} {month} {yy}",  # 27 september 94
    "{day} {mon} {yyyy}",  # 27 sep 1994
    "{dd}-{mon}-{yyyy}",  # 27-sep-1994
    "{dd}.{mm}.{yyyy}",  # 27.09.1994
    "{day}.{m}.{yyyy}",  # 27.9.1994
    "{m}/{day}/{yy}",  # 9/27/94
    "{mm}/{dd}/{yy}",  # 09/27/94
    "{mm}/{dd}/{yyyy}",  # 09/27/1994
    "{m}/{day}/{yyyy}",  # 9/27/1994
    "{weekday}, {month} {day}, {yyyy}",  # tuesday, september 27, 1994
    "{weekday} {day} {month} {yyyy}",  # tuesday 27 september 1994
    "{wkd} {dd} {mon} {yyyy}",  # tue 27 sep 1994
    "{wkd}, {mon} {day}, {yyyy}",  # tue, sep 27, 1994
    "the {dth} of {month} {yyyy}",  # the 27th of september 1994
    "{month} {dth}, {yyyy}",  # september 27th, 1994
    "{dth} {month} {yyyy}",  # 27th september 1994
    "{month} {dd}, {yyyy}",  # september 07, 1994 (strftime's %B %d, %Y)
    "{mon} {dd} {yyyy}",  # sep 07 1994
    "{mon_p} {day}, {yyyy}",  # sep. 27, 1994
    "{sept} {day} {yyyy}",  # sept 27 1994
    "{mon} {day} '{yy}",  # sep 27 '94
    "{day} {month}, {yyyy}",  # 27 september, 1994
    "{dd} {mon_p} {yyyy}",  # 27 sep. 1994
    "{weekday}, {day} {month} {yyyy}",  # tuesday, 27 september 1994
    "{weekday} the {dth} of {month} {yyyy}",  # tuesday the 27th of september 1994
    "the {dth} of {month}, {yyyy}",  # the 27th of september, 1994
    "{dth} of {month} {yyyy}",  # 27th of september 1994
    "{wkd}, {dd} {mon} {yyyy}",  # tue, 27 sep 1994 (RFC 2822)
    "{wkd_long}. {mon_p} {day}, {yyyy}",  # tues. sep. 27, 1994
    "{dd}.{mm}.{yy}",  # 27.09.94
    "{day}-{mon}-{yy}",  # 27-sep-94
    "{mon_p} {dth}, {yyyy}",  # sep. 27th, 1994
    "{mon} {dth}, {yyyy}",  # sep 27th, 1994
]
"""Templates of human date formats; see `render_date` for the placeholders."""

_PLACEHOLDERS = frozenset(
    ("month", "mon", "mon_dot", "mon_p", "sept", "day", "dd", "dth", "m", "mm", "yyyy", "yy", "weekday", "wkd",
     "wkd_long")
)
# The longer abbreviations people write: "sept" for September, "tues" and "thurs" (weekday() 1 and 3).
_LONG_MONTH_ABBREVIATIONS = {9: "sept"}
_LONG_WEEKDAY_ABBREVIATIONS = {1: "tues", 3: "thurs"}
_ORDINAL_SUFFIXES = {1: "st", 2: "nd", 3: "rd"}
_FOUR_DIGIT_FORMATS = [fmt for fmt in DATE_FORMATS if "{yy}" not in fmt]


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day <= 13 else _ORDINAL_SUFFIXES.get(day % 10, "th")
    return f"{day}{suffix}"


def _placeholders(fmt: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(fmt) if name is not None}


def _apply_case(text: str, case: str) -> str:
    if case == "lower":
        return text
    if case == "upper":
        return text.upper()
    # Capitalise words that start with a letter only: str.title() would give "27Th".
    return re.sub(r"\b[a-z]", lambda match: match.group(0).upper(), text)


def render_date(date: datetime.date, fmt: str, case: str = "lower") -> str:
    """Writes `date` the way a person would, following template `fmt`.

    Placeholders: ``{month}`` "september", ``{mon}`` "sep", ``{mon_dot}`` "sept." (May stays
    "may"), ``{mon_p}`` "sep." (May stays "may"), ``{sept}`` "sept" (other months as ``{mon}``),
    ``{day}`` "5", ``{dd}`` "05", ``{dth}`` "5th", ``{m}`` "9", ``{mm}`` "09", ``{yyyy}`` "1994",
    ``{yy}`` "94", ``{weekday}`` "tuesday", ``{wkd}`` "tue", ``{wkd_long}`` "tues" ("thurs"; other days
    as ``{wkd}``).

    Args:
        date: a date in 1900-01-01 .. 2099-12-31.
        fmt: a template such as the entries of `DATE_FORMATS`.
        case: ``"lower"``, ``"upper"`` or ``"title"`` (first letter of each word).

    Returns:
        The rendered string.

    Raises:
        UserError: if the date is out of range, the template has an unknown placeholder, the case
            is unknown, or the template uses ``{yy}`` for a year outside 1950 .. 2049 (which would
            be read back as a different century).

    Example:

    >>> render_date(datetime.date(1994, 9, 27), "the {dth} of {month} {yyyy}")
    'the 27th of september 1994'
    >>> render_date(datetime.date(2007, 1, 2), "{m}/{day}/{yy}")
    '1/2/07'
    """
    if not MIN_DATE <= date <= MAX_DATE:
        raise UserError(f"date {date.isoformat()} is outside {MIN_DATE} .. {MAX_DATE}")
    if case not in CASES:
        raise UserError(f"unknown case {case!r}; choose one of {', '.join(CASES)}")
    unknown = _placeholders(fmt) - _PLACEHOLDERS
    if unknown:
        raise UserError(
            f"date format {fmt!r} has unknown placeholders {sorted(unknown)}; "
            f"use only {sorted(_PLACEHOLDERS)}"
        )
    low, high = TWO_DIGIT_YEAR_RANGE
    if "{yy}" in fmt and not low <= date.year <= high:
        raise UserError(
            f"format {fmt!r} writes a two-digit year, which means {low}..{high}, "
            f"but the year is {date.year}; use a four-digit-year format"
        )
    month = _MONTHS[date.month - 1]
    weekday = _WEEKDAYS[date.weekday()]
    text = fmt.format(
        month=month,
        mon=month[:3],
        mon_dot=_DOTTED_MONTHS[date.month - 1],
        mon_p=month[:3] + ("" if date.month == 5 else "."),
        sept=_LONG_MONTH_ABBREVIATIONS.get(date.month, month[:3]),
        day=date.day,
        dd=f"{date.day:02d}",
        dth=_ordinal(date.day),
        m=date.month,
        mm=f"{date.month:02d}",
        yyyy=f"{date.year:04d}",
        yy=f"{date.year % 100:02d}",
        weekday=weekday,
        wkd=weekday[:3],
        wkd_long=_LONG_WEEKDAY_ABBREVIATIONS.get(date.weekday(), weekday[:3]),
    )
    return _apply_case(text, case)


def is_iso_date(text: str) -> bool:
    """True when `text` is a real date written as the task's targets are: ``YYYY-MM-DD`` in range.

    >>> is_iso_date("1994-09-27"), is_iso_date("1994-02-30"), is_iso_date("94-09-27")
    (True, False, False)
    """
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return False
    try:
        return MIN_DATE <= datetime.date.fromisoformat(text) <= MAX_DATE
    except ValueError:
        return False


def _random_pair(rng: random.Random) -> Pair:
    date = datetime.date.fromordinal(rng.randint(MIN_DATE.toordinal(), MAX_DATE.toordinal()))
    low, high = TWO_DIGIT_YEAR_RANGE
    formats = DATE_FORMATS if low <= date.year <= high else _FOUR_DIGIT_FORMATS
    fmt = rng.choice(formats)
    case = rng.choice(CASES)
    return render_date(date, fmt, case), date.isoformat()


def generate_date_pairs(n: int, seed: int) -> list[Pair]:
    """Draws `n` random ``(human date, "YYYY-MM-DD")`` pairs.

    Dates are uniform over 1900 .. 2099; the format and the case are uniform over those valid for
    the date. Pairs may repeat; use `date_splits` for disjoint splits.

    Args:
        n: number of pairs (>= 0).
        seed: seed of a private `random.Random`; the same seed always gives the same pairs and no
            global random state is read or changed.

    Returns:
        A list of `n` ``(source, target)`` tuples.

    Example:

    >>> generate_date_pairs(3, seed=1) == generate_date_pairs(3, seed=1)
    True
    """
    if n < 0:
        raise UserError(f"number of date pairs must be >= 0, got {n}")
    rng = random.Random(seed)
    return [_random_pair(rng) for _ in range(n)]


def date_splits(
    num_train: int = 20000,
    num_validation: int = 1000,
    num_test: int = 1000,
    seed: int = 0,
) -> DatasetSplits:
    """Builds train/validation/test splits of the dates task, disjoint by source string.

    Sources are unique across and within splits, compared case-insensitively (so "SEP 27 1994" in
    train and "sep 27 1994" in test cannot both occur). The test split is drawn first and the
    validation split second, so for a given seed they do not change when `num_train` changes.

    Args:
        num_train: number of training pairs.
        num_validation: number of validation pairs.
        num_test: number of test pairs.
        seed: seed of the private random generator; the same arguments give the same splits.

    Returns:
        A `DatasetSplits`.

    Example:

    >>> splits = date_splits(num_train=100, num_validation=10, num_test=10, seed=0)
    >>> splits.sizes(), splits.overlapping_sources()
    ({'train': 100, 'validation': 10, 'test': 10}, set())
    """
    counts = {"num_train": num_train, "num_validation": num_validation, "num_test": num_test}
    for name, value in counts.items():
        if value < 0:
            raise UserError(f"{name} must be >= 0, got {value}")
    total = num_train + num_validation + num_test
    rng = random.Random(seed)
    seen: set[str] = set()
    pairs: list[Pair] = []
    # The space holds millions of distinct strings, so rejections are rare; the cap only turns
    # an absurd request into an error instead of an endless loop.
    max_draws = 20 * total + 1000
    for _ in range(max_draws):
        if len(pairs) == total:
            break
        source, target = _random_pair(rng)
        key = source.lower()
        if key not in seen:
            seen.add(key)
            pairs.append((source, target))
    if len(pairs) < total:
        raise UserError(f"could not draw {total} distinct dates; ask for fewer examples")
    test = pairs[:num_test]
    validation = pairs[num_test : num_test + num_validation]
    train = pairs[num_test + num_validation :]
    return DatasetSplits(train=train, validation=validation, test=test)
