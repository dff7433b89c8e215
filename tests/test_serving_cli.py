"""`python -m serving EXPORT_DIR "text" ...` and `make infer`."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys

import pytest
from helpers import ROOT, copy_export, run_module

from serving.cli import main
from serving.runtime import DecodingOptions

TEXTS = ["september 27, 1994", "9/27/94", "MONDAY, NOVEMBER 30, 1992"]


def test_module_prints_one_output_per_text(tiny_export, runtime):
    done = run_module("serving", str(tiny_export), *TEXTS, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:-1] == [g.text for g in runtime.generate(TEXTS)]


def test_lines_from_stdin_with_json(tiny_export, runtime, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(TEXTS) + "\n"))
    assert main([str(tiny_export), "--json", "--tokens", "--attention"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = runtime.generate(TEXTS, return_attention=True)
    assert [r["input"] for r in records] == TEXTS
    for record, generation in zip(records, expected, strict=True):
        assert record["text"] == generation.text and record["token_ids"] == generation.token_ids
        assert len(record["attention"]) == len(record["tokens"])
        assert len(record["attention"][0]) == len(record["source_tokens"])


@pytest.mark.parametrize("argv, options", [
    (["--method", "beam", "--beam-size", "3", "--length-penalty", "0"],
     DecodingOptions(method="beam", beam_size=3, length_penalty=0.0)),
    (["--method", "sample", "--seed", "5", "--top-k", "4", "--temperature", "0.7"],
     DecodingOptions(method="sample", seed=5, top_k=4, temperature=0.7)),
    (["--max-new-tokens", "4"], DecodingOptions(max_new_tokens=4)),
])
def test_decoding_options_reach_the_runtime(tiny_export, runtime, capsys, argv, options):
    assert main([str(tiny_export), *TEXTS, *argv, "--batch-size", "2"]) == 0
    expected = [g.text for g in runtime.generate(TEXTS, options)]
    assert capsys.readouterr().out.splitlines() == expected


def test_errors_are_one_line_and_exit_2(tiny_export, tmp_path, monkeypatch, capsys):
    def fails(argv, expected):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err

    fails([str(tmp_path / "missing"), "x"], "missing does not exist")
    broken = copy_export(tiny_export, tmp_path)
    path = broken / "onnx" / "encoder.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    fails([str(broken), "x"], "encoder.onnx does not match its sha256")
    fails([str(tiny_export), "ok", " "], "input argument 2 is empty")
    fails([str(tiny_export), "x", "--top-p", "2"], "--top-p must be in (0, 1]")
    fails([str(tiny_export), "x", "--provider", "tpu"], "'tpu' is not available")
    monkeypatch.setattr("sys.stdin", io.StringIO("9/27/94\n\nsept. 3\n"))
    fails([str(tiny_export)], "input line 2 is empty")


def test_options_and_texts_in_any_order(tiny_export, runtime, capsys):
    assert main([str(tiny_export), "--method", "beam", TEXTS[1], "--beam-size", "3", TEXTS[0]]) == 0
    expected = runtime.generate([TEXTS[1], TEXTS[0]], DecodingOptions(method="beam", beam_size=3))
    assert capsys.readouterr().out.splitlines() == [g.text for g in expected]


@pytest.mark.parametrize("temperature", ["1e-40", "1e-300"])
def test_a_tiny_temperature_samples_the_greedy_output(tiny_export, runtime, capsys, temperature):
    argv = [str(tiny_export), *TEXTS, "--method", "sample", "--temperature", temperature, "--seed", "1"]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == [g.text for g in runtime.generate(TEXTS)]


def test_a_huge_max_new_tokens_is_a_one_line_error(tiny_export, runtime, capsys):
    assert main([str(tiny_export), "9/27/94", "--max-new-tokens", "100000000000000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"above the limit {runtime.max_target_length}" in err, err


def test_bad_flags_exit_2(tiny_export):
    done = run_module("serving", str(tiny_export), "x", "--beam-size", "0", timeout=60)
    assert done.returncode == 2 and "--beam-size" in done.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_infer(tiny_export, runtime):
    # -o: do not (re)install .venv; this test is about the recipe.
    done = subprocess.run(["make", "-s", "-o", ".venv/.installed", "infer", f"EXPORT={tiny_export}",
                           "TEXT=it's 9/27/94", f"PY={sys.executable}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [runtime.generate(["it's 9/27/94"])[0].text]
