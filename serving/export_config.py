"""The export's `config.json`, typed: its one writer and its one reader (standard library only).

`export.config.build_export_config` builds the whole object once (the exporter, and the benchmark's int8
copy through `dataclasses.replace`), `ExportConfig.write` writes it, and `ExportConfig.read` is the one
reader (the runtime, the validator, the serving layouts, the CTranslate2 target, the benchmarks), with
one-line `ExportError`s for a missing file, bad JSON, another `format_version`, missing or unknown keys,
or an undescribed served graph. The graph descriptions stay the JSON tables `describe_graphs` makes;
outside this module they are read through `graph`, `graph_file` and `served_files`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from serving.errors import ExportError
from serving.manifest import read_json_object

__all__ = ["CONFIG", "FORMAT_VERSION", "OPERATOR_SETS", "OPTIONAL_SERVED_GRAPHS", "SERVED_GRAPHS", "ExportConfig",
           "Graph"]

CONFIG = "config.json"
# 2: per-layer state entries (a Transformer's `self_key_<i>`, `cross_key_<i>`, ...) and entries shared by
# the beams of a sentence (`shared_by_beams`, batch axis "source_batch"); 1 had stacked caches.
FORMAT_VERSION = 2
OPERATOR_SETS = ("standard", "onnxruntime")  # config.json's `operators` (absent: standard)
SERVED_GRAPHS = ("encoder", "decoder_step")  # what the runtime loads; "generate" is the greedy loop
# Loaded too where the export has them: the decoder step returning each row's best log-probabilities
# instead of its logits, which beam search without constraints steps with, and the whole beam search in
# one graph, which a batch-1 request runs (`serving.runtime.IN_GRAPH_MAX_BATCH`).
OPTIONAL_SERVED_GRAPHS = ("decoder_step_top_k", "beam_search")


@dataclass(frozen=True)
class Graph:
    """One exported graph: its file and its inputs/outputs ({"name", "dtype", "shape"} each, in order)."""

    name: str
    file: str
    inputs: list[dict]
    outputs: list[dict]
    # Operators outside standard ONNX, {"domain", "library"}: what a runtime must register to run it.
    custom_ops: dict | None = None


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """Everything a runtime needs without TensorFlow (see docs/export-contract.md)."""

    format_version: int = FORMAT_VERSION
    task: str | None = None
    model: str | None = None
    family: str | None = None
    special_ids: dict[str, int]
    max_source_length: int
    max_target_length: int
    vocab_size: int
    exact_match: bool = False
    opset: int | None = None
    tokenizer: str = "tokenizer.model"
    source_encoding: str | None = None
    state: list[dict]  # `StateSpec.to_json()` entries
    cache_layout: dict[str, str] = field(default_factory=dict)
    graphs: dict[str, dict]  # name -> {"file", "inputs", "outputs"} (`export.config.describe_graphs`)
    saved_model: dict | None = None  # {"dir", "signatures"}
    reference: str = "reference.npz"
    reference_cases: int | None = None
    test_examples: int | None = None
    quantized: dict | None = None  # {"method", "weight_type", "graphs": {name: {"file", "quantized_ops"}}}
    # Updated state entries that the decoder step reads only in the node writing their `<name>_out`
    # (a `ScatterND` or the fused attention), so a runtime may bind input and output to one buffer and
    # skip the cache copy.
    in_place_updates: list[str] = field(default_factory=list)
    # None or "standard": standard ONNX operators only (not written, so runtimes from before the field
    # still read such an export); "onnxruntime": also onnxruntime's own (`com.microsoft`, the
    # Transformer step's fused attention, `python -m export --fused-attention`).
    operators: str | None = None

    # Reading ------------------------------------------------------------------------------------------

    @classmethod
    def read(cls, export_dir: Path) -> ExportConfig:
        """The one reader of an export's `config.json`."""
        export_dir = Path(export_dir)
        if not export_dir.is_dir():
            raise ExportError(f"export directory {export_dir} does not exist; export a trained run first "
                              "(python -m export RUN_DIR)")
        path = export_dir / CONFIG
        values = read_json_object(path, "the export config")
        version = values.get("format_version")
        if version != FORMAT_VERSION:
            raise ExportError(f"{path} has format_version {version!r}; this runtime reads version "
                              f"{FORMAT_VERSION} (export the run again with this project's exporter)")
        names = [f.name for f in fields(cls)]
        required = [f.name for f in fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in values]
        if missing:
            raise ExportError(f"{path} lacks {', '.join(missing)}; export the run again")
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ExportError(f"{path} has unknown keys {', '.join(unknown)}; export the run again")
        if values.get("operators") not in (None, *OPERATOR_SETS):
            raise ExportError(f"{path} has operators {values['operators']!r}, not one of "
                              f"{', '.join(OPERATOR_SETS)}; export the run again")
        graphs = values["graphs"]
        for name in SERVED_GRAPHS:
            graph = graphs.get(name) if isinstance(graphs, dict) else None
            if not isinstance(graph, dict) or "file" not in graph:
                raise ExportError(f"{path} does not describe the {name!r} graph; export the run again")
        return cls(**{**values, "special_ids": {k: int(v) for k, v in values["special_ids"].items()}})

    # Writing ------------------------------------------------------------------------------------------

    def to_json(self) -> dict:
        """The JSON object; fields left at None are not written."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def write(self, export_dir: Path) -> Path:
        """The one writer of an export's `config.json`."""
        path = Path(export_dir) / CONFIG
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        return path

    # The graphs ---------------------------------------------------------------------------------------

    @property
    def graph_names(self) -> tuple[str, ...]:
        return tuple(self.graphs)

    def graph(self, name: str) -> Graph:
        entry = self.graphs[name]
        return Graph(name, entry["file"], list(entry.get("inputs", [])), list(entry.get("outputs", [])),
                     entry.get("custom_ops"))

    def int8_graph_files(self) -> dict[str, str]:
        """{graph name: relative path} of the dynamic-int8 graphs (`python -m export --quantize`); empty
        when the export has none."""
        return {name: entry["file"] for name, entry in ((self.quantized or {}).get("graphs") or {}).items()}

    def graph_file(self, name: str, int8: bool = False) -> str:
        """The relative path of graph `name`, or of its dynamic-int8 version."""
        if not int8:
            return self.graphs[name]["file"]
        int8_files = self.int8_graph_files()
        if name not in int8_files:
            raise ExportError(f"this export has no int8 {name} graph; export the run with --quantize")
        return int8_files[name]

    def served_files(self, int8: bool = False) -> tuple[str, ...]:
        """The relative paths the runtime loads: config, tokenizer and the served graphs (those of
        `OPTIONAL_SERVED_GRAPHS` where the export has them)."""
        names = SERVED_GRAPHS + tuple(name for name in OPTIONAL_SERVED_GRAPHS if name in self.graphs
                                      and (not int8 or name in self.int8_graph_files()))
        return (CONFIG, self.tokenizer, *(self.graph_file(name, int8) for name in names))

    @property
    def saved_model_dir(self) -> str:
        return (self.saved_model or {}).get("dir", "saved_model")

    @property
    def quantization_method(self) -> str | None:
        return (self.quantized or {}).get("method")
