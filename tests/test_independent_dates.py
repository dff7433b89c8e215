"""The independent date probe (`bench.independent_dates`): its strings mean the dates it claims, it spells
dates in ways the training generator does not, and it scores an export through the onnxruntime runtime."""

from __future__ import annotations

import datetime
import doctest
import random
import re

import pytest

import bench.independent_dates as probe
from keras_nlp_week4.data.dates import CASES, DATE_FORMATS, render_date


def parse_back(text: str, fmt: str) -> datetime.date:
    """Reads `text` back with `time.strptime` (C locale, case-insensitive) after undoing what strptime does
    not know: extra spaces, ordinal suffixes, periods after abbreviations, the longer abbreviations."""
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"(?<=\d)(st|nd|rd|th)\b", "", text, flags=re.IGNORECASE)
    text = re.sub(r"(?<=[A-Za-z])\.", "", text)
    for longer, short in (("sept", "sep"), ("tues", "tue"), ("thurs", "thu")):
        text = re.sub(rf"\b{longer}\b", short, text, flags=re.IGNORECASE)
    fmt = fmt.replace("%-d", "%d").replace("%-m", "%m").replace("%S", "")
    fmt = fmt.replace("%b.", "%b").replace("%a.", "%a")
    return datetime.datetime.strptime(text, fmt).date()


def test_the_doctests_hold():
    assert doctest.testmod(probe).failed == 0


@pytest.mark.parametrize("fmt", probe.FORMATS)
def test_every_format_means_the_date_it_claims(fmt):
    rng = random.Random(fmt)
    for _ in range(300):
        date = datetime.date.fromordinal(rng.randint(datetime.date(1970, 1, 1).toordinal(),
                                                     datetime.date(2030, 12, 31).toordinal()))
        text = probe.strftime_english(date, fmt, rng)
        assert parse_back(text, fmt) == date, (fmt, text)
        if "%A" in fmt or "%a" in fmt:  # a written weekday is the true one
            assert date.strftime("%a").lower() in text.lower()


def test_the_probe_covers_the_spellings_it_promises():
    pairs = probe.independent_dates(3000, seed=0)
    sources = [s for s, _ in pairs]
    years = {int(t[:4]) for _, t in pairs}
    assert min(years) >= probe.YEARS[0] and max(years) <= probe.YEARS[1]
    patterns = {
        "ordinal": r"\d(st|nd|rd|th)\b", "period abbreviation": r"\b[a-z]{3}\.", "sept": r"\bsept\b",
        "tues or thurs": r"\b(tues|thurs)\b", "zero-padded day by a month name": r"[a-z] 0\d\b",
        "doubled space": r"\S  \S", "leading space": r"^ ", "trailing space": r" $",
    }
    for name, pattern in patterns.items():
        assert any(re.search(pattern, s, re.IGNORECASE) for s in sources), name
    assert any(s.strip().isupper() for s in sources) and any(s == s.lower() and re.search("[a-z]", s)
                                                             for s in sources)
    assert pairs == probe.independent_dates(3000, seed=0) != probe.independent_dates(3000, seed=1)


def test_it_writes_what_the_training_generator_never_does():
    """The probe is other code with other habits: a good share of its strings are none the training
    generator can write for that date (every format, every case), spacing and spellings among them."""
    unseen = []
    for source, target in probe.independent_dates(1500, seed=0):
        date = datetime.date.fromisoformat(target)
        if source not in {render_date(date, fmt, case) for fmt in DATE_FORMATS for case in CASES}:
            unseen.append(source)
    assert len(unseen) >= 1500 // 5
    assert any(s != s.strip() or "  " in s for s in unseen)  # the training generator never spaces so
    date = datetime.date(1994, 9, 7)
    training = {render_date(date, fmt, case).lower() for fmt in DATE_FORMATS for case in CASES}
    assert "7th of september, 1994" not in training and "7th of september, 1994" in {
        probe.strftime_english(date, fmt).lower() for fmt in probe.FORMATS}


def test_it_scores_an_export_through_the_runtime(tiny_export, capsys):
    pairs = probe.independent_dates(40, seed=3)
    report = probe.score_export(tiny_export, pairs)
    assert report["examples"] == 40 and 0 <= report["exact_match"] <= 1
    assert len(report["misses"]) == round((1 - report["exact_match"]) * 40)
    assert all(m["expected"] == dict(pairs)[m["source"]] != m["output"] for m in report["misses"])
    assert probe.main([str(tiny_export), "--n", "40", "--seed", "3"]) == 0
    assert f"exact match {report['exact_match']:.4f}" in capsys.readouterr().out


def test_a_missing_export_is_one_line(tmp_path, capsys):
    assert probe.main([str(tmp_path / "nowhere"), "--n", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "does not exist" in err and "\n" not in err
