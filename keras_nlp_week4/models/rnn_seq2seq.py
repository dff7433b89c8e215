"""RNN encoder-decoder (Sutskever et al., 2014; Cho et al., 2014), with or without attention.

Without attention the encoder's final state is the fixed-size context vector that initialises the
decoder (Sutskever et al.); with `context_every_step` (Cho et al., 2014, section 2.2) the context c also
enters every decoder step and the output layer, s_t = f(s_{t-1}, y_{t-1}, c) and
p(y_t) = g(s_t, y_{t-1}, c), so the decoder need not carry it through its state. With attention the decoder also looks at every encoder state at every step:
- Bahdanau et al. (2015): the score uses the previous decoder state s_{t-1}, and the context vector is fed
  into the RNN together with the previous token's embedding.
- Luong et al. (2015): the RNN runs first; the score uses the new state h_t, and the attentional hidden
  state h~_t = tanh(W_c [c_t; h_t]) feeds the output layer (section 3, eq. 5).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from keras_nlp_week4.layers.bahdanau_attention import BahdanauAttention
from keras_nlp_week4.layers.luong_attention import SCORE_FUNCTIONS, LuongAttention
from keras_nlp_week4.layers.masks import padding_mask
from keras_nlp_week4.models.base import Seq2SeqModel, StateSpec

RNN_ATTENTIONS = ("bahdanau", *SCORE_FUNCTIONS)

RNN_PRESETS: dict[str, dict] = {
    "tiny": dict(embedding_dim=32, units=64, num_layers=1),
    "small": dict(embedding_dim=64, units=128, num_layers=1),
    "medium": dict(embedding_dim=128, units=256, num_layers=2),
    # One layer, as Bahdanau et al. (2015) had, at `medium`'s width with wider embeddings: the Multi30k
    # recipe's attention model (with attention, depth buys less than the epochs it costs on a CPU).
    "wide": dict(embedding_dim=256, units=256, num_layers=1),
    "base": dict(embedding_dim=256, units=512, num_layers=2),
}


@keras.saving.register_keras_serializable(package="keras_nlp_week4")
class RNNSeq2Seq(Seq2SeqModel):
    """LSTM/GRU encoder-decoder with teacher forcing and optional attention.

    Args:
        vocab_size: size of the (shared) token vocabulary; source and target keep separate embeddings.
        embedding_dim: token embedding width.
        units: RNN width of the encoder (per direction); the decoder has `units * directions`.
        num_layers: stacked RNN layers in the encoder and in the decoder.
        cell_type: "lstm" or "gru".
        bidirectional: run the encoder in both directions and concatenate.
        dropout: dropout on embeddings and between stacked layers.
        attention: None for the plain model, "bahdanau", or a Luong score: "dot", "general", "concat",
            "location", "scaled_dot".
        attention_units: width of the additive / concat score networks (default: decoder units).
        max_source_length: longest source in tokens (the "location" score needs it).
        teacher_forcing_ratio: probability, per step and sequence, of feeding the ground-truth previous
            token during training; otherwise the model's own previous prediction is fed (scheduled
            sampling, Bengio et al., 2015). 1.0 always feeds the ground truth.
        seed: seed of the teacher-forcing coin flips.
        pad_id: padding id.
        reverse_source: without attention, read the source backwards (Sutskever et al., 2014, section
            3.3): the first source words end up next to the first target words they translate, which
            shortens the dependencies the fixed context has to carry.
        context_every_step: without attention, also feed the encoder's final top-layer hidden state (the
            context c) into every decoder step and into the output layer, with the previous token's
            embedding (Cho et al., 2014).
    """

    def __init__(self, vocab_size: int, embedding_dim: int = 128, units: int = 256, num_layers: int = 1,
                 cell_type: str = "lstm", bidirectional: bool = False, dropout: float = 0.0,
                 attention: str | None = None, attention_units: int | None = None,
                 max_source_length: int | None = None, teacher_forcing_ratio: float = 1.0,
                 seed: int | None = None, pad_id: int = 0, context_every_step: bool = False,
                 reverse_source: bool = False, **kwargs):
        super().__init__(**kwargs)
        if cell_type not in ("lstm", "gru"):
            raise ValueError(f"cell_type must be 'lstm' or 'gru', got {cell_type!r}.")
        if attention is not None and attention not in RNN_ATTENTIONS:
            raise ValueError(f"Unknown attention {attention!r}; choose one of {', '.join(RNN_ATTENTIONS)}.")
        if context_every_step and attention is not None:
            raise ValueError("context_every_step is for models without attention (attention gives each step "
                             "its own context).")
        if reverse_source and attention is not None:
            raise ValueError("reverse_source is for models without attention (attention reaches every source "
                             "position directly).")
        if not 0.0 <= teacher_forcing_ratio <= 1.0:
            raise ValueError(f"teacher_forcing_ratio must be in [0, 1], got {teacher_forcing_ratio}.")
        self.vocab_size, self.embedding_dim, self.units = int(vocab_size), int(embedding_dim), int(units)
        self.num_layers, self.cell_type, self.bidirectional = int(num_layers), cell_type, bool(bidirectional)
        self.dropout, self.attention, self.attention_units = float(dropout), attention, attention_units
        self.max_source_length, self.pad_id = max_source_length, int(pad_id)
        self.teacher_forcing_ratio, self.seed = float(teacher_forcing_ratio), seed
        self.context_every_step = bool(context_every_step)
        self.reverse_source = bool(reverse_source)
        self.decoder_units = self.units * (2 if self.bidirectional else 1)
        # What the output layer reads: the decoder output, with [y_{t-1}; c] beside it in Cho et al.'s form.
        self.output_width = self.decoder_units + (
            self.embedding_dim + self.decoder_units if self.context_every_step else 0)
        self.states_per_layer = 2 if cell_type == "lstm" else 1

        rnn_class = layers.LSTM if cell_type == "lstm" else layers.GRU
        cell_class = layers.LSTMCell if cell_type == "lstm" else layers.GRUCell
        self.source_embedding = layers.Embedding(self.vocab_size, self.embedding_dim,
                                                 name="source_embedding")
        self.target_embedding = layers.Embedding(self.vocab_size, self.embedding_dim,
                                                 name="target_embedding")
        self.embedding_dropout = layers.Dropout(self.dropout, seed=seed)
        self.encoder_rnns = []
        for i in range(self.num_layers):
            rnn = rnn_class(self.units, return_sequences=True, return_state=True, name=f"encoder_rnn_{i}")
            if self.bidirectional:
                rnn = layers.Bidirectional(rnn, name=f"encoder_birnn_{i}")
            self.encoder_rnns.append(rnn)
        self.decoder_cells = [cell_class(self.decoder_units, name=f"decoder_cell_{i}")
                              for i in range(self.num_layers)]
        self.layer_dropout = layers.Dropout(self.dropout, seed=seed)
        attention_units = attention_units or self.decoder_units
        if attention == "bahdanau":
            self.attention_layer = BahdanauAttention(attention_units, name="attention")
        elif attention is not None:
            self.attention_layer = LuongAttention(
                score=attention, units=attention_units if attention == "concat" else None,
                max_source_length=max_source_length, name="attention")
        else:
            self.attention_layer = None
        # Luong's attentional hidden state h~_t = tanh(W_c [c_t; h_t]).
        self.attention_combine = (layers.Dense(self.decoder_units, activation="tanh", use_bias=False,
                                               name="attention_combine")
                                  if self.is_luong else None)
        # float32 under mixed precision too: see Transformer._project.
        self.output_projection = layers.Dense(self.vocab_size, dtype="float32", name="output_projection")
        self.coin_seed = keras.random.SeedGenerator(seed)

    @property
    def is_luong(self) -> bool:
        return self.attention is not None and self.attention != "bahdanau"

    @property
    def has_attention(self) -> bool:
        return self.attention is not None

    @classmethod
    def from_preset(cls, preset: str, vocab_size: int, **overrides) -> RNNSeq2Seq:
        if preset not in RNN_PRESETS:
            raise ValueError(f"Unknown RNN preset {preset!r}; choose one of {', '.join(RNN_PRESETS)}.")
        return cls(vocab_size=vocab_size, **{**RNN_PRESETS[preset], **overrides})

    # ----------------------------------------------------------------------------------------- encoder
    def _encode(self, encoder_input, training=False):
        source_mask = padding_mask(encoder_input, self.pad_id)  # (batch, src_len)
        if self.reverse_source:
            # Padding moves to the front, where the masked steps leave the initial state untouched, so the
            # final state is the one after the first source token.
            encoder_input, source_mask = ops.flip(encoder_input, axis=1), ops.flip(source_mask, axis=1)
        x = self.embedding_dropout(self.source_embedding(encoder_input), training=training)
        final_states = []
        for i, rnn in enumerate(self.encoder_rnns):
            outputs = rnn(x, mask=source_mask, training=training)
            x, states = outputs[0], list(outputs[1:])
            if self.bidirectional:
                # [fw_h, (fw_c), bw_h, (bw_c)] -> per state kind, concat forward and backward.
                half = len(states) // 2
                states = [ops.concatenate([f, b], axis=-1) for f, b in zip(states[:half], states[half:], strict=True)]
            final_states.append(states)
            if i + 1 < self.num_layers:
                x = self.layer_dropout(x, training=training)
        # The decoder state: (batch, num_layers, states_per_layer, decoder_units).
        decoder_state = ops.stack([ops.stack(s, axis=1) for s in final_states], axis=1)
        return x, source_mask, decoder_state  # x: (batch, src_len, decoder_units)

    def _context(self, decoder_state):
        """Cho et al.'s c: the encoder's final top-layer hidden state, (batch, decoder_units); None unless
        `context_every_step`."""
        return decoder_state[:, -1, 0] if self.context_every_step else None

    # --------------------------------------------------------------------------------- one decoder step
    def _step(self, embedded, decoder_state, keys, attention_keys, source_mask, training, fixed_context=None):
        """One decoder step from an embedded token; returns (output vector, new state, weights).

        `fixed_context` is Cho et al.'s c (`context_every_step`), (batch, decoder_units), or None."""
        x, weights = embedded, None  # (batch, embedding_dim)
        if fixed_context is not None:
            x = ops.concatenate([embedded, fixed_context], axis=-1)  # (batch, embedding_dim + units)
        if self.attention == "bahdanau":
            query = decoder_state[:, -1, 0]  # s_{t-1}: top layer's hidden state, (batch, units)
            context, weights = self.attention_layer(query, keys, mask=source_mask,
                                                    processed_keys=attention_keys)
            x = ops.concatenate([x, context], axis=-1)
        new_states = []
        for i, cell in enumerate(self.decoder_cells):
            states = [decoder_state[:, i, j] for j in range(self.states_per_layer)]
            x, states = cell(x, states, training=training)
            new_states.append(ops.stack(states, axis=1))
            if i + 1 < self.num_layers:
                x = self.layer_dropout(x, training=training)
        if self.is_luong:
            context, weights = self.attention_layer(x, keys, mask=source_mask,
                                                    processed_keys=attention_keys)  # (batch, d), (batch, src)
            x = self.attention_combine(ops.concatenate([context, x], axis=-1))
        if fixed_context is not None:
            x = ops.concatenate([x, embedded, fixed_context], axis=-1)  # g(s_t, y_{t-1}, c): (batch, output_width)
        if weights is None:
            weights = ops.zeros((ops.shape(x)[0], 1), x.dtype)  # keeps the scan carry's structure fixed
        return x, ops.stack(new_states, axis=1), weights

    def _attention_keys(self, keys):
        """The source-only part of the attention score, computed once per source (`process_keys`)."""
        if self.is_luong and not self.attention_layer.built:
            # Luong's projections are created in `build` (Bahdanau's U_a exists from the start and
            # `process_keys` builds it); the query is the decoder's top-layer output.
            self.attention_layer.build((None, self.decoder_units), keys.shape)
        return self.attention_layer.process_keys(keys)

    # ------------------------------------------------------------------------------- teacher forcing
    def _decode_full(self, encoder_input, decoder_input, training):
        keys, source_mask, decoder_state = self._encode(encoder_input, training=training)
        attention_keys = self._attention_keys(keys) if self.has_attention else keys
        context = self._context(decoder_state)
        batch, target_length = ops.shape(decoder_input)[0], ops.shape(decoder_input)[1]
        scheduled = bool(training) and self.teacher_forcing_ratio < 1.0
        if scheduled:
            coins = keras.random.uniform((batch, target_length), seed=self.coin_seed)
            # The first input is always BOS: there is no earlier prediction to feed.
            use_truth = ops.logical_or(coins < self.teacher_forcing_ratio,
                                       ops.arange(target_length)[None, :] == 0)
        else:
            use_truth = ops.ones((batch, target_length), "bool")
        source_length = ops.shape(keys)[1] if self.has_attention else 1

        def step(carry, inputs):
            token, use_truth_t = inputs[:, 0], inputs[:, 1]
            if scheduled:
                predicted = ops.cast(ops.argmax(self.output_projection(carry["output"]), axis=-1),
                                     token.dtype)
                token = ops.where(use_truth_t > 0, token, predicted)
            embedded = self.embedding_dropout(self.target_embedding(token), training=training)
            output, state, weights = self._step(embedded, carry["state"], keys, attention_keys,
                                                source_mask, training, context)
            new = {"state": state, "output": output, "attention": weights}
            # Keras' scan stacks the carry itself, so the carry holds everything we need per step.
            return new, new

        init = {
            "state": decoder_state,
            "output": ops.zeros((batch, self.output_width), keys.dtype),
            "attention": ops.zeros((batch, source_length), keys.dtype),
        }
        # One tensor, not a dict: Keras' TF scan fails on several `xs` whose length is not static.
        xs = ops.stack([ops.transpose(decoder_input),
                        ops.transpose(ops.cast(use_truth, decoder_input.dtype))], axis=-1)  # (tgt, b, 2)
        _, per_step = ops.scan(step, init, xs)
        outputs = ops.transpose(per_step["output"], (1, 0, 2))  # (batch, tgt_len, output_width)
        attention = ops.transpose(per_step["attention"], (1, 0, 2))  # (batch, tgt_len, src_len)
        return self.output_projection(outputs), attention

    def call(self, inputs, training=None):
        encoder_input, decoder_input = inputs
        logits, _ = self._decode_full(encoder_input, decoder_input, training)
        return logits

    def call_with_attention(self, inputs):
        encoder_input, decoder_input = inputs
        logits, attention = self._decode_full(encoder_input, decoder_input, False)
        if not self.has_attention:
            return logits, None
        return logits, attention[:, None, None]  # (batch, 1 layer, 1 head, tgt_len, src_len)

    # ------------------------------------------------------------------------- incremental decoding
    def encode(self, encoder_input, training=False) -> dict:
        keys, source_mask, decoder_state = self._encode(encoder_input, training=training)
        state = {"decoder_state": decoder_state}
        if self.context_every_step:
            state["context"] = self._context(decoder_state)
        if self.has_attention:
            state.update(encoder_outputs=keys, encoder_padding_mask=source_mask,
                         attention_keys=self._attention_keys(keys))
        return state

    def decode_step(self, token_ids, index, state, training=False):
        embedded = self.target_embedding(token_ids)
        keys = state.get("encoder_outputs")
        output, decoder_state, weights = self._step(
            embedded, state["decoder_state"], keys, state.get("attention_keys"),
            state.get("encoder_padding_mask"), training, state.get("context"))
        logits = self.output_projection(output)
        attention = weights[:, None, None, :] if self.has_attention else None
        return logits, {"decoder_state": decoder_state}, attention

    def state_specs(self) -> list[StateSpec]:
        dtype = self.compute_dtype
        specs = [StateSpec("decoder_state",
                           ("batch", self.num_layers, self.states_per_layer, self.decoder_units),
                           dtype, "encode", True,
                           "(batch, layers, states_per_layer, units): the recurrent state (LSTM: h then c; "
                           "GRU: h), initialised by the encoder; decoder_step returns the next one as "
                           "decoder_state_out")]
        if self.context_every_step:
            specs.append(StateSpec("context", ("batch", self.decoder_units), dtype, "encode", False,
                                   "(batch, units): Cho et al.'s context c, the encoder's final top-layer "
                                   "hidden state, fed to every decoder step"))
        if self.has_attention:
            # U_a h_j (Bahdanau) and W_k h̄_s (Luong "concat") are attention_units wide; Luong "general"
            # maps the keys to the query's width, the other scores keep the keys.
            key_width = ((self.attention_units or self.decoder_units)
                         if self.attention in ("bahdanau", "concat") else self.decoder_units)
            specs += [
                StateSpec("encoder_outputs", ("batch", "source_length", self.decoder_units), dtype,
                          "encode", False,
                          "(batch, source_length, units): the encoder's top-layer outputs (attention values)"),
                StateSpec("encoder_padding_mask", ("batch", "source_length"), "bool", "encode", False,
                          "(batch, source_length): true at real source tokens, false at padding"),
                StateSpec("attention_keys", ("batch", "source_length", key_width), dtype, "encode",
                          False, "(batch, source_length, key_units): the attention keys, precomputed once "
                                 "per source"),
            ]
        return specs

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "embedding_dim": self.embedding_dim,
            "units": self.units,
            "num_layers": self.num_layers,
            "cell_type": self.cell_type,
            "bidirectional": self.bidirectional,
            "dropout": self.dropout,
            "attention": self.attention,
            "attention_units": self.attention_units,
            "max_source_length": self.max_source_length,
            "teacher_forcing_ratio": self.teacher_forcing_ratio,
            "seed": self.seed,
            "pad_id": self.pad_id,
            "context_every_step": self.context_every_step,
            "reverse_source": self.reverse_source,
        }
