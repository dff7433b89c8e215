import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from helpers import run_module  # noqa: E402


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny trained Transformer run with its export (int8 graphs included) in `RUN/export`, made once
    per session for the serving tests (1 epoch on 500 examples)."""
    run_dir = tmp_path_factory.mktemp("serving") / "run"
    trained = run_module("keras_nlp_week4", "train", "--model", "transformer", "--preset", "tiny",
                         "--epochs", "1", "--max-train-examples", "500", "--verbose", "0", "--out", str(run_dir))
    assert trained.returncode == 0, trained.stderr[-2000:]
    # Validation on 200 test sequences keeps the export quick; the serving tests check parity themselves.
    exported = run_module("export", str(run_dir), "--quantize", "--max-test-examples", "200")
    assert exported.returncode == 0, exported.stderr[-2000:]
    return run_dir


@pytest.fixture(scope="session")
def tiny_export(tiny_run) -> Path:
    return tiny_run / "export"


@pytest.fixture(scope="session")
def runtime(tiny_export):
    from serving.runtime import Runtime

    return Runtime(tiny_export, intra_op_threads=1)
