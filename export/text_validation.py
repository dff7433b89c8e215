"""The `generate_text` graph's validation rows, run where TensorFlow is not loaded.

onnxruntime-extensions' operator library crashes the process (SIGSEGV, while the session loads) once
TensorFlow and tensorflow-text are imported into it, so `export.validate`, which has usually imported
them for the SavedModel rows, runs these checks in a child process (`rows_in_child`); without
TensorFlow they run in-process (`text_rows`).

    python -m export.text_validation < request.json   (what `rows_in_child` runs; JSON rows on stdout)
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from export import parity
from serving.errors import ExportError, first_line
from serving.export_config import ExportConfig
from serving.tokenizer import SentencePieceTokenizer

__all__ = ["rows_in_child", "text_rows"]

GRAPH = "generate_text"


def text_rows(export_dir: Path, provider: str, threads: int, beam: dict, beam_texts: Sequence[str]) -> list[dict]:
    """`generate_text` on the whole stored test split: at beam 1 against the Keras greedy texts, at `beam`
    ({"beam_size", "length_penalty"}) against `beam_texts` (the serving runtime's)."""
    export_dir = Path(export_dir)
    config = ExportConfig.read(export_dir)
    graph = config.graph(GRAPH)
    reference = parity.ReferenceData(export_dir / config.reference)
    tokenizer = SentencePieceTokenizer(export_dir / config.tokenizer, config.special_ids)
    try:
        session = parity.ort_session(export_dir / graph.file, provider, threads, graph.custom_ops)
    except Exception as e:  # onnxruntime raises its own exception types
        raise ExportError(f"cannot load {export_dir / graph.file} on {provider}: {first_line(e)}") from None
    found = [v.name for v in session.get_inputs()], [v.name for v in session.get_outputs()]
    described = [e["name"] for e in graph.inputs], [e["name"] for e in graph.outputs]
    if found != described:
        raise ExportError(f"{export_dir / graph.file} has inputs/outputs {found}, but config.json describes "
                          f"{described}; the export is mixed up, export the run again")
    max_length = np.array(int(reference.meta["max_target_length"]), np.int32)
    chunk = reference.meta["chunk_size"]

    def in_graph(beam_size: int, length_penalty: float) -> list[str]:
        texts = []
        for start in range(0, len(reference.sources), chunk):
            texts += [str(t) for t in session.run(None, {
                "text": np.array(reference.sources[start:start + chunk], dtype=object), "max_length": max_length,
                "beam_size": np.array(beam_size, np.int32),
                "length_penalty": np.array(length_penalty, np.float32)})[0]]
        return texts

    def decode(row: np.ndarray) -> str:
        return tokenizer.decode(tokenizer.output_ids(row))

    runtime = "onnxruntime+extensions"
    return [parity.check_texts(reference, in_graph(1, 0.0), decode, f"{GRAPH}, beam 1", runtime, provider),
            parity.check_texts(reference, in_graph(**beam), decode, f"{GRAPH}, beam {beam['beam_size']}",
                               runtime, provider, expected=list(beam_texts), kind="beam")]


def rows_in_child(export_dir: Path, provider: str, threads: int, beam: dict, beam_texts: Sequence[str]) -> list[dict]:
    """`text_rows` in a fresh Python process (no TensorFlow there)."""
    request = {"export_dir": str(export_dir), "provider": provider, "threads": threads, "beam": beam,
               "beam_texts": list(beam_texts)}
    done = subprocess.run([sys.executable, "-m", "export.text_validation"], input=json.dumps(request),
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        message = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise ExportError(f"validating {GRAPH} failed: {message}")
    return json.loads(done.stdout)


def main() -> int:
    request = json.loads(sys.stdin.read())
    try:
        rows = text_rows(request["export_dir"], request["provider"], request["threads"], request["beam"],
                         request["beam_texts"])
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
