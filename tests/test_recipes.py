"""The chatbot and translation recipes end to end on small slices (a few hundred rows).

They read ../shared/data when it is there and a small generated file otherwise; the slices are written to
a temporary folder, never into the repository.
"""

import csv
import json
import math
from pathlib import Path

import pytest
from helpers import SHARED

from keras_nlp_week4.data.readers import DataSources
from keras_nlp_week4.data.splits import load_pair_splits, source_key
from keras_nlp_week4.runs import RunConfig, RunMetrics, read_pairs
from keras_nlp_week4.tasks import CHATBOT_QUESTIONS
from keras_nlp_week4.training.trainer import TrainConfig, train

CHATBOT_CSV = SHARED / "chatbot" / "ChatbotData.csv"
KOR_TXT = SHARED / "kor-eng" / "kor.txt"
SLICE_ROWS = 300
TINY = ["--preset", "tiny", "--epochs", "2", "--batch-size", "32", "--vocab-size", "800",
        "--verbose", "0"]

_NOUNS = [("apple", "사과"), ("book", "책"), ("cat", "고양이"), ("dog", "개"), ("house", "집"),
          ("tree", "나무"), ("car", "차"), ("friend", "친구"), ("movie", "영화"), ("song", "노래"),
          ("school", "학교"), ("river", "강"), ("flower", "꽃"), ("letter", "편지"), ("phone", "전화")]
_FRAMES = [("I see the {}.", "나는 {}를 봐요."), ("Where is the {}?", "{}는 어디 있어요?"),
           ("I like the {}.", "나는 {}를 좋아해요."), ("This is my {}.", "이건 내 {}예요."),
           ("The {} is big.", "{}가 커요."), ("Do you have a {}?", "{}가 있어요?"),
           ("I lost the {}.", "{}를 잃어버렸어요."), ("Look at the {}!", "{}를 봐!"),
           ("The {} is new.", "{}는 새거예요."), ("I want a {}.", "{}를 원해요."),
           ("Bring the {}.", "{}를 가져와요."), ("The {} is here.", "{}가 여기 있어요."),
           ("Find the {}.", "{}를 찾아요."), ("Draw a {}.", "{}를 그려요."),
           ("The {} is old.", "{}는 오래됐어요."), ("Wash the {}.", "{}를 씻어요."),
           ("Sell the {}.", "{}를 팔아요."), ("Buy a {}.", "{}를 사요."),
           ("Keep the {}.", "{}를 가져요."), ("Show me the {}.", "{}를 보여줘요.")]


def generated_translation_pairs() -> list[tuple[str, str]]:
    """300 English -> Korean pairs from templates, some sources with two translations."""
    pairs = []
    for i, (english, korean) in enumerate(_FRAMES):
        for j, (noun, noun_ko) in enumerate(_NOUNS):
            pairs.append((english.format(noun), korean.format(noun_ko)))
            if (i + j) % 10 == 0:
                pairs.append((english.format(noun), korean.format(noun_ko) + " 정말"))
    return pairs[:SLICE_ROWS]


def translation_slice(folder: Path) -> Path:
    """A kor.txt-format file of about 300 lines (adjacent line pairs from all over kor.txt)."""
    if KOR_TXT.is_file():
        lines = KOR_TXT.read_text(encoding="utf-8").split("\n")
        step = 2 * len(lines) // SLICE_ROWS
        # Adjacent lines, so sources listed twice with two translations come along.
        text = "\n".join(line for i in range(0, len(lines) - 1, step) for line in lines[i:i + 2] if line)
    else:
        text = "\n".join(f"{s}\t{t}\tgenerated" for s, t in generated_translation_pairs())
    path = folder / "pairs.txt"
    path.write_text(text + "\n", encoding="utf-8")
    return path


def chatbot_slice(folder: Path) -> Path:
    """A ChatbotData.csv-format file (header Q,A,label) of 300 rows from all over the file."""
    path = folder / "chat.csv"
    if CHATBOT_CSV.is_file():
        with open(CHATBOT_CSV, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        header, body = rows[0], rows[1:]
        rows = [header] + body[:: len(body) // SLICE_ROWS][:SLICE_ROWS]
    else:
        rows = [["Q", "A", "label"]] + [[t, f"{s[:-1]}, 좋아요.", str(i % 3)]
                                        for i, (s, t) in enumerate(generated_translation_pairs())]
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\r\n").writerows(rows)  # CRLF, as the real file
    return path


def has_hangul(text: str) -> bool:
    return any("\uac00" <= char <= "\ud7a3" for char in text)


def check_finished_run(run: Path) -> RunMetrics:
    for name in ["model.keras", "tokenizer.model", "config.json", "metrics.json", "samples.json",
                 "training_log.csv", "validation.tsv", "test.tsv", "plots/training_curves.png"]:
        assert (run / name).is_file(), name
    metrics = RunMetrics.read(run)
    assert math.isfinite(metrics.test_perplexity) and metrics.test_perplexity > 1.0
    assert 0.0 <= metrics.test_token_accuracy <= 1.0
    for key in ["test_bleu_greedy", "test_chrf_greedy", "test_bleu_beam", "test_chrf_beam"]:
        assert 0.0 <= getattr(metrics, key) <= 100.0, key
    assert metrics.beam_size == 4
    assert "tok:13a" in metrics.bleu_signature
    with open(run / "training_log.csv", newline="") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 2 and losses[1] < losses[0]  # it learns
    return metrics


def train_in_process(capfd, *args: str) -> tuple[str, str]:
    """`python -m keras_nlp_week4 ARGS` without its interpreter start: `main`, with what it printed."""
    from keras_nlp_week4.cli import main

    capfd.readouterr()
    status = main(list(args))
    out, err = capfd.readouterr()
    assert status == 0, err[-3000:]
    return out, err


@pytest.mark.large
def test_chatbot_recipe_end_to_end(tmp_path, capfd, caplog):
    data = chatbot_slice(tmp_path)
    run = tmp_path / "chatbot"
    stdout, _ = train_in_process(capfd, "train", "--task", "chatbot", "--data", str(data), "--out", str(run),
                                 *TINY)
    # tensorflow-text and sentencepiece agree on every text (the trainer logs a warning where they do not)
    assert not [r for r in caplog.records if "tokenize" in r.getMessage()]
    check_finished_run(run)
    config = RunConfig.read(run)
    assert config.tokenizer_type == "bpe" and config.task == "chatbot"
    samples = json.loads((run / "samples.json").read_text())
    assert [s["input"] for s in samples["samples"]] == list(CHATBOT_QUESTIONS)
    assert all(isinstance(s["greedy"], str) and isinstance(s["sampled"], str) for s in samples["samples"])
    assert samples["sampling"]["seed"] == 0
    # The replies are printed at the end too.
    tail = stdout[stdout.index("Sample outputs"):]
    assert all(question in tail for question in CHATBOT_QUESTIONS)
    # Held-out questions are not training questions.
    test, validation = read_pairs(run / "test.tsv"), read_pairs(run / "validation.tsv")
    assert test and validation
    assert not {source_key(q) for q, _ in test} & {source_key(q) for q, _ in validation}


@pytest.mark.large
def test_translation_recipe_reversed_with_disjoint_deterministic_splits(tmp_path, capfd):
    data = translation_slice(tmp_path)
    run = tmp_path / "ko-en"
    train_in_process(capfd, "train", "--task", "translate", "--data", str(data), "--reverse", "--out", str(run),
                     *TINY)
    metrics = check_finished_run(run)
    test = read_pairs(run / "test.tsv")
    assert all(has_hangul(source) for source, _ in test)  # --reverse: Korean -> English
    assert metrics.test_sources <= metrics.test_examples == len(test)
    # The run's splits are the reader's, and no source is in two of them.
    splits = load_pair_splits(DataSources(data=str(data), reverse=True), 0, "tsv", 0.05, 0.1)
    assert splits.test == test and splits.validation == read_pairs(run / "validation.tsv")
    train_keys = {source_key(s) for s, _ in splits.train}
    assert not train_keys & {source_key(s) for s, _ in test}
    assert not train_keys & {source_key(s) for s, _ in splits.validation}
    samples = json.loads((run / "samples.json").read_text())["samples"]
    assert samples and all(s["references"] for s in samples)  # no fixed inputs: test sources + refs


# A whole training run from the command line (18 s on a 2-core AVX2 EPYC): large tier, which CI runs;
# the line-aligned readers are unit-tested in tests/test_readers.py.
@pytest.mark.large
def test_translation_from_line_aligned_files_with_given_held_out_files(tmp_path):
    pairs = [tuple(line.split("\t")[:2]) for line in
             translation_slice(tmp_path).read_text(encoding="utf-8").splitlines()]
    parts = {"train": pairs[:240], "validation": pairs[240:270], "test": pairs[270:]}
    files = {}
    for name, part in parts.items():
        for side, index in (("src", 0), ("tgt", 1)):
            files[f"{name}_{side}"] = tmp_path / f"{name}.{side}"
            files[f"{name}_{side}"].write_text("\n".join(p[index] for p in part) + "\n", encoding="utf-8")
    out = tmp_path / "aligned"
    train(TrainConfig(task="translate", model="luong-general", preset="tiny", epochs=2, batch_size=32,
                      vocab_size=800, out=str(out), verbose=0,
                      src=str(files["train_src"]), tgt=str(files["train_tgt"]),
                      validation_src=str(files["validation_src"]),
                      validation_tgt=str(files["validation_tgt"]),
                      test_src=str(files["test_src"]), test_tgt=str(files["test_tgt"])))
    check_finished_run(out)
    assert read_pairs(out / "test.tsv") == [tuple(p) for p in parts["test"]]
    test_keys = {source_key(s) for s, _ in parts["test"]}
    held_out = test_keys | {source_key(s) for s, _ in parts["validation"]}
    config = RunConfig.read(out)
    # Pairs whose source is also in a later split were dropped: test wins over validation over train.
    assert config.splits == {
        "train": sum(source_key(s) not in held_out for s, _ in parts["train"]),
        "validation": sum(source_key(s) not in test_keys for s, _ in parts["validation"]),
        "test": len(parts["test"])}


@pytest.mark.skipif(not (CHATBOT_CSV.is_file() and KOR_TXT.is_file()), reason="shared data missing")
def test_slices_come_from_the_real_files(tmp_path):
    assert 290 <= len(translation_slice(tmp_path).read_text(encoding="utf-8").splitlines()) <= 310
    with open(chatbot_slice(tmp_path), encoding="utf-8", newline="") as f:
        assert len(list(csv.reader(f))) == SLICE_ROWS + 1
