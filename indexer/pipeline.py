"""The build pipeline: read documents -> split into sentences and words -> embed -> store, streaming.

Documents are consumed in chunks of sentences; each chunk is split, tokenised, embedded
(length-sorted batches inside :meth:`Encoder.run`) and written before the next one is read, so memory
follows the chunk size, not the corpus size.

Why not overlap reading and writing with the model in threads: PyTorch already keeps both cores of the
reference machine busy, so the other work only competes with it. A reader thread and a writer thread
were measured (issue 4) and gained nothing within the run-to-run noise; the work outside the model was
cut instead (rule-based sentence splitting, plain ``executemany``, rows as tuples, batches cut before
they fill with padding): the model's kernels went from 56 % to 81 % of a profiled build.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from indexer import __version__
from indexer.encoder import DEFAULT_MODEL, Encoder, EncoderSettings, PreparedBatch, load_encoder
from indexer.errors import SettingsError, SourceError
from indexer.sources import STDIN, Document, read_documents, scan_sources
from indexer.storage import AUTO_INDEX_TYPE, VECTOR_TABLES, IndexStore, check_index_type
from indexer.text import check_sentence_mode, split_text, split_words

ProgressCallback = Callable[[int, int | None], None]
"""Called as ``progress(bytes_done, bytes_total)``; ``bytes_total`` is None when reading stdin."""

# A chunk's vectors and rows live until it is stored: 100,000 characters hold about 17,000 words, 26 MB
# of float32 word vectors.
_CHUNK_CHARACTERS = 100_000
_FIRST_CHUNK_CHARACTERS = 20_000
PASSAGE_MODES = ("pooled", "encoded", "none")


@dataclass(frozen=True)
class BuildSummary:
    """What a build stored.

    Attributes:
        documents: documents stored.
        sentences: sentences stored (each with a vector).
        words: word occurrences stored (each with a vector).
        passages: passages stored (runs of consecutive sentences, each with a vector).
        tokens: WordPiece tokens run through the model (specials excluded).
        seconds: wall-clock time of the build.
        skipped_files: files in source folders that are not ``.txt``, ``.md`` or ``.jsonl``.
        empty_documents: documents with no text, not stored.
        unaligned_words: words no WordPiece covered, not stored (should be 0).
        index_types: the vector index type each table got (``flat`` or a FAISS factory string).
    """

    documents: int
    sentences: int
    words: int
    passages: int
    tokens: int
    seconds: float
    skipped_files: list[str] = field(default_factory=list)
    empty_documents: int = 0
    unaligned_words: int = 0
    index_types: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The summary as a JSON-able dict."""
        return asdict(self)


def index_settings(
    encoder: Encoder,
    skip_stopwords: bool,
    passages: str,
    sentence_splitting: str,
    index_type: str = AUTO_INDEX_TYPE,
) -> dict[str, Any]:
    """Everything stored about how an index was built, so queries embed the same way.

    Args:
        encoder: the loaded encoder.
        skip_stopwords: whether function words were left out.
        passages: the passage mode.
        sentence_splitting: the sentence splitting mode.
        index_type: the vector index type asked for.

    Returns:
        JSON-able settings (see the README's on-disk format).
    """
    return {
        "senseindex_version": __version__,
        # an absolute folder, so the index opens from any working directory
        "model": encoder.settings.model
        if encoder.settings.model == DEFAULT_MODEL
        else str(encoder.model_path),
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
        "passages": passages,
        "sentence_splitting": sentence_splitting,
        "index_type": index_type,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class _Chunk:
    """Rows waiting to be embedded and stored together."""

    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []
        self.sentences: list[dict[str, Any]] = []
        self.words: list[list[tuple[int, int, str, str]]] = []  # (start, end, form, lemma)
        self.texts: list[str] = []  # the full text of each sentence's document, for passages
        self.characters = 0
        self.prepared: PreparedBatch | None = None
        self.done_bytes = 0  # source bytes read when the chunk was complete
        self.last = False

    def prepare(self, encoder: Encoder, done_bytes: int, last: bool) -> _Chunk:
        """Tokenise the chunk's sentences for the model."""
        spans = [
            [(w[0] - row["start"], w[1] - row["start"]) for w in words]
            for row, words in zip(self.sentences, self.words, strict=True)
        ]
        self.prepared = encoder.prepare([row["text"] for row in self.sentences], spans)
        self.done_bytes = done_bytes
        self.last = last
        return self


class _PassagePacker:
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
        if self.open is not None:
            self.closed.append(self.open)
            self.open = None

    def take_closed(self) -> list[dict[str, Any]]:
        closed, self.closed = self.closed, []
        return closed


class _Builder:
    """State of one build: the encoder, the store, the next free ids and the running counts."""

    def __init__(self, encoder: Encoder, store: IndexStore, passages: str) -> None:
        self.encoder = encoder
        self.store = store
        self.passages = passages
        self.packer = _PassagePacker(encoder.max_length - 2) if passages != "none" else None
        self.next_document, self.next_sentence, self.next_word, self.next_passage = store.next_ids()
        self.counts = dict.fromkeys(
            ("documents", "sentences", "words", "passages", "tokens", "empty", "unaligned"), 0
        )

    def embed(self, chunk: _Chunk) -> tuple[Any, ...] | None:
        """Embed a chunk; its rows and vectors, with the passages it closed, for one ``add_batch``."""
        last = chunk.last
        pending_passage = last and self.packer is not None and self.packer.open is not None
        if not chunk.sentences and not pending_passage:
            return None
        encoded = self.encoder.run(chunk.prepared)  # type: ignore[arg-type]
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
        if self.packer is not None and last:
            self.packer.close()
        passage_rows, passage_vectors = self._passages()
        self.counts["sentences"] += len(sentence_rows)
        self.counts["words"] += len(word_rows)
        self.counts["passages"] += len(passage_rows)
        self.counts["tokens"] += int(encoded.piece_counts.sum())
        self.counts["unaligned"] += int((~keep).sum())
        return (
            chunk.documents,
            sentence_rows,
            encoded.sentence_vectors,
            word_rows,
            np.ascontiguousarray(encoded.word_vectors[keep]),
            passage_rows,
            passage_vectors,
        )

    def _passages(self) -> tuple[list[dict[str, Any]], np.ndarray]:
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


def build_index(
    sources: Sequence[str],
    index_dir: str | Path,
    settings: EncoderSettings | None = None,
    skip_stopwords: bool = False,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    stdin: TextIO | None = None,
    passages: str = "pooled",
    sentence_splitting: str = "auto",
    index_type: str = AUTO_INDEX_TYPE,
) -> BuildSummary:
    """Build a new index of documents at sentence, word and passage level.

    Args:
        sources: files (``.txt``, ``.md``: paragraphs split at blank lines; ``.jsonl``: one JSON object
            with a ``text`` field per line), folders of such files, or ``-`` for standard input.
        index_dir: the index folder to create.
        settings: encoder settings; the default model and strategies when None.
        skip_stopwords: give function words no word vector.
        overwrite: replace an index already in ``index_dir``.
        progress: called after each stored chunk with bytes done and bytes in total.
        stdin: the stream ``-`` reads (``sys.stdin`` when None).
        passages: passage vectors (runs of consecutive sentences of a document up to the model's
            window): ``pooled`` from the sentences' tokens (free), ``encoded`` by one more forward
            pass over each passage, or ``none``.
        sentence_splitting: ``auto`` (by rule, at blank lines first), ``paragraph`` (a paragraph or
            JSONL text is one sentence: for corpora already split into sentences) or ``line``.
        index_type: vector index type: ``auto`` (exact for tables of up to 65,536 vectors, 8-bit
            scalar quantisation above), ``flat`` (always exact) or a FAISS ``index_factory`` string
            such as ``SQ8``, ``IVF1024,SQ8`` or ``HNSW32`` (see the README's choice table).

    Returns:
        What was stored.

    Raises:
        SourceError: a missing, unreadable or malformed source, or nothing to index.
        IndexExists: ``index_dir`` already holds an index and ``overwrite`` is False.
        ModelLoadError, SettingsError: the model or a setting is unusable.
    """
    started = time.perf_counter()
    if passages not in PASSAGE_MODES:
        raise SettingsError(f"unknown passage mode {passages!r}; use one of {', '.join(PASSAGE_MODES)}")
    check_sentence_mode(sentence_splitting)
    settings = settings or EncoderSettings(model=DEFAULT_MODEL)
    files, scan = scan_sources(sources)
    read_stdin = STDIN in sources
    if not files and not read_stdin:
        raise SourceError(
            f"no .txt, .md or .jsonl files in {', '.join(sources)}"
            + (f" ({len(scan.skipped_files)} other files skipped)" if scan.skipped_files else "")
        )
    encoder = load_encoder(settings)
    check_index_type(index_type, (encoder.word_dimension, encoder.sentence_dimension))
    store = IndexStore.create(
        Path(index_dir),
        index_settings(encoder, skip_stopwords, passages, sentence_splitting, index_type),
        overwrite,
    )
    builder = _Builder(encoder, store, passages)
    counts = builder.counts
    total_bytes = None if read_stdin else scan.total_bytes
    chunks = _chunks(
        read_documents(files, read_stdin, stdin),
        encoder,
        skip_stopwords,
        sentence_splitting,
        builder.next_document,
        counts,
    )
    try:
        for chunk in chunks:
            batch = builder.embed(chunk)
            if batch is not None:
                store.add_batch(*batch)
            _return_free_memory()
            if progress:
                progress(chunk.done_bytes, total_bytes)
        if not counts["documents"]:
            raise SourceError("the sources hold no text to index (all documents are empty)")
        store.finish()
    except BaseException:
        store.abort()
        raise
    store.close()
    return BuildSummary(
        documents=counts["documents"],
        sentences=counts["sentences"],
        words=counts["words"],
        passages=counts["passages"],
        tokens=counts["tokens"],
        seconds=round(time.perf_counter() - started, 3),
        skipped_files=scan.skipped_files,
        empty_documents=counts["empty"],
        unaligned_words=counts["unaligned"],
        index_types={table: str(store.settings.get(f"{table}_index_type")) for table in VECTOR_TABLES},
    )


def _chunks(
    documents: Iterator[Document],
    encoder: Encoder,
    skip_stopwords: bool,
    sentence_splitting: str,
    first_document: int,
    counts: dict[str, int],
) -> Iterator[_Chunk]:
    """Split documents into sentences and words and group them into prepared chunks; the last chunk
    (possibly empty) is marked ``last``."""
    next_document = first_document
    done_bytes = 0
    chunk = _Chunk()
    limit = _FIRST_CHUNK_CHARACTERS  # small, so the first progress report comes early
    for document in documents:
        done_bytes += document.size
        sentences = _split_document(document, skip_stopwords, sentence_splitting)
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
            chunk.words.append(words)
            chunk.texts.append(document.text)
            chunk.characters += span[1] - span[0]
            if chunk.characters >= limit:
                yield chunk.prepare(encoder, done_bytes, last=False)
                chunk = _Chunk()
                limit = _CHUNK_CHARACTERS
        next_document += 1
        counts["documents"] += 1
    yield chunk.prepare(encoder, done_bytes, last=True)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return None


def _return_free_memory() -> None:
    """Hand memory freed by the last chunk back to the OS.

    Batches of every shape leave glibc's heap fragmented; trimming it between chunks keeps a long
    build's resident memory from creeping up with the corpus while nothing the build holds grows.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


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
    document: Document, skip_stopwords: bool, sentences: str
) -> list[tuple[tuple[int, int], list[tuple[int, int, str, str]]]]:
    """Sentences of a document with their words as ``(start, end, form, lemma)`` (document offsets)."""
    text = document.text
    return [
        (
            (sentence.start, sentence.end),
            [(w.start, w.end, w.form, w.lemma) for w in split_words(text, sentence, skip_stopwords)],
        )
        for sentence in split_text(text, sentences)
    ]
