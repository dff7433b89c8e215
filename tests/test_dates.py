"""Tests for the embedded dates task (keras_nlp_week4/data/dates.py)."""

from __future__ import annotations

import datetime
import random
import re

import pytest

from keras_nlp_week4.data.dates import (
    DATE_FORMATS,
    MAX_DATE,
    MIN_DATE,
    date_splits,
    generate_date_pairs,
    render_date,
)
from keras_nlp_week4.errors import UserError

# An independent parser: one strptime pattern per format, applied after removing the decorations
# strptime cannot read (ordinal suffixes, abbreviation dots, "sept", "tues", "thurs").
PATTERNS = {
    "{month} {day}, {yyyy}": "%B %d, %Y",
    "{month} {day} {yyyy}": "%B %d %Y",
    "{mon} {day} {yyyy}": "%b %d %Y",
    "{mon} {day}, {yyyy}": "%b %d, %Y",
    "{mon_dot} {day}, {yyyy}": "%b %d, %Y",
    "{mon} {day}, '{yy}": "%b %d, '%y",
    "{day} {month} {yyyy}": "%d %B %Y",
    "{day} {month} {yy}": "%d %B %y",
    "{day} {mon} {yyyy}": "%d %b %Y",
    "{dd}-{mon}-{yyyy}": "%d-%b-%Y",
    "{dd}.{mm}.{yyyy}": "%d.%m.%Y",
    "{day}.{m}.{yyyy}": "%d.%m.%Y",
    "{m}/{day}/{yy}": "%m/%d/%y",
    "{mm}/{dd}/{yy}": "%m/%d/%y",
    "{mm}/{dd}/{yyyy}": "%m/%d/%Y",
    "{m}/{day}/{yyyy}": "%m/%d/%Y",
    "{weekday}, {month} {day}, {yyyy}": "%A, %B %d, %Y",
    "{weekday} {day} {month} {yyyy}": "%A %d %B %Y",
    "{wkd} {dd} {mon} {yyyy}": "%a %d %b %Y",
    "{wkd}, {mon} {day}, {yyyy}": "%a, %b %d, %Y",
    "the {dth} of {month} {yyyy}": "the %d of %B %Y",
    "{month} {dth}, {yyyy}": "%B %d, %Y",
    "{dth} {month} {yyyy}": "%d %B %Y",
    "{month} {dd}, {yyyy}": "%B %d, %Y",
    "{mon} {dd} {yyyy}": "%b %d %Y",
    "{mon_p} {day}, {yyyy}": "%b %d, %Y",
    "{sept} {day} {yyyy}": "%b %d %Y",
    "{mon} {day} '{yy}": "%b %d '%y",
    "{day} {month}, {yyyy}": "%d %B, %Y",
    "{dd} {mon_p} {yyyy}": "%d %b %Y",
    "{weekday}, {day} {month} {yyyy}": "%A, %d %B %Y",
    "{weekday} the {dth} of {month} {yyyy}": "%A the %d of %B %Y",
    "the {dth} of {month}, {yyyy}": "the %d of %B, %Y",
    "{dth} of {month} {yyyy}": "%d of %B %Y",
    "{wkd}, {dd} {mon} {yyyy}": "%a, %d %b %Y",
    "{wkd_long}. {mon_p} {day}, {yyyy}": "%a %b %d, %Y",
    "{dd}.{mm}.{yy}": "%d.%m.%y",
    "{day}-{mon}-{yy}": "%d-%b-%y",
    "{mon_p} {dth}, {yyyy}": "%b %d, %Y",
    "{mon} {dth}, {yyyy}": "%b %d, %Y",
}

# What each format gives for 1994-09-27 (a Tuesday), written out by hand.
EXPECTED_1994_09_27 = {
    "{month} {day}, {yyyy}": "september 27, 1994",
    "{month} {day} {yyyy}": "september 27 1994",
    "{mon} {day} {yyyy}": "sep 27 1994",
    "{mon} {day}, {yyyy}": "sep 27, 1994",
    "{mon_dot} {day}, {yyyy}": "sept. 27, 1994",
    "{mon} {day}, '{yy}": "sep 27, '94",
    "{day} {month} {yyyy}": "27 september 1994",
    "{day} {month} {yy}": "27 september 94",
    "{day} {mon} {yyyy}": "27 sep 1994",
    "{dd}-{mon}-{yyyy}": "27-sep-1994",
    "{dd}.{mm}.{yyyy}": "27.09.1994",
    "{day}.{m}.{yyyy}": "27.9.1994",
    "{m}/{day}/{yy}": "9/27/94",
    "{mm}/{dd}/{yy}": "09/27/94",
    "{mm}/{dd}/{yyyy}": "09/27/1994",
    "{m}/{day}/{yyyy}": "9/27/1994",
    "{weekday}, {month} {day}, {yyyy}": "tuesday, september 27, 1994",
    "{weekday} {day} {month} {yyyy}": "tuesday 27 september 1994",
    "{wkd} {dd} {mon} {yyyy}": "tue 27 sep 1994",
    "{wkd}, {mon} {day}, {yyyy}": "tue, sep 27, 1994",
    "the {dth} of {month} {yyyy}": "the 27th of september 1994",
    "{month} {dth}, {yyyy}": "september 27th, 1994",
    "{dth} {month} {yyyy}": "27th september 1994",
    "{month} {dd}, {yyyy}": "september 27, 1994",
    "{mon} {dd} {yyyy}": "sep 27 1994",
    "{mon_p} {day}, {yyyy}": "sep. 27, 1994",
    "{sept} {day} {yyyy}": "sept 27 1994",
    "{mon} {day} '{yy}": "sep 27 '94",
    "{day} {month}, {yyyy}": "27 september, 1994",
    "{dd} {mon_p} {yyyy}": "27 sep. 1994",
    "{weekday}, {day} {month} {yyyy}": "tuesday, 27 september 1994",
    "{weekday} the {dth} of {month} {yyyy}": "tuesday the 27th of september 1994",
    "the {dth} of {month}, {yyyy}": "the 27th of september, 1994",
    "{dth} of {month} {yyyy}": "27th of september 1994",
    "{wkd}, {dd} {mon} {yyyy}": "tue, 27 sep 1994",
    "{wkd_long}. {mon_p} {day}, {yyyy}": "tues. sep. 27, 1994",
    "{dd}.{mm}.{yy}": "27.09.94",
    "{day}-{mon}-{yy}": "27-sep-94",
    "{mon_p} {dth}, {yyyy}": "sep. 27th, 1994",
    "{mon} {dth}, {yyyy}": "sep 27th, 1994",
}

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def _suffix(day: int) -> str:
    if day in (11, 12, 13):
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def parse(text: str, pattern: str) -> datetime.date | None:
    """Reads `text` with one strptime pattern; None if it does not match or is inconsistent."""
    text = re.sub(r"(?<=[a-z])\.", "", text.lower())
    for longer, short in (("sept", "sep"), ("tues", "tue"), ("thurs", "thu")):
        text = re.sub(rf"\b{longer}\b", short, text)
    for number, suffix in re.findall(r"\b(\d{1,2})(st|nd|rd|th)\b", text):
        if suffix != _suffix(int(number)):
            return None
    text = re.sub(r"\b(\d{1,2})(?:st|nd|rd|th)\b", r"\1", text)
    try:
        date = datetime.datetime.strptime(text, pattern).date()
    except ValueError:
        return None
    # Python pivots two-digit years at 69; the documented convention is 1950..2049.
    if "%y" in pattern and date.year >= 2050:
        date = date.replace(year=date.year - 100)
    # strptime ignores the weekday; check it against the date.
    weekday = WEEKDAYS[date.weekday()]
    if "%A" in pattern and not text.startswith(weekday):
        return None
    if "%a" in pattern and not text.startswith(weekday[:3]):
        return None
    return date


def parse_all(text: str) -> set[datetime.date]:
    return {date for pattern in PATTERNS.values() if (date := parse(text, pattern)) is not None}


def test_parser_covers_every_format():
    assert set(PATTERNS) == set(DATE_FORMATS)
    assert set(EXPECTED_1994_09_27) == set(DATE_FORMATS)


def test_formats_render_documented_examples():
    date = datetime.date(1994, 9, 27)
    for fmt, expected in EXPECTED_1994_09_27.items():
        assert render_date(date, fmt) == expected
        assert render_date(date, fmt, case="upper") == expected.upper()


def test_title_case_capitalizes_words_not_ordinals():
    date = datetime.date(1994, 9, 27)
    assert render_date(date, "the {dth} of {month} {yyyy}", "title") == "The 27th Of September 1994"
    assert render_date(date, "{mon_dot} {day}, {yyyy}", "title") == "Sept. 27, 1994"


@pytest.mark.parametrize("fmt", DATE_FORMATS)
def test_each_format_parses_back(fmt):
    rng = random.Random(123)
    low, high = (1950, 2049) if "{yy}" in fmt else (MIN_DATE.year, MAX_DATE.year)
    dates = [datetime.date(low, 1, 1), datetime.date(high, 12, 31), datetime.date(2000, 2, 29)]
    dates += [datetime.date(1996, 3, day) for day in (1, 2, 3, 11, 12, 13, 21, 22, 23, 31)]
    first, last = datetime.date(low, 1, 1).toordinal(), datetime.date(high, 12, 31).toordinal()
    dates += [datetime.date.fromordinal(rng.randint(first, last)) for _ in range(150)]
    for date in dates:
        for case in ("lower", "upper", "title"):
            text = render_date(date, fmt, case)
            assert parse(text, PATTERNS[fmt]) == date, (fmt, text)


def test_generated_pairs_map_to_exactly_one_date():
    for source, target in generate_date_pairs(3000, seed=5):
        assert parse_all(source) == {datetime.date.fromisoformat(target)}, source


def test_dates_span_the_documented_range():
    targets = [datetime.date.fromisoformat(t) for _, t in generate_date_pairs(3000, seed=2)]
    assert MIN_DATE <= min(targets) and max(targets) <= MAX_DATE
    # Both centuries are sampled, including years that cannot use a two-digit format.
    assert any(d.year < 1950 for d in targets) and any(d.year > 2049 for d in targets)


def test_generation_is_deterministic_and_uses_no_global_state():
    random.seed(99)
    expected_next = random.random()
    random.seed(99)
    first = generate_date_pairs(500, seed=7)
    assert random.random() == expected_next
    assert generate_date_pairs(500, seed=7) == first
    assert generate_date_pairs(500, seed=8) != first
    assert generate_date_pairs(0, seed=7) == []


def test_case_variants_present():
    sources = [source for source, _ in generate_date_pairs(2000, seed=3)]
    with_letters = [s for s in sources if re.search("[a-z]", s, re.IGNORECASE)]
    lower = [s for s in with_letters if s == s.lower()]
    upper = [s for s in with_letters if s == s.upper()]
    title = [s for s in with_letters if s not in lower and s not in upper]
    assert min(len(lower), len(upper), len(title)) > len(with_letters) // 5
    for s in title:
        assert all(word[0].isupper() for word in s.split() if word[0].isalpha()), s


def test_date_splits_sizes_disjoint_and_deterministic():
    splits = date_splits(num_train=2000, num_validation=200, num_test=200, seed=1)
    assert splits.sizes() == {"train": 2000, "validation": 200, "test": 200}
    assert splits.overlapping_sources() == set()
    keys = [s.lower() for split in (splits.train, splits.validation, splits.test) for s, _ in split]
    assert len(keys) == len(set(keys))  # unique even ignoring case
    for source, target in splits.validation:
        assert parse_all(source) == {datetime.date.fromisoformat(target)}
    assert date_splits(2000, 200, 200, seed=1) == splits
    assert date_splits(2000, 200, 200, seed=2).test != splits.test
    # The held-out splits do not move when only the training size changes.
    smaller = date_splits(num_train=500, num_validation=200, num_test=200, seed=1)
    assert smaller.test == splits.test and smaller.validation == splits.validation


def test_invalid_requests_raise_user_error():
    date = datetime.date(1994, 9, 27)
    with pytest.raises(UserError, match="two-digit year"):
        render_date(datetime.date(1949, 12, 31), "{m}/{day}/{yy}")
    with pytest.raises(UserError, match="two-digit year"):
        render_date(datetime.date(2050, 1, 1), "{day} {month} {yy}")
    with pytest.raises(UserError, match="unknown placeholders"):
        render_date(date, "{month} {century}")
    with pytest.raises(UserError, match="unknown case"):
        render_date(date, "{month}", case="shout")
    with pytest.raises(UserError, match="outside"):
        render_date(datetime.date(1899, 12, 31), "{month} {day}, {yyyy}")
    with pytest.raises(UserError):
        generate_date_pairs(-1, seed=0)
    with pytest.raises(UserError, match="num_test"):
        date_splits(10, 10, -1)


def test_is_iso_date_accepts_every_target_and_nothing_else():
    from keras_nlp_week4.data.dates import is_iso_date

    assert all(is_iso_date(target) for _, target in generate_date_pairs(500, seed=7))
    for text in ("1994-02-30", "1994-9-27", "94-09-27", "1899-12-31", "2100-01-01", "1994-09-27 ", "",
                 "september 27, 1994", "1994/09/27"):
        assert not is_iso_date(text), text
