"""`manifest.json`: the sha256 of every exported file, written last and verified before anything loads.

Imports only the standard library and `serving` (which has no TensorFlow): the serving runtime and the
validator's reference-only path use it on machines without TensorFlow. The schema, its one writer and
its one reader are the runtime's own `serving.manifest.Manifest` (verification `verify_manifest`), so
the exporter and the server agree on what "intact" means.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from serving.manifest import MANIFEST, UNLISTED, Manifest, sha256_file, verify_manifest

__all__ = ["MANIFEST", "UNLISTED", "mark_validated", "sha256_file", "verify_manifest", "write_manifest"]


def write_manifest(export_dir: Path, validated: bool = False) -> dict[str, str]:
    """Hashes every file under `export_dir` (except `UNLISTED`) into `manifest.json`.

    `validated` records whether parity validation passed on these files: the runtime loads only an
    export whose manifest says so, so a copy left by an interrupted or `--no-validate` export is refused
    (`mark_validated` flips it once `export.validate` passes).

    Returns:
        {relative posix path: sha256}, sorted by path.
    """
    manifest = Manifest.of_directory(export_dir, validated)
    manifest.write(export_dir)
    return manifest.files


def mark_validated(export_dir: Path, passed: bool) -> None:
    """Records in `manifest.json` whether validation passed (validation has just checked the hashes, so
    they are not computed again)."""
    replace(Manifest.read(export_dir), validated=bool(passed)).write(export_dir)
