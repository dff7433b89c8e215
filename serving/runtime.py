"""Generation with onnxruntime alone: the exported encoder runs once, the decoder step once per token.

Nothing here imports TensorFlow or Keras: an export directory (see docs/export-contract.md) holds everything,
`config.json` (special ids, lengths, the decoding-state entries), `tokenizer.model` and the ONNX graphs.
The searches (greedy, beam, sampling) are the numpy ones in `serving.search`, driven by `Runtime.step`.

Example:

    runtime = Runtime("artifacts/dates-transformer/export")
    runtime.generate(["september 27, 1994"])[0].text            # '1994-09-27'
    runtime.generate(["9/27/94"], DecodingOptions(method="beam", beam_size=4))
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

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
    shared_by_beams,
    updated_name,
    updated_outputs,
    zero_state,
)
from serving.errors import ExportError, RequestError, ServingError, first_line
from serving.export_config import ExportConfig
from serving.manifest import verify_manifest
from serving.options import METHODS, DecodingOptions
from serving.search import STREAMS, Constraints, SearchResult, SearchSteps, drain, new_final_ids
from serving.tokenizer import SentencePieceTokenizer

__all__ = ["METHODS", "DecodingOptions", "Generation", "Runtime", "check_providers_loaded", "resolve_providers"]

PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def resolve_providers(provider: str | Sequence[str] = "cpu") -> list[str]:
    """Maps "cpu", "cuda", "auto" (CUDA when onnxruntime offers it, else CPU) or explicit onnxruntime
    provider names to the list an `InferenceSession` takes, CPU last as the fallback for unsupported ops.

    Raises:
        ExportError: when a requested provider is not available in this onnxruntime build.
    """
    available = ort.get_available_providers()
    names = [provider] if isinstance(provider, str) else list(provider)
    if names == ["auto"]:
        names = ["cuda"] if "CUDAExecutionProvider" in available else ["cpu"]
    resolved = []
    for name in names:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in available:
            hint = " (install onnxruntime-gpu and a matching CUDA)" if full == "CUDAExecutionProvider" else ""
            raise ExportError(f"execution provider {name!r} is not available{hint}; this onnxruntime "
                              f"offers {', '.join(available)}")
        if full not in resolved:
            resolved.append(full)
    if "CPUExecutionProvider" not in resolved:
        resolved.append("CPUExecutionProvider")
    return resolved


def check_providers_loaded(session: ort.InferenceSession, requested: Sequence[str]) -> None:
    """onnxruntime falls back to the CPU, with only a logged warning, when a provider it offers cannot
    start (onnxruntime-gpu without the CUDA or cuDNN libraries it was built for): say so instead.

    Raises:
        ServingError: when a requested provider other than the CPU is not among the session's.
    """
    started = session.get_providers()
    missing = [name for name in requested if name != "CPUExecutionProvider" and name not in started]
    if missing:
        raise ServingError(f"{', '.join(missing)} did not start (onnxruntime fell back to "
                           f"{', '.join(started)}); install the CUDA and cuDNN libraries this "
                           f"onnxruntime {ort.__version__} was built for, or run with --provider cpu")


@dataclass
class Generation:
    """One output. `tokens` are the generated pieces (EOS included when it was produced), aligned with
    the rows of `attention` `(len(tokens), layers, heads, len(source_tokens))`."""

    text: str
    token_ids: list[int]
    score: float | None = None
    tokens: list[str] = field(default_factory=list)
    source_tokens: list[str] = field(default_factory=list)
    attention: np.ndarray | None = None
    # Beam search with num_hypotheses > 1: (text, score) of each, best first (the first is this output).
    hypotheses: list[tuple[str, float]] = field(default_factory=list)

    def alignment(self) -> np.ndarray | None:
        """The last layer's cross-attention averaged over heads: `(len(tokens), len(source_tokens))`."""
        return None if self.attention is None else self.attention[:, -1].mean(axis=1)

    def to_json(self, tokens: bool = False, attention: bool = False, attention_heads: bool = False) -> dict:
        """The output as JSON: text and score; `tokens` adds the pieces and ids; `attention` the last
        layer's cross-attention averaged over heads (tokens x source); `attention_heads` every layer's and
        head's weights too, as `attention_heads[layer][head]` (tokens x source)."""
        out: dict = {"text": self.text}
        if self.score is not None:
            out["score"] = round(float(self.score), 6)
        attention = attention or attention_heads
        if tokens or attention:
            out.update(tokens=self.tokens, token_ids=self.token_ids, source_tokens=self.source_tokens)
        if attention:
            weights = self.alignment()
            out["attention"] = None if weights is None else np.round(weights.astype(np.float64), 5).tolist()
        if attention_heads:
            heads = None if self.attention is None else self.attention.transpose(1, 2, 0, 3)
            out["attention_heads"] = None if heads is None else np.round(heads.astype(np.float64), 5).tolist()
        if self.hypotheses:
            out["hypotheses"] = [{"text": text, "score": round(float(score), 6)} for text, score in self.hypotheses]
        return out


@dataclass(frozen=True)
class StreamEvent:
    """One event of `Runtime.generate_stream`: `text` is the new piece of input `index`'s output (joined,
    the pieces are the whole text), `token_ids` the ids it came from; the input's last event is `done`
    and carries the whole `generation`."""

    index: int
    text: str
    token_ids: list[int]
    done: bool = False
    generation: Generation | None = None


def session_options(intra_op_threads: int = 1, inter_op_threads: int = 1,
                    allow_spinning: bool = True) -> ort.SessionOptions:
    """Full graph optimisation and sequential execution. One intra-op thread by default: the ops of these
    small models are too short to gain from splitting (the dates Transformer decodes 3.5 times faster
    with 1 thread than with onnxruntime's default on a busy 2-core machine); more texts per call or more
    server workers use the cores better. `intra_op_threads` 0 means one thread per physical core.
    Spinning keeps idle worker threads busy-waiting for the next op: lower latency, but on a loaded
    server it steals cores from the request handling, so the server turns it off."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.log_severity_level = 3
    spin = "1" if allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return options


# onnxruntime's fused decoding attention (`python -m export --fused-attention`) computes what Keras
# computes from this release on; 1.30 gets the first output position wrong.
FUSED_ATTENTION_MIN_ONNXRUNTIME = (1, 32)


def _check_onnxruntime_runs(config: ExportConfig, export_dir: Path) -> None:
    if config.operators != "onnxruntime":
        return
    version = tuple(int(part) for part in ort.__version__.split(".")[:2] if part.isdigit())
    if version < FUSED_ATTENTION_MIN_ONNXRUNTIME:
        wanted = ".".join(map(str, FUSED_ATTENTION_MIN_ONNXRUNTIME))
        raise ExportError(f"{export_dir} was exported with onnxruntime's fused attention, which needs "
                          f"onnxruntime >= {wanted} (this is {ort.__version__}): pip install -U onnxruntime, "
                          "or export the run again without --fused-attention")


# Cache positions a search starts with (`growing_caches` doubles them as needed).
FIRST_CACHE_POSITIONS = 16


def growing_caches(step: Callable[[np.ndarray, int, dict], tuple], position_axes: Mapping[str, int],
                   max_length: int) -> Callable[[np.ndarray, int, dict], tuple]:
    """`step` with the state entries of `position_axes` (a self-attention cache's `max_length` axis)
    grown before the step that would write past their end: twice as many positions (at most
    `max_length`), the written ones copied, the rest zeros. The standard-operators step attends over
    every position of the cache it is given and masks the unwritten ones, so a cache sized for the
    longest output made every step of a short one pay for all `max_length` positions (the Multi30k
    model: 64, where most outputs end within 20); the fused step reads positions 0..index only either
    way. The grown arrays come back among the step's updates (a step returns every
    updated entry), so the search keeps them. Entries without a position axis pass through."""
    if not position_axes:
        return step

    def grown(token_ids: np.ndarray, index: int, state: dict) -> tuple:
        for name, axis in position_axes.items():
            value = state.get(name)
            if value is None or value.shape[axis] > index:
                continue
            shape = list(value.shape)
            shape[axis] = min(max_length, max(2 * shape[axis], index + 1))
            bigger = np.zeros(shape, value.dtype)
            bigger[(slice(None),) * axis + (slice(0, value.shape[axis]),)] = value
            state = {**state, name: bigger}
        return step(token_ids, index, state)

    return grown


# The most sentences for which an unconstrained greedy or beam search runs the export's
# `beam_search.onnx` (the whole search in one `session.run`) instead of the numpy search over
# `decoder_step_top_k`. At batch 1 a step is short enough that the Python between steps shows; from a
# few sentences on, the graph's per-step reorder of every cache (a `Gather`) costs more than the numpy
# search's row copies in place (BENCHMARKS.md, (14)).
IN_GRAPH_MAX_BATCH = 1


class Runtime:
    """An export loaded into onnxruntime sessions.

    Args:
        export_dir: the export directory (`RUN/export`).
        provider: "cpu", "cuda", "auto" or onnxruntime provider names (see `resolve_providers`).
        intra_op_threads: threads per operator (0: one per physical core; see `session_options`).
        inter_op_threads: threads across independent operators.
        allow_spinning: let idle onnxruntime threads spin (see `session_options`).
        verify: check the files it loads (config, tokenizer, the two graphs) against `manifest.json`, and
            that the export passed parity validation.
        int8: load the dynamic-int8 graphs (`python -m export RUN --quantize`) instead of float32.
        provider_options: onnxruntime options per provider name, e.g. `{"CUDAExecutionProvider":
            {"use_tf32": "0"}}` (what parity validation uses).
        in_graph_search: run a greedy or beam search of at most `IN_GRAPH_MAX_BATCH` sentences, without
            rules or n-best lists, in the export's `beam_search.onnx` where it has one (CPU only: that is
            where it was measured); False: always the numpy search. Both give the same ids
            (`export.validate` compares them on the whole test split) and scores (to 1e-5 in float32,
            about 2e-4 relative in int8).

    Raises:
        ExportError: with one line naming the file, for a missing or damaged export.
    """

    def __init__(self, export_dir: str | Path, provider: str | Sequence[str] = "cpu",
                 intra_op_threads: int = 1, inter_op_threads: int = 1, allow_spinning: bool = True,
                 verify: bool = True, int8: bool = False,
                 provider_options: Mapping[str, dict] | None = None, in_graph_search: bool = True) -> None:
        self.export_dir = Path(export_dir)
        self.config = ExportConfig.read(self.export_dir)
        self.int8 = int8
        self.graph_files = {name: self.config.graph_file(name, int8) for name in ("encoder", "decoder_step")}
        if verify:
            # The files this runtime loads: an export shipped without its SavedModel still serves.
            verify_manifest(self.export_dir, required=self.config.served_files(int8), only_required=True,
                            require_validated=True)
        config = self.config
        _check_onnxruntime_runs(config, self.export_dir)
        self.special_ids = dict(config.special_ids)
        self.bos_id, self.eos_id, self.pad_id = (self.special_ids[k] for k in ("bos", "eos", "pad"))
        self.max_source_length = int(config.max_source_length)
        self.max_target_length = int(config.max_target_length)
        self.tokenizer = SentencePieceTokenizer(self.export_dir / config.tokenizer, config.special_ids)
        if self.tokenizer.vocab_size < int(config.vocab_size):
            # Else the first generated id beyond the tokenizer fails deep in sentencepiece, mid-request.
            raise ExportError(f"{self.export_dir / config.tokenizer} has {self.tokenizer.vocab_size:,} pieces but "
                              f"the model's vocabulary is {int(config.vocab_size):,}; export the run again "
                              "with the tokenizer it was trained with")
        self.state_specs = list(config.state)
        self.shared_state = shared_by_beams(self.state_specs)  # kept once per sentence in beam search
        self.position_axes = position_axes(self.state_specs)  # reordered up to the positions written
        for spec in self.state_specs:
            try:
                numpy_dtype(spec["dtype"])
            except ValueError as e:
                raise ExportError(f"{self.export_dir / 'config.json'}: state entry {spec['name']!r}: {e}; "
                                  "export the run again") from None
        self.providers = resolve_providers(provider)
        self._provider_options = dict(provider_options or {})
        options = session_options(intra_op_threads, inter_op_threads, allow_spinning)
        self._options = options
        self._top_k: ort.InferenceSession | None = None
        self._beam_search: ort.InferenceSession | None = None
        self._beam_search_inputs: list[str] = []
        self.has_in_graph_search = in_graph_search and self.providers == ["CPUExecutionProvider"] and \
            "beam_search" in config.graphs and (not int8 or "beam_search" in config.int8_graph_files())
        self.encoder = self._session("encoder", options)
        self.decoder = self._session("decoder_step", options)
        self._encoder_outputs = [o.name for o in self.encoder.get_outputs()]
        self._decoder_outputs = [o.name for o in self.decoder.get_outputs()]
        # decoder output -> the state entry it replaces, worked out once, not per step
        self._state_updates = updated_outputs(self._decoder_outputs)
        self.has_attention = ATTENTION in self._decoder_outputs
        self._check_signatures()

    # Loading -----------------------------------------------------------------------------------------

    def _session(self, name: str, options: ort.SessionOptions) -> ort.InferenceSession:
        path = self.export_dir / self.graph_files[name]
        if not path.is_file():
            raise ExportError(f"{path} is missing; export the run again")
        try:
            providers = [(name, self._provider_options[name]) if name in self._provider_options else name
                         for name in self.providers]
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ExportError(f"cannot load {path}: {first_line(e)}; the file is damaged, export the run "
                              "again") from None
        check_providers_loaded(session, self.providers)
        return session

    def _check_signatures(self) -> None:
        """The sessions must take and give the state entries the config lists, by name."""
        encode = {s["name"] for s in self.state_specs if s["source"] == "encode"}
        step_inputs = {i.name for i in self.decoder.get_inputs()}
        needed = {TOKEN_IDS, INDEX} | {s["name"] for s in self.state_specs}
        outputs = {LOGITS} | {updated_name(s["name"]) for s in self.state_specs if s["updated"]}
        checks = [
            ("encoder", "outputs", encode - set(self._encoder_outputs)),
            ("decoder_step", "inputs", needed - step_inputs),
            ("decoder_step", "outputs", outputs - set(self._decoder_outputs)),
        ]
        for graph, kind, missing in checks:
            if missing:
                path = self.export_dir / self.graph_files[graph]
                raise ExportError(f"{path} lacks the {kind} {', '.join(sorted(missing))} that config.json "
                                  "describes; export the run again")

    # Model calls -------------------------------------------------------------------------------------

    def encode(self, encoder_input: np.ndarray) -> dict[str, np.ndarray]:
        """Runs the encoder graph once: the "encode" state entries."""
        values = self.encoder.run(None, {ENCODER_INPUT: np.ascontiguousarray(encoder_input, np.int32)})
        return dict(zip(self._encoder_outputs, values, strict=True))

    def initial_state(self, encoder_input: np.ndarray, max_length: int) -> dict[str, np.ndarray]:
        """Encoder outputs plus zero caches sized for `max_length` decoder steps."""
        state = self.encode(encoder_input)
        state.update(zero_state(self.state_specs, encoder_input.shape[0], encoder_input.shape[1], max_length))
        return state

    def step(self, token_ids: np.ndarray, index: int, state: dict) -> tuple:
        """One decoder step (the `serving.search` step-function signature)."""
        feeds = {TOKEN_IDS: np.asarray(token_ids, np.int32), INDEX: np.asarray(index, np.int32), **state}
        values = dict(zip(self._decoder_outputs, self.decoder.run(None, feeds), strict=True))
        updates = {entry: values[output] for output, entry in self._state_updates.items()}
        return values[LOGITS], updates, values.get(ATTENTION)

    def in_place_step(self, top_k: int | None = None) -> Callable[[np.ndarray, int, dict], tuple]:
        """A step function for one search (the `step` signature) that updates the caches in place.

        Each updated state entry is bound with onnxruntime's IO binding as both the input and the
        `<name>_out` output of the step where the export says that is safe (config.json's
        `in_place_updates`: the Transformer's caches), so the graph's cache write (a `ScatterND`, or the
        fused attention's) happens in the caller's array instead of in a fresh copy of the whole cache
        every step; the updates it returns are those same arrays (other updates are new arrays, as from
        `step`). An entry replaced by another array (a cache grown by `growing_caches`, or a reorder that
        could not happen in place) is bound again. Mutating its input makes it the
        wrong step to share between searches, or for a caller that keeps the previous state, and what it
        returns is valid until its next call (what the searches need): `step` is the pure one.

        With `top_k`, the step is the export's `decoder_step_top_k` (`has_top_k_step`), returning
        `(top_log_probs, top_ids)` of `top_k` columns in place of the logits (`beam_steps`' `top_k_step`).

        Everything a step reads or writes stays bound between calls: the token ids and the index are
        written into arrays bound once, and after the first step the logits (or the top k) and the
        attention rows come back in arrays of the step's own, bound as the outputs, so a call is one
        `run_with_iobinding` (the int8 Multi30k step at 1 and 4 rows: 325 and 528 against 407 and 634 us
        when every call bound its inputs and wrapped its outputs again). Those arrays are overwritten by
        the next call: a search keeps copies of what it keeps."""
        session = self.decoder if top_k is None else self._top_k_session()
        outputs = [o.name for o in session.get_outputs()]
        binding = session.io_binding()
        first = (LOGITS,) if top_k is None else (TOP_LOG_PROBS, TOP_IDS)
        fetched = [name for name in outputs if name in (*first, ATTENTION)]
        updated = {entry: output for output, entry in self._state_updates.items()}
        in_place = {entry: output for entry, output in updated.items() if entry in self.config.in_place_updates}
        # Updates of a converted step (an RNN's) come back as new arrays, as from `step`.
        copied = [output for entry, output in updated.items() if entry not in in_place]
        for name in fetched + copied:
            binding.bind_output(name)
        bound: dict[str, np.ndarray] = {}
        keep: dict[str, ort.OrtValue | np.ndarray] = {}  # what a binding reads must live as long as it
        if top_k is not None:
            keep[BEAM_SIZE] = np.asarray(top_k, np.int32)
            binding.bind_cpu_input(BEAM_SIZE, keep[BEAM_SIZE])
        # onnxruntime reads a bound numpy array where it lies, so writing into these feeds the next call
        index_buffer = np.zeros((), np.int32)
        binding.bind_cpu_input(INDEX, index_buffer)
        token_buffer: np.ndarray | None = None  # the bound token-ids array, once there is one
        results: dict[str, np.ndarray] = {}  # the fetched outputs' arrays, bound once their shapes are known

        def step(token_ids: np.ndarray, index: int, state: dict) -> tuple:
            nonlocal token_buffer
            if token_buffer is None or token_buffer.shape != np.shape(token_ids):
                token_buffer = np.empty(np.shape(token_ids), np.int32)
                binding.bind_cpu_input(TOKEN_IDS, token_buffer)
                results.clear()
            token_buffer[...] = token_ids
            index_buffer[...] = index
            for name, value in state.items():
                if bound.get(name) is value:
                    continue
                value = np.ascontiguousarray(value)
                if name in in_place:
                    keep[name] = ort.OrtValue.ortvalue_from_numpy(value)  # shares the array's memory
                    binding.bind_ortvalue_input(name, keep[name])
                    binding.bind_ortvalue_output(in_place[name], keep[name])
                else:
                    binding.bind_cpu_input(name, value)
                    results.clear()  # another source: the attention rows may change shape
                bound[name] = value
            if not results:
                for name in fetched:  # onnxruntime allocates them on this call
                    binding.bind_output(name)
            session.run_with_iobinding(binding)
            values = dict(results)
            if not results or copied:
                # `numpy()` views onnxruntime's output buffer; what a search keeps of an RNN's state is copied.
                for name, value in zip(fetched + copied, binding.get_outputs(), strict=False):
                    if name in results:
                        continue
                    values[name] = np.array(value.numpy())
                    if name in fetched:
                        results[name] = values[name]
                        keep[f"{name} output"] = ort.OrtValue.ortvalue_from_numpy(results[name])
                        binding.bind_ortvalue_output(name, keep[f"{name} output"])
            updates = {name: bound[name] if name in in_place else values[updated[name]] for name in updated}
            chosen = values[LOGITS] if top_k is None else (values[TOP_LOG_PROBS], values[TOP_IDS])
            return chosen, updates, values.get(ATTENTION)

        return step

    def search_start(self, encoder_input: np.ndarray, max_length: int, top_k: int | None = None
                     ) -> tuple[dict[str, np.ndarray], Callable, Callable | None]:
        """What a search of up to `max_length` steps starts from: the initial state, with caches of a few
        positions, and the in-place step (and, with `top_k`, the top-k step: `top_k_step`), which grow
        them as the output does (`growing_caches`)."""
        state = self.initial_state(encoder_input, min(max_length, FIRST_CACHE_POSITIONS))
        step = growing_caches(self.in_place_step(), self.position_axes, max_length)
        top_k_step = self.top_k_step(top_k) if top_k is not None else None
        if top_k_step is not None:
            top_k_step = growing_caches(top_k_step, self.position_axes, max_length)
        return state, step, top_k_step

    def top_k_step(self, columns: int) -> Callable[[np.ndarray, int, dict], tuple] | None:
        """The in-place step returning each hypothesis's `columns` best log-probabilities and ids, which
        greedy (1) and beam search (`beam_size`) choose from where no constraint needs the logits; None
        where the export has no such step or the vocabulary is smaller than `columns`."""
        if not self.has_top_k_step or columns > int(self.config.vocab_size):
            return None
        return self.in_place_step(top_k=columns)

    @property
    def has_top_k_step(self) -> bool:
        """Whether the export has `decoder_step_top_k` (in the precision this runtime loads)."""
        return "decoder_step_top_k" in self.config.graphs and (
            not self.int8 or "decoder_step_top_k" in self.config.int8_graph_files())

    def _top_k_session(self) -> ort.InferenceSession:
        """`decoder_step_top_k`, loaded on first use: only unconstrained beam search steps with it."""
        if self._top_k is None:
            self.graph_files["decoder_step_top_k"] = self.config.graph_file("decoder_step_top_k", self.int8)
            self._top_k = self._session("decoder_step_top_k", self._options)
        return self._top_k

    def runs_in_graph(self, batch: int, options: DecodingOptions, constraints: Constraints | None = None) -> bool:
        """Whether a search of `batch` sentences with `options` (and these `constraints`) runs in
        `beam_search.onnx` (`in_graph_search`): the graph ranks each hypothesis's `beam_size` best
        continuations, so the beam may not be wider than the vocabulary."""
        beam = options.method == "beam" and options.num_hypotheses == 1 and options.beam_size <= self.config.vocab_size
        return (self.has_in_graph_search and batch <= IN_GRAPH_MAX_BATCH and not constraints
                and (options.method == "greedy" or beam))

    def in_graph_search(self, encoder_input: np.ndarray, max_length: int, beam_size: int, length_penalty: float,
                        return_attention: bool = False, min_length: int = 0) -> SearchResult:
        """`beam_search.onnx` on encoded sources `(batch, src_len)`: the `SearchResult` the numpy beam
        search gives (scores in float32; `beam_size` 1 with `length_penalty` 0 is greedy decoding's).
        `min_length`: EOS not allowed before that many tokens (the `min_new_tokens` rule, which
        `runs_in_graph` leaves to the numpy search: the graph is validated without it)."""
        if self._beam_search is None:
            self.graph_files["beam_search"] = self.config.graph_file("beam_search", self.int8)
            self._beam_search = self._session("beam_search", self._options)
            # An export made before `min_length` lacks that input.
            self._beam_search_inputs = [i.name for i in self._beam_search.get_inputs()]
        session, takes = self._beam_search, self._beam_search_inputs
        feeds = {ENCODER_INPUT: np.ascontiguousarray(encoder_input, np.int32),
                 MAX_LENGTH: np.asarray(max_length, np.int32), BEAM_SIZE: np.asarray(beam_size, np.int32),
                 LENGTH_PENALTY: np.asarray(length_penalty, np.float32), MIN_LENGTH: np.asarray(min_length, np.int32)}
        if min_length and MIN_LENGTH not in takes:
            raise ExportError(f"{self.export_dir / self.graph_files['beam_search']} takes no min_length; export "
                              "the run again")
        wanted = [TOKENS, SCORES] + ([ATTENTION] if return_attention and self.has_attention else [])
        values = dict(zip(wanted, session.run(wanted, {name: feeds[name] for name in takes}), strict=True))
        return SearchResult(values[TOKENS], values[SCORES], values.get(ATTENTION))

    def generate_ids(self, encoder_input: np.ndarray, options: DecodingOptions = DecodingOptions(),
                     return_attention: bool = False, seeds: Sequence | None = None) -> SearchResult:
        """Searches from encoded sources `(batch, src_len)`; ids `(batch, length)`, PAD after EOS.

        `seeds`: for sampling, one seed per row (see `serving.search.sample_search`), instead of
        `options.seed` for the whole batch."""
        self._validate(options)
        return self._search(encoder_input, options, return_attention, seeds)

    def _validate(self, options: DecodingOptions) -> None:
        # The caches grow up to max_new_tokens positions, and the model was trained (and its positions
        # sized) for max_target_length: more can only allocate memory, never help.
        options.validate(max_new_tokens_limit=self.max_target_length)

    def _search(self, encoder_input: np.ndarray, options: DecodingOptions, return_attention: bool,
                seeds: Sequence | None) -> SearchResult:
        constraints = self._constraints(options, encoder_input.shape[0])
        if self.runs_in_graph(encoder_input.shape[0], options, constraints):
            beam = options.method == "beam"
            return self.in_graph_search(encoder_input, self._max_length(options), options.beam_size if beam else 1,
                                        options.length_penalty if beam else 0.0, return_attention=return_attention)
        return drain(self._search_steps(encoder_input, options, return_attention, seeds, constraints))

    def _max_length(self, options: DecodingOptions) -> int:
        return options.max_new_tokens or self.max_target_length

    def _constraints(self, options: DecodingOptions, batch: int) -> Constraints | None:
        return options.constraints(batch, self._max_length(options),
                                   encode=lambda text: self.tokenizer.encode([text])[0])

    def _search_steps(self, encoder_input: np.ndarray, options: DecodingOptions, return_attention: bool,
                      seeds: Sequence | None, constraints: Constraints | None) -> SearchSteps:
        """The numpy search of `options` (`serving.search.STREAMS`), its rules `constraints`
        (`_constraints`), step by step."""
        max_length = self._max_length(options)
        kwargs = {**options.search_kwargs(), "shared": self.shared_state, "position_axes": self.position_axes}
        if options.method == "sample" and seeds is not None:
            kwargs["seed"] = list(seeds)
        columns = None
        if options.method in ("greedy", "beam") and not constraints:
            columns = options.beam_size if options.method == "beam" else 1
        state, step, top_k_step = self.search_start(encoder_input, max_length, columns)
        if columns is not None:
            kwargs["top_k_step"] = top_k_step
        return STREAMS[options.method](
            step, state, encoder_input.shape[0], max_length, self.bos_id, self.eos_id, self.pad_id,
            return_attention=return_attention and self.has_attention, constraints=constraints, **kwargs)

    # Text --------------------------------------------------------------------------------------------

    def check_texts(self, texts: Sequence[str], max_input_tokens: int | None = None) -> list[int]:
        """Validates inputs for a server: non-empty, encodable, at most `max_input_tokens` tokens with
        EOS (None: no limit; the runtime itself truncates to `max_source_length` like training).

        Returns the token count of each text (EOS included). Raises `RequestError`.
        """
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise RequestError(f"input {i} must be a string, got {type(text).__name__}")
            if not text.strip():
                raise RequestError(f"input {i} is empty; give non-empty text")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise RequestError(f"input {i} is not valid Unicode (it holds a lone surrogate)") from None
        counts = [len(ids) + 1 for ids in self.tokenizer.encode(texts)]
        if max_input_tokens is not None:
            for i, count in enumerate(counts):
                if count > max_input_tokens:
                    raise RequestError(f"input {i} is {count} tokens long (EOS included); the limit is "
                                       f"{max_input_tokens}", status=413)
        return counts

    def generate(self, texts: Sequence[str], options: DecodingOptions = DecodingOptions(),
                 return_attention: bool = False, batch_size: int = 64,
                 seeds: Sequence | None = None) -> list[Generation]:
        """Generates one output per text, `batch_size` texts per model call.

        Texts are grouped by length so a call pads little; outputs come back in input order. Sampling
        with `options.seed` draws text i from the seed `(seed, i)`, so a text's sample depends on the
        seed and its position only, not on how texts are grouped into calls; `seeds` (one per text)
        overrides that.
        """
        if isinstance(texts, str):
            raise TypeError("generate expects a list of strings, not a single string")
        self._validate(options)
        seeds = self._row_seeds(options, len(texts), seeds)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        results: list[Generation | None] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            chunk_seeds = None if seeds is None else [seeds[i] for i in chunk]
            generations = self._generate_batch([texts[i] for i in chunk], options, return_attention,
                                               chunk_seeds)
            for i, generation in zip(chunk, generations, strict=True):
                results[i] = generation
        return results  # type: ignore[return-value]

    @staticmethod
    def _row_seeds(options: DecodingOptions, count: int, seeds: Sequence | None) -> Sequence | None:
        # Text i samples from (seed, i): its sample depends on the seed and its position only.
        if seeds is None and options.method == "sample" and options.seed is not None:
            seeds = [(options.seed, i) for i in range(count)]
        if seeds is not None and len(seeds) != count:
            raise ValueError(f"got {len(seeds)} seeds for {count} texts")
        return seeds

    def generate_stream(self, texts: Sequence[str], options: DecodingOptions = DecodingOptions(),
                        return_attention: bool = False, seeds: Sequence | None = None) -> Iterator[StreamEvent]:
        """Generates like `generate`, yielding text as soon as the search makes it final: greedy and
        sampling every token as it is chosen; beam search the prefix that all its live hypotheses share
        (what no later step can change), and the rest when it ends. All `texts` go through one model call.

        Each input's last event has `done` set and carries its `Generation` (score, n-best, attention);
        an input's `text` pieces, joined, are that generation's text, the one `generate` returns. Closing
        the generator (a client that went away) stops the search after the step under way."""
        if isinstance(texts, str):
            raise TypeError("generate_stream expects a list of strings, not a single string")
        texts = list(texts)
        self._validate(options)
        seeds = self._row_seeds(options, len(texts), seeds)
        encoder_input, lengths = self.tokenizer.encode_sources(texts, self.max_source_length)
        stream = new_final_ids(self._search_steps(encoder_input, options, return_attention, seeds,
                                                  self._constraints(options, len(texts))),
                               self.eos_id, self.pad_id)
        ids: list[list[int]] = [[] for _ in texts]
        pending: list[list[int]] = [[] for _ in texts]
        shown = [""] * len(texts)
        while True:
            try:
                chunk = next(stream)
            except StopIteration as stop:
                result = stop.value
                break
            for row, new in enumerate(chunk):
                if not new:
                    continue
                ids[row] += new
                pending[row] += new
                text = self.tokenizer.decode(self.tokenizer.output_ids(np.asarray(ids[row])))
                # A piece that decodes to nothing yet (a lone "▁", half a character) waits for the next.
                if len(text) > len(shown[row]) and text.startswith(shown[row]):
                    yield StreamEvent(row, text[len(shown[row]):], pending[row])
                    shown[row], pending[row] = text, []
        for row, generation in enumerate(self._generations(result, encoder_input, lengths)):
            yield StreamEvent(row, generation.text[len(shown[row]):], pending[row], done=True,
                              generation=generation)

    def _generate_batch(self, texts: list[str], options: DecodingOptions, return_attention: bool,
                        seeds: Sequence | None) -> list[Generation]:
        encoder_input, lengths = self.tokenizer.encode_sources(texts, self.max_source_length)
        result = self._search(encoder_input, options, return_attention, seeds)  # validated by `generate`
        return self._generations(result, encoder_input, lengths)

    def _generations(self, result: SearchResult, encoder_input: np.ndarray,
                     lengths: np.ndarray) -> list[Generation]:
        """One `Generation` per row of a search's result (text, score, pieces, attention, n-best)."""
        generations = []
        for b, row in enumerate(result.tokens):
            ids = self.tokenizer.output_ids(row)
            # The produced tokens, EOS included: one attention row each.
            eos = np.flatnonzero(row == self.eos_id)
            produced = int(eos[0]) + 1 if eos.size else len(row)
            produced_ids = [int(t) for t in row[:produced]]
            source = encoder_input[b, : lengths[b]]
            attention = None
            if result.attention is not None:
                attention = result.attention[b, :produced, ..., : lengths[b]].astype(np.float32)
            hypotheses = [(self.tokenizer.decode(self.tokenizer.output_ids(h)), score)
                          for h, score in (result.hypotheses[b] if result.hypotheses else [])]
            generations.append(Generation(
                text=self.tokenizer.decode(ids), token_ids=ids,
                score=None if result.scores is None else float(result.scores[b]),
                tokens=self.tokenizer.pieces(produced_ids), source_tokens=self.tokenizer.pieces(source),
                attention=attention, hypotheses=hypotheses))
        return generations

    def warmup(self) -> None:
        """Tiny generations, so the first request does not pay for onnxruntime's lazy set-up: of two texts
        (the numpy search) and of one (`beam_search.onnx`, where `runs_in_graph`)."""
        for texts in (["0", "0"], ["0"]):
            self.generate(texts, replace(DecodingOptions(), max_new_tokens=2))

    def describe(self) -> dict:
        config = self.config
        return {"export_dir": str(self.export_dir), "task": config.task, "model": config.model,
                "family": config.family, "providers": self.providers, "int8": self.int8,
                "max_source_length": self.max_source_length, "max_target_length": self.max_target_length,
                "vocab_size": int(config.vocab_size), "has_attention": self.has_attention,
                "pid": os.getpid()}
