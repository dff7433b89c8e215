"""Dates written by another author: a probe of the default model that training never sees.

`keras_nlp_week4.data.dates` draws the training, validation and test dates from its own templates, so a
model can score 1.000 on its test split by learning that generator's habits (its spacing, its one way of
abbreviating, its zero-padding rules) rather than dates. This module is written independently of it, from
`strftime`-style directives and English tables of its own, and is never imported by training. It keeps
only the task's conventions (the README's), which make every string mean one date:

* slashes are US month/day/year, dots day.month.year, hyphens only around a month name;
* a two-digit year is 1950-2049 (the probe draws 1970-2030, so every format applies to every date);
* the weekday, when written, is the true one; letter case carries no meaning.

Within those it spells dates as people and `strftime` do: zero-padded days beside month names
(``September 07, 1994``), abbreviations with and without periods (``Sep.``, ``Sept``, ``Tues.``,
``Thurs``), ordinals (``the 7th of September, 1994``), a comma after the month (``7 September, 1994``),
RFC 2822's ``Wed, 07 Sep 1994``, doubled, leading and trailing spaces, and all-caps, lower and title case.

Usage (a validated export of a dates run; onnxruntime only):

    python -m bench.independent_dates artifacts/dates-transformer/export --n 2000 --seed 0

Example:

>>> import datetime
>>> strftime_english(datetime.date(1994, 9, 7), "%A, %B %-d, %Y")
'Wednesday, September 7, 1994'
>>> independent_dates(2, seed=0)[0]
('21-Jan-2004', '2004-01-21')
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import re
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["FORMATS", "YEARS", "independent_dates", "score_export", "strftime_english"]

YEARS = (1970, 2030)
"""Inclusive range of the probe's years (inside the task's two-digit window, 1950-2049)."""

_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
                "October", "November", "December")
_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# The longer abbreviations people write beside the three-letter ones.
_LONG_MONTH_ABBREVIATIONS = {9: "Sept"}
_LONG_DAY_ABBREVIATIONS = {1: "Tues", 3: "Thurs"}  # by weekday(): Tuesday, Thursday

# strftime directives, plus `%-d`/`%-m` (no zero padding, as glibc), `%S` the ordinal suffix of the day,
# and `%b.`: an abbreviation with a period (none after May, which is not abbreviated).
FORMATS = (
    "%B %d, %Y",            # September 07, 1994
    "%B %-d, %Y",           # September 7, 1994
    "%b. %-d, %Y",          # Sep. 7, 1994
    "%b %d %Y",             # Sep 07 1994
    "%b %-d '%y",           # Sep 7 '94
    "%A, %B %-d, %Y",       # Wednesday, September 7, 1994
    "%a, %d %b %Y",         # Wed, 07 Sep 1994 (RFC 2822)
    "%a. %b. %-d, %Y",      # Wed. Sep. 7, 1994
    "%A %-d %B %Y",         # Wednesday 7 September 1994
    "%-d %B %Y",            # 7 September 1994
    "%d %B, %Y",            # 07 September, 1994
    "%-d %b. %Y",           # 7 Sep. 1994
    "%B %-d%S, %Y",         # September 7th, 1994
    "%-d%S %B %Y",          # 7th September 1994
    "%-d%S of %B, %Y",      # 7th of September, 1994
    "the %-d%S of %B, %Y",  # the 7th of September, 1994
    "%A the %-d%S of %B %Y",  # Wednesday the 7th of September 1994
    "%b. %-d%S, %Y",        # Sep. 7th, 1994
    "%m/%d/%Y",             # 09/07/1994
    "%-m/%-d/%Y",           # 9/7/1994
    "%m/%d/%y",             # 09/07/94
    "%-m/%-d/%y",           # 9/7/94
    "%d.%m.%Y",             # 07.09.1994
    "%-d.%-m.%Y",           # 7.9.1994
    "%d.%m.%y",             # 07.09.94
    "%d-%b-%Y",             # 07-Sep-1994
    "%-d-%b-%y",            # 7-Sep-94
)

_CASES = ("lower", "upper", "title", "as written")


def _ordinal_suffix(day: int) -> str:
    if 11 <= day % 100 <= 13:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def strftime_english(date: datetime.date, fmt: str, rng: random.Random | None = None) -> str:
    """`date.strftime(fmt)` with English names whatever the locale, plus `%-d`, `%-m`, `%S` (ordinal
    suffix) and `%b.`/`%a.` (abbreviation and period). With `rng`, an abbreviation is sometimes the
    longer one people write (``Sept``, ``Tues``, ``Thurs``)."""
    month, weekday = date.month, date.weekday()

    def abbreviation(names: tuple, index: int, longer: dict) -> str:
        if rng is not None and index in longer and rng.random() < 0.5:
            return longer[index]
        return names[index][:3]

    def month_abbreviation(dotted: bool) -> str:
        name = abbreviation(_MONTH_NAMES, month - 1, {k - 1: v for k, v in _LONG_MONTH_ABBREVIATIONS.items()})
        return name + ("." if dotted and name != "May" else "")

    directives = {
        "%B": lambda: _MONTH_NAMES[month - 1], "%A": lambda: _DAY_NAMES[weekday],
        "%b.": lambda: month_abbreviation(True), "%b": lambda: month_abbreviation(False),
        "%a.": lambda: abbreviation(_DAY_NAMES, weekday, _LONG_DAY_ABBREVIATIONS) + ".",
        "%a": lambda: abbreviation(_DAY_NAMES, weekday, _LONG_DAY_ABBREVIATIONS),
        "%d": lambda: f"{date.day:02d}", "%-d": lambda: str(date.day),
        "%m": lambda: f"{month:02d}", "%-m": lambda: str(month),
        "%Y": lambda: f"{date.year:04d}", "%y": lambda: f"{date.year % 100:02d}",
        "%S": lambda: _ordinal_suffix(date.day),
    }
    return re.sub(r"%-?[A-Za-z]\.?", lambda m: _directive(m.group(0), directives), fmt)


def _directive(token: str, directives: dict) -> str:
    if token in directives:
        return directives[token]()
    if token.endswith(".") and token[:-1] in directives:  # "%d." and the like: a period after a number
        return directives[token[:-1]]() + "."
    raise ValueError(f"unknown date directive {token!r}")


def _spaced(text: str, rng: random.Random) -> str:
    """Sometimes doubles a space, or adds one before or after: spacing a person's typing has."""
    if rng.random() < 0.15:
        gaps = [i for i, ch in enumerate(text) if ch == " "]
        if gaps:
            i = rng.choice(gaps)
            text = text[:i] + " " + text[i:]
    if rng.random() < 0.05:
        text = " " + text
    if rng.random() < 0.05:
        text = text + " "
    return text


def _cased(text: str, case: str) -> str:
    if case == "lower":
        return text.lower()
    if case == "upper":
        return text.upper()
    if case == "title":
        # Words that start with a letter: "7th" stays "7th".
        return re.sub(r"(?<![A-Za-z0-9])[A-Za-z]+", lambda m: m.group(0).capitalize(), text)
    return text


def independent_dates(n: int, seed: int, years: tuple[int, int] = YEARS) -> list[tuple[str, str]]:
    """`n` `(written date, "YYYY-MM-DD")` pairs: dates uniform over `years`, a format uniform over
    `FORMATS`, a case uniform over lower, upper, title and as written, and sometimes extra spaces."""
    rng = random.Random(f"independent-dates-{seed}")
    first = datetime.date(years[0], 1, 1).toordinal()
    last = datetime.date(years[1], 12, 31).toordinal()
    pairs = []
    for _ in range(n):
        date = datetime.date.fromordinal(rng.randint(first, last))
        text = strftime_english(date, rng.choice(FORMATS), rng)
        pairs.append((_spaced(_cased(text, rng.choice(_CASES)), rng), date.isoformat()))
    return pairs


def score_export(export_dir: Path, pairs: Sequence[tuple[str, str]], batch_size: int = 256) -> dict:
    """Greedy outputs of the export's onnxruntime runtime against `pairs`' ISO dates."""
    from serving.runtime import Runtime

    runtime = Runtime(export_dir)
    sources = [source for source, _ in pairs]
    outputs = []
    for start in range(0, len(sources), batch_size):
        outputs += [result.text for result in runtime.generate(sources[start:start + batch_size])]
    misses = [{"source": s, "expected": t, "output": o} for (s, t), o in zip(pairs, outputs, strict=True)
              if o != t]
    valid = sum(1 for o in outputs if _is_iso_date(o))
    return {"examples": len(pairs), "exact_match": 1 - len(misses) / max(1, len(pairs)),
            "valid_dates": valid / max(1, len(pairs)), "misses": misses}


def _is_iso_date(text: str) -> bool:
    try:
        return bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", text)) and bool(datetime.date.fromisoformat(text))
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.independent_dates", description=__doc__.split("\n")[0])
    parser.add_argument("export_dir", type=Path, help="a validated export of a dates run (RUN/export)")
    parser.add_argument("--n", type=int, default=2000, help="dates to draw (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="the probe's seed (default 0)")
    parser.add_argument("--json", type=Path, help="also write the figures and every miss here")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    from serving.errors import ServingError

    try:
        report = score_export(args.export_dir, independent_dates(args.n, args.seed))
    except ServingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{report['examples']} independent dates (seed {args.seed}): exact match {report['exact_match']:.4f}, "
          f"valid dates {report['valid_dates']:.4f}, {len(report['misses'])} misses")
    for miss in report["misses"][:20]:
        print(f"  {miss['source']!r} -> {miss['output']!r} (expected {miss['expected']})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
