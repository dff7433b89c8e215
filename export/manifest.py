"""`manifest.json`: the sha256 of every exported file, written last and verified before anything loads.

Imports only the standard library and `serving` (which has no TensorFlow): the serving runtime and the
validator's reference-only path use it on machines without TensorFlow. Verification is the runtime's
own `serving.manifest.verify_manifest`, so the exporter and the server agree on what "intact" means.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from serving.manifest import sha256_file, verify_manifest

__all__ = ["MANIFEST", "UNLISTED", "mark_validated", "sha256_file", "verify_manifest", "write_manifest"]

MANIFEST = "manifest.json"
# Written after the manifest (parity.json by validation), so never listed in it.
UNLISTED = (MANIFEST, "parity.json")


def write_manifest(export_dir: Path, validated: bool = False) -> dict[str, str]:
    """Hashes every file under `export_dir` (except `UNLISTED`) into `manifest.json`.

    `validated` records whether parity validation passed on these files: the runtime loads only an
    export whose manifest says so, so a copy left by an interrupted or `--no-validate` export is refused
    (`mark_validated` flips it once `export.validate` passes).

    Returns:
        {relative posix path: sha256}, sorted by path.
    """
    export_dir = Path(export_dir)
    files = {}
    for path in sorted(export_dir.rglob("*")):
        relative = path.relative_to(export_dir).as_posix()
        if path.is_file() and relative not in UNLISTED:
            files[relative] = sha256_file(path)
    _write(export_dir, {"files": files, "validated": validated})
    return files


def mark_validated(export_dir: Path, passed: bool) -> None:
    """Records in `manifest.json` whether validation passed (validation has just checked the hashes, so
    they are not computed again)."""
    export_dir = Path(export_dir)
    manifest = json.loads((export_dir / MANIFEST).read_text(encoding="utf-8"))
    _write(export_dir, {**manifest, "validated": bool(passed)})


def _write(export_dir: Path, manifest: dict) -> None:
    temporary = export_dir / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, export_dir / MANIFEST)  # atomic: never a half-written manifest
