"""The Transformer's decoder step written as an ONNX graph from its weights (export format 2).

tf2onnx turns `Transformer.decode_step` into about 340 nodes for 3 decoder layers, most of them shape
arithmetic around a handful of matrix products, and on these model sizes onnxruntime spends a decoder step
mostly on per-node overhead and on copying caches, not on arithmetic. As CTranslate2's converter does,
this module reads the trained weights and writes the step the way an inference engine wants it:

- one `MatMul` for the self-attention's query, key and value together, split into heads by one
  `Reshape` and one `Split`; the 1/sqrt(d_k) scale folded into the query weights;
- per-layer key and value entries (`self_key_<i>`, `self_value_<i>`), written at `index` by one
  `ScatterND` each, with no slicing out of or stacking into one stacked cache; each is read by that
  node alone, so a runtime may bind the entry and its `_out` to one buffer and the write happens in
  place (config.json's `in_place_updates`; `serving.runtime.Runtime.in_place_step`);
- cross-attention keys and values kept once per source sentence (`shared_by_beams`): the beams of a
  sentence are reshaped into query positions of that sentence, CTranslate2's layout, so beam search
  never repeats them;
- the causal mask over the cache, the scatter positions and the beam grouping worked out once per
  step for all layers; the position encoding a table lookup.

With `fused_attention` (`python -m export --fused-attention`), each layer's self-attention, from the query, key and
value to the context, is one `com.microsoft.DecoderMaskedMultiHeadAttention`, onnxruntime's decoding
attention (CPU, CUDA and WebAssembly kernels): it writes the new key and value at `index` into the cache
it was given (the same buffer, bound in place) and attends over positions 0..index only, so the scatter
addresses and the causal mask go too: 93 nodes for the Multi30k model's 3 layers against 126, at the
same speed on CPU (BENCHMARKS.md). onnxruntime 1.30 (the newest onnxruntime-node and -web) gets its
first position wrong (native) or hangs on it (WebAssembly), 1.32 computes what Keras computes; so by
default the step has standard ONNX operators only and runs in any engine. Both compute the same numbers
(`tests/test_transformer_step.py`).

It computes what `Transformer.decode_step` computes, on the same state entries (`state_specs()`), and
the export validates it against that Keras step like every graph (`export.validate`): the same
tolerance, the same greedy identity on the test split. `supports(model)` says which models it can
write (float32, ReLU feed-forward); the exporter converts the others with tf2onnx as before.

Shapes in comments: B = batch rows (sentences x beams), Bs = source sentences, H = heads, d = d_model,
hd = head_dim, L = max_length (cache positions), S = source_length, V = vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.config import IR_VERSION, OPSET
from export.onnx_check import ONNXRUNTIME_DOMAIN
from keras_nlp_week4.models.transformer import cache_entries
from serving.contract import numpy_dtype, updated_name

__all__ = ["in_place_updates", "step_positions", "supports", "transformer_step_graph"]


def step_positions(max_length: int) -> int:
    """Positions a written graph's position table covers, for the run's `max_target_length` (the step)
    or `max_source_length` (the encoder): the runtime never goes past them (it refuses a longer
    `max_new_tokens`, it cuts longer sources); validation and benchmarks go a little further."""
    return max(256, 2 * int(max_length))

# The fill of masked scores before the softmax, as `keras_nlp_week4.layers.masks.large_negative`
# gives for float32: exp(-1e9 - max) is exactly 0.
_MASKED = -1e9


def in_place_updates(state: list[Mapping]) -> list[str]:
    """The updated state entries of the written step that a runtime may update in place (config.json's
    `in_place_updates`): every cache, since each is read only by the node writing its `_out` (a
    `ScatterND`, or the fused attention, which onnxruntime lets share its past and present buffers)."""
    return [entry["name"] for entry in state if entry["updated"]]


def supports(model) -> str | None:
    """None when `transformer_step_graph` can write `model`'s step, else why not (one line)."""
    from keras_nlp_week4.models.transformer import Transformer

    if not isinstance(model, Transformer):
        return "not a Transformer"
    if model.compute_dtype != "float32":
        return f"compute dtype {model.compute_dtype} (only float32 is written by hand)"
    for layer in (*model.encoder_layers, *model.decoder_layers):
        if getattr(layer.activation, "__name__", "") != "relu":
            return f"feed-forward activation {layer.activation.__name__} (only relu is written by hand)"
    return None


class _Graph:
    """Nodes and initializers, with fresh names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.value_info: list[onnx.ValueInfoProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, value) -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: int | list[str] = 1,
           **attributes) -> str | list[str]:
        names = outputs if isinstance(outputs, list) else [self._name(hint or op_type.lower())
                                                          for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self._name(f"n_{op_type}"), **attributes))
        return names if len(names) > 1 or isinstance(outputs, list) else names[0]


def _array(variable) -> np.ndarray:
    return np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable, dtype=np.float32)


def _dense(g: _Graph, x: str, kernel: np.ndarray, bias: np.ndarray, hint: str) -> str:
    """`x @ kernel + bias` on (rows, in) -> (rows, out), one `Gemm`."""
    return g.op("Gemm", [x, g.const(f"{hint}_kernel", kernel), g.const(f"{hint}_bias", bias)], hint)


def _layer_norm(g: _Graph, x: str, norm, hint: str) -> str:
    return g.op("LayerNormalization", [x, g.const(f"{hint}_gamma", _array(norm.gamma)),
                                       g.const(f"{hint}_beta", _array(norm.beta))],
                hint, axis=-1, epsilon=float(norm.epsilon))


def _sublayer(g: _Graph, x: str, norm, norm_first: bool, body, hint: str) -> str:
    """The residual connection around a sub-layer: post-norm `LN(x + f(x))`, pre-norm `x + f(LN(x))`."""
    if norm_first:
        return g.op("Add", [x, body(_layer_norm(g, x, norm, f"{hint}_norm"))], hint)
    return _layer_norm(g, g.op("Add", [x, body(x)], hint), norm, f"{hint}_norm")


def _feed_forward(g: _Graph, h: str, layer, hint: str) -> str:
    """The position-wise feed-forward network `relu(h W1 + b1) W2 + b2` of `layer`, two `Gemm`s."""
    inner = g.op("Relu", [_dense(g, h, _array(layer.feed_forward_inner.kernel), _array(layer.feed_forward_inner.bias),
                                 f"{hint}_inner")])
    return _dense(g, inner, _array(layer.feed_forward_outer.kernel), _array(layer.feed_forward_outer.bias),
                  f"{hint}_outer")


def _qkv_weights(mha, d_model: int, query_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The query, key and value projections of `mha` as one `(d, 3d)` kernel and `(3d,)` bias, the
    query's scaled by `query_scale`."""
    kernel = np.concatenate([_array(mha.query_dense.kernel).reshape(d_model, -1) * query_scale,
                             _array(mha.key_dense.kernel).reshape(d_model, -1),
                             _array(mha.value_dense.kernel).reshape(d_model, -1)], axis=1)
    bias = np.concatenate([_array(mha.query_dense.bias).reshape(-1) * query_scale,
                           _array(mha.key_dense.bias).reshape(-1), _array(mha.value_dense.bias).reshape(-1)])
    return kernel, bias


def _positions(embedding, d_model: int, count: int) -> np.ndarray:
    """The sinusoidal encoding of positions 0..count-1, `(count, d)`, computed by the embedding's own layer
    so the table holds exactly the numbers the model adds."""
    return _array(embedding.position_encoding(np.zeros((1, count, d_model), np.float32))[0])


def _start(model, what: str) -> tuple[_Graph, int, int, int, float]:
    """A new graph for `model` and its sizes `(graph, d_model, heads, head_dim, 1/sqrt(head_dim))`, or
    the `ValueError` of `supports` for a model this module cannot write (`what`: "encoder", ...)."""
    reason = supports(model)
    if reason is not None:
        raise ValueError(f"cannot write this model's {what} by hand: {reason}")
    return _Graph(), model.d_model, model.num_heads, model.head_dim, 1.0 / math.sqrt(model.head_dim)


def _model(g: _Graph, name: str, description: Mapping, opset: int, producer: str,
           onnxruntime_ops: bool = False) -> onnx.ModelProto:
    """The written graph `g` as a model, with the inputs and outputs of `description` (shapes and
    dtypes as the export describes them); `onnxruntime_ops`: it also uses com.microsoft operators."""
    def value(entry: Mapping) -> onnx.ValueInfoProto:
        elem_type = helper.np_dtype_to_tensor_dtype(np.dtype(numpy_dtype(entry["dtype"])))
        return helper.make_tensor_value_info(entry["name"], elem_type, list(entry["shape"]))

    graph = helper.make_graph(g.nodes, name, [value(e) for e in description["inputs"]],
                              [value(e) for e in description["outputs"]], g.initializers, value_info=g.value_info)
    opsets = [helper.make_opsetid("", opset)]
    if onnxruntime_ops:
        opsets.append(helper.make_opsetid(ONNXRUNTIME_DOMAIN, 1))
    return helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION, producer_name=producer)


def transformer_step_graph(model, description: Mapping, max_positions: int, opset: int = OPSET,
                           fused_attention: bool = False) -> onnx.ModelProto:
    """The decoder-step graph of `model` (a `Transformer`, see `supports`) with the inputs and outputs of
    `description` (`export.config.describe_graphs(...)["decoder_step"]`), for output positions below
    `max_positions`; with `fused_attention`, each self-attention is onnxruntime's
    `DecoderMaskedMultiHeadAttention` (see the module's docstring), else standard operators only."""
    g, d, heads, hd, scale = _start(model, "decoder step")
    embedding = model.target_embedding
    table = _array(embedding.embeddings)  # (V, d)

    # Shared by all layers --------------------------------------------------------------------------
    table_name = g.const("embeddings", table)
    x = g.op("Gather", [table_name, "token_ids"], "token_embedding", axis=0)  # (B, d)
    if embedding.scale_by_sqrt_d_model:
        x = g.op("Mul", [x, g.const("sqrt_d_model", np.float32(math.sqrt(d)))], "scaled_embedding")
    position = g.op("Gather", [g.const("positions", _positions(embedding, d, max_positions)), "index"], "position",
                    axis=0)  # (d,)
    x = g.op("Add", [x, position], "decoder_input")  # (B, d)
    if not fused_attention:
        zero, one = g.const("zero", np.int64(0)), g.const("one", np.int64(1))
        # Cache positions 0..index may be attended (the causal rule); later slots are empty.
        cache_length = g.op("Squeeze", [g.op("Shape", [cache_entries("self", 0)[0]], "cache_shape", start=2, end=3)],
                            "cache_length")
        slots = g.op("Range", [zero, cache_length, one], "slots")
        index64 = g.op("Cast", ["index"], "index64", to=TensorProto.INT64)
        visible = g.op("LessOrEqual", [slots, index64], "visible")  # (L,)
        # ScatterND addresses `[row, head, index]` for each new (row, head) key or value vector: one memcpy
        # of head_dim floats each (ScatterElements, one index per float, took 14 of 41 ms a step at B = 128).
        rows = g.op("Shape", ["token_ids"], "rows")  # (1,) = [B]
        grid = g.op("Concat", [rows, g.const("grid_tail", np.array([heads, 1, 1], np.int64))], "grid", axis=0)
        row_ids = g.op("Reshape", [g.op("Range", [zero, g.op("Squeeze", [rows]), one]),
                                   g.const("row_shape", np.array([-1, 1, 1, 1], np.int64))], "row_ids")
        head_ids = g.const("head_ids", np.arange(heads, dtype=np.int64).reshape(1, heads, 1, 1))
        scatter_at = g.op("Concat", [g.op("Expand", [row_ids, grid]), g.op("Expand", [head_ids, grid]),
                                     g.op("Expand", [g.op("Reshape", [index64, g.const("one_4d", np.ones(4, np.int64))]),
                                                     grid])], "scatter_at", axis=3)  # (B, H, 1, 3)
    # Beams as query positions of their sentence: (B, d) -> (Bs, B / Bs, H, hd).
    sources = g.op("Shape", ["encoder_padding_mask"], "sources", start=0, end=1)
    grouped_shape = g.op("Concat", [sources, g.const("grouped_tail", np.array([-1, heads, hd], np.int64))],
                         "grouped_shape", axis=0)
    source_visible = g.op("Unsqueeze", ["encoder_padding_mask", g.const("axes_1_2", np.array([1, 2], np.int64))],
                          "source_visible")  # (Bs, 1, 1, S)
    masked = g.const("masked", np.float32(_MASKED))
    flat = g.const("flat", np.array([-1, d], np.int64))
    if fused_attention:
        qkv_3d = g.const("qkv_3d", np.array([-1, 1, 3 * d], np.int64))  # (B, 3d) -> (B, 1, 3d)
    attention_shape = g.const("attention_shape", np.array([-1, 1, heads, 0], np.int64))  # 0: keep S

    attentions = []
    for i, layer in enumerate(model.decoder_layers):
        def self_attention(h, layer=layer, i=i):
            mha = layer.self_attention
            qkv = _dense(g, h, *_qkv_weights(mha, d, scale), f"l{i}_self_qkv")  # (B, 3d)
            key_entry, value_entry = cache_entries("self", i)
            if fused_attention:
                # onnxruntime's kernel writes the new key and value at `index` into the caches (the same
                # buffers when the runtime binds them in place) and attends over positions 0..index only.
                # Its CPU kernel misreads a packed query (it reshapes the packed input as if it held the
                # query alone), so q, k and v go in as three inputs.
                qkv = g.op("Reshape", [qkv, qkv_3d])
                q, k, v = g.op("Split", [qkv], f"l{i}_self", outputs=3, axis=2, num_outputs=3)  # (B, 1, d)
                context = g.op("DecoderMaskedMultiHeadAttention",
                               [q, k, v, "", "", key_entry, value_entry, "index"],
                               outputs=[f"l{i}_self_context", updated_name(key_entry), updated_name(value_entry)],
                               domain=ONNXRUNTIME_DOMAIN, num_heads=heads, past_present_share_buffer=1,
                               scale=1.0)[0]  # (B, 1, d); 1/sqrt(hd) is in the query weights
                # onnx's shape inference knows no contrib operator: typed here, later nodes (and
                # onnxruntime's quantizer, which reads their types) are inferred as usual
                g.value_info.append(helper.make_tensor_value_info(context, TensorProto.FLOAT, ["batch", 1, d]))
                return _dense(g, g.op("Reshape", [context, flat]), _array(mha.output_dense.kernel).reshape(-1, d),
                              _array(mha.output_dense.bias), f"l{i}_self_out")
            qkv = g.op("Reshape", [qkv, g.const("qkv_shape", np.array([-1, 3 * heads, 1, hd], np.int64))])
            q, k, v = g.op("Split", [qkv], f"l{i}_self", outputs=3, axis=1, num_outputs=3)  # (B, H, 1, hd)
            keys = g.op("ScatterND", [key_entry, scatter_at, k], outputs=[updated_name(key_entry)])[0]
            values = g.op("ScatterND", [value_entry, scatter_at, v], outputs=[updated_name(value_entry)])[0]
            scores = g.op("MatMul", [q, g.op("Transpose", [keys], perm=[0, 1, 3, 2])], f"l{i}_self_scores")
            weights = g.op("Softmax", [g.op("Where", [visible, scores, masked])], axis=-1)  # (B, H, 1, L)
            context = g.op("Reshape", [g.op("MatMul", [weights, values]), flat])  # (B, H*hd)
            return _dense(g, context, _array(mha.output_dense.kernel).reshape(-1, d),
                          _array(mha.output_dense.bias), f"l{i}_self_out")

        def cross_attention(h, layer=layer, i=i):
            mha = layer.cross_attention
            q = _dense(g, h, _array(mha.query_dense.kernel).reshape(d, -1) * scale,
                       _array(mha.query_dense.bias).reshape(-1) * scale, f"l{i}_cross_q")  # (B, d)
            q = g.op("Transpose", [g.op("Reshape", [q, grouped_shape])], perm=[0, 2, 1, 3])  # (Bs, H, K, hd)
            key_entry, value_entry = cache_entries("cross", i)
            keys = g.op("Transpose", [key_entry], perm=[0, 1, 3, 2])  # (Bs, H, hd, S)
            scores = g.op("MatMul", [q, keys], f"l{i}_cross_scores")  # (Bs, H, K, S)
            weights = g.op("Softmax", [g.op("Where", [source_visible, scores, masked])], axis=-1)
            # (Bs, H, K, S) -> (Bs, K, H, S) -> (B, 1, H, S): this layer's row of the `attention` output
            attentions.append(g.op("Reshape", [g.op("Transpose", [weights], perm=[0, 2, 1, 3]), attention_shape]))
            context = g.op("MatMul", [weights, value_entry])  # (Bs, H, K, hd)
            context = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), flat])  # (B, H*hd)
            return _dense(g, context, _array(mha.output_dense.kernel).reshape(-1, d),
                          _array(mha.output_dense.bias), f"l{i}_cross_out")

        x = _sublayer(g, x, layer.self_attention_layer_norm, model.norm_first, self_attention, f"l{i}_self")
        x = _sublayer(g, x, layer.cross_attention_layer_norm, model.norm_first, cross_attention, f"l{i}_cross")
        x = _sublayer(g, x, layer.feed_forward_layer_norm, model.norm_first,
                      lambda h, layer=layer, i=i: _feed_forward(g, h, layer, f"l{i}_ffn"), f"l{i}_ffn")

    if model.decoder_norm is not None:
        x = _layer_norm(g, x, model.decoder_norm, "decoder_norm")
    if model.output_projection is None:  # tied: x @ E^T, read from the embedding table itself
        g.op("Gemm", [x, table_name], outputs=["logits"], transB=1)
    else:
        g.op("Gemm", [x, g.const("projection_kernel", _array(model.output_projection.kernel)),
                      g.const("projection_bias", _array(model.output_projection.bias))], outputs=["logits"])
    g.op("Concat", attentions, outputs=["attention"], axis=1)  # (B, layers, H, S)

    return _model(g, "decoder_step", description, opset, "keras-nlp-week4 export/transformer_step",
                  onnxruntime_ops=fused_attention)
