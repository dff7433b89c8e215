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
# # 3. The Transformer, piece by piece
#
# **Lecture section:** "Attention Is All You Need" (Vaswani et al. 2017): positional encoding (3.5),
# scaled dot-product attention (3.2.1), multi-head attention (3.2.2), masks (3.2.3), residual connections
# and layer normalisation (3.1), and the decoder's incremental key/value cache used at inference.
#
# Each piece is the project's own layer (`keras_nlp_week4.layers`), run on small tensors and checked
# against the formula written in numpy. Nothing here trains, so it runs in seconds.

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

SMALL = os.environ.get("NOTEBOOK_SMALL") == "1"  # nothing here is slow; kept for symmetry

# %%
from keras_nlp_week4.quiet import import_tensorflow_quietly

import_tensorflow_quietly()

import keras
import matplotlib.pyplot as plt
import numpy as np

from keras_nlp_week4.layers.masks import (
    causal_mask,
    merge_padding_and_attention_masks,
    padding_mask,
)
from keras_nlp_week4.layers.multi_head_attention import MultiHeadAttention
from keras_nlp_week4.layers.positional_encoding import SinusoidalPositionalEncoding
from keras_nlp_week4.layers.scaled_dot_product_attention import (
    scaled_dot_product_attention,
    scaled_dot_product_scores,
)
from keras_nlp_week4.layers.transformer_encoder_layer import TransformerEncoderLayer
from keras_nlp_week4.models.transformer import Transformer

keras.utils.set_random_seed(0)
np.set_printoptions(precision=3, suppress=True)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# %% [markdown]
# ## Positional encoding
# Attention has no notion of order, so each position gets a fixed pattern added to its embedding:
#
# $$PE_{(pos, 2i)} = \sin(pos / 10000^{2i/d_{model}}), \qquad PE_{(pos, 2i+1)} = \cos(pos / 10000^{2i/d_{model}})$$
#
# Low dimensions oscillate fast, high ones slowly: every position gets a distinct code, and the code of
# `pos + k` is a linear function of the code of `pos`.

# %%
length, d_model = 50, 64
pe = np.asarray(SinusoidalPositionalEncoding()(np.zeros((1, length, d_model), "float32")))[0]
pos = np.arange(length)[:, None]
i = np.arange(d_model // 2)[None, :]
formula = np.zeros((length, d_model))
formula[:, 0::2] = np.sin(pos / 10000 ** (2 * i / d_model))
formula[:, 1::2] = np.cos(pos / 10000 ** (2 * i / d_model))
assert np.allclose(pe, formula, atol=1e-5)
print("max |layer - formula| =", np.abs(pe - formula).max())

fig, ax = plt.subplots(figsize=(8, 3))
image = ax.imshow(pe.T, aspect="auto", cmap="RdBu")
ax.set(xlabel="position", ylabel="dimension", title="sinusoidal positional encoding (d_model = 64)")
fig.colorbar(image)
plt.show()

# %% [markdown]
# ## Scaled dot-product attention, step by step
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}\right) V$$
#
# A four-token sentence, `d_k = 4`, `d_v = 2`. In self-attention Q, K and V are all projections of the same tokens;
# here we write them down directly so every intermediate can be printed.

# %%
tokens = ["I", "love", "this", "movie"]
Q = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 2.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 0.0]])
K = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
V = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 2.0]])  # d_v = 2: one row per token
d_k = Q.shape[-1]

step_qk = Q @ K.T
print("1. Q K^T\n", step_qk)
step_scaled = step_qk / np.sqrt(d_k)
print(f"2. divided by sqrt(d_k) = {np.sqrt(d_k):g}\n", step_scaled)
step_weights = softmax(step_scaled)
print("3. softmax over each row (each query's weights over the keys)\n", step_weights)
step_output = step_weights @ V
print("4. times V\n", step_output)

as32 = lambda a: a[None].astype("float32")  # noqa: E731  (a batch of one)
scores = np.asarray(scaled_dot_product_scores(as32(Q), as32(K)))[0]
context, weights = scaled_dot_product_attention(as32(Q), as32(K), as32(V))
assert np.allclose(scores, step_scaled, atol=1e-6)
assert np.allclose(np.asarray(weights)[0], step_weights, atol=1e-6)
assert np.allclose(np.asarray(context)[0], step_output, atol=1e-6)
print("the project's scaled_dot_product_attention gives the same four steps")

# %% [markdown]
# ## Multi-head attention: split, attend, merge
# Each of `h` heads projects the tokens into its own `d_k = d_model / h` dimensional space, attends
# there, and the heads' outputs are concatenated and projected back:
#
# $$\mathrm{MultiHead}(Q,K,V) = \mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_h) W^O, \qquad
# \mathrm{head}_i = \mathrm{Attention}(Q W_i^Q, K W_i^K, V W_i^V)$$
#
# The project's layer stores `W^Q` as one `(d_model, heads, d_k)` tensor; we redo the computation in
# numpy head by head from its weights.

# %%
num_heads, head_dim = 2, 2
x = np.random.default_rng(0).normal(size=(1, 4, 4)).astype("float32")  # (batch, tokens, d_model)
mha = MultiHeadAttention(num_heads=num_heads, key_dim=head_dim)
attended = mha(x, x, return_attention_scores=True)  # AttentionOutput: output, scores, cache
output, head_weights = attended.output, attended.scores
print("output", tuple(output.shape), "weights (batch, heads, query, key)", tuple(head_weights.shape))

w = {name: (np.asarray(d.kernel), np.asarray(d.bias))
     for name, d in (("q", mha.query_dense), ("k", mha.key_dense), ("v", mha.value_dense),
                     ("o", mha.output_dense))}
heads = []
for h in range(num_heads):
    q = x[0] @ w["q"][0][:, h] + w["q"][1][h]  # (tokens, d_k): this head's projection
    k = x[0] @ w["k"][0][:, h] + w["k"][1][h]
    v = x[0] @ w["v"][0][:, h] + w["v"][1][h]
    a = softmax(q @ k.T / np.sqrt(head_dim))
    assert np.allclose(a, np.asarray(head_weights)[0, h], atol=1e-5)
    heads.append(a @ v)
merged = np.concatenate(heads, axis=-1)  # Concat(head_1, head_2): (tokens, heads * d_k)
manual = merged @ w["o"][0].reshape(num_heads * head_dim, -1) + w["o"][1]
assert np.allclose(manual, np.asarray(output)[0], atol=1e-5)
print("split -> attend per head -> concat -> W^O reproduces the layer's output")

# %% [markdown]
# ## Masks
# **Padding mask**: a query must not attend to padding (id 0). **Look-ahead (causal) mask**: in the
# decoder, position *t* must not see positions after *t*, or training would let it copy the answer.
# The decoder's self-attention uses both at once.

# %%
ids = np.array([[5, 7, 9, 0, 0]])  # three real tokens, two of padding
pad = np.asarray(padding_mask(ids))  # (batch, key): True = a real token
look_ahead = np.asarray(causal_mask(5))  # (query, key): True = may attend
both = np.asarray(merge_padding_and_attention_masks(pad, look_ahead))[0]
assert pad.tolist() == [[True, True, True, False, False]]
assert np.array_equal(look_ahead, np.tril(np.ones((5, 5), bool)))
assert np.array_equal(both, np.tril(np.ones((5, 5), bool)) & pad[0][None, :])

fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, (title, mask) in zip(axes, (("padding", np.repeat(pad, 5, axis=0)), ("look-ahead", look_ahead),
                                    ("both", both)), strict=True):
    ax.imshow(mask, cmap="Greys_r", vmin=0, vmax=1)
    ax.set(title=title, xlabel="key position", ylabel="query position")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Residual connection and layer normalisation
# Each sub-layer (attention, feed-forward) is wrapped as `LayerNorm(x + Sublayer(x))` (the paper's
# post-norm). An encoder layer is two such blocks; we rebuild one from its parts and compare.

# %%
layer = TransformerEncoderLayer(d_model=4, num_heads=2, d_ff=8, dropout=0.0)
out = np.asarray(layer(x))
attention = layer.self_attention(x, x).output
x1 = layer.self_attention_layer_norm(x + attention)  # LayerNorm(x + MultiHead(x, x, x))
ffn = layer.feed_forward_outer(layer.feed_forward_inner(x1))  # max(0, x W1 + b1) W2 + b2
x2 = np.asarray(layer.feed_forward_layer_norm(x1 + ffn))  # LayerNorm(x1 + FFN(x1))
assert np.allclose(out, x2, atol=1e-5)
print("per-token mean after LayerNorm:", np.asarray(x2).mean(-1).round(6), "(about 0)")
print("per-token std after LayerNorm: ", np.asarray(x2).std(-1).round(3), "(about 1)")

# %% [markdown]
# ## The decoder at inference: one step at a time, with a key/value cache
# Training runs the decoder over the whole target at once (with the look-ahead mask). Generation feeds
# one token per step; re-running the decoder over the whole prefix each step would be quadratic, so each
# self-attention layer keeps the keys and values of the tokens already seen in a **cache** and only
# computes the new token's. The outputs must be the same: we feed the same five tokens both ways.

# %%
model = Transformer.from_preset("tiny", source_vocab_size=40)
model.build()
source = np.array([[5, 9, 13, 3]], "int32")
target_in = np.array([[2, 7, 11, 19, 23]], "int32")  # BOS and four more tokens
full = np.asarray(model((source, target_in)))  # (batch, 5, vocab): the whole prefix at once

state = {**model.encode(source), **model.initial_cache(1, target_in.shape[1])}
steps = []
for t in range(target_in.shape[1]):
    logits, updates, _ = model.decode_step(target_in[:, t], t, state)
    state.update(updates)  # the cache now holds keys/values of tokens 0..t
    steps.append(np.asarray(logits))
stepwise = np.stack(steps, axis=1)
print("max |full decoder - cached steps| =", np.abs(full - stepwise).max())
assert np.allclose(full, stepwise, atol=1e-4)

# %% [markdown]
# ## What to try next
# - Remove the `/ sqrt(d_k)` in step 2 with `d_k = 512`: the softmax saturates to one-hot.
# - Give the multi-head layer 4 heads of size 1: what can a one-dimensional head attend to?
# - Feed the cached decoder a wrong token at step 2 and see that only steps 2 onwards change.
