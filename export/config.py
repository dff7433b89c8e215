"""A data-driven description of every exported graph, built from `model.state_specs()` (TF-free).

Like optimum's `OnnxConfig`, one table says, for each graph, its inputs and outputs with names, dtypes and
shapes, where a shape entry is an int or a symbolic axis ("batch", "source_length", "max_length"). The
ONNX exporter names graph inputs/outputs and dynamic axes from it, the SavedModel signatures use the same
names, the validator builds feeds from it and the serving runtime reads it from `config.json`.

Only the standard library and `serving` (its `contract` owns the names, dtypes and shapes, its
`export_config` the `ExportConfig` schema and the one `FORMAT_VERSION` that export and runtime share) are
imported: the validator's
reference-only path and the serving runtime use this module on machines without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from serving.contract import (
    ATTENTION,
    BEAM_SIZE,
    ENCODER_INPUT,
    INDEX,
    LENGTH_PENALTY,
    LOGITS,
    MAX_LENGTH,
    MIN_LENGTH,
    OUTPUT_TEXT,
    RESERVED_NAMES,
    SCORES,
    SYMBOLIC_AXES,
    TEXT,
    TOKEN_IDS,
    TOKENS,
    TOP_IDS,
    TOP_LOG_PROBS,
    concrete_shape,
    numpy_dtype,
    updated_name,
)
from serving.export_config import FORMAT_VERSION, ExportConfig

__all__ = [
    "FORMAT_VERSION",
    "COMPOSED_GRAPHS",
    "EXTENSIONS_OPS",
    "GRAPH_FILES",
    "IR_VERSION",
    "OPSET",
    "SYMBOLIC_AXES",
    "build_export_config",
    "concrete_shape",
    "describe_graphs",
    "numpy_dtype",
    "saved_model_signatures",
    "tensor",
]

OPSET = 18
# The ONNX IR version every written graph declares: opset 18's (ONNX 1.13), what tf2onnx writes too. The
# onnx package would stamp its own newest (14 with onnx 1.23), which onnxruntime-node and onnxruntime-web
# 1.30 refuse ("max supported IR version: 13").
IR_VERSION = 8
GRAPH_FILES = {"encoder": "onnx/encoder.onnx", "decoder_step": "onnx/decoder_step.onnx",
               "generate": "onnx/generate.onnx", "beam_search": "onnx/beam_search.onnx",
               "generate_text": "onnx/generate_text.onnx", "decoder_step_top_k": "onnx/decoder_step_top_k.onnx"}
# Graphs composed from the others (`export.search_graph`, `export.text_graph`) rather than converted.
COMPOSED_GRAPHS = ("beam_search", "generate_text", "decoder_step_top_k")
# A graph that needs operators outside standard ONNX names them in its description: the domain and the
# library a runtime registers to run them (onnxruntime-extensions' tokenizer operators).
EXTENSIONS_OPS = {"domain": "ai.onnx.contrib", "library": "onnxruntime-extensions"}


def tensor(name: str, dtype: str, shape: Sequence) -> dict:
    """One input/output entry: {"name", "dtype", "shape"}, shape entries ints or symbolic axis names."""
    numpy_dtype(dtype)  # refuse a dtype the runtime cannot feed
    for dim in shape:
        if isinstance(dim, str) and dim not in SYMBOLIC_AXES:
            raise ValueError(f"{name}: unknown symbolic axis {dim!r} (use one of {SYMBOLIC_AXES})")
    return {"name": name, "dtype": dtype, "shape": [d if isinstance(d, str) else int(d) for d in shape]}


def describe_graphs(state: Sequence[Mapping], vocab_size: int,
                    attention: tuple[int, int] | None) -> dict[str, dict]:
    """Inputs and outputs of the encoder, decoder-step, greedy-generation and beam-search graphs.

    Args:
        state: the decoding-state entries, as `StateSpec.to_json()` dicts.
        vocab_size: width of the logits.
        attention: `(layers, heads)` of the cross-attention the decoder step returns, or None for a
            model without attention.

    Returns:
        {"encoder": G, "decoder_step": G, "generate": G, "beam_search": G, "generate_text": G},
        G = {"file", "inputs", "outputs"[, "custom_ops"]} in the order of the export contract.
    """
    state = list(state)
    names = [entry["name"] for entry in state]
    reserved = RESERVED_NAMES | {updated_name(n) for n in names}
    clashes = [n for n in names if n in reserved]
    if clashes or len(set(names)) != len(names):
        raise ValueError(f"state entry names must be unique and not reserved graph names, got {names}")
    encoder_input = tensor(ENCODER_INPUT, "int32", ("batch", "source_length"))
    step_outputs = [tensor(LOGITS, "float32", ("batch", vocab_size))]
    if attention is not None:
        step_outputs.append(tensor(ATTENTION, "float32", ("batch", *attention, "source_length")))
    step_outputs += [tensor(updated_name(e["name"]), e["dtype"], e["shape"]) for e in state if e["updated"]]
    return {
        "encoder": {
            "file": GRAPH_FILES["encoder"],
            "inputs": [encoder_input],
            # The encoder's batch is the source sentences: an entry's "source_batch" is its "batch".
            "outputs": [tensor(e["name"], e["dtype"], ["batch" if d == "source_batch" else d for d in e["shape"]])
                        for e in state if e["source"] == "encode"],
        },
        "decoder_step": {
            "file": GRAPH_FILES["decoder_step"],
            "inputs": [tensor(TOKEN_IDS, "int32", ("batch",)), tensor(INDEX, "int32", ()),
                       *(tensor(e["name"], e["dtype"], e["shape"]) for e in state)],
            "outputs": step_outputs,
        },
        "generate": {
            "file": GRAPH_FILES["generate"],
            "inputs": [encoder_input, tensor(MAX_LENGTH, "int32", ())],
            "outputs": [tensor(TOKENS, "int32", ("batch", "max_length"))],
        },
        # `export.search_graph`: the runtime's beam search in one graph (beam_size 1, length_penalty 0:
        # greedy); tokens trimmed to the longest output, as the numpy search returns them.
        "beam_search": {
            "file": GRAPH_FILES["beam_search"],
            "inputs": [encoder_input, tensor(MAX_LENGTH, "int32", ()), tensor(BEAM_SIZE, "int32", ()),
                       tensor(LENGTH_PENALTY, "float32", ()), tensor(MIN_LENGTH, "int32", ())],
            "outputs": [tensor(TOKENS, "int32", ("batch", "max_length")), tensor(SCORES, "float32", ("batch",)),
                        *([tensor(ATTENTION, "float32", ("batch", "max_length", *attention, "source_length"))]
                          if attention is not None else [])],
        },
        # `export.search_graph.top_k_step_graph`: the step with each row's `beam_size` best log-probabilities
        # (log-softmax and top-k in the graph) in place of its logits, for the runtime's beam search.
        "decoder_step_top_k": {
            "file": GRAPH_FILES["decoder_step_top_k"],
            "inputs": [tensor(TOKEN_IDS, "int32", ("batch",)), tensor(INDEX, "int32", ()),
                       *(tensor(e["name"], e["dtype"], e["shape"]) for e in state), tensor(BEAM_SIZE, "int32", ())],
            "outputs": [tensor(TOP_LOG_PROBS, "float32", ("batch", "beam_size")),
                        tensor(TOP_IDS, "int64", ("batch", "beam_size")), *step_outputs[1:]],
        },
        # `export.text_graph`: tokenizer, encoder, search and detokenizer in one graph.
        "generate_text": {
            "file": GRAPH_FILES["generate_text"],
            "inputs": [tensor(TEXT, "string", ("batch",)), tensor(MAX_LENGTH, "int32", ()),
                       tensor(BEAM_SIZE, "int32", ()), tensor(LENGTH_PENALTY, "float32", ())],
            "outputs": [tensor(OUTPUT_TEXT, "string", ("batch",)), tensor(SCORES, "float32", ("batch",))],
            "custom_ops": dict(EXTENSIONS_OPS),
        },
    }


def saved_model_signatures(graphs: Mapping[str, dict]) -> dict[str, dict]:
    """The SavedModel's signatures: the three id-level graphs under the same names, plus text in/out."""
    text = tensor("text", "string", ("batch",))
    return {
        "generate_text": {"serving_default": True, "inputs": [text], "outputs": [text],
                          "note": "greedy, up to max_target_length tokens; tokenizer inside "
                                  "(load with `import tensorflow_text` first)"},
        "encode": {"inputs": graphs["encoder"]["inputs"], "outputs": graphs["encoder"]["outputs"]},
        "decode_step": {"inputs": graphs["decoder_step"]["inputs"],
                        "outputs": graphs["decoder_step"]["outputs"]},
        "generate": {"inputs": graphs["generate"]["inputs"], "outputs": graphs["generate"]["outputs"]},
    }


def build_export_config(run_config, state: Sequence[Mapping], graphs: Mapping[str, dict],
                        reference_cases: int, test_examples: int, quantized: dict | None = None,
                        opset: int = OPSET, in_place_updates: Sequence[str] = (),
                        saved_model_graphs: Mapping[str, dict] | None = None,
                        operators: str = "standard") -> ExportConfig:
    """The export's `config.json` (`serving.export_config.ExportConfig`), complete: everything a runtime
    needs without TensorFlow.

    Args:
        run_config: the run's `keras_nlp_week4.runs.RunConfig` (`Run.config`).
        state: the decoding-state entries (`StateSpec.to_json()`).
        graphs: `describe_graphs(...)`, or the part of it the export has (`export_run(graphs=...)`).
        reference_cases, test_examples: what `reference.npz` holds (`export.reference.build_reference`).
        quantized: `export.quantize.quantize_graphs(...)` when int8 graphs were written.
        in_place_updates: updated entries the decoder step may write into its input's buffer
            (`export.transformer_step.in_place_updates`: its caches; none for a converted step).
        opset: the ONNX opset the graphs were converted with.
        operators: "standard" (standard ONNX operators only) or "onnxruntime" (also onnxruntime's own,
            `com.microsoft`: the Transformer step's fused attention).
        saved_model_graphs: all of `describe_graphs(...)` when the export has the SavedModel, whose
            signatures follow them (it has every computation, whatever ONNX graphs were left out); None
            when it has none.
    """
    return ExportConfig(
        format_version=FORMAT_VERSION,
        task=run_config.task,
        model=run_config.model,
        family=run_config.family,
        special_ids=dict(run_config.special_ids),
        max_source_length=run_config.max_source_length,
        max_target_length=run_config.max_target_length,
        vocab_size=run_config.vocab_size,
        exact_match=run_config.exact_match,
        opset=int(opset),
        tokenizer="tokenizer.model",
        source_encoding="sentencepiece ids of the text, cut to max_source_length - 1, then EOS; "
                        "rows padded with pad to the longest in the batch",
        state=[dict(entry) for entry in state],
        cache_layout=_cache_layout(state),
        graphs=dict(graphs),
        saved_model=None if saved_model_graphs is None else
        {"dir": "saved_model", "signatures": saved_model_signatures(saved_model_graphs)},
        reference="reference.npz",
        reference_cases=int(reference_cases),
        test_examples=int(test_examples),
        quantized=quantized,
        in_place_updates=list(in_place_updates),
        operators=None if operators == "standard" else operators,  # absent means standard
    )


def _cache_layout(state: Sequence[Mapping]) -> dict[str, str]:
    """What each state entry holds; entries `source` "cache" are zeros the caller allocates."""
    layout = {}
    for entry in state:
        origin = "zeros made by the caller" if entry["source"] == "cache" else "made by the encoder"
        layout[entry["name"]] = entry.get("description") or origin
    layout["decoding"] = ("index 0: token_ids = BOS; at step t feed the previous output token with "
                          "index = t and every state entry, then replace each updated entry by its "
                          "`<name>_out`; stop at EOS or max_length steps")
    return layout
