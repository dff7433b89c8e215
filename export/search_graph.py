"""`onnx/beam_search.onnx`: the runtime's beam search as one ONNX graph, standard operators only (with
`python -m export --fused-attention`, the step's onnxruntime attention inside it: onnxruntime >= 1.32 only).

The graph is composed from the export's own `encoder.onnx` and `decoder_step.onnx` (their nodes inlined,
their weights shared) and the state contract in `config.json`, so every model family that has those two
graphs gets it, and any engine that runs standard ONNX (onnxruntime-web, onnxruntime-node, the C, C#
and Java bindings) gets the whole translation from ids to ids without writing a search loop:

    inputs   encoder_input int32 (batch, source_length), max_length int32 (), beam_size int32 (),
             length_penalty float32 (), min_length int32 () (EOS not allowed before it; 0: no rule)
    outputs  tokens int32 (batch, length)          best hypothesis per sentence, EOS included, PAD after
             scores float32 (batch,)               its log-probability / GNMT length penalty
             attention float32 (batch, length, layers, heads, source_length)   models with attention

It is `serving.search.beam_steps` written as a `Loop` (no constraints, one hypothesis; each hypothesis's
`beam_size` best continuations ranked, as the runtime does with `decoder_step_top_k`, so `beam_size` may
not exceed the vocabulary): the same scores in float64, the same GNMT length penalty ((5 + |Y|) / 6) ** alpha (Wu et al., 2016, eq. 14) applied once
at the end, finished hypotheses continuing with PAD at no cost, finished ones preferred, ties to the
lower index (ONNX `TopK` and `ArgMax` both break ties that way, as `top_k_stable` and `argmax` do). With
`beam_size` 1 and `length_penalty` 0 it is greedy decoding. `export.validate` compares it with the Python
runtime's beam search on the whole test split.

What differs from the numpy search is bookkeeping only: instead of reordering a history of tokens and
attention every step, the loop emits each step's tokens, parent rows and attention as scan outputs and a
second `Loop` walks the parents back from the chosen hypothesis (TensorFlow's `gather_tree`); the caches
are reordered at the top of the next step, so the step's cache write (`ScatterND`) reads an intermediate
value that onnxruntime may overwrite in place rather than a loop input it must copy.

`com.microsoft.BeamSearch` is not used: it is a contrib operator (onnxruntime only, not onnxruntime-web's
standard set), it expects its own encoder/decoder subgraph signatures (T5/BART's), and its length
normalisation divides by `length ** length_penalty`, not GNMT's ((5 + length) / 6) ** alpha, so it would
return other hypotheses than `serving.search` does.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.config import IR_VERSION
from export.onnx_check import check_onnx, nested_graphs, subgraphs, uses_onnxruntime_ops
from serving.contract import (
    ATTENTION,
    BEAM_SIZE,
    ENCODER_INPUT,
    INDEX,
    LENGTH_PENALTY,
    LOGITS,
    MAX_LENGTH,
    MIN_LENGTH,
    SCORES,
    TOKEN_IDS,
    TOKENS,
    TOP_IDS,
    TOP_LOG_PROBS,
    numpy_dtype,
    position_axes,
    updated_name,
)

__all__ = ["GraphBuilder", "beam_search_graph", "block_top_k", "compose_search", "inline_graph", "top_k_block",
           "top_k_step_graph", "write_beam_search"]

_INT64_MAX = np.iinfo(np.int64).max


class GraphBuilder:
    """Nodes of one graph (the main graph or a loop body) with fresh names from a counter they share."""

    def __init__(self, counter: itertools.count, prefix: str) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counter, self._prefix = counter, prefix

    def name(self, hint: str) -> str:
        return f"{self._prefix}{hint}_{next(self._counter)}"

    def op(self, op_type: str, *inputs: str, outputs: int | Sequence[str] = 1, **attributes) -> str | list[str]:
        names = [self.name(op_type.lower()) for _ in range(outputs)] if isinstance(outputs, int) else list(outputs)
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.name(op_type), **attributes))
        return names[0] if len(names) == 1 else names

    def const(self, value, dtype) -> str:
        name = self.name("const")
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name


# Each row's k best of a (rows, V) array by blocks: the max of every block of `block` columns, the k best
# blocks, then the k best of their k * block columns. Exact, ties included: the k best values (ties to the
# lower index) lie in the k best blocks (ties to the lower block), and those blocks are gathered in
# ascending order, so a tie among the candidates also goes to the lower index. onnxruntime's CPU `TopK`
# costs about as much per column whatever k is (a heap over every column, 250-350 us for 32 x 8,000 here,
# where `ReduceMax` over the same array takes 30): by blocks of 64 the top-k half costs about half as much
# at 32 and 128 rows, a few microseconds more at 1 (BENCHMARKS.md).
BLOCK_TOP_K_MIN_VOCAB = 1024


def top_k_block(vocab_size: int) -> int | None:
    """The block width `block_top_k` uses for a vocabulary: the divisor of `vocab_size` in 32..128 nearest
    64 (no padding copy), or None (a plain `TopK`) for a small vocabulary or one with no such divisor."""
    if vocab_size < BLOCK_TOP_K_MIN_VOCAB:
        return None
    widths = [d for d in range(32, 129) if vocab_size % d == 0]
    return min(widths, key=lambda d: (abs(d - 64), d)) if widths else None


def block_top_k(g: GraphBuilder, values: str, k: str, vocab_size: int,
                outputs: int | Sequence[str] = 2) -> list[str]:
    """`TopK(values, k, axis=-1, largest=1, sorted=1)` of `values` (rows, vocab_size) float32 with `k` an
    int64 (1,) tensor: the same values and int64 ids (see above)."""
    block = top_k_block(vocab_size)
    if block is None:
        return g.op("TopK", values, k, axis=-1, largest=1, sorted=1, outputs=outputs)
    i64 = np.int64
    blocks = vocab_size // block
    grouped = g.op("Reshape", values, g.const([0, blocks, block], i64))  # (rows, blocks, block)
    block_max = g.op("ReduceMax", grouped, g.const([2], i64), keepdims=0)  # (rows, blocks)
    k_blocks = g.op("Min", k, g.const([blocks], i64))  # k > blocks: every block
    best_blocks = g.op("TopK", block_max, k_blocks, axis=-1, largest=1, sorted=1, outputs=2)[1]
    # ascending block order: the largest of the negated ids first
    ascending = g.op("Neg", g.op("TopK", g.op("Neg", best_blocks), k_blocks, axis=-1, largest=1, sorted=1,
                                 outputs=2)[0])  # (rows, k_blocks)
    gather_at = g.op("Expand", g.op("Unsqueeze", ascending, g.const([-1], i64)), g.const([1, 1, block], i64))
    candidates = g.op("Reshape", g.op("GatherElements", grouped, gather_at, axis=1),
                      g.const([0, -1], i64))  # (rows, k_blocks * block), in ascending column order
    names = [g.name("top_values"), g.name("top_ids")] if isinstance(outputs, int) else list(outputs)
    at = g.op("TopK", candidates, k, axis=-1, largest=1, sorted=1, outputs=[names[0], g.name("at")])[1]
    width = g.const(block, i64)
    chosen_block = g.op("GatherElements", ascending, g.op("Div", at, width), axis=1)
    g.op("Add", g.op("Mul", chosen_block, width), g.op("Mod", at, width), outputs=[names[1]])
    return names


def _vocab_size(step: onnx.ModelProto) -> int:
    (logits,) = [o for o in step.graph.output if o.name == LOGITS]
    return logits.type.tensor_type.shape.dim[-1].dim_value


def _defined_names(graph: onnx.GraphProto) -> set[str]:
    """Every value name `graph` and its subgraphs define (inputs, initializers, node outputs)."""
    names = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(o for o in node.output if o)
    for sub in nested_graphs(graph):
        names |= _defined_names(sub)
    return names


def _rename(graph: onnx.GraphProto, names: Mapping[str, str], node_prefix: str) -> None:
    """Renames values (and prefixes node names) in `graph` and its subgraphs, in place."""
    def new(name: str) -> str:
        return names.get(name, name)

    for value in itertools.chain(graph.input, graph.output, graph.value_info):
        value.name = new(value.name)
    for tensor in graph.initializer:
        tensor.name = new(tensor.name)
    for node in graph.node:
        node.name = node_prefix + node.name
        node.input[:] = [new(n) for n in node.input]
        node.output[:] = [new(n) for n in node.output]
    for sub in nested_graphs(graph):
        _rename(sub, names, node_prefix)


def inline_graph(model: onnx.ModelProto, prefix: str, inputs: Mapping[str, str]
                 ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], dict[str, str]]:
    """The nodes and initializers of `model`'s graph with every name it defines prefixed, its inputs read
    from `inputs[name]`, and {output name: its name in the composed graph}."""
    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)
    missing = [v.name for v in graph.input if v.name not in inputs]
    if missing:
        raise ValueError(f"inlining {model.graph.name}: no value bound to its inputs {missing}")
    names = {name: prefix + name for name in _defined_names(graph)}
    names.update(inputs)
    _rename(graph, names, prefix)
    return list(graph.node), list(graph.initializer), {o: names[o] for o in
                                                        (v.name for v in model.graph.output)}


def _shared_weights(graph: onnx.GraphProto) -> int:
    """Keeps one copy of equal initializers of `graph` (the encoder's and the step's embedding are one
    tied matrix in the model, two files' copies here), rewriting the nodes of `graph` and its subgraphs
    that read a dropped copy. Returns the bytes saved."""
    first: dict[tuple, str] = {}
    renamed: dict[str, str] = {}
    kept, saved = [], 0
    for tensor in graph.initializer:
        data = numpy_helper.to_array(tensor).tobytes()
        key = (tensor.data_type, tuple(tensor.dims), data)
        if key in first:
            renamed[tensor.name] = first[key]
            saved += len(data)
        else:
            first[key] = tensor.name
            kept.append(tensor)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for sub in subgraphs(graph):
        for node in sub.node:
            node.input[:] = [renamed.get(name, name) for name in node.input]
    return saved


def _opsets(*models: onnx.ModelProto) -> list[onnx.OperatorSetIdProto]:
    versions: dict[str, int] = {}
    for model in models:
        for opset in model.opset_import:
            versions[opset.domain] = max(versions.get(opset.domain, 0), opset.version)
    return [helper.make_opsetid(domain, version) for domain, version in sorted(versions.items())]


def _value(name: str, elem_type: int, shape: Sequence | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def beam_search_graph(encoder: onnx.ModelProto, step: onnx.ModelProto, state: Sequence[Mapping],
                      special_ids: Mapping[str, int], attention: bool, description: Mapping) -> onnx.ModelProto:
    """The beam-search graph of an export (see the module docstring).

    Args:
        encoder, step: the export's `encoder.onnx` and `decoder_step.onnx`.
        state: config.json's state entries (`StateSpec.to_json()` dicts).
        special_ids: {"pad", "bos", "eos", ...}.
        attention: whether the step returns cross-attention (then the graph does too).
        description: the graph's entry of `export.config.describe_graphs` (its outputs' names).
    """
    counter = itertools.count()
    main = GraphBuilder(counter, "search/")
    pad, bos, eos = (int(special_ids[k]) for k in ("pad", "bos", "eos"))
    i64 = np.int64

    # Encoder ------------------------------------------------------------------------------------------
    nodes, weights, encoded = inline_graph(encoder, "encoder/", {ENCODER_INPUT: ENCODER_INPUT})
    main.nodes += nodes
    main.initializers += weights

    shape = main.op("Shape", ENCODER_INPUT)
    batch = main.op("Slice", shape, main.const([0], i64), main.const([1], i64))  # [B]
    source_length = main.op("Slice", shape, main.const([1], i64), main.const([2], i64))  # [S]
    k_scalar = main.op("Cast", BEAM_SIZE, to=TensorProto.INT64)
    k = main.op("Unsqueeze", k_scalar, main.const([0], i64))  # [K]
    rows = main.op("Mul", batch, k)  # [B * K]
    steps = main.op("Cast", MAX_LENGTH, to=TensorProto.INT64)
    sizes = {"batch": rows, "source_batch": batch, "source_length": source_length,
             "max_length": main.op("Unsqueeze", steps, main.const([0], i64))}

    # The state before the first step: shared entries as the encoder gave them, the other encoder
    # entries repeated per beam (row b * K + j is hypothesis j of sentence b), caches as zeros; a cache
    # with a position axis (`position_axes`) starts with none and grows by one a step (below).
    grows = position_axes(state)

    def zeros(entry: Mapping, positions: str | None = None) -> str:
        """Zeros of `entry`'s shape, with `positions` ([P] int64) along its `max_length` axis if given."""
        at = {**sizes, "max_length": positions} if positions is not None else sizes
        dims = [at[d] if isinstance(d, str) else main.const([d], i64) for d in entry["shape"]]
        zero = numpy_helper.from_array(np.zeros((1,), dtype=numpy_dtype(entry["dtype"])), "zero")
        return main.op("ConstantOfShape", main.op("Concat", *dims, axis=0), value=zero)

    # per growing cache, the zeros of the one position a step adds
    new_position = {entry["name"]: zeros(entry, main.const([1], i64)) for entry in state if entry["name"] in grows}
    initial: dict[str, str] = {}
    for entry in state:
        name = entry["name"]
        if entry["source"] == "encode":
            value = encoded[name]
            if not entry.get("shared_by_beams"):
                value_shape = main.op("Shape", value)
                rest = main.op("Slice", value_shape, main.const([1], i64), main.const([_INT64_MAX], i64))
                widened = main.op("Expand", main.op("Unsqueeze", value, main.const([1], i64)),
                                  main.op("Concat", batch, k, rest, axis=0))  # (B, K, ...)
                value = main.op("Reshape", widened, main.op("Concat", rows, rest, axis=0))  # (B * K, ...)
        else:
            value = zeros(entry, main.const([0], i64) if name in grows else None)
        initial[name] = value
    updated = [entry["name"] for entry in state if entry["updated"]]

    vocab_size = _vocab_size(step)
    eos_mask = main.const(np.where(np.arange(vocab_size) == eos, -np.inf, 0.0), np.float32)  # (V,)
    beam_offsets = main.op("Mul", main.op("Range", main.const(0, i64), main.op("Squeeze", batch),
                                          main.const(1, i64)), k_scalar)  # (B,) = b * K
    beam_offsets = main.op("Unsqueeze", beam_offsets, main.const([1], i64))  # (B, 1)
    first_scores = main.op("Where", main.op("Equal", main.op("Range", main.const(0, i64), k_scalar,
                                                             main.const(1, i64)), main.const(0, i64)),
                           main.const(0.0, np.float64), main.const(-np.inf, np.float64))  # (K,)
    loop_inputs = {
        "token": main.op("Expand", main.const(bos, np.int32), rows),  # (B * K,)
        "scores": main.op("Expand", first_scores, main.op("Concat", batch, k, axis=0)),  # (B, K) float64
        "finished": main.op("Expand", main.const(False, np.bool_), rows),
        "lengths": main.op("Expand", main.const(0, i64), rows),
        "parent": main.op("Range", main.const(0, i64), main.op("Squeeze", rows), main.const(1, i64)),
        **{f"state/{name}": initial[name] for name in updated},
    }

    # One decoder step per iteration --------------------------------------------------------------------
    body = GraphBuilder(counter, "step_loop/")
    carried = {key: f"in/{key}" for key in loop_inputs}
    index = body.op("Cast", "iteration", to=TensorProto.INT32)
    # Hypotheses continue the rows they were chosen from: reorder the caches by the previous step's parent.
    # A cache with a position axis then gets the one position this step writes, so the step attends over
    # the positions written, not over `max_length` slots of which it masks the unwritten ones, and the
    # reorder copies only those (the int8 Multi30k-shaped search at one sentence, 4 beams, 32 tokens:
    # BENCHMARKS.md (14)).
    step_state = {name: initial[name] for name in initial}
    for name in updated:
        step_state[name] = body.op("Gather", carried[f"state/{name}"], carried["parent"], axis=0)
        if name in grows:
            step_state[name] = body.op("Concat", step_state[name], new_position[name], axis=grows[name])
    nodes, weights, out = inline_graph(step, "step/", {TOKEN_IDS: carried["token"], INDEX: index, **step_state})
    body.nodes += nodes
    main.initializers += weights  # read from the outer scope: one copy of the weights

    # EOS is not allowed before `min_length` tokens (`serving.search.Constraints.min_new_tokens`): its
    # logit is -inf before the log-softmax, as the numpy rule sets it, by adding a row that is -inf at EOS
    # and 0 elsewhere (a `Where` on a broadcast mask took 35 us a step at 4 x 8,000 logits, the `Add` 5).
    # In an `If`, so a search without the rule pays one comparison a step, not a pass over the logits.
    masked = GraphBuilder(counter, "min_length/")
    masked.op("Add", out[LOGITS], eos_mask, outputs=[masked.name("logits")])
    unmasked = GraphBuilder(counter, "min_length/")
    unmasked.op("Identity", out[LOGITS], outputs=[unmasked.name("logits")])
    logits = body.op("If", body.op("Less", index, MIN_LENGTH),
                     then_branch=_branch(masked, "eos_masked"), else_branch=_branch(unmasked, "eos_allowed"))

    # Each hypothesis's K best continuations first (as the runtime's `decoder_step_top_k`): no other can
    # make its sentence's K best, so the sentence's choice ranks K * K candidates, not K * vocabulary.
    log_probs, ids = block_top_k(body, body.op("LogSoftmax", logits, axis=-1), k,
                                 vocab_size)  # (B * K, K) float32, int64
    # A finished hypothesis may only continue with PAD, at no cost, so it keeps its score.
    first_column = body.op("Equal", body.op("Range", body.const(0, i64), k_scalar, body.const(1, i64)),
                           body.const(0, i64))  # (K,)
    finished_column = body.op("Unsqueeze", carried["finished"], body.const([1], i64))  # (B * K, 1)
    log_probs = body.op("Where", finished_column, body.op("Where", first_column, body.const(0.0, np.float32),
                                                          body.const(-np.inf, np.float32)), log_probs)
    ids = body.op("Where", body.op("And", finished_column, first_column), body.const(pad, i64), ids)
    total = body.op("Add", body.op("Cast", log_probs, to=TensorProto.DOUBLE),
                    body.op("Reshape", carried["scores"], body.const([-1, 1], i64)))  # (B * K, K) float64
    by_sentence = body.op("Concat", batch, body.const([-1], i64), axis=0)
    total = body.op("Reshape", total, by_sentence)  # (B, K * K)
    scores, best = body.op("TopK", total, k, axis=-1, largest=1, sorted=1, outputs=2)  # (B, K)
    parent = body.op("Reshape", body.op("Add", beam_offsets, body.op("Div", best, k_scalar)),
                     body.const([-1], i64))  # (B * K,) the row each new hypothesis extends
    token = body.op("GatherElements", body.op("Reshape", ids, by_sentence), best, axis=1)  # (B, K)
    token = body.op("Reshape", body.op("Cast", token, to=TensorProto.INT32), body.const([-1], i64))
    was_finished = body.op("Gather", carried["finished"], parent, axis=0)
    lengths = body.op("Add", body.op("Gather", carried["lengths"], parent, axis=0),
                      body.op("Cast", body.op("Not", was_finished), to=TensorProto.INT64))
    finished = body.op("Or", was_finished, body.op("Equal", token, body.const(eos, np.int32)))
    all_finished = body.op("Equal", body.op("ReduceMin", body.op("Cast", finished, to=TensorProto.INT32),
                                            keepdims=0), body.const(1, np.int32))
    go_on = body.op("Not", all_finished)
    body_outputs = {"token": token, "scores": scores, "finished": finished, "lengths": lengths,
                    "parent": parent, **{f"state/{n}": out[updated_name(n)] for n in updated}}
    scanned = [body.op("Identity", token), body.op("Identity", parent)]
    if attention:
        scanned.append(body.op("Identity", out[ATTENTION]))  # (B * K, layers, heads, S), before reordering

    types = {"token": (TensorProto.INT32, None), "scores": (TensorProto.DOUBLE, None),
             "finished": (TensorProto.BOOL, None), "lengths": (TensorProto.INT64, None),
             "parent": (TensorProto.INT64, None)}
    for entry in state:
        if entry["updated"]:
            types[f"state/{entry['name']}"] = (_elem(entry["dtype"]), None)
    body_graph = helper.make_graph(
        body.nodes, "beam_step",
        [_value("iteration", TensorProto.INT64, []), _value("in/cond", TensorProto.BOOL, []),
         *(_value(carried[key], *types[key]) for key in loop_inputs)],
        [_value(go_on, TensorProto.BOOL, []), *(_value(body_outputs[key], *types[key]) for key in loop_inputs),
         _value(scanned[0], TensorProto.INT32, None), _value(scanned[1], TensorProto.INT64, None),
         *([_value(scanned[2], TensorProto.FLOAT, None)] if attention else [])],
        initializer=body.initializers)
    loop_outputs = [main.name(f"final_{key}") for key in loop_inputs]
    scan_outputs = [main.name("step_tokens"), main.name("step_parents")]  # (T, B * K)
    if attention:
        scan_outputs.append(main.name("step_attention"))  # (T, B * K, layers, heads, S)
    main.op("Loop", steps, main.const(True, np.bool_), *loop_inputs.values(),
            outputs=loop_outputs + scan_outputs, body=body_graph)
    final = dict(zip(loop_inputs, loop_outputs, strict=True))

    # The best finished hypothesis per sentence ------------------------------------------------------------
    lengths = main.op("Cast", main.op("Max", final["lengths"], main.const(1, i64)), to=TensorProto.DOUBLE)
    penalty = main.op("Pow", main.op("Div", main.op("Add", main.const(5.0, np.float64), lengths),
                                     main.const(6.0, np.float64)),
                      main.op("Cast", LENGTH_PENALTY, to=TensorProto.DOUBLE))
    normalised = main.op("Div", main.op("Reshape", final["scores"], main.const([-1], i64)), penalty)  # (B * K,)
    finite = main.op("Not", main.op("Or", main.op("IsInf", normalised), main.op("IsNaN", normalised)))
    normalised = main.op("Where", finite, normalised, main.const(-np.inf, np.float64))
    # Prefer finished hypotheses: an unfinished one only wins where nothing finished.
    ranked = main.op("Where", final["finished"], normalised,
                     main.op("Sub", normalised, main.const(1e9, np.float64)))
    ranked = main.op("Reshape", ranked, main.op("Concat", batch, k, axis=0))  # (B, K)
    choice = main.op("Add", main.op("Squeeze", beam_offsets, main.const([1], i64)),
                     main.op("ArgMax", ranked, axis=1, keepdims=0))  # (B,) rows
    main.op("Cast", main.op("Gather", normalised, choice, axis=0), to=TensorProto.FLOAT, outputs=[SCORES])

    # Walk the parents back from the chosen rows (gather_tree) ----------------------------------------------
    length = main.op("Squeeze", main.op("Slice", main.op("Shape", scan_outputs[0]), main.const([0], i64),
                                        main.const([1], i64)))  # T, scalar
    back = GraphBuilder(counter, "backtrack/")
    t = back.op("Sub", back.op("Sub", length, back.const(1, i64)), "back/iteration")
    row = "back/row"
    step_parents = back.op("Gather", scan_outputs[1], t, axis=0)  # (B * K,)
    back_token = back.op("Gather", back.op("Gather", scan_outputs[0], t, axis=0), row, axis=0)  # (B,)
    from_row = back.op("Gather", step_parents, row, axis=0)  # (B,) the row the step read
    back_scans = [back_token]
    if attention:
        back_scans.append(back.op("Gather", back.op("Gather", scan_outputs[2], t, axis=0), from_row, axis=0))
    back_graph = helper.make_graph(
        back.nodes, "backtrack",
        [_value("back/iteration", TensorProto.INT64, []), _value("back/cond", TensorProto.BOOL, []),
         _value(row, TensorProto.INT64, None)],
        [_value(back.op("Identity", "back/cond"), TensorProto.BOOL, []), _value(from_row, TensorProto.INT64, None),
         _value(back_scans[0], TensorProto.INT32, None),
         *([_value(back_scans[1], TensorProto.FLOAT, None)] if attention else [])],
        initializer=back.initializers)
    reversed_scans = [main.name("reversed_tokens")] + ([main.name("reversed_attention")] if attention else [])
    main.op("Loop", length, main.const(True, np.bool_), choice,
            outputs=[main.name("first_rows"), *reversed_scans], body=back_graph)

    def in_order(value: str) -> str:  # (T, B, ...) last step first -> (B, T, ...)
        forward = main.op("Slice", value, main.const([-1], i64), main.const([-_INT64_MAX], i64),
                          main.const([0], i64), main.const([-1], i64))
        return forward

    tokens = main.op("Transpose", in_order(reversed_scans[0]), perm=[1, 0])  # (B, T)
    # Drop the columns that are padding in every row, as the numpy search's `_trim` does.
    positions = main.op("Range", main.const(1, i64), main.op("Add", length, main.const(1, i64)), main.const(1, i64))
    used = main.op("Mul", main.op("Cast", main.op("Not", main.op("Equal", tokens, main.const(pad, np.int32))),
                                  to=TensorProto.INT64), positions)
    keep = main.op("Unsqueeze", main.op("ReduceMax", used, keepdims=0), main.const([0], i64))
    outputs = {TOKENS: (tokens, 1)}
    if attention:
        outputs[ATTENTION] = (main.op("Transpose", in_order(reversed_scans[1]), perm=[1, 0, 2, 3, 4]), 1)
    for name, (value, axis) in outputs.items():
        main.op("Slice", value, main.const([0], i64), keep, main.const([axis], i64), outputs=[name])

    inputs = [helper.make_tensor_value_info(e["name"], _elem(e["dtype"]), e["shape"]) for e in description["inputs"]]
    graph_outputs = [helper.make_tensor_value_info(e["name"], _elem(e["dtype"]), e["shape"])
                     for e in description["outputs"]]
    graph = helper.make_graph(main.nodes, "beam_search", inputs, graph_outputs, initializer=main.initializers)
    _shared_weights(graph)
    model = helper.make_model(graph, opset_imports=_opsets(encoder, step))
    model.ir_version = IR_VERSION
    return model


def _branch(builder: GraphBuilder, name: str) -> onnx.GraphProto:
    """An `If` branch of the nodes of `builder`, whose last node's output is the branch's one output."""
    return helper.make_graph(builder.nodes, name, [], [_value(builder.nodes[-1].output[0], TensorProto.FLOAT, None)],
                             initializer=builder.initializers)


def _elem(dtype: str) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(numpy_dtype(dtype)))


def top_k_step_graph(step: onnx.ModelProto, description: Mapping) -> onnx.ModelProto:
    """`decoder_step` with its logits replaced by each row's `beam_size` best log-probabilities and their
    ids (`LogSoftmax` and `block_top_k` in the graph; ties to the lower id).

    Beam search keeps `beam_size` hypotheses, so each hypothesis's continuations beyond its own
    `beam_size` best can never be chosen: the numpy search ranks `beam_size` x `beam_size` candidates per
    sentence instead of `beam_size` x vocabulary, and the step returns `(batch, beam_size)` numbers
    instead of `(batch, vocab)` (`serving.search.beam_steps`' `top_k_step`). Everything else (inputs,
    attention, the updated state, the in-place cache writes) is the step's own."""
    model = onnx.ModelProto()
    model.CopyFrom(step)
    graph = model.graph
    builder = GraphBuilder(itertools.count(), "top_k/")
    k = builder.op("Unsqueeze", builder.op("Cast", BEAM_SIZE, to=TensorProto.INT64), builder.const([0], np.int64))
    log_probs = builder.op("LogSoftmax", LOGITS, axis=-1)  # (batch, V)
    block_top_k(builder, log_probs, k, _vocab_size(step), outputs=[TOP_LOG_PROBS, TOP_IDS])
    graph.node.extend(builder.nodes)
    graph.initializer.extend(builder.initializers)
    graph.input.append(helper.make_tensor_value_info(BEAM_SIZE, TensorProto.INT32, []))
    kept = [o for o in graph.output if o.name != LOGITS]
    del graph.output[:]
    graph.output.extend(_value(e["name"], _elem(e["dtype"]), e["shape"]) for e in description["outputs"]
                        if e["name"] in (TOP_LOG_PROBS, TOP_IDS))
    graph.output.extend(kept)
    graph.name = "decoder_step_top_k"
    return model


def write_beam_search(encoder_path: Path, step_path: Path, path: Path, state: Sequence[Mapping],
                      special_ids: Mapping[str, int], description: Mapping) -> Path:
    """Composes `beam_search_graph` from the two graph files, saves it at `path` and checks it."""
    attention = any(entry["name"] == ATTENTION for entry in description["outputs"])
    model = beam_search_graph(onnx.load(str(encoder_path)), onnx.load(str(step_path)), state, special_ids,
                              attention, description)
    model.doc_string = "keras-nlp-week4 beam_search graph (see config.json)"
    model.producer_name = "keras-nlp-week4 export/search_graph"
    helper.set_model_props(model, {"graph": "beam_search"})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    check_onnx(path, onnxruntime_ops=uses_onnxruntime_ops(model))  # as its step
    return path


def write_top_k_step(step_path: Path, path: Path, description: Mapping) -> Path:
    """`top_k_step_graph` of the step file, saved at `path` and checked."""
    model = top_k_step_graph(onnx.load(str(step_path)), description)
    model.doc_string = "keras-nlp-week4 decoder_step_top_k graph (see config.json)"
    helper.set_model_props(model, {"graph": "decoder_step_top_k"})
    onnx.save(model, str(path))
    check_onnx(path, onnxruntime_ops=uses_onnxruntime_ops(model))  # as its step
    return path


def compose_search(export_dir: Path, graphs: Mapping[str, dict], state: Sequence[Mapping],
                   special_ids: Mapping[str, int], quantized: Mapping | None = None) -> dict:
    """Writes the graphs composed from the export's encoder and decoder step (`beam_search`,
    `decoder_step_top_k`): the float32 ones at their places in `graphs`, or with `quantized` (the
    config's "quantized" entry) int8 ones from the int8 graphs, beside them. Returns the int8 graphs'
    entries for `quantized["graphs"]` ({} for float32)."""
    export_dir = Path(export_dir)
    files = ({name: entry["file"] for name, entry in graphs.items()} if quantized is None
             else {name: entry["file"] for name, entry in quantized["graphs"].items()})

    def beside(name: str) -> str:  # an int8 graph goes into the int8 step's folder
        return graphs[name]["file"] if quantized is None else \
            str(Path(files["decoder_step"]).parent / Path(graphs[name]["file"]).name)

    written = {"beam_search": beside("beam_search"), "decoder_step_top_k": beside("decoder_step_top_k")}
    write_beam_search(export_dir / files["encoder"], export_dir / files["decoder_step"],
                      export_dir / written["beam_search"], state, special_ids, graphs["beam_search"])
    write_top_k_step(export_dir / files["decoder_step"], export_dir / written["decoder_step_top_k"],
                     graphs["decoder_step_top_k"])
    if quantized is None:
        return {}
    step_ops = quantized["graphs"]["decoder_step"]["quantized_ops"]
    both = {op: quantized["graphs"]["encoder"]["quantized_ops"].get(op, 0) + count for op, count in step_ops.items()}
    return {"beam_search": {"file": written["beam_search"], "quantized_ops": both},
            "decoder_step_top_k": {"file": written["decoder_step_top_k"], "quantized_ops": dict(step_ops)}}
