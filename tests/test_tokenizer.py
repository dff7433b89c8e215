"""Tests for the SentencePiece tokenizer (keras_nlp_week4/data/tokenizer.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf
import tensorflow_text as tf_text

from keras_nlp_week4.data.dates import generate_date_pairs
from keras_nlp_week4.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    Tokenizer,
    check_tokenizer_parity,
    strip_special,
    train_sentencepiece,
)
from keras_nlp_week4.errors import UserError

MODEL_TYPES = ["char", "bpe"]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    pairs = generate_date_pairs(2000, seed=11)
    return [source for source, _ in pairs] + [target for _, target in pairs]


@pytest.fixture(scope="module")
def model_paths(texts, tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("tokenizers")
    return {
        "char": str(train_sentencepiece(texts, folder / "char.model", model_type="char")),
        "bpe": str(train_sentencepiece(texts, folder / "bpe.model", 200, model_type="bpe")),
    }


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_round_trip_keeps_strings_exactly(model_paths, texts, model_type):
    tokenizer = Tokenizer(model_paths[model_type])
    ids = tokenizer.encode(texts)
    assert tokenizer.decode(ids) == texts
    # Case is kept: the upper-case string is tokenized differently.
    assert tokenizer.encode(["SEP 27 1994"]) != tokenizer.encode(["sep 27 1994"])
    assert all(UNK_ID not in row for row in ids)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_tensorflow_text_matches_sentencepiece(model_paths, texts, model_type):
    # Both libraries loaded directly from the file, independently of the Tokenizer class.
    with open(model_paths[model_type], "rb") as file:
        model = file.read()
    reference = spm.SentencePieceProcessor(model_file=model_paths[model_type])
    tf_tokenizer = tf_text.SentencepieceTokenizer(model=model, out_type=tf.int32)
    got = tf_tokenizer.tokenize(tf.constant(texts)).to_list()
    assert got == reference.encode(texts, out_type=int)
    assert check_tokenizer_parity(Tokenizer(model_paths[model_type]), texts) == []


def test_parity_check_reports_mismatching_lines(model_paths, texts, monkeypatch):
    tokenizer = Tokenizer(model_paths["bpe"])
    honest_encode = tokenizer.encode

    def corrupted_encode(strings):
        ids = honest_encode(strings)
        ids[7] = ids[7] + [5]
        return ids

    monkeypatch.setattr(tokenizer, "encode", corrupted_encode)
    assert check_tokenizer_parity(tokenizer, texts[:20], batch_size=6) == [7]


def test_special_ids_and_properties(model_paths, texts):
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    tokenizer = Tokenizer(model_paths["bpe"])
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2, 3)
    pieces = [tokenizer.id_to_piece(i) for i in range(4)]
    assert pieces == ["<pad>", "<unk>", "<s>", "</s>"]
    assert tokenizer.vocab_size == 200
    assert tokenizer.serialized_model == open(model_paths["bpe"], "rb").read()
    assert str(tokenizer.model_path) == model_paths["bpe"]
    # Plain text never produces PAD/BOS/EOS.
    assert not {PAD_ID, BOS_ID, EOS_ID} & {i for row in tokenizer.encode(texts) for i in row}
    with pytest.raises(UserError, match="outside the vocabulary"):
        tokenizer.id_to_piece(200)


def test_char_vocabulary_is_sized_automatically(model_paths, texts):
    tokenizer = Tokenizer(model_paths["char"])
    characters = set("".join(texts)) - {" "}
    # 4 special pieces + the space symbol + one piece per character.
    assert tokenizer.vocab_size == 4 + 1 + len(characters)
    pieces = {tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)}
    assert characters <= pieces


@pytest.mark.parametrize("model_type", ["char", "bpe", "unigram"])
def test_training_is_deterministic(texts, tmp_path, model_type):
    vocab_size = None if model_type == "char" else 150
    first = train_sentencepiece(texts[:1000], tmp_path / "a.model", vocab_size, model_type)
    second = train_sentencepiece(texts[:1000], tmp_path / "b.model", vocab_size, model_type)
    assert first.read_bytes() == second.read_bytes()


def test_training_errors(tmp_path):
    with pytest.raises(UserError, match="empty"):
        train_sentencepiece([], tmp_path / "x.model", 50)
    with pytest.raises(UserError, match="empty"):
        train_sentencepiece(["", ""], tmp_path / "x.model", 50)
    with pytest.raises(UserError, match="model type"):
        train_sentencepiece(["abc"], tmp_path / "x.model", 50, model_type="bytes")
    with pytest.raises(UserError, match="vocab_size is required"):
        train_sentencepiece(["abc"], tmp_path / "x.model", None, model_type="bpe")
    assert not (tmp_path / "x.model").exists()


def test_missing_and_corrupt_model_files(tmp_path):
    missing = tmp_path / "missing.model"
    with pytest.raises(UserError, match="missing.model.*not found"):
        Tokenizer(missing)
    corrupt = tmp_path / "corrupt.model"
    corrupt.write_bytes(b"\x00\x01 this is not a sentencepiece model")
    with pytest.raises(UserError, match="corrupt.model.*not a valid"):
        Tokenizer(corrupt)
    with pytest.raises(UserError, match="cannot read"):
        Tokenizer(tmp_path)


def test_model_with_other_special_ids_is_rejected(tmp_path):
    model = io.BytesIO()
    # sentencepiece's defaults: unk=0, bos=1, eos=2, no pad.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["may 1, 2001", "jun 2, 2002"]),
        model_writer=model,
        model_type="char",
        vocab_size=20,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    path = tmp_path / "default_ids.model"
    path.write_bytes(model.getvalue())
    with pytest.raises(UserError, match="special ids"):
        Tokenizer(path)


def test_strip_special():
    assert strip_special([BOS_ID, 10, 11, EOS_ID, 12, PAD_ID]) == [10, 11]
    assert strip_special(np.array([10, PAD_ID, 11, PAD_ID])) == [10, 11]
    assert strip_special([EOS_ID, 10]) == []
    assert strip_special([]) == []


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_decode_and_detokenize_ignore_special_ids(model_paths, texts, model_type):
    tokenizer = Tokenizer(model_paths[model_type])
    sample = texts[:5] + texts[-5:]
    rows = [[BOS_ID] + ids + [EOS_ID] for ids in tokenizer.encode(sample)]
    width = max(map(len, rows)) + 3
    # Junk after EOS must be ignored, as a decoder may keep writing after it.
    padded = np.array([row + [EOS_ID, 9] + [PAD_ID] * (width - len(row)) for row in rows])
    assert tokenizer.decode(padded) == sample
    detokenized = tokenizer.detokenize(tf.constant(padded, tf.int32)).numpy()
    assert [s.decode() for s in detokenized] == sample
    ragged = tokenizer.tokenize(tf.constant(sample))
    assert [s.decode() for s in tokenizer.detokenize(ragged).numpy()] == sample
    assert tokenizer.detokenize(tf.constant(padded[0], tf.int64)).numpy().decode() == sample[0]


def test_tokenize_returns_int32_ragged_and_works_in_graphs(model_paths, texts):
    tokenizer = Tokenizer(model_paths["bpe"])
    sample = texts[:8]
    ragged = tokenizer.tokenize(tf.constant(sample))
    assert isinstance(ragged, tf.RaggedTensor) and ragged.dtype == tf.int32
    assert ragged.to_list() == tokenizer.encode(sample)

    @tf.function
    def round_trip(strings):
        return tokenizer.detokenize(tokenizer.tokenize(strings).to_tensor())

    assert [s.decode() for s in round_trip(tf.constant(sample)).numpy()] == sample


def test_tokenize_survives_a_kernel_cache_clear(model_paths, texts):
    # tf.random.set_seed (and keras.utils.set_random_seed) clear the eager kernel cache, which
    # deletes TensorFlow Text's kernel-owned model resource; clear it directly here so the test
    # changes no global seed.
    from tensorflow.python.eager import context

    tokenizer = Tokenizer(model_paths["char"])
    expected = tokenizer.tokenize(tf.constant(texts[:3])).to_list()
    context.context().clear_kernel_cache()
    assert tokenizer.tokenize(tf.constant(texts[:3])).to_list() == expected


@pytest.mark.parametrize("model_type", ["char", "bpe"])
def test_detokenize_matches_sentencepiece_on_any_ids(model_paths, model_type):
    """In-graph detokenize (SavedModel text output) == the sentencepiece package's decode (serving),
    also for what an untrained model emits: leading/repeated spaces, unknown ids, whitespace only."""
    tokenizer = Tokenizer(model_paths[model_type])
    space = tokenizer.piece_to_id("\u2581")
    rng = np.random.default_rng(0)
    rows = [list(rng.integers(1, tokenizer.vocab_size, size=rng.integers(1, 12))) for _ in range(1500)]
    rows += [[space] * 3, [space, space, 10, space], [UNK_ID], [UNK_ID, space, 10], [space, UNK_ID]]
    width = max(map(len, rows))
    dense = np.array([r + [PAD_ID] * (width - len(r)) for r in rows], np.int32)
    in_graph = [s.decode() for s in tokenizer.detokenize(dense).numpy()]
    assert in_graph == tokenizer.decode(rows)


def test_squeezed_whitespace_is_part_of_the_model(texts, tmp_path):
    """`squeeze_whitespace` (the dates task's): spaces before, after and between words do not change the
    ids, in sentencepiece, in tensorflow-text and in the serving tokenizer alike, since the model holds it."""
    from serving.tokenizer import SentencePieceTokenizer

    path = train_sentencepiece(texts, tmp_path / "squeezed.model", model_type="char", squeeze_whitespace=True)
    tokenizer = Tokenizer(path)
    plain, spaced = "tue, sep 27, 1994", "  tue,  sep 27,   1994 "
    assert tokenizer.encode([spaced]) == tokenizer.encode([plain])
    tf_ids = tokenizer.tokenize(tf.constant([spaced])).to_list()
    assert tf_ids == tokenizer.encode([plain])
    serving = SentencePieceTokenizer(path, {"pad": PAD_ID, "bos": BOS_ID, "eos": EOS_ID})
    assert serving.encode([spaced]) == tokenizer.encode([plain])
    assert tokenizer.decode(tokenizer.encode([plain])) == [plain]
    kept = Tokenizer(train_sentencepiece(texts, tmp_path / "kept.model", model_type="char"))
    assert kept.encode([spaced]) != kept.encode([plain])  # the default keeps every space
