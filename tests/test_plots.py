"""Attention heatmaps and training curves, on small hand-built runs (an untrained model is enough: the
pictures must show the model's own attention, whatever it learned)."""

import csv
import logging
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from helpers import cli

from keras_nlp_week4 import plots
from keras_nlp_week4.data.pipeline import encode_sources
from keras_nlp_week4.data.tokenizer import BOS_ID, Tokenizer, train_sentencepiece
from keras_nlp_week4.errors import UserError
from keras_nlp_week4.models.registry import build_model, model_family
from keras_nlp_week4.runs import RunConfig, load_run, write_pairs
from keras_nlp_week4.training.trainer import TrainConfig, resolve_settings

PAIRS = [("나는 사과를 좋아해요.", "I like apples."), ("고양이가 어디 있어요?", "Where is the cat?"),
         ("책을 읽어요.", "I read a book."), ("안녕하세요", "Hello")]
SOURCE_LENGTH, TARGET_LENGTH = 16, 8


def make_run(folder: Path, model_name: str) -> Path:
    """A run directory as training writes it, with an untrained tiny model."""
    folder.mkdir(parents=True)
    train_sentencepiece([t for pair in PAIRS for t in pair], folder / "tokenizer.model",
                        model_type="char")
    tokenizer = Tokenizer(folder / "tokenizer.model")
    model = build_model(model_name, tokenizer.vocab_size, preset="tiny", max_source_length=SOURCE_LENGTH)
    model.build()
    model.save(folder / "model.keras")
    settings = resolve_settings(TrainConfig(task="translate", model=model_name, out=str(folder),
                                            max_source_length=SOURCE_LENGTH, max_target_length=TARGET_LENGTH))
    RunConfig(task="translate", model=model_name, family=model_family(model_name), preset="tiny",
              model_class=type(model).__name__, num_parameters=int(model.count_params()),
              vocab_size=tokenizer.vocab_size, special_ids={"pad": 0, "unk": 1, "bos": 2, "eos": 3},
              max_source_length=SOURCE_LENGTH, max_target_length=TARGET_LENGTH,
              train=replace(settings, num_replicas=1)).write(folder)
    write_pairs(folder / "test.tsv", PAIRS)
    write_pairs(folder / "validation.tsv", PAIRS)
    with open(folder / "training_log.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "loss", "masked_accuracy", "val_loss", "val_masked_accuracy"])
        writer.writerows([[0, 3.0, 0.2, 2.5, 0.3], [1, 2.0, 0.4, 2.2, 0.35], [2, 1.5, 0.5, 2.1, 0.4]])
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {name: make_run(root / name, name) for name in ("bahdanau", "transformer", "seq2seq-gru")}


def teacher_forced_attention(run, text, target_tokens):
    """The model's cross-attention when fed its own greedy output (teacher forcing): the reference."""
    encoder_input = encode_sources([text], run.tokenizer, SOURCE_LENGTH)
    ids = [run.tokenizer.piece_to_id(p) for p in target_tokens]
    decoder_input = np.array([[BOS_ID] + ids[:-1]], dtype=np.int32)
    _, attention = run.model.call_with_attention((encoder_input, decoder_input))
    return np.asarray(attention)[0]  # (layers, heads, tgt, src)


@pytest.mark.parametrize("name, layers, heads", [("bahdanau", 1, 1), ("transformer", 2, 4)])
def test_attention_map_is_the_models_cross_attention(runs, name, layers, heads):
    run = load_run(runs[name], compile=False)
    text = PAIRS[0][0]
    found = plots.attention_map(run, text)
    weights = found["weights"]
    source_ids = encode_sources([text], run.tokenizer, SOURCE_LENGTH)[0]
    assert found["source_tokens"] == [run.tokenizer.id_to_piece(int(i)) for i in source_ids]
    assert found["source_tokens"][-1] == "</s>"
    assert weights.shape == (layers, heads, len(found["target_tokens"]), len(source_ids))
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    # Incremental decoding's attention equals the teacher-forced pass over the same tokens.
    np.testing.assert_allclose(weights, teacher_forced_attention(run, text, found["target_tokens"]),
                               atol=1e-5)
    # One row per generated token, and generation stops at the first EOS: it can only be the last row.
    assert "</s>" not in found["target_tokens"][:-1]
    assert 1 <= len(found["target_tokens"]) <= run.config.max_target_length


def test_transformer_figure_has_one_heatmap_per_layer_and_head(runs):
    run = load_run(runs["transformer"], compile=False)
    found = plots.attention_map(run, PAIRS[1][0])
    fig = plots.attention_figure(found, PAIRS[1][0], "transformer")
    try:
        heatmaps = [ax for ax in fig.axes if ax.images and ax.get_title()]
        assert sorted(ax.get_title() for ax in heatmaps) == sorted(
            f"layer {layer}, head {head}" for layer in (1, 2) for head in (1, 2, 3, 4))
        by_title = {ax.get_title(): ax for ax in heatmaps}
        np.testing.assert_allclose(by_title["layer 2, head 3"].images[0].get_array(),
                                   found["weights"][1, 2])
        # Tokens label the outer panels: the bottom row (source) and the first column (output).
        # Without a Hangul font (as on CI) the labels are romanized: see the test below.
        shown = (lambda tokens: tokens) if plots._hangul_font() else (
            lambda tokens: [plots.romanize_hangul(t) for t in tokens])
        bottom_left = by_title["layer 2, head 1"]
        assert [t.get_text() for t in bottom_left.get_xticklabels()] == shown(found["source_tokens"])
        assert [t.get_text() for t in bottom_left.get_yticklabels()] == shown(found["target_tokens"])
        assert not [t.get_text() for t in by_title["layer 1, head 2"].get_xticklabels() if t.get_text()]
    finally:
        plt.close(fig)


def test_plot_attention_writes_a_small_png(runs, tmp_path):
    path = plots.plot_attention(runs["bahdanau"], PAIRS[2][0], tmp_path / "a.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 1_000 < len(data) < 200_000


def test_hangul_labels_use_a_hangul_font_or_are_romanized(runs, monkeypatch, caplog):
    run = load_run(runs["bahdanau"], compile=False)
    found = plots.attention_map(run, "안녕하세요")
    fig = plots.attention_figure(found, "안녕하세요")
    labels = fig.axes[0].get_xticklabels()
    if plots._hangul_font() is not None:
        assert [t.get_text() for t in labels] == found["source_tokens"]
        assert labels[1].get_fontfamily()[0] == plots._hangul_font()
    plt.close(fig)
    monkeypatch.setattr(plots, "_hangul_font", lambda: None)
    with caplog.at_level(logging.WARNING, logger="keras_nlp_week4.plots"):
        fig = plots.attention_figure(found, "안녕하세요")
    texts = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    plt.close(fig)
    assert texts == [plots.romanize_hangul(t) for t in found["source_tokens"]]
    assert "Korean labels are romanized" in caplog.text


def test_romanization_follows_the_revised_romanization_letters():
    assert plots.romanize_hangul("안녕하세요") == "annyeonghaseyo"
    assert plots.romanize_hangul("값") == "gap"  # final ㅄ
    assert plots.romanize_hangul("Hi, 꽃!") == "Hi, kkot!"


def test_model_without_attention_is_a_clear_error(runs):
    run = load_run(runs["seq2seq-gru"], compile=False)
    with pytest.raises(UserError, match="has no attention"):
        plots.attention_map(run, "책")
    with pytest.raises(UserError, match="non-empty"):
        plots.attention_map(load_run(runs["bahdanau"], compile=False), "  ")


def test_training_curves_show_the_log(runs, tmp_path):
    columns = plots._read_log(runs["bahdanau"] / "training_log.csv")
    fig = plots.training_curves_figure(columns, "x")
    try:
        loss, accuracy = fig.axes
        assert loss.get_ylabel() == "loss" and accuracy.get_ylabel() == "masked accuracy"
        train_line, val_line = loss.get_lines()
        assert list(train_line.get_xdata()) == [1, 2, 3]
        assert list(train_line.get_ydata()) == [3.0, 2.0, 1.5]
        assert list(val_line.get_ydata()) == [2.5, 2.2, 2.1]
        assert [line.get_label() for line in accuracy.get_lines()] == ["train", "validation"]
    finally:
        plt.close(fig)
    assert plots.plot_training_curves(runs["bahdanau"], tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="not found"):
        plots.plot_training_curves(empty)
    (empty / "training_log.csv").write_text("epoch,loss\n")
    with pytest.raises(UserError, match="no epochs yet"):
        plots.plot_training_curves(empty)


# `make plot`'s command end to end (15 s on a 2-core AVX2 EPYC): large tier, which CI runs; the pictures'
# functions are tested above.
@pytest.mark.large
def test_plot_command_draws_both_pictures(runs):
    run = runs["transformer"]
    result = cli("plot", str(run), "--text", PAIRS[3][0], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("attention.png", "training_curves.png"):
        assert (run / "plots" / name).read_bytes()[:4] == b"\x89PNG"
        assert str(run / "plots" / name) in result.stdout
