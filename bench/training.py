"""Training throughput (tokens/s in steady state) of our models against equally sized peers.

Every model trains with `train_on_batch` on the same random batch (no padding), the same Adam optimizer,
the same masked cross-entropy and `jit_compile=False`. Within a round the models take turns one step
each, so the ratio ours/peer compares back-to-back steps in one process even on a loaded machine; a
figure is the median over rounds. "Tokens" are source plus target positions per step.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import keras
import numpy as np

from keras_nlp_week4.models.registry import build_model
from keras_nlp_week4.models.transformer import TRANSFORMER_PRESETS

__all__ = ["TRAINING_CONFIGS", "keras_hub_available", "keras_hub_transformer", "mha_transformer",
           "run_training"]

# (name, preset, batch, source length, target length[, vocabulary size]). Without a vocabulary size a
# configuration uses `run_training`'s `vocab_size` (64: the output projection, softmax and tied embedding
# gradient are then almost free, so those rows measure the layers alone). The Multi30k row is the real
# thing: the recipe's model and batch at its real 8,000 pieces, Transformers only, with a typical bucket's
# lengths.
MULTI30K_CONFIG = ("multi30k compact b128 24/24, vocabulary 8,000", "compact", 128, 24, 24, 8000)
TRAINING_CONFIGS = {
    "full": [("dates tiny b64 48/12 (vocabulary 64)", "tiny", 64, 48, 12),
             ("small b32 64/64 (vocabulary 64)", "small", 32, 64, 64), MULTI30K_CONFIG],
    "quick": [("dates tiny b64 48/12 (vocabulary 64)", "tiny", 64, 48, 12)],
}


def keras_hub_available() -> bool:
    try:
        import keras_hub  # noqa: F401
    except Exception:  # ImportError, or a keras-hub built for another Keras
        return False
    return True


def _inputs():
    return (keras.Input((None,), dtype="int32", name="encoder_input"),
            keras.Input((None,), dtype="int32", name="decoder_input"))


def keras_hub_transformer(vocab_size: int, d_model: int, num_heads: int, num_encoder_layers: int,
                          num_decoder_layers: int, d_ff: int, dropout: float, **_) -> keras.Model:
    """The same Transformer built from keras-hub's `TransformerEncoder`/`TransformerDecoder` (post-norm,
    sinusoidal positions, one shared embedding, like ours)."""
    import keras_hub

    source, target = _inputs()
    embedding = keras.layers.Embedding(vocab_size, d_model, mask_zero=True)
    positions = keras_hub.layers.SinePositionEncoding()

    def embed(ids):
        x = embedding(ids) * (d_model ** 0.5)
        return keras.layers.Dropout(dropout)(x + positions(x))

    x = embed(source)
    for _ in range(num_encoder_layers):
        x = keras_hub.layers.TransformerEncoder(d_ff, num_heads, dropout=dropout)(x)
    y = embed(target)
    for _ in range(num_decoder_layers):
        y = keras_hub.layers.TransformerDecoder(d_ff, num_heads, dropout=dropout)(y, x)
    logits = keras.layers.Dense(vocab_size, name="logits")(y)
    return keras.Model((source, target), logits, name="keras_hub_transformer")


def mha_transformer(vocab_size: int, d_model: int, num_heads: int, num_encoder_layers: int,
                    num_decoder_layers: int, d_ff: int, dropout: float, **_) -> keras.Model:
    """The same Transformer from `keras.layers.MultiHeadAttention` (the TensorFlow tutorial's layout)."""
    from keras_nlp_week4.layers.positional_encoding import SinusoidalPositionalEncoding

    source, target = _inputs()
    embedding = keras.layers.Embedding(vocab_size, d_model, mask_zero=True)
    positions = SinusoidalPositionalEncoding()
    layers = keras.layers

    def embed(ids):
        x = embedding(ids) * (d_model ** 0.5)
        return layers.Dropout(dropout)(x + positions(x))

    def attention(query, value, causal=False):
        mha = layers.MultiHeadAttention(num_heads, d_model // num_heads, dropout=dropout)
        return layers.LayerNormalization()(query + layers.Dropout(dropout)(
            mha(query, value, use_causal_mask=causal)))

    def feed_forward(x):
        h = layers.Dense(d_model)(layers.Dense(d_ff, activation="relu")(x))
        return layers.LayerNormalization()(x + layers.Dropout(dropout)(h))

    x = embed(source)
    for _ in range(num_encoder_layers):
        x = feed_forward(attention(x, x))
    y = embed(target)
    for _ in range(num_decoder_layers):
        y = feed_forward(attention(attention(y, y, causal=True), x))
    logits = layers.Dense(vocab_size, name="logits")(y)
    return keras.Model((source, target), logits, name="mha_transformer")


def _batch(batch: int, source_length: int, target_length: int, vocab_size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    source = rng.integers(4, vocab_size, (batch, source_length), dtype=np.int32)
    target = rng.integers(4, vocab_size, (batch, target_length + 1), dtype=np.int32)
    return (source, target[:, :-1]), target[:, 1:]


def _compiled(model: keras.Model, inputs) -> keras.Model:
    model(inputs)  # build before compile: the same eager build for every family
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
                  jit_compile=False)
    return model


def _builders(preset: str, vocab_size: int, source_length: int,
              with_rnns: bool = True) -> dict[str, Callable[[], keras.Model]]:
    sizes = {**TRANSFORMER_PRESETS[preset], "vocab_size": vocab_size}
    builders = {"ours transformer": lambda: build_model("transformer", vocab_size, preset),
                # keras-hub's model has its own output Dense: the same architecture as ours untied.
                "ours transformer (untied)": lambda: build_model("transformer", vocab_size, preset,
                                                                 share_embeddings=False)}
    if keras_hub_available():
        builders["keras-hub transformer"] = lambda: keras_hub_transformer(**sizes)
    builders["keras MHA transformer"] = lambda: mha_transformer(**sizes)
    if not with_rnns:
        return builders
    rnn = {"preset": preset, "max_source_length": source_length}
    builders["ours rnn (lstm, no attention)"] = lambda: build_model("seq2seq-lstm", vocab_size, **rnn)
    builders["ours rnn (lstm, luong attention)"] = lambda: build_model("luong-general", vocab_size, **rnn)
    return builders


def run_training(configs: list[tuple], rounds: int = 5, steps: int = 10, warmup: int = 3,
                 vocab_size: int = 64, log: Callable[[str], None] = print,
                 only: tuple[str, ...] | dict[str, tuple[str, ...]] | None = None) -> list[dict]:
    """Tokens/s per model and configuration, and the ratios ours/peer (median over rounds).

    `only`: the model names to run (default: all; "ours transformer" is always needed for the ratios),
    or a dict from a configuration's preset to its names (a preset not in it runs all).

    Returns:
        one dict per configuration: {"config", "preset", "batch", "source_length", "target_length",
        "models": {name: {"tokens_per_s", "step_ms", "parameters", "runs"}}, "ratios": {...}}.
    """
    results = []
    default_vocab_size = vocab_size
    for name, preset, batch, source_length, target_length, *vocab in configs:
        vocab_size = vocab[0] if vocab else default_vocab_size
        # A real-vocabulary step costs about ten times a vocabulary-64 one: fewer steps per round.
        config_steps = max(2, steps // 3) if vocab else steps
        inputs, labels = _batch(batch, source_length, target_length, vocab_size)
        tokens = batch * (source_length + target_length)
        models = {}
        wanted = only.get(preset) if isinstance(only, dict) else only
        for label, build in _builders(preset, vocab_size, source_length, with_rnns=not vocab).items():
            if wanted is not None and label not in wanted:
                continue
            keras.utils.set_random_seed(0)
            model = _compiled(build(), inputs)
            for _ in range(warmup):
                model.train_on_batch(inputs, labels)
            models[label] = model
            log(f"training {name}: {label} built and warmed up")
        runs: dict[str, list[float]] = {label: [] for label in models}
        labels_order = list(models)
        for _ in range(rounds):
            seconds = dict.fromkeys(models, 0.0)
            for step in range(config_steps):
                # Models take turns step by step (starting with a different one each step), so load
                # from other processes falls on all of them alike.
                shift = step % len(labels_order)
                for label in labels_order[shift:] + labels_order[:shift]:
                    started = time.perf_counter()
                    models[label].train_on_batch(inputs, labels)  # returns numpy: the step has finished
                    seconds[label] += time.perf_counter() - started
            for label in models:
                runs[label].append(tokens * config_steps / seconds[label])
        entry = {"config": name, "preset": preset, "batch": batch, "source_length": source_length,
                 "target_length": target_length, "vocab_size": vocab_size, "models": {}, "ratios": {}}
        for label, values in runs.items():
            median = float(np.median(values))
            entry["models"][label] = {"tokens_per_s": round(median, 1),
                                      "step_ms": round(1000 * tokens / median, 2),
                                      "parameters": int(models[label].count_params()),
                                      "runs": [round(v, 1) for v in values]}
        pairs = [("ours transformer", "keras-hub transformer"), ("ours transformer", "keras MHA transformer"),
                 ("ours transformer (untied)", "keras-hub transformer"),
                 ("ours rnn (lstm, luong attention)", "ours rnn (lstm, no attention)")]
        for mine, peer in pairs:
            if mine in runs and peer in runs:
                # per-round ratios: each compares two back-to-back measurements
                ratios = np.array(runs[mine]) / np.array(runs[peer])
                entry["ratios"][f"{mine} / {peer}"] = round(float(np.median(ratios)), 3)
                entry.setdefault("ratio_ranges", {})[f"{mine} / {peer}"] = [
                    round(float(ratios.min()), 3), round(float(ratios.max()), 3)]
        log(f"training {name}: " + ", ".join(f"{k} {v['tokens_per_s']:.0f} tok/s"
                                             for k, v in entry["models"].items()) + f" | {entry['ratios']}")
        results.append(entry)
        del models
        keras.backend.clear_session()
    return results
