"""Keras-side generation: the in-graph greedy loop, and beam search / sampling through the shared numpy
searches of `serving.search` driven by `model.decode_step`."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_nlp_week4.decoding.greedy import greedy_generate
from keras_nlp_week4.models.base import Seq2SeqModel
from serving.search import SearchResult, beam_search, greedy_search, sample_search

METHODS = ("greedy", "beam", "sample")


def keras_step_fn(model: Seq2SeqModel):
    """Wraps `model.decode_step` as a numpy step function (one traced graph for every index)."""

    @tf.function(reduce_retracing=True)
    def step(token_ids, index, state):
        logits, updates, attention = model.decode_step(token_ids, index, state)
        return logits, updates, attention

    def numpy_step(token_ids, index, state):
        logits, updates, attention = step(tf.constant(token_ids), tf.constant(index, tf.int32), state)
        attention = None if attention is None else attention.numpy()
        return logits.numpy(), {k: v.numpy() for k, v in updates.items()}, attention

    return numpy_step


def generate(model: Seq2SeqModel, encoder_input: np.ndarray, max_length: int, bos_id: int, eos_id: int,
             pad_id: int = 0, method: str = "greedy", return_attention: bool = False,
             **options) -> SearchResult:
    """Generates output ids for a batch of encoded sources with the Keras model.

    `method` is "greedy", "beam" (options: beam_size, length_penalty) or "sample" (options: temperature,
    top_k, top_p, seed). Greedy without attention runs as one compiled graph loop; the others step
    through `serving.search`, the same code the onnxruntime runtime uses.
    """
    if method not in METHODS:
        raise ValueError(f"unknown decoding method {method!r}; choose one of {', '.join(METHODS)}")
    encoder_input = np.asarray(encoder_input, dtype=np.int32)
    batch = encoder_input.shape[0]
    if method == "greedy" and not return_attention:
        tokens = _compiled_greedy(model, max_length, bos_id, eos_id, pad_id)(encoder_input)
        return SearchResult(tokens=tokens.numpy())
    state = {k: v.numpy() for k, v in model.encode(encoder_input).items()}
    state.update({k: v.numpy() for k, v in model.initial_cache(batch, max_length).items()})
    search = {"greedy": greedy_search, "beam": beam_search, "sample": sample_search}[method]
    return search(keras_step_fn(model), state, batch, max_length, bos_id, eos_id, pad_id,
                  return_attention=return_attention, **options)


def _compiled_greedy(model, max_length, bos_id, eos_id, pad_id):
    key = (max_length, bos_id, eos_id, pad_id)
    cache = model.__dict__.setdefault("_greedy_functions", {})
    if key not in cache:
        cache[key] = tf.function(
            lambda source: greedy_generate(model, source, max_length, bos_id, eos_id, pad_id),
            input_signature=[tf.TensorSpec([None, None], tf.int32)])
    return cache[key]
