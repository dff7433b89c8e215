"""The Transformer's encoder written as an ONNX graph from its weights, as its decoder step is
(`export.transformer_step`).

tf2onnx turns `Transformer.encode` into 215 nodes for the Multi30k model's 3 encoder layers after
onnxruntime's optimizer, about 120 of them shape arithmetic (`Concat`, `Squeeze`, `Unsqueeze`, `Gather` of
shapes) around 30 matrix products; a batch-1 request pays for every node once, before its first output token
(BENCHMARKS.md (15)). Written from the weights:

- the embedding lookup scaled by sqrt(d_model) plus a slice of the position table, and the key mask, once;
- every dense layer one `Gemm` on `(batch * source_length, d_model)` rows; the self-attention's query, key
  and value together, split into heads by one `Reshape`, one `Transpose` and one `Split`, the queries
  then scaled by 1/sqrt(d_k) (not folded into their weights, as the step's are: int8 quantizes the three
  together with one scale);
- each decoder layer's cross-attention keys and values (the `encode` state entries) projected by one
  `Gemm` of both.

It computes what `Transformer.encode` computes, on the same entries, and the export validates it against
that Keras function like every graph (`export.validate`). `export.transformer_step.supports` says which
models it can write; the exporter converts the others with tf2onnx.

Shapes in comments: B = source sentences, S = source_length, d = d_model, H = heads, hd = head_dim.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import onnx

from export.config import OPSET
from export.transformer_step import (
    _MASKED,
    _array,
    _dense,
    _feed_forward,
    _layer_norm,
    _model,
    _positions,
    _qkv_weights,
    _start,
    _sublayer,
)
from keras_nlp_week4.models.transformer import cache_entries
from serving.contract import ENCODER_INPUT

__all__ = ["transformer_encoder_graph"]


def transformer_encoder_graph(model, description: Mapping, max_positions: int, opset: int = OPSET
                              ) -> onnx.ModelProto:
    """The encoder graph of `model` (a `Transformer`, see `supports`) with the inputs and outputs of
    `description` (`export.config.describe_graphs(...)["encoder"]`), for sources shorter than
    `max_positions`; standard operators only."""
    g, d, heads, hd, scale = _start(model, "encoder")
    embedding = model.source_embedding

    # Shared by all layers --------------------------------------------------------------------------
    visible = g.op("Not", [g.op("Equal", [ENCODER_INPUT, g.const("pad", np.int32(model.pad_id))])],
                   outputs=["encoder_padding_mask"])[0]  # (B, S) bool
    key_visible = g.op("Unsqueeze", [visible, g.const("axes_1_2", np.array([1, 2], np.int64))],
                       "key_visible")  # (B, 1, 1, S): every head, every query
    x = g.op("Gather", [g.const("embeddings", _array(embedding.embeddings)), ENCODER_INPUT], "token_embedding",
             axis=0)  # (B, S, d)
    if embedding.scale_by_sqrt_d_model:
        x = g.op("Mul", [x, g.const("sqrt_d_model", np.float32(math.sqrt(d)))], "scaled_embedding")
    length = g.op("Shape", [ENCODER_INPUT], "source_length", start=1, end=2)  # (1,) = [S]
    position = g.op("Slice", [g.const("positions", _positions(embedding, d, max_positions)),
                              g.const("zero_1d", np.array([0], np.int64)), length,
                              g.const("axis_0", np.array([0], np.int64))], "position")  # (S, d)
    x = g.op("Add", [x, position], "encoder_input_vectors")
    rows = g.const("rows", np.array([-1, d], np.int64))
    x = g.op("Reshape", [x, rows], "rows")  # (B * S, d): every dense layer is one Gemm
    masked = g.const("masked", np.float32(_MASKED))
    # 1/sqrt(d_k) on the queries, not folded into their weights: int8 quantizes the query, key and value
    # weights as one matrix with one scale, where queries shrunk 5.7x (d_k 32) would keep 2.5 bits fewer.
    scaled = g.const("query_scale", np.float32(scale))

    head_shapes: dict[int, str] = {}  # per number of parts, the shape (B, S, parts * H, hd), made once

    def split_heads(projected: str, outputs: int | list[str], hint: str) -> list[str]:
        """(B * S, parts * d) -> `parts` tensors (B, H, S, hd) (`outputs`: their names, or how many)."""
        parts = outputs if isinstance(outputs, int) else len(outputs)
        if parts not in head_shapes:
            head_shapes[parts] = g.op("Concat", [g.const("lead", np.array([-1], np.int64)), length,
                                                 g.const("tail", np.array([parts * heads, hd], np.int64))],
                                      f"heads_shape_{parts}", axis=0)
        split = g.op("Transpose", [g.op("Reshape", [projected, head_shapes[parts]])],
                     perm=[0, 2, 1, 3])  # (B, parts * H, S, hd)
        return g.op("Split", [split], hint, outputs=outputs, axis=1, num_outputs=parts)

    for i, layer in enumerate(model.encoder_layers):
        def self_attention(h, layer=layer, i=i):
            mha = layer.self_attention
            q, k, v = split_heads(_dense(g, h, *_qkv_weights(mha, d), f"e{i}_qkv"), 3, f"e{i}_heads")  # (B, H, S, hd)
            q = g.op("Mul", [q, scaled], f"e{i}_query")
            scores = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])], f"e{i}_scores")  # (B, H, S, S)
            weights = g.op("Softmax", [g.op("Where", [key_visible, scores, masked])], axis=-1)
            context = g.op("Transpose", [g.op("MatMul", [weights, v])], perm=[0, 2, 1, 3])  # (B, S, H, hd)
            return _dense(g, g.op("Reshape", [context, rows]), _array(mha.output_dense.kernel).reshape(-1, d),
                          _array(mha.output_dense.bias), f"e{i}_out")

        x = _sublayer(g, x, layer.self_attention_layer_norm, model.norm_first, self_attention, f"e{i}_self")
        x = _sublayer(g, x, layer.feed_forward_layer_norm, model.norm_first,
                      lambda h, layer=layer, i=i: _feed_forward(g, h, layer, f"e{i}_ffn"), f"e{i}_ffn")
    if model.encoder_norm is not None:
        x = _layer_norm(g, x, model.encoder_norm, "encoder_norm")

    # Each decoder layer's cross-attention keys and values, once per source ------------------------------
    for i, layer in enumerate(model.decoder_layers):
        kernel, bias = _qkv_weights(layer.cross_attention, d)
        kernel, bias = kernel[:, d:], bias[d:]  # the keys' and values' columns, (d, 2d)
        split_heads(_dense(g, x, kernel, bias, f"cross{i}_kv"), list(cache_entries("cross", i)),
                    f"cross{i}_heads")  # (B * S, 2d) -> (B, H, S, hd) each

    return _model(g, "encoder", description, opset, "keras-nlp-week4 export/transformer_encoder")

