"""`compare`'s table and its checks (the end-to-end run, with reuse of finished runs, is in test_multi30k.py)."""

import pytest

from keras_nlp_week4.compare import compare, format_markdown
from keras_nlp_week4.errors import UserError
from keras_nlp_week4.training.trainer import TrainConfig


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
    assert lines[2] == ("| model | parameters | epochs | test perplexity | BLEU lc greedy | BLEU lc beam | "
                        "sacreBLEU greedy | sacreBLEU beam | chrF greedy | chrF beam | training time (min) |")
    assert lines[4] == "| transformer | 1,234,567 | 3 | 12.35 | - | - | 1.2 | - | 20.1 | 21.0 | 2.2 |"
    assert "anchor" not in format_markdown(result)  # a task without published figures


def test_markdown_table_adds_the_anchors_of_a_task_that_has_them():
    result = {"task": "multi30k", "data": "m30k", "splits": {"train": 9, "validation": 1, "test": 2},
              "beam_size": 4, "bleu_signature": "tok:13a", "chrf_signature": "chrF2",
              "anchors": {"transformer": {"bleu": 36.52, "parameters": 9038853, "source": "tutorial notebook 6"}},
              "rows": [{"model": "transformer", "parameters": 7577600, "bleu_lowercase_greedy": 40.04,
                        "anchor_bleu": 36.52, "anchor_parameters": 9038853}]}
    lines = format_markdown(result).splitlines()
    assert lines[2].endswith("| training time (min) | anchor BLEU lc greedy | anchor parameters |")
    assert lines[4] == "| transformer | 7,577,600 | - | - | 40.0 | - | - | - | - | - | - | 36.5 | 9,038,853 |"
    assert "transformer: tutorial notebook 6" in lines[-1]
