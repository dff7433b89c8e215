"""The interface every encoder-decoder family implements, so decoding, export and serving are written once.

Decoding state is a flat dict of batch-first tensors. `encode` produces the entries computed once per
source sequence; `initial_cache` the zero-initialised entries that grow with the output (a Transformer's
self-attention key/value cache); `decode_step` consumes one token per sequence and returns the entries it
changed. Because every entry has the batch on axis 0, beam search reorders or repeats hypotheses with one
`take(..., axis=0)` per entry, whatever the family, and an exported decoder-step graph takes and returns
the same entries by name. An entry the model declares `shared_by_beams` (the Transformer's encoder-side
keys and values) is kept once per source sentence instead: the step reads it for all of that sentence's
hypotheses, so beam search never copies it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras


@dataclass(frozen=True)
class StateSpec:
    """One entry of the decoding state, as an exporter or a numpy runtime needs to know it.

    `shape` names symbolic axes ("batch", "source_batch", "source_length", "max_length") and gives the
    rest as ints. `source` is "encode" (made by `encode`) or "cache" (zeros of `shape` made by the
    runtime). `updated` says whether `decode_step` returns a new value for it. `description` says what it
    holds, for the export's `config.json` (its readers have no model to ask).

    `shared_by_beams`: one copy per source sentence, which all of that sentence's hypotheses read, as
    CTranslate2 keeps its encoder memory: beam search neither repeats nor reorders it, and its batch axis
    is "source_batch", of which "batch" (the rows of `token_ids`) is a multiple. Only an entry that is
    never updated can be shared.
    """

    name: str
    shape: tuple
    dtype: str
    source: str
    updated: bool
    description: str = ""
    shared_by_beams: bool = False

    def __post_init__(self):
        batch_axis = "source_batch" if self.shared_by_beams else "batch"
        if not self.shape or self.shape[0] != batch_axis:
            raise ValueError(f"state entry {self.name!r}: axis 0 must be {batch_axis!r}, got {self.shape}")
        if self.shared_by_beams and self.updated:
            raise ValueError(f"state entry {self.name!r}: an updated entry cannot be shared by beams")

    def to_json(self) -> dict:
        return {**asdict(self), "shape": list(self.shape)}


class Seq2SeqModel(keras.Model):
    """Base class of the encoder-decoder models.

    Call arguments:
        inputs: `(encoder_input, decoder_input)`, int token ids `(batch, src_len)` and `(batch, tgt_len)`,
            0-padded; the decoder input starts with BOS (teacher forcing).
        training: Keras' training flag.

    Returns:
        logits `(batch, tgt_len, vocab_size)`.
    """

    pad_id: int = 0

    def build(self, input_shape=None):
        # Build every weight from the config alone, so a `.keras` file loads without a sample batch.
        self.call((keras.ops.ones((1, 2), "int32"), keras.ops.ones((1, 2), "int32")))
        self.built = True

    def encode(self, encoder_input, training: bool = False) -> dict:
        """Runs the encoder once: returns the state entries whose `source` is "encode"."""
        raise NotImplementedError

    def initial_cache(self, batch_size, max_length) -> dict:
        """Zero-initialised state entries whose `source` is "cache" (none for RNNs)."""
        return {}

    def decode_step(self, token_ids, index, state: dict, training: bool = False):
        """Feeds one token per sequence at output position `index`.

        Args:
            token_ids: int `(batch,)`, the previous output token (BOS at index 0).
            index: int scalar, the position of `token_ids` in the output.
            state: the decoding state dict.

        Returns:
            `(logits (batch, vocab), updates: dict, attention)`: `updates` holds the changed state entries;
            `attention` is the cross-attention over the source, `(batch, layers, heads, src_len)`, or `None`
            for a model without attention.
        """
        raise NotImplementedError

    def call_with_attention(self, inputs):
        """Teacher-forced pass that also returns cross-attention `(batch, layers, heads, tgt_len, src_len)`.

        Returns `(logits, None)` for a model without attention.
        """
        raise NotImplementedError

    def state_specs(self) -> list[StateSpec]:
        """Describes every decoding-state entry (for exporters and the numpy runtime)."""
        raise NotImplementedError

    @property
    def has_attention(self) -> bool:
        return True

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3 (TF backend) reduces the whole nested first batch with `strategy.reduce` before a
        # symbolic build; MultiWorkerMirroredStrategy rejects a nested value there (keras-team/keras#20585).
        # The build only needs shapes, so one replica's local batch does.
        strategy = getattr(self, "_distribute_strategy", None)
        if strategy is None or iterator is None:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        import tensorflow as tf
        from keras import tree

        for _, _, batches in iterator:
            data_batch = next(batches)
            break
        data_batch = tree.map_structure(
            lambda v: strategy.experimental_local_results(v)[0]
            if isinstance(v, tf.distribute.DistributedValues) else v, data_batch)
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def _in_multi_worker_mode(self) -> bool:
        strategy = getattr(self, "_distribute_strategy", None)
        extended = getattr(strategy, "extended", None)
        return bool(extended is not None and getattr(extended, "_in_multi_worker_mode", bool)())

    def _logs_for_reduction(self, logs: dict) -> dict:
        # Under a multi-worker strategy Keras averages each log with `strategy.reduce("MEAN", v, axis=0)`,
        # which fails on the scalars a step returns; a leading axis of 1 makes it the mean over workers.
        if not self._in_multi_worker_mode():
            return logs
        return {name: keras.ops.reshape(value, (1,)) for name, value in logs.items()}

    def train_step(self, data):
        return self._logs_for_reduction(super().train_step(data))

    def test_step(self, data):
        return self._logs_for_reduction(super().test_step(data))
