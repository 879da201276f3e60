"""What every query shares: the bound on ``k``, scoring without BLAS, and hits read from stored rows."""

from __future__ import annotations

import numpy as np

from senseindex.errors import QueryError
from senseindex.indexer.storage import ReadableIndex
from senseindex.search.hits import SentenceHit, WordHit

MAX_K = 10_000


def check_k(k: int) -> None:
    """Refuse a number of hits that is not a whole number from 1 to `MAX_K`.

    Raises:
        QueryError: a bad ``k``.
    """
    if not isinstance(k, int) or k < 1 or k > MAX_K:
        raise QueryError(f"k must be a whole number from 1 to {MAX_K}, not {k!r}")


def dot(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``vectors @ query`` without BLAS.

    A query scores a few thousand vectors at most, and BLAS's own worker threads, left spinning after the
    call, slowed the next query's model pass (same-word p50 for a frequent word: 36-65 ms with BLAS, 13 ms
    without, on 2 cores).

    Args:
        vectors: ``(n, dimension)`` float32.
        query: ``(dimension,)`` float32.

    Returns:
        ``(n,)`` float32 scores.
    """
    return np.einsum("ij,j->i", vectors, query)


def word_hits(store: ReadableIndex, ids: np.ndarray, scores: np.ndarray) -> list[WordHit]:
    """Word hits for stored word ids (read under a snapshot).

    Args:
        store: the store of the snapshot held.
        ids: ``(n,)`` int64 word ids.
        scores: ``(n,)`` float32 scores, one per id.

    Returns:
        The hits, in the order of ``ids``.
    """
    rows = store.word_rows(ids)
    return [
        WordHit(
            score=float(score),
            doc_id=rows[i]["doc_id"],
            word_id=int(i),
            form=rows[i]["form"],
            lemma=rows[i]["lemma"],
            start=rows[i]["start"],
            end=rows[i]["end"],
            sentence_id=rows[i]["sentence_id"],
            sentence_start=rows[i]["sentence_start"],
            sentence=rows[i]["sentence_text"],
            metadata=rows[i]["metadata"],
        )
        for i, score in zip(ids.tolist(), scores.tolist(), strict=True)
    ]


def sentence_hits(store: ReadableIndex, ids: np.ndarray, scores: np.ndarray) -> list[SentenceHit]:
    """Sentence hits for stored sentence ids (read under a snapshot).

    Args:
        store: the store of the snapshot held.
        ids: ``(n,)`` int64 sentence ids.
        scores: ``(n,)`` float32 scores, one per id.

    Returns:
        The hits, in the order of ``ids``.
    """
    rows = store.sentence_rows(ids)
    return [
        SentenceHit(
            score=float(score),
            doc_id=rows[i]["doc_id"],
            sentence_id=int(i),
            start=rows[i]["start"],
            end=rows[i]["end"],
            text=rows[i]["text"],
            metadata=rows[i]["metadata"],
        )
        for i, score in zip(ids.tolist(), scores.tolist(), strict=True)
    ]
