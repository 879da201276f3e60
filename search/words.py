"""Word search: occurrences of the same word in a matching sense, and other words used in that sense."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from senseindex.indexer.stopwords import is_stopword
from senseindex.indexer.storage import ReadableIndex
from senseindex.indexer.text import lemmatize
from senseindex.search.embedding import embed_query_words
from senseindex.search.hits import LemmaHit, WordHit
from senseindex.search.ranking import check_k, dot, word_hits
from senseindex.search.state import IndexState
from senseindex.search.word_query import WordQuery


def search_same_word(
    state: IndexState, queries: Sequence[WordQuery], k: int, exact_form: bool
) -> list[list[WordHit]]:
    """Per query, the occurrences of its target's lemma, nearest in sense first.

    Args:
        state: the open index.
        queries: parsed queries, embedded together in one model pass.
        k: hits per query.
        exact_form: only occurrences with each target's surface form (case-insensitive).

    Returns:
        Per query, up to ``k`` hits, best first.

    Raises:
        QueryError: a bad ``k``, or a target the tokenizer gives no token.
        ModelMismatch: the index was rebuilt under this encoder.
    """
    check_k(k)
    vectors = embed_query_words(state, queries)
    with state.snapshot() as store:
        return rank_occurrences(store, queries, vectors, k, exact_form)


def rank_occurrences(
    store: ReadableIndex, queries: Sequence[WordQuery], vectors: np.ndarray, k: int, exact_form: bool
) -> list[list[WordHit]]:
    """Per query, its target lemma's occurrences ranked by cosine to its vector (under a snapshot).

    Args:
        store: the store of the snapshot held.
        queries: parsed queries.
        vectors: ``(len(queries), word_dimension)`` float32 target vectors.
        k: hits per query.
        exact_form: only occurrences with each target's surface form.

    Returns:
        Per query, up to ``k`` hits, best first.
    """
    occurrences: dict[str, tuple[np.ndarray, list[str], np.ndarray]] = {}
    results: list[list[WordHit]] = []
    for query, vector in zip(queries, vectors, strict=True):
        lemma = lemmatize(query.form)
        if lemma not in occurrences:  # queries on the same word share one read of its vectors
            ids, forms = store.word_ids_for_lemma(lemma)
            occurrences[lemma] = (ids, forms, store.word_vectors(ids))
        ids, forms, stored = occurrences[lemma]
        if exact_form and len(ids):
            wanted = query.form.lower()
            keep = np.asarray([form.lower() == wanted for form in forms], dtype=bool)
            ids, stored = ids[keep], stored[keep]
        if not len(ids):
            results.append([])
            continue
        scores = dot(stored, vector)
        order = np.argsort(-scores, kind="stable")[:k]
        results.append(word_hits(store, ids[order], scores[order]))
    return results


def search_other_words(state: IndexState, query: WordQuery, k: int) -> list[LemmaHit]:
    """Other words used in the query target's sense, by lemma.

    Args:
        state: the open index.
        query: the parsed query.
        k: number of lemmas.

    Returns:
        Up to ``k`` lemmas, each with its best-matching occurrence, best first.

    Raises:
        QueryError: a bad ``k``, or a target the tokenizer gives no token.
        ModelMismatch: the index was rebuilt under this encoder.
    """
    check_k(k)
    vector = embed_query_words(state, [query])[0]
    with state.snapshot() as store:
        return rank_other_lemmas(store, vector, lemmatize(query.form), k)


def rank_other_lemmas(store: ReadableIndex, vector: np.ndarray, own_lemma: str, k: int) -> list[LemmaHit]:
    """The lemmas other than ``own_lemma`` whose occurrences lie nearest to a vector (under a snapshot).

    Searches in rounds of the nearest ``max(200, 50 k)`` occurrences, leaving out the query's own
    lemma and function words. Each round also leaves out every occurrence of the lemmas found so
    far, so it finds only new lemmas, and those score no higher than the ones found before: the
    lemmas come out in the order of their best occurrences, as one exhaustive search would rank them.

    Args:
        store: the store of the snapshot held.
        vector: ``(word_dimension,)`` float32.
        own_lemma: the lemma left out.
        k: number of lemmas.

    Returns:
        Up to ``k`` lemmas (stop-words left out), each with its nearest occurrence and the number of
        its occurrences among the hits of the round that found it, best first.
    """
    depth = max(200, 50 * k)
    # The query's own word fills the nearest occurrences of its context (a frequent word's
    # thousands of them), function words and a few frequent neighbours the next ones: all are left
    # out in the search itself, through the selector that skips deleted rows.
    excluded = store.word_ids_of_lemmas([own_lemma])
    found: dict[str, list[tuple[int, float]]] = {}
    while True:
        ids, scores = store.search("words", vector, depth, excluded=excluded, function_words=False)
        if not len(ids):
            break  # every occurrence is left out or searched
        lemmas = store.word_lemmas(ids.tolist())
        seen: dict[str, list[tuple[int, float]]] = {}
        for word_id, score in zip(ids.tolist(), scores.tolist(), strict=True):
            seen.setdefault(lemmas[word_id][0], []).append((word_id, score))
        for lemma, hits in seen.items():
            # A function word's form under a content lemma (kept in the search) is never "another
            # word for" the target.
            if lemma != own_lemma and not is_stopword(lemmas[hits[0][0]][1].lower()):
                found[lemma] = hits
        if len(found) >= k:
            break
        # only now, with another round to search, are the occurrences of this round's lemmas read
        seen_occurrences = store.word_ids_of_lemmas(list(seen))
        if not len(seen_occurrences):
            break  # hits whose rows are gone (never, under one snapshot): nothing more to leave out
        excluded = np.concatenate([excluded, seen_occurrences])
        if len(ids) < depth:
            # an inverted file returns fewer than asked when the lists it probes run out of vectors
            # not left out: asking for more probes more lists
            depth *= 4
    ranked = sorted(found.items(), key=lambda item: -item[1][0][1])[:k]
    best = word_hits(
        store,
        np.asarray([hits[0][0] for _, hits in ranked], dtype=np.int64),
        np.asarray([hits[0][1] for _, hits in ranked], dtype=np.float32),
    )
    return [
        LemmaHit(lemma=lemma, score=hit.score, occurrences=len(hits), best=hit)
        for (lemma, hits), hit in zip(ranked, best, strict=True)
    ]
