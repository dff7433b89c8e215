"""The tutorials' greedy loop, and ours with the cache, as one SavedModel (`bench_saved_model/`).

`generate_rerun` calls the whole teacher-forced model `model((source, prefix))` on the whole prefix at
every step, encoder included, as the TensorFlow Transformer tutorial does: step t costs a forward pass
over t tokens, so n tokens cost O(n^2). `generate_cached` is `greedy_generate`: the encoder once and one
decoder step per token with the key/value cache, O(n). Neither stops at EOS, so both always do the
work of `max_length` tokens. This export lives only in the benchmark; `export/` is not involved.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from keras_nlp_week4.decoding.greedy import greedy_generate

__all__ = ["GenerationModule", "save_generation_module"]

_SIGNATURE = [tf.TensorSpec((None, None), tf.int32, name="encoder_input"),
              tf.TensorSpec((), tf.int32, name="max_length")]


class GenerationModule(tf.Module):
    """Holds the model's variables and the two greedy loops (see the module docstring)."""

    def __init__(self, model, bos_id: int, pad_id: int):
        super().__init__(name="bench_generation")
        self.model = model
        self.bos_id, self.pad_id = int(bos_id), int(pad_id)
        self.generate_rerun = tf.function(self._rerun, input_signature=_SIGNATURE)
        self.generate_cached = tf.function(self._cached, input_signature=_SIGNATURE)

    def _rerun(self, encoder_input, max_length):
        batch = tf.shape(encoder_input)[0]
        prefix = tf.fill([batch, 1], self.bos_id)  # (batch, 1): BOS, grows by one token per step

        def body(i, prefix):
            logits = self.model((encoder_input, prefix), training=False)  # (batch, t, vocab)
            next_token = tf.cast(tf.argmax(logits[:, -1, :], axis=-1), tf.int32)
            return i + 1, tf.concat([prefix, next_token[:, None]], axis=1)

        _, prefix = tf.while_loop(lambda i, _: i < max_length, body, (tf.constant(0), prefix),
                                  shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, None])))
        return prefix[:, 1:]  # (batch, max_length)

    def _cached(self, encoder_input, max_length):
        return greedy_generate(self.model, encoder_input, max_length, self.bos_id, -1, self.pad_id)


def save_generation_module(model, directory: Path, bos_id: int, pad_id: int) -> Path:
    """Writes the SavedModel (signatures `generate_rerun`, `generate_cached`) and returns its path."""
    module = GenerationModule(model, bos_id, pad_id)
    tf.saved_model.save(module, str(directory), signatures={
        "generate_rerun": module.generate_rerun, "generate_cached": module.generate_cached})
    return Path(directory)
