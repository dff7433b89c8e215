"""Keras-side generation: the in-graph greedy loop, and beam search / sampling through the shared numpy
searches of `serving.search` driven by `model.decode_step`. The options are `serving.options.DecodingOptions`,
the same ones the onnxruntime runtime takes."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from keras_nlp_week4.decoding.greedy import greedy_generate
from keras_nlp_week4.models.base import Seq2SeqModel
from serving.contract import position_axes, shared_by_beams
from serving.options import METHODS, DecodingOptions
from serving.search import SearchResult

__all__ = ["METHODS", "generate", "keras_step_fn"]

# Compiled functions per model, kept beside the model rather than on it (an attribute would be tracked
# by Keras as part of the model) and dropped with it: one traced step per model, one greedy loop per
# model and setting, however many times `generate` is called.
_STEP_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_GREEDY_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def keras_step_fn(model: Seq2SeqModel):
    """`model.decode_step` as a numpy step function (one traced graph for every index), cached per model."""
    if model in _STEP_FUNCTIONS:
        return _STEP_FUNCTIONS[model]

    model_ref = weakref.ref(model)  # a strong reference in the cached function would keep the model alive

    @tf.function(reduce_retracing=True)
    def step(token_ids, index, state):
        logits, updates, attention = model_ref().decode_step(token_ids, index, state)
        return logits, updates, attention

    def numpy_step(token_ids, index, state):
        logits, updates, attention = step(tf.constant(token_ids), tf.constant(index, tf.int32), state)
        attention = None if attention is None else attention.numpy()
        return logits.numpy(), {k: v.numpy() for k, v in updates.items()}, attention

    _STEP_FUNCTIONS[model] = numpy_step
    return numpy_step


def generate(model: Seq2SeqModel, encoder_input: np.ndarray, max_length: int, bos_id: int, eos_id: int,
             pad_id: int = 0, method: str = "greedy", return_attention: bool = False,
             encode: Callable[[str], Sequence[int]] | None = None, **options) -> SearchResult:
    """Generates output ids for a batch of encoded sources with the Keras model.

    `method` and `options` are the fields of `DecodingOptions` ("beam": beam_size, length_penalty,
    num_hypotheses; "sample": temperature, top_k, top_p, seed; every method: target_prefix,
    repetition_penalty, no_repeat_ngram_size, min_new_tokens) and are checked by it
    (`serving.options.OptionError`); `encode` tokenizes `target_prefix`. Greedy without attention or
    rules runs as one compiled graph loop; the others step through `serving.search`, the same code the
    onnxruntime runtime uses.
    """
    decoding = DecodingOptions(method=method, **options)
    decoding.validate(max_new_tokens_limit=max_length)
    encoder_input = np.asarray(encoder_input, dtype=np.int32)
    batch = encoder_input.shape[0]
    constraints = decoding.constraints(batch, max_length, encode)
    if method == "greedy" and not return_attention and constraints is None:
        tokens = _compiled_greedy(model, max_length, bos_id, eos_id, pad_id)(encoder_input)
        return SearchResult(tokens=tokens.numpy())
    state = {k: v.numpy() for k, v in model.encode(encoder_input).items()}
    state.update({k: v.numpy() for k, v in model.initial_cache(batch, max_length).items()})
    specs = [spec.to_json() for spec in model.state_specs()]
    kwargs = {**decoding.search_kwargs(), "shared": shared_by_beams(specs), "position_axes": position_axes(specs)}
    return decoding.search()(keras_step_fn(model), state, batch, max_length, bos_id, eos_id, pad_id,
                             return_attention=return_attention, constraints=constraints, **kwargs)


def _compiled_greedy(model, max_length, bos_id, eos_id, pad_id):
    functions = _GREEDY_FUNCTIONS.setdefault(model, {})
    key = (max_length, bos_id, eos_id, pad_id)
    if key not in functions:
        model_ref = weakref.ref(model)
        functions[key] = tf.function(
            lambda source: greedy_generate(model_ref(), source, max_length, bos_id, eos_id, pad_id),
            input_signature=[tf.TensorSpec([None, None], tf.int32)])
    return functions[key]
