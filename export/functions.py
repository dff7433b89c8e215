"""The model's encode / decoder step / greedy generation as `tf.function`s over flat, named tensors.

The decoding state is a dict in Keras; an exported graph needs one named input and output per entry.
These wrappers take the tensors positionally in the order of the graph description (`export.config`)
and return dicts keyed by the contract's output names, so tf2onnx names the ONNX outputs after the keys
and the SavedModel signatures use the same names. Every output goes through `tf.identity`: two outputs
that are the same tensor (a Luong model's `attention_keys` can be `encoder_outputs` itself) would otherwise
collapse into one graph output.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from export.config import describe_graphs
from keras_nlp_week4.decoding.greedy import greedy_generate
from keras_nlp_week4.models.base import Seq2SeqModel
from serving.contract import ATTENTION, LOGITS, TOKENS, updated_name

__all__ = ["GraphFunctions", "describe_model", "tensor_spec"]


def tensor_spec(entry: Mapping) -> tf.TensorSpec:
    """A named `tf.TensorSpec` with `None` for every symbolic axis."""
    shape = [None if isinstance(d, str) else int(d) for d in entry["shape"]]
    return tf.TensorSpec(shape, tf.dtypes.as_dtype(entry["dtype"]), name=entry["name"])


def describe_model(model: Seq2SeqModel) -> tuple[list[dict], dict[str, dict]]:
    """The state entries and graph descriptions of `model`.

    The logits width and the attention's (layers, heads) come from one tiny eager decoder step, so the
    description states what the model computes rather than what its config claims.
    """
    state = [spec.to_json() for spec in model.state_specs()]
    source = tf.constant([[4, 3]], tf.int32)
    values = dict(model.encode(source))
    values.update(model.initial_cache(1, 2))
    logits, _, attention = model.decode_step(tf.constant([2], tf.int32), tf.constant(0, tf.int32), values)
    heads = None if attention is None else tuple(int(d) for d in attention.shape[1:3])
    return state, describe_graphs(state, int(logits.shape[-1]), heads)


class GraphFunctions:
    """The three exported computations of `model`, described by `graphs` (see `export.config`).

    Args:
        model: a trained `Seq2SeqModel`.
        graphs: `describe_graphs(...)` of the model.
        special_ids: {"bos", "eos", "pad"} ids.
    """

    def __init__(self, model: Seq2SeqModel, graphs: Mapping[str, dict], special_ids: Mapping[str, int]):
        self.model = model
        self.graphs = graphs
        self.bos, self.eos, self.pad = (int(special_ids[k]) for k in ("bos", "eos", "pad"))
        self._state_names = [entry["name"] for entry in graphs["decoder_step"]["inputs"][2:]]
        self.functions = {
            "encoder": tf.function(self._encode, input_signature=self.signature("encoder")),
            "decoder_step": tf.function(self._decode_step, input_signature=self.signature("decoder_step")),
            "generate": tf.function(self._generate, input_signature=self.signature("generate")),
        }

    def signature(self, graph: str) -> list[tf.TensorSpec]:
        return [tensor_spec(entry) for entry in self.graphs[graph]["inputs"]]

    def output_names(self, graph: str) -> list[str]:
        return [entry["name"] for entry in self.graphs[graph]["outputs"]]

    def _named(self, graph: str, values: Mapping) -> dict:
        names = self.output_names(graph)
        if set(values) != set(names):
            raise ValueError(f"{graph}: the model returns {sorted(values)}, the description lists {names}")
        return {name: tf.identity(values[name], name=name) for name in names}

    def _encode(self, encoder_input):
        return self._named("encoder", self.model.encode(encoder_input))

    def _decode_step(self, token_ids, index, *state):
        logits, updates, attention = self.model.decode_step(
            token_ids, index, dict(zip(self._state_names, state, strict=True)))
        values = {LOGITS: logits, **{updated_name(name): value for name, value in updates.items()}}
        if attention is not None:
            values[ATTENTION] = attention
        return self._named("decoder_step", values)

    def _generate(self, encoder_input, max_length):
        tokens = greedy_generate(self.model, encoder_input, max_length, self.bos, self.eos, self.pad)
        return self._named("generate", {TOKENS: tokens})

    def __call__(self, graph: str, *inputs) -> dict:
        return self.functions[graph](*inputs)
