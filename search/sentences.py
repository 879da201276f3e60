"""Sentence and document search: the sentences and documents nearest to a text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from senseindex.errors import QueryError
from senseindex.indexer.storage import ReadableIndex
from senseindex.indexer.validation import (
    MAX_FILTER_FIELDS,
    filter_value_problem,
    shown_value,
    unicode_problem,
)
from senseindex.search.embedding import embed_query_sentence, embed_query_sentences
from senseindex.search.hits import DocumentHit, SentenceHit
from senseindex.search.ranking import check_k, dot, sentence_hits
from senseindex.search.state import IndexState

DOCUMENT_SCORINGS: Final = ("sentence", "passage", "combined")
# Final keeps its literal type, so it can be the default of a field typed with the scorings' Literal
DEFAULT_DOCUMENT_SCORING: Final = "combined"
# The passage share of "combined" document scoring, per passage mode: the best on BEIR SciFact's train
# claims (benchmarks/quality.py; docs/benchmarks.md, "Document ranking (BEIR SciFact)").
DEFAULT_PASSAGE_WEIGHTS = {"pooled": 0.25, "encoded": 0.5}


def search_sentences(
    state: IndexState,
    texts: Sequence[str],
    k: int,
    doc_ids: Sequence[str] | None,
    metadata: Mapping[str, Any] | None,
) -> list[list[SentenceHit]]:
    """Per text, the sentences most similar to it, optionally only those of some documents.

    Args:
        state: the open index.
        texts: the queries, embedded together in one model pass.
        k: number of hits per query.
        doc_ids: only sentences of these documents (unknown ids match nothing).
        metadata: only sentences of documents whose metadata has these values (a list: any of them).

    Returns:
        Per text, up to ``k`` hits, best first.

    Raises:
        QueryError: an empty text, a bad ``k`` or a malformed filter.
        ModelMismatch: the index was rebuilt under this encoder.
    """
    check_k(k)
    wanted = _metadata_filter(metadata)
    if doc_ids is not None and (isinstance(doc_ids, str) or not all(isinstance(d, str) for d in doc_ids)):
        raise QueryError("doc_ids must be a list of document ids (strings)")
    if not len(texts):
        return []
    vectors = embed_query_sentences(state, texts)
    with state.snapshot() as store:
        allowed = None
        if doc_ids is not None or wanted is not None:
            documents = [
                found["id"]
                for found in store.filter_documents(doc_ids, wanted)
                if all(_matches(found["metadata"].get(key), values) for key, values in (wanted or {}).items())
            ]
            allowed = store.rows_of_documents("sentences", documents)
        return [sentence_hits(store, *store.search("sentences", vector, k, allowed)) for vector in vectors]


def _metadata_filter(metadata: Mapping[str, Any] | None) -> dict[str, list[Any]] | None:
    """A metadata filter checked and put in one form: per field, the list of values accepted."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise QueryError("the metadata filter must be a mapping of field names to values")
    if len(metadata) > MAX_FILTER_FIELDS:
        raise QueryError(
            f"the metadata filter has {len(metadata):,} fields; at most {MAX_FILTER_FIELDS} are allowed"
        )
    wanted = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or '"' in key or "\\" in key or unicode_problem(key):
            raise QueryError(
                "metadata filter field names must be non-empty strings of valid Unicode without quotes "
                f"or backslashes, not {shown_value(key)}"
            )
        values = value if isinstance(value, list) else [value]
        if not values or not all(v is None or isinstance(v, (str, int, float, bool)) for v in values):
            raise QueryError(
                f"the metadata filter on {shown_value(key)} must be a string, number, boolean or null, "
                "or a non-empty list of them"
            )
        for one in values:
            problem = filter_value_problem(one)
            if problem:
                raise QueryError(
                    f"the metadata filter value {shown_value(one)} of {shown_value(key)} {problem}"
                )
        wanted[key] = values
    return wanted


def _matches(stored: Any, values: list[Any]) -> bool:
    """A metadata filter's test: the stored value equals one of the values.

    ``true`` is not ``1``; null matches a missing field.
    """
    return any(stored == value and isinstance(stored, bool) == isinstance(value, bool) for value in values)


def search_documents(
    state: IndexState, text: str, k: int, scoring: str, passage_weight: float | None
) -> list[DocumentHit]:
    """The documents that best match a text, scored exactly from all their stored vectors.

    Args:
        state: the open index.
        text: the query.
        k: number of documents.
        scoring: one of `DOCUMENT_SCORINGS`.
        passage_weight: the passage share of ``combined``, in [0, 1]; None takes the measured best
            for the index's passage mode.

    Returns:
        Up to ``k`` documents, best first.

    Raises:
        QueryError: a bad ``k``, an unknown scoring, or passage scoring on an index without passages.
        ModelMismatch: the index was rebuilt under this encoder.
    """
    check_k(k)
    if scoring not in DOCUMENT_SCORINGS:
        raise QueryError(f"unknown document scoring {scoring!r}; use one of {', '.join(DOCUMENT_SCORINGS)}")
    passage_mode = state.settings.passage_mode
    if passage_weight is None:
        passage_weight = DEFAULT_PASSAGE_WEIGHTS.get(passage_mode, 0.0)
    if not 0.0 <= passage_weight <= 1.0:
        raise QueryError(f"passage_weight must be within [0, 1], not {passage_weight}")
    has_passages = passage_mode != "none"
    if scoring != "sentence" and not has_passages:
        raise QueryError("this index has no passage vectors; use sentence scoring or rebuild it")
    vector = embed_query_sentence(state, text)
    with state.snapshot() as store:
        return _rank_documents(store, vector, k, scoring, passage_weight, has_passages)


def _rank_documents(
    store: ReadableIndex, vector: np.ndarray, k: int, scoring: str, passage_weight: float, has_passages: bool
) -> list[DocumentHit]:
    depth = max(100, 10 * k)
    sentence_ids, _ = store.search("sentences", vector, depth)
    candidates = set(store.documents_of("sentences", sentence_ids).values())
    if has_passages:
        passage_ids, _ = store.search("passages", vector, depth)
        candidates |= set(store.documents_of("passages", passage_ids).values())
    documents = np.asarray(sorted(candidates), dtype=np.int64)
    if not len(documents):
        return []
    sentence_best, sentence_score = _best_per_document(
        *store.vectors_of_documents("sentences", documents.tolist()), vector, documents
    )
    if has_passages:
        _, passage_score = _best_per_document(
            *store.vectors_of_documents("passages", documents.tolist()), vector, documents
        )
        # a document without a passage vector (none should exist) falls back to its sentence score
        passage_score = np.where(np.isfinite(passage_score), passage_score, sentence_score)
    else:
        passage_score = np.full(len(documents), np.nan, dtype=np.float32)
    if scoring == "sentence":
        scores = sentence_score
    elif scoring == "passage":
        scores = passage_score
    else:
        scores = passage_weight * passage_score + (1 - passage_weight) * sentence_score
    order = np.argsort(-scores, kind="stable")[:k]
    best_sentences = sentence_hits(store, sentence_best[order], sentence_score[order])
    document_rows = store.document_rows(documents[order])
    return [
        DocumentHit(
            score=float(scores[i]),
            doc_id=best.doc_id,
            sentence_score=best.score,
            passage_score=float(passage_score[i]) if has_passages else None,
            best_sentence=best,
            metadata=document_rows[int(documents[i])]["metadata"],
        )
        for i, best in zip(order.tolist(), best_sentences, strict=True)
    ]


def _best_per_document(
    ids: np.ndarray, owners: np.ndarray, vectors: np.ndarray, query: np.ndarray, documents: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per document (in the order of ``documents``): the id and score of its best-matching vector."""
    scores = dot(vectors, query)
    position = np.searchsorted(documents, owners)
    best_score = np.full(len(documents), -np.inf, dtype=scores.dtype)
    np.maximum.at(best_score, position, scores)
    best_id = np.full(len(documents), -1, dtype=np.int64)
    is_best = scores >= best_score[position]
    best_id[position[is_best]] = ids[is_best]
    return best_id, best_score
