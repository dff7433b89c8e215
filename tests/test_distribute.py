"""Distributed training: TF_CONFIG parsing, and a real two-worker run on loopback (CPU, tiny model)."""

import csv
import json
import os
import socket
import subprocess
import sys

import pytest
from helpers import ROOT

from keras_nlp_week4.errors import UserError
from keras_nlp_week4.runs import RunConfig
from keras_nlp_week4.training.distribute import cluster_role, make_strategy, read_tf_config


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def test_cluster_role_from_tf_config():
    assert cluster_role({}).is_chief and cluster_role({}).num_workers == 1
    worker1 = cluster_role({"TF_CONFIG": tf_config([1, 2], 1)})
    assert (worker1.task_index, worker1.num_workers, worker1.is_chief) == (1, 2, False)
    assert cluster_role({"TF_CONFIG": tf_config([1, 2], 0)}).is_chief
    chief = json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2"]},
                        "task": {"type": "chief", "index": 0}})
    assert cluster_role({"TF_CONFIG": chief}).is_chief
    assert not cluster_role({"TF_CONFIG": chief.replace('"chief", "index"', '"worker", "index"')}).is_chief


@pytest.mark.parametrize("raw", ["{not json", '{"task": {"type": "worker", "index": 0}}',
                                 '{"cluster": {}, "task": {"type": "worker", "index": 0}}'])
def test_bad_tf_config_is_a_clear_error(raw):
    with pytest.raises(UserError, match="TF_CONFIG is not valid"):
        read_tf_config({"TF_CONFIG": raw})


def test_unknown_strategy():
    with pytest.raises(UserError, match="unknown strategy"):
        make_strategy("ring")


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.large
def test_two_workers_train_on_loopback(tmp_path):
    """Both workers finish, the loss drops, and the chief's checkpoint loads and generates."""
    ports = free_ports(2)
    out = tmp_path / "run"
    args = [sys.executable, "-m", "keras_nlp_week4", "train", "--model", "transformer", "--preset", "tiny",
            "--strategy", "multi-worker", "--epochs", "2", "--max-train-examples", "256",
            "--batch-size", "64", "--warmup-steps", "4", "--out", str(out), "--verbose", "0"]
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": tf_config(ports, index),
               "CUDA_VISIBLE_DEVICES": ""}
        procs.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=420)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output[-3000:]
    rows = list(csv.DictReader(open(out / "training_log.csv")))
    assert len(rows) == 2 and float(rows[-1]["loss"]) < float(rows[0]["loss"])
    config = RunConfig.read(out)
    assert config.train.strategy == "multi-worker" and config.train.num_replicas == 2
    # Only the chief wrote the run directory; the other worker's scratch folder beside it is gone.
    assert not (out.parent / f".{out.name}-worker-1").exists()
    assert not any("worker" in p.name for p in out.iterdir())
    from keras_nlp_week4.evaluation import decode_texts
    from keras_nlp_week4.runs import load_run

    run = load_run(out)
    assert len(decode_texts(run, ["september 27, 1994"])) == 1
    # The multi-worker model exports and passes the same parity validation as any other run.
    from export.exporter import export_run

    export_run(out, max_test_examples=30, threads=1, verbose=False)  # raises ExportFailed on a mismatch
    parity = json.loads((out / "export" / "parity.json").read_text())
    assert parity["passed"] is True
