"""One tokenizer for every task: a SentencePiece model used in Python and inside TF graphs.

SentencePiece (Kudo & Richardson 2018) learns subword units (BPE, Sennrich et al. 2016, or a
unigram language model, Kudo 2018), or plain characters/words, from raw text and treats the space
as an ordinary symbol ("▁"), so ``decode(encode(x)) == x`` without language-specific rules.

The same ``.model`` file is read by two implementations:

* the ``sentencepiece`` package (`Tokenizer.encode` / `Tokenizer.decode`), used by evaluation
  code and by the serving runtime, which has no TensorFlow;
* ``tensorflow_text.SentencepieceTokenizer`` (`Tokenizer.tokenize` / `Tokenizer.detokenize`),
  used inside ``tf.data`` pipelines and exported graphs.

`check_tokenizer_parity` verifies that both give the same ids.

Special ids are fixed for the whole project: ``PAD_ID=0``, ``UNK_ID=1``, ``BOS_ID=2``,
``EOS_ID=3``. TensorFlow is imported lazily, so the constants, `strip_special`, `encode` and
`decode` work in a process without TensorFlow.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sentencepiece as spm

from keras_nlp_week4.errors import UserError
from serving.tokenizer import strip_special_ids

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "SPECIAL_IDS",
    "BOS_ID",
    "EOS_ID",
    "MODEL_TYPES",
    "PAD_ID",
    "UNK_ID",
    "Tokenizer",
    "check_tokenizer_parity",
    "strip_special",
    "train_sentencepiece",
]

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
# As a run's config.json and export record them, and as decoding takes them.
SPECIAL_IDS = {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID}
# What the sentencepiece package decodes an unknown id to (its default `unk_surface`).
UNK_SURFACE = " \u2047 "
MODEL_TYPES = ("char", "bpe", "unigram", "word")
_NUM_SPECIAL = 4
# The piece that stands for a space in every model type.
_SPACE_PIECE = 1


def _needed_char_vocab_size(texts: Sequence[str]) -> int:
    characters = set().union(*map(set, texts))
    # A space is not a piece of its own: it becomes the meta symbol "▁", which is always present.
    characters.discard(" ")
    return _NUM_SPECIAL + _SPACE_PIECE + len(characters)


# Identity normalization with one rule for a noncharacter no text contains (U+FFFF -> U+FFFE). The
# built-in "identity" rule leaves the model's precompiled character map empty, and then every load of
# the model (sentencepiece and tensorflow-text alike, at every epoch) logs "precompiled_charsmap is
# empty" from C++, where no Python setting reaches; a non-empty map does not. Identity rules themselves
# are refused by the trainer.
_NORMALIZATION_RULES = "FFFF\tFFFE\n"


def _without_rule_path(serialized: bytes) -> bytes:
    """The trainer records the rules file's (temporary, random) path in the model: drop it, so the same
    texts always give the same bytes."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(serialized)
    proto.normalizer_spec.ClearField("normalization_rule_tsv")
    return proto.SerializeToString()


def train_sentencepiece(
    texts: Iterable[str],
    output_path: str | Path,
    vocab_size: int | None = None,
    model_type: str = "bpe",
    character_coverage: float = 1.0,
    seed: int = 0,
    num_threads: int = 1,
    squeeze_whitespace: bool = False,
) -> Path:
    """Trains a SentencePiece model from in-memory texts and writes the ``.model`` file.

    The model uses the project's special ids and an identity normalization (`_NORMALIZATION_RULES`): no
    NFKC folding and no lower-casing, so every string made of characters seen in training round-trips
    exactly (``decode(encode(x)) == x``), which the dates task needs for its case variants and which keeps
    targets such as ``"1994-09-27"`` byte-exact. Whitespace is kept as it is unless `squeeze_whitespace`
    (SentencePiece's ``remove_extra_whitespaces``: leading and trailing spaces dropped, runs squeezed to
    one), which every runtime of the model then applies too, since it is part of the model.

    Args:
        texts: training sentences; consumed once.
        output_path: where to write the model (a ``.model`` file; parent folders are created).
        vocab_size: size of the vocabulary including the 4 special pieces. It is an upper bound
            (``hard_vocab_limit=False``), so small corpora do not fail. Required for ``"bpe"``,
            ``"unigram"`` and ``"word"``; for ``"char"`` it may be None to use exactly the
            characters of `texts` (a smaller value would turn the rarest characters into UNK).
        model_type: one of ``"char"``, ``"bpe"``, ``"unigram"``, ``"word"``.
        character_coverage: fraction of characters covered by the vocabulary (1.0 keeps all).
        seed: seed of SentencePiece's random generator, which it uses only when sub-sampling
            sentences. The library exposes it only as a process-wide setting, so this call sets
            it.
        num_threads: training threads; 1 (the default) keeps the result bit-for-bit
            reproducible.
        squeeze_whitespace: normalize whitespace on encoding (see above).

    Returns:
        The path of the written model.

    Raises:
        UserError: if `texts` is empty, `model_type` is unknown or `vocab_size` is missing or too
            small.

    Example:

    >>> import tempfile
    >>> path = train_sentencepiece(
    ...     ["sep 27 1994", "1994-09-27"], tempfile.mkdtemp() + "/dates.model", model_type="char"
    ... )
    >>> Tokenizer(path).decode(Tokenizer(path).encode(["sep 27 1994"]))
    ['sep 27 1994']
    """
    if model_type not in MODEL_TYPES:
        raise UserError(
            f"unknown tokenizer model type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}"
        )
    sentences = [text for text in texts if text]
    if not sentences:
        raise UserError("cannot train a tokenizer: the training texts are empty")
    if vocab_size is None:
        if model_type != "char":
            raise UserError(f"vocab_size is required for a {model_type!r} tokenizer")
        vocab_size = _needed_char_vocab_size(sentences)
    if vocab_size <= _NUM_SPECIAL + _SPACE_PIECE:
        raise UserError(
            f"tokenizer vocab_size must be > {_NUM_SPECIAL + _SPACE_PIECE} "
            f"(4 special pieces and the space), got {vocab_size}"
        )
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    rules = tempfile.NamedTemporaryFile("w", suffix=".tsv", encoding="utf-8", delete=False)
    rules.write(_NORMALIZATION_RULES)
    rules.close()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type=model_type,
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            character_coverage=character_coverage,
            normalization_rule_tsv=rules.name,
            remove_extra_whitespaces=squeeze_whitespace,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            num_threads=num_threads,
            minloglevel=2,
        )
    except RuntimeError as error:
        message = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
        raise UserError(f"sentencepiece training failed: {message}") from error
    finally:
        os.unlink(rules.name)
    output_path.write_bytes(_without_rule_path(model.getvalue()))
    return output_path


def strip_special(ids: Sequence[int] | np.ndarray) -> list[int]:
    """Cuts one id sequence at its first EOS and drops PAD and BOS ids.

    Args:
        ids: a 1-D sequence of token ids, possibly padded.

    Returns:
        The ids before the first `EOS_ID`, without `PAD_ID` and `BOS_ID`.

    Example:

    >>> strip_special([BOS_ID, 17, 18, EOS_ID, 19, PAD_ID])
    [17, 18]
    """
    return strip_special_ids(ids, PAD_ID, BOS_ID, EOS_ID)


class Tokenizer:
    """A trained SentencePiece model, usable from Python and inside TensorFlow graphs.

    Args:
        model_path: path of a ``.model`` file written by `train_sentencepiece`.

    Raises:
        UserError: if the file is missing, is not a SentencePiece model, or was trained with
            special ids other than the project's.

    Example:

    >>> import tempfile
    >>> path = train_sentencepiece(["may 1, 2001"] * 4, tempfile.mkdtemp() + "/t.model",
    ...                            model_type="char")
    >>> tokenizer = Tokenizer(path)
    >>> ids = tokenizer.encode(["may 1"])
    >>> tokenizer.decode(ids), tokenizer.pad_id, tokenizer.eos_id
    (['may 1'], 0, 3)
    """

    def __init__(self, model_path: str | Path) -> None:
        self._model_path = Path(model_path)
        try:
            self._serialized = self._model_path.read_bytes()
        except FileNotFoundError:
            raise UserError(
                f"tokenizer model {str(self._model_path)!r} not found; "
                "check the path or train one with train_sentencepiece"
            ) from None
        except OSError as error:
            raise UserError(
                f"cannot read tokenizer model {str(self._model_path)!r}: {error.strerror}"
            ) from None
        self._processor = spm.SentencePieceProcessor()
        try:
            self._processor.LoadFromSerializedProto(self._serialized)
        except (RuntimeError, TypeError, ValueError, OSError):
            raise UserError(
                f"tokenizer model {str(self._model_path)!r} is not a valid SentencePiece model; "
                "retrain it with train_sentencepiece"
            ) from None
        found = (
            self._processor.pad_id(),
            self._processor.unk_id(),
            self._processor.bos_id(),
            self._processor.eos_id(),
        )
        if found != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise UserError(
                f"tokenizer model {str(self._model_path)!r} has special ids "
                f"pad/unk/bos/eos={found}, the project needs {(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}; "
                "retrain it with train_sentencepiece"
            )
        self._tf_tokenizer: Any = None

    def __repr__(self) -> str:
        return f"Tokenizer({str(self._model_path)!r}, vocab_size={self.vocab_size})"

    # Properties --------------------------------------------------------------------------------

    @property
    def model_path(self) -> Path:
        """Path of the ``.model`` file."""
        return self._model_path

    @property
    def serialized_model(self) -> bytes:
        """The model file's bytes (to embed in exported graphs or ship with a server)."""
        return self._serialized

    @property
    def vocab_size(self) -> int:
        """Number of pieces, special pieces included."""
        return self._processor.get_piece_size()

    @property
    def pad_id(self) -> int:
        """Padding id (`PAD_ID`)."""
        return PAD_ID

    @property
    def unk_id(self) -> int:
        """Unknown-piece id (`UNK_ID`)."""
        return UNK_ID

    @property
    def bos_id(self) -> int:
        """Beginning-of-sequence id (`BOS_ID`), the decoder's first input."""
        return BOS_ID

    @property
    def eos_id(self) -> int:
        """End-of-sequence id (`EOS_ID`)."""
        return EOS_ID

    def id_to_piece(self, token_id: int) -> str:
        """Returns the piece of `token_id` (e.g. ``"▁sep"``, ``"</s>"``)."""
        if not 0 <= token_id < self.vocab_size:
            raise UserError(
                f"token id {token_id} is outside the vocabulary 0..{self.vocab_size - 1}"
            )
        return self._processor.id_to_piece(int(token_id))

    def piece_to_id(self, piece: str) -> int:
        """Returns the id of `piece`, or `UNK_ID` if the piece is not in the vocabulary."""
        return self._processor.piece_to_id(piece)

    # Python ------------------------------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Tokenizes strings with the ``sentencepiece`` package (no BOS/EOS added).

        Args:
            texts: strings to tokenize.

        Returns:
            One list of ids per string.
        """
        if isinstance(texts, str):
            raise TypeError("encode expects a list of strings, not a single string")
        return self._processor.encode(list(texts), out_type=int)

    def decode(self, ids: Sequence[Sequence[int]] | np.ndarray) -> list[str]:
        """Turns id sequences back into strings with the ``sentencepiece`` package.

        Each sequence is cut with `strip_special` first, so padded model outputs can be passed
        directly.

        Args:
            ids: a list of id lists, or a ``(batch, length)`` integer array.

        Returns:
            One string per sequence.
        """
        return [self._processor.decode(strip_special(row)) for row in ids]

    # TensorFlow --------------------------------------------------------------------------------

    @property
    def tf_tokenizer(self) -> Any:
        """An eager ``tensorflow_text.SentencepieceTokenizer`` (for export code to attach).

        Its model resource is owned by a TensorFlow kernel, and ``tf.random.set_seed`` (hence
        ``keras.utils.set_random_seed``) clears the kernel cache and deletes it. `tokenize` and
        `detokenize` cope with that; direct users should fetch this property again after
        setting a seed.
        """
        if self._tf_tokenizer is None:
            import tensorflow as tf

            # Eager even when first read while tracing, so it outlives the traced graph.
            with tf.init_scope():
                self._tf_tokenizer = self._new_tf_tokenizer()
        return self._tf_tokenizer

    def _new_tf_tokenizer(self) -> Any:
        import tensorflow as tf
        import tensorflow_text as tf_text

        return tf_text.SentencepieceTokenizer(model=self._serialized, out_type=tf.int32)

    def _run_tf(self, method: str, value: Any) -> Any:
        """Calls `method` of a TensorFlow Text tokenizer suited to the current context."""
        import tensorflow as tf

        if not tf.executing_eagerly():
            # Inside a tf.data map or a tf.function, build the model resource in that graph:
            # it then lives and dies with the graph's kernels, so clearing the eager kernel cache
            # cannot delete it under a running pipeline. The cache hangs on the graph itself, so
            # it dies with the graph (a graph collection); equal models share one resource.
            graph = tf.compat.v1.get_default_graph()
            cache = graph.get_collection_ref("keras_nlp_week4_sentencepiece")
            tokenizer = next((tok for model, tok in cache if model == self._serialized), None)
            if tokenizer is None:
                tokenizer = self._new_tf_tokenizer()
                cache.append((self._serialized, tokenizer))
            return getattr(tokenizer, method)(value)
        try:
            return getattr(self.tf_tokenizer, method)(value)
        except tf.errors.NotFoundError:
            # The eager resource was deleted by a kernel-cache clear (tf.random.set_seed).
            self._tf_tokenizer = self._new_tf_tokenizer()
            return getattr(self._tf_tokenizer, method)(value)

    def tokenize(self, strings: tf.Tensor) -> tf.RaggedTensor:
        """Tokenizes strings with TensorFlow Text; usable inside ``tf.data`` and ``tf.function``.

        Args:
            strings: a string tensor of shape ``(batch,)`` (or a scalar).

        Returns:
            An int32 ``tf.RaggedTensor`` of shape ``(batch, None)`` (a 1-D int32 tensor for a
            scalar input), without BOS/EOS.
        """
        return self._run_tf("tokenize", strings)

    def detokenize(self, ids: tf.Tensor | tf.RaggedTensor) -> tf.Tensor:
        """Turns ids back into strings with TensorFlow Text, ignoring special ids.

        Each row is cut at its first EOS and PAD/BOS ids are dropped, as in `strip_special`.

        Args:
            ids: int tensor of shape ``(batch, length)`` (dense, possibly padded, or ragged) or
                ``(length,)``.

        Returns:
            A string tensor of shape ``(batch,)``, or a scalar for a 1-D input.
        """
        import tensorflow as tf

        if isinstance(ids, tf.RaggedTensor):
            ids = ids.to_tensor(default_value=PAD_ID)
        ids = tf.convert_to_tensor(ids)
        if ids.dtype != tf.int32:
            ids = tf.cast(ids, tf.int32)
        single = ids.shape.rank == 1
        if single:
            ids = ids[tf.newaxis]
        # Everything at or after the first EOS has a cumulative EOS count >= 1.
        before_eos = tf.math.cumsum(tf.cast(ids == EOS_ID, tf.int32), axis=1) == 0
        keep = before_eos & (ids != PAD_ID) & (ids != BOS_ID)
        kept = tf.ragged.boolean_mask(ids, keep)
        # TensorFlow Text's own detokenize strips every leading space ("▁▁a" -> "a"), where the
        # sentencepiece package removes only the one space its encoder added in front (the dummy
        # prefix). Rebuilding the text from the pieces keeps the two runtimes' outputs identical.
        pieces = self._run_tf("id_to_string", kept)
        pieces = tf.ragged.map_flat_values(
            lambda piece, i: tf.where(i == UNK_ID, UNK_SURFACE, piece), pieces, kept)
        text = tf.strings.regex_replace(tf.strings.reduce_join(pieces, axis=-1), "^\u2581", "")
        strings = tf.strings.regex_replace(text, "\u2581", " ")
        return strings[0] if single else strings


def check_tokenizer_parity(
    tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 1024
) -> list[int]:
    """Compares TensorFlow Text ids with ``sentencepiece`` ids on `texts`.

    Args:
        tokenizer: the tokenizer to check.
        texts: strings to tokenize with both implementations.
        batch_size: strings per TensorFlow call.

    Returns:
        The indices of the strings whose ids differ (empty when the implementations agree).
    """
    import tensorflow as tf

    texts = list(texts)
    expected = tokenizer.encode(texts)
    mismatches = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        got = tokenizer.tokenize(tf.constant(batch, dtype=tf.string)).to_list()
        for offset, ids in enumerate(got):
            if ids != expected[start + offset]:
                mismatches.append(start + offset)
    return mismatches
