"""The SavedModel: text in -> text out with the tensorflow-text tokenizer inside, and the id-level graphs.

Signatures (the names TensorFlow Serving and `tf.saved_model.load(...).signatures[...]` use):

- ``serving_default`` = ``generate_text``: ``text`` string ``(batch,)`` -> ``text`` string ``(batch,)``,
  greedy decoding of up to ``max_target_length`` tokens; the source is tokenized exactly as in training
  (`keras_nlp_week4.data.pipeline`: ids cut to ``max_source_length - 1``, then EOS, PAD-padded).
- ``encode``, ``decode_step``, ``generate``: the same inputs and outputs, by name, as the ONNX graphs.

Loading needs ``import tensorflow_text`` first (it registers the SentencePiece ops).
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from export.functions import GraphFunctions
from keras_nlp_week4.data.pipeline import _with_special
from keras_nlp_week4.data.tokenizer import Tokenizer

__all__ = ["ExportModule", "save"]


class ExportModule(tf.Module):
    """What the SavedModel holds: the model's variables and the four signature functions.

    Args:
        functions: the model's graph functions (`export.functions.GraphFunctions`).
        tokenizer: the run's tokenizer (its `.model` bytes are embedded in the graph).
        max_source_length, max_target_length: the run's limits.
    """

    def __init__(self, functions: GraphFunctions, tokenizer: Tokenizer, max_source_length: int,
                 max_target_length: int):
        super().__init__(name="keras_nlp_week4_export")
        self.model = functions.model
        self._functions = functions
        self._tokenizer = tokenizer
        self._max_source_length = int(max_source_length)
        self._max_target_length = int(max_target_length)
        self.encode = functions.functions["encoder"]
        self.decode_step = functions.functions["decoder_step"]
        self.generate = functions.functions["generate"]
        self.generate_text = tf.function(
            self._generate_text, input_signature=[tf.TensorSpec([None], tf.string, name="text")])

    def _generate_text(self, text):
        ids = self._tokenizer.tokenize(text)  # ragged (batch, None), no specials
        # The training pipeline's own helper, so the graph's source encoding cannot drift from it.
        encoder_input = _with_special(ids, self._max_source_length, None, self._functions.eos)
        encoder_input = encoder_input.to_tensor(self._functions.pad)  # (batch, src_len)
        tokens = self.generate(encoder_input, tf.constant(self._max_target_length, tf.int32))["tokens"]
        return {"text": self._tokenizer.detokenize(tokens)}

    def signatures(self) -> dict:
        generate_text = self.generate_text.get_concrete_function()
        return {
            "serving_default": generate_text,
            "generate_text": generate_text,
            "encode": self.encode.get_concrete_function(),
            "decode_step": self.decode_step.get_concrete_function(),
            "generate": self.generate.get_concrete_function(),
        }


def save(functions: GraphFunctions, tokenizer: Tokenizer, max_source_length: int, max_target_length: int,
         directory: Path) -> Path:
    """Writes the SavedModel to `directory` (which must not exist yet)."""
    module = ExportModule(functions, tokenizer, max_source_length, max_target_length)
    tf.saved_model.save(module, str(directory), signatures=module.signatures())
    return Path(directory)
