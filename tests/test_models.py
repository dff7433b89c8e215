"""Model families: incremental decoding == teacher-forced pass, causality, saving, fitting, generation."""

import keras
import numpy as np
import pytest

from keras_nlp_week4.decoding import generate, greedy_generate
from keras_nlp_week4.decoding.search import keras_step_fn
from keras_nlp_week4.errors import UserError
from keras_nlp_week4.models import MODEL_NAMES, RNNSeq2Seq, Transformer, build_model
from keras_nlp_week4.training.losses import MaskedSparseCrossEntropy
from serving.search import greedy_search

VOCAB, BOS, EOS = 24, 2, 3
SOURCE = np.array([[5, 6, 7, 8, 3, 0], [9, 10, 3, 0, 0, 0], [11, 12, 13, 14, 15, 3]], "int32")
TARGET_IN = np.array([[2, 5, 6, 7, 8], [2, 9, 10, 11, 12], [2, 13, 14, 15, 16]], "int32")


def tiny(name, **overrides):
    keras.utils.set_random_seed(1)
    if name == "transformer":
        return Transformer(VOCAB, d_model=16, num_heads=2, num_encoder_layers=2, num_decoder_layers=2,
                           d_ff=32, dropout=0.0, **overrides)
    return build_model(name, VOCAB, preset="tiny", max_source_length=8, **overrides)


FAMILIES = ["transformer", "seq2seq-lstm", "seq2seq-gru", "bahdanau", "luong-dot", "luong-general",
            "luong-concat", "luong-location", "luong-scaled_dot"]


def step_through(model, source, target_in, max_length):
    state = model.encode(source)
    state.update(model.initial_cache(source.shape[0], max_length))
    logits = []
    for i in range(target_in.shape[1]):
        step_logits, updates, _ = model.decode_step(target_in[:, i], i, state)
        state.update(updates)
        logits.append(np.asarray(step_logits))
    return np.stack(logits, axis=1)


@pytest.mark.parametrize("name", FAMILIES)
def test_cached_decoding_equals_full_decoding(name):
    model = tiny(name)
    full = np.asarray(model((SOURCE, TARGET_IN)))
    stepped = step_through(model, SOURCE, TARGET_IN, max_length=7)
    np.testing.assert_allclose(stepped, full, atol=1e-5)


def test_reverse_source_reads_each_source_backwards_whatever_its_padding():
    reversing = tiny("seq2seq-lstm")  # Sutskever et al.: reverse_source
    assert reversing.reverse_source
    reversing.build()
    forward = RNNSeq2Seq.from_config({**reversing.get_config(), "reverse_source": False})
    forward.build()
    forward.set_weights(reversing.get_weights())
    for row in SOURCE:
        tokens = row[row != 0]  # without padding
        expected = np.asarray(forward.encode(tokens[::-1][None])["decoder_state"])
        got = np.asarray(reversing.encode(row[None])["decoder_state"])  # padded at the end
        np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.abs(np.asarray(forward.encode(SOURCE)["decoder_state"])
                  - np.asarray(reversing.encode(SOURCE)["decoder_state"])).max() > 1e-4


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_is_causal(norm_first):
    model = tiny("transformer", norm_first=norm_first)
    changed = TARGET_IN.copy()
    changed[:, 3:] = 20  # change every token from position 3 on
    a = np.asarray(model((SOURCE, TARGET_IN)))
    b = np.asarray(model((SOURCE, changed)))
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-6)
    assert np.abs(a[:, 3:] - b[:, 3:]).max() > 1e-4


def test_transformer_ties_embeddings_and_presets():
    model = Transformer.from_preset("base", source_vocab_size=1000)
    model.build()
    # Paper base: ~ 6+6 layers of d_model 512; one shared 1000 x 512 embedding, no separate projection.
    assert model.output_projection is None and model.target_embedding is model.source_embedding
    assert (model.d_model, model.num_heads, model.d_ff, model.num_encoder_layers) == (512, 8, 2048, 6)
    untied = Transformer(10, target_vocab_size=12, d_model=8, num_heads=2, num_encoder_layers=1,
                         num_decoder_layers=1, d_ff=16)
    logits = untied((np.ones((1, 3), "int32"), np.ones((1, 2), "int32")))
    assert logits.shape == (1, 2, 12)


@pytest.mark.parametrize("name", ["transformer", "bahdanau", "luong-location", "seq2seq-gru"])
def test_save_and_load_round_trip(name, tmp_path):
    model = tiny(name)
    expected = np.asarray(model((SOURCE, TARGET_IN)))
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert type(restored) is type(model)
    np.testing.assert_allclose(np.asarray(restored((SOURCE, TARGET_IN))), expected, atol=1e-6)
    assert restored.get_config() == model.get_config()


@pytest.mark.parametrize("name", ["transformer", "bahdanau", "seq2seq-lstm"])
def test_fit_lowers_the_loss(name):
    model = tiny(name)
    # A copy task: the target is the source.
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, VOCAB, size=(64, 5)).astype("int32")
    source = np.concatenate([tokens, np.full((64, 1), EOS, "int32")], axis=1)
    target_in = np.concatenate([np.full((64, 1), BOS, "int32"), tokens], axis=1)
    target = np.concatenate([tokens, np.full((64, 1), EOS, "int32")], axis=1)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=MaskedSparseCrossEntropy())
    history = model.fit((source, target_in), target, epochs=8, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.9 * history.history["loss"][0]


@pytest.mark.parametrize("name", ["transformer", "luong-general", "seq2seq-gru"])
def test_in_graph_greedy_equals_stepwise_greedy(name):
    model = tiny(name)
    in_graph = generate(model, SOURCE, 6, BOS, EOS).tokens
    state = {k: np.asarray(v) for k, v in model.encode(SOURCE).items()}
    state.update({k: np.asarray(v) for k, v in model.initial_cache(3, 6).items()})
    stepwise = greedy_search(keras_step_fn(model), state, 3, 6, BOS, EOS).tokens
    np.testing.assert_array_equal(in_graph[:, : stepwise.shape[1]], stepwise)
    assert (in_graph[:, stepwise.shape[1]:] == 0).all()
    eager = np.asarray(greedy_generate(model, SOURCE, 6, BOS, EOS))
    np.testing.assert_array_equal(eager, in_graph)


def test_beam_search_and_attention_outputs():
    model = tiny("transformer")
    beam = generate(model, SOURCE, 5, BOS, EOS, method="beam", beam_size=3, return_attention=True)
    assert beam.tokens.shape[0] == 3 and beam.attention.shape[2:] == (2, 2, SOURCE.shape[1])
    logits, attention = model.call_with_attention((SOURCE, TARGET_IN))
    assert attention.shape == (3, 2, 2, 5, 6)  # (batch, layers, heads, tgt, src)
    np.testing.assert_allclose(np.asarray(attention).sum(-1), 1.0, atol=1e-5)
    assert np.all(np.asarray(attention)[1, ..., 3:] == 0.0)  # padded source positions


def test_scheduled_sampling_feeds_predictions_only_in_training():
    always = tiny("seq2seq-lstm")
    sometimes = tiny("seq2seq-lstm", teacher_forcing_ratio=0.0, seed=3)
    sometimes.set_weights(always.get_weights())
    # At inference both feed the ground truth: identical.
    np.testing.assert_allclose(np.asarray(sometimes((SOURCE, TARGET_IN))),
                               np.asarray(always((SOURCE, TARGET_IN))), atol=1e-6)
    # In training, ratio 0 feeds the model's own predictions from step 1 on: step 0 is the same, later
    # steps differ, and they equal a run whose inputs are the argmax predictions.
    trained_always = np.asarray(always((SOURCE, TARGET_IN), training=True))
    trained_sometimes = np.asarray(sometimes((SOURCE, TARGET_IN), training=True))
    np.testing.assert_allclose(trained_sometimes[:, 0], trained_always[:, 0], atol=1e-6)
    assert np.abs(trained_sometimes[:, 1:] - trained_always[:, 1:]).max() > 1e-4
    fed = step_through(always, SOURCE, TARGET_IN[:, :1], max_length=5)
    inputs = [TARGET_IN[:, 0]]
    state = always.encode(SOURCE)
    outs = []
    for i in range(TARGET_IN.shape[1]):
        logits, updates, _ = always.decode_step(inputs[-1], i, state)
        state.update(updates)
        outs.append(np.asarray(logits))
        inputs.append(np.asarray(logits).argmax(-1).astype("int32"))
    np.testing.assert_allclose(outs[0], fed[:, 0], atol=1e-6)
    np.testing.assert_allclose(np.stack(outs, 1), trained_sometimes, atol=1e-5)


def test_registry_names_and_errors():
    assert {"transformer", "seq2seq-lstm", "seq2seq-gru", "bahdanau", "luong-dot"} <= set(MODEL_NAMES)
    with pytest.raises(UserError, match="unknown model"):
        build_model("gpt", VOCAB)
    with pytest.raises(UserError, match="unknown preset"):
        build_model("transformer", VOCAB, preset="huge")
    with pytest.raises(ValueError, match="teacher_forcing_ratio"):
        RNNSeq2Seq(VOCAB, teacher_forcing_ratio=1.5)
    with pytest.raises(ValueError, match="divisible"):
        Transformer(VOCAB, d_model=10, num_heads=3)
