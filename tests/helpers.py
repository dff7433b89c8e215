"""Helpers the test modules share (fixtures are in `conftest.py`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository
SHARED = ROOT.parent / "shared" / "data"  # shared data sets (Multi30k, chatbot, kor-eng) beside the checkout
# Test lines the session's `tiny_run` export validates on (conftest.py): enough to compare greedy outputs,
# few enough to keep the export quick.
TINY_RUN_TEST_EXAMPLES = 300


def run_module(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """`python -m ...` from the repository root, with the test environment (quiet TensorFlow, no GPU)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m keras_nlp_week4 ARGS`: the training CLI, as `run_module` runs it."""
    return run_module("keras_nlp_week4", *args, timeout=timeout)


def copy_export(tiny_export: Path, tmp_path: Path) -> Path:
    """A private copy to damage, without the SavedModel (serving does not need it; the manifest still
    lists it)."""
    target = tmp_path / "export"
    shutil.copytree(tiny_export, target, ignore=shutil.ignore_patterns("saved_model"))
    return target
