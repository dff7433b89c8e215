"""Importing TensorFlow without its start-up chatter, for the command lines and the notebooks."""

from __future__ import annotations

import os

__all__ = ["import_tensorflow_quietly"]


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with file descriptor 2 silenced, and its C++ and Python logging at errors only.

    TensorFlow's C++ runtime prints start-up lines (oneDNN, missing CUDA drivers) before its logging is
    configured, so TF_CPP_MIN_LOG_LEVEL cannot hide them; they would bury our one-line errors. A failed
    import still raises, and its exception is reported normally.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    # Its Python logger's INFO and WARNING lines ("Assets written to", retracing notices) are for
    # TensorFlow's developers; errors still show.
    tensorflow.get_logger().setLevel("ERROR")
