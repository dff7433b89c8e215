"""Pictures of a trained run (matplotlib, PNG): where the attention looks, and how training went.

* `plot_attention`: cross-attention weights for one input, source tokens x output tokens. An RNN
  with attention (Bahdanau et al. 2015; Luong et al. 2015) has one map, its alignment alpha_{t,j};
  the Transformer (Vaswani et al. 2017, section 3.2.2) has one per decoder layer and head, drawn as
  a grid (rows: layers, columns: heads). The output is generated greedily and each row is the
  attention of the step that produced that token.
* `plot_training_curves`: loss and token accuracy per epoch, train vs validation, from the run's
  ``training_log.csv``.

Hangul labels need a font with Hangul glyphs. Any such font matplotlib knows is used, as are the
NanumGothic fonts of the optional ``koreanize-matplotlib`` package; without one, Hangul is
written in Revised Romanization (``안녕`` -> ``annyeong``) with a warning, not as empty boxes.

Example:

>>> plot_attention("artifacts/dates-bahdanau", "sept. 3, 2001")  # doctest: +SKIP
PosixPath('artifacts/dates-bahdanau/plots/attention.png')
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import logging
from pathlib import Path

import numpy as np

from keras_nlp_week4.errors import UserError

__all__ = ["attention_figure", "attention_map", "plot_attention", "plot_training_curves",
           "romanize_hangul", "training_curves_figure"]

log = logging.getLogger(__name__)

_HANGUL_FIRST, _HANGUL_LAST = 0xAC00, 0xD7A3
# Revised Romanization of Korean, letter by letter (no sound-change rules).
_INITIALS = ("g", "kk", "n", "d", "tt", "r", "m", "b", "pp", "s", "ss", "", "j", "jj", "ch", "k", "t",
             "p", "h")
_VOWELS = ("a", "ae", "ya", "yae", "eo", "e", "yeo", "ye", "o", "wa", "wae", "oe", "yo", "u", "wo",
           "we", "wi", "yu", "eu", "ui", "i")
_FINALS = ("", "k", "k", "k", "n", "n", "n", "t", "l", "k", "m", "l", "l", "l", "p", "l", "m", "p",
           "p", "t", "t", "ng", "t", "t", "k", "t", "p", "t")


def romanize_hangul(text: str) -> str:
    """Writes Hangul syllables in Revised Romanization, letter by letter; other characters stay.

    Example:

    >>> romanize_hangul("안녕, Tom")
    'annyeong, Tom'
    """
    out = []
    for char in text:
        code = ord(char)
        if _HANGUL_FIRST <= code <= _HANGUL_LAST:
            index = code - _HANGUL_FIRST
            out.append(_INITIALS[index // 588] + _VOWELS[(index % 588) // 28] + _FINALS[index % 28])
        else:
            out.append(char)
    return "".join(out)


def _is_hangul(char: str) -> bool:
    code = ord(char)
    return (0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F
            or _HANGUL_FIRST <= code <= _HANGUL_LAST)


def _needs_cjk_font(texts) -> bool:
    return any(_is_hangul(char) for text in texts for char in text)


@functools.lru_cache(maxsize=1)
def _hangul_font() -> str | None:
    """The family name of a font that has Hangul glyphs, or None."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    spec = importlib.util.find_spec("koreanize_matplotlib")
    if spec is not None and spec.origin:
        for path in sorted(Path(spec.origin).parent.rglob("*.ttf")):
            font_manager.fontManager.addfont(str(path))
    for entry in font_manager.fontManager.ttflist:
        # matplotlib's "Last Resort" font maps every character to a box: it covers nothing.
        if entry.name.lower().startswith("last resort"):
            continue
        try:
            charmap = FT2Font(entry.fname).get_charmap()
        except (OSError, RuntimeError, ValueError):
            continue
        if charmap.get(ord("가")) and charmap.get(ord("A")):
            return entry.name
    return None


def _label_texts(texts: list[str]) -> tuple[list[str], list[str] | None]:
    """The labels to draw and the font families to draw them with (None: matplotlib's default)."""
    if not _needs_cjk_font(texts):
        return texts, None
    font = _hangul_font()
    if font is not None:
        return texts, [font, "DejaVu Sans"]
    log.warning("warning: no font with Hangul glyphs found (install fonts-nanum or the "
                "koreanize-matplotlib package); Korean labels are romanized")
    return [romanize_hangul(text) for text in texts], None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------------- attention


def attention_map(run, text: str) -> dict:
    """Generates the output for `text` greedily and collects the cross-attention of every step.

    Args:
        run: a loaded run (`keras_nlp_week4.runs.load_run`).
        text: the input.

    Returns:
        ``{"source_tokens", "target_tokens", "output", "weights"}``: the source pieces (EOS
        included), the generated pieces (EOS included when generated), the output text, and
        weights of shape ``(layers, heads, target_tokens, source_tokens)``, each row summing to 1.

    Raises:
        UserError: the model has no attention (plain seq2seq) or the text is empty.
    """
    from keras_nlp_week4.data.pipeline import encode_sources
    from keras_nlp_week4.decoding import generate

    if not text or not text.strip():
        raise UserError("give a non-empty input text (TEXT=...)")
    if not run.model.has_attention:
        raise UserError(f"model {run.config.model!r} has no attention to plot (the plain seq2seq "
                        "squeezes the source into one vector); plot a bahdanau, luong-* or transformer run")
    ids = run.config.special_ids
    encoder_input = encode_sources([text], run.tokenizer, run.config.max_source_length)
    result = generate(run.model, encoder_input, run.config.max_target_length, ids["bos"], ids["eos"],
                      ids["pad"], method="greedy", return_attention=True)
    tokens = [int(t) for t in result.tokens[0]]
    if ids["eos"] in tokens:
        tokens = tokens[: tokens.index(ids["eos"]) + 1]
    weights = np.asarray(result.attention[0, : len(tokens)], dtype=np.float64)  # (tgt, layers, heads, src)
    weights = np.transpose(weights, (1, 2, 0, 3))  # (layers, heads, tgt, src)
    source = [run.tokenizer.id_to_piece(int(i)) for i in encoder_input[0]]
    return {"source_tokens": source,
            "target_tokens": [run.tokenizer.id_to_piece(t) for t in tokens],
            "output": run.tokenizer.decode([tokens])[0],
            "weights": weights[..., : len(source)]}


def attention_figure(found: dict, text: str, model_name: str = "model"):
    """Draws an `attention_map` result: one heatmap per layer and head (rows: layers, columns: heads).

    Args:
        found: the dict returned by `attention_map`.
        text: the input, for the title.
        model_name: the model's name, for the title.

    Returns:
        A matplotlib Figure (close it with ``matplotlib.pyplot.close``).
    """
    weights = found["weights"]
    layers, heads, tgt_len, src_len = weights.shape
    labels, family = _label_texts(found["source_tokens"] + found["target_tokens"]
                                  + [text, found["output"]])
    source_labels, target_labels = labels[:src_len], labels[src_len: src_len + tgt_len]
    title_text, title_output = labels[-2], labels[-1]
    plt = _pyplot()
    cell = 0.32  # inches per token, so every label has room
    width = max(2.5, 1.2 + cell * src_len)
    height = max(2.0, 1.0 + cell * tgt_len)
    rc = {"font.family": family} if family else {}
    with plt.rc_context(rc):
        fig, axes = plt.subplots(layers, heads, figsize=(width * heads, height * layers + 0.8),
                                 squeeze=False, layout="constrained")
        for layer in range(layers):
            for head in range(heads):
                ax = axes[layer][head]
                image = ax.imshow(weights[layer, head], cmap="viridis", vmin=0.0, vmax=1.0,
                                  aspect="auto")
                # Every panel has the same tokens: label them on the outer panels only.
                bottom, left = layer == layers - 1, head == 0
                ax.set_xticks(range(src_len), source_labels if bottom else [], rotation=90, fontsize=8)
                ax.set_yticks(range(tgt_len), target_labels if left else [], fontsize=8)
                if layers * heads > 1:
                    ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=9)
                if head == 0:
                    ax.set_ylabel("output token")
                if layer == layers - 1:
                    ax.set_xlabel("source token")
        fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
        kind = "cross-attention per layer and head" if layers * heads > 1 else "attention"
        fig.suptitle(f"{model_name} {kind}\n{title_text!r} -> {title_output!r}", fontsize=10)
    return fig


def _save(fig, out_path: Path) -> Path:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=80, bbox_inches="tight")
    _pyplot().close(fig)
    return out_path


def plot_attention(run_or_dir, text: str, out_path: str | Path | None = None) -> Path:
    """Draws the cross-attention heatmap(s) of a run for one input and saves them as a PNG.

    Args:
        run_or_dir: a run directory or a loaded run.
        text: the input to translate / answer.
        out_path: the PNG to write (default: ``RUN/plots/attention.png``).

    Returns:
        The path of the written PNG.
    """
    from keras_nlp_week4.runs import Run, load_run

    run = run_or_dir if isinstance(run_or_dir, Run) else load_run(Path(run_or_dir), compile=False)
    fig = attention_figure(attention_map(run, text), text, run.config.model)
    out_path = Path(out_path) if out_path else Path(run.path) / "plots" / "attention.png"
    return _save(fig, out_path)


# ------------------------------------------------------------------------------- training curves


def _read_log(path: Path) -> dict[str, list[float]]:
    if not path.is_file():
        raise UserError(f"{path} not found; it is written by training, so train this run first")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise UserError(f"{path} has no epochs yet; let training finish at least one")
    columns: dict[str, list[float]] = {}
    for name in rows[0]:
        try:
            columns[name] = [float(row[name]) for row in rows]
        except (TypeError, ValueError):
            continue
    return columns


def plot_training_curves(run_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Plots loss and accuracy per epoch, train vs validation, from ``RUN/training_log.csv``.

    Args:
        run_dir: the run directory.
        out_path: the PNG to write (default: ``RUN/plots/training_curves.png``).

    Returns:
        The path of the written PNG.
    """
    run_dir = Path(run_dir)
    fig = training_curves_figure(_read_log(run_dir / "training_log.csv"), run_dir.name)
    return _save(fig, Path(out_path) if out_path else run_dir / "plots" / "training_curves.png")


def training_curves_figure(columns: dict[str, list[float]], title: str = ""):
    """One panel per metric of a Keras training log (``loss``, ``masked_accuracy``, ...), each with
    the train curve and, when logged, the validation curve (``val_<metric>``).

    Args:
        columns: the log's numeric columns by name; ``epoch`` (0-based) is the x axis if present.
        title: the figure's title.

    Returns:
        A matplotlib Figure.
    """
    # A resumed run appends to the log; the epoch column keeps counting, so it is the x axis.
    epochs = [int(e) + 1 for e in columns.get("epoch", range(len(next(iter(columns.values())))))]
    # `minutes` is the clock, not a metric; a validation-only metric (val_bleu) gets a panel of its own.
    metrics = [name for name in columns if name not in ("epoch", "minutes") and not name.startswith("val_")]
    metrics += [name[4:] for name in columns if name.startswith("val_") and name[4:] not in columns]
    plt = _pyplot()
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(5 * max(1, len(metrics)), 3.6),
                             squeeze=False)
    for ax, name in zip(axes[0], metrics, strict=False):
        if name in columns:
            ax.plot(epochs, columns[name], marker="o", label="train")
        if f"val_{name}" in columns:
            ax.plot(epochs, columns[f"val_{name}"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"training curves: {title}", fontsize=10)
    return fig


def plot_validation_bleu(run_dirs: list[str | Path], out_path: str | Path, title: str = "") -> Path:
    """Time to quality: validation BLEU after each epoch against wall-clock minutes of training, one line
    per run (the `val_bleu` and `minutes` columns of each ``training_log.csv``; see
    `training.progress`). The kept epoch (the best validation BLEU) is marked.

    Args:
        run_dirs: run directories whose logs have both columns (others are skipped with a warning).
        out_path: the PNG to write.
        title: the figure's title.

    Returns:
        The path of the written PNG.

    Raises:
        UserError: when no run has both columns.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = 0
    for run_dir in map(Path, run_dirs):
        columns = _read_log(run_dir / "training_log.csv")
        if "val_bleu" not in columns or "minutes" not in columns:
            log.warning("warning: %s logs no val_bleu/minutes; left out of the picture", run_dir)
            continue
        minutes, bleu = columns["minutes"], columns["val_bleu"]
        (line,) = ax.plot(minutes, bleu, marker="o", markersize=3, label=run_dir.name)
        best = int(np.argmax(bleu))
        ax.plot([minutes[best]], [bleu[best]], marker="*", markersize=12, color=line.get_color())
        drawn += 1
    if not drawn:
        plt.close(fig)
        raise UserError("no run logs val_bleu and minutes; train with a task that measures validation "
                        "BLEU (TASK=multi30k)")
    ax.set_xlabel("training time (minutes of model.fit)")
    ax.set_ylabel("validation BLEU (greedy, lowercased)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or "validation BLEU against training time (star: the kept epoch)", fontsize=10)
    return _save(fig, Path(out_path))
