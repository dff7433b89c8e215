"""The page's JavaScript tokenizer (`serving/static/sentencepiece.js`) against the `sentencepiece` package.

Each model is run through `tests/js/tokenizer_parity.mjs` once, on every text at once, and compared id for
id with Python: the dates task's tokenizer (char, whitespace squeezed) on a generated test split, a BPE
tokenizer trained on Multi30k on the whole test split (German and English), and smaller models trained on
Multi30k's validation split for what those two do not reach (unigram, NFKC normalization, user-defined
and unused pieces, a BPE model that squeezes whitespace). Every model also gets the edge cases below.
Compared: `encode` ids, `decode` of Python's ids (and of random id rows), `encodeSources` against
`serving/tokenizer.py`'s `encode_sources` with a length that cuts, and `outputIds` against
`strip_special_ids`. Models the JavaScript does not implement must be refused with an error.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
from helpers import ROOT, SHARED

from keras_nlp_week4.data.dates import date_splits
from keras_nlp_week4.data.tokenizer import SPECIAL_IDS, train_sentencepiece
from serving.tokenizer import SentencePieceTokenizer, strip_special_ids

NODE = shutil.which("node")
PARITY = ROOT / "tests" / "js" / "tokenizer_parity.mjs"
MULTI30K = SHARED / "multi30k"

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not on PATH: the JavaScript tokenizer needs Node.js")

needs_multi30k = pytest.mark.skipif(not (MULTI30K / "test_2016_flickr.de").exists(),
                                    reason=f"the Multi30k data is missing ({MULTI30K}); see ../shared/data/README.md")

# Texts every model is checked on: whitespace of every kind, characters no model has seen (alone and in
# runs), astral-plane characters, the escape symbol itself, the map's U+FFFF, what NFKC folds.
EDGE_CASES = [
    "", " ", "  ", "   ", "a", " a", "a ", "  leading", "trailing  ", "double  space", "  many   spaces  here  ",
    "\ttab\tand\nnewline\r", " \t ", "☃", "☃☃☃", "x☃☃y☃", "∰ unknown ∰∰ runs ∯∯∯", "Ein ☃ Mann ☃☃ läuft.",
    "emoji 😀😀 and 👍🏽 👨‍👩‍👧", "😀", " 😀 ", "astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠀀𠀁", "a\u2581b", "\u2581", " \u2581 ", "\u2581\u2581a",
    "\uffff", "\ufffe", "a\uffffb", "\u0000nul\u0000", "Ünïcödé Straße", "Å Å", "ｆｕｌｌｗｉｄｔｈ ① ½ ™",
    "ﬁ ﬂ ligatures", "\u3000ideographic\u3000space", "non\u00a0breaking", "<unk> <s> </s> <pad>",
    "tues. sep 27 1994", "SEPT. 27, 1994", "27.09.1994", "A man in a red hat.", "Eine Frau mit einem Hund.",
    "word " * 60,
]


def _dates_texts(pairs) -> list[str]:
    return [text for pair in pairs for text in pair]


def _lines(name: str) -> list[str]:
    return (MULTI30K / name).read_text(encoding="utf-8").split("\n")[:-1]  # a newline ends the file


# --- the models ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dates_splits():
    # The test split is drawn first, so it is the dates task's own test split (seed 0) for any train size.
    return date_splits(num_train=20000, seed=0)


@pytest.fixture(scope="session")
def dates_model(tmp_path_factory, dates_splits) -> Path:
    """The dates task's tokenizer, trained as the trainer trains it (sources and targets of the train
    split, char, squeezed whitespace)."""
    return train_sentencepiece(_dates_texts(dates_splits.train), tmp_path_factory.mktemp("js-dates") / "t.model",
                               model_type="char", squeeze_whitespace=True)


@pytest.fixture(scope="session")
def multi30k_model(tmp_path_factory) -> Path:
    """A BPE tokenizer of 8,000 pieces on Multi30k's German and English training lines."""
    texts = _lines("train.de") + _lines("train.en")
    return train_sentencepiece(texts, tmp_path_factory.mktemp("js-m30k") / "t.model", vocab_size=8000)


@pytest.fixture(scope="session")
def val_texts() -> list[str]:
    return _lines("val.de") + _lines("val.en")


def _train_raw(path: Path, texts: list[str], **options) -> Path:
    """A model trained with sentencepiece's own options (what `train_sentencepiece` does not expose)."""
    spm.set_random_generator_seed(0)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(path),
                                   num_threads=1, minloglevel=2, hard_vocab_limit=False,
                                   pad_id=0, unk_id=1, bos_id=2, eos_id=3, **options)
    return path.with_suffix(".model")


# --- running both sides --------------------------------------------------------------------------


def _run_js(model: Path, payload: dict, tmp_path: Path) -> dict:
    request = tmp_path / "request.json"
    request.write_text(json.dumps(payload), encoding="utf-8")
    done = subprocess.run([NODE, str(PARITY), str(model), str(request)], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip(), f"node printed nothing: {done.stderr[-2000:]}"
    return json.loads(done.stdout)


def _first_mismatch(what: str, inputs: list, expected: list, got: list) -> str | None:
    if len(expected) != len(got):
        return f"{what}: {len(got)} results from JavaScript, {len(expected)} from Python"
    for i, (want, have) in enumerate(zip(expected, got, strict=True)):
        if want != have:
            return (f"{what}: {sum(a != b for a, b in zip(expected, got, strict=True))} of {len(expected)} differ; "
                    f"first at {i}: input {inputs[i]!r}: Python {want!r}, JavaScript {have!r}")
    return None


def _id_rows(vocab_size: int, encoded: list[list[int]], count: int = 300) -> list[list[int]]:
    """Rows to decode: Python's ids, then random rows over the whole vocabulary with the special ids
    (and leading "▁" pieces) mixed in, as a model's output could be."""
    rng = random.Random(0)
    rows = [list(ids) for ids in encoded]
    for _ in range(count):
        length = rng.randint(0, 12)
        rows.append([rng.choice([0, 1, 2, 3, rng.randrange(vocab_size)]) if rng.random() < 0.3
                     else rng.randrange(vocab_size) for _ in range(length)])
    return rows


def _output_rows(encoded: list[list[int]]) -> list[list[int]]:
    """Generated-looking rows: BOS first, EOS somewhere (or nowhere), PAD after, text after EOS."""
    rng = random.Random(1)
    rows = []
    for ids in encoded[:200]:
        tail = rng.choice([[], [3], [3, 0, 0], [3, 5, 3], [0, 2]])
        rows.append([2, *ids, *tail])
    return rows + [[], [3], [2], [0, 0], [2, 3, 4], [4, 2, 0, 5, 3, 6]]


def assert_parity(model: Path, texts: list[str], tmp_path: Path, max_source_length: int = 8) -> None:
    """Compares everything on `texts` and the edge cases; the failure names the first mismatch of each kind."""
    texts = list(texts) + EDGE_CASES
    processor = spm.SentencePieceProcessor(model_file=str(model))
    expected = processor.encode(texts, out_type=int)
    decode_rows = _id_rows(processor.get_piece_size(), expected)
    output_rows = _output_rows(expected)
    js = _run_js(model, {"texts": texts, "decode": decode_rows, "output_rows": output_rows,
                         "max_source_length": max_source_length}, tmp_path)
    assert "error" not in js, js["error"]

    problems = [
        _first_mismatch("encode", texts, expected, js["encode"]),
        _first_mismatch("pieces", texts, [[processor.id_to_piece(i) for i in ids] for ids in expected],
                        js["pieces"]),
        _first_mismatch("decode(encode)", texts, [processor.decode(ids) for ids in expected], js["roundtrip"]),
        _first_mismatch("decode", decode_rows, [processor.decode(row) for row in decode_rows], js["decode"]),
        _first_mismatch("outputIds", output_rows, [strip_special_ids(row, 0, 2, 3) for row in output_rows],
                        js["output_ids"]),
    ]
    batch, lengths = SentencePieceTokenizer(model, SPECIAL_IDS).encode_sources(texts, max_source_length)
    sources = js["sources"]
    problems.append(_first_mismatch("encodeSources lengths", texts, lengths.tolist(), sources["lengths"]))
    if sources["shape"] != list(batch.shape):
        problems.append(f"encodeSources: shape {sources['shape']}, Python {list(batch.shape)}")
    else:
        got = np.asarray(sources["ids"], dtype=np.int32).reshape(batch.shape).tolist()
        problems.append(_first_mismatch("encodeSources", texts, batch.tolist(), got))
    assert js["special"] == SPECIAL_IDS
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)


# --- the tests -----------------------------------------------------------------------------------


def test_dates_tokenizer_on_the_test_split(dates_model, dates_splits, tmp_path):
    texts = _dates_texts(dates_splits.test)
    assert len(texts) == 2000
    # Squeezing and the case variants: the text the task actually sees, with extra spaces added.
    texts += [f"  {source.upper()}   " for source, _ in dates_splits.test[:100]]
    assert_parity(dates_model, texts, tmp_path, max_source_length=12)


@needs_multi30k
@pytest.mark.parametrize("language", ["de", "en"])
def test_multi30k_bpe_on_the_whole_test_split(multi30k_model, language, tmp_path):
    texts = _lines(f"test_2016_flickr.{language}")
    assert len(texts) == 1000
    assert_parity(multi30k_model, texts, tmp_path)


@needs_multi30k
def test_bpe_with_squeezed_whitespace(val_texts, tmp_path):
    model = train_sentencepiece(val_texts, tmp_path / "t.model", vocab_size=1500, squeeze_whitespace=True)
    # The validation lines with their spaces doubled and padded, so that squeezing has work to do.
    texts = [f" {line.replace(' ', '  ')} " for line in val_texts[:300]]
    assert_parity(model, texts, tmp_path)


@needs_multi30k
def test_unigram(val_texts, tmp_path):
    model = train_sentencepiece(val_texts, tmp_path / "t.model", vocab_size=1500, model_type="unigram")
    assert_parity(model, val_texts, tmp_path)


@needs_multi30k
def test_nfkc_normalization(val_texts, tmp_path):
    # sentencepiece's default normalization: NFKC through its precompiled map, extra spaces squeezed.
    model = _train_raw(tmp_path / "nfkc", val_texts, model_type="bpe", vocab_size=1500,
                       normalization_rule_name="nmt_nfkc")
    assert_parity(model, val_texts[:300], tmp_path)


@needs_multi30k
def test_user_defined_and_unused_pieces(val_texts, tmp_path):
    from sentencepiece import sentencepiece_model_pb2

    model = _train_raw(tmp_path / "user", val_texts, model_type="bpe", vocab_size=1500,
                       user_defined_symbols=["<sep>", "Mann", "☃"], remove_extra_whitespaces=False,
                       normalization_rule_name="identity")
    # Some merged pieces marked UNUSED: BPE still merges through them and then splits them back.
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.read_bytes())
    normal = [p for p in proto.pieces if p.type == p.NORMAL and len(p.piece) > 2]
    for piece in normal[::7]:
        piece.type = piece.UNUSED
    model.write_bytes(proto.SerializeToString())
    texts = val_texts[:300] + ["Mann<sep>Mann", "☃<sep>☃☃", "<sep>", "Ein Mann<sep> ☃ Frau"]
    assert_parity(model, texts, tmp_path)

    unigram = _train_raw(tmp_path / "user-unigram", val_texts, model_type="unigram", vocab_size=1500,
                         user_defined_symbols=["<sep>", "Mann", "☃"])
    assert_parity(unigram, texts, tmp_path)


def test_models_it_does_not_implement_are_refused(dates_splits, tmp_path):
    texts = _dates_texts(dates_splits.test)
    refused = {
        "word": _train_raw(tmp_path / "word", texts, model_type="word", vocab_size=200),
        "byte fallback": _train_raw(tmp_path / "bytes", texts, model_type="bpe", vocab_size=400, byte_fallback=True),
        "treat_whitespace_as_suffix": _train_raw(tmp_path / "suffix", texts, model_type="bpe", vocab_size=400,
                                                 treat_whitespace_as_suffix=True),
    }
    not_a_model = tmp_path / "garbage.model"
    not_a_model.write_bytes(b"\xff\xff\xff\xff not a model")
    refused["not a valid"] = not_a_model
    for expected, model in refused.items():
        js = _run_js(model, {"texts": ["sep 27 1994"]}, tmp_path)
        assert expected in js.get("error", ""), f"{model.name}: expected an error about {expected!r}, got {js}"


def test_the_module_has_no_dependencies():
    source = (ROOT / "serving" / "static" / "sentencepiece.js").read_text(encoding="utf-8")
    assert not [line for line in source.splitlines() if line.startswith("import ")]
    assert "export class SentencePiece" in source
