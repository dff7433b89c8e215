"""Keras reference outputs for every exported graph, saved as `reference.npz` (needs TensorFlow).

The inputs are held-out text (the run's validation split for the per-graph cases, its test split for
greedy generation), encoded as in training. Per-graph cases cover several batch sizes and source lengths
with padding: a single sequence, a batch of mixed lengths padded to its longest, and a batch padded to
`max_source_length`; the decoder step is checked at several indices, on a state produced by the Keras
model itself (teacher-forced with the validation targets), and with a cache longer than
`max_target_length` to exercise the dynamic `max_length` axis.

The expected outputs are the Keras model's own, computed eagerly (`model.encode`, `model.decode_step`) and,
for generation, with `keras_nlp_week4.decoding.generate` (what `evaluate` reports). With these arrays
a machine without TensorFlow can check any onnxruntime provider (`export.parity`).

Layout of the `.npz` (keys are "/"-separated; `export.parity.ReferenceData` reads them):
    meta                                 JSON string: cases, special ids, max lengths
    case/<graph>/<case>/in/<input>       graph inputs of one case
    case/<graph>/<case>/out/<output>     the Keras outputs for them
    case/<graph>/<case>/text             the source texts of its rows
    greedy/<chunk>/encoder_input         test-split sources, `chunk_size` rows per chunk
    greedy/<chunk>/tokens                Keras greedy ids (batch, max_target_length), PAD after EOS
    greedy/sources, greedy/targets       the test split's texts
An array equal to one stored earlier (the encoder state fed to every decoder-step case of a layout) is
stored once; meta["aliases"] maps the other keys to it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_nlp_week4.data.pipeline import encode_sources
from keras_nlp_week4.decoding import generate
from keras_nlp_week4.runs import Run
from serving.contract import ATTENTION, LOGITS, numpy_dtype, updated_name, zero_state

__all__ = ["CHUNK_SIZE", "build_reference", "keras_outputs"]

CHUNK_SIZE = 256
_DEDUPLICATE_BYTES = 1024


class _Arrays(dict):
    """The `.npz` contents; large arrays equal to an earlier one become aliases of it."""

    def __init__(self):
        super().__init__()
        self.aliases: dict[str, str] = {}
        self._by_content: dict[str, str] = {}

    def __setitem__(self, key: str, value) -> None:
        value = np.asarray(value)
        if value.nbytes >= _DEDUPLICATE_BYTES:
            digest = hashlib.sha256(f"{value.dtype}{value.shape}".encode() + value.tobytes()).hexdigest()
            if digest in self._by_content:
                self.aliases[key] = self._by_content[digest]
                return
            self._by_content[digest] = key
        super().__setitem__(key, value)


def _select(pairs: Sequence[tuple[str, str]], tokenizer, count: int, offset: int) -> list[tuple[str, str]]:
    """`count` pairs of varied source length: evenly spaced through the pairs sorted by length."""
    lengths = [len(ids) for ids in tokenizer.encode([source for source, _ in pairs])]
    ordered = [pair for _, pair in sorted(zip(lengths, pairs, strict=True))]
    if len(ordered) <= count:
        return list(ordered)
    picks = np.linspace(0, len(ordered) - 1, count).round().astype(int)
    return [ordered[(i + offset) % len(ordered)] for i in picks]


def _pad_to(ids: np.ndarray, width: int, pad: int) -> np.ndarray:
    return np.pad(ids, ((0, 0), (0, max(0, width - ids.shape[1]))), constant_values=pad)


def _as_numpy(values: dict) -> dict[str, np.ndarray]:
    return {name: np.asarray(value) for name, value in values.items()}


def keras_outputs(model, graph: str, inputs: dict[str, np.ndarray], graphs: dict, special_ids: dict
                  ) -> dict[str, np.ndarray]:
    """The Keras model's outputs for one graph's inputs, named as the graph's outputs."""
    if graph == "encoder":
        values = model.encode(inputs["encoder_input"])
    elif graph == "decoder_step":
        state_names = [e["name"] for e in graphs["decoder_step"]["inputs"][2:]]
        logits, updates, attention = model.decode_step(
            inputs["token_ids"], inputs["index"], {name: inputs[name] for name in state_names})
        values = {LOGITS: logits, **{updated_name(k): v for k, v in updates.items()}}
        if attention is not None:
            values[ATTENTION] = attention
    elif graph == "generate":
        result = generate(model, inputs["encoder_input"], int(inputs["max_length"]), special_ids["bos"],
                          special_ids["eos"], special_ids["pad"])
        tokens = result.tokens
        width = int(inputs["max_length"])  # the graph always returns max_length columns
        values = {"tokens": _pad_to(tokens, width, special_ids["pad"])}
    else:
        raise ValueError(f"unknown graph {graph!r}")
    # Named and ordered as the export describes the graph; greedy decoding is also the reference of an
    # export without the `generate` graph.
    names = [e["name"] for e in graphs[graph]["outputs"]] if graph in graphs else list(values)
    values = _as_numpy(values)
    return {name: values[name] for name in names}


def _decoder_cases(model, name: str, encoder_input: np.ndarray, targets: list[list[int]], graphs: dict,
                   state: list[dict], special_ids: dict, max_length: int, indices: Sequence[int]):
    """Runs the Keras decoder teacher-forced and yields (case name, step inputs) at `indices`."""
    bos, eos, pad = special_ids["bos"], special_ids["eos"], special_ids["pad"]
    batch = encoder_input.shape[0]
    values = _as_numpy(model.encode(encoder_input))
    values.update(zero_state(state, batch, encoder_input.shape[1], max_length))
    # Teacher forcing: BOS, then the target ids, then EOS; PAD once a row has ended (as greedy feeds).
    inputs = np.full((batch, max_length), pad, np.int32)
    for row, ids in enumerate(targets):
        sequence = [bos, *ids, eos][:max_length]
        inputs[row, : len(sequence)] = sequence
    state_names = [e["name"] for e in graphs["decoder_step"]["inputs"][2:]]
    for index in range(max(indices) + 1):
        feeds = {"token_ids": inputs[:, index], "index": np.array(index, np.int32),
                 **{n: values[n] for n in state_names}}
        if index in indices:
            yield f"{name}_index{index}", feeds
        _, updates, _ = model.decode_step(feeds["token_ids"], feeds["index"],
                                          {n: feeds[n] for n in state_names})
        values.update(_as_numpy(updates))


def build_reference(run: Run, graphs: dict, state: list[dict], path: Path,
                    max_test_examples: int | None = None) -> dict:
    """Computes the Keras outputs of every case and of greedy decoding on the test split; writes `path`.

    Cases are stored for the graphs in `graphs` (an export may leave out `generate`); greedy decoding on
    the test split always is.

    Returns:
        The metadata stored under "meta".
    """
    model, tokenizer = run.model, run.tokenizer
    special = dict(run.config.special_ids)
    max_source, max_target = run.config.max_source_length, run.config.max_target_length
    held_out = run.pairs("validation") or run.pairs("test")
    arrays = _Arrays()
    cases = []

    def add(graph: str, case: str, inputs: dict, texts: list[str], note: str) -> None:
        inputs = {e["name"]: np.asarray(inputs[e["name"]], numpy_dtype(e["dtype"]))
                  for e in graphs[graph]["inputs"]}
        outputs = keras_outputs(model, graph, inputs, graphs, special)
        prefix = f"case/{graph}/{case}"
        for kind, values in (("in", inputs), ("out", outputs)):
            for name, value in values.items():
                arrays[f"{prefix}/{kind}/{name}"] = value
        arrays[f"{prefix}/text"] = np.array(texts, dtype=np.str_)
        cases.append({"graph": graph, "case": case, "note": note,
                      "inputs": list(inputs), "outputs": list(outputs)})

    # (name, batch size, pad the batch to max_source_length, decoder cache length)
    layouts = [("batch1", 1, False, max_target), ("batch4_mixed", 4, False, max_target + 4),
               ("batch16_padded", 16, True, max_target)]
    for offset, (name, batch, pad_to_max, cache_length) in enumerate(layouts):
        pairs = _select(held_out, tokenizer, batch, offset)
        texts = [source for source, _ in pairs]
        encoder_input = encode_sources(texts, tokenizer, max_source)
        if pad_to_max:
            encoder_input = _pad_to(encoder_input, max_source, special["pad"])
        shape = f"batch {encoder_input.shape[0]}, source_length {encoder_input.shape[1]}"
        add("encoder", name, {"encoder_input": encoder_input}, texts, shape)
        targets = tokenizer.encode([target for _, target in pairs])
        indices = sorted({0, 1, max_target // 2, max_target - 1})
        for case, feeds in _decoder_cases(model, name, encoder_input, targets, graphs, state, special,
                                          cache_length, indices):
            add("decoder_step", case, feeds, texts,
                f"{shape}, max_length {cache_length}, index {int(feeds['index'])}")
        generate_lengths = (max_target, 3) if batch > 1 else (max_target,)
        for max_length in generate_lengths if "generate" in graphs else ():  # an export may leave it out
            add("generate", f"{name}_max{max_length}",
                {"encoder_input": encoder_input, "max_length": np.array(max_length, np.int32)},
                texts, f"{shape}, max_length {max_length}")

    test = run.pairs("test")[:max_test_examples] if max_test_examples else run.pairs("test")
    chunks = []
    for start in range(0, len(test), CHUNK_SIZE):
        texts = [source for source, _ in test[start:start + CHUNK_SIZE]]
        encoder_input = encode_sources(texts, tokenizer, max_source)
        tokens = keras_outputs(model, "generate", {"encoder_input": encoder_input,
                                                   "max_length": np.array(max_target, np.int32)},
                               graphs, special)["tokens"]
        chunk = f"chunk{len(chunks):03d}"
        arrays[f"greedy/{chunk}/encoder_input"] = encoder_input
        arrays[f"greedy/{chunk}/tokens"] = tokens
        chunks.append(chunk)
    arrays["greedy/sources"] = np.array([s for s, _ in test], dtype=np.str_)
    arrays["greedy/targets"] = np.array([t for _, t in test], dtype=np.str_)
    meta = {"cases": cases, "greedy_chunks": chunks, "chunk_size": CHUNK_SIZE,
            "special_ids": special, "max_source_length": max_source, "max_target_length": max_target,
            "aliases": arrays.aliases, "held_out_split": "validation", "greedy_split": "test", "test_examples": len(test),
            "keras_reference": "model.encode / model.decode_step eagerly; greedy with "
                               "keras_nlp_week4.decoding.generate"}
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(path, **arrays)
    return meta
