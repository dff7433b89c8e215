"""Distribution strategies, the cluster role of this process, and mixed precision for training.

Multi-worker training follows TensorFlow's standard `TF_CONFIG` (one JSON per process naming the cluster and
this process's task). Every worker runs the same `model.fit`; only the chief writes the run directory, the
others write their (identical) checkpoints to a scratch folder, as TensorFlow's multi-worker guide does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from keras_nlp_week4.errors import UserError

STRATEGIES = ("default", "mirrored", "multi-worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclass(frozen=True)
class ClusterRole:
    """This process's place in the cluster: task type and index, and whether it is the chief."""

    task_type: str = "worker"
    task_index: int = 0
    num_workers: int = 1
    has_chief_task: bool = False

    @property
    def is_chief(self) -> bool:
        # TF's convention: the "chief" task when the cluster has one, else worker 0.
        if self.has_chief_task:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0


def read_tf_config(environ=os.environ) -> dict | None:
    raw = environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        spec = json.loads(raw)
        task = spec["task"]
        cluster = spec["cluster"]
        str(task["type"]), int(task["index"])
        if not isinstance(cluster, dict) or not cluster:
            raise ValueError("empty cluster")
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"TF_CONFIG is not valid ({e}); it must be JSON like "
                        '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                        '"task": {"type": "worker", "index": 0}}') from None
    return spec


def cluster_role(environ=os.environ) -> ClusterRole:
    spec = read_tf_config(environ)
    if spec is None:
        return ClusterRole()
    workers = sum(len(v) for k, v in spec["cluster"].items() if k in ("chief", "worker"))
    return ClusterRole(str(spec["task"]["type"]), int(spec["task"]["index"]), workers,
                       has_chief_task=bool(spec["cluster"].get("chief")))


def make_strategy(name: str):
    """Returns the `tf.distribute` strategy called `name` (see `STRATEGIES`)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise UserError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()  # every local GPU, or the CPU when there is none
    if read_tf_config() is None:
        raise UserError("--strategy multi-worker needs TF_CONFIG describing the cluster and this task; "
                        "see README 'Scaling out'")
    return tf.distribute.MultiWorkerMirroredStrategy()


def set_precision(name: str) -> None:
    """Sets Keras' global dtype policy; the models keep their output projections in float32."""
    import keras

    if name not in PRECISIONS:
        raise UserError(f"unknown precision {name!r}; choose one of: {', '.join(PRECISIONS)}")
    keras.mixed_precision.set_global_policy(name)


def shard_by_data(dataset):
    """In-memory datasets have no files to shard: each worker takes every n-th batch instead."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
