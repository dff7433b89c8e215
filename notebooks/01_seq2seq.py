# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Sequence to sequence: encoder, context vector, decoder, teacher forcing
#
# **Lecture section:** "seq2seq" (Sutskever et al. 2014; Cho et al. 2014), the part before attention.
#
# An **encoder** RNN reads the source one token at a time and ends in a fixed-size state, the
# **context vector**. A **decoder** RNN starts from that state, is fed `<sos>` (here `BOS`), and predicts the
# target one token at a time. During training it is fed the *true* previous token (**teacher forcing**);
# at inference time it is fed its own prediction.
#
# Everything below uses the project's own code (`keras_nlp_week4`): the dates task, the sentencepiece
# tokenizer, the `tf.data` pipeline and the `RNNSeq2Seq` model. Nothing is re-implemented here.
#
# The task: human-written dates to ISO dates, `"Tuesday, September 27, 1994"` → `"1994-09-27"`.

# %%
# Colab, or any environment without this project: this cell installs it (and does nothing where it
# imports). From $KERAS_NLP_WEEK4_SOURCE (a folder, or anything `pip install` accepts), else from a
# clone in or above the working directory, else from /content/keras-nlp-week4 (Colab's upload place).
import importlib.util


def _install_keras_nlp_week4():
    import os
    import subprocess
    import sys
    from pathlib import Path

    def is_clone(folder):
        toml = folder / "pyproject.toml"
        return toml.is_file() and 'name = "keras-nlp-week4"' in toml.read_text(encoding="utf-8")

    here = Path.cwd().resolve()
    places = [d for p in (here, *here.parents, Path("/content")) for d in (p, *p.glob("keras-nlp-week4*"))]
    source = os.environ.get("KERAS_NLP_WEEK4_SOURCE") or next((str(d) for d in places if is_clone(d)), None)
    if source is None:
        raise ModuleNotFoundError(
            "keras_nlp_week4 is not installed and no copy of the project was found. In Colab, put the "
            "project at /content/keras-nlp-week4: `!git clone <the repository's URL> /content/keras-nlp-week4`, "
            "or upload a zip of it (Files pane) and `!unzip -q keras-nlp-week4*.zip -d /content`. Elsewhere, "
            "set os.environ['KERAS_NLP_WEEK4_SOURCE'] to the project's folder (or anything `pip install` "
            "accepts). Then run this cell again.")
    print(f"Installing keras-nlp-week4 from {source} (a few minutes the first time) ...")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)
    importlib.invalidate_caches()


if importlib.util.find_spec("keras_nlp_week4") is None:
    _install_keras_nlp_week4()

# %% tags=["parameters"]
import os

# The test suite sets NOTEBOOK_SMALL=1: less data and fewer epochs, same code path.
SMALL = os.environ.get("NOTEBOOK_SMALL") == "1"
NUM_TRAIN = 1000 if SMALL else 20000
EPOCHS = 2 if SMALL else 8
COPY_EXAMPLES = 1000 if SMALL else 20500  # the digit-copying task of the last section
COPY_EPOCHS = 1 if SMALL else 6
SEED = 0

# %%
import tempfile

from keras_nlp_week4.quiet import import_tensorflow_quietly

import_tensorflow_quietly()  # before anything imports TensorFlow: keeps its start-up log lines out

import keras
import matplotlib.pyplot as plt
import numpy as np

from keras_nlp_week4.data.dates import date_splits
from keras_nlp_week4.data.pipeline import encode_sources, make_dataset
from keras_nlp_week4.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, train_sentencepiece
from keras_nlp_week4.decoding.search import generate
from keras_nlp_week4.models.registry import build_model
from keras_nlp_week4.training.losses import MaskedAccuracy, MaskedSparseCrossEntropy

keras.utils.set_random_seed(SEED)
splits = date_splits(num_train=NUM_TRAIN, num_validation=500, num_test=500, seed=SEED)
splits.train[:5]

# %% [markdown]
# ## Tokens
# Dates are tokenized character by character (a sentencepiece `char` model learned from the training
# split). Four ids are reserved: `PAD`, `UNK`, `BOS` (the lecture's `<sos>`) and `EOS` (`<eos>`).

# %%
workdir = tempfile.mkdtemp(prefix="seq2seq-notebook-")
texts = [text for pair in splits.train for text in pair]
tokenizer = Tokenizer(train_sentencepiece(texts, f"{workdir}/tokenizer.model", model_type="char"))
MAX_SOURCE, MAX_TARGET = 48, 12
print(f"vocabulary: {tokenizer.vocab_size} pieces; PAD={PAD_ID} BOS={BOS_ID} EOS={EOS_ID}")
print([tokenizer.id_to_piece(i) for i in tokenizer.encode(["sep 27, 1994"])[0]])

# %% [markdown]
# ## The encoder's context vector
# The encoder is an LSTM. Whatever the length of the source, it ends in one hidden state `h` and one
# cell state `c` of `units` numbers each: that pair is the context vector the decoder starts from.

# %%
model = build_model("seq2seq-lstm", tokenizer.vocab_size, preset="small", max_source_length=MAX_SOURCE)
model.build()
short, long = "9/27/94", "Tuesday, the 27th of September 1994"
for text in (short, long):
    encoder_input = encode_sources([text], tokenizer, MAX_SOURCE)
    state = model.encode(encoder_input)["decoder_state"]  # (batch, layers, [h, c], units)
    print(f"{text!r}: {encoder_input.shape[1]} source tokens -> context {tuple(state.shape)}")
context_shapes = {tuple(model.encode(encode_sources([t], tokenizer, MAX_SOURCE))["decoder_state"].shape)
                  for t in (short, long)}
assert context_shapes == {(1, 1, 2, model.units)}, context_shapes  # the same size for any input length

# %% [markdown]
# ## The decoder is fed `<sos>`
# One decoder step takes the previous token and the state and returns next-token logits. The first step
# is fed `BOS`. Untrained, the model's guess is noise:

# %%
state = model.encode(encode_sources([short], tokenizer, MAX_SOURCE))
logits, updates, _ = model.decode_step(np.array([BOS_ID], "int32"), 0, state)
top = np.argsort(-np.asarray(logits[0]))[:5]
print("most likely first tokens (untrained):", [tokenizer.id_to_piece(int(i)) for i in top])

# %% [markdown]
# ## Teacher forcing
# The pipeline builds, for every pair, the encoder input (source + `EOS`), the decoder input
# (`BOS` + target) and the target (target + `EOS`): the decoder input is the target shifted right by one,
# so at step *t* the decoder is fed the true token *t − 1*.

# %%
train_ds = make_dataset(splits.train, tokenizer, 64, MAX_SOURCE, MAX_TARGET, shuffle=True, seed=SEED)
val_ds = make_dataset(splits.validation, tokenizer, 64, MAX_SOURCE, MAX_TARGET)
(encoder_input, decoder_input), target = next(iter(val_ds))
pieces = lambda ids: [tokenizer.id_to_piece(int(i)) for i in ids]  # noqa: E731
print("source        ", pieces(encoder_input[0][encoder_input[0] != PAD_ID]))
print("decoder input ", pieces(decoder_input[0][decoder_input[0] != PAD_ID]))
print("target        ", pieces(target[0][target[0] != PAD_ID]))
assert decoder_input[0, 0] == BOS_ID
real = np.asarray(target[0]) != PAD_ID
assert np.array_equal(np.asarray(decoder_input[0])[1:real.sum()], np.asarray(target[0])[:real.sum() - 1])

# %% [markdown]
# ## Training with `model.fit`, and the teacher-forcing ratio
# With ratio 1.0 the decoder always sees the truth. With a lower ratio it is fed its own prediction at
# that fraction of steps (scheduled sampling, Bengio et al. 2015): training then looks more like inference,
# but early on the model learns from its own mistakes, so it converges more slowly.

# %%
def train(ratio: float) -> tuple:
    keras.utils.set_random_seed(SEED)
    seq2seq = build_model("seq2seq-lstm", tokenizer.vocab_size, preset="small", max_source_length=MAX_SOURCE,
                          teacher_forcing_ratio=ratio, seed=SEED)
    seq2seq.compile(optimizer=keras.optimizers.Adam(3e-3, clipnorm=1.0),
                    loss=MaskedSparseCrossEntropy(pad_id=PAD_ID), metrics=[MaskedAccuracy(pad_id=PAD_ID)])
    history = seq2seq.fit(train_ds, validation_data=val_ds, epochs=EPOCHS, verbose=0)
    return seq2seq, history.history


models, histories = {}, {}
for ratio in (1.0, 0.5):
    models[ratio], histories[ratio] = train(ratio)
    print(f"ratio {ratio}: train loss {histories[ratio]['loss'][0]:.3f} -> {histories[ratio]['loss'][-1]:.3f}, "
          f"val accuracy {histories[ratio]['val_masked_accuracy'][-1]:.3f}")
assert all(h["loss"][-1] < h["loss"][0] for h in histories.values())  # both learn

# %%
fig, ax = plt.subplots(figsize=(6, 3))
for ratio, history in histories.items():
    ax.plot(range(1, EPOCHS + 1), history["val_loss"], marker="o", label=f"teacher forcing {ratio}")
ax.set(xlabel="epoch", ylabel="validation loss", title="Teacher-forcing ratio")
ax.legend()
plt.show()

# %% [markdown]
# ## Greedy decoding
# At inference time there is no target to feed: each step takes the most likely token and feeds it back,
# until `EOS`.

# %%
seq2seq = models[1.0]
sources = [source for source, _ in splits.test]
references = [target for _, target in splits.test]
predicted = tokenizer.decode(generate(seq2seq, encode_sources(sources, tokenizer, MAX_SOURCE), MAX_TARGET,
                                      BOS_ID, EOS_ID, PAD_ID).tokens)
for source, output, reference in list(zip(sources, predicted, references, strict=True))[:6]:
    print(f"{source:40} -> {output:12} (reference {reference})")
exact = np.mean([p == r for p, r in zip(predicted, references, strict=True)])
print(f"test exact match: {exact:.3f}")

# %% [markdown]
# ## Why one fixed context vector limits long inputs
# On dates the context is big enough: a date holds a few dozen bits, whatever its spelling. The limit
# shows on a task whose information grows with the input: **copying a string of random digits**. The
# decoder must write back every digit from the context alone, so the longer the string, the more must fit
# into the same `units` numbers (Cho et al. 2014 saw translation quality fall with sentence length for the
# same reason). Exact match by input length tells the story; a Bahdanau model (notebook 2) attends to the
# digit it copies and does not have this limit.

# %%
import random

rng = random.Random(SEED)
copy_pairs = []
for _ in range(COPY_EXAMPLES):
    text = "".join(rng.choice("0123456789") for _ in range(rng.randint(4, 32)))
    copy_pairs.append((text, text))
copy_train, copy_test = copy_pairs[:-500], copy_pairs[-500:]
copy_tokenizer = Tokenizer(train_sentencepiece([s for s, _ in copy_train], f"{workdir}/digits.model",
                                               model_type="char"))
copy_ds = make_dataset(copy_train, copy_tokenizer, 64, 34, 34, shuffle=True, seed=SEED)
keras.utils.set_random_seed(SEED)
copier = build_model("seq2seq-lstm", copy_tokenizer.vocab_size, preset="small", max_source_length=34)
copier.compile(optimizer=keras.optimizers.Adam(3e-3, clipnorm=1.0),
               loss=MaskedSparseCrossEntropy(pad_id=PAD_ID), metrics=[MaskedAccuracy(pad_id=PAD_ID)])
copier.fit(copy_ds, epochs=COPY_EPOCHS, verbose=0)
copies = copy_tokenizer.decode(generate(copier, encode_sources([s for s, _ in copy_test], copy_tokenizer, 34),
                                        34, BOS_ID, EOS_ID, PAD_ID).tokens)

lengths = np.array([len(s) for s, _ in copy_test])
correct = np.array([c == s for c, (s, _) in zip(copies, copy_test, strict=True)])
buckets = [(4, 10), (11, 17), (18, 24), (25, 32)]
by_length = [(lo, hi, correct[(lengths >= lo) & (lengths <= hi)].mean()) for lo, hi in buckets]
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar([f"{lo}-{hi}" for lo, hi, _ in by_length], [acc for _, _, acc in by_length])
ax.set(xlabel="digits to copy", ylabel="exact match", ylim=(0, 1), title="seq2seq without attention")
plt.show()
for lo, hi, acc in by_length:
    print(f"{lo:2d}-{hi:2d} digits: exact match {acc:.3f}")

# %% [markdown]
# ## What to try next
# - Copy with `preset="tiny"` (a context of 64 numbers instead of 128) and watch long inputs get worse;
#   with `build_model("bahdanau", ...)` instead, the long ones come back.
# - Train `seq2seq-gru` instead of `seq2seq-lstm`: a GRU has no cell state, so its context is `h` alone.
# - Drop the teacher-forcing ratio to 0.0: the decoder only ever sees its own guesses.
# - Go on to notebook 2, where attention removes the bottleneck.
