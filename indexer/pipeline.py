"""The build pipeline: read documents -> split into sentences and words -> embed -> store, streaming.

Documents are consumed in chunks of sentences; each chunk is embedded (length-sorted batches inside
:meth:`Encoder.encode`) and written before the next one is read, so memory follows the chunk size, not
the corpus size.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from indexer import __version__
from indexer.encoder import DEFAULT_MODEL, Encoder, EncoderSettings, load_encoder
from indexer.errors import SourceError
from indexer.sources import STDIN, Document, read_documents, scan_sources
from indexer.storage import IndexStore
from indexer.text import split_paragraphs, split_sentences, split_words

ProgressCallback = Callable[[int, int | None], None]
"""Called as ``progress(bytes_done, bytes_total)``; ``bytes_total`` is None when reading stdin."""

_CHUNK_CHARACTERS = 200_000


@dataclass(frozen=True)
class BuildSummary:
    """What a build stored.

    Attributes:
        documents: documents stored.
        sentences: sentences stored (each with a vector).
        words: word occurrences stored (each with a vector).
        tokens: WordPiece tokens run through the model (specials excluded).
        seconds: wall-clock time of the build.
        skipped_files: files in source folders that are not ``.txt``, ``.md`` or ``.jsonl``.
        empty_documents: documents with no text, not stored.
        unaligned_words: words no WordPiece covered, not stored (should be 0).
    """

    documents: int
    sentences: int
    words: int
    tokens: int
    seconds: float
    skipped_files: list[str] = field(default_factory=list)
    empty_documents: int = 0
    unaligned_words: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The summary as a JSON-able dict."""
        return asdict(self)


def index_settings(encoder: Encoder, skip_stopwords: bool) -> dict[str, Any]:
    """Everything stored about how an index was built, so queries embed the same way."""
    return {
        "senseindex_version": __version__,
        "model": encoder.settings.model,
        "model_path": str(encoder.model_path),
        "model_fingerprint": encoder.fingerprint,
        "layers": encoder.settings.layers,
        "piece_pooling": encoder.settings.piece_pooling,
        "sentence_pooling": encoder.settings.sentence_pooling,
        "sentence_pooling_resolved": encoder.sentence_pooling,
        "max_length": encoder.max_length,
        "batch_size": encoder.settings.batch_size,
        "sentence_dimension": encoder.sentence_dimension,
        "word_dimension": encoder.word_dimension,
        "skip_stopwords": skip_stopwords,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class _Chunk:
    """Rows waiting to be embedded and stored together."""

    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []
        self.sentences: list[dict[str, Any]] = []
        self.words: list[list[dict[str, Any]]] = []
        self.characters = 0


def build_index(
    sources: Sequence[str],
    index_dir: str | Path,
    settings: EncoderSettings | None = None,
    skip_stopwords: bool = False,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    stdin: TextIO | None = None,
) -> BuildSummary:
    """Build a new index of documents at sentence and word level.

    Args:
        sources: files (``.txt``, ``.md``: paragraphs split at blank lines; ``.jsonl``: one JSON object
            with a ``text`` field per line), folders of such files, or ``-`` for standard input.
        index_dir: the index folder to create.
        settings: encoder settings; the default model and strategies when None.
        skip_stopwords: give function words no word vector.
        overwrite: replace an index already in ``index_dir``.
        progress: called after each stored chunk with bytes done and bytes in total.
        stdin: the stream ``-`` reads (``sys.stdin`` when None).

    Returns:
        What was stored.

    Raises:
        SourceError: a missing, unreadable or malformed source, or nothing to index.
        IndexExists: ``index_dir`` already holds an index and ``overwrite`` is False.
        ModelLoadError, SettingsError: the model or a setting is unusable.
    """
    started = time.perf_counter()
    settings = settings or EncoderSettings(model=DEFAULT_MODEL)
    files, scan = scan_sources(sources)
    read_stdin = STDIN in sources
    if not files and not read_stdin:
        raise SourceError(
            f"no .txt, .md or .jsonl files in {', '.join(sources)}"
            + (f" ({len(scan.skipped_files)} other files skipped)" if scan.skipped_files else "")
        )
    encoder = load_encoder(settings)
    store = IndexStore.create(Path(index_dir), index_settings(encoder, skip_stopwords), overwrite)
    total_bytes = None if read_stdin else scan.total_bytes
    next_document, next_sentence, next_word = store.next_ids()
    counts = {"documents": 0, "sentences": 0, "words": 0, "tokens": 0, "empty": 0, "unaligned": 0}
    done_bytes = 0
    chunk = _Chunk()

    def flush() -> None:
        nonlocal next_sentence, next_word, chunk
        if chunk.sentences:
            stored_words, tokens, unaligned = _embed_and_store(
                encoder, store, chunk, next_sentence, next_word
            )
            next_sentence += len(chunk.sentences)
            next_word += stored_words
            counts["sentences"] += len(chunk.sentences)
            counts["words"] += stored_words
            counts["tokens"] += tokens
            counts["unaligned"] += unaligned
        chunk = _Chunk()
        if progress:
            progress(done_bytes, total_bytes)

    try:
        for document in read_documents(files, read_stdin, stdin):
            done_bytes += document.size
            sentences = _split_document(document, skip_stopwords)
            if not sentences:
                counts["empty"] += 1
                continue
            chunk.documents.append(_document_row(document, next_document))
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
                chunk.words.append([dict(word, document=next_document) for word in words])
                chunk.characters += span[1] - span[0]
                if chunk.characters >= _CHUNK_CHARACTERS:
                    flush()
            next_document += 1
            counts["documents"] += 1
        flush()
        if not counts["documents"]:
            raise SourceError("the sources hold no text to index (all documents are empty)")
        store.finish()
    except BaseException:
        store.close()
        raise
    store.close()
    return BuildSummary(
        documents=counts["documents"],
        sentences=counts["sentences"],
        words=counts["words"],
        tokens=counts["tokens"],
        seconds=round(time.perf_counter() - started, 3),
        skipped_files=scan.skipped_files,
        empty_documents=counts["empty"],
        unaligned_words=counts["unaligned"],
    )


def _document_row(document: Document, row_id: int) -> dict[str, Any]:
    return {
        "id": row_id,
        "doc_id": document.doc_id,
        "source": document.source,
        "text": document.text,
        "metadata": json.dumps(document.metadata, ensure_ascii=False),
        "content_hash": document.content_hash,
    }


def _split_document(
    document: Document, skip_stopwords: bool
) -> list[tuple[tuple[int, int], list[dict[str, Any]]]]:
    """Sentences of a document with their words (document offsets)."""
    text = document.text
    result = []
    for paragraph in split_paragraphs(text):
        for sentence in split_sentences(text, paragraph):
            words = [
                {"start": w.start, "end": w.end, "form": w.form, "lemma": w.lemma}
                for w in split_words(text, sentence, skip_stopwords)
            ]
            result.append(((sentence.start, sentence.end), words))
    return result


def _embed_and_store(
    encoder: Encoder, store: IndexStore, chunk: _Chunk, first_sentence: int, first_word: int
) -> tuple[int, int, int]:
    """Embed a chunk and store it; returns (words stored, tokens, words left unaligned)."""
    texts = [row["text"] for row in chunk.sentences]
    spans = [
        [(w["start"] - row["start"], w["end"] - row["start"]) for w in words]
        for row, words in zip(chunk.sentences, chunk.words, strict=True)
    ]
    encoded = encoder.encode(texts, spans)
    sentence_rows = []
    word_rows = []
    flat_index = 0
    keep = np.zeros(len(encoded.word_aligned), dtype=bool)
    word_id = first_word
    for offset, (row, words) in enumerate(zip(chunk.sentences, chunk.words, strict=True)):
        sentence_id = first_sentence + offset
        sentence_rows.append({"id": sentence_id, **row})
        for word in words:
            if encoded.word_aligned[flat_index]:
                word_rows.append({"id": word_id, "sentence": sentence_id, **word})
                keep[flat_index] = True
                word_id += 1
            flat_index += 1
    store.add_batch(
        chunk.documents,
        sentence_rows,
        encoded.sentence_vectors,
        word_rows,
        np.ascontiguousarray(encoded.word_vectors[keep]),
    )
    return len(word_rows), int(encoded.piece_counts.sum()), int((~keep).sum())
