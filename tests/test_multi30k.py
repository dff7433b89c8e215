"""The Multi30k recipe: its folder reader, the lowercased BLEU, the per-epoch clock and validation BLEU,
and `compare` end to end on a slice (real lines when ../shared/data is present, else generated stand-ins),
down to an exported model served by `python -m serving` on stdin."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import ROOT, run_module

from keras_nlp_week4.compare import compare
from keras_nlp_week4.data.readers import DataSources
from keras_nlp_week4.data.tokenizer import Tokenizer, check_tokenizer_parity
from keras_nlp_week4.errors import UserError
from keras_nlp_week4.evaluation import corpus_scores, generate_texts
from keras_nlp_week4.runs import RunMetrics
from keras_nlp_week4.tasks import MULTI30K_ANCHORS, get_task, multi30k_sources
from keras_nlp_week4.training.progress import TimeBudget, ValidationBLEU, logged_minutes
from keras_nlp_week4.training.trainer import TrainConfig

SHARED = ROOT.parent / "shared" / "data" / "multi30k"
FILES = {"train": 240, "val": 40, "test_2016_flickr": 40}  # lines per file of the slice


def _stand_in_pairs(count: int, seed: int) -> list[tuple[str, str]]:
    """Caption-like German/English pairs with a word-for-word lexicon (when the real data is absent)."""
    subjects = [("Ein Mann", "A man"), ("Eine Frau", "A woman"), ("Ein Hund", "A dog"), ("Ein Junge", "A boy"),
                ("Ein Mädchen", "A girl"), ("Ein Radfahrer", "A cyclist")]
    clothes = [("", ""), (" mit einem roten Hut", " in a red hat"), (" mit einer blauen Jacke", " in a blue jacket"),
               (" mit einem grünen Hemd", " in a green shirt")]
    verbs = [("läuft", "runs"), ("sitzt", "sits"), ("spielt", "plays"), ("steht", "stands"), ("wartet", "waits")]
    places = [("im Park", "in the park"), ("auf der Straße", "on the street"), ("am Strand", "on the beach"),
              ("im Schnee", "in the snow"), ("vor einem Haus", "in front of a house"), ("im Wasser", "in the water")]
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        (sg, se), (cg, ce), (vg, ve), (pg, pe) = (rng.choice(words) for words in (subjects, clothes, verbs, places))
        pairs.append((f"{sg}{cg} {vg} {pg}.", f"{se}{ce} {ve} {pe}."))
    return pairs


def multi30k_slice(folder: Path) -> Path:
    """The first lines of each Multi30k file, or stand-ins of the same layout, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed, (stem, count) in enumerate(FILES.items()):
        for index, lang in enumerate(("de", "en")):
            if SHARED.is_dir():
                lines = (SHARED / f"{stem}.{lang}").read_text(encoding="utf-8").splitlines()[:count]
            else:
                lines = [pair[index] for pair in _stand_in_pairs(count, seed)]
            (folder / f"{stem}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


# ------------------------------------------------------------------------------------------ BLEU


def test_lowercased_bleu_matches_a_hand_computed_case():
    # Lowercased and 13a-tokenized, hypothesis and reference are 7 tokens each:
    #   the cat sat on the mat .   /   the cat sat on a mat .
    # clipped n-gram precisions 6/7, 4/6, 2/5, 1/4, brevity penalty 1.
    scores = corpus_scores(["The cat sat on the mat."], [["the cat sat on a mat."]])
    expected = 100 * (6 / 7 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25
    assert scores["bleu_lowercase"] == pytest.approx(expected, abs=1e-9)  # 48.89
    assert scores["bleu"] < scores["bleu_lowercase"]  # cased, "The" matches nothing
    assert "case:lc" in scores["bleu_lowercase_signature"] and "tok:13a" in scores["bleu_lowercase_signature"]


def test_lowercased_bleu_applies_the_brevity_penalty():
    # 6 of 8 reference tokens, every n-gram matching: BLEU = exp(1 - 8/6).
    scores = corpus_scores(["THE CAT SAT ON THE MAT"], [["The cat sat on the mat today ."]])
    assert scores["bleu_lowercase"] == pytest.approx(100 * math.exp(1 - 8 / 6), abs=1e-9)  # 71.65


# ---------------------------------------------------------------------------------------- folder


def test_the_folder_reader_names_what_is_missing(tmp_path):
    with pytest.raises(UserError, match="not found") as missing:
        multi30k_sources(DataSources(data=str(tmp_path / "nowhere")))
    assert "\n" not in str(missing.value)
    folder = multi30k_slice(tmp_path / "m30k")
    (folder / "val.en").unlink()
    with pytest.raises(UserError, match="lacks val.en"):
        multi30k_sources(DataSources(data=str(folder)))
    with pytest.raises(UserError, match="drop src"):
        multi30k_sources(DataSources(src="a.de", tgt="b.en"))


def test_splits_are_the_files_german_to_english_and_reversed(tmp_path):
    folder = multi30k_slice(tmp_path / "m30k")
    task = get_task("multi30k")
    splits = task.load_splits(DataSources(data=str(folder)), 0)
    first_de = (folder / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[0]
    first_en = (folder / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()[0]
    assert splits.test[0] == (first_de, first_en)
    assert len(splits.test) == FILES["test_2016_flickr"] and 0 < len(splits.validation) <= FILES["val"]
    reversed_splits = task.load_splits(DataSources(data=str(folder), reverse=True), 0)
    assert reversed_splits.test[0] == (first_en, first_de)
    assert set(MULTI30K_ANCHORS) == {"seq2seq-lstm", "seq2seq-gru", "bahdanau", "transformer"}


# ------------------------------------------------------------------------------------- recipe


@pytest.mark.parametrize("model, epochs", [("transformer", 30), ("seq2seq-lstm", 30), ("seq2seq-gru", 30),
                                           ("bahdanau", 25)])
def test_the_recipe_stops_on_epochs_not_the_clock(model, epochs):
    """Every family's default is an epoch cap and early stopping on validation BLEU, with no time budget,
    so a seed gives the same model on a slow machine as on a fast one; the budget is an option."""
    from keras_nlp_week4.training.trainer import resolve_settings

    settings = resolve_settings(TrainConfig(task="multi30k", model=model))
    assert (settings.epochs, settings.patience, settings.time_budget_minutes) == (epochs, 4, None)
    assert get_task("multi30k").validation_bleu_examples == 1014  # what early stopping watches
    budgeted = resolve_settings(TrainConfig(task="multi30k", model=model, time_budget_minutes=45.0))
    assert budgeted.time_budget_minutes == 45.0 and budgeted.epochs == epochs
    assert resolve_settings(TrainConfig(task="multi30k", model=model, time_budget_minutes=0)
                            ).time_budget_minutes is None


# ------------------------------------------------------------------------------------- callbacks


def test_time_budget_logs_minutes_and_stops_before_overrunning():
    budget = TimeBudget(budget_minutes=1e-9, start_minutes=2.5)
    budget.set_model(keras.Sequential([keras.layers.Dense(1)]))
    budget.on_train_begin()
    budget.on_epoch_begin(0)
    logs = {}
    budget.on_epoch_end(0, logs)
    assert logs["minutes"] >= 2.5 and budget.model.stop_training and budget.stopped_for_time
    unlimited = TimeBudget(budget_minutes=None)
    unlimited.set_model(keras.Sequential([keras.layers.Dense(1)]))
    unlimited.on_train_begin()
    unlimited.on_epoch_end(0, {})
    assert not getattr(unlimited.model, "stop_training", False) and not unlimited.stopped_for_time


def test_validation_bleu_logs_the_greedy_score_of_the_current_weights(tiny_run):
    from keras_nlp_week4.runs import load_run

    run = load_run(tiny_run, compile=False)
    pairs = run.pairs("validation")[:30]
    lengths = dict(max_source_length=run.config.max_source_length,
                   max_target_length=run.config.max_target_length)
    callback = ValidationBLEU(pairs, run.tokenizer, special_ids=run.config.special_ids, max_examples=20,
                              **lengths)
    callback.set_model(run.model)
    sources = [source for source, _ in pairs[:20]]
    references = [[target] for _, target in pairs[:20]]

    def greedy():
        return generate_texts(run.model, run.tokenizer, sources, lengths["max_source_length"],
                              lengths["max_target_length"], run.config.special_ids)

    logs = {}
    callback.on_epoch_end(0, logs)
    trained = greedy()
    assert logs["val_bleu"] == pytest.approx(corpus_scores(trained, references)["bleu_lowercase"])
    # Other weights, other outputs, and the score of those: the callback decodes the model as it is now.
    run.model.set_weights([np.zeros_like(w) for w in run.model.get_weights()])
    callback.on_epoch_end(1, logs)
    untrained = greedy()
    assert untrained != trained
    assert logs["val_bleu"] == pytest.approx(corpus_scores(untrained, references)["bleu_lowercase"])


def test_training_warns_when_pairs_would_be_cut(caplog):
    from keras_nlp_week4.data.pipeline import token_lengths
    from keras_nlp_week4.training.trainer import TrainConfig, _warn_if_cut, resolve_settings

    class OnePiecePerWord:
        def encode(self, texts):
            return [text.split() for text in texts]

    settings = resolve_settings(TrainConfig(max_source_length=3, max_target_length=5))
    _warn_if_cut(token_lengths([("a b c d", "x"), ("a", "y")], OnePiecePerWord()), settings)
    assert ("1 of 2 training sources are longer than max_source_length=3 tokens (the longest: 5) and are cut; "
            "raise --max-source-length") in caplog.text and "targets" not in caplog.text


# ----------------------------------------------------------------------------- recipe end to end


@pytest.mark.large
def test_recipe_compare_export_and_serve_on_a_slice(tmp_path):
    folder = multi30k_slice(tmp_path / "m30k")
    out = tmp_path / "compare"
    models = ["seq2seq-gru", "transformer"]
    from export.exporter import export_run
    from keras_nlp_week4.cli import main

    # In process (`main` is what `python -m keras_nlp_week4` runs): the serving step below is the one
    # that needs its own interpreter; another TensorFlow start per step would cost more than the slice.
    assert main(["compare", "--task", "multi30k", "--data", str(folder), "--models", ",".join(models),
                 "--epochs", "1", "--vocab-size", "300", "--batch-size", "32", "--transformer-preset", "tiny",
                 "--rnn-preset", "tiny", "--out", str(out), "--verbose", "0"]) == 0
    table = json.loads((out / "comparison.json").read_text())
    assert [row["model"] for row in table["rows"]] == models
    for row in table["rows"]:
        assert row["bleu_lowercase_beam"] == RunMetrics.read(Path(row["run"])).test_bleu_lowercase_beam
        assert row["anchor_bleu"] == MULTI30K_ANCHORS[row["model"]]["bleu"]
        header = (Path(row["run"]) / "training_log.csv").read_text().splitlines()[0].split(",")
        assert {"val_bleu", "minutes"} <= set(header)
        assert logged_minutes(Path(row["run"]) / "training_log.csv") > 0
    texts = [line for stem in ("train.de", "train.en") for line in (folder / stem).read_text().splitlines()]
    assert check_tokenizer_parity(Tokenizer(out / "transformer" / "tokenizer.model"), texts) == []
    markdown = (out / "comparison.md").read_text()
    assert "| BLEU lc greedy | BLEU lc beam |" in markdown and "anchor BLEU lc greedy" in markdown
    assert (out / "validation_bleu.png").stat().st_size > 0
    assert all((Path(row["run"]) / "test.tsv").read_bytes() == (out / models[0] / "test.tsv").read_bytes()
               for row in table["rows"])  # every model on the same splits

    # The same comparison again trains nothing: the finished runs match the settings.
    stamps = {m: (out / m / "model.keras").stat().st_mtime_ns for m in models}
    base = TrainConfig(task="multi30k", data=str(folder), epochs=1, batch_size=32, vocab_size=300, verbose=0)
    again = compare(base, models, out_dir=out, transformer_preset="tiny", rnn_preset="tiny", verbose=False)
    assert {m: (out / m / "model.keras").stat().st_mtime_ns for m in models} == stamps
    assert again["rows"] == table["rows"]

    # Downstream, unchanged: export with parity validation, then serve the test sources on stdin.
    run_dir = out / "transformer"
    export_run(run_dir, max_test_examples=60, threads=1, verbose=False)  # raises if parity fails
    sources = [line for line in (folder / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:8]]
    served = run_module("serving", str(run_dir / "export"), input="\n".join(sources) + "\n")
    assert served.returncode == 0, served.stderr[-2000:]
    from keras_nlp_week4.evaluation import decode_texts
    from keras_nlp_week4.runs import load_run

    assert served.stdout.splitlines() == decode_texts(load_run(run_dir, compile=False), sources)
