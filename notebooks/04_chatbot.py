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
# # 4. The homework: a Korean Transformer chatbot
#
# **Lecture section:** the homework, a Transformer that answers Korean everyday questions, trained on the
# Korean chatbot data (Song 2018, `ChatbotData.csv`: 11,823 question/answer pairs).
#
# The question is the source, the answer the target: the same encoder-decoder as translation. The model is
# the project's `Transformer`, trained by the project's trainer (what `make train TASK=chatbot` runs): BPE
# subwords learned from the training answers and questions, the paper's learning-rate warm-up, label
# smoothing, early stopping on validation loss.

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
# Where the data is: a path relative to the working directory (the repository root for `make notebooks`)
# or absolute. In Colab, upload ChatbotData.csv (Files pane) and set "/content/ChatbotData.csv"; any file
# of the same format (columns Q,A,label) will do.
CHATBOT_CSV = "../shared/data/chatbot/ChatbotData.csv"
# A slice of the file keeps this to a few minutes on a laptop CPU; None trains on all 11,823 rows (the
# recipe `make train TASK=chatbot`: about 20 minutes on 2 cores, much better replies).
ROWS = 600 if SMALL else 4000
PRESET = "tiny" if SMALL else "small"
EPOCHS = 4 if SMALL else 20  # early stopping may end it sooner
WARMUP_STEPS = 30 if SMALL else None  # None: the task's default (1,000 steps)

# %%
import csv
import tempfile
from pathlib import Path

from keras_nlp_week4.quiet import import_tensorflow_quietly

import_tensorflow_quietly()

import matplotlib.pyplot as plt
from IPython.display import Image, display

from keras_nlp_week4.evaluation import decode_texts
from keras_nlp_week4.runs import RunMetrics, load_run
from keras_nlp_week4.training.trainer import TrainConfig, train

workdir = Path(tempfile.mkdtemp(prefix="chatbot-notebook-"))

# %% [markdown]
# ## The data
# A CSV with columns `Q,A,label` (label 0 everyday, 1 breakup, 2 love). If the file is not there (a clone
# without the shared data), a small stand-in of the same format is written so the notebook still runs;
# its answers are templates, so expect template-like replies.

# %%
source = Path(CHATBOT_CSV)
if source.is_file():
    with open(source, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    if ROWS:
        body = body[:: max(1, len(body) // ROWS)][:ROWS]  # rows from all over the file
    print(f"{source}: using {len(body)} of {len(rows) - 1} rows")
else:
    topics = ["영화", "음악", "여행", "운동", "공부", "요리", "친구", "날씨", "커피", "주말"]
    frames = [("{} 좋아해?", "{} 좋아해요."), ("{} 어때?", "{} 좋은 것 같아요."), ("{} 하고 싶어", "{} 해보세요."),
              ("{} 때문에 힘들어", "{} 때문에 힘드셨군요."), ("{} 추천해줘", "{} 추천해 드릴게요."),
              ("{} 이야기 하자", "{} 이야기 좋아요.")]
    header = ["Q", "A", "label"]
    body = [[q.format(t), a.format(t), "0"] for q, a in frames for t in topics] * 10
    print(f"{source.resolve()} is missing, so {len(body)} stand-in rows are used instead (template replies).\n"
          "For the real data: get ChatbotData.csv (Song 2018, github.com/songys/Chatbot_data), upload it "
          "(in Colab: the Files pane, or `from google.colab import files; files.upload()`, which saves it "
          "in /content) and set CHATBOT_CSV in the parameters cell to its path, e.g. "
          '"/content/ChatbotData.csv".')
data = workdir / "chat.csv"
with open(data, "w", encoding="utf-8", newline="") as f:
    csv.writer(f).writerows([header, *body])
for question, answer, _ in body[:5]:
    print(f"Q: {question}\nA: {answer}")

# %% [markdown]
# ## Training
# `train` is what `make train TASK=chatbot` calls: it splits the rows 90/5/5 (no question in two splits),
# learns a 4,000-piece BPE vocabulary on the training split, trains with `model.fit`, keeps the model with
# the lowest validation loss, and evaluates it on the held-out test split.

# %%
run_dir = train(TrainConfig(task="chatbot", data=str(data), preset=PRESET, epochs=EPOCHS,
                            vocab_size=800 if SMALL else None, warmup_steps=WARMUP_STEPS,
                            out=str(workdir / "run"), verbose=0))
metrics = RunMetrics.read(run_dir).to_json()
print({k: round(v, 3) for k, v in metrics.items() if k in ("training_seconds", "test_perplexity",
                                                          "test_token_accuracy", "test_chrf_greedy")})
display(Image(filename=str(run_dir / "plots" / "training_curves.png")))

with open(run_dir / "training_log.csv") as f:
    log = list(csv.DictReader(f))
assert float(log[-1]["loss"]) < float(log[0]["loss"]), "training did not lower the loss"

# %% [markdown]
# ## Asking it things
# Greedy decoding always takes the most likely next piece, so the same question always gets the same
# reply. Sampling draws each piece from the softmax (temperature 0.8, nucleus top-p 0.9): replies vary
# with the seed and are sometimes livelier, sometimes broken.

# %%
questions = ["영화 볼래?", "오늘 너무 피곤해", "배고파", "심심해", "내일 시험이야", "여자친구랑 헤어졌어",
             "좋아하는 사람이 생겼어"]
run = load_run(run_dir, compile=False)
greedy = decode_texts(run, questions, "greedy")
sampled = decode_texts(run, questions, "sample", temperature=0.8, top_p=0.9, seed=0)
for question, reply, sample in zip(questions, greedy, sampled, strict=True):
    print(f"{question}\n  greedy : {reply}\n  sampled: {sample}")
assert len(greedy) == len(sampled) == len(questions)
assert decode_texts(run, questions, "greedy") == greedy  # greedy is deterministic
assert decode_texts(run, questions, "sample", temperature=0.8, top_p=0.9, seed=0) == sampled  # so is a seed

# %% [markdown]
# ## What the model attends to
# The cross-attention of the last decoder layer for the first question: one row per reply piece, one
# column per question piece (Hangul is drawn in romanised form when no Korean font is installed).

# %%
from keras_nlp_week4.plots import plot_attention

display(Image(filename=str(plot_attention(run_dir, questions[0], workdir / "attention.png"))))
plt.close("all")

# %% [markdown]
# ## What to try next
# - Train on the whole file (`ROWS = None`) and compare the replies.
# - Sample with `temperature=1.5`, then `0.3`: where do replies stop making sense?
# - Beam search: `decode_texts(run, questions, "beam", beam_size=4)` prefers short, safe replies.
# - Export the model and serve it (notebook 5 does it for the dates model).
