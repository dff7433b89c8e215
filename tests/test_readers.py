"""The data readers on malformed files, on the real files when ../shared/data has them, and the splits."""

import logging
from pathlib import Path

import pytest
from helpers import SHARED

from keras_nlp_week4.data.readers import (
    DataSources,
    read_aligned_files,
    read_qa_csv,
    read_tsv_pairs,
)
from keras_nlp_week4.data.splits import grouped_split, load_pair_splits, source_key
from keras_nlp_week4.errors import UserError

CHATBOT_CSV = SHARED / "chatbot" / "ChatbotData.csv"
KOR_TXT = SHARED / "kor-eng" / "kor.txt"


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------ CSV


def test_csv_survives_every_quirk_and_counts_what_it_skips(tmp_path, caplog):
    text = (
        "\ufeffQ,A,label\r\n"  # BOM and CRLF
        "안녕,반가워요.,0\r\n"
        '뭐해?,"그냥, 쉬고 있어요",0\r\n'  # quoted comma
        '여러 줄?,"첫 줄\r\n둘째 줄",1\r\n'  # a quoted field spanning two lines
        "\r\n"  # empty line
        "혼자야,,0\r\n"  # empty answer
        "짧은 줄\r\n"  # ragged: fewer fields
        "너무,많은,필드,2\r\n"  # ragged: more fields
        "라벨에 공백,괜찮아요.,2   \r\n"  # label with trailing spaces (as in ChatbotData.csv)
        "끝에 쉼표,있어요.,1,\r\n"  # a harmless trailing separator
        "라벨이 글자,그래요.,x"  # no final line end; unreadable label
    ).encode("utf-8")
    path = write(tmp_path / "chat.csv", text)
    with caplog.at_level(logging.WARNING, logger="keras_nlp_week4.data.readers"):
        examples = read_qa_csv(path)
    assert examples.pairs == [
        ("안녕", "반가워요."),
        ("뭐해?", "그냥, 쉬고 있어요"),
        ("여러 줄?", "첫 줄\n둘째 줄"),  # CRLF inside the field normalised too
        ("라벨에 공백", "괜찮아요."),
        ("끝에 쉼표", "있어요."),
        ("라벨이 글자", "그래요."),
    ]
    assert examples.labels == [0, 0, 1, 2, 1, None]
    assert examples.skipped == {
        "empty lines": 1,
        "rows with an empty question or answer": 1,
        "rows with fewer than 3 fields": 1,
        "rows with more than 3 fields": 1,
    }
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "chat.csv: skipped 4 of 10 rows" in message and "1 empty lines" in message


def test_csv_reverse_and_header_aliases(tmp_path):
    path = write(tmp_path / "qa.csv", b"question,answer\nhi,hello\n")
    assert read_qa_csv(path).pairs == [("hi", "hello")]
    assert read_qa_csv(path, reverse=True).pairs == [("hello", "hi")]
    assert read_qa_csv(path).labels is None


@pytest.mark.parametrize("content, message", [
    (b"Q,label\nhi,0\n", "has no column A"),
    (b"question only\nhi\n", "has no column Q or A"),
    (b"", "is empty"),
    (b"\n\n", "is empty"),
    (b"Q,A\n,\n\n", "holds no usable question/answer rows"),
])
def test_csv_without_needed_columns_is_a_clear_error(tmp_path, content, message):
    path = write(tmp_path / "bad.csv", content)
    with pytest.raises(UserError, match=message):
        read_qa_csv(path)


def test_wrong_encoding_stops_with_a_hint_and_the_right_one_reads(tmp_path):
    path = write(tmp_path / "cp949.csv", "Q,A\n안녕,반가워요\n잘 가,또 봐요\n".encode("cp949"))
    with pytest.raises(UserError, match=r"is not utf-8 text .*--encoding"):
        read_qa_csv(path)
    assert read_qa_csv(path, encoding="cp949").pairs == [("안녕", "반가워요"), ("잘 가", "또 봐요")]
    with pytest.raises(UserError, match="unknown text encoding"):
        read_qa_csv(path, encoding="klingon")


def test_a_few_undecodable_lines_are_skipped_and_counted(tmp_path):
    good = "".join(f"q{i},a{i}\n" for i in range(20)).encode()
    path = write(tmp_path / "mixed.csv", b"Q,A\n" + good + "깨진,줄\n".encode("cp949"))
    examples = read_qa_csv(path)
    assert len(examples.pairs) == 20
    assert examples.skipped == {"undecodable lines": 1}


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.csv", "not found"),
    (lambda d: d, "is a directory"),
    (lambda d: write(d / "u16.csv", "Q,A\nhi,yo\n".encode("utf-16")), "UTF-16"),
    (lambda d: write(d / "bin.csv", b"\x00\x01\x02binary"), "not a text file"),
])
def test_unreadable_files_are_clear_errors(tmp_path, make, message):
    with pytest.raises(UserError, match=message):
        read_qa_csv(make(tmp_path))


# ------------------------------------------------------------------------------------------ TSV


def test_tsv_ignores_extra_columns_keeps_quotes_and_skips_bad_lines(tmp_path):
    text = ('Go.\t가.\tCC-BY attribution\r\n'
            '"Hi," he said.\t"안녕," 그가 말했다.\r\n'  # quotes are text, not CSV quoting
            '\r\n'
            'no tab here\r\n'
            '\t빈 원문\r\n'
            'Run!\t뛰어!')
    path = write(tmp_path / "pairs.txt", text.encode())
    examples = read_tsv_pairs(path)
    assert examples.pairs == [("Go.", "가."), ('"Hi," he said.', '"안녕," 그가 말했다.'), ("Run!", "뛰어!")]
    assert examples.skipped == {"empty lines": 1, "lines with fewer than 2 columns": 1,
                                "lines with an empty source or target": 1}
    assert read_tsv_pairs(path, reverse=True).pairs[0] == ("가.", "Go.")


def test_tsv_without_tabs_is_a_clear_error(tmp_path):
    path = write(tmp_path / "pairs.csv", b"Go.,Ga.\nHi.,Annyeong.\n")
    with pytest.raises(UserError, match="no tab-separated columns"):
        read_tsv_pairs(path)


# -------------------------------------------------------------------------------- aligned files


def test_aligned_files_keep_alignment_and_skip_one_sided_lines(tmp_path):
    # U+2028 inside a line must not split it: str.splitlines would, and misalign the files.
    src = write(tmp_path / "src.txt", "one\u2028still one\r\ntwo\n\nfour\n".encode())
    tgt = write(tmp_path / "tgt.txt", "하나\n\n\n넷".encode())
    examples = read_aligned_files(src, tgt)
    assert examples.pairs == [("one\u2028still one", "하나"), ("four", "넷")]
    assert examples.skipped == {"lines empty on one side": 1, "empty lines": 1}
    assert read_aligned_files(src, tgt, reverse=True).pairs[1] == ("넷", "four")


def test_aligned_files_with_different_lengths_are_a_clear_error(tmp_path):
    src = write(tmp_path / "src.txt", b"a\nb\nc\n")
    tgt = write(tmp_path / "tgt.txt", b"x\ny\n")
    with pytest.raises(UserError, match="has 3 lines but .* has 2"):
        read_aligned_files(src, tgt)


# ---------------------------------------------------------------------------------------- splits


def pairs_with_repeats(n=300):
    # Every third source repeats with another target, and in another case, as in kor.txt.
    pairs = []
    for i in range(n):
        pairs.append((f"Sentence number {i}.", f"문장 {i}"))
        if i % 3 == 0:
            pairs.append((f"SENTENCE  number {i}.", f"다른 문장 {i}"))
    return pairs


def test_grouped_split_never_shares_a_source_and_is_deterministic():
    pairs = pairs_with_repeats()
    splits = grouped_split(pairs, 0.1, 0.2, seed=3)
    keys = {name: {source_key(s) for s, _ in getattr(splits, name)}
            for name in ("train", "validation", "test")}
    assert not keys["train"] & keys["test"]
    assert not keys["train"] & keys["validation"]
    assert not keys["validation"] & keys["test"]
    assert sorted(splits.train + splits.validation + splits.test) == sorted(pairs)  # nothing lost
    total = len(pairs)
    assert 0.2 * total <= len(splits.test) <= 0.2 * total + 2
    assert 0.1 * total <= len(splits.validation) <= 0.1 * total + 2
    assert grouped_split(pairs, 0.1, 0.2, seed=3) == splits
    assert grouped_split(pairs, 0.1, 0.2, seed=4).test != splits.test
    # The result depends on the pairs, not on their order.
    assert sorted(grouped_split(pairs[::-1], 0.1, 0.2, seed=3).test) == sorted(splits.test)


def test_grouped_split_fills_every_split_of_a_tiny_set_and_rejects_bad_input():
    splits = grouped_split([("a", "1"), ("b", "2"), ("c", "3")], 0.01, 0.01, seed=0)
    assert splits.sizes() == {"train": 1, "validation": 1, "test": 1}
    with pytest.raises(UserError, match="only 2 distinct source sentences"):
        grouped_split([("a", "1"), ("A", "2"), ("b", "3")], 0.1, 0.1, seed=0)
    with pytest.raises(UserError, match="test_fraction must be in"):
        grouped_split([("a", "1")], 0.1, 1.0, seed=0)


def test_given_held_out_files_win_over_training_duplicates(tmp_path, caplog):
    data = write(tmp_path / "train.tsv", "".join(f"s{i}\tt{i}\n" for i in range(40)).encode())
    test = write(tmp_path / "test.tsv", b"s1\tt1\nS2\tother\nnew\tx\n")
    sources = DataSources(data=str(data), test_data=str(test))
    with caplog.at_level(logging.WARNING, logger="keras_nlp_week4.data.readers"):
        splits = load_pair_splits(sources, 0, "tsv", 0.1, 0.1)
    assert splits.test == [("s1", "t1"), ("S2", "other"), ("new", "x")]
    assert not {"s1", "s2"} & {source_key(s) for s, _ in splits.train + splits.validation}
    assert len(splits.train) + len(splits.validation) == 38
    assert "dropped 2 training pairs" in caplog.text


@pytest.mark.parametrize("sources, message", [
    (DataSources(), "nothing to train on: give --data (a file of pairs)"),
    (DataSources(data="a.tsv", src="b.txt", tgt="c.txt"), "either --data or --src"),
    (DataSources(src="b.txt"), "give both --src and --tgt, or neither"),
    (DataSources(data="a.tsv", validation_src="v.txt"), "both --validation-src and --validation-tgt"),
])
def test_contradictory_data_options_are_clear_errors(sources, message):
    with pytest.raises(UserError) as error:
        load_pair_splits(sources, 0, "tsv", 0.1, 0.1)
    assert message in error.value.for_flags()  # what the command line prints


# ------------------------------------------------------------------------------------ real files


@pytest.mark.skipif(not CHATBOT_CSV.is_file(), reason="../shared/data/chatbot not present")
def test_real_chatbot_file_reads_whole():
    examples = read_qa_csv(CHATBOT_CSV)
    assert len(examples.pairs) == 11823 and not examples.skipped
    assert set(examples.labels) == {0, 1, 2}  # the "2   " label included
    assert ("가족 있어?", "저를 만들어 준 사람을 부모님, 저랑 이야기해 주는 사람을 친구로 생각하고 있어요") \
        in examples.pairs
    splits = grouped_split(examples.pairs, 0.05, 0.05, seed=0)
    assert not splits.overlapping_sources()


@pytest.mark.skipif(not KOR_TXT.is_file(), reason="../shared/data/kor-eng not present")
def test_real_translation_file_splits_by_english_sentence():
    examples = read_tsv_pairs(KOR_TXT)
    assert len(examples.pairs) == 5749 and not examples.skipped
    assert examples.pairs[1] == ("Hi.", "안녕.")
    splits = grouped_split(examples.pairs, 0.05, 0.1, seed=0)
    english = [{source_key(s) for s, _ in part} for part in (splits.train, splits.validation, splits.test)]
    assert not (english[0] & english[2]) and not (english[0] & english[1]) and not (english[1] & english[2])
    # Some test sources have several translations; they all stay in the test split.
    assert len({s for s, _ in splits.test}) < len(splits.test)


# --------------------------------------------------------------------------- through the command line


def test_bad_data_on_the_command_line_is_one_line_and_exit_2(tmp_path, capsys):
    from keras_nlp_week4.cli import main

    no_answer = write(tmp_path / "chat.csv", b"Q,label\nhi,0\n")
    # In process (a subprocess starts TensorFlow, 8 s each): `main` is what `python -m keras_nlp_week4` runs.
    for args, message in [
        (["train", "--task", "chatbot", "--data", str(no_answer), "--out", str(tmp_path / "a")], "has no column A"),
        (["train", "--task", "dates", "--src", "a.txt", "--tgt", "b.txt", "--out", str(tmp_path / "b")],
         "drop --src, --tgt"),
    ]:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / args[-1]).exists()  # a refused command writes nothing


def test_data_errors_name_fields_and_the_command_line_names_flags():
    with pytest.raises(UserError) as error:
        load_pair_splits(DataSources(validation_src="v.en"), 0, "tsv", 0.1, 0.1)
    assert str(error.value) == "give both validation_src and validation_tgt, or neither"
    assert error.value.for_flags() == "give both --validation-src and --validation-tgt, or neither"
    with pytest.raises(UserError) as error:
        load_pair_splits(DataSources(), 0, "tsv", 0.1, 0.1, task_name="TASK=translate")
    assert "--" not in str(error.value) and "--data" in error.value.for_flags()
