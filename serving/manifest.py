"""`manifest.json`, typed, and verifying an export directory with the standard library alone.

The exporter writes `manifest.json` = {"files": {relative path: sha256}, "validated": bool} for every file
it produced (`Manifest.of_directory(...).write`, through `export.manifest`), so a runtime can refuse a
directory that was copied halfway or edited after export before it loads anything; validation flips
`validated` (`export.manifest.mark_validated`). `Manifest.read` is the one reader.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from serving.errors import ExportError

__all__ = ["MANIFEST", "UNLISTED", "Manifest", "read_json_object", "sha256_file", "verify_manifest"]

MANIFEST = "manifest.json"
# Written after the manifest (parity.json by validation), so never listed in it.
UNLISTED = (MANIFEST, "parity.json")


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def read_json_object(path: Path, what: str, missing: str | None = None, again: str = "export the run again",
                     error: type[Exception] = ExportError) -> dict:
    """The JSON object in `path` (`what` names it), with one-line errors of type `error`: `missing` when
    there is no file, else "...; `again`" (the run side passes its `UserError` and its own advice)."""
    if not path.is_file():
        raise error(missing or f"{path} is missing; {path.parent} is not a complete export (export the run again)")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path} is not valid JSON ({e}); {again}") from None
    if not isinstance(value, dict):
        raise error(f"{path} must hold a JSON object ({what}); {again}")
    return value


@dataclass(frozen=True)
class Manifest:
    """The sha256 of every exported file, and whether parity validation passed on them."""

    files: dict[str, str]
    validated: bool = False

    @classmethod
    def of_directory(cls, export_dir: Path, validated: bool = False) -> Manifest:
        """Hashes every file under `export_dir` except `UNLISTED`, sorted by relative posix path."""
        export_dir = Path(export_dir)
        files = {}
        for path in sorted(export_dir.rglob("*")):
            relative = path.relative_to(export_dir).as_posix()
            if path.is_file() and relative not in UNLISTED:
                files[relative] = sha256_file(path)
        return cls(files, validated)

    @classmethod
    def read(cls, export_dir: Path) -> Manifest:
        """The one reader of `manifest.json`."""
        path = Path(export_dir) / MANIFEST
        values = read_json_object(path, "the export manifest")
        files = values.get("files")
        if not isinstance(files, dict) or not files:
            raise ExportError(f"{path} has no 'files' table; export the run again")
        unknown = sorted(set(values) - {"files", "validated"})
        if unknown:
            raise ExportError(f"{path} has unknown keys {', '.join(unknown)}; export the run again")
        # An export made before manifests recorded validation has no "validated": it counts as not validated.
        return cls({str(k): str(v) for k, v in files.items()}, values.get("validated") is True)

    def write(self, export_dir: Path) -> Path:
        """The one writer of `manifest.json`: atomic, never a half-written manifest."""
        export_dir = Path(export_dir)
        temporary = export_dir / f".{MANIFEST}.tmp"
        temporary.write_text(json.dumps({"files": self.files, "validated": bool(self.validated)}, indent=2)
                             + "\n", encoding="utf-8")
        os.replace(temporary, export_dir / MANIFEST)
        return export_dir / MANIFEST


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
    manifest = Manifest.read(export_dir)
    files = manifest.files
    if require_validated and not manifest.validated:
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
