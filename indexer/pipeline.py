"""The build pipeline's entry points: build, add, plan, delete and check an index.

The work is split over modules, all re-exported here:

- `pipeline_reports`: what the entry points return (summaries, plans,
  check reports);
- `pipeline_chunks`: documents to sentences, words and tokenised chunks;
- `pipeline_rows`: embedded chunks to numbered rows and vectors;
- `pipeline_build`: the streaming build and add, with their commits;
- this module: the entry points that do not run the model (plan, delete, check).

None of these modules imports the encoder (and with it torch) before a model is loaded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from senseindex.errors import DocumentNotFound, SenseIndexError
from senseindex.indexer.encoder import Encoder, EncoderSettings, check_device, load_index_encoder
from senseindex.indexer.faults import storage_faults
from senseindex.indexer.pipeline_build import (
    COMMIT_CHARACTERS,
    COMMIT_SECONDS,
    ENCODER_SETTINGS,
    PASSAGE_MODES,
    SourceReading,
    build_index,
    change_of,
    index_replaced,
    index_settings,
    write_documents,
)
from senseindex.indexer.pipeline_build import add_document_list as add_document_list_to_one
from senseindex.indexer.pipeline_reports import (
    BuildProgress,
    BuildSummary,
    ChangePlan,
    CheckReport,
    DeleteSummary,
    ProgressCallback,
)
from senseindex.indexer.pipeline_shard_writes import (
    add_list_to_shards,
    add_to_shards,
    check_shards,
    delete_from_shards,
    sharded_manifest,
)
from senseindex.indexer.pipeline_verify import DEEP_SAMPLE, compact_index, deep_problems
from senseindex.indexer.sources import Document
from senseindex.indexer.storage import IndexStore, faiss_threads, open_for_reading
from senseindex.indexer.validation import checked_delete_ids, not_found_message

__all__ = [
    "COMMIT_CHARACTERS",
    "COMMIT_SECONDS",
    "DEEP_SAMPLE",
    "ENCODER_SETTINGS",
    "PASSAGE_MODES",
    "BuildProgress",
    "BuildSummary",
    "ChangePlan",
    "CheckReport",
    "DeleteSummary",
    "ProgressCallback",
    "add_document_list",
    "add_documents",
    "build_index",
    "check_index",
    "compact_index",
    "delete_documents",
    "index_replaced",
    "index_settings",
    "plan_changes",
]


@storage_faults("reading")
def plan_changes(
    sources: Sequence[str], index_dir: str | Path, stdin: TextIO | None = None, skip_bad: bool = False
) -> ChangePlan:
    """What `add_documents` would change (``--dry-run``).

    Reads the sources and compares them with the index by content hash, without loading the model or writing
    anything.

    Args:
        sources: files, folders or ``-``, as for `build_index`.
        index_dir: the index folder.
        stdin: the stream ``-`` reads.
        skip_bad: skip malformed JSONL lines and binary files with a warning.

    Returns:
        The ids of new, changed and unchanged documents.

    Raises:
        IndexNotFound, SchemaMismatch, IndexCorrupted: no usable index in ``index_dir``.
        SourceError: a missing, unreadable or malformed source.
    """
    reading = SourceReading.read(sources, stdin, skip_bad)
    store = open_for_reading(Path(index_dir))
    found: dict[str, list[str]] = {"new": [], "changed": [], "unchanged": []}
    try:
        for document in reading.documents():
            found[change_of(document, store)].append(document.doc_id)
    finally:
        store.close()
    return ChangePlan(**found, skipped_files=reading.scan.skipped_files, warnings=reading.scan.warnings)


@storage_faults("writing")
def delete_documents(
    index_dir: str | Path, doc_ids: Sequence[str], missing_ok: bool = False
) -> DeleteSummary:
    """Delete documents and all their sentences, words, passages and vectors, in one commit.

    Args:
        index_dir: the index folder.
        doc_ids: ids of stored documents.
        missing_ok: ids not in the index are passed over (listed in the summary's ``missing``)
            instead of refused, so that running a delete again after it committed succeeds.

    Returns:
        What was deleted.

    Raises:
        DocumentNotFound: without ``missing_ok``, an id is not in the index (nothing is deleted then).
        SourceError: no id, or an id that is not valid Unicode text (no document can have it).
        IndexNotFound, SchemaMismatch, IndexCorrupted: no usable index in ``index_dir``.
        IndexBusy: another process is writing to it.
        StorageError: the disk or the operating system refused the index's files.
    """
    unique = checked_delete_ids(doc_ids)
    manifest = sharded_manifest(index_dir)
    if manifest is not None:
        return delete_from_shards(Path(index_dir), manifest, unique, missing_ok)
    store = IndexStore.open_for_writing(Path(index_dir))
    try:
        known = store.document_hashes(unique)
        unknown = [doc_id for doc_id in unique if doc_id not in known]
        if unknown and not missing_ok:
            raise DocumentNotFound(not_found_message(unknown, index_dir))
        present = [doc_id for doc_id in unique if doc_id in known]
        rows = store.delete_documents(present)
        with faiss_threads(None):  # a merge of shards is build work: FAISS's default threads
            merges = store.finish(complete=False)
    except BaseException:
        store.abort()
        raise
    return DeleteSummary(present, rows, merges, missing=unknown)


@storage_faults("reading")
def check_index(
    index_dir: str | Path,
    deep: bool = False,
    sample: int = DEEP_SAMPLE,
    backend: str = "auto",
    model: str | None = None,
) -> CheckReport:
    """Verify an index without changing it.

    Checks the settings queries need, SQLite's integrity, every vector file readable, holding the vectors
    its record says and the bytes its recorded checksum says, every stored vector finite and of unit length,
    every row with its vector, every span slicing its document to its text, and no half-stored document.
    With ``deep``, also re-embeds a sample of sentences and compares them with their stored vectors.

    Args:
        index_dir: the index folder.
        deep: also compare stored sentence vectors with the model's (loads the model).
        sample: sentences re-embedded by ``deep`` (in each shard of a sharded index).
        backend: what runs the model for ``deep``.
        model: a model folder to use instead of the stored one, for ``deep``.

    Returns:
        The report.

    Raises:
        IndexNotFound: no index in ``index_dir``.
        SchemaMismatch: an index of another format version.
        IndexCorrupted: the database cannot be opened at all.
        ModelMismatch, ModelLoadError: ``deep`` cannot load the index's model.
    """
    manifest = sharded_manifest(index_dir)
    if manifest is not None:
        return check_shards(Path(index_dir), manifest, deep, sample, backend, model)
    store = IndexStore.open(Path(index_dir))
    try:
        with contextlib.suppress(SenseIndexError):
            store.open_vectors()  # on the newest snapshot whose files are all there, if any
        problems, notes = store.check()
        if deep and not problems:
            problems += deep_problems(store, sample, backend, model)
        elif deep:
            notes.append("the sample was not re-embedded: the problems above come first")
        try:
            counts = store.counts()
        except SenseIndexError:
            counts = {}
    finally:
        store.close()
    return CheckReport(str(index_dir), problems, notes, counts)


@storage_faults("writing")
def add_documents(
    sources: Sequence[str],
    index_dir: str | Path,
    model: str | None = None,
    backend: str = "auto",
    progress: ProgressCallback | None = None,
    stdin: TextIO | None = None,
    skip_bad: bool = False,
    threads: int | None = None,
    device: str = "auto",
) -> BuildSummary:
    """Add documents to an existing index, with the settings stored in it.

    A document's identity is its ``id`` (JSONL) or its path relative to the folder given as source. A
    document stored with the same content is left alone; one stored with other content is replaced
    (its old sentences, words and vectors leave every query in the same commit that adds the new
    ones). In a sharded index each document goes to the shard its id hashes to.

    Args:
        sources: files, folders or ``-``, as for `build_index`.
        index_dir: the index folder.
        model: a copy of the index's model to use instead of the stored folder (same weights).
        backend: what runs the model (see `EncoderSettings`).
        progress: called after each stored chunk with bytes done and bytes in total.
        stdin: the stream ``-`` reads.
        skip_bad: skip malformed JSONL lines and binary files with a warning.
        threads: CPU threads of the model and of FAISS's training, adding and merging (see
            `EncoderSettings`); None keeps the libraries' defaults.
        device: where the model runs: ``auto``, ``cpu`` or ``cuda``.

    Returns:
        What was stored (``documents`` counts new and replaced ones).

    Raises:
        IndexNotFound, SchemaMismatch, IndexCorrupted: no usable index in ``index_dir``.
        IndexBusy: another process is writing to it.
        ModelMismatch, ModelLoadError: the model is not the index's or cannot be loaded.
        SourceError: a missing, unreadable or malformed source.
        SettingsError: a bad thread count or device (refused before anything is read).
    """
    started = time.perf_counter()
    EncoderSettings(backend=backend, device=device, threads=threads).validate()
    check_device(device, backend)
    reading = SourceReading.read(sources, stdin, skip_bad)
    manifest = sharded_manifest(index_dir)
    if manifest is not None:
        return add_to_shards(Path(index_dir), manifest, reading, model, (backend, device, threads), progress)
    store = IndexStore.open_for_writing(Path(index_dir))
    try:
        encoder = load_index_encoder(store.settings, model, backend, device, threads)
    except BaseException:
        store.close()
        raise
    return write_documents(store, encoder, reading, progress, started, complete=False, resumed=False)


@storage_faults("writing")
def add_document_list(
    documents: list[Document],
    index_dir: str | Path,
    encoder: Encoder,
    encoder_settings: dict[str, Any],
    progress: ProgressCallback | None = None,
) -> BuildSummary:
    """`add_documents` for documents already in memory, with an encoder already loaded, in one commit.

    All of them are stored, or (on any error) none; in a sharded index each shard commits its own
    documents once all of them are written.

    Args:
        documents: the documents, with unique ids.
        index_dir: the index folder.
        encoder: the index's encoder (from `load_index_encoder`).
        encoder_settings: the index settings the encoder was loaded for (`ENCODER_SETTINGS`);
            an index rebuilt since with other ones is refused.
        progress: called after each stored chunk with characters done and in total.

    Returns:
        What was stored.

    Raises:
        IndexNotFound, SchemaMismatch, IndexCorrupted: no usable index in ``index_dir``.
        IndexBusy: another process is writing to it.
        ModelMismatch: the index now holds another model's vectors, or other settings.
    """
    manifest = sharded_manifest(index_dir)
    if manifest is not None:
        return add_list_to_shards(Path(index_dir), manifest, documents, encoder, encoder_settings, progress)
    return add_document_list_to_one(documents, index_dir, encoder, encoder_settings, progress)
