"""Writes through an open index: documents added or deleted in one commit, then shown to its queries."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from senseindex.errors import SourceError
from senseindex.indexer.pipeline import BuildSummary, DeleteSummary, add_document_list, delete_documents
from senseindex.indexer.sources import Document
from senseindex.indexer.validation import document_id_problem, metadata_problem, shown_value, text_problem
from senseindex.search.state import IndexState


def add(
    state: IndexState,
    documents: Iterable[Document | Mapping[str, Any]],
    progress: Callable[[int, int | None], None] | None,
) -> BuildSummary:
    """Add or replace documents with the index's encoder, in one commit, then show them to queries.

    Args:
        state: the open index.
        documents: documents or mappings ``{"id", "text", "metadata"?}``; ids must be unique.
        progress: called after each stored chunk with characters done and in total.

    Returns:
        What was stored.

    Raises:
        SourceError: a malformed document or a repeated id (nothing is written then).
        IndexBusy: another process is writing to the index.
        ModelMismatch: the index was rebuilt with another model since it was opened.
    """
    given = _documents_of(documents)
    with state.writing() as store:
        state.check_current()
        summary = add_document_list(given, store.folder, state.encoder, state.encoder_settings, progress)
        state.reload()
    return summary


def delete(state: IndexState, doc_ids: Sequence[str], missing_ok: bool = False) -> DeleteSummary:
    """Delete documents in one commit, then hide them from queries.

    Args:
        state: the open index.
        doc_ids: ids of stored documents.
        missing_ok: pass over ids that are not in the index instead of refusing the delete.

    Returns:
        What was deleted.

    Raises:
        DocumentNotFound: without ``missing_ok``, an id is not in the index (nothing is deleted then).
        IndexBusy: another process is writing to the index.
    """
    with state.writing() as store:
        summary = delete_documents(store.folder, doc_ids, missing_ok)
        state.reload()
    return summary


def _documents_of(documents: Iterable[Document | Mapping[str, Any]]) -> list[Document]:
    """Documents given to `SenseIndex.add_documents`, checked before anything is written."""
    result: list[Document] = []
    seen: set[str] = set()
    for position, given in enumerate(documents):
        if isinstance(given, Document):
            document = given
        elif isinstance(given, Mapping):
            unknown = set(given) - {"id", "text", "metadata"}
            if unknown:
                raise SourceError(f"document {position}: unknown field {sorted(unknown)[0]!r}")
            document = Document(
                doc_id=given.get("id"),  # type: ignore[arg-type]  # checked just below
                text=given.get("text"),  # type: ignore[arg-type]
                source="api",
                metadata=given.get("metadata") or {},
            )
        else:
            raise SourceError(f"document {position} is not a document or a mapping")
        if not isinstance(document.doc_id, str) or not document.doc_id.strip():
            raise SourceError(f"document {position} has no id (a non-empty string)")
        if not isinstance(document.text, str):
            raise SourceError(f"document {document.doc_id!r} has no text (a string)")
        problem = (
            document_id_problem(document.doc_id)
            or text_problem(document.text, "the text")
            or metadata_problem(document.metadata)
        )
        if problem:
            raise SourceError(f"document {position} ({shown_value(document.doc_id)}): {problem}")
        if document.doc_id in seen:
            raise SourceError(f"document id {document.doc_id!r} is given twice")
        seen.add(document.doc_id)
        result.append(dataclasses.replace(document, size=len(document.text)))
    if not result:
        raise SourceError("no documents given")
    return result
