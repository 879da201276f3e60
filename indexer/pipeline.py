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
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from senseindex.errors import DocumentNotFound, SenseIndexError, SourceError
from senseindex.indexer.pipeline_build import (
    COMMIT_CHARACTERS,
    COMMIT_SECONDS,
    ENCODER_SETTINGS,
    PASSAGE_MODES,
    SourceReading,
    add_document_list,
    add_documents,
    build_index,
    change_of,
    index_replaced,
    index_settings,
)
from senseindex.indexer.pipeline_reports import (
    BuildProgress,
    BuildSummary,
    ChangePlan,
    CheckReport,
    DeleteSummary,
    ProgressCallback,
)
from senseindex.indexer.storage import IndexStore

__all__ = [
    "COMMIT_CHARACTERS",
    "COMMIT_SECONDS",
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
    "delete_documents",
    "index_replaced",
    "index_settings",
    "plan_changes",
]


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
    store = IndexStore.open(Path(index_dir))
    found: dict[str, list[str]] = {"new": [], "changed": [], "unchanged": []}
    try:
        for document in reading.documents():
            found[change_of(document, store)].append(document.doc_id)
    finally:
        store.close()
    return ChangePlan(**found, skipped_files=reading.scan.skipped_files, warnings=reading.scan.warnings)


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


def check_index(index_dir: str | Path) -> CheckReport:
    """Verify an index without changing it.

    Checks SQLite's integrity, every vector file readable and holding the vectors its record says, every row
    with its vector, every span slicing its document to its text, and no half-stored document.

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
