"""`onnx/generate_text.onnx`: text in, text out in one graph, for runtimes with onnxruntime-extensions.

onnxruntime-extensions' `SentencepieceTokenizer` and `SentencepieceDecoder` (domain `ai.onnx.contrib`)
run the export's own `tokenizer.model` (held in the graph, in their `model` attributes) around the
beam-search graph (`export.search_graph`, inlined), so Python, C++, C#, Java and any other binding that
registers the extensions' library translates with one `session.run` and no tokenizer code of its own:

    inputs   text string (batch,), max_length int32 (), beam_size int32 (), length_penalty float32 ()
    outputs  text string (batch,), scores float32 (batch,)

beam_size 1 with length_penalty 0 is greedy decoding. The source ids are made as the serving runtime
makes them (`serving.tokenizer.SentencePieceTokenizer.encode_sources`: cut to max_source_length - 1,
EOS, PAD to the longest row) and each output row is cut at its first EOS, without PAD and BOS, before it
is decoded (`strip_special_ids`); `export.validate` compares the texts with `python -m serving`'s on the
whole test split. Only these two operators are not standard ONNX (besides the step's fused attention
in an export made with `--fused-attention`): onnxruntime-web does not run them
(its page tokenizes in JavaScript, `serving/static/sentencepiece.js`, and runs `beam_search.onnx`).

The decoder takes one sequence at a time (`[n]` or `[1, n]`), so the rows are decoded in a `Loop`.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from export.config import EXTENSIONS_OPS, IR_VERSION
from export.onnx_check import check_onnx, uses_onnxruntime_ops
from export.search_graph import GraphBuilder, inline_graph
from serving.contract import (
    BEAM_SIZE,
    ENCODER_INPUT,
    LENGTH_PENALTY,
    MAX_LENGTH,
    MIN_LENGTH,
    OUTPUT_TEXT,
    SCORES,
    TEXT,
    TOKENS,
)

__all__ = ["CUSTOM_DOMAIN", "generate_text_graph", "write_generate_text"]

CUSTOM_DOMAIN = EXTENSIONS_OPS["domain"]  # onnxruntime-extensions' operators
_INT64_MAX = np.iinfo(np.int64).max


def generate_text_graph(search: onnx.ModelProto, tokenizer_model: bytes, special_ids: Mapping[str, int],
                        max_source_length: int, description: Mapping) -> onnx.ModelProto:
    """The text graph around `search` (`beam_search.onnx`); `description` is its entry of
    `export.config.describe_graphs`."""
    main = GraphBuilder(itertools.count(), "text/")
    pad, bos, eos = (int(special_ids[k]) for k in ("pad", "bos", "eos"))
    i64 = np.int64

    # Source ids, as `encode_sources` makes them ------------------------------------------------------------
    content, splits = main.op(
        "SentencepieceTokenizer", TEXT, main.const([0], i64), main.const([0.0], np.float32),
        main.const([False], np.bool_), main.const([False], np.bool_), main.const([False], np.bool_),
        outputs=2, domain=CUSTOM_DOMAIN,
        # base64: the tokenizer kernel decodes it first (raw bytes are only its fallback).
        model=base64.b64encode(tokenizer_model))  # content (pieces of all rows,) int32, splits (batch + 1,)
    starts = main.op("Slice", splits, main.const([0], i64), main.const([-1], i64))  # (B,)
    lengths = main.op("Sub", main.op("Slice", splits, main.const([1], i64), main.const([_INT64_MAX], i64)), starts)
    kept = main.op("Min", lengths, main.const(max_source_length - 1, i64))  # (B,) pieces kept before EOS
    longest = main.op("ReduceMax", main.op("Add", kept, main.const(1, i64)), keepdims=0)
    column = main.op("Unsqueeze", main.op("Range", main.const(0, i64), longest, main.const(1, i64)),
                     main.const([0], i64))  # (1, L)
    kept = main.op("Unsqueeze", kept, main.const([1], i64))  # (B, 1)
    # One PAD after the pieces: every out-of-row position reads it (and an all-empty batch has one piece).
    padded_content = main.op("Concat", content, main.const([pad], np.int32), axis=0)
    position = main.op("Min", main.op("Add", main.op("Unsqueeze", starts, main.const([1], i64)), column),
                       main.op("Size", content))  # (B, L)
    pieces = main.op("Gather", padded_content, position, axis=0)
    tail = main.op("Where", main.op("Equal", column, kept), main.const(eos, np.int32), main.const(pad, np.int32))
    encoder_input = main.op("Where", main.op("Less", column, kept), pieces, tail)  # (B, L) int32

    # The search --------------------------------------------------------------------------------------------
    # Without `min_length` (the text graph's callers decode to EOS): 0, no rule.
    nodes, weights, found = inline_graph(search, "search/", {ENCODER_INPUT: encoder_input, MAX_LENGTH: MAX_LENGTH,
                                                             BEAM_SIZE: BEAM_SIZE, LENGTH_PENALTY: LENGTH_PENALTY,
                                                             MIN_LENGTH: main.const(0, np.int32)})
    main.nodes += nodes
    main.initializers += weights
    main.op("Identity", found[SCORES], outputs=[SCORES])
    tokens = found[TOKENS]  # (B, T)

    # Each row cut at its first EOS, without PAD and BOS, then decoded ------------------------------------------
    body = GraphBuilder(itertools.count(), "detokenize/")
    row = body.op("Gather", tokens, "row/index", axis=0)  # (T,)
    width = body.op("Size", row)
    position = body.op("Range", body.const(0, i64), width, body.const(1, i64))
    is_eos = body.op("Equal", row, body.const(eos, np.int32))
    first_eos = body.op("ReduceMin", body.op("Where", is_eos, position, width), keepdims=0)
    keep = body.op("And", body.op("Less", position, first_eos),
                   body.op("And", body.op("Not", body.op("Equal", row, body.const(pad, np.int32))),
                           body.op("Not", body.op("Equal", row, body.const(bos, np.int32)))))
    ids = body.op("Cast", body.op("Compress", row, keep, axis=0), to=TensorProto.INT64)
    text = body.op("SentencepieceDecoder", ids, domain=CUSTOM_DOMAIN, model=tokenizer_model)  # (1,)
    body_graph = helper.make_graph(
        body.nodes, "detokenize",
        [helper.make_tensor_value_info("row/index", TensorProto.INT64, []),
         helper.make_tensor_value_info("row/cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(body.op("Identity", "row/cond"), TensorProto.BOOL, []),
         helper.make_tensor_value_info(text, TensorProto.STRING, None)],
        initializer=body.initializers)
    batch = main.op("Squeeze", main.op("Slice", main.op("Shape", TEXT), main.const([0], i64), main.const([1], i64)))
    decoded = main.op("Loop", batch, main.const(True, np.bool_), outputs=1, body=body_graph)  # (B, 1)
    main.op("Reshape", decoded, main.const([-1], i64), outputs=[OUTPUT_TEXT])

    def value(entry: Mapping) -> onnx.ValueInfoProto:
        elem = TensorProto.STRING if entry["dtype"] == "string" else helper.np_dtype_to_tensor_dtype(
            np.dtype(entry["dtype"]))
        return helper.make_tensor_value_info(entry["name"], elem, entry["shape"])

    graph = helper.make_graph(main.nodes, "generate_text", [value(e) for e in description["inputs"]],
                              [value(e) for e in description["outputs"]], initializer=main.initializers)
    opsets = [o for o in search.opset_import if o.domain != CUSTOM_DOMAIN] + [helper.make_opsetid(CUSTOM_DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = IR_VERSION
    return model


def write_generate_text(export_dir: Path, graphs: Mapping[str, dict], tokenizer: str,
                        special_ids: Mapping[str, int], max_source_length: int) -> Path:
    """Composes `generate_text_graph` from the export's beam-search graph and tokenizer, saves and checks it."""
    export_dir = Path(export_dir)
    description = graphs["generate_text"]
    model = generate_text_graph(onnx.load(str(export_dir / graphs["beam_search"]["file"])),
                                (export_dir / tokenizer).read_bytes(), special_ids, max_source_length,
                                description)
    model.doc_string = "keras-nlp-week4 generate_text graph (see config.json; needs onnxruntime-extensions)"
    model.producer_name = "keras-nlp-week4 export/text_graph"
    helper.set_model_props(model, {"graph": "generate_text"})
    path = export_dir / description["file"]
    onnx.save(model, str(path))
    check_onnx(path, custom_domains=(CUSTOM_DOMAIN,), onnxruntime_ops=uses_onnxruntime_ops(model))
    return path
