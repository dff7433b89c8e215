"""Writes the benchmark results: JSON, `BENCHMARKS.md` and the output-length plot."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

__all__ = ["environment", "render_markdown", "write_plot", "write_report"]

LATENCY_COLUMNS = (("short", 1), ("long", 1), ("short", 32), ("long", 32))
RERUN, ORT_CACHE = "savedmodel re-run", "ort step+cache"
HUB_RATIO = "ours transformer / keras-hub transformer"
SPEEDUP_TARGET = 5.0

# What profiling found about ours vs keras-hub (static: from a separate profiling session).
TRAINING_NOTES = """\
Profile of ours vs keras-hub (`tiny`, batch 64, 48/12, idle machine, 2026-11-24):

- Found and fixed: our multi-head attention projected with the einsum `btd,dnh->bnth` (heads first).
  Keras' TensorFlow backend runs only some einsum equations as plain matmuls + reshapes and sends the
  rest to TensorFlow's generic `Einsum` kernel; ours was one of the rest, so every projection and its
  gradients ran through the slower kernel (our attention layer alone: 5.4 ms vs 5.0 ms for
  `keras.layers.MultiHeadAttention`, forward + backward, batch 32 x 64 x 128). Projecting to
  `btd,dnh->btnh` and moving the heads with one transpose makes the two layers' graphs identical
  (77 ops each after grappler) and as fast. The same change cut the ONNX decoder step from 369 to 252
  nodes.
- After it, the traced training step (forward + backward, grappler-optimised) has 1,169 TensorFlow ops
  for ours and 1,146 for keras-hub's; the difference is the multiply that gives fully masked rows zero
  attention weights (12 `Mul`, 4 `SelectV2`). Forward + backward alone: ours 32.8 ms, keras-hub 33.7 ms.
- On `small` (matmul-bound steps) the two are at parity. On `tiny` (about 50 ms steps of tiny matrices,
  bound by per-op overhead) ours averaged about 3 % slower over four runs after the fix (0.95-1.00),
  the untied variant about 1 % (0.97-1.00): the extra ops above, plus the tied output projection,
  whose gradient joins the embedding's sparse gradient into a dense one. Both buy something (exactly
  zero weights for fully masked rows; the paper's shared embedding), so they stay.
"""


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def environment() -> dict:
    """The machine and the versions that matter for the figures."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "versions": {name: _version(name) for name in ("tensorflow", "keras", "keras-hub", "onnxruntime",
                                                       "tf2onnx", "ctranslate2", "numpy")},
    }


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _latency(results: dict, path: str, source: str, batch: int, tokens: int = 32) -> float | None:
    for row in results.get("latency", []):
        if (row["path"], row["input"], row["batch"], row["tokens"]) == (path, source, batch, tokens):
            return row["ms"]
    return None


def headline(results: dict) -> dict | None:
    """ORT with the cache vs the tutorials' re-run SavedModel, 32 tokens, batch 1, short input: from the
    alternating blocks when measured (`paired`), else from the latency table."""
    inference = results.get("inference", {})
    paired = inference.get("paired")
    if paired:
        rerun, cached, speedup = paired["slow_ms"], paired["fast_ms"], paired["speedup"]
    else:
        rerun, cached = (_latency(inference, p, "short", 1) for p in (RERUN, ORT_CACHE))
        if rerun is None or not cached:
            return None
        speedup = round(rerun / cached, 2)
    return {"rerun_ms": rerun, "ort_cache_ms": cached, "speedup": speedup,
            "target": SPEEDUP_TARGET, "holds": speedup >= SPEEDUP_TARGET,
            "method": "alternating blocks" if paired else "latency table"}


def _load_note(env: dict) -> str:
    busy = env["load_average"] and env["load_average"][0] > env["cpu_count"] / 2
    note = ("The machine was busy with other work when this run started, so absolute numbers are noisy "
            "and pessimistic. " if busy else "Nothing else was running on the machine. ")
    return note + ("Every figure is a median of several runs, and every ratio compares runs taken back "
                   "to back in the same process.")


# What profiling found about ours vs CTranslate2 at real size (static: from the profiling sessions of
# 2026-11-30, format 1, and 2026-12-01/02, format 2, one thread).
REAL_SIZE_NOTES = """\
Export format 2, what each step gave. Items (1)-(8) were measured on 2026-12-01 and -02 on a 2-core AMD EPYC
with AVX2 only, items (9)-(12) on 2026-12-03 on a 2-core AMD EPYC with AVX-512 (Zen 4), the machine of
that day's table, item (13) on 2026-12-04 on an AVX2 EPYC (the table above is that one's, with all of
them); every ratio from
one run, engines or trees taking turns; on the Multi30k shape with random weights unless said:

- What changed and what each gave. Before, on the same machine the same day (`--quick`, 2 rounds,
  format 1), ours fp32 / ct2 fp32 at one thread was 0.85 (greedy, batch 1), 0.75 (greedy, 32), 0.99
  (beam 4, 1) and 0.54 (beam 4, 32). (1) One key and one value state entry per layer, and the source side
  kept once per sentence for all its beams (`shared_by_beams`), with the Transformer's step written from
  its weights instead of converted by tf2onnx (`export/transformer_step.py`): 307 -> 138 nodes in the
  file (295 -> 111 after onnxruntime's optimizer); ratios 0.99, 0.93, 1.28, 0.63. The profile then
  showed the cache write: `ScatterElements` (one index per float) took 13.9 of 41.1 ms of kernels per
  step at 128 rows (32 sentences x 4 beams). (2) `ScatterND` with one `[row, head, index]` address per
  head_dim vector instead (7.96 ms, all a copy of the caches), and `Gemm` for every dense layer (126
  nodes in the file, 117 optimized): 0.97, 1.08, 1.15, 0.74. (3) The caches bound as the step's input
  and output at once with IO binding (`Runtime.in_place_step`, the write in place: 22 against 25-27 ms a
  greedy step at 128 rows, identical ids), beam search reordering hypotheses with an unbuffered
  `np.take(..., mode="clip")` into the previous step's buffer (4.2 against 13.5 ms for the six caches at
  128 rows; fancy indexing buffers) and a log-softmax with one copy fewer: 1.36, 0.93, 1.47, 0.83 on
  random weights. On the trained weights, measured the same way: 1.19, 1.03, 1.09, 0.92. (4) The step's
  choice in the graph for beam search (`decoder_step_top_k.onnx`: `LogSoftmax` and `TopK` after the
  logits, returning each hypothesis's `beam_size` best log-probabilities and ids; the numpy search ranks
  beam x beam candidates per sentence instead of beam x 8,000, which chooses the same, proven by
  `tests/test_search_graph.py` and by 1,000 of 1,000 identical beam outputs on the Multi30k test split):
  beam 4 at batch 1 1.09 -> 1.48, at batch 32 0.92 -> 0.98 (base: 0.98 -> 1.11), the table above.
- (5) Beam search reorders hypotheses in place (2026-12-01, evening, same EPYC): only the rows whose
  hypothesis changed, and of a self-attention cache only the positions written so far
  (`serving.contract.position_axes`; the step masks the later ones), instead of every row's
  `max_length` slots into a second buffer that then had to be bound again (`serving/search.py`
  `_reorder_rows`: 0.18 against 0.62 ms per cache entry and step at 128 rows with half the rows moved,
  numpy alone). The Multi30k test split gives the same 1,000 of 1,000 beam 4 texts as before. Old tree
  against new, alternating, 3 rounds (trained Multi30k export, one thread, 64 random sources of 20
  tokens, 32 forced tokens; the speed ratio new / old per round): beam 4 at batch 32 1.06 (0.94-1.09)
  fp32 and 1.13 (1.11-1.15) int8; at batch 1 1.18 (1.06-1.18) fp32 and 1.39 (0.95-1.82) int8.
- (6) Greedy search on the top-k step too (2026-12-02, same EPYC): `decoder_step_top_k` with one column
  returns each row's best log-probability and id, which is the argmax (ties to the lower id) and the
  score the search reports, so the 8,000 logits per row no longer come back to numpy for an argmax and
  a log-sum-exp (`greedy_steps(top_k_step=...)`; the runtime passes it wherever no constraint needs the
  logits). Logits step against it, alternating, 10 rounds, 32 forced tokens: 1.07x fp32 at batch 1 and
  32, 1.27x int8 at batch 1, 1.17x at 32; the same ids, scores within 1e-5
  (`tests/test_search_graph.py`).
- (7) The int8 encoder quantized whole: onnxruntime's quantizer rewrites a `Gemm` into the `MatMul` it
  quantizes only when `beta` is 1, and tf2onnx writes the encoder's Dense layers as two-input `Gemm`s
  with `beta` 0, so 18 of its matrix products had stayed float32 (`export/quantize.py`
  `_gemms_for_the_quantizer`; `tests/test_quantize.py`). The int8 encoder: 1.31x faster at 1 sentence,
  1.15x at 32 (alternating, same inputs); test BLEU of the int8 graphs 19.19 against 18.92 in float32
  (875 of 1,000 greedy outputs identical; before: 19.09, 917).
- (8) Beam search ranks the top-k step's `k` x `k` candidates per sentence with one stable sort instead
  of `k` rounds of argmax (`top_k_stable` at 16 x `k` values or fewer): 3.6 against 80 us per step at 1
  sentence, 9.3 against 70 us at 32 (numpy alone), the same choice.
- (9) Self-attention caches that start with 16 positions and double as the output grows
  (`serving.runtime.growing_caches`, through `Runtime.search_start`): the standard step attends over every
  slot of the cache it is given and masks the unwritten ones, so caches sized for the Multi30k model's
  64 positions made every step of a 15-20 token output pay for 64. On the trained Multi30k run,
  `Runtime.generate` over the first 128 lines of `val.de` (16 at batch 1; stopping at EOS), grown against
  sized for 64 from the start, alternating, 9 rounds, speed grown / whole: fp32 greedy b1 1.07
  (0.86-1.82), b32 1.03 (0.92-1.14), beam 4 b1 1.06 (0.99-1.13), b32 1.04 (0.92-1.11); int8 1.03
  (0.88-1.24), 1.10 (0.97-1.21), 1.21 (0.89-1.45), 1.08 (0.96-1.22); the same texts in every round. An
  earlier fp32 run of 5 rounds gave 0.95, 0.98, 1.14, 1.00: a few percent, clearest in int8, where the
  attention is a larger part of the step.
- (10) A step is one `run_with_iobinding` (`Runtime.in_place_step`): the token ids and the index are
  written into arrays bound once, and after the first call the top k (or logits) and the attention rows
  come back in arrays of the step's own bound as its outputs, where every call had bound both inputs
  again and wrapped each output in a new `OrtValue` (about 80 us a call). The trained top-k step alone,
  int8: 325 against 407 us at 1 row, 528 against 634 at 4. Whole searches (32 forced tokens, the
  benchmark's sources), the tree before against after, alternating, 9 rounds: int8 greedy b1 1.23x
  (0.95-1.34), b32 1.03, beam 4 b1 1.06, b32 0.99; fp32 1.08, 1.08, 1.11, 1.01; the same ids. Beam
  search also skips the finished-row writes until a hypothesis has finished and the reorder on a step
  where no hypothesis moved: the search alone on a stub step, 92 against 112 us a step at 1 sentence x 4
  beams.
- (11) Beam search leaves each parent's best child in its parent's rows and puts the other children in
  the rows no child continues (`serving.search.stay_in_place`), where ranking the new hypotheses into
  rows 0..k-1 moved most of them; reordering then copies only those children's caches. That reorder
  had been 13 % of an int8 beam 4 search at batch 32 (cProfile; 157 us per cache at 128 rows with 93
  moved at 21 positions, against 50 us for one `memcpy` of the same bytes). Before against after,
  alternating, 9 rounds: beam 4 at batch 32 int8 1.08x (0.86-1.15), fp32 1.03x (0.95-1.14); at batch 1
  0.98 and 1.05 (within the noise; the rule runs in Python below 9 sentences, 7.5 against 54 us with
  numpy). The row a hypothesis lives in changes no score, only the row order exact ties are broken by:
  the whole Multi30k test split gave the same 1,000 of 1,000 beam 4 texts (sacreBLEU 39.9) through
  `Runtime.generate` as at the start of the day (22.9 against 21.4 s, one thread), and the export's
  validation the same 1,000 of 1,000 in-graph beam searches.
- (12) The top k by blocks (`export.search_graph.block_top_k`, in `decoder_step_top_k` and the in-graph
  search's loop): the maximum of every 64 columns (`ReduceMax` of the log-probabilities reshaped to
  (rows, 125, 64)), the k best blocks, sorted by block, and the k best of their k x 64 columns: the same
  values and ids as `TopK`, ties included (onnxruntime's CPU `TopK` runs a heap over all 8,000 columns
  whatever k is; `ReduceMax` over the same array costs a tenth of it). `LogSoftmax` + top k alone, 1
  thread, with a training run beside it: 353 against 182 us at 32 rows and k 1, 402 against 219 at k
  4, 2,261 against 1,177 at 128 rows; 26 against 30 us at 1 row (16 small nodes instead of one).
  Whole searches on the trained Multi30k export (`Runtime.generate` over `val.de`, natural EOS, plain
  against by blocks, alternating, 7 rounds, the machine idle), speed by blocks / plain: fp32 1.06
  (0.90-1.14), 1.00 (0.91-1.07), 1.05 (0.78-1.26), 0.98 (0.88-1.09); int8 0.99 (0.92-1.04), 1.05
  (0.96-1.15), 1.03 (0.80-1.30), 1.01 (0.92-1.13) at greedy b1, b32, beam 4 b1, b32: a few per cent
  where many rows step at once (int8 greedy b32 is the row the table misses), within the noise
  elsewhere; the same texts on 200 validation sentences in every row. Kept: the table above has
  it.
- (13) Beam search's own work per step at small batches (2026-12-04, AVX2 EPYC): the few values a
  step ranks indexed with the sentence index instead of `take_along_axis` (three calls a step: 5.3 against
  1.2 us each at 1 x 4 values), the top-k step's outputs read where they lie and
  copied only when a finished hypothesis changes them, and each moved cache row copied by one slice
  assignment (`serving.search.row_copies`; after `stay_in_place` no moved row is read, so nothing has to
  be gathered first): 6.6 against 12.4 us per cache entry with 3 of 4 rows moved, 106 against 118 us
  with 64 of 128. The search alone on a stub step: 146 -> 114 us a step at 1 sentence x 4 beams. Whole
  searches on the Multi30k-shape export, the tree before against after, alternating, 15 rounds, the same
  ids: int8 beam 4 at batch 1 1.10x (0.85-1.19), fp32 0.97 (0.87-1.15, within the noise: the fp32 step
  is three times as long). The in-graph search's lead at beam 4 batch 1 went from 1.10-1.14x to 1.09x
  (the table above), and 1.085x in int8 measured alone (25.7 against 27.3 ms a search).
- (14) Batch-1 searches in one graph (2026-12-06, a 2-core AMD EPYC with AVX-512, Zen 4; the figures
  are `bench.real_size`'s engines side by side, 9-11 rounds, one thread, the Multi30k shape, 32 forced
  tokens). Where a batch-1 search went: the encoder 0.9-1.2 ms, 32 int8 top-k steps at 4
  rows 0.36 ms each in `run_with_iobinding`, and the numpy search 2.6 ms (about 80 us a step between the
  steps; 53 us a step on a stub step). `beam_search.onnx` had been no faster in int8 on this machine
  (0.97x the numpy search at beam 4 batch 1, 0.80x at batch 32): its caches had `max_length` slots from
  the first step, every step attending over all of them and the reorder (`Gather`) copying them all.
  Now its self-attention caches start empty and grow by one position a step (a `Concat` after the
  reorder): in-graph / numpy, int8, 1.06x at beam 4 batch 1, 0.95 at 4 sentences, 0.92 at 32; fp32 1.07,
  1.04, 0.93. Its new `min_length` input (EOS not before it: `min_new_tokens`, CTranslate2's
  `min_decoding_length`) adds a row that is -inf at EOS to the logits, 5 us a step at 4 x 8,000 (a
  `Where` on a broadcast mask took 35). The runtime now runs a batch-1 greedy or beam request without
  rules in that graph (`Runtime.runs_in_graph`, `IN_GRAPH_MAX_BATCH` 1), and so does the benchmark's
  "ours" at batch 1, forced by `min_length` as CTranslate2 is by `min_decoding_length`. Against
  CTranslate2 in one run, numpy search -> in-graph: int8 beam 4 batch 1 1.00 -> 1.09, greedy 1.07 ->
  1.06 (in-graph / numpy 1.05), fp32 beam 4 1.34 -> 1.73, greedy 1.75 -> 2.05; at 2 sentences in-graph
  / numpy 1.00 int8 and 1.07 fp32, so the rule stays at one sentence. Validation compares the graph
  with the numpy search on the whole test split as before (`export.validate`'s runtime keeps the numpy
  search); float32 scores agree to 1e-5, int8 ones to about 2e-4 relative with the same ids
  (`tests/test_search_graph.py`).
- (15) The Transformer's encoder written from its weights (`export/transformer_encoder.py`, 2026-12-06,
  the same Zen 4 EPYC), as its step is: 83 nodes against tf2onnx's 261 for the Multi30k shape (3 encoder
  layers and the 3 decoder layers' cross-attention keys and values), one `Gemm` per dense layer on
  `(batch * source_length, d_model)` rows and one for each layer's keys and values together. tf2onnx's,
  quantized, kept 15 `MatMulIntegerToFloat`s with their own `DynamicQuantizeLinear`s and its shape
  arithmetic; the written one quantizes to `DynamicQuantizeMatMul`s (157 nodes in int8 against 338).
  The encoders alone, alternating, 15 rounds, 20 source tokens: int8 0.52 against 0.71 ms at one
  sentence (1.39x), 13.6 against 17.3 ms at 32 (1.27x); fp32 1.31 against 1.46 ms (1.08x) and 37.4
  against 37.9 ms (1.01x). The queries are scaled by 1/sqrt(d_k) with a `Mul` rather than in their
  weights (as the step's are): int8 quantizes the query, key and value weights as one matrix with one
  scale, and on the stand-in's weights the int8 encoder was 2.11 % off float32 with the scale folded,
  1.99 % with the `Mul`, tf2onnx's 1.77 % (mean relative error of its outputs at 32 sentences), at the
  same speed (the table's run had the scale folded, 80 nodes). The outputs agree to 3.5e-6 in float32 (`tests/test_transformer_encoder.py`
  compares them with `Transformer.encode` at 1e-5; the export validates them as every graph). The
  evening's two table runs, before and after (15), do not measure it: the machine itself changed speed
  between them (CTranslate2's int8 beam 4 at batch 32 ran 34 % faster in the second), and the int8
  ratios moved both ways (0.99, 1.10, 1.11, 1.20 before; 1.02, 1.08, 1.07, 1.11 after, greedy b1, b32,
  beam 4 b1, b32), within their per-round ranges. Not re-measured: the int8 quality on the
  trained Multi30k model (the step has quantized its query, key and value weights as one matrix since
  format 2, and its int8 test BLEU was 38.95 against 39.00 in float32).
- Where the time goes on the AVX2 EPYC (2026-12-04, int8 Multi30k shape, one thread), the row that
  misses (beam 4, batch 1): the encoder 1.2-1.4 ms a search (213 nodes after onnxruntime's optimizer,
  about 120 of them tf2onnx's shape arithmetic), then 32 top-k steps at 4 rows, 0.52-0.83 ms each bound
  in place (the `DynamicQuantizeMatMul`s are most of it; the output projection's alone about a fifth),
  and the numpy search about 0.11 ms a step. Without Python between the steps (`beam_search.onnx`) the
  search takes 25.7 ms, CTranslate2's int8 25.3 ms in the table's run: the engines' int8 steps at 4 rows
  are at parity there, and what is left to gain is the search's few percent, not the graph's. Per-node
  cost is not it either: a chain of 201 `Add` or `Reshape` nodes runs 106 and 81 us, 0.4-0.5 us a node,
  60-70 us of a 140-node step. Tried and not kept: onnxruntime without weight prepacking
  (`session.disable_prepacking`), 0.65x in fp32 at 1 row, 0.53x int8 at 1 row, 0.63x at 4.
- Where the time goes on that Zen 4 EPYC (onnxruntime's profiler, the trained top-k step bound in place,
  1 thread, 32 cache slots, index 20), at 128 rows (32 sentences x 4 beams): float32 20.4 ms of
  kernels, `Gemm` and `FusedGemm` 66 % (about 90 GFLOP/s, near one core's peak: the dense layers are
  compute-bound there, as CTranslate2's), the attention products (`FusedMatMul` + `MatMul`, 2 x 6 x
  1,024 one-row products) 14.5 %, `TopK` + `LogSoftmax` 9 %, `ScatterND` 2 % (3.0 ms, 14 %, when the
  caches are not bound in place: the copy the in-place binding saves); int8 12.9 ms,
  `DynamicQuantizeMatMul` 35 %, the attention products 35 %, `TopK` + `LogSoftmax` 12 %, `ScatterND` 3 %.
  Of a whole int8 beam 4 search at batch 32 (412 ms), 22 ms are the encoder and state, 315 the steps, 75
  the numpy search (before (11)); at batch 1, 1.9 + 19.5 + 5.9 of 27.3 ms.
- Tried and not kept (2026-12-03): the fused attention in int8 on the trained weights,
  `Runtime.generate` over `val.de` as in (9), 7 rounds, speed standard / fused: 0.96 (0.86-1.37), 0.90
  (0.87-1.08), 1.04 (0.93-1.25), 0.99 (0.80-1.13) at greedy b1, b32, beam 4 b1, b32: not faster in
  int8 either. `TopK` on the logits with the log-probabilities from `ReduceLogSumExp` instead of
  `LogSoftmax` then `TopK`: 4.3x slower (5.4 against 1.25 ms at 128 x 8,000; onnxruntime's
  `ReduceLogSumExp` is slow), so the step keeps `LogSoftmax`.
- On the fully trained Multi30k run (the recipe's 22 epochs, test BLEU lc 39.2 greedy; the table above):
  the export passed validation (decoder step 6.7e-6 against Keras, the top-k step 5.3e-6; greedy and
  beam 1 and 4 identical on 1,000 of 1,000 test sentences on every path); int8 sacreBLEU 38.95 against
  39.00 in float32, 878 of 1,000 greedy outputs identical.
- On trained weights (a Multi30k Transformer of the recipe after 3 epochs, test BLEU lc 19.0 greedy):
  the format-2 export passed validation (decoder step max abs difference 6.2e-6 against Keras; greedy
  identical on 1,000 of 1,000 test sentences on every path); beam 4 through `python -m serving` over the
  whole test split gave the format-1 runtime's output on 1,000 of 1,000 sentences (BLEU lc 22.2 both) in
  66 s against 134 s (one thread); the int8 graphs scored BLEU 19.09 against 18.92 in float32 (917 of
  1,000 greedy outputs identical).
- Tried and not kept: weight-only 8-bit `MatMulNBits` (onnxruntime's `MatMulNBitsQuantizer`, block 32,
  symmetric, accuracy level 4: int8 activations, the kernels onnxruntime tunes for one-token LLM
  decoding), on the decoder step with its `Gemm`s written as `MatMul` + `Add`: 0.79 against 0.73 ms for
  the dynamic-int8 step at 1 row, 2.9 against 1.4 ms at 4, 14.7 against 8.4 ms at 32 and 60.5 against
  36.8 ms at 128, with logits closer to float32 (max abs difference 0.04-0.05 against 0.07-0.09).
  Per-channel weight scales (`quantize_dynamic(per_channel=True)`, CTranslate2's layout): 1.14 against
  0.65 ms per step at batch 1 and 23.3 against 23.2 ms at 128 rows, with no better logits on these
  weights. The attention products as `Mul` + `ReduceSum` instead of `MatMul` (2,623 against 528 us per
  attention at 128 rows), or as keys x query instead of query x keys (within 2 %).
- Kept as an option, not the default (2026-12-03): each layer's self-attention as one
  `com.microsoft.DecoderMaskedMultiHeadAttention` (`past_present_share_buffer=1`,
  `past_sequence_length` = `index`, `scale` 1 since the query weights carry 1/sqrt(d_k)), written by
  `export/transformer_step.py` with `python -m export --fused-attention` (`make export
  FUSED_ATTENTION=1`; config.json's `operators` is then "onnxruntime"): **93 nodes** for the Multi30k
  model's 3 layers instead of 126 (the scatter-address prelude and the causal mask go too; the kernel
  attends over positions 0..index only), logits and caches within 2.4e-6 of the standard step over 12
  steps, and Keras's numbers at every step (`tests/test_transformer_step.py`). Traps: the CPU kernel
  fails on packed QKV (`Tensor size (12288) != new size (4096)`: it reshapes the packed query as if it
  held the query alone), so q, k and v go in as three inputs; its beam path (`beam_width` > 1 with
  `cache_indirection`) reads `mask_index` and `attention_bias` without checking that they were given
  (`ApplyAttentionWithBeams` in `contrib_ops/cpu/bert/decoder_masked_multihead_attention.cc`), so the
  numpy search keeps reordering rows in place; onnx's shape inference knows no contrib operator, so the
  step types the kernel's output (onnxruntime's quantizer reads it); and onnxruntime 1.30, the newest
  onnxruntime-node and onnxruntime-web on npm, computes the first position (`past_sequence_length` 0)
  wrongly in native code and never returns from it in WebAssembly, while 1.32 (Python) matches Keras.
  Speed in place with IO binding, standard / fused ms per step, 1 thread, random Multi30k weights,
  alternating, 7 rounds: on 2026-12-02 (idle EPYC, 32 steps) 2.82/2.68, 3.79/3.68, 12.8/12.7,
  36.5/36.7 at 1, 4, 32, 128 rows (1.05, 1.03, 1.01, 0.99x); on 2026-12-03 (another EPYC, a training
  run paused) 1.24/1.32, 6.71/6.50 and 20.8/20.9 at 1, 32 and 128 rows with 32 cache slots (0.91, 1.07,
  0.99x, each round's ratio ranging over 0.74-1.19), 1.22/1.20 and 6.58/6.55 at 1 and 32 rows with 64
  slots (1.07, 1.00x). The same speed within the noise, so the default export keeps the standard
  126-node step (117 after onnxruntime's optimizer), which every engine runs; the fused one is for
  onnxruntime >= 1.32 (the runtime refuses it on older ones, the Node example and the web page refuse
  it in one line) and, untried here, CUDA. Per-node overhead is about 1 us here (a chain of 100 small
  `Add`/`Mul` nodes: 127 against 17 us for one), about 0.13 ms of a 3 ms step at batch 1.
- Where the time goes now (2026-12-02, onnxruntime's profiler, the trained Multi30k step in place, one
  thread, 32 greedy steps over 32 cache slots). Batch 1, float32: 3.15 ms a step, of which the 19
  `Gemm`s take 69 % of the kernel time. They read 19.2 MB of weights per step (the tied 8,000 x 256
  output projection 8.2 MB of it); measured alone, each with its weights hot in cache, the same `Gemm`s
  take 0.83 ms, and summing 19.2 MB of arrays once with numpy takes 2.85 ms here (6.7 GB/s) against a
  2.55-3.15 ms step. So at batch 1 the float32 step streams its weights from memory, as CTranslate2's must;
  a margin over it there comes from everything around the weights (the search, the caches, per-call
  overhead), not from faster arithmetic. In int8 the weights are 4.9 MB and the step takes 0.58 ms.
  Batch 32: float32 11.7 ms a step, `Gemm` 68 % of the kernels, the attention products of the 3 x 2
  attentions (8 heads x 32 rows of 1-row matrix products each) 17 %, the cache writes (`ScatterND`) 3 %;
  int8 8.2 ms, `DynamicQuantizeMatMul` 49 %, the attention products (float32 in both) 27 %: int8
  shrinks the dense layers only, which is why it gains 1.4x over float32 where CTranslate2's gains
  1.5-1.9x.

On a 2-core Intel Xeon with AVX-512 (VNNI, BF16, FP16; 2026-12-02, the same export format 2, the Multi30k
shape and `base` with random weights as no trained Multi30k run was on that machine;
`bench.real_size.run_generation`, 5 rounds, 1 and 2 threads, 533 s, a training run paused), ours /
CTranslate2 at one thread, median (range) of the per-round ratios:

| size | row | fp32 | int8 |
| --- | --- | --- | --- |
| multi30k | greedy, batch 1 | 0.84 (0.73-0.87) | 0.76 (0.66-0.80) |
| multi30k | greedy, batch 32 | 0.93 (0.86-1.25) | 0.92 (0.81-1.02) |
| multi30k | beam 4, batch 1 | 1.09 (1.06-1.29) | 0.85 (0.72-1.03) |
| multi30k | beam 4, batch 32 | 0.84 (0.59-0.97) | 0.81 (0.66-1.06) |
| base | greedy, batch 1 | 1.02 (0.86-1.08) | 0.98 (0.88-1.09) |
| base | greedy, batch 32 | 0.96 (0.91-1.22) | 0.97 (0.67-1.13) |
| base | beam 4, batch 1 | 1.09 (0.95-1.34) | 0.91 (0.62-1.13) |
| base | beam 4, batch 32 | 0.91 (0.87-1.09) | 1.03 (0.95-1.18) |

So the one-thread targets that hold on the EPYC above do not hold on this Xeon: CTranslate2 gains more
from it than onnxruntime does (Multi30k greedy at batch 1, fp32: CTranslate2 948 tok/s against 217 on
the EPYC, 4.4x; ours 795 against 260, 3.1x). At two threads CTranslate2 fell to 131 tok/s there (its
OpenMP workers on two vCPUs) while ours held, so every two-thread ratio was 1.3-7.3; the targets are
one thread. A paired re-run of greedy batch 1 fp32 (12 alternating samples) gave 0.84 again: ours 39.0
ms for 32 tokens at best, CTranslate2 32.6. Where ours goes there (best of 15 calls, alone): 34.1 ms,
of which 30.5 the 32 steps of `decoder_step_top_k` bound in place (0.95 ms a step), 1.2 the encoder and
state, 2.4 the rest (the numpy loop itself, run on a stub step, takes 0.28 ms for 32 steps; binding the
12 state entries on the first step 0.37 ms). A `Gemm` of one row by the tied 8,000 x 256 output
projection takes 414-426 us on its own there (8.2 MB, about 20 GB/s; the same with `transB` 0 or as `MatMul` + `Add`), against
16-40 us for each 256 x 768, 256 x 1024 or 1024 x 256 one (measured beside a training run, so rough): the
projection is about 40-45 % of our step and the 19 `Gemm`s one by one add up to 0.65-0.8 of its 0.95 ms,
while onnxruntime's cost per node is 0.78 us there (a chain of 100 `Add`/`Mul` nodes against one), 0.09
ms for the step's 117. numpy's OpenBLAS on one thread did the same one-row products in 9-23 us and the
projection in 346 us. So on this CPU the gap (about 0.2 ms a token) is mostly onnxruntime's one-row
`Gemm` against the BLAS CTranslate2 links, then the per-node cost; the numpy search is not it. The
lever that closes it is not found yet.

Format 1 (2026-11-30, the faster machine, trained Multi30k model):

- At batch 128 the profiled step took 16.2 ms: matrix products 7.4 ms, and moving the stacked key/value
  caches 7.2 ms (`Slice` 3.8, `Concat` 1.9, `ScatterND` 1.5); at batch 1 the step was bound by per-node
  overhead (337 nodes). Kept then: beam search's top k by k rounds of argmax instead of a full sort, the
  float32 log-softmax, the cache written with one `ScatterND`, tf2onnx's 8-node `Tensordot` folded into
  one `MatMul`. Not kept then: onnxruntime's transformer optimizer (14 of 360 nodes fused, not faster)
  and IO binding with ping-pong buffers for the stacked caches (slower).
- int8 quality on Multi30k (`make export RUN=artifacts/compare-multi30k/transformer QUANTIZE=1`, whole
  test split): sacreBLEU 39.04 with the dynamic-int8 graphs against 39.00 in float32 (910 of 1,000 greedy
  outputs identical).
- Threads: on a 2-vCPU machine a second thread helps onnxruntime at batch 32 but makes CTranslate2
  slower (its OpenMP workers on two vCPUs that share a core), so the 2-thread ratios flatter ours; the
  1-thread rows are the like-for-like comparison.
"""

# The targets of export format 2 for the real-size part (issue 20): (ratio, size, method, batch,
# threshold). Ours at least as fast as CTranslate2 on the same weights on every row, in float32 and in
# int8, at both sizes, and 1.2x at greedy batch 1 on the Multi30k model.
_ROWS = (("greedy", 1), ("greedy", 32), ("beam 4", 1), ("beam 4", 32))
REAL_TARGETS = tuple((ratio, size, method, batch,
                      1.2 if (ratio, size, method, batch) == ("ours fp32 / ct2 fp32", "multi30k", "greedy", 1)
                      else 1.0)
                     for ratio in ("ours fp32 / ct2 fp32", "ours int8 / ct2 int8")
                     for size in ("multi30k", "base") for method, batch in _ROWS)
PIPELINE_TARGET = 0.8
PADDING_TARGET = 0.15
HUB_REAL_TARGET = 1.1


# Measured by hand (`python -m serving.loadtest --stream`), not by `make bench`: kept in the full report so a
# re-run of the benchmark does not drop it.
STREAMING_NOTES = """\
## HTTP server: streaming

Not part of `make bench`'s report yet: measured 2026-12-01 11:20 UTC by hand, one after the other in one
session, on a 2-core AMD EPYC (AVX2), with the load generator on the same 2 cores:
`python -m serving.loadtest --export RUN/export --concurrency 32 --requests 2000` with and without
`--stream`, on a dates export (the recipe of 2026-12-01, seed 1). Time to first token is from sending the
request to the first `token` event.

| endpoint | clients | requests | errors | req/s | p50 ms | p99 ms | first token p50 ms | first token p99 ms | texts per model call |
|---|---|---|---|---|---|---|---|---|---|
| `POST /v1/generate` | 32 | 2000 | 0 | 383.2 | 81.1 | 148.9 | | | 16.1 |
| `POST /v1/generate_stream` | 32 | 2000 | 0 | 187.8 | 170.1 | 257.6 | 97.0 | 176.6 | 15.5 |

Streaming halves the throughput here: a streamed call decodes its batch in one search without the
length grouping `generate` does, and every token of every text becomes an event handed from the worker
thread to the event loop and a chunk on the socket (12 per date). The first piece of text arrives in
about half the time the whole answer takes.

On a Multi30k export, measured 2026-12-01 15:00 UTC on the same machine, export format 2: a Transformer of
the recipe trained for 3 epochs only (`python -m keras_nlp_week4 train --task multi30k --epochs 3`, 27
minutes of `model.fit`; test BLEU lc 19.0 greedy, 22.2 beam 4), `python -m serving.loadtest --export
RUN/export --concurrency 32 --requests 500 --texts test_2016_flickr.de`, with and without `--stream`:

| endpoint | clients | requests | errors | req/s | p50 ms | p99 ms | first token p50 ms | first token p99 ms | texts per model call |
|---|---|---|---|---|---|---|---|---|---|
| `POST /v1/generate` | 32 | 500 | 0 | 58.8 | 521.7 | 757.4 | | | 16.7 |
| `POST /v1/generate_stream` | 32 | 500 | 0 | 53.6 | 550.6 | 903.6 | 213.5 | 738.5 | 16.1 |

At this size the model calls dominate, so streaming costs 9 % of the throughput (against half on the
dates model, whose steps are tiny) and the first words of a sentence arrive in 40 % of the time the whole
translation takes.
"""


def real_size_targets(real: dict) -> list[dict]:
    """Each target of `REAL_TARGETS` at every thread count measured: its value, range and verdict."""
    verdicts = []
    for ratio, size, method, batch, threshold in REAL_TARGETS:
        for row in real.get("rows", []):
            if (row["size"], row["method"], row["batch"]) == (size, method, batch) and ratio in row["ratios"]:
                value = row["ratios"][ratio]
                verdicts.append({"ratio": ratio, "size": size, "method": method, "batch": batch,
                                 "threads": row["threads"], "value": value["median"], "range": value["range"],
                                 "target": threshold, "holds": value["median"] >= threshold})
    return verdicts


def _real_size_markdown(real: dict, pipeline: dict | None, training: list | None) -> list[str]:
    lines = ["## Real size: generation against CTranslate2", "",
             f"Output tokens/s (batch x {real['tokens']} forced tokens / seconds; beam hypotheses not counted), "
             f"source {real['source_tokens']} tokens per sentence, distinct random sentences per row, the "
             "encoder included. Engines take turns within each of "
             f"{real['rounds']} rounds (a round's sample repeats a short call until it lasts about "
             "0.25 s, the same count for every engine of a row"
             + (f"; a row of such short calls takes {real['short_rounds']} rounds"
                if real.get("short_rounds") and real["short_rounds"] > real["rounds"] else "")
             + "); a figure is the median over rounds, a "
             "ratio the median of the "
             "per-round ratios (speed of the first over the second) with their range. `ours` is "
             "`serving.runtime` (onnxruntime, one decoder step per token with the key/value cache, numpy "
             "search); `ct2` is CTranslate2 on the model `make export TARGET=ctranslate2` converts from "
             "the same weights; `savedmodel` is the TensorFlow path (greedy, TensorFlow's own threads).", ""]
    if real.get("measured"):
        lines += [f"Measured {real['measured']}.", ""]
    for model in real["models"]:
        lines.append(f"- `{model['name']}`: {model['parameters']:,} parameters, {model['description']}.")
    lines.append("")
    engines = list(dict.fromkeys(e for row in real["rows"] for e in row["engines"]))
    pairs = list(dict.fromkeys(p for row in real["rows"] for p in row["ratios"]))
    rows = []
    for row in real["rows"]:
        cells = [f"{row['engines'][e]['tokens_per_s']:,.0f}" if e in row["engines"] else "" for e in engines]
        ratios = [_ratio_cell(row["ratios"].get(p)) for p in pairs]
        rows.append([row["size"], row["method"], row["batch"], row["threads"], *cells, *ratios])
    lines += _table(["size", "method", "batch", "threads", *[f"{e} tok/s" for e in engines], *pairs], rows)
    verdicts = real_size_targets(real)
    if verdicts:
        lines += ["", "Targets:", ""]
        lines += _table(["ratio", "size", "method", "batch", "threads", "value (range)", "target", "holds"],
                        [[v["ratio"], v["size"], v["method"], v["batch"], v["threads"],
                          _ratio_cell({"median": v["value"], "range": v["range"]}), f">= {v['target']:g}",
                          "yes" if v["holds"] else "**no**"] for v in verdicts])
    lines += ["", REAL_SIZE_NOTES.strip()]
    search = real.get("in_graph_search")
    if search and search["rows"]:
        lines += ["", f"The in-graph search (`onnx/beam_search.onnx`, one `session.run` per batch) against the "
                  f"runtime's numpy search over `decoder_step_top_k.onnx` (what `python -m serving` runs for "
                  f"more than one sentence; for one, since (14), the in-graph search), "
                  f"{search['threads']} thread, float32, the first {search['sentences']} test lines of each "
                  f"run, stopping at EOS; ms for all of them, median of {search['rounds']} rounds; speed "
                  "ratio in-graph / runtime with its range; `identical`: outputs equal to the runtime's.", ""]
        lines += _table(["size", "method", "batch", "in-graph ms", "runtime ms", "in-graph / runtime", "identical"],
                        [[r["size"], r["method"], r["batch"], r["in_graph_ms"], r["runtime_ms"],
                          _ratio_cell(r["ratio"]), f"{r['identical']}/{search['sentences']}"]
                         for r in search["rows"]])
    server = real.get("server")
    if server:
        lines += ["", f"HTTP server on the `{server['model']}` model "
                  f"({'trained' if server['trained'] else 'random weights'}), one text per request:", ""]
        lines += _table(["mode", "clients", "requests", "errors", "req/s", "p50 ms", "p99 ms"],
                        [[r["mode"], r["concurrency"], r["requests"], r["errors"], r["requests_per_s"],
                          r["p50_ms"], r["p99_ms"]] for r in server["rows"]])
    lines.append("")
    if pipeline:
        lines += ["## Real size: training in the real pipeline", ""]
        if "skipped" in pipeline:
            lines += [f"Not measured: {pipeline['skipped']}.", ""]
        else:
            ratio = pipeline["ratio_real_to_train_on_batch"]
            lines += [
                f"`model.fit` over the Multi30k recipe's `tf.data` pipeline ({pipeline['model']}, "
                f"{pipeline['parameters']:,} parameters, vocabulary {pipeline['vocab_size']:,}, batch "
                f"{pipeline['batch_size']}, length buckets with partial buckets "
                f"{'dropped' if pipeline['dropped_partial_buckets'] else 'kept'}), "
                f"{'a whole epoch' if pipeline['whole_epoch'] else 'the first'} "
                f"({pipeline['timed_batches']} of {pipeline['batches_in_epoch']} batches) against "
                f"`train_on_batch` on random batches of the epoch's mean shape "
                f"{tuple(pipeline['train_on_batch_shape'])} (batch, source, target), same model:", ""]
            lines += _table(["figure", "value"], [
                ["real (non-padding) tokens/s in fit", f"{pipeline['real_tokens_per_s']:,.0f}"],
                ["positions/s in fit (padding included)", f"{pipeline['positions_per_s_in_fit']:,.0f}"],
                ["train_on_batch positions/s", f"{pipeline['train_on_batch_positions_per_s']:,.0f}"],
                ["real tokens/s / train_on_batch positions/s",
                 f"**{ratio}** (target >= {PIPELINE_TARGET}: {'holds' if ratio >= PIPELINE_TARGET else 'no'})"],
                ["padding per batch, mean (worst)",
                 f"{pipeline['padding_mean']:.1%} ({pipeline['padding_max']:.1%}) (target < "
                 f"{PADDING_TARGET:.0%}: {'holds' if pipeline['padding_mean'] < PADDING_TARGET else 'no'})"],
                ["the input pipeline alone, one epoch", f"{pipeline['pipeline_alone_seconds']} s"],
                ["fit wall time", f"{pipeline['fit_seconds']} s"]])
            lines.append("")
    hub = [e for e in training or [] if e.get("vocab_size", 64) > 64 and HUB_RATIO in e["ratios"]]
    for entry in hub:
        value = entry["ratios"][HUB_RATIO]
        lines += [f"Training at the Multi30k size and vocabulary (`{entry['config']}`), ours/keras-hub: "
                  f"**{value}** (per-round range {entry['ratio_ranges'][HUB_RATIO]}; target >= "
                  f"{HUB_REAL_TARGET}: {'holds' if value >= HUB_REAL_TARGET else 'does not hold'}).", ""]
    return lines


def _ratio_cell(value: dict | None) -> str:
    if not value:
        return ""
    return f"{value['median']:.2f} ({value['range'][0]:.2f}-{value['range'][1]:.2f})"


def render_markdown(results: dict) -> str:
    env = results["environment"]
    lines = ["# Benchmarks", "",
             f"Command: `{results['command']}` ({'quick' if results['quick'] else 'full'} run, "
             f"{results['seconds']:.0f} s, {results['date']}).", "",
             f"Machine: {env['cpu']} ({env['cpu_count']} cores), {env['platform']}, Python {env['python']}; "
             f"load average at the start {env['load_average']}.", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v) + ".", "",
             _load_note(env), ""]
    training = results.get("training")
    if training:
        lines += ["## Training throughput", "",
                  "Tokens/s = (source + target positions) x batch / step time, steady state after warm-up "
                  "(`train_on_batch`, Adam 1e-3, masked cross-entropy, float32, `jit_compile=False`, "
                  "same random batch for every model). Within a round the models take turns one training "
                  "step each; a figure is the median over rounds and a ratio the median of the per-round "
                  "ratios.", ""]
        rows = []
        for entry in training:
            ours = entry["models"]["ours transformer"]["tokens_per_s"]
            for name, m in entry["models"].items():
                peer = "transformer" in name and not name.startswith("ours")
                rows.append([entry["config"], name, f"{m['parameters']:,}", f"{m['tokens_per_s']:,.0f}",
                             m["step_ms"], f"{ours / m['tokens_per_s']:.3f}" if peer else ""])
        lines += _table(["configuration", "model", "parameters", "tokens/s", "ms/step",
                         "ours/peer (of the medians)"], rows)
        lines += ["", "Ratios (median of the per-round ratios, each from back-to-back runs, and their range):",
                  ""]
        lines += _table(["configuration", "ratio", "value", "per-round range"],
                        [[e["config"], name, value,
                          "-".join(str(r) for r in e.get("ratio_ranges", {}).get(name, []))]
                         for e in training for name, value in e["ratios"].items()])
        # configurations without the peer do not count either way
        hub = [e["ratios"][HUB_RATIO] for e in training if HUB_RATIO in e["ratios"]]
        if not hub:
            lines += ["", "keras-hub is not installed (`pip install -e \".[bench]\"`): no keras-hub peer."]
        else:
            held = all(r >= 1.0 for r in hub)
            lines += ["", f"Target ours/keras-hub >= 1.0: **{'holds' if held else 'does not hold'}** "
                      f"({', '.join(str(r) for r in hub)}).", "", TRAINING_NOTES.strip()]
        lines.append("")
    inference = results.get("inference")
    if inference:
        lines += ["## Greedy generation latency", "",
                  "Milliseconds per call (median), 32 output tokens (EOS does not stop any path, so all do "
                  "the same work), encoder included. Short input: "
                  f"{inference['source_tokens']['short']} tokens, long: {inference['source_tokens']['long']}.",
                  ""]
        paths = list(dict.fromkeys(row["path"] for row in inference["latency"]))
        header = ["path", *[f"b{b} {s}" for s, b in LATENCY_COLUMNS], "vs re-run (b1 short)"]
        rows = []
        rerun = _latency(inference, RERUN, "short", 1)
        for path in paths:
            cells = [_latency(inference, path, s, b) for s, b in LATENCY_COLUMNS]
            speed = f"{rerun / cells[0]:.2g}x" if rerun and cells[0] else ""
            rows.append([path, *("" if c is None else c for c in cells), speed])
        lines += _table(header, rows)
        head = headline(results)
        if head:
            paired = inference.get("paired") or {}
            how = (f"{paired['pairs']} alternating pairs of {paired.get('block', 1)}-call blocks, back to "
                   f"back; per-pair speedups {paired['speedup_range'][0]}x-{paired['speedup_range'][1]}x"
                   if paired
                   else "from the table")
            lines += ["", f"onnxruntime with the cache vs the tutorials' re-run SavedModel, 32 tokens, batch 1, "
                      f"short input ({how}): {head['rerun_ms']} ms / {head['ort_cache_ms']} ms: "
                      f"**{head['speedup']}x** (target >= {head['target']:g}x: "
                      f"{'holds' if head['holds'] else 'does not hold'})."]
        agreement = inference.get("agreement", {})
        if agreement:
            same = [p for p, ok in agreement.items() if ok]
            lines += ["", f"Same first 12 greedy tokens as `{ORT_CACHE}`: {', '.join(same) or 'none'}"
                      + (f"; differ: {', '.join(p for p, ok in agreement.items() if not ok)}"
                         if len(same) < len(agreement) else "") + "."]
        lines += ["", "### Cost against output length", "",
                  "Batch 1, short input. With the cache a token costs the same at every position (linear "
                  "total); the re-run loop runs the model over the whole prefix at every step (quadratic "
                  "total). Plot: `" + results.get("plot", "") + "`.", ""]
        lengths = sorted({row["tokens"] for row in inference["scaling"]})
        spaths = list(dict.fromkeys(row["path"] for row in inference["scaling"]))
        ms = {(r["path"], r["tokens"]): r["ms"] for r in inference["scaling"]}
        lines += _table(["path", *[f"{n} tok (ms)" for n in lengths], "ms/token first -> last"],
                        [[p, *[ms.get((p, n), "") for n in lengths],
                          f"{ms[(p, lengths[0])] / lengths[0]:.2f} -> {ms[(p, lengths[-1])] / lengths[-1]:.2f}"]
                         for p in spaths])
        lines.append("")
    if results.get("real_size") or results.get("pipeline"):
        lines += _real_size_markdown(results.get("real_size") or {"rows": [], "models": [], "tokens": 0,
                                                                  "source_tokens": 0, "rounds": 0},
                                     results.get("pipeline"), training)
    server = results.get("server")
    if server:
        lines += ["## HTTP server", "",
                  "`serving.server` on the default export, one text per `POST /v1/generate`, after warm-up "
                  "requests; the load generator runs on the same 2 cores.", ""]
        lines += _table(["mode", "clients", "requests", "errors", "req/s", "p50 ms", "p99 ms"],
                        [[r["mode"], r["concurrency"], r["requests"], r["errors"], r["requests_per_s"],
                          r["p50_ms"], r["p99_ms"]] for r in server])
        lines.append("")
    if not results.get("quick"):
        lines += ["", STREAMING_NOTES.strip()]
    return "\n".join(lines)


def write_plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["inference"]["scaling"]
    fig, (total, per_token) = plt.subplots(1, 2, figsize=(11, 4))
    for name in dict.fromkeys(r["path"] for r in rows):
        points = sorted((r["tokens"], r["ms"]) for r in rows if r["path"] == name)
        n = [p[0] for p in points]
        ms = [p[1] for p in points]
        total.plot(n, ms, marker="o", label=name)
        per_token.plot(n, [m / k for m, k in zip(ms, n, strict=True)], marker="o", label=name)
    total.set(xlabel="output tokens", ylabel="ms per call (batch 1)", title="Greedy generation cost")
    per_token.set(xlabel="output tokens", ylabel="ms per token", title="Cost per token",
                  xscale="log", yscale="log")
    total.legend(fontsize=8)
    for ax in (total, per_token):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict, markdown_path: Path, json_path: Path, plot_path: Path | None) -> None:
    if plot_path is not None and results.get("inference", {}).get("scaling"):
        write_plot(results, plot_path)
        results["plot"] = str(plot_path)
    results["headline"] = headline(results)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    markdown_path.write_text(render_markdown(results) + "\n")
