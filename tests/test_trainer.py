"""Training end to end: the run directory, resuming a killed run, and one-line errors for bad input."""

import csv
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT

from keras_nlp_week4.errors import UserError
from keras_nlp_week4.runs import RunConfig, RunMetrics, load_run
from keras_nlp_week4.training.trainer import TrainConfig, train

TINY = ["--preset", "tiny", "--max-train-examples", "640", "--batch-size", "64", "--verbose", "0"]


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    """A run trained in process for 2 epochs with the settings of `TINY` (the session's `tiny_run` is 1
    epoch, through the CLI); also the uninterrupted run the kill/resume test compares with."""
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(model="transformer", preset="tiny", epochs=2, max_train_examples=640, batch_size=64,
                      out=str(out), verbose=0))
    return out


def test_run_directory_is_complete(two_epoch_run):
    for name in ["model.keras", "tokenizer.model", "config.json", "metrics.json", "training_log.csv",
                 "validation.tsv", "test.tsv"]:
        assert (two_epoch_run / name).is_file(), name
    assert (two_epoch_run / "logs").is_dir()  # TensorBoard
    assert not (two_epoch_run / "backup").exists()  # removed once training finished
    metrics = RunMetrics.read(two_epoch_run)
    assert None not in (metrics.val_loss, metrics.test_perplexity, metrics.training_seconds)
    assert 0.0 <= metrics.exact_match <= metrics.valid_outputs <= 1.0  # a right date is a valid one
    config = RunConfig.read(two_epoch_run)
    assert config.special_ids == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert {"d_model": 64}.items() <= config.model_config.items()
    assert config.train.num_replicas == 1 and config.train.epochs == 2
    rows = list(csv.DictReader(open(two_epoch_run / "training_log.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])  # it learns


def test_generate_command_takes_every_decoding_option(two_epoch_run, capsys):
    from keras_nlp_week4.cli import main

    argv = ["generate", "--run", str(two_epoch_run), "9/27/94", "--method", "sample", "--temperature", "0.7",
            "--top-p", "0.9", "--seed", "3", "--max-new-tokens", "6"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first  # seeded
    source, output = first.rstrip("\n").split("\t")
    assert source == "9/27/94" and len(output) <= 6
    assert main(["generate", "--run", str(two_epoch_run), "x", "--max-new-tokens", "13"]) == 2
    assert "--max-new-tokens 13 is above the limit 12" in capsys.readouterr().err


def test_loaded_run_generates(two_epoch_run):
    """`decode_texts` (the in-graph greedy loop over the key/value cache) gives what greedy decoding
    written here the slow way gives: the teacher-forced model over the whole prefix, one token at a time."""
    from keras_nlp_week4.data.pipeline import encode_sources
    from keras_nlp_week4.evaluation import decode_texts
    from keras_nlp_week4.runs import RunConfig

    run = load_run(two_epoch_run)
    config = RunConfig.read(two_epoch_run)
    sources = ["september 27, 1994", "9/27/94", "MONDAY, NOVEMBER 30, 1992"]
    outputs = decode_texts(run, sources)
    bos, eos = config.special_ids["bos"], config.special_ids["eos"]
    encoder_input = encode_sources(sources, run.tokenizer, config.max_source_length)
    prefix = np.full((len(sources), 1), bos, np.int32)
    for _ in range(config.max_target_length):
        logits = np.asarray(run.model((encoder_input, prefix), training=False))
        prefix = np.concatenate([prefix, logits[:, -1].argmax(-1).astype(np.int32)[:, None]], axis=1)
    expected = []
    for row in prefix[:, 1:].tolist():
        ids = row[: row.index(eos)] if eos in row else row
        expected.append(run.tokenizer.decode([ids])[0])
    assert outputs == expected and any(outputs), (outputs, expected)


KILL_AFTER_EPOCH = '''
import os, signal, sys
from keras_nlp_week4.training import resume

backup_epoch_end = resume.ResumableBackup.on_epoch_end


def kill_after_backup(self, epoch, logs=None):
    backup_epoch_end(self, epoch, logs)
    if epoch == int(os.environ["KILL_AFTER_EPOCH"]):
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9: no cleanup at all


resume.ResumableBackup.on_epoch_end = kill_after_backup
from keras_nlp_week4.cli import main

sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.large
def test_killed_run_resumes_to_the_same_model_as_an_uninterrupted_one(two_epoch_run, tmp_path, capsys):
    """Killed (kill -9, in its own process) after its first of 2 epochs, resumed (in process, as
    `python -m keras_nlp_week4` runs it), it ends where the never-killed `two_epoch_run` did."""
    from keras_nlp_week4.cli import main

    args = ["train", "--model", "transformer", "--epochs", "2", *TINY]
    killed, uninterrupted = tmp_path / "killed", two_epoch_run
    script = tmp_path / "kill_after_epoch.py"
    script.write_text(KILL_AFTER_EPOCH)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KILL_AFTER_EPOCH": "0", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script), *args, "--out", str(killed)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    log = killed / "training_log.csv"
    assert [int(r["epoch"]) for r in csv.DictReader(open(log))] == [0]
    assert not (killed / "metrics.json").exists()
    first_epoch_seconds = 60.0 * float(next(csv.DictReader(open(log)))["minutes"])

    assert main([*args, "--out", str(killed)]) == 0
    # The recorded training time counts the epoch trained before the kill, not the resumed part alone.
    second_epoch_seconds = 60.0 * float(list(csv.DictReader(open(log)))[-1]["minutes"]) - first_epoch_seconds
    assert RunMetrics.read(killed).training_seconds > first_epoch_seconds + 0.5 * second_epoch_seconds
    assert "Resuming" in (out := capsys.readouterr().out) and "epoch (1)" in out
    # The resumed run continues after the last finished epoch: no epoch is trained twice.
    assert [int(r["epoch"]) for r in csv.DictReader(open(log))] == list(range(2))
    assert not (killed / "backup").exists()

    # Same data order, same dropout masks, same optimizer state: the same numbers, not merely close.
    rows = [list(csv.DictReader(open(run / "training_log.csv"))) for run in (killed, uninterrupted)]
    assert [r["val_loss"] for r in rows[0]] == [r["val_loss"] for r in rows[1]]
    weights = [load_run(run, compile=False).model.get_weights() for run in (killed, uninterrupted)]
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))


@pytest.mark.parametrize("args, message", [
    (["train", "--model", "gpt"], "unknown model 'gpt'"),
    (["train", "--task", "poetry"], "unknown task 'poetry'"),
    (["train", "--data", "nowhere.csv"], "drop --data"),
    (["evaluate", "/nonexistent/run"], "does not exist"),
    (["train", "--epochs", "0"], "epochs must be >= 1"),
    (["generate", "x", "--method", "beam", "--beam-size", "0"], "--beam-size must be >= 1, got 0"),
])
def test_cli_bad_input_is_one_line_and_exit_2(args, message, capsys):
    # In process (`main` is what `python -m keras_nlp_week4` runs): one interpreter start per case would
    # cost more than the checks; the exit status, a subprocess's, is tested in test_readers.
    from keras_nlp_week4.cli import main

    assert main(list(args)) == 2
    stderr = capsys.readouterr().err
    assert message in stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("overrides, message", [
    ({"batch_size": -1}, "batch_size must be >= 1, got -1"),
    ({"learning_rate": 0.0}, "learning_rate must be a number > 0"),
    ({"dropout": 1.0}, r"dropout must be in \[0.0, 1.0\)"),
    ({"max_target_length": 1}, "max_target_length must be >= 2"),
    ({"task": "translate", "src": "nowhere.en", "tgt": "nowhere.de"}, "nowhere"),
    ({"task": "chatbot", "data": str(ROOT / "pyproject.toml")}, "pyproject.toml"),
])
def test_a_refused_command_changes_nothing_on_disk(tmp_path, overrides, message):
    out = tmp_path / "run"
    with pytest.raises(UserError, match=message):
        train(TrainConfig(out=str(out), verbose=0, **overrides))
    assert not out.exists()


def test_an_interrupted_run_is_not_resumed_with_other_settings(two_epoch_run, tmp_path):
    """Its backup holds the recorded settings' weights and epoch count: resuming it with others would
    train neither run, and would overwrite its config.json."""
    interrupted = tmp_path / "interrupted"
    (interrupted / "backup").mkdir(parents=True)
    (interrupted / "backup" / "epoch.json").write_text("{}")
    (interrupted / "config.json").write_bytes((two_epoch_run / "config.json").read_bytes())
    before = {p: p.read_bytes() for p in interrupted.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match=r"other settings \(--epochs 2 -> 3\); rerun its own command"):
        train(TrainConfig(model="transformer", preset="tiny", epochs=3, max_train_examples=640, batch_size=64,
                          out=str(interrupted), verbose=0))
    assert {p: p.read_bytes() for p in interrupted.rglob("*") if p.is_file()} == before


def test_damaged_model_file_is_a_clear_error(two_epoch_run, tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in ["config.json", "tokenizer.model", "test.tsv", "validation.tsv"]:
        (damaged / name).write_bytes((two_epoch_run / name).read_bytes())
    (damaged / "model.keras").write_bytes((two_epoch_run / "model.keras").read_bytes()[:1000])
    with pytest.raises(UserError, match="model.keras.*damaged"):
        load_run(damaged)
    (damaged / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="config.json is not valid JSON"):
        load_run(damaged)


def test_dates_defaults_train_the_transformer_on_more_dates_and_keep_the_rnns_on_theirs():
    from keras_nlp_week4.data.dates import date_splits
    from keras_nlp_week4.tasks import DATES_TRAIN_EXAMPLES
    from keras_nlp_week4.training.trainer import resolve_settings

    transformer = resolve_settings(TrainConfig(task="dates", model="transformer"))
    assert (transformer.max_train_examples, transformer.batch_size, transformer.epochs,
            transformer.dropout) == (None, 128, 8, 0.0)
    rnn = resolve_settings(TrainConfig(task="dates", model="bahdanau"))
    assert rnn.max_train_examples == 20000 and rnn.dropout is None and rnn.batch_size == 128
    # The RNNs' 20,000 are the first 20,000 of the larger split; test and validation do not move.
    small, large = date_splits(num_train=2000, seed=5), date_splits(num_train=DATES_TRAIN_EXAMPLES // 20, seed=5)
    assert large.train[:2000] == small.train
    assert (large.test, large.validation) == (small.test, small.validation)
