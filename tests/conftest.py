import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from helpers import SHARED, TINY_RUN_TEST_EXAMPLES, run_module  # noqa: E402


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


@pytest.fixture(scope="session")
def multi30k_export(tmp_path_factory, tiny_run) -> Path:
    """A Multi30k-shaped export for the JavaScript and page tests, made without training: a random tiny
    Transformer with a 2,000-piece BPE tokenizer trained on Multi30k's training text (the recipe's kind of
    tokenizer, where the dates task's is character-level), the first 40 German -> English test lines as its
    splits. Skips without ../shared/data/multi30k."""
    import keras
    import numpy as np

    from keras_nlp_week4.data.tokenizer import train_sentencepiece
    from keras_nlp_week4.models.registry import build_model
    from keras_nlp_week4.runs import RunConfig

    folder = SHARED / "multi30k"
    files = {split: [folder / f"{name}.{language}" for language in ("de", "en")]
             for split, name in (("train", "train"), ("test", "test_2016_flickr"))}
    if not all(f.is_file() for pair in files.values() for f in pair):
        pytest.skip(f"Multi30k is not in {folder} (see ../shared/data/README.md)")
    run_dir = tmp_path_factory.mktemp("multi30k") / "run"
    run_dir.mkdir()
    texts = [line for f in files["train"] for line in f.read_text(encoding="utf-8").splitlines()]
    train_sentencepiece(texts, run_dir / "tokenizer.model", vocab_size=2000, model_type="bpe")
    pairs = list(zip(*(f.read_text(encoding="utf-8").splitlines()[:40] for f in files["test"]), strict=True))
    for split in ("validation", "test"):
        (run_dir / f"{split}.tsv").write_text("".join(f"{de}\t{en}\n" for de, en in pairs), encoding="utf-8")
    import sentencepiece as spm

    vocab_size = spm.SentencePieceProcessor(model_file=str(run_dir / "tokenizer.model")).get_piece_size()
    keras.utils.set_random_seed(0)
    model = build_model("transformer", vocab_size, "tiny")
    model((np.ones((1, 4), "int32"), np.ones((1, 4), "int32")))
    model.save(run_dir / "model.keras")
    config = RunConfig.read(tiny_run)
    replace(config, task="multi30k", model_config=model.get_config(), num_parameters=int(model.count_params()),
            vocab_size=vocab_size, tokenizer_type="bpe", max_source_length=40, max_target_length=16,
            exact_match=False, splits={"train": 0, "validation": len(pairs), "test": len(pairs)}).write(run_dir)
    exported = run_module("export", str(run_dir))
    assert exported.returncode == 0, exported.stderr[-2000:]
    return run_dir / "export"
