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

import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from senseindex._version import __version__
from senseindex.errors import (
    DocumentNotFound,
    IndexExists,
    ModelMismatch,
    SenseIndexError,
    SettingsError,
    SourceError,
)
from senseindex.indexer.encoder import (
    DEFAULT_MODEL,
    Encoder,
    EncoderSettings,
    PreparedBatch,
    load_encoder,
    load_index_encoder,
)
from senseindex.indexer.sources import STDIN, Document, SourceScan, read_documents, scan_sources
from senseindex.indexer.storage import (
    AUTO_INDEX_TYPE,
    STATUS_BUILDING,
    VECTOR_TABLES,
    IndexStore,
    check_index_type,
    read_index_status,
)
from senseindex.indexer.text import check_sentence_mode, split_text, split_words

ProgressCallback = Callable[[int, int | None], None]
"""Called as ``progress(bytes_done, bytes_total)``; ``bytes_total`` is None when reading stdin."""

# A chunk's vectors and rows live until it is stored: 100,000 characters hold about 17,000 words, 26 MB
# of float32 word vectors.
_CHUNK_CHARACTERS = 100_000
_FIRST_CHUNK_CHARACTERS = 20_000
PASSAGE_MODES = ("pooled", "encoded", "none")
# The index settings that decide what a vector means: an encoder loaded for one index fits another
# only if they agree on all of them.
ENCODER_SETTINGS = ("model_fingerprint", "layers", "piece_pooling", "sentence_pooling", "max_length")
# A commit (at the end of a document) once this much text or time has gone by since the last one:
# a killed build loses at most about this much work; each commit writes the shards being filled.
COMMIT_CHARACTERS = 1_000_000
COMMIT_SECONDS = 3.0
# Settings that must match for a build to resume an unfinished index (the rest, e.g. the creation
# time or the model folder's path, may differ).
_RESUMABLE_SETTINGS = (
    "model_fingerprint",
    "layers",
    "piece_pooling",
    "sentence_pooling",
    "max_length",
    "skip_stopwords",
    "passages",
    "sentence_splitting",
    "index_type",
)


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
        index_types: the vector index type each table got (``flat``, a FAISS factory string, or
            several joined with ``+`` when its shards differ).
        unchanged: documents already in the index with the same content, left as they were.
        replaced: documents already in the index with other content, replaced (counted in
            ``documents`` too).
        resumed: a build that continued an unfinished index (killed or failed before).
        merges: what the shard merge after the last commit did, one line each.
        warnings: problems with sources that were skipped or repaired (``--skip-bad``, bad bytes).
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
    unchanged: int = 0
    replaced: int = 0
    resumed: bool = False
    merges: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

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
        self.ends: list[bool] = []  # whether each sentence is its document's last
        self.replaces: list[str] = []  # ids of stored documents this chunk's new versions replace
        self.at_document_end = False  # the chunk's last sentence ends a document
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


@dataclass
class _Sources:
    """The documents a build or an add reads, scanned and checked before the model loads."""

    files: list[tuple[Path, str]]
    scan: Any
    read_stdin: bool
    stdin: TextIO | None
    skip_bad: bool
    given: list[Document] | None = None  # documents handed over in memory instead of files

    @classmethod
    def read(cls, sources: Sequence[str], stdin: TextIO | None, skip_bad: bool) -> _Sources:
        files, scan = scan_sources(sources, skip_bad=skip_bad)
        read_stdin = STDIN in sources
        if not files and not read_stdin:
            raise SourceError(
                f"no .txt, .md or .jsonl files in {', '.join(sources)}"
                + (f" ({len(scan.skipped_files)} other files skipped)" if scan.skipped_files else "")
            )
        return cls(files, scan, read_stdin, stdin, skip_bad)

    @classmethod
    def of_documents(cls, documents: list[Document]) -> _Sources:
        return cls([], SourceScan(), False, None, False, documents)

    def documents(self) -> Iterator[Document]:
        if self.given is not None:
            return iter(self.given)
        return read_documents(
            self.files, self.read_stdin, self.stdin, skip_bad=self.skip_bad, warnings=self.scan.warnings
        )

    @property
    def total_bytes(self) -> int | None:
        if self.given is not None:
            return sum(document.size for document in self.given)
        return None if self.read_stdin else self.scan.total_bytes


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
    skip_bad: bool = False,
) -> BuildSummary:
    """Build a new index of documents at sentence, word and passage level.

    The index is written in place and committed every few seconds, at document boundaries: a build
    that is killed leaves an index holding the documents committed so far, and running the same build
    again resumes it (documents already stored with the same content are skipped). With
    ``overwrite``, the new index is written next to the old one and replaces it only when complete.

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
        skip_bad: skip malformed JSONL lines and binary files with a warning instead of stopping.

    Returns:
        What was stored.

    Raises:
        SourceError: a missing, unreadable or malformed source, or nothing to index.
        IndexExists: ``index_dir`` already holds a finished index (or an unfinished one built with
            other settings) and ``overwrite`` is False.
        IndexBusy: another process is writing to ``index_dir``.
        ModelLoadError, SettingsError: the model or a setting is unusable.
    """
    started = time.perf_counter()
    if passages not in PASSAGE_MODES:
        raise SettingsError(f"unknown passage mode {passages!r}; use one of {', '.join(PASSAGE_MODES)}")
    check_sentence_mode(sentence_splitting)
    settings = settings or EncoderSettings(model=DEFAULT_MODEL)
    reading = _Sources.read(sources, stdin, skip_bad)
    encoder = load_encoder(settings)
    check_index_type(index_type, (encoder.word_dimension, encoder.sentence_dimension))
    wanted = index_settings(encoder, skip_stopwords, passages, sentence_splitting, index_type)
    folder = Path(index_dir)
    resumed = not overwrite and read_index_status(folder) == STATUS_BUILDING
    if resumed:
        store = IndexStore.open_for_writing(folder)
        different = [key for key in _RESUMABLE_SETTINGS if store.settings.get(key) != wanted[key]]
        if different:
            store.close()
            key = different[0]
            raise IndexExists(
                f"{folder} holds an unfinished index built with other settings ({key}: "
                f"{store.settings.get(key)!r}, not {wanted[key]!r}); run the same build again to "
                "resume it, or use --overwrite"
            )
    else:
        store = IndexStore.create(folder, wanted, overwrite)
    return _write_documents(store, encoder, reading, progress, started, complete=True, resumed=resumed)


def add_documents(
    sources: Sequence[str],
    index_dir: str | Path,
    model: str | None = None,
    backend: str = "auto",
    progress: ProgressCallback | None = None,
    stdin: TextIO | None = None,
    skip_bad: bool = False,
) -> BuildSummary:
    """Add documents to an existing index, with the settings stored in it.

    A document's identity is its ``id`` (JSONL) or its path relative to the folder given as source. A
    document stored with the same content is left alone; one stored with other content is replaced
    (its old sentences, words and vectors leave every query in the same commit that adds the new
    ones).

    Args:
        sources: files, folders or ``-``, as for :func:`build_index`.
        index_dir: the index folder.
        model: a copy of the index's model to use instead of the stored folder (same weights).
        backend: what runs the model (see :class:`EncoderSettings`).
        progress: called after each stored chunk with bytes done and bytes in total.
        stdin: the stream ``-`` reads.
        skip_bad: skip malformed JSONL lines and binary files with a warning.

    Returns:
        What was stored (``documents`` counts new and replaced ones).

    Raises:
        IndexNotFound, SchemaMismatch, IndexCorrupted: no usable index in ``index_dir``.
        IndexBusy: another process is writing to it.
        ModelMismatch, ModelLoadError: the model is not the index's or cannot be loaded.
        SourceError: a missing, unreadable or malformed source.
    """
    started = time.perf_counter()
    reading = _Sources.read(sources, stdin, skip_bad)
    store = IndexStore.open_for_writing(Path(index_dir))
    try:
        encoder = load_index_encoder(store.settings, model, backend)
    except BaseException:
        store.close()
        raise
    return _write_documents(store, encoder, reading, progress, started, complete=False, resumed=False)


def add_document_list(
    documents: list[Document],
    index_dir: str | Path,
    encoder: Encoder,
    encoder_settings: dict[str, Any],
    progress: ProgressCallback | None = None,
) -> BuildSummary:
    """:func:`add_documents` for documents already in memory, with an encoder already loaded, in one
    commit: all of them are stored, or (on any error) none.

    Args:
        documents: the documents, with unique ids.
        index_dir: the index folder.
        encoder: the index's encoder (from :func:`~senseindex.indexer.encoder.load_index_encoder`).
        encoder_settings: the index settings the encoder was loaded for (:data:`ENCODER_SETTINGS`);
            an index rebuilt since with other ones is refused.
        progress: called after each stored chunk with characters done and in total.

    Returns:
        What was stored.

    Raises:
        IndexNotFound, SchemaMismatch, IndexCorrupted: no usable index in ``index_dir``.
        IndexBusy: another process is writing to it.
        ModelMismatch: the index now holds another model's vectors, or other settings.
    """
    started = time.perf_counter()
    store = IndexStore.open_for_writing(Path(index_dir))
    replaced = index_replaced(store.settings, encoder_settings, index_dir)
    if replaced:
        store.close()
        raise ModelMismatch(replaced)
    return _write_documents(
        store,
        encoder,
        _Sources.of_documents(documents),
        progress,
        started,
        complete=False,
        resumed=False,
        commit_on_the_way=False,
    )


def index_replaced(stored: dict[str, Any], opened: dict[str, Any], index_dir: str | Path) -> str | None:
    """Why an encoder loaded for an index's settings ``opened`` no longer fits the index, whose
    settings are now ``stored`` (it was rebuilt meanwhile); None when it still fits."""
    changed = [key for key in ENCODER_SETTINGS if stored.get(key) != opened.get(key)]
    if not changed:
        return None
    return (
        f"the index in {index_dir} was rebuilt with another model or settings ({changed[0]}) since it "
        "was opened; open it again (restart the server)"
    )


@dataclass(frozen=True)
class ChangePlan:
    """What an ``add`` would do, found without running the model.

    Attributes:
        new: ids of documents not in the index.
        changed: ids of documents in the index with other content (would be replaced).
        unchanged: ids of documents in the index with the same content (would be left alone).
        skipped_files: files in source folders that are not ``.txt``, ``.md`` or ``.jsonl``.
        warnings: problems with sources that would be skipped or repaired.
    """

    new: list[str]
    changed: list[str]
    unchanged: list[str]
    skipped_files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The plan as a JSON-able dict."""
        return asdict(self)


def plan_changes(
    sources: Sequence[str], index_dir: str | Path, stdin: TextIO | None = None, skip_bad: bool = False
) -> ChangePlan:
    """What :func:`add_documents` would change (``--dry-run``): reads the sources and compares them
    with the index by content hash, without loading the model or writing anything.

    Raises:
        IndexNotFound, SchemaMismatch, IndexCorrupted: no usable index in ``index_dir``.
        SourceError: a missing, unreadable or malformed source.
    """
    reading = _Sources.read(sources, stdin, skip_bad)
    store = IndexStore.open(Path(index_dir))
    found: dict[str, list[str]] = {"new": [], "changed": [], "unchanged": []}
    try:
        for document in reading.documents():
            found[_change_of(document, store)].append(document.doc_id)
    finally:
        store.close()
    return ChangePlan(**found, skipped_files=reading.scan.skipped_files, warnings=reading.scan.warnings)


@dataclass(frozen=True)
class DeleteSummary:
    """What a delete removed.

    Attributes:
        documents: ids of the documents deleted.
        rows: rows deleted per table (``documents``, ``sentences``, ``words``, ``passages``).
        merges: what the shard merge after the delete did, one line each.
    """

    documents: list[str]
    rows: dict[str, int]
    merges: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The summary as a JSON-able dict."""
        return asdict(self)


def delete_documents(index_dir: str | Path, doc_ids: Sequence[str]) -> DeleteSummary:
    """Delete documents and all their sentences, words, passages and vectors, in one commit.

    Args:
        index_dir: the index folder.
        doc_ids: ids of stored documents.

    Returns:
        What was deleted.

    Raises:
        SourceError: an id is not in the index (nothing is deleted then).
        IndexNotFound, SchemaMismatch, IndexCorrupted: no usable index in ``index_dir``.
        IndexBusy: another process is writing to it.
    """
    if not doc_ids:
        raise SourceError("no document id given")
    store = IndexStore.open_for_writing(Path(index_dir))
    try:
        unique = list(dict.fromkeys(doc_ids))
        known = store.document_hashes(unique)
        unknown = [doc_id for doc_id in unique if doc_id not in known]
        if unknown:
            more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
            raise DocumentNotFound(f"no document {unknown[0]!r}{more} in {index_dir}; nothing was deleted")
        rows = store.delete_documents(unique)
        merges = store.finish(complete=False)
    except BaseException:
        store.abort()
        raise
    return DeleteSummary(unique, rows, merges)


@dataclass(frozen=True)
class CheckReport:
    """What :func:`check_index` found.

    Attributes:
        path: the index folder.
        problems: one line per problem; empty for a sound index.
        notes: remarks that are not problems (an unfinished build, leftover files).
        counts: rows per table.
    """

    path: str
    problems: list[str]
    notes: list[str]
    counts: dict[str, int]

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-able dict (with ``ok``)."""
        return {"ok": self.ok, **asdict(self)}


def check_index(index_dir: str | Path) -> CheckReport:
    """Verify an index without changing it: SQLite's integrity check, every vector file readable and
    holding the vectors its record says, every row with its vector, every span slicing its document
    to its text, no half-stored document.

    Args:
        index_dir: the index folder.

    Returns:
        The report.

    Raises:
        IndexNotFound: no index in ``index_dir``.
        SchemaMismatch: an index of another format version.
        IndexCorrupted: the database cannot be opened at all.
    """
    store = IndexStore.open(Path(index_dir))
    try:
        with contextlib.suppress(SenseIndexError):
            store.open_vectors()  # on the newest snapshot whose files are all there, if any
        problems, notes = store.check()
        try:
            counts = store.counts()
        except SenseIndexError:
            counts = {}
    finally:
        store.close()
    return CheckReport(str(index_dir), problems, notes, counts)


def _write_documents(
    store: IndexStore,
    encoder: Encoder,
    reading: _Sources,
    progress: ProgressCallback | None,
    started: float,
    complete: bool,
    resumed: bool,
    commit_on_the_way: bool = True,
) -> BuildSummary:
    """Embed and store documents with commits at document boundaries; the shared core of
    :func:`build_index` (``complete``: mark the index complete at the end) and
    :func:`add_documents`. Stored documents are compared by content hash unless this is a new build
    (neither resumed nor an add). Without ``commit_on_the_way``, everything is one commit at the end."""
    documents = reading.documents()
    total_bytes = reading.total_bytes
    scan = reading.scan
    check_existing = resumed or not complete
    builder = _Builder(encoder, store, str(store.settings.get("passages", "none")))
    counts = builder.counts
    counts.update(unchanged=0, replaced=0)
    chunks = _chunks(
        _new_or_changed(documents, store, counts) if check_existing else documents,
        encoder,
        bool(store.settings.get("skip_stopwords")),
        str(store.settings.get("sentence_splitting", "auto")),
        builder.next_document,
        counts,
    )
    last_commit, characters_since = time.monotonic(), 0
    try:
        for chunk in chunks:
            if chunk.replaces:
                store.delete_documents(chunk.replaces)
            batch = builder.embed(chunk)
            if batch is not None:
                store.add_batch(*batch)
            characters_since += chunk.characters
            if (
                commit_on_the_way
                and chunk.at_document_end
                and (
                    characters_since >= COMMIT_CHARACTERS or time.monotonic() - last_commit >= COMMIT_SECONDS
                )
            ):
                store.commit()
                last_commit, characters_since = time.monotonic(), 0
            _return_free_memory()
            if progress:
                progress(chunk.done_bytes, total_bytes)
        if complete and not counts["documents"] and not counts["unchanged"]:
            raise SourceError("the sources hold no text to index (all documents are empty)")
        merges = store.finish(complete=complete)
    except BaseException:
        store.abort()
        raise
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
        unchanged=counts["unchanged"],
        replaced=counts["replaced"],
        resumed=resumed,
        merges=merges,
        warnings=list(scan.warnings),
    )


def _new_or_changed(
    documents: Iterator[Document], store: IndexStore, counts: dict[str, int]
) -> Iterator[Document]:
    """Documents to store: new ones, and changed ones marked to replace their stored version."""
    for document in documents:
        change = _change_of(document, store)
        if change == "unchanged":
            counts["unchanged"] += 1
            continue
        if change == "changed":
            counts["replaced"] += 1
            document = dataclasses.replace(document, replaces=True)
        yield document


def _change_of(document: Document, store: IndexStore) -> str:
    """``new``, ``changed`` or ``unchanged``: the document against its stored version, by content
    hash."""
    stored = store.document_hashes([document.doc_id]).get(document.doc_id)
    if stored is None:
        return "new"
    return "unchanged" if stored == document.content_hash else "changed"


def _chunks(
    documents: Iterator[Document],
    encoder: Encoder,
    skip_stopwords: bool,
    sentence_splitting: str,
    first_document: int,
    counts: dict[str, int],
) -> Iterator[_Chunk]:
    """Split documents into sentences and words and group them into prepared chunks; the last chunk
    (possibly empty) is marked ``last``. A chunk is cut once it holds enough text: at a document's end,
    or inside a document longer than a chunk; a chunk ending at a document's end is marked, as only
    there may a commit follow."""
    next_document = first_document
    done_bytes = 0
    chunk = _Chunk()
    limit = _FIRST_CHUNK_CHARACTERS  # small, so the first progress report comes early
    for document in documents:
        done_bytes += document.size
        sentences = _split_document(document, skip_stopwords, sentence_splitting)
        if not sentences:
            counts["empty"] += 1
            if document.replaces:  # the new version is empty: the old one goes all the same
                chunk.replaces.append(document.doc_id)
            continue
        if document.replaces:
            chunk.replaces.append(document.doc_id)
        chunk.documents.append(_document_row(document, next_document))
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
                chunk = _Chunk()
                limit = _CHUNK_CHARACTERS
        next_document += 1
        counts["documents"] += 1
        chunk.at_document_end = True
        if chunk.characters >= limit:
            yield chunk.prepare(encoder, done_bytes, last=False)
            chunk = _Chunk()
            limit = _CHUNK_CHARACTERS
    chunk.at_document_end = True
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
