"""Embedded chunks to rows: sentence, word and passage rows with their ids and vectors.

The rows are ready for `add_batch`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from senseindex.indexer.pipeline_chunks import Chunk
from senseindex.indexer.storage import IndexStore

if TYPE_CHECKING:  # the encoder module loads torch: only its types are needed here
    from senseindex.indexer.encoder import Encoder


class RowBatch(NamedTuple):
    """A chunk's rows and vectors, in the argument order of ``IndexStore.add_batch``.

    Attributes:
        documents: document rows (dicts).
        sentences: sentence rows (dicts, ``id`` assigned).
        sentence_vectors: ``(len(sentences), sentence_dimension)`` float32.
        words: word rows as tuples in the words table's column order (``id`` first).
        word_vectors: ``(len(words), word_dimension)`` float32, C-contiguous.
        passages: passage rows (dicts) of the passages the chunk closed.
        passage_vectors: ``(len(passages), sentence_dimension)`` float32, C-contiguous.
    """

    documents: list[dict[str, Any]]
    sentences: list[dict[str, Any]]
    sentence_vectors: np.ndarray
    words: list[tuple[Any, ...]]
    word_vectors: np.ndarray
    passages: list[dict[str, Any]]
    passage_vectors: np.ndarray


class PassagePacker:
    """Packs consecutive sentences of a document into passages of at most ``budget`` tokens.

    A passage's vector is either pooled from its sentences' token vectors (``pooled``: the mean over
    all their tokens, at no extra model cost) or from one more forward pass over its text
    (``encoded``), the way the model would embed the passage whole.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.open: dict[str, Any] | None = None
        self.closed: list[dict[str, Any]] = []

    def add(self, sentence: dict[str, Any], text: str, tokens: int, weighted: np.ndarray) -> None:
        """Append a sentence to the open passage, or open a new one.

        A new passage opens when the document changes or the token budget would be exceeded.

        Args:
            sentence: the sentence row (``id``, ``document``, ``start``, ``end``).
            text: the full text of the sentence's document.
            tokens: WordPiece tokens of the sentence.
            weighted: ``(sentence_dimension,)`` float32, the sentence vector times its pooling weight.
        """
        current = self.open
        if current is not None and (
            current["document"] != sentence["document"] or current["tokens"] + tokens > self.budget
        ):
            self.close()
            current = None
        if current is None:
            self.open = {
                "document": sentence["document"],
                "start": sentence["start"],
                "end": sentence["end"],
                "first_sentence": sentence["id"],
                "last_sentence": sentence["id"],
                "tokens": tokens,
                "sum": weighted.astype(np.float64),
                "text": text,
            }
            return
        current["end"] = sentence["end"]
        current["last_sentence"] = sentence["id"]
        current["tokens"] += tokens
        current["sum"] += weighted

    def close(self) -> None:
        """Close the open passage, if any (a document or the build ended)."""
        if self.open is not None:
            self.closed.append(self.open)
            self.open = None

    def take_closed(self) -> list[dict[str, Any]]:
        """The passages closed since the last call, handed over once."""
        closed, self.closed = self.closed, []
        return closed


class RowBuilder:
    """Turns embedded chunks into rows.

    Holds the encoder, the next free row ids, the passage packer and the running counts of one build or add.
    """

    def __init__(self, encoder: Encoder, store: IndexStore, passages: str) -> None:
        self.encoder = encoder
        self.store = store
        self.passages = passages
        self.packer = PassagePacker(encoder.max_length - 2) if passages != "none" else None
        self.next_document, self.next_sentence, self.next_word, self.next_passage = store.next_ids()
        self.counts = dict.fromkeys(
            ("documents", "sentences", "words", "passages", "tokens", "empty", "unaligned"), 0
        )

    def embed(self, chunk: Chunk) -> RowBatch | None:
        """Embed a chunk and number its rows.

        Args:
            chunk: a chunk from `chunk_documents`.

        Returns:
            Its rows and vectors, with the passages it closed; None when there is nothing to store.

        Raises:
            RuntimeError: the chunk was not prepared (a bug, not a problem of the input).
        """
        last = chunk.last
        pending_passage = last and self.packer is not None and self.packer.open is not None
        if not chunk.sentences and not pending_passage:
            return None
        if chunk.prepared is None:
            raise RuntimeError("a chunk reached the model before it was tokenised")
        encoded = self.encoder.run(chunk.prepared)
        sentence_rows = []
        word_rows: list[tuple[Any, ...]] = []  # in the column order of the words table
        keep = encoded.word_aligned
        aligned = keep.tolist()
        flat_index = 0
        for offset, (row, words) in enumerate(zip(chunk.sentences, chunk.words, strict=True)):
            sentence_id = self.next_sentence
            sentence_row = {"id": sentence_id, **row}
            sentence_rows.append(sentence_row)
            self.next_sentence += 1
            document = row["document"]
            for start, end, form, lemma in words:
                if aligned[flat_index]:
                    word_rows.append((self.next_word, sentence_id, document, start, end, form, lemma))
                    self.next_word += 1
                flat_index += 1
            if self.packer is not None:
                self.packer.add(
                    sentence_row,
                    chunk.texts[offset],
                    int(encoded.piece_counts[offset]),
                    encoded.sentence_weights[offset] * encoded.sentence_vectors[offset],
                )
                if chunk.ends[offset]:  # a commit after this chunk must hold the whole document
                    self.packer.close()
        if self.packer is not None and last:
            self.packer.close()
        passage_rows, passage_vectors = self._passages()
        self.counts["sentences"] += len(sentence_rows)
        self.counts["words"] += len(word_rows)
        self.counts["passages"] += len(passage_rows)
        self.counts["tokens"] += int(encoded.piece_counts.sum())
        self.counts["unaligned"] += int((~keep).sum())
        return RowBatch(
            chunk.documents,
            sentence_rows,
            encoded.sentence_vectors,
            word_rows,
            np.ascontiguousarray(encoded.word_vectors[keep]),
            passage_rows,
            passage_vectors,
        )

    def _passages(self) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Rows and ``(n, sentence_dimension)`` float32 vectors of the passages closed so far."""
        closed = self.packer.take_closed() if self.packer is not None else []
        if not closed:
            return [], np.zeros((0, self.encoder.sentence_dimension), dtype=np.float32)
        if self.passages == "encoded":
            texts = [p["text"][p["start"] : p["end"]] for p in closed]
            vectors = self.encoder.encode(texts, [[] for _ in texts]).sentence_vectors
        else:
            sums = np.vstack([p["sum"] for p in closed]).astype(np.float32)
            vectors = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        rows = []
        for passage in closed:
            rows.append(
                {
                    "id": self.next_passage,
                    **{
                        k: passage[k] for k in ("document", "start", "end", "first_sentence", "last_sentence")
                    },
                }
            )
            self.next_passage += 1
        return rows, np.ascontiguousarray(vectors, dtype=np.float32)
