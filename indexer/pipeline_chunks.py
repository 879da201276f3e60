"""Documents to prepared chunks for the model.

Each document is split into sentences and words, and the sentences are grouped into chunks of about a fixed
amount of text and tokenised for the model.

A chunk's vectors and rows live until it is stored, so the chunk size, not the corpus size, bounds a
build's memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from senseindex.indexer.sources import Document
from senseindex.indexer.text import split_text, split_words

if TYPE_CHECKING:  # the encoder module loads torch: only its types are needed here
    from senseindex.indexer.encoder import Encoder, PreparedBatch

# A chunk's vectors and rows live until it is stored: 100,000 characters hold about 17,000 words, 26 MB
# of float32 word vectors.
CHUNK_CHARACTERS = 100_000
# The first chunk is small: it measures how fast this machine embeds, and the first progress report
# (and commit) come early.
FIRST_CHUNK_CHARACTERS = 2_000
MIN_CHUNK_CHARACTERS = 1_000


class ChunkPacer:
    """Sizes chunks by the work they take, so that commits can follow at their interval.

    A commit may only follow a chunk that ends a document; chunks of about a third of the commit interval
    of work let the writer commit within a chunk of the interval, on a fast machine or a loaded one, with
    a large model or a small one. The rate is measured on every chunk (embedding, storing and the commit
    that may follow), smoothed over the last few.

    Args:
        seconds: the work between commits (`COMMIT_SECONDS`).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.target = seconds / 3
        self._rate: float | None = None  # characters per second

    def limit(self) -> int:
        """Characters for the next chunk (`FIRST_CHUNK_CHARACTERS` until a chunk has been timed)."""
        if self._rate is None:
            return FIRST_CHUNK_CHARACTERS
        return int(min(CHUNK_CHARACTERS, max(MIN_CHUNK_CHARACTERS, self._rate * self.target)))

    def commit_due(self, seconds_since_commit: float) -> bool:
        """Whether a commit now lands nearer the interval than one after the next chunk would."""
        return seconds_since_commit + self.target / 2 >= self.seconds

    def measured(self, characters: int, seconds: float) -> None:
        """Record that a chunk of ``characters`` took ``seconds`` of work."""
        if characters <= 0 or seconds <= 0:
            return
        rate = characters / seconds
        self._rate = rate if self._rate is None else 0.5 * self._rate + 0.5 * rate


class Chunk:
    """Rows waiting to be embedded and stored together."""

    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []
        self.sentences: list[dict[str, Any]] = []
        self.words: list[list[tuple[int, int, str, str]]] = []  # (start, end, form, lemma)
        self.texts: list[str] = []  # the full text of each sentence's document, for passages
        self.ends: list[bool] = []  # whether each sentence is its document's last
        self.replaces: list[str] = []  # ids of stored documents this chunk's new versions replace
        self.at_document_end = False  # the chunk's last sentence ends a document
        self.characters = 0
        self.prepared: PreparedBatch | None = None
        self.done_bytes = 0  # source bytes read when the chunk was complete
        self.last = False

    def prepare(self, encoder: Encoder, done_bytes: int, last: bool) -> Chunk:
        """Tokenise the chunk's sentences for the model.

        Args:
            encoder: the encoder that will embed the chunk.
            done_bytes: source bytes read once this chunk is complete, for progress reports.
            last: this is the build's last chunk (passages still open are closed after it).

        Returns:
            The chunk itself, now with ``prepared`` set.
        """
        spans = [
            [(w[0] - row["start"], w[1] - row["start"]) for w in words]
            for row, words in zip(self.sentences, self.words, strict=True)
        ]
        self.prepared = encoder.prepare([row["text"] for row in self.sentences], spans)
        self.done_bytes = done_bytes
        self.last = last
        return self


def chunk_documents(
    documents: Iterator[Document],
    encoder: Encoder,
    skip_stopwords: bool,
    sentence_splitting: str,
    first_document: int,
    counts: dict[str, int],
    pacer: ChunkPacer | None = None,
) -> Iterator[Chunk]:
    """Split documents into sentences and words and group them into prepared chunks.

    A chunk is cut once it holds enough text: at a document's end, or inside a document longer than a
    chunk; a chunk ending at a document's end is marked ``at_document_end``, as only there may a
    commit follow. The last chunk (possibly empty) is marked ``last``.

    Args:
        documents: the documents to store, in order.
        encoder: the encoder that tokenises each chunk.
        skip_stopwords: give function words no word row.
        sentence_splitting: the sentence splitting mode (see `split_text`).
        first_document: the row id of the first document.
        counts: running counts; ``documents`` and ``empty`` are incremented here.
        pacer: sizes each chunk by the measured work rate (without one: `FIRST_CHUNK_CHARACTERS`, then
            `CHUNK_CHARACTERS`).

    Yields:
        Prepared chunks, in document order.
    """
    next_document = first_document
    done_bytes = 0
    chunk = Chunk()
    limit = pacer.limit() if pacer else FIRST_CHUNK_CHARACTERS  # small: the first report comes early
    for document in documents:
        done_bytes += document.size
        sentences = split_document(document, skip_stopwords, sentence_splitting)
        if not sentences:
            counts["empty"] += 1
            if document.replaces:  # the new version is empty: the old one goes all the same
                chunk.replaces.append(document.doc_id)
            continue
        if document.replaces:
            chunk.replaces.append(document.doc_id)
        chunk.documents.append(document_row(document, next_document))
        chunk.at_document_end = False
        # a document longer than a chunk is cut inside; a shorter one never is, so that most chunks
        # end with a whole document and may be committed
        cut_inside = len(document.text) > limit
        for position, (span, words) in enumerate(sentences):
            chunk.sentences.append(
                {
                    "document": next_document,
                    "position": position,
                    "start": span[0],
                    "end": span[1],
                    "text": document.text[span[0] : span[1]],
                }
            )
            chunk.words.append(words)
            chunk.texts.append(document.text)
            chunk.ends.append(position == len(sentences) - 1)
            chunk.characters += span[1] - span[0]
            if cut_inside and chunk.characters >= limit and position < len(sentences) - 1:
                # progress inside a long document: the share of its text read so far
                inside = done_bytes - document.size + document.size * span[1] // len(document.text)
                yield chunk.prepare(encoder, inside, last=False)
                chunk = Chunk()
                limit = pacer.limit() if pacer else CHUNK_CHARACTERS
        next_document += 1
        counts["documents"] += 1
        chunk.at_document_end = True
        if chunk.characters >= limit:
            yield chunk.prepare(encoder, done_bytes, last=False)
            chunk = Chunk()
            limit = pacer.limit() if pacer else CHUNK_CHARACTERS
    chunk.at_document_end = True
    yield chunk.prepare(encoder, done_bytes, last=True)


def document_row(document: Document, row_id: int) -> dict[str, Any]:
    """The ``documents`` table row of a document stored under ``row_id``."""
    return {
        "id": row_id,
        "doc_id": document.doc_id,
        "source": document.source,
        "text": document.text,
        "metadata": json.dumps(document.metadata, ensure_ascii=False),
        "content_hash": document.content_hash,
    }


def split_document(
    document: Document, skip_stopwords: bool, sentences: str
) -> list[tuple[tuple[int, int], list[tuple[int, int, str, str]]]]:
    """Sentences of a document with their words.

    Args:
        document: the document.
        skip_stopwords: leave function words out.
        sentences: the sentence splitting mode.

    Returns:
        One ``((start, end), words)`` per sentence, each word as ``(start, end, form, lemma)``; all
        offsets are character offsets into the document's text.
    """
    text = document.text
    return [
        (
            (sentence.start, sentence.end),
            [(w.start, w.end, w.form, w.lemma) for w in split_words(text, sentence, skip_stopwords)],
        )
        for sentence in split_text(text, sentences)
    ]
