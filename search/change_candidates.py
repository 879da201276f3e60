"""Every word two slices share, measured at once: ``senseindex change`` without words.

Inducing a word's senses takes a few hundredths of a second or more: minutes for the thousands of
words a corpus holds. `apd` and `centroid` need no senses, only each slice's sum of the word's vectors:

1. under one snapshot, the documents whose field value is in a slice; then the ids of their word
   occurrences by lemma (SQLite, one comma-joined list per lemma), some documents at a time;
2. the candidates: lemmas with at least ``min_count`` occurrences in each slice, made of letters
   (inner apostrophes allowed) and not function words (the stop-word list of ``--skip-stopwords``);
3. their vectors, read from FAISS a chunk at a time, and summed per lemma and slice;
4. `slice_measures` of every candidate from those sums, all at once.

The lock is held for one chunk of documents or of vectors at a time, and queries in progress go
first between chunks; all is read again if the index moves meanwhile. `change.word_changes` then
runs the full comparison (senses gained and lost) for the most changed only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from senseindex.errors import QueryError, WordNotFound
from senseindex.indexer.stopwords import is_stopword
from senseindex.indexer.storage import ReadableIndex
from senseindex.indexer.text import lemmatize
from senseindex.search.state import IndexState

CHUNK = 32_768
"""Occurrence vectors read and summed at a time (50 MB at 384 dimensions)."""
DOCUMENTS = 500
"""Documents whose words are read at a time, under one snapshot."""
_ATTEMPTS = 3  # reads tried when the index keeps moving under them


class Slice(Protocol):
    """A slice of the corpus (`change.SliceTest`): its text, and whether a field value is in it."""

    text: str

    def holds(self, value: Any) -> bool:
        """Whether ``value`` is in the slice."""


@dataclass(frozen=True)
class Candidates:
    """The words with enough occurrences in both slices, and how much their use differs.

    Attributes:
        lemmas: the candidates' lemmas, ``m`` of them, in alphabetical order.
        counts: ``(m, 2)`` int64 occurrences in the first and in the second slice.
        apd: ``(m,)`` float64, as `WordChange.apd` (unrounded).
        centroid: ``(m,)`` float64, as `WordChange.centroid` (unrounded).
    """

    lemmas: tuple[str, ...]
    counts: np.ndarray
    apd: np.ndarray
    centroid: np.ndarray

    def ranked(self, measure: str) -> list[str]:
        """The lemmas by ``apd`` or ``centroid``, largest first (ties alphabetically)."""
        scores = self.apd if measure == "apd" else self.centroid
        return [self.lemmas[n] for n in np.argsort(-scores, kind="stable")]


def slice_measures(
    sum_a: np.ndarray, count_a: np.ndarray, sum_b: np.ndarray, count_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`apd` and `centroid` of words from the sums of their unit vectors in two slices.

    The mean cosine between two different vectors of a set of ``n`` unit vectors whose sum is ``s``
    is ``(s·s − n) / (n(n − 1))`` (every pair counted twice, less each vector with itself), and the
    mean cosine between a vector of one set and one of the other is the dot product of their means:
    no pair is formed.

    Args:
        sum_a: ``(m, dimension)`` float64 sum of each word's vectors in the first slice.
        count_a: ``(m,)`` int64 number of those vectors, each at least 1.
        sum_b: ``(m, dimension)`` float64, the same in the second slice.
        count_b: ``(m,)`` int64.

    Returns:
        ``(apd, centroid)``, each ``(m,)`` float64: the mean cross-slice cosine distance less the mean
        within the slices (at least 0), and the cosine distance between the two means.
    """
    n_a, n_b = count_a.astype(np.float64), count_b.astype(np.float64)
    mean_a, mean_b = sum_a / n_a[:, None], sum_b / n_b[:, None]
    cross = np.einsum("ij,ij->i", mean_a, mean_b)
    within = (_within(sum_a, n_a) + _within(sum_b, n_b)) / 2
    norms = np.linalg.norm(mean_a, axis=1) * np.linalg.norm(mean_b, axis=1)
    return np.maximum(0.0, within - cross), 1.0 - cross / np.maximum(norms, 1e-12)


def _within(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean cosine between two different unit vectors of each set (1 for a set of one)."""
    pairs = np.maximum(counts * (counts - 1), 1.0)
    return np.where(counts > 1, (np.einsum("ij,ij->i", sums, sums) - counts) / pairs, 1.0)


def is_candidate(lemma: str) -> bool:
    """Whether a lemma is compared when no words are given: letters, not a function word.

    Also left out: a lemma the lemmatiser maps to another one (asking for it would compare that one).
    """
    letters = lemma.replace("'", "")
    return (
        letters.isalpha()
        and not lemma.startswith("'")
        and not lemma.endswith("'")
        and not is_stopword(lemma)
        and lemmatize(lemma) == lemma
    )


def measure_candidates(
    state: IndexState, field: str, slices: tuple[Slice, Slice], min_count: int
) -> Candidates:
    """`apd` and `centroid` of every word with ``min_count`` occurrences in both slices.

    Args:
        state: the open index.
        field: the metadata field of the slices.
        slices: the first slice and the second.
        min_count: occurrences a word needs in each slice.

    Returns:
        The candidates, measured.

    Raises:
        QueryError: no document's value of the field is in a slice, or the index kept changing
            during the reads.
        WordNotFound: no word has ``min_count`` occurrences in both slices.
    """
    for _ in range(_ATTEMPTS):
        with state.snapshot() as store:
            generation = state.generation
            dimension = store.dimension("words")
            members = _slice_documents(store, field, slices)
        by_lemma = _slice_words(state, generation, members)
        if by_lemma is None:
            continue  # the index moved between the reads: all again
        totals = [sum(len(ids) for ids in found.values()) for found in by_lemma]
        for total, part in zip(totals, slices, strict=True):
            if not total:
                raise QueryError(f"no document with words has a value of {field!r} in the slice {part.text}")
        first, second = by_lemma
        lemmas = sorted(
            lemma
            for lemma, ids in first.items()
            if len(ids) >= min_count and len(second.get(lemma, ())) >= min_count and is_candidate(lemma)
        )
        if not lemmas:
            raise WordNotFound(
                f"no word has at least {min_count} occurrences in both slices (function words left "
                f"out; the slices hold {totals[0]:,} and {totals[1]:,} words)"
            )
        groups = [found[lemma] for found in by_lemma for lemma in lemmas]
        sums = _sums(state, generation, groups, dimension)
        if sums is None:
            continue
        counts = np.asarray([len(ids) for ids in groups], dtype=np.int64).reshape(2, -1).T
        m = len(lemmas)
        apd, centroid = slice_measures(sums[:m], counts[:, 0], sums[m:], counts[:, 1])
        return Candidates(tuple(lemmas), counts, apd, centroid)
    raise QueryError("the index kept changing while the words of the slices were read; try again")


def _slice_documents(
    store: ReadableIndex, field: str, slices: tuple[Slice, Slice]
) -> tuple[list[int], list[int]]:
    """The rowids of the documents in each slice (under a snapshot)."""
    members: tuple[list[int], list[int]] = ([], [])
    for document in store.filter_documents(None, None):
        metadata = document["metadata"]
        value = metadata.get(field) if isinstance(metadata, dict) else None
        if value is None:
            continue
        for listed, part in zip(members, slices, strict=True):
            if part.holds(value):
                listed.append(document["id"])
    return members


def _slice_words(
    state: IndexState, generation: int, members: tuple[list[int], list[int]]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None:
    """Per slice, the ids of its documents' word occurrences by lemma (``(n,)`` int64 each).

    Read `DOCUMENTS` at a time, each under its own snapshot, so other queries go on in between; None
    when the index moved since the documents were read.
    """
    found: tuple[dict[str, list[np.ndarray]], dict[str, list[np.ndarray]]] = ({}, {})
    for listed, by_lemma in zip(members, found, strict=True):
        for start in range(0, len(listed), DOCUMENTS):
            state.queries.give_way()
            with state.snapshot() as store:
                if state.generation != generation:
                    return None
                part = store.lemma_ids_of_documents(listed[start : start + DOCUMENTS])
            for lemma, ids in part.items():
                by_lemma.setdefault(lemma, []).append(ids)
    first, second = ({lemma: np.concatenate(parts) for lemma, parts in side.items()} for side in found)
    return first, second


def _sums(state: IndexState, generation: int, groups: list[np.ndarray], dimension: int) -> np.ndarray | None:
    """The sum of each group's vectors: ``(len(groups), dimension)`` float64.

    Args:
        state: the open index.
        generation: the state's generation when the ids were read.
        groups: ``(n,)`` int64 word ids per group, none empty.
        dimension: the word vectors' dimension.

    Returns:
        The sums; None when the index moved since the ids were read.
    """
    ids = np.concatenate(groups)
    lengths = np.asarray([len(group) for group in groups], dtype=np.int64)
    ends = np.cumsum(lengths)
    sums = np.zeros((len(groups), dimension), dtype=np.float64)
    for start in range(0, len(ids), CHUNK):
        stop = min(start + CHUNK, len(ids))
        state.queries.give_way()  # queries in progress go first, between chunks
        with state.snapshot() as store:
            if state.generation != generation:
                return None
            vectors = store.word_vectors(ids[start:stop])
        # the groups are runs of ids: each run in this chunk summed at once (reduceat is slower)
        first = int(np.searchsorted(ends, start, side="right"))
        last = int(np.searchsorted(ends, stop, side="left"))
        for group in range(first, last + 1):
            low = max(int(ends[group] - lengths[group]), start) - start
            high = min(int(ends[group]), stop) - start
            sums[group] += vectors[low:high].sum(axis=0)
    return sums
