import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from helpers import TINY_RUN_TEST_EXAMPLES, run_module  # noqa: E402


# The large tier, as keras-hub's `large` tests: whole notebooks, two-worker training, kill/resume, the
# Multi30k slice, the other recipes end to end, exports of every family. `make test` skips them to stay
# within 10 minutes on a 2-core machine; `make test-large` (and `.ci/run`, after `make test`) runs them.
def pytest_addoption(parser):
    parser.addoption("--run-large", action="store_true", help="also run the tests marked large")


def pytest_configure(config):
    config.addinivalue_line("markers", "large: a slow end-to-end test (run with --run-large; make test-large)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-large"):
        return
    skip = pytest.mark.skip(reason="large: run with make test-large (CI runs it)")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny trained Transformer run with its export (int8 graphs included) in `RUN/export`, made once
    per session through the command lines for the serving tests and test_export's Transformer case (1
    epoch on 500 examples; the greedy reference covers the first `TINY_RUN_TEST_EXAMPLES` test lines)."""
    run_dir = tmp_path_factory.mktemp("serving") / "run"
    trained = run_module("keras_nlp_week4", "train", "--model", "transformer", "--preset", "tiny",
                         "--epochs", "1", "--max-train-examples", "500", "--verbose", "0", "--out", str(run_dir))
    assert trained.returncode == 0, trained.stderr[-2000:]
    exported = run_module("export", str(run_dir), "--quantize", "--max-test-examples", str(TINY_RUN_TEST_EXAMPLES))
    assert exported.returncode == 0, exported.stderr[-2000:]
    return run_dir


@pytest.fixture(scope="session")
def tiny_export(tiny_run) -> Path:
    return tiny_run / "export"


@pytest.fixture(scope="session")
def runtime(tiny_export):
    from serving.runtime import Runtime

    return Runtime(tiny_export, intra_op_threads=1)
