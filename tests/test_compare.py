"""`compare`: every model on the same splits, a Markdown/JSON table, finished runs reused."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_recipes import translation_slice

from keras_nlp_week4.compare import compare, format_markdown
from keras_nlp_week4.errors import UserError
from keras_nlp_week4.training.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["seq2seq-gru", "transformer"]


def test_compare_trains_every_model_on_the_same_splits_and_reuses_finished_runs(tmp_path, capsys):
    data = translation_slice(tmp_path)
    out = tmp_path / "compare"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "keras_nlp_week4", "compare", "--task", "translate", "--data", str(data),
         "--models", ",".join(MODELS), "--epochs", "1", "--batch-size", "32", "--vocab-size", "800",
         "--transformer-preset", "tiny", "--rnn-preset", "tiny", "--out", str(out), "--verbose", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    table = json.loads((out / "comparison.json").read_text())
    assert [row["model"] for row in table["rows"]] == MODELS
    for row in table["rows"]:
        run = Path(row["run"])
        config = json.loads((run / "config.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        assert row["parameters"] == config["num_parameters"]
        assert row["preset"] == "tiny" and row["epochs"] == 1
        assert row["bleu_beam"] == metrics["test_bleu_beam"] and row["chrf_greedy"] == metrics["test_chrf_greedy"]
        assert row["test_perplexity"] == metrics["test_perplexity"]
        assert (run / "test.tsv").read_bytes() == (Path(table["rows"][0]["run"]) / "test.tsv").read_bytes()
    assert table["splits"]["test"] > 0 and table["beam_size"] == 4
    markdown = (out / "comparison.md").read_text()
    assert "| model | parameters |" in markdown and markdown.count("\n| seq2seq-gru |") == 1
    assert markdown in result.stdout

    # The same command again trains nothing: the finished runs match the settings.
    stamps = {m: (out / m / "model.keras").stat().st_mtime_ns for m in MODELS}
    base = TrainConfig(task="translate", data=str(data), epochs=1, batch_size=32, vocab_size=800,
                       verbose=0)
    again = compare(base, MODELS, out_dir=out, transformer_preset="tiny", rnn_preset="tiny")
    assert capsys.readouterr().out.count("reusing the finished run") == 2
    assert {m: (out / m / "model.keras").stat().st_mtime_ns for m in MODELS} == stamps
    assert again["rows"] == table["rows"]


def test_unknown_model_fails_before_any_training(tmp_path):
    with pytest.raises(UserError, match="unknown model 'gpt'"):
        compare(TrainConfig(task="translate"), ["transformer", "gpt"], out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_markdown_table_formats_numbers_and_gaps():
    result = {"task": "translate", "data": "kor.txt", "splits": {"train": 9, "validation": 1, "test": 2},
              "beam_size": 4, "bleu_signature": "tok:13a", "chrf_signature": "chrF2",
              "rows": [{"model": "transformer", "parameters": 1234567, "epochs": 3,
                        "test_perplexity": 12.3456, "bleu_greedy": 1.234, "bleu_beam": None,
                        "chrf_greedy": 20.06, "chrf_beam": 21.0, "training_minutes": 2.25}]}
    lines = format_markdown(result).splitlines()
    assert lines[2] == ("| model | parameters | epochs | test perplexity | BLEU greedy | BLEU beam | "
                        "chrF greedy | chrF beam | training time (min) |")
    assert lines[4] == "| transformer | 1,234,567 | 3 | 12.35 | 1.2 | - | 20.1 | 21.0 | 2.2 |"
