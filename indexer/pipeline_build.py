"""Building and adding to an index, streaming.

Read documents -> split into sentences and words -> embed -> store.

Documents are consumed in chunks of sentences; each chunk is split, tokenised, embedded
(length-sorted batches inside `Encoder.run`) and written before the next one is read, so memory
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
import dataclasses
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from senseindex._version import __version__
from senseindex.errors import IndexExists, ModelMismatch, SettingsError, SourceError

# Importing the encoder package loads neither torch nor transformers: they load with a model.
from senseindex.indexer.encoder import (
    DEFAULT_MODEL,
    Encoder,
    EncoderSettings,
    check_device,
    load_encoder,
)
from senseindex.indexer.faults import storage_faults
from senseindex.indexer.pipeline_chunks import ChunkPacer, chunk_documents
from senseindex.indexer.pipeline_reports import (
    BuildProgressCallback,
    BuildSummary,
    ProgressCallback,
    chunk_reporter,
)
from senseindex.indexer.pipeline_rows import RowBuilder
from senseindex.indexer.sources import STDIN, Document, SourceScan, read_documents, scan_sources
from senseindex.indexer.storage import (
    AUTO_INDEX_TYPE,
    STATUS_BUILDING,
    VECTOR_TABLES,
    IndexStore,
    ReadableIndex,
    check_index_type,
    faiss_threads,
    read_index_status,
)
from senseindex.indexer.storage.manifest import is_sharded, shard_of
from senseindex.indexer.text import check_sentence_mode

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
        JSON-able settings (see docs/design.md, "On-disk format").
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


@dataclass
class SourceReading:
    """The documents a build or an add reads, scanned and checked before the model loads.

    Attributes:
        files: the files to read, each with its document id.
        scan: what the scan found besides documents; its warnings grow while documents are read.
        read_stdin: standard input is one of the sources.
        stdin: the stream read for ``-`` (``sys.stdin`` when None).
        skip_bad: skip malformed items with a warning instead of raising.
        given: documents handed over in memory instead of files.
        shard: ``(number, count)``: only the documents `shard_of` puts in shard ``number`` of
            ``count``; None for all of them.
    """

    files: list[tuple[Path, str]]
    scan: SourceScan
    read_stdin: bool
    stdin: TextIO | None
    skip_bad: bool
    given: list[Document] | None = None
    shard: tuple[int, int] | None = None

    @classmethod
    def read(cls, sources: Sequence[str], stdin: TextIO | None, skip_bad: bool) -> SourceReading:
        """Scan and check the sources (every file is read once here).

        Raises:
            SourceError: a missing, unreadable or malformed source, or no document file at all.
        """
        files, scan = scan_sources(sources, skip_bad=skip_bad)
        read_stdin = STDIN in sources
        if not files and not read_stdin:
            raise SourceError(
                f"no .txt, .md or .jsonl files in {', '.join(sources)}"
                + (f" ({len(scan.skipped_files)} other files skipped)" if scan.skipped_files else "")
            )
        return cls(files, scan, read_stdin, stdin, skip_bad)

    @classmethod
    def of_documents(cls, documents: list[Document]) -> SourceReading:
        """Documents already in memory, as a reading."""
        return cls([], SourceScan(), False, None, False, documents)

    def of_shard(self, number: int, count: int) -> SourceReading:
        """The same sources, keeping only the documents of shard ``number`` of ``count``.

        The files are given as absolute paths, so a worker on another machine (which sees the sources
        at the same paths) reads them whatever its working directory.
        """
        files = [(path.absolute(), doc_id) for path, doc_id in self.files]
        scan = SourceScan(list(self.scan.skipped_files), self.scan.total_bytes, [])
        return dataclasses.replace(self, files=files, scan=scan, shard=(number, count))

    def documents(self) -> Iterator[Document]:
        """The documents, read one at a time."""
        if self.given is not None:
            documents: Iterator[Document] = iter(self.given)
        else:
            documents = read_documents(
                self.files, self.read_stdin, self.stdin, skip_bad=self.skip_bad, warnings=self.scan.warnings
            )
        if self.shard is None:
            return documents
        number, count = self.shard
        return (document for document in documents if shard_of(document.doc_id, count) == number)

    @property
    def total_bytes(self) -> int | None:
        """Bytes of all sources, for progress; None when standard input (of unknown size) is read."""
        if self.given is not None:
            return sum(document.size for document in self.given)
        return None if self.read_stdin else self.scan.total_bytes


@storage_faults("writing")
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
    shards: int | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    progress_report: BuildProgressCallback | None = None,
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
        settings: encoder settings; the default model and strategies when None. Its ``device`` and
            ``threads`` say where the model runs and with how many CPU threads; FAISS trains, adds
            and merges vectors with the same thread count.
        skip_stopwords: give function words no word vector.
        overwrite: replace an index already in ``index_dir``.
        progress: called after each stored chunk with bytes done and bytes in total.
        stdin: the stream ``-`` reads (``sys.stdin`` when None).
        passages: passage vectors (runs of consecutive sentences of a document up to the model's
            window): ``pooled`` from the sentences' tokens (free), ``encoded`` by one more forward
            pass over each passage, or ``none``.
        sentence_splitting: ``auto`` (by rule, at blank lines first), ``paragraph`` (a paragraph or
            JSONL text is one sentence: for corpora already split into sentences) or ``line``.
        index_type: vector index type: ``auto`` (exact for tables of up to 65,536 vectors; above, an
            inverted file of 8-bit codes for words and 8-bit scalar quantisation for the rest),
            ``flat`` (always exact) or a FAISS ``index_factory`` string such as ``SQ8``,
            ``IVF1024,SQ8`` or ``HNSW32`` (see docs/design.md, "Choosing an index type").
        skip_bad: skip malformed JSONL lines and binary files with a warning instead of stopping.
        shards: split the documents by a hash of their id into this many shards, each a complete
            index in ``index_dir/shard-NNNN`` named by a manifest (see `build_sharded_index`);
            None or 1 builds one ordinary index (None with ``workers`` above 1 means one shard per
            worker).
        workers: processes building shards at once: 1 builds them here one after another; more
            starts a Ray actor pool (the ``ray`` extra), one model per actor with
            ``settings.threads`` CPU threads each.
        ray_address: a running Ray cluster to join (``host:port``); a local Ray is started when None.
            Every node must see the sources and ``index_dir`` at the same paths.
        progress_report: called with a `BuildProgress` (documents and tokens so far, across all
            workers) after each stored chunk.

    Returns:
        What was stored (totals over the shards of a sharded build).

    Raises:
        SourceError: a missing, unreadable or malformed source, or nothing to index.
        IndexExists: ``index_dir`` already holds a finished index (or an unfinished one built with
            other settings) and ``overwrite`` is False.
        IndexBusy: another process is writing to ``index_dir``.
        ModelLoadError, SettingsError: the model or a setting is unusable (a missing device is
            refused before anything is read).
        MissingExtra: ``workers`` above 1 without the ``ray`` extra installed.
    """
    started = time.perf_counter()
    if passages not in PASSAGE_MODES:
        raise SettingsError(f"unknown passage mode {passages!r}; use one of {', '.join(PASSAGE_MODES)}")
    check_sentence_mode(sentence_splitting)
    settings = settings or EncoderSettings(model=DEFAULT_MODEL)
    settings.validate()
    check_device(settings.device, settings.backend)
    if workers != 1 or (shards is not None and shards != 1):
        # (imported here: the sharded build is built on this module's functions)
        from senseindex.indexer.pipeline_sharded import ShardedBuild, build_sharded_index

        return build_sharded_index(
            ShardedBuild(
                sources=list(sources),
                folder=Path(index_dir),
                settings=settings,
                skip_stopwords=skip_stopwords,
                passages=passages,
                sentence_splitting=sentence_splitting,
                index_type=index_type,
                skip_bad=skip_bad,
                shards=shards,
                workers=workers,
                ray_address=ray_address,
            ),
            overwrite,
            progress,
            progress_report,
        )
    reading = SourceReading.read(sources, stdin, skip_bad)
    encoder = load_encoder(settings)
    check_index_type(index_type, (encoder.word_dimension, encoder.sentence_dimension))
    wanted = index_settings(encoder, skip_stopwords, passages, sentence_splitting, index_type)
    store, resumed = open_build_store(Path(index_dir), wanted, overwrite)
    report = chunk_reporter(progress_report, reading.total_bytes, started)
    return write_documents(
        store, encoder, reading, progress, started, complete=True, resumed=resumed, report=report
    )


def open_build_store(folder: Path, wanted: dict[str, Any], overwrite: bool) -> tuple[IndexStore, bool]:
    """Open the index a build writes: a new one, or an unfinished one built with the same settings.

    Args:
        folder: the index folder.
        wanted: the build's index settings (`index_settings`).
        overwrite: replace an index already in the folder.

    Returns:
        The store, open for writing, and whether it resumes an unfinished build.

    Raises:
        IndexExists: the folder holds a finished index, or an unfinished one built with other
            settings, and ``overwrite`` is False.
        IndexBusy: another process is writing to it.
    """
    if is_sharded(folder):
        raise IndexExists(
            f"{folder} holds a sharded index; build it with --shards (and --overwrite to replace it), "
            "or choose another folder"
        )
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
    return store, resumed


def add_document_list(
    documents: list[Document],
    index_dir: str | Path,
    encoder: Encoder,
    encoder_settings: dict[str, Any],
    progress: ProgressCallback | None = None,
) -> BuildSummary:
    """`senseindex.indexer.pipeline.add_document_list` for an ordinary (unsharded) index.

    Same arguments, return value and errors; all the documents are stored in one commit, or none.
    """
    started = time.perf_counter()
    store = IndexStore.open_for_writing(Path(index_dir))
    replaced = index_replaced(store.settings, encoder_settings, index_dir)
    if replaced:
        store.close()
        raise ModelMismatch(replaced)
    return write_documents(
        store,
        encoder,
        SourceReading.of_documents(documents),
        progress,
        started,
        complete=False,
        resumed=False,
        commit_on_the_way=False,
    )


def index_replaced(stored: dict[str, Any], opened: dict[str, Any], index_dir: str | Path) -> str | None:
    """Why an encoder loaded for an index's settings ``opened`` no longer fits the index.

    The index's settings are now ``stored`` (it was rebuilt meanwhile). None when the encoder still fits.
    """
    changed = [key for key in ENCODER_SETTINGS if stored.get(key) != opened.get(key)]
    if not changed:
        return None
    return (
        f"the index in {index_dir} was rebuilt with another model or settings ({changed[0]}) since it "
        "was opened; open it again (restart the server)"
    )


def write_documents(
    store: IndexStore,
    encoder: Encoder,
    reading: SourceReading,
    progress: ProgressCallback | None,
    started: float,
    complete: bool,
    resumed: bool,
    commit_on_the_way: bool = True,
    finish: bool = True,
    require_text: bool = True,
    report: Callable[[int, int, int], None] | None = None,
) -> BuildSummary:
    """Embed and store documents with commits at document boundaries.

    The shared core of `build_index`, `add_documents` and `add_document_list`.

    A commit follows the first document end after `COMMIT_CHARACTERS` of text, or the document end
    nearest `COMMIT_SECONDS` of work since the last one. Stored documents are compared by content hash
    unless this is a new build (neither resumed nor an add).

    Args:
        store: the index, open for writing; aborted on any error, finished otherwise.
        encoder: the index's encoder.
        reading: the documents to store.
        progress: called after each stored chunk with bytes done and bytes in total.
        started: ``time.perf_counter()`` when the caller began, for the summary's seconds.
        complete: a build: mark the index complete at the end (an add leaves the status alone).
        resumed: a build continuing an unfinished index.
        commit_on_the_way: commit along the way; without it everything is one commit at the end.
        finish: finish the store at the end; without it the caller finishes (or aborts) it, e.g.
            after every shard of a sharded index has been written.
        require_text: a build of no text at all is an error (a shard of a sharded build may be
            empty: the whole corpus is checked instead).
        report: called after each stored chunk with source bytes done, documents and tokens so far.

    Returns:
        What was stored.

    Raises:
        SourceError: a malformed source, or (for a build) no text at all.
    """
    documents = reading.documents()
    total_bytes = reading.total_bytes
    scan = reading.scan
    check_existing = resumed or not complete
    builder = RowBuilder(encoder, store, str(store.settings.get("passages", "none")))
    pacer = ChunkPacer(COMMIT_SECONDS)
    counts = builder.counts
    counts.update(unchanged=0, replaced=0)
    chunks = chunk_documents(
        new_or_changed(documents, store, counts) if check_existing else documents,
        encoder,
        bool(store.settings.get("skip_stopwords")),
        str(store.settings.get("sentence_splitting", "auto")),
        builder.next_document,
        counts,
        pacer,
    )
    last_commit, characters_since = time.monotonic(), 0
    chunk_started = last_commit
    # FAISS trains, adds and merges with the build's threads (searches always use one: see storage.threads)
    with faiss_threads(encoder.settings.threads):
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
                        characters_since >= COMMIT_CHARACTERS
                        or pacer.commit_due(time.monotonic() - last_commit)
                    )
                ):
                    store.commit()
                    last_commit, characters_since = time.monotonic(), 0
                _return_free_memory()
                now = time.monotonic()
                pacer.measured(chunk.characters, now - chunk_started)
                chunk_started = now
                if progress:
                    progress(chunk.done_bytes, total_bytes)
                if report:
                    report(chunk.done_bytes, counts["documents"], counts["tokens"])
            if complete and require_text and not counts["documents"] and not counts["unchanged"]:
                raise SourceError("the sources hold no text to index (all documents are empty)")
            if commit_on_the_way and characters_since:
                # the last documents are durable before finishing trains and merges (minutes, at times)
                store.commit()
            merges = store.finish(complete=complete) if finish else []
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
        device=encoder.device,
        threads=encoder.threads,
    )


def new_or_changed(
    documents: Iterator[Document], store: IndexStore, counts: dict[str, int]
) -> Iterator[Document]:
    """Documents to store: new ones, and changed ones marked to replace their stored version."""
    for document in documents:
        change = change_of(document, store)
        if change == "unchanged":
            counts["unchanged"] += 1
            continue
        if change == "changed":
            counts["replaced"] += 1
            document = dataclasses.replace(document, replaces=True)
        yield document


def change_of(document: Document, store: ReadableIndex) -> str:
    """``new``, ``changed`` or ``unchanged``: the document against its stored version, by content hash."""
    stored = store.document_hashes([document.doc_id]).get(document.doc_id)
    if stored is None:
        return "new"
    return "unchanged" if stored == document.content_hash else "changed"


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
