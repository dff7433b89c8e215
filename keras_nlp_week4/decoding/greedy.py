"""Greedy generation with the decoding state (key/value cache or RNN state), as one graph-level loop.

The loop is written with `keras.ops.while_loop`, so inside a `tf.function` it is a single `tf.while_loop`
(and, exported with tf2onnx, a single ONNX `Loop`): each iteration feeds one token and costs one decoder
step, never a re-run over the whole prefix.
"""

from __future__ import annotations

from keras import ops

from keras_nlp_week4.models.base import Seq2SeqModel


def write_column(buffer, index, values):
    """`buffer[:, index] = values` as one `where` over the `(batch, max_length)` token buffer.

    Not `slice_update`: it lowers to XlaDynamicUpdateSlice, which tf2onnx cannot convert. The buffer is
    small ints, so rewriting it whole each step is cheap; the key/value cache, which is large, is written
    with a scatter instead (`MultiHeadAttention._update_self_attention_cache`, ONNX `ScatterND`).
    """
    positions = ops.arange(ops.shape(buffer)[1])[None, :]  # (1, max_length)
    return ops.where(positions == index, ops.cast(values, buffer.dtype)[:, None], buffer)


def greedy_generate(model: Seq2SeqModel, encoder_input, max_length: int, bos_id: int, eos_id: int,
                    pad_id: int = 0, state: dict | None = None):
    """Generates up to `max_length` tokens per sequence by always taking the most likely next token.

    Args:
        model: any `Seq2SeqModel`.
        encoder_input: int source ids `(batch, src_len)`, padded with `pad_id`.
        max_length: the most tokens to generate (EOS included).
        bos_id, eos_id, pad_id: special ids.
        state: the encoded state if the caller already ran `model.encode` (the export does).

    Returns:
        int32 `(batch, max_length)`: generated ids, EOS included, `pad_id` after EOS. The loop stops early
        once every sequence has produced EOS.
    """
    batch = ops.shape(encoder_input)[0]
    state = dict(model.encode(encoder_input) if state is None else state)
    state.update(model.initial_cache(batch, max_length))
    tokens = ops.full((batch, max_length), pad_id, dtype="int32")
    first = ops.full((batch,), bos_id, dtype="int32")
    finished = ops.zeros((batch,), dtype="bool")

    def cond(index, token, finished, tokens, state):
        return ops.logical_and(index < max_length, ops.logical_not(ops.all(finished)))

    def body(index, token, finished, tokens, state):
        logits, updates, _ = model.decode_step(token, index, state)
        # top_k(1) is argmax with the same lowest-index tie rule; keras.ops.argmax on floats emits a TF
        # Bitcast (for signed zeros) that tf2onnx cannot convert, top_k becomes a plain ONNX TopK.
        next_token = ops.cast(ops.top_k(logits, 1)[1][:, 0], "int32")  # (batch,)
        next_token = ops.where(finished, pad_id, next_token)
        tokens = write_column(tokens, index, next_token)
        finished = ops.logical_or(finished, next_token == eos_id)
        return index + 1, next_token, finished, tokens, {**state, **updates}

    index = ops.convert_to_tensor(0, dtype="int32")
    _, _, _, tokens, _ = ops.while_loop(cond, body, (index, first, finished, tokens, state))
    return tokens
