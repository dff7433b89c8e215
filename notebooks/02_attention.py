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
# # 2. Attention: score, softmax, weighted sum
#
# **Lecture section:** "Attention" (Bahdanau, Cho and Bengio 2015; Luong, Pham and Manning 2015).
#
# Instead of one context vector for the whole source, the decoder builds a new one at every step: it
# **scores** its current state against every encoder hidden state, turns the scores into **weights**
# with a softmax, and takes the **weighted sum** of the encoder states:
#
# $$e_{t,s} = \mathrm{score}(h_t, \bar h_s), \qquad a_{t,s} = \frac{\exp e_{t,s}}{\sum_{s'} \exp e_{t,s'}},
# \qquad c_t = \sum_s a_{t,s} \bar h_s$$
#
# This notebook runs the lecture's table of score functions with the project's layers
# (`keras_nlp_week4.layers.LuongAttention`, `BahdanauAttention`), checks them against numpy, and ends with
# the attention map of a trained Bahdanau model on a date.

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

SMALL = os.environ.get("NOTEBOOK_SMALL") == "1"
TRAIN_EXAMPLES = 1000 if SMALL else 20000
EPOCHS = 2 if SMALL else 6

# %%
import tempfile

from keras_nlp_week4.quiet import import_tensorflow_quietly

import_tensorflow_quietly()

import keras
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

from keras_nlp_week4.layers.bahdanau_attention import BahdanauAttention
from keras_nlp_week4.layers.luong_attention import LuongAttention

keras.utils.set_random_seed(0)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# %% [markdown]
# ## The lecture's worked example
# Five encoder hidden states of four numbers each (one row per source word), and the attention weights
# of the lecture, `[0.8, 0.1, 0.03, 0.05, 0.02]`: the decoder attends mostly to the first word. The
# context vector is the weighted sum of the rows: its first entry is
# `0.8·0.1 + 0.1·0.5 + 0.03·0.9 + 0.05·0.2 + 0.02·0.4 = 0.175`. (The table's numbers are illustrative, the
# same as in the project's tests; the weights are the lecture's.)
#
# To get exactly these weights out of the project's **dot-score** layer, we need a decoder state `h_t`
# whose dot products with the rows are `log(weights) + constant` (the softmax ignores the constant): five
# linear equations in `h_t`'s four numbers and the constant, which `numpy.linalg.solve` answers.

# %%
H = np.array([[0.1, 0.2, 0.3, 0.4],     # hidden state of source word 1
              [0.5, 0.1, 0.0, 0.2],     # word 2
              [0.9, 0.3, 0.4, 0.1],     # word 3
              [0.2, 0.8, 0.6, 0.5],     # word 4
              [0.4, 0.5, 0.7, 0.9]],    # word 5
             dtype="float64")
lecture_weights = np.array([0.8, 0.1, 0.03, 0.05, 0.02])

# [H | 1] @ [h_t; c] = log(weights)
solution = np.linalg.solve(np.hstack([H, np.ones((5, 1))]), np.log(lecture_weights))
h_t = solution[:4]
print("decoder state h_t =", np.round(h_t, 4))

dot = LuongAttention(score="dot")
context, weights = dot(h_t[None].astype("float32"), H[None].astype("float32"))  # batch of one
weights, context = np.asarray(weights[0]), np.asarray(context[0])
print("attention weights:", np.round(weights, 4))
print("context vector   :", np.round(context, 4))

# The layer's numbers are the formula's numbers.
assert np.allclose(weights, lecture_weights, atol=1e-5)
assert np.allclose(weights, softmax(H @ h_t), atol=1e-5)
assert np.allclose(context, lecture_weights @ H, atol=1e-5)
print("numpy: sum_s a_s * h_s =", np.round(lecture_weights @ H, 4))
# By hand, first entry: 0.8*0.1 + 0.1*0.5 + 0.03*0.9 + 0.05*0.2 + 0.02*0.4 = 0.175
assert np.allclose(context, [0.175, 0.229, 0.296, 0.386], atol=1e-5)

# %% [markdown]
# ## The score functions side by side
# The lecture's table (Luong et al. 2015, section 3.1, and Bahdanau et al. 2015):
#
# | name | score |
# | --- | --- |
# | dot | $h_t^\top \bar h_s$ |
# | general | $h_t^\top W_a \bar h_s$ |
# | concat (Luong) | $v_a^\top \tanh(W_a [h_t; \bar h_s])$ |
# | location | $a_t = \mathrm{softmax}(W_a h_t)$, the source content is not looked at |
# | additive (Bahdanau) | $v_a^\top \tanh(W_a s_{t-1} + U_a h_j)$ |
#
# Same query, same keys; `general`, `concat`, `location` and `additive` have learned matrices, here freshly
# initialised, so only `dot` is meaningful before training. Each is checked against its numpy formula.

# %%
query, keys = h_t[None].astype("float32"), H[None].astype("float32")
layers = {
    "dot": LuongAttention(score="dot"),
    "general": LuongAttention(score="general"),
    "concat": LuongAttention(score="concat", units=8),
    "location": LuongAttention(score="location", max_source_length=5),
    "additive (Bahdanau)": BahdanauAttention(units=8),
}
table = {}
for name, layer in layers.items():
    _, w = layer(query, keys)
    table[name] = np.asarray(w[0])

W = lambda layer: np.asarray(layer.kernel)  # noqa: E731  (a Dense layer's matrix)
general, concat, location, additive = (layers[n] for n in ("general", "concat", "location", "additive (Bahdanau)"))
reference = {
    "dot": softmax(H @ h_t),
    "general": softmax((H @ W(general.keys_dense)) @ h_t),
    "concat": softmax(np.tanh(h_t @ W(concat.query_dense) + H @ W(concat.keys_dense)) @ W(concat.score_dense)[:, 0]),
    "location": softmax(h_t @ W(location.query_dense)),
    "additive (Bahdanau)": softmax(np.tanh(h_t @ W(additive.query_dense) + H @ W(additive.keys_dense)
                                           + np.asarray(additive.keys_dense.bias))
                                   @ W(additive.score_dense)[:, 0]),
}
for name, w in table.items():
    assert np.allclose(w, reference[name], atol=1e-5), name
    assert abs(w.sum() - 1) < 1e-5
    print(f"{name:20} {np.round(w, 3)}")

fig, ax = plt.subplots(figsize=(7, 2.8))
image = ax.imshow(np.stack(list(table.values())), cmap="viridis", vmin=0, vmax=1)
ax.set(yticks=range(len(table)), yticklabels=list(table), xticks=range(5),
       xticklabels=[f"word {i + 1}" for i in range(5)], title="attention weights by score function")
fig.colorbar(image)
plt.show()

# %% [markdown]
# ## Masking
# Sources in a batch have different lengths; the shorter ones are padded. Padding must get exactly zero
# weight, and the real positions share the whole mass. The mask is `True` for real tokens.

# %%
mask = np.array([[True, True, True, False, False]])  # the last two positions are padding
_, masked = dot(query, keys, mask=mask)
masked = np.asarray(masked[0])
print("weights with the last two positions masked:", np.round(masked, 4))
assert np.all(masked[3:] == 0.0)
assert np.allclose(masked[:3], lecture_weights[:3] / lecture_weights[:3].sum(), atol=1e-5)

# %% [markdown]
# ## A Bahdanau model's attention on a date
# Trained with the project's trainer (the same code as `make train MODEL=bahdanau`), then drawn with the
# project's plot: one row per output character, one column per input character. After training, each
# digit of the ISO date looks at the characters it copies or translates from.

# %%
from keras_nlp_week4.plots import plot_attention
from keras_nlp_week4.training.trainer import TrainConfig, train

run_dir = train(TrainConfig(task="dates", model="bahdanau", epochs=EPOCHS, max_train_examples=TRAIN_EXAMPLES,
                            out=tempfile.mkdtemp(prefix="bahdanau-notebook-"), verbose=0))
picture = plot_attention(run_dir, "Tuesday, September 27, 1994")
display(Image(filename=str(picture)))

# %% [markdown]
# ## What to try next
# - Change `lecture_weights` and watch `h_t` change: which decoder state asks for which word?
# - Scale `h_t` by 10: the dot-score softmax gets sharper (this is why the Transformer divides by
#   $\sqrt{d_k}$, notebook 3).
# - Train `make train MODEL=luong-general` and compare its attention map with Bahdanau's.
