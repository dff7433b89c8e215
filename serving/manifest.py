"""Reading and verifying an export directory with the standard library alone.

The exporter writes `manifest.json` = {"files": {relative path: sha256}} for every file it produced, so a
runtime can refuse a directory that was copied halfway or edited after export before it loads anything.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from serving.errors import ExportError

__all__ = ["FORMAT_VERSION", "graph_file", "read_export_config", "served_files", "sha256_file",
           "verify_manifest"]

FORMAT_VERSION = 1
_REQUIRED_KEYS = ("special_ids", "max_source_length", "max_target_length", "vocab_size", "state", "graphs")
_SERVED_GRAPHS = ("encoder", "decoder_step")


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ExportError(f"{path} is missing; {path.parent} is not a complete export (export the run again)")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{path} is not valid JSON ({e}); export the run again") from None
    if not isinstance(value, dict):
        raise ExportError(f"{path} must hold a JSON object ({what}); export the run again")
    return value


def _resolve(export_dir: Path, relative: str) -> Path:
    """`export_dir / relative`, refusing paths that leave the export directory."""
    path = (export_dir / relative).resolve()
    if export_dir.resolve() not in path.parents:
        raise ExportError(f"{export_dir / 'manifest.json'} names {relative!r}, outside the export directory")
    return path


def verify_manifest(export_dir: Path, required: tuple[str, ...] = (), only_required: bool = False,
                    require_validated: bool = False) -> dict[str, str]:
    """Checks the files listed in `manifest.json` against their sha256.

    Args:
        export_dir: the export directory.
        required: relative paths that must be listed (the files the caller is about to load).
        only_required: check the `required` files alone (a runtime that ships only what it loads, e.g.
            without the SavedModel); by default every listed file is checked.
        require_validated: refuse an export whose parity validation did not pass (the exporter writes
            `"validated": false` until it has; see `export.manifest.write_manifest`).

    Returns:
        The manifest's {relative path: sha256}.

    Raises:
        ExportError: naming the first missing, unlisted or modified file.
    """
    export_dir = Path(export_dir)
    manifest = _read_json(export_dir / "manifest.json", "the export manifest")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ExportError(f"{export_dir / 'manifest.json'} has no 'files' table; export the run again")
    if require_validated and manifest.get("validated") is not True:
        raise ExportError(f"{export_dir} has not passed parity validation (an interrupted or --no-validate "
                          "export, or one made before exports recorded it); validate it with python -m "
                          "export.validate RUN_DIR, or export the run again")
    for relative in required:
        if relative not in files:
            raise ExportError(f"{export_dir / 'manifest.json'} does not list {relative}; export the run again")
    for relative, expected in files.items():
        if only_required and relative not in required:
            continue
        path = _resolve(export_dir, relative)
        if not path.is_file():
            raise ExportError(f"{export_dir / relative} is missing (listed in manifest.json); "
                              "export the run again")
        if sha256_file(path) != expected:
            raise ExportError(f"{export_dir / relative} does not match its sha256 in manifest.json "
                              "(modified or truncated); export the run again")
    return files


def read_export_config(export_dir: Path) -> dict:
    """Reads `config.json` of an export and checks the keys the runtime relies on."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise ExportError(f"export directory {export_dir} does not exist; export a trained run first "
                          "(python -m export RUN_DIR)")
    path = export_dir / "config.json"
    config = _read_json(path, "the export config")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ExportError(f"{path} has format_version {version!r}; this runtime reads version "
                          f"{FORMAT_VERSION} (export the run again with this project's exporter)")
    missing = [key for key in _REQUIRED_KEYS if key not in config]
    if missing:
        raise ExportError(f"{path} lacks {', '.join(missing)}; export the run again")
    for name in _SERVED_GRAPHS:
        graph = config["graphs"].get(name)
        if not isinstance(graph, dict) or "file" not in graph:
            raise ExportError(f"{path} does not describe the {name!r} graph; export the run again")
    return config


def graph_file(config: dict, name: str, int8: bool = False) -> str:
    """The relative path of graph `name`, or of its dynamic-int8 version (`python -m export --quantize`)."""
    if not int8:
        return config["graphs"][name]["file"]
    quantized = (config.get("quantized") or {}).get("graphs", {})
    if name not in quantized:
        raise ExportError(f"this export has no int8 {name} graph; export the run with --quantize")
    return quantized[name]["file"]


def served_files(config: dict, int8: bool = False) -> tuple[str, ...]:
    """The relative paths the runtime loads: config, tokenizer and the served graphs."""
    graphs = tuple(graph_file(config, name, int8) for name in _SERVED_GRAPHS)
    return ("config.json", config.get("tokenizer", "tokenizer.model"), *graphs)
