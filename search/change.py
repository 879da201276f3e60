"""How much a word's use changed between two slices of a corpus (``senseindex change``).

For each word the senses are induced once over all its occurrences; the occurrences in each slice
(documents whose metadata field has a given value, or a number in a given range) are then compared
three ways, side by side:

- ``jsd``: the Jensen–Shannon divergence (base 2, 0 to 1) of the two slices' sense distributions;
- ``apd``: the average cosine distance between an occurrence of one slice and one of the other, less
  the same within the slices (0 when both slices are alike, whatever the word's own spread);
- ``centroid``: the cosine distance between the two slices' mean vectors.

A sense is *gained* when it holds at least `PRESENT_SHARE` of the later slice's occurrences and under
`ABSENT_SHARE` of the earlier one's, *lost* the other way round.

Without words, every word with enough occurrences in both slices is measured at once
(`change_candidates`) and only the most changed are compared in full.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from senseindex.errors import QueryError, WordNotFound
from senseindex.indexer.storage import ReadableIndex
from senseindex.search.by_sense import induce_and_read
from senseindex.search.change_candidates import measure_candidates, slice_measures
from senseindex.search.hits import WordHit
from senseindex.search.ranking import word_hits
from senseindex.search.sense_slices import RANGE_PATTERN, field_values
from senseindex.search.senses import InducedSense, WordSenses
from senseindex.search.state import IndexState

MEASURES = ("apd", "jsd", "centroid")
DEFAULT_MEASURE: Final = "jsd"
"""Chosen by `benchmarks/change.py` (Spearman with the true JSD on half of CoarseWSD-20's words)."""
PRESENT_SHARE = 0.10
ABSENT_SHARE = 0.02
MIN_COUNT = 5
"""Occurrences a word needs in each slice to be compared (fewer say little about its use there)."""
EXAMPLES = 2
CANDIDATE_TOP = 20
"""Words shown when none are given and ``top`` is not."""
JSD_SHORTLIST = 5
"""Without words, ranking by `jsd` induces the senses of this many times ``top`` words (those of highest
`apd`): inducing them for every candidate would take minutes."""


@dataclass(frozen=True)
class SenseShift:
    """One induced sense of a word in the two slices.

    Attributes:
        number: the sense's number (as in `WordSenses.senses`).
        label: its short name (its first related words).
        share_from: its share of the first slice's occurrences.
        share_to: its share of the second slice's occurrences.
        status: ``gained``, ``lost`` or ``kept``.
        typical_from: its occurrences in the first slice closest to its centre.
        typical_to: the same in the second slice.
    """

    number: int
    label: str
    share_from: float
    share_to: float
    status: str
    typical_from: tuple[WordHit, ...]
    typical_to: tuple[WordHit, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "number": self.number,
            "label": self.label,
            "share_from": self.share_from,
            "share_to": self.share_to,
            "status": self.status,
            "typical_from": [hit.to_dict() for hit in self.typical_from],
            "typical_to": [hit.to_dict() for hit in self.typical_to],
        }


@dataclass(frozen=True)
class WordChange:
    """How a word's use differs between two slices.

    Attributes:
        word: the word asked for.
        lemma: its lemma.
        occurrences_from: its occurrences in the first slice.
        occurrences_to: its occurrences in the second slice.
        jsd: Jensen–Shannon divergence of the slices' sense distributions (0 to 1).
        apd: average cross-slice cosine distance less the average within the slices.
        centroid: cosine distance between the slices' mean vectors.
        senses: the word's senses in the two slices, most frequent first.
    """

    word: str
    lemma: str
    occurrences_from: int
    occurrences_to: int
    jsd: float
    apd: float
    centroid: float
    senses: tuple[SenseShift, ...]

    def score(self, measure: str) -> float:
        """The value of one of `MEASURES`."""
        return float(getattr(self, measure))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "word": self.word,
            "lemma": self.lemma,
            "occurrences_from": self.occurrences_from,
            "occurrences_to": self.occurrences_to,
            "jsd": self.jsd,
            "apd": self.apd,
            "centroid": self.centroid,
            "senses": [sense.to_dict() for sense in self.senses],
        }


@dataclass(frozen=True)
class ChangeReport:
    """Words ranked by how much their use changed between two slices.

    Attributes:
        field: the metadata field.
        slice_from: the first slice as given.
        slice_to: the second slice as given.
        measure: the measure the words are ranked by.
        words: the words, most changed first.
        skipped: words not compared, with the reason (too few occurrences in a slice).
        candidates: when no words were given, how many had enough occurrences in both slices.
    """

    field: str
    slice_from: str
    slice_to: str
    measure: str
    words: tuple[WordChange, ...]
    skipped: dict[str, str]
    candidates: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "field": self.field,
            "from": self.slice_from,
            "to": self.slice_to,
            "measure": self.measure,
            "words": [word.to_dict() for word in self.words],
            "skipped": dict(self.skipped),
            "candidates": self.candidates,
        }


class SliceTest:
    """Whether a metadata value is in a slice: a value (``news``, ``1990``) or a range (``1810-1860``)."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise QueryError("give each slice as a value or a range such as 1810-1860")
        self.text = text.strip()
        match = RANGE_PATTERN.fullmatch(self.text)
        self.range = (float(match.group(1)), float(match.group(2))) if match else None
        if self.range is not None and self.range[0] > self.range[1]:
            raise QueryError(f"a slice runs from a low number to a high one, not {self.text}")

    def holds(self, value: Any) -> bool:
        """Whether ``value`` is in the slice."""
        number = _number_of(value)
        if self.range is not None:
            return number is not None and self.range[0] <= number <= self.range[1]
        if number is not None:
            own = _number_of(self.text)
            if own is not None:
                return number == own
        return str(value) == self.text


def word_changes(
    state: IndexState,
    field: str,
    slice_from: str,
    slice_to: str,
    words: Sequence[str] | None,
    measure: str = DEFAULT_MEASURE,
    top: int | None = None,
    min_count: int = MIN_COUNT,
) -> ChangeReport:
    """Rank words by how much their use changed between two slices (see `SenseIndex.change`).

    Without ``words``, every word with ``min_count`` occurrences in both slices is a candidate
    (`change_candidates`): all are measured by `apd` and `centroid` at once, and the full comparison
    (senses gained and lost) is run for the ``top`` (`CANDIDATE_TOP`) most changed; by `jsd`, for
    the `JSD_SHORTLIST` times ``top`` words of highest `apd`, then ranked by their JSD.

    Raises:
        QueryError: a bad field, slice, measure or number, or an empty list of words.
        WordNotFound: no word has enough occurrences in both slices.
    """
    if measure not in MEASURES:
        raise QueryError(f"measure must be one of {', '.join(MEASURES)}, not {measure!r}")
    if not isinstance(field, str) or not field.strip():
        raise QueryError("give the metadata field the slices are of")
    for name, value, least in (("min_count", min_count, 1), ("top", top, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise QueryError(f"{name} must be a whole number of at least {least}, not {value!r}")
    if words is not None and not words:
        raise QueryError("give the words to compare, or none (None) to compare every word")
    first, second = SliceTest(slice_from), SliceTest(slice_to)
    if words is None:
        return _candidate_changes(
            state, field.strip(), first, second, measure, top or CANDIDATE_TOP, min_count
        )
    found, skipped = [], {}
    for word in dict.fromkeys(words):
        try:
            change = _word_change(state, field.strip(), first, second, word, min_count)
        except WordNotFound:
            skipped[word] = "not in the index"
            continue
        if isinstance(change, str):
            skipped[word] = change
        else:
            found.append(change)
    if not found:
        reasons = "; ".join(f"{word}: {reason}" for word, reason in skipped.items())
        raise WordNotFound(f"no word could be compared ({reasons})")
    found.sort(key=lambda change: -change.score(measure))
    return ChangeReport(field.strip(), first.text, second.text, measure, tuple(found[:top]), skipped)


def _candidate_changes(
    state: IndexState, field: str, first: SliceTest, second: SliceTest, measure: str, top: int, min_count: int
) -> ChangeReport:
    """The most changed of every word with ``min_count`` occurrences in both slices."""
    candidates = measure_candidates(state, field, (first, second), min_count)
    ranked = candidates.ranked("apd" if measure == "jsd" else measure)
    wanted = min(len(ranked), top * JSD_SHORTLIST if measure == "jsd" else top)
    found: list[WordChange] = []
    for lemma in ranked:
        if len(found) == wanted:
            break
        try:
            change = _word_change(state, field, first, second, lemma, min_count)
        except WordNotFound:  # deleted since it was counted
            continue
        if not isinstance(change, str):
            found.append(change)
    if not found:
        raise WordNotFound("no word could be compared: the index changed while they were; try again")
    found.sort(key=lambda change: -change.score(measure))
    shown = tuple(found[:top])
    return ChangeReport(field, first.text, second.text, measure, shown, {}, len(candidates.lemmas))


def _word_change(
    state: IndexState, field: str, first: SliceTest, second: SliceTest, word: str, min_count: int
) -> WordChange | str:
    """One word's change, or why it is not compared."""

    def read(store: ReadableIndex, ids: np.ndarray) -> dict[int, Any]:
        return field_values(store, ids, field)

    senses, vectors, values = induce_and_read(state, word, 0, 3, read)
    occurrence_values = [values.get(word_id) for word_id in senses.occurrence_ids.tolist()]
    in_first = np.asarray([first.holds(value) for value in occurrence_values])
    in_second = np.asarray([second.holds(value) for value in occurrence_values])
    counts = (int(in_first.sum()), int(in_second.sum()))
    if min(counts) < min_count:
        return f"{counts[0]} and {counts[1]} occurrences in the slices (at least {min_count} each are needed)"
    number_of_senses = len(senses.senses)
    shares = [
        np.bincount(senses.assignments[mask] - 1, minlength=number_of_senses) / int(mask.sum())
        for mask in (in_first, in_second)
    ]
    sum_a, sum_b = (vectors[mask].sum(axis=0, dtype=np.float64)[None] for mask in (in_first, in_second))
    apd, centroid = slice_measures(sum_a, np.asarray(counts[:1]), sum_b, np.asarray(counts[1:]))
    masks = (in_first, in_second)
    with state.snapshot() as store:
        shifts = tuple(
            _shift(store, sense, (float(shares[0][n]), float(shares[1][n])), senses, vectors, masks)
            for n, sense in enumerate(senses.senses)
        )
    return WordChange(
        word=senses.word,
        lemma=senses.lemma,
        occurrences_from=counts[0],
        occurrences_to=counts[1],
        jsd=round(_jensen_shannon(shares[0], shares[1]), 4),
        apd=round(float(apd[0]), 4),
        centroid=round(float(centroid[0]), 4),
        senses=shifts,
    )


def _shift(
    store: ReadableIndex,
    sense: InducedSense,
    shares: tuple[float, float],
    senses: WordSenses,
    vectors: np.ndarray,
    masks: tuple[np.ndarray, np.ndarray],
) -> SenseShift:
    """A sense's shares in the two slices, its status, and its typical occurrences in each."""
    share_from, share_to = shares
    status = "kept"
    if share_to >= PRESENT_SHARE and share_from < ABSENT_SHARE:
        status = "gained"
    elif share_from >= PRESENT_SHARE and share_to < ABSENT_SHARE:
        status = "lost"
    typical = []
    for mask in masks:
        members = np.flatnonzero(mask & (senses.assignments == sense.number))
        closeness = vectors[members] @ sense.centre
        best = np.argsort(-closeness, kind="stable")[:EXAMPLES]
        typical.append(tuple(word_hits(store, senses.occurrence_ids[members[best]], closeness[best])))
    return SenseShift(
        sense.number, sense.label(), round(share_from, 4), round(share_to, 4), status, typical[0], typical[1]
    )


def _jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence in bits (0 to 1)."""
    middle = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        keep = x > 0
        return float(np.sum(x[keep] * np.log2(x[keep] / middle[keep])))

    return max(0.0, min(1.0, (kl(p) + kl(q)) / 2))


def _number_of(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    try:
        number = float(str(value))
    except ValueError:
        return None
    return number if math.isfinite(number) else None
