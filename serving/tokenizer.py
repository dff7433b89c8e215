"""The export's SentencePiece model through the `sentencepiece` package (no TensorFlow Text).

Encoding follows the training pipeline (`keras_nlp_week4.data.pipeline.encode_sources`) exactly: the
source ids are cut to `max_source_length - 1`, EOS is appended, rows are padded with PAD to the longest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm

from serving.errors import ExportError

__all__ = ["SentencePieceTokenizer", "strip_special_ids"]


def strip_special_ids(ids: Sequence[int] | np.ndarray, pad_id: int, bos_id: int, eos_id: int) -> list[int]:
    """The ids of one generated row before its first EOS, without PAD and BOS: what the text is decoded
    from. The one definition for the runtime (`SentencePieceTokenizer.output_ids`) and the training side
    (`keras_nlp_week4.data.tokenizer.strip_special`), so a served output and a Keras one are cut alike."""
    ids = np.asarray(ids).reshape(-1).tolist()
    if eos_id in ids:
        ids = ids[: ids.index(eos_id)]
    return [int(i) for i in ids if i not in (pad_id, bos_id)]


class SentencePieceTokenizer:
    """Text <-> ids with the run's special ids.

    Args:
        model_path: the `.model` file.
        special_ids: {"pad", "unk", "bos", "eos"} as the export config gives them; the model must agree.
    """

    def __init__(self, model_path: Path, special_ids: dict) -> None:
        self.model_path = Path(model_path)
        self.pad_id, self.bos_id, self.eos_id = (int(special_ids[k]) for k in ("pad", "bos", "eos"))
        processor = spm.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(self.model_path.read_bytes())
        except OSError as e:
            raise ExportError(f"cannot read tokenizer {self.model_path}: {e.strerror}") from None
        except (RuntimeError, TypeError, ValueError):
            raise ExportError(f"{self.model_path} is not a valid SentencePiece model; "
                              "export the run again") from None
        found = {"pad": processor.pad_id(), "unk": processor.unk_id(), "bos": processor.bos_id(),
                 "eos": processor.eos_id()}
        expected = {k: int(special_ids[k]) for k in found if k in special_ids}
        if any(found[k] != v for k, v in expected.items()):
            raise ExportError(f"{self.model_path} has special ids {found}, the export config says "
                              f"{expected}; export the run again")
        self._processor = processor

    @property
    def vocab_size(self) -> int:
        return self._processor.get_piece_size()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text, no specials added."""
        return self._processor.encode(list(texts), out_type=int)

    def encode_sources(self, texts: Sequence[str], max_source_length: int) -> tuple[np.ndarray, np.ndarray]:
        """Encoder input as in training: int32 `(batch, longest)` PAD-padded, and each row's length."""
        rows = [ids[: max_source_length - 1] + [self.eos_id] for ids in self.encode(texts)]
        lengths = np.array([len(row) for row in rows], dtype=np.int64)
        batch = np.full((len(rows), int(lengths.max(initial=1))), self.pad_id, dtype=np.int32)
        for i, row in enumerate(rows):
            batch[i, : len(row)] = row
        return batch, lengths

    def output_ids(self, row: np.ndarray) -> list[int]:
        """Generated ids before the first EOS, without PAD/BOS (`strip_special_ids` with this export's ids)."""
        return strip_special_ids(row, self.pad_id, self.bos_id, self.eos_id)

    def decode(self, ids: Sequence[int]) -> str:
        return self._processor.decode(list(ids))

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self._processor.id_to_piece(int(i)) for i in ids]
