"""Sense induction over an open index, and word search grouped by the induced senses.

The model pass and the clustering run outside the read lock: only reading the occurrences and
naming the senses hold it, so other threads' queries go on meanwhile. The clustering is checked
against the state's generation afterwards and run again if the index moved under it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Generic, TypeVar

import numpy as np

from senseindex.errors import QueryError, WordNotFound
from senseindex.indexer.storage import ReadableIndex
from senseindex.indexer.text import Span, lemmatize, split_words
from senseindex.search.embedding import embed_query_words
from senseindex.search.hits import LemmaHit, WordHit
from senseindex.search.ranking import check_k, word_hits
from senseindex.search.sense_slices import check_slicing, field_values, parse_ranges, slice_senses
from senseindex.search.senses import (
    MAX_FORCED_SENSES,
    Clustering,
    InducedSense,
    SenseGroup,
    WordSenses,
    cluster_senses,
)
from senseindex.search.state import IndexState
from senseindex.search.word_query import WordQuery
from senseindex.search.words import rank_occurrences, rank_other_lemmas

_ATTEMPTS = 3  # clusterings tried when the index keeps moving under them
T = TypeVar("T")


class _Occurrences(Generic[T]):
    """A word's occurrences read under one snapshot, with what else the caller read under it."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, sentence_vectors: np.ndarray, also: T) -> None:
        self.ids = ids
        self.vectors = vectors
        self.sentence_vectors = sentence_vectors
        self.also = also


def induce_senses(
    state: IndexState,
    word: str,
    senses: int | None,
    typical: int,
    related_words: int,
    by: str | None = None,
    bins: int | None = None,
    slices: str | Sequence[tuple[float, float]] | None = None,
) -> WordSenses:
    """The senses a word is used in across the index (see `SenseIndex.induce_senses`).

    Args:
        state: the open index.
        word: one word.
        senses: force this many senses instead of choosing.
        typical: occurrences shown per sense.
        related_words: other words listed per sense.
        by: a metadata field: also the share of each sense per slice of it.
        bins: slice a numeric field into this many equal-width bins.
        slices: slice a numeric field into these ranges (``"1810-1860,1960-2010"`` or pairs).

    Returns:
        The senses, most frequent first.

    Raises:
        WordNotFound: the index does not hold the word.
        QueryError: not one word, a bad number, or a slicing that cannot be made.
    """
    form = _check_request(word, senses, typical, related_words)
    check_slicing(by, bins, slices)
    ranges = parse_ranges(slices) if slices is not None else None

    def values(store: ReadableIndex, ids: np.ndarray) -> dict[int, Any] | None:
        return field_values(store, ids, by.strip()) if by is not None else None

    word_senses, occurrences = _induce(state, form, senses, typical, related_words, values)
    found = occurrences.also
    if by is None or found is None:
        return word_senses
    sliced = slice_senses(
        by.strip(),
        word_senses.occurrence_ids,
        word_senses.assignments,
        len(word_senses.senses),
        found,
        bins,
        ranges,
    )
    return replace(word_senses, by=sliced)


def induce_and_read(
    state: IndexState,
    word: str,
    typical: int,
    related_words: int,
    read_also: Callable[[ReadableIndex, np.ndarray], T],
) -> tuple[WordSenses, np.ndarray, T]:
    """`induce_senses` (the number chosen), with what ``read_also`` reads under the same snapshot.

    Returns:
        ``(senses, vectors, also)``: the occurrences' ``(n, word_dimension)`` float32 vectors in the
        order of ``senses.occurrence_ids``, and what ``read_also(store, those ids)`` returned.

    Raises:
        WordNotFound: the index does not hold the word.
        QueryError: not one word.
    """
    form = _check_request(word, None, typical, related_words)
    word_senses, occurrences = _induce(state, form, None, typical, related_words, read_also)
    return word_senses, occurrences.vectors, occurrences.also


def search_word_by_sense(
    state: IndexState, query: WordQuery, k: int, senses: int | None
) -> tuple[WordSenses, int, list[SenseGroup]]:
    """Same-word hits grouped under the word's induced senses (see `SenseIndex.search_word_by_sense`).

    Args:
        state: the open index.
        query: the parsed query.
        k: number of hits, over all groups.
        senses: force this many induced senses.

    Returns:
        ``(senses, query_sense, groups)``.

    Raises:
        QueryError: a bad number, or a target the tokenizer gives no token.
        WordNotFound: the index does not hold the word.
    """
    check_k(k)
    form = _check_request(query.form, senses, 0, 8)  # before the model pass: bad input costs none
    vectors = embed_query_words(state, [query])  # the model pass, outside the lock

    def same_word_hits(store: ReadableIndex, _: np.ndarray) -> list[WordHit]:
        return rank_occurrences(store, [query], vectors, k, exact_form=False)[0]

    # the hits and the senses from one state of the index
    word_senses, occurrences = _induce(state, form, senses, 0, 8, same_word_hits)
    hits = occurrences.also
    sense_of = dict(zip(word_senses.occurrence_ids.tolist(), word_senses.assignments.tolist(), strict=True))
    query_sense = sense_of.get(hits[0].word_id, 1) if hits else 1
    grouped: dict[int, list[WordHit]] = {}
    for hit in hits:
        grouped.setdefault(sense_of.get(hit.word_id, 0), []).append(hit)
    order = sorted(grouped, key=lambda number: (number != query_sense, -grouped[number][0].score))
    return word_senses, query_sense, [SenseGroup(number, tuple(grouped[number])) for number in order]


def _check_request(word: str, senses: int | None, typical: int, related_words: int) -> str:
    """The word of a sense request, its numbers checked."""
    form = word.strip() if isinstance(word, str) else ""
    found = split_words(form, Span(0, len(form)))
    if len(found) != 1 or found[0].form != form:
        raise QueryError(f"give one word, not {word!r}")
    for name, value, least in (
        ("senses", senses, 1),
        ("typical", typical, 0),
        ("related_words", related_words, 0),
    ):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            raise QueryError(f"{name} must be a whole number of at least {least}, not {value!r}")
    if senses is not None and senses > MAX_FORCED_SENSES:
        raise QueryError(f"senses must be at most {MAX_FORCED_SENSES}, not {senses}")
    return form


def _induce(
    state: IndexState,
    form: str,
    senses: int | None,
    typical: int,
    related_words: int,
    read_also: Callable[[ReadableIndex, np.ndarray], T],
) -> tuple[WordSenses, _Occurrences[T]]:
    """Read the occurrences under a snapshot, cluster them outside it, and name the senses.

    The occurrences (and ``read_also``, given the store and the occurrences' ids) are read under a
    snapshot and the senses named under a snapshot of the same state; all again if the index moved
    meanwhile. The occurrences come back with the senses (their ids are ``occurrence_ids``).
    """
    lemma = lemmatize(form)
    for _ in range(_ATTEMPTS):
        with state.snapshot() as store:
            generation = state.generation
            occurrences = _read_occurrences(store, form, lemma, senses, read_also)
        # the clustering needs no index: other queries go on meanwhile
        clustering = cluster_senses(
            occurrences.vectors, senses, sentence_vectors=occurrences.sentence_vectors
        )
        with state.snapshot() as store:
            if state.generation == generation:
                named = _name_senses(store, form, lemma, occurrences, clustering, typical, related_words)
                return named, occurrences
    raise QueryError(f"the index kept changing while the senses of {form!r} were induced; try again")


def _read_occurrences(
    store: ReadableIndex,
    form: str,
    lemma: str,
    senses: int | None,
    read_also: Callable[[ReadableIndex, np.ndarray], T],
) -> _Occurrences[T]:
    ids, _ = store.word_ids_for_lemma(lemma)
    if not len(ids):
        raise WordNotFound(f"{form!r} does not occur in the index")
    if senses is not None and senses > len(ids):
        raise QueryError(f"{form!r} occurs {len(ids)} times: it cannot have {senses} senses")
    vectors, sentence_vectors = store.word_vectors(ids), store.sentence_vectors_of_words(ids)
    return _Occurrences(ids, vectors, sentence_vectors, read_also(store, ids))


def _name_senses(
    store: ReadableIndex,
    form: str,
    lemma: str,
    occurrences: _Occurrences[T],
    clustering: Clustering,
    typical: int,
    related_words: int,
) -> WordSenses:
    """The induced senses with their typical occurrences and related words (under a snapshot)."""
    ids, vectors = occurrences.ids, occurrences.vectors
    related = _distinct_related_words(store, clustering.centres, lemma, related_words)
    induced = []
    for number, centre in enumerate(clustering.centres, start=1):
        members = np.flatnonzero(clustering.labels == number - 1)
        closeness = vectors[members] @ centre
        order = np.argsort(-closeness, kind="stable")[:typical]
        induced.append(
            InducedSense(
                number=number,
                size=len(members),
                share=round(len(members) / len(ids), 4),
                typical=tuple(word_hits(store, ids[members[order]], closeness[order])) if typical else (),
                related_words=tuple(related[number - 1]),
                centre=centre,
            )
        )
    return WordSenses(
        word=form,
        lemma=lemma,
        occurrences=len(ids),
        clustered=clustering.clustered,
        chosen_by=clustering.chosen_by,
        silhouettes=clustering.silhouettes,
        baseline_silhouettes=clustering.baseline_silhouettes,
        senses=tuple(induced),
        occurrence_ids=ids,
        assignments=clustering.labels + 1,
        coordinates=clustering.coordinates,
    )


def _distinct_related_words(
    store: ReadableIndex, centres: np.ndarray, own_lemma: str, count: int
) -> list[list[LemmaHit]]:
    """Per sense centre, the other words nearest to it.

    Each word is kept only under the sense it is nearest to (so the senses' lists tell them apart).
    """
    if not count:
        return [[] for _ in centres]
    candidates = [rank_other_lemmas(store, centre, own_lemma, 3 * count) for centre in centres]
    best_sense: dict[str, tuple[float, int]] = {}
    for number, hits in enumerate(candidates):
        for hit in hits:
            if hit.lemma not in best_sense or hit.score > best_sense[hit.lemma][0]:
                best_sense[hit.lemma] = (hit.score, number)
    return [
        [hit for hit in hits if best_sense[hit.lemma][1] == number][:count]
        for number, hits in enumerate(candidates)
    ]
