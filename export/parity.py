"""Output parity of exported graphs against the Keras reference, with numpy and onnxruntime only.

Nothing here imports TensorFlow: `python -m export.validate --reference-only` runs on a machine with
onnxruntime (any execution provider) and the export directory alone. The TensorFlow side of validation
(`export.validate`) plugs its own runners (the Keras model, the SavedModel) into the same checks.

Tolerance (float outputs): every element must satisfy |got - ref| <= atol + rtol * |ref| with atol =
rtol = 1e-5, which is `np.allclose` at optimum's default atol (optimum's `validate_model_outputs` uses
atol 1e-5 the same way). Reported per output: the max absolute difference and the max relative
difference |got - ref| / (|ref| + atol). Integer and boolean outputs (padding masks, generated ids) must
be identical. Greedy generation is compared token for token on every sequence of the test split.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "ATOL",
    "RTOL",
    "TOLERANCE",
    "Difference",
    "PROVIDER_OPTIONS",
    "ReferenceData",
    "check_cases",
    "check_greedy",
    "check_texts",
    "check_tokenizer",
    "compare",
    "failures",
    "format_table",
    "onnx_runner",
    "ort_providers",
    "ort_session",
    "quality",
    "row_key",
    "runtime_generate",
    "validation_runtime",
    "write_parity",
]

ATOL = 1e-5
RTOL = 1e-5
TOLERANCE = {"atol": ATOL, "rtol": RTOL,
             "rule": "float outputs: |got - ref| <= atol + rtol * |ref| for every element (np.allclose; "
                     "atol as optimum's default); max_rel_diff = max |got - ref| / (|ref| + atol); "
                     "bool/int outputs and generated ids: identical"}

# graph inputs -> outputs, numpy in and out: an onnxruntime session, the SavedModel or the Keras model.
Runner = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


class ReferenceData:
    """`reference.npz` of an export (see `export.reference` for the layout)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with np.load(self.path, allow_pickle=False) as data:
            self.arrays = {key: data[key] for key in data.files}
        self.meta = json.loads(str(self.arrays["meta"]))
        self.aliases = self.meta.get("aliases", {})

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[self.aliases.get(key, key)]

    def cases(self, graph: str | None = None) -> list[dict]:
        return [c for c in self.meta["cases"] if graph is None or c["graph"] == graph]

    def _group(self, case: dict, kind: str) -> dict[str, np.ndarray]:
        prefix = f"case/{case['graph']}/{case['case']}/{kind}/"
        names = case["inputs"] if kind == "in" else case["outputs"]
        return {name: self[prefix + name] for name in names}

    def inputs(self, case: dict) -> dict[str, np.ndarray]:
        return self._group(case, "in")

    def outputs(self, case: dict) -> dict[str, np.ndarray]:
        return self._group(case, "out")

    def texts(self, case: dict) -> list[str]:
        return [str(t) for t in self[f"case/{case['graph']}/{case['case']}/text"]]

    def greedy_chunks(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(encoder_input, Keras tokens) per chunk of the test split."""
        return [(self[f"greedy/{c}/encoder_input"], self[f"greedy/{c}/tokens"])
                for c in self.meta["greedy_chunks"]]

    @property
    def sources(self) -> list[str]:
        return [str(s) for s in self["greedy/sources"]]

    @property
    def targets(self) -> list[str]:
        return [str(t) for t in self["greedy/targets"]]


@dataclass
class Difference:
    max_abs: float
    max_rel: float
    passed: bool
    worst: tuple[int, ...] | None  # index of the element that fails worst (or differs most)


def compare(got: np.ndarray, expected: np.ndarray, atol: float = ATOL, rtol: float = RTOL) -> Difference:
    """Elementwise difference of one output against its reference (shapes must match)."""
    got, expected = np.asarray(got), np.asarray(expected)
    if got.shape != expected.shape:
        return Difference(float("inf"), float("inf"), False, None)
    if got.size == 0:
        return Difference(0.0, 0.0, True, None)
    if expected.dtype.kind in "biu":
        differs = got != expected
        worst = tuple(int(i) for i in np.argwhere(differs)[0]) if differs.any() else None
        diff = np.abs(got.astype(np.int64) - expected.astype(np.int64))
        return Difference(float(diff.max()), float(differs.any()), not differs.any(), worst)
    g, e = got.astype(np.float64), expected.astype(np.float64)
    diff = np.abs(g - e)
    finite_match = np.isfinite(g) == np.isfinite(e)
    diff = np.where(np.isfinite(e) & finite_match, diff, np.where(g == e, 0.0, np.inf))
    excess = diff - (atol + rtol * np.abs(e))
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(excess)), excess.shape))
    return Difference(float(diff.max()), float((diff / (np.abs(e) + atol)).max()),
                      bool((excess <= 0).all()), worst)


# ----------------------------------------------------------------------------------------- onnxruntime
def ort_providers(requested: Sequence[str] | None = None) -> list[str]:
    """CPU always, plus CUDA whenever this onnxruntime offers it (or exactly `requested`)."""
    import onnxruntime as ort

    from serving.runtime import resolve_providers

    available = ort.get_available_providers()
    if not requested:
        names = ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in available:
            names.append("CUDAExecutionProvider")
        return names
    return [resolve_providers(name)[0] for name in requested]


# CUDA with TF32 off: TF32 rounds float32 matmul inputs to 10 mantissa bits, which is a precision choice,
# not a property of the export. Every onnxruntime session of the validator uses these.
PROVIDER_OPTIONS = {"CUDAExecutionProvider": {"use_tf32": "0"}}


def extensions_library() -> str | None:
    """The path of onnxruntime-extensions' operator library, or None where it is not installed (an
    optional extra: `pip install onnxruntime-extensions`)."""
    try:
        from onnxruntime_extensions import get_library_path
    except ImportError:
        return None
    return get_library_path()


def ort_session(path: Path, provider: str, threads: int = 0, custom_ops: Mapping | None = None):
    """An onnxruntime session on one execution provider, with serving's session options.

    CUDA runs with `PROVIDER_OPTIONS` (TF32 off). `custom_ops` (a graph's description's entry) registers
    onnxruntime-extensions' library, which must then be installed.
    """
    import onnxruntime as ort

    from serving.runtime import check_providers_loaded, session_options

    options = session_options(intra_op_threads=threads)
    if custom_ops:
        options.register_custom_ops_library(extensions_library())
    providers: list = [provider]
    if provider in PROVIDER_OPTIONS:
        providers = [(provider, PROVIDER_OPTIONS[provider]), "CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    check_providers_loaded(session, [provider])  # a CUDA row must not quietly be a CPU one
    return session


def onnx_runner(session) -> Runner:
    names = [o.name for o in session.get_outputs()]

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # np.ascontiguousarray would turn the scalar inputs (index, max_length) into shape (1,).
        feeds = {i.name: np.require(inputs[i.name], requirements="C") for i in session.get_inputs()}
        return dict(zip(names, session.run(None, feeds), strict=True))

    return run


def validation_runtime(export_dir: Path, provider: str, threads: int = 0):
    """The serving runtime itself (`serving.runtime.Runtime`) on one provider, with the validator's
    provider options, always with its numpy search (what `beam_search.onnx`, which the runtime runs for
    a batch-1 request, is compared with). The manifest is checked by the validator before this runs (and
    is not marked validated yet), so the runtime does not check it."""
    from serving.runtime import Runtime

    return Runtime(export_dir, provider=provider, intra_op_threads=threads, verify=False,
                   provider_options=PROVIDER_OPTIONS, in_graph_search=False)


def runtime_generate(runtime, **options) -> Callable[[np.ndarray, int], np.ndarray]:
    """Generation by `runtime` (`validation_runtime`: the encoder once, then one decoder step per token,
    the numpy search), greedy unless `options` (`DecodingOptions` fields, e.g. method="beam") say
    otherwise; ids padded to `max_length` columns."""
    from serving.options import DecodingOptions

    def generate(encoder_input: np.ndarray, max_length: int) -> np.ndarray:
        tokens = runtime.generate_ids(encoder_input, DecodingOptions(max_new_tokens=max_length, **options)).tokens
        return np.pad(tokens, ((0, 0), (0, max_length - tokens.shape[1])), constant_values=runtime.pad_id)

    return generate


# ----------------------------------------------------------------------------------------------- checks
def _case_row(graph, runtime, provider, case, output, difference, texts, note) -> dict:
    row = {"kind": "tensor", "graph": graph, "runtime": runtime, "provider": provider,
           "case": case, "case_note": note, "output": output,
           "max_abs_diff": difference.max_abs, "max_rel_diff": difference.max_rel,
           "passed": difference.passed}
    if not difference.passed:
        row["worst_element"] = list(difference.worst) if difference.worst else None
        if difference.worst and texts:
            row["worst_input"] = texts[difference.worst[0] % len(texts)]
    return row


def check_cases(reference: ReferenceData, graph: str, runner: Runner, runtime: str, provider: str,
                atol: float = ATOL, rtol: float = RTOL) -> list[dict]:
    """Runs every reference case of `graph` and compares each output with the Keras one."""
    rows = []
    for case in reference.cases(graph):
        got = runner(reference.inputs(case))
        for name, expected in reference.outputs(case).items():
            if name not in got:
                difference = Difference(float("inf"), float("inf"), False, None)
            else:
                difference = compare(got[name], expected, atol, rtol)
            rows.append(_case_row(graph, runtime, provider, case["case"], name, difference,
                                  reference.texts(case), case.get("note", "")))
    return rows


def check_top_k(reference: ReferenceData, runner: Runner, runtime: str, provider: str, k: int,
                atol: float = ATOL, rtol: float = RTOL) -> list[dict]:
    """`decoder_step_top_k` on every decoder-step reference case: its `top_log_probs` against the `k`
    largest of the log-softmax of the Keras logits, and the Keras log-probabilities at its `top_ids`
    against its own (an id is right if it carries that log-probability, whichever of two near-equal ones
    it is)."""
    from serving.search import log_softmax

    rows = []
    for case in reference.cases("decoder_step"):
        got = runner({**reference.inputs(case), "beam_size": np.array(k, np.int32)})
        log_probs = log_softmax(reference.outputs(case)["logits"], np.float64)
        largest = -np.sort(-log_probs, axis=-1)[:, :k]
        at_ids = np.take_along_axis(log_probs, np.asarray(got["top_ids"], np.int64), axis=-1)
        for name, expected in (("top_log_probs", largest), ("top_ids", at_ids)):
            rows.append(_case_row("decoder_step_top_k", runtime, provider, case["case"], name,
                                  compare(got["top_log_probs"], expected, atol, rtol), reference.texts(case),
                                  case.get("note", "")))
    return rows


def check_greedy(reference: ReferenceData, graph: str, generate: Callable[[np.ndarray, int], np.ndarray],
                 runtime: str, provider: str, decode: Callable[[np.ndarray], str] | None = None,
                 expected: Callable[[np.ndarray, int], np.ndarray] | None = None, kind: str = "greedy") -> dict:
    """Ids of `generate(encoder_input, max_length)` on the whole (stored) test split, against the Keras
    greedy ids, or against `expected(encoder_input, max_length)` (another search, e.g. the serving
    runtime's beam search; `kind` names it). Both are compared padded to `max_length` columns."""
    max_length = int(reference.meta["max_target_length"])
    sources = reference.sources
    identical = total = agreeing_tokens = compared_tokens = 0
    first = None
    for encoder_input, greedy in reference.greedy_chunks():
        wanted = greedy if expected is None else _padded(np.asarray(expected(encoder_input, max_length)),
                                                          greedy.shape)
        got = _padded(np.asarray(generate(encoder_input, max_length)), wanted.shape)
        same = (got == wanted).all(axis=1)
        if first is None and not same.all():
            row = int(np.flatnonzero(~same)[0])
            first = {"index": total + row, "source": sources[total + row],
                     "expected_ids": wanted[row].tolist(), "got_ids": got[row].tolist()}
            if decode is not None:
                first.update(expected_text=decode(wanted[row]), got_text=decode(got[row]))
        identical += int(same.sum())
        total += len(same)
        agreeing_tokens += int((got == wanted).sum())
        compared_tokens += got.size
    return {"kind": kind, "graph": graph, "runtime": runtime, "provider": provider,
            "sequences": total, "identical": identical,
            "token_agreement": agreeing_tokens / max(compared_tokens, 1),
            "passed": identical == total, "first_mismatch": first}


def _padded(ids: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`ids` cut or padded with -1 to `shape` (what a search returns trimmed to its longest row; -1 never
    matches a real id, so a longer or shorter output still differs)."""
    if ids.ndim != 2 or ids.shape[0] != shape[0]:
        return np.full(shape, -1, np.int32)
    width = min(ids.shape[1], shape[1])
    return np.pad(ids[:, :width], ((0, 0), (0, shape[1] - width)), constant_values=-1)


def check_texts(reference: ReferenceData, texts: Sequence[str], decode: Callable[[np.ndarray], str],
                graph: str, runtime: str, provider: str, expected: Sequence[str] | None = None,
                kind: str = "greedy") -> dict:
    """Generated text (e.g. the SavedModel's text signature) against the decoded Keras greedy ids, or
    against `expected` (e.g. the serving runtime's beam-search texts; `kind` names the search)."""
    if expected is None:
        expected = [decode(row) for _, tokens in reference.greedy_chunks() for row in tokens]
    same = [a == b for a, b in zip(texts, expected, strict=True)]
    first = None
    if not all(same):
        i = same.index(False)
        first = {"index": i, "source": reference.sources[i], "expected_text": expected[i],
                 "got_text": texts[i]}
    return {"kind": kind, "graph": graph, "runtime": runtime, "provider": provider,
            "sequences": len(same), "identical": sum(same), "token_agreement": None,
            "passed": all(same), "first_mismatch": first}


def check_tokenizer(reference: ReferenceData, tokenizer) -> dict:
    """The serving tokenizer (sentencepiece) encodes the test split to the ids the export was fed
    (tensorflow-text, as in training)."""
    sources, offset, identical, first = reference.sources, 0, 0, None
    max_source = int(reference.meta["max_source_length"])
    for encoder_input, _ in reference.greedy_chunks():
        texts = sources[offset: offset + len(encoder_input)]
        got, _ = tokenizer.encode_sources(texts, max_source)
        width = max(got.shape[1], encoder_input.shape[1])
        got = np.pad(got, ((0, 0), (0, width - got.shape[1])))
        expected = np.pad(encoder_input, ((0, 0), (0, width - encoder_input.shape[1])))
        same = (got == expected).all(axis=1)
        if first is None and not same.all():
            row = int(np.flatnonzero(~same)[0])
            first = {"index": offset + row, "source": texts[row], "expected_ids": expected[row].tolist(),
                     "got_ids": got[row].tolist()}
        identical += int(same.sum())
        offset += len(texts)
    return {"kind": "greedy", "graph": "tokenizer", "runtime": "sentencepiece",
            "provider": "vs tensorflow-text", "sequences": offset, "identical": identical,
            "token_agreement": None, "passed": identical == offset, "first_mismatch": first}


def quality(reference: ReferenceData, tokens: np.ndarray, decode: Callable[[np.ndarray], str],
            exact_match: bool) -> dict:
    """Exact match (tasks with one right output) or corpus BLEU of decoded ids against the test targets."""
    hypotheses = [decode(row) for row in tokens]
    targets = reference.targets
    if exact_match:
        value = float(np.mean([h == t for h, t in zip(hypotheses, targets, strict=True)]))
        return {"metric": "exact_match", "value": value}
    try:
        import sacrebleu
    except ImportError:
        return {"metric": "bleu", "value": None, "note": "sacrebleu is not installed"}
    return {"metric": "bleu", "value": float(sacrebleu.corpus_bleu(hypotheses, [targets]).score)}


# ---------------------------------------------------------------------------------------------- report
def row_key(row: Mapping) -> tuple:
    return (row["kind"], row["graph"], row["runtime"], row["provider"], row.get("case"), row.get("output"))


def write_parity(path: Path, rows: Iterable[dict], extra: Mapping | None = None) -> dict:
    """Merges `rows` into `path` (rows of other providers/runtimes from earlier runs stay) and returns
    the whole report; `passed` is recomputed over every row."""
    path = Path(path)
    old = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = {}
    merged = {row_key(r): r for r in old.get("checks", []) if isinstance(r, dict) and "kind" in r}
    for row in rows:
        merged[row_key(row)] = row
    report = {**{k: v for k, v in old.items() if k not in ("checks", "passed")}, **dict(extra or {})}
    report.update(tolerance=TOLERANCE, passed=all(r["passed"] for r in merged.values()),
                  checks=list(merged.values()))
    report.setdefault("environment", {})[platform.node() or "host"] = _environment()
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return report


def _environment() -> dict:
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
        versions["providers"] = onnxruntime.get_available_providers()
    except ImportError:
        pass
    return versions


def failures(rows: Iterable[Mapping]) -> list[str]:
    """One line per failed check: the graph, runtime, output, max diff and the input that caused it."""
    lines = []
    for r in rows:
        if r["passed"]:
            continue
        where = f"{r['graph']} on {r['runtime']} [{r['provider']}]"
        if r["kind"] == "tensor":
            lines.append(
                f"{where}: output {r['output']!r} differs by {r['max_abs_diff']:.3g} (max rel "
                f"{r['max_rel_diff']:.3g}; tolerance atol {ATOL:g} + rtol {RTOL:g}*|ref|) on case "
                f"{r['case']} ({r['case_note']}), element {r.get('worst_element')}, input "
                f"{r.get('worst_input')!r}")
        else:
            m = r.get("first_mismatch") or {}
            detail = (f"expected {m.get('expected_text', m.get('expected_ids'))!r}, "
                      f"got {m.get('got_text', m.get('got_ids'))!r}")
            lines.append(f"{where}: {r['sequences'] - r['identical']} of {r['sequences']} outputs differ; "
                         f"first at test line {m.get('index')} {m.get('source')!r}: {detail}")
    return lines


def format_table(rows: Sequence[Mapping]) -> str:
    """graph x runtime/provider x max diff x greedy agreement, one line per combination."""
    groups: dict[tuple, dict] = {}
    for r in rows:
        key = (r["graph"], r["runtime"], r["provider"])
        g = groups.setdefault(key, {"abs": None, "rel": None, "outputs": set(), "greedy": None,
                                    "passed": True})
        g["passed"] &= bool(r["passed"])
        if r["kind"] == "tensor":
            g["outputs"].add(r["output"])
            g["abs"] = max(g["abs"] or 0.0, r["max_abs_diff"])
            g["rel"] = max(g["rel"] or 0.0, r["max_rel_diff"])
        else:
            g["greedy"] = f"{r['identical']}/{r['sequences']} ({100.0 * r['identical'] / max(r['sequences'], 1):.2f}%)"
    header = ("graph", "runtime", "provider", "outputs", "max abs diff", "max rel diff", "ids identical",
              "result")
    lines = [header]
    for (graph, runtime, provider), g in groups.items():
        lines.append((graph, runtime, provider.replace("ExecutionProvider", ""),
                      str(len(g["outputs"])) if g["outputs"] else "-",
                      "-" if g["abs"] is None else f"{g['abs']:.2e}",
                      "-" if g["rel"] is None else f"{g['rel']:.2e}",
                      g["greedy"] or "-", "ok" if g["passed"] else "FAIL"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)
