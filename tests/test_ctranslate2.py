"""`make export TARGET=ctranslate2`: our Transformer weights in CTranslate2's TransformerSpec.

The conversion is checked where it could go wrong: per-token log-probabilities of CTranslate2 against the
Keras model's log-softmax on the same (source, target) pairs (post-norm and pre-norm, tied embeddings,
our interleaved sinusoidal table), identical greedy ids, and the export path on a trained run with its
validation report. RNN runs get a one-line error.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

ctranslate2 = pytest.importorskip("ctranslate2")
from helpers import TINY_RUN_TEST_EXAMPLES  # noqa: E402

from export.ctranslate2_target import (  # noqa: E402
    REPORT,
    check_convertible,
    ctranslate2_translator,
    transformer_spec,
    translate_ids,
    write_ctranslate2,
)
from keras_nlp_week4.errors import UserError  # noqa: E402

VOCAB = 40
PIECES = ["<pad>", "<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(VOCAB - 4)]
SPECIAL = {"unk": "<unk>", "bos": "<s>", "eos": "</s>"}


def _converted(tmp_path, norm_first: bool):
    import keras

    from keras_nlp_week4.models.transformer import Transformer

    keras.utils.set_random_seed(1)
    model = Transformer(VOCAB, d_model=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=2,
                        d_ff=64, dropout=0.0, norm_first=norm_first)
    model((np.ones((1, 3), "int32"), np.ones((1, 3), "int32")))
    spec = transformer_spec(model, PIECES, SPECIAL, max_length=24)
    spec.validate()
    spec.optimize()
    (tmp_path / "ct2").mkdir()
    spec.save(str(tmp_path / "ct2"))
    return model, ctranslate2_translator(tmp_path / "ct2")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
def test_log_probs_and_greedy_ids_match_keras(tmp_path, norm_first):
    from keras_nlp_week4.data.tokenizer import strip_special
    from keras_nlp_week4.decoding import generate

    model, translator = _converted(tmp_path, norm_first)
    rng = np.random.default_rng(0)
    sources = [rng.integers(4, VOCAB, rng.integers(1, 10)).tolist() for _ in range(8)]
    targets = [rng.integers(4, VOCAB, rng.integers(1, 8)).tolist() for _ in range(8)]

    scored = translator.score_batch([[PIECES[i] for i in s] for s in sources],
                                    [[PIECES[i] for i in t] for t in targets])
    for source, target, result in zip(sources, targets, scored, strict=True):
        logits = np.asarray(model((np.array([source + [3]], "int32"), np.array([[2] + target], "int32"))))[0]
        expected = _log_softmax(logits)[np.arange(len(target) + 1), target + [3]]  # target tokens, then EOS
        np.testing.assert_allclose(result.log_probs, expected, atol=1e-4)

    encoder_input = np.zeros((len(sources), 11), "int32")
    for row, source in enumerate(sources):
        encoder_input[row, : len(source) + 1] = source + [3]
    keras_ids = [strip_special(row.tolist()) for row in generate(model, encoder_input, 12, 2, 3, 0).tokens]
    assert translate_ids(translator, PIECES, sources, 12) == keras_ids


def test_exported_run_passes_validation(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    import shutil

    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns("saved_model"))
    destination = write_ctranslate2(run_dir, threads=1, verbose=False)
    assert (destination / "model.bin").is_file() and (destination / "tokenizer.model").is_file()
    report = json.loads((destination / REPORT).read_text())
    assert report["passed"] and report["greedy"]["identical"] == report["greedy"]["of"] == TINY_RUN_TEST_EXAMPLES
    assert report["beam4"]["of"] == TINY_RUN_TEST_EXAMPLES and 0 <= report["beam4"]["identical_to_ours"] <= TINY_RUN_TEST_EXAMPLES
    vocabulary = json.loads((destination / "shared_vocabulary.json").read_text())
    assert vocabulary[:4] == ["<pad>", "<unk>", "<s>", "</s>"]


def test_rnn_runs_get_a_one_line_error(tiny_run, tmp_path):
    from dataclasses import replace

    from keras_nlp_week4.runs import RunConfig

    replace(RunConfig.read(tiny_run), model="bahdanau", model_class="RNNSeq2Seq").write(tmp_path)
    with pytest.raises(UserError, match="Transformer runs only.*bahdanau") as error:
        check_convertible(tmp_path)
    assert "\n" not in str(error.value)
