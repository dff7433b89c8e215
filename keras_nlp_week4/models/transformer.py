"""The Transformer encoder-decoder of "Attention Is All You Need" (Vaswani et al., 2017, section 3)."""

from __future__ import annotations

import keras
from keras import ops

from keras_nlp_week4.layers.masks import padding_mask
from keras_nlp_week4.layers.token_and_position_embedding import TokenAndPositionEmbedding
from keras_nlp_week4.layers.transformer_decoder_layer import TransformerDecoderLayer
from keras_nlp_week4.layers.transformer_encoder_layer import TransformerEncoderLayer
from keras_nlp_week4.layers.transformer_layer_base import check_transformer_dims
from keras_nlp_week4.models.base import Seq2SeqModel, StateSpec

# `base` and `big` are Table 3 of the paper; the smaller ones train on a laptop CPU in minutes.
TRANSFORMER_PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=64, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, d_ff=256,
                 dropout=0.1),
    "small": dict(d_model=128, num_heads=4, num_encoder_layers=3, num_decoder_layers=3, d_ff=512,
                  dropout=0.1),
    # The Multi30k recipe's size: `medium`'s width on `small`'s depth (7.6 M parameters with 8,000 pieces).
    "compact": dict(d_model=256, num_heads=8, num_encoder_layers=3, num_decoder_layers=3, d_ff=1024,
                    dropout=0.1),
    "medium": dict(d_model=256, num_heads=8, num_encoder_layers=4, num_decoder_layers=4, d_ff=1024,
                   dropout=0.1),
    "base": dict(d_model=512, num_heads=8, num_encoder_layers=6, num_decoder_layers=6, d_ff=2048,
                 dropout=0.1),
    "big": dict(d_model=1024, num_heads=16, num_encoder_layers=6, num_decoder_layers=6, d_ff=4096,
                dropout=0.3),
}


def cache_entries(attention: str, layer: int) -> tuple[str, str]:
    """The names of decoder layer `layer`'s key and value state entries for its "self" or "cross"
    attention: the one place they are spelled, for the model and the step written from its weights."""
    return f"{attention}_key_{layer}", f"{attention}_value_{layer}"


@keras.saving.register_keras_serializable(package="keras_nlp_week4")
class Transformer(Seq2SeqModel):
    """Encoder-decoder Transformer (Vaswani et al., 2017, figure 1).

    Source and target tokens are embedded, scaled by sqrt(d_model) and summed with sinusoidal positions
    (section 3.4-3.5); N encoder layers of self-attention + feed-forward; N decoder layers of causal
    self-attention, cross-attention over the encoder output and feed-forward; a linear layer and softmax
    over the target vocabulary. When source and target share a vocabulary the two embeddings and the
    pre-softmax projection share one matrix (section 3.4).

    Args:
        source_vocab_size: size of the source vocabulary.
        target_vocab_size: size of the target vocabulary (default: the source's).
        d_model: width of every sub-layer's output.
        num_heads: attention heads; `d_model` must divide by it.
        num_encoder_layers, num_decoder_layers: the paper's N for each stack.
        d_ff: inner width of the position-wise feed-forward network.
        dropout: P_drop, applied to sub-layer outputs, embeddings and attention weights.
        norm_first: pre-norm (LayerNorm before each sub-layer) instead of the paper's post-norm.
        share_embeddings: tie source/target embeddings and the output projection when vocabularies match.
        pad_id: the padding token id.

    Example:
    >>> model = Transformer.from_preset("tiny", source_vocab_size=100)
    >>> logits = model((np.ones((2, 7), "int32"), np.ones((2, 5), "int32")))  # (2, 5, 100)
    """

    def __init__(self, source_vocab_size: int, target_vocab_size: int | None = None, d_model: int = 512,
                 num_heads: int = 8, num_encoder_layers: int = 6, num_decoder_layers: int = 6,
                 d_ff: int = 2048, dropout: float = 0.1, norm_first: bool = False,
                 share_embeddings: bool = True, pad_id: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.source_vocab_size = int(source_vocab_size)
        self.target_vocab_size = int(target_vocab_size or source_vocab_size)
        self.d_model, self.num_heads, self.d_ff = int(d_model), int(num_heads), int(d_ff)
        self.num_encoder_layers, self.num_decoder_layers = int(num_encoder_layers), int(num_decoder_layers)
        self.dropout, self.norm_first, self.pad_id = float(dropout), bool(norm_first), int(pad_id)
        self.share_embeddings = bool(share_embeddings)
        self.head_dim = check_transformer_dims(self.d_model, self.num_heads)
        tied = self.share_embeddings and self.source_vocab_size == self.target_vocab_size

        self.source_embedding = TokenAndPositionEmbedding(
            self.source_vocab_size, self.d_model, dropout=self.dropout, pad_id=self.pad_id,
            name="source_embedding")
        self.target_embedding = self.source_embedding if tied else TokenAndPositionEmbedding(
            self.target_vocab_size, self.d_model, dropout=self.dropout, pad_id=self.pad_id,
            name="target_embedding")
        layer_args = dict(d_model=self.d_model, num_heads=self.num_heads, d_ff=self.d_ff,
                          dropout=self.dropout, norm_first=self.norm_first)
        self.encoder_layers = [TransformerEncoderLayer(**layer_args, name=f"encoder_layer_{i}")
                               for i in range(self.num_encoder_layers)]
        self.decoder_layers = [TransformerDecoderLayer(**layer_args, name=f"decoder_layer_{i}")
                               for i in range(self.num_decoder_layers)]
        # Pre-norm stacks end un-normalised; the final LayerNorm puts their output back on scale.
        self.encoder_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="encoder_norm") \
            if self.norm_first else None
        self.decoder_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="decoder_norm") \
            if self.norm_first else None
        self.output_projection = None if tied else keras.layers.Dense(
            self.target_vocab_size, dtype="float32", name="output_projection")

    @classmethod
    def from_preset(cls, preset: str, source_vocab_size: int, **overrides) -> Transformer:
        """Builds a model from a named size in `TRANSFORMER_PRESETS`, with any argument overridden."""
        if preset not in TRANSFORMER_PRESETS:
            raise ValueError(f"Unknown Transformer preset {preset!r}; choose one of "
                             f"{', '.join(TRANSFORMER_PRESETS)}.")
        return cls(source_vocab_size=source_vocab_size, **{**TRANSFORMER_PRESETS[preset], **overrides})

    # ----------------------------------------------------------------------------------------- encoder
    def _encode(self, encoder_input, training=False):
        source_mask = padding_mask(encoder_input, self.pad_id)  # (batch, src_len)
        x = self.source_embedding(encoder_input, training=training)  # (batch, src_len, d_model)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask=source_mask, training=training)
        if self.encoder_norm is not None:
            x = self.encoder_norm(x)
        return x, source_mask

    def _project(self, x):
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        # The vocabulary projection and softmax stay in float32 under mixed precision: float16 logits
        # over a large vocabulary lose the small differences that decide the argmax and the loss.
        if self.output_projection is None:
            return self.target_embedding.logits(ops.cast(x, "float32"))
        return self.output_projection(x)

    # ------------------------------------------------------------------------------- teacher forcing
    def _decode_full(self, decoder_input, encoder_outputs, source_mask, training, return_attention):
        target_mask = padding_mask(decoder_input, self.pad_id)  # (batch, tgt_len)
        y = self.target_embedding(decoder_input, training=training)  # (batch, tgt_len, d_model)
        attention = []
        for layer in self.decoder_layers:
            decoded = layer(y, encoder_outputs=encoder_outputs, decoder_padding_mask=target_mask,
                            encoder_padding_mask=source_mask,
                            return_attention_scores=return_attention, training=training)
            y = decoded.output
            attention.append(decoded.scores)  # (batch, heads, tgt_len, src_len), or None
        logits = self._project(y)  # (batch, tgt_len, vocab)
        if return_attention:
            return logits, ops.stack(attention, axis=1)  # (batch, layers, heads, tgt_len, src_len)
        return logits

    def call(self, inputs, training=None):
        encoder_input, decoder_input = inputs
        encoder_outputs, source_mask = self._encode(encoder_input, training=training)
        return self._decode_full(decoder_input, encoder_outputs, source_mask, training, False)

    def call_with_attention(self, inputs):
        encoder_input, decoder_input = inputs
        encoder_outputs, source_mask = self._encode(encoder_input)
        return self._decode_full(decoder_input, encoder_outputs, source_mask, False, True)

    # ------------------------------------------------------------------------- incremental decoding
    # One key and one value entry per decoder layer (optimum's `past_key_values.<i>` layout): a step
    # touches each layer's cache alone, with no slicing out of or stacking into one big tensor. The
    # encoder-side keys/values and the source mask are kept once per source sentence for all its beams.
    def encode(self, encoder_input, training=False) -> dict:
        encoder_outputs, source_mask = self._encode(encoder_input, training=training)
        state = {"encoder_padding_mask": source_mask}  # (batch, src_len) bool
        # Cross-attention keys/values depend on the source only: computed once per sequence.
        for i, layer in enumerate(self.decoder_layers):
            cross = layer.compute_cross_attention_cache(encoder_outputs)  # (batch, 2, heads, src, head_dim)
            state.update(zip(cache_entries("cross", i), (cross[:, 0], cross[:, 1]), strict=True))
        return state

    def initial_cache(self, batch_size, max_length) -> dict:
        shape = (batch_size, self.num_heads, max_length, self.head_dim)
        return {name: ops.zeros(shape, dtype=self.compute_dtype)
                for i in range(self.num_decoder_layers) for name in cache_entries("self", i)}

    def decode_step(self, token_ids, index, state, training=False):
        # token_ids (batch,), batch = source sentences x beams; the cross entries have the sentences' batch.
        y = self.target_embedding(token_ids[:, None], start_index=index, training=training)  # (b, 1, d)
        updates, attention = {}, []
        for i, layer in enumerate(self.decoder_layers):
            self_entries, cross_entries = cache_entries("self", i), cache_entries("cross", i)
            decoded = layer(
                y,
                encoder_padding_mask=state["encoder_padding_mask"],
                # The layer takes key and value stacked: (batch, 2, heads, length, head_dim)
                self_attention_cache=ops.stack([state[name] for name in self_entries], axis=1),
                self_attention_cache_update_index=index,
                cross_attention_cache=ops.stack([state[name] for name in cross_entries], axis=1),
                return_attention_scores=True,
                training=training,
            )
            y = decoded.output  # (batch, 1, d_model)
            updates.update(zip(self_entries, (decoded.cache[:, 0], decoded.cache[:, 1]), strict=True))
            attention.append(decoded.scores[:, :, 0, :])  # (batch, heads, src_len)
        logits = self._project(y)[:, 0, :]  # (batch, vocab)
        return logits, updates, ops.stack(attention, axis=1)  # attention: (batch, layers, heads, src_len)

    def state_specs(self) -> list[StateSpec]:
        heads, hd = self.num_heads, self.head_dim
        specs = [StateSpec("encoder_padding_mask", ("source_batch", "source_length"), "bool", "encode", False,
                           "(source_batch, source_length): true at real source tokens, false at padding",
                           shared_by_beams=True)]
        for i in range(self.num_decoder_layers):
            specs += [StateSpec(name, ("source_batch", heads, "source_length", hd), self.compute_dtype, "encode",
                                False, f"(source_batch, heads, source_length, head_dim): decoder layer {i}'s "
                                f"cross-attention {kind}s, projected from the encoder output once per source",
                                shared_by_beams=True)
                      for kind, name in zip(("key", "value"), cache_entries("cross", i), strict=True)]
        for i in range(self.num_decoder_layers):
            specs += [StateSpec(name, ("batch", heads, "max_length", hd), self.compute_dtype, "cache", True,
                                f"(batch, heads, max_length, head_dim): decoder layer {i}'s self-attention "
                                f"{kind}s, zeros made by the caller; the step at `index` fills position "
                                f"`index` and returns the whole entry as {name}_out")
                      for kind, name in zip(("key", "value"), cache_entries("self", i), strict=True)]
        return specs

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "source_vocab_size": self.source_vocab_size,
            "target_vocab_size": self.target_vocab_size,
            "d_model": self.d_model,
            "num_heads": self.num_heads,
            "num_encoder_layers": self.num_encoder_layers,
            "num_decoder_layers": self.num_decoder_layers,
            "d_ff": self.d_ff,
            "dropout": self.dropout,
            "norm_first": self.norm_first,
            "share_embeddings": self.share_embeddings,
            "pad_id": self.pad_id,
        }
