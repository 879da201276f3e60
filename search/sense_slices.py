"""A word's senses across parts of a corpus: the share of each sense per value of a metadata field.

The senses are induced once over every occurrence of the word; each occurrence then counts in the
slice its document's value of the field falls in. Slices are the field's distinct values, equal-width
bins of a numeric field (``bins``), or numeric ranges given by hand (``slices``, e.g.
``1810-1860,1960-2010``; both ends included).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from senseindex.errors import QueryError
from senseindex.indexer.storage import ReadableIndex

MAX_BINS = 100
MAX_SLICES = 100
RANGE_PATTERN = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*(?:-|–|\.\.)\s*(-?\d+(?:\.\d+)?)\s*")


@dataclass(frozen=True)
class SenseSlice:
    """The occurrences of a word in one slice of the corpus, by sense.

    Attributes:
        label: the slice: a field value, or a range ``low–high``.
        occurrences: occurrences of the word in the slice.
        counts: occurrences per sense, in the order of the senses (sense 1 first).
        shares: ``counts`` over ``occurrences`` (all 0 for an empty slice).
    """

    label: str
    occurrences: int
    counts: tuple[int, ...]
    shares: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "label": self.label,
            "occurrences": self.occurrences,
            "counts": list(self.counts),
            "shares": list(self.shares),
        }


@dataclass(frozen=True)
class SensesBy:
    """A word's sense distribution per slice of a metadata field.

    Attributes:
        field: the metadata field.
        slices: the slices, in order (numbers ascending, other values alphabetically).
        without_value: occurrences whose document has no value for the field (in no slice).
        outside: occurrences whose value falls in none of the given ranges.
    """

    field: str
    slices: tuple[SenseSlice, ...]
    without_value: int
    outside: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "field": self.field,
            "slices": [s.to_dict() for s in self.slices],
            "without_value": self.without_value,
            "outside": self.outside,
        }


def parse_ranges(text: str | Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Numeric ranges from ``"1810-1860,1960-2010"`` (or given as pairs), each with low ≤ high.

    Raises:
        QueryError: not a comma-separated list of ``low-high`` numbers.
    """
    if isinstance(text, str):
        pairs = []
        for part in text.split(","):
            match = RANGE_PATTERN.fullmatch(part)
            if match is None:
                raise QueryError(f"slices are ranges such as 1810-1860,1960-2010, not {part.strip()!r}")
            pairs.append((float(match.group(1)), float(match.group(2))))
    else:
        pairs = [(float(low), float(high)) for low, high in text]
    if not pairs or len(pairs) > MAX_SLICES:
        raise QueryError(f"give from 1 to {MAX_SLICES} slices")
    for low, high in pairs:
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            raise QueryError(
                f"a slice runs from a low number to a high one, not {_number(low)}-{_number(high)}"
            )
    return pairs


def check_slicing(field: str | None, bins: int | None, slices: object) -> None:
    """Refuse a slicing request that cannot be answered, before any work.

    Raises:
        QueryError: bins or slices without a field, both at once, or a bad number of bins.
    """
    if field is None:
        if bins is not None or slices is not None:
            raise QueryError("bins and slices need a metadata field to slice by")
        return
    if not isinstance(field, str) or not field.strip():
        raise QueryError("give the metadata field to slice by")
    if bins is not None and slices is not None:
        raise QueryError("give bins or slices, not both")
    if bins is not None and (
        isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= MAX_BINS
    ):
        raise QueryError(f"bins must be a whole number from 1 to {MAX_BINS}, not {bins!r}")


def field_values(store: ReadableIndex, ids: np.ndarray, field: str) -> dict[int, Any]:
    """The value of a metadata field of each occurrence's document (under a snapshot).

    Args:
        store: the store of the snapshot held.
        ids: ``(n,)`` int64 word rowids.
        field: a top-level metadata field.

    Returns:
        Word rowid -> value, for the occurrences whose document has the field (not null).
    """
    documents = store.documents_of("words", ids.tolist())
    rows = store.document_rows(set(documents.values()))
    values = {}
    for word_id, document in documents.items():
        metadata = rows.get(document, {}).get("metadata") or {}
        value = metadata.get(field) if isinstance(metadata, dict) else None
        if value is not None:
            values[word_id] = value
    return values


def slice_senses(
    field: str,
    occurrence_ids: np.ndarray,
    assignments: np.ndarray,
    senses: int,
    values: dict[int, Any],
    bins: int | None = None,
    ranges: list[tuple[float, float]] | None = None,
) -> SensesBy:
    """Count each sense per slice of a field.

    Args:
        field: the field's name.
        occurrence_ids: ``(n,)`` int64 word rowids.
        assignments: ``(n,)`` int64 sense number (1-based) of each occurrence.
        senses: the number of senses.
        values: the field's value per word rowid (`field_values`).
        bins: equal-width bins between the lowest and highest value (numbers only).
        ranges: numeric ranges, both ends included (an occurrence counts in each range it falls in).

    Returns:
        The slices.

    Raises:
        QueryError: no occurrence has a value for the field, or bins or ranges over values that are
            not numbers.
    """
    pairs = [
        (values[word_id], int(sense))
        for word_id, sense in zip(occurrence_ids.tolist(), assignments.tolist(), strict=True)
        if word_id in values
    ]
    if not pairs:
        raise QueryError(f"no occurrence's document has a value for the field {field!r}")
    without = len(occurrence_ids) - len(pairs)
    if bins is None and ranges is None:
        return _by_value(field, pairs, senses, without)
    numbers = [(_as_number(value, field), sense) for value, sense in pairs]
    if ranges is not None:
        members = [[sense for number, sense in numbers if low <= number <= high] for low, high in ranges]
        for (low, high), group in zip(ranges, members, strict=True):
            if not group:
                raise QueryError(f"no occurrence falls in the slice {_range_label(low, high)} of {field!r}")
        outside = sum(1 for number, _ in numbers if not any(low <= number <= high for low, high in ranges))
        return SensesBy(field, _ranged(ranges, members, senses), without, outside)
    low, high = min(n for n, _ in numbers), max(n for n, _ in numbers)
    count = bins if bins is not None and high > low else 1  # one value: one slice, whatever the bins
    width = (high - low) / count
    edges = [low + width * step for step in range(count)] + [high]
    # equal-width bins, each half-open but the last, so that every value falls in one bin
    binned: list[list[int]] = [[] for _ in range(count)]
    for number, sense in numbers:
        binned[min(count - 1, int((number - low) / width)) if width else 0].append(sense)
    return SensesBy(field, _ranged(list(itertools.pairwise(edges)), binned, senses), without, 0)


def _ranged(
    ranges: list[tuple[float, float]], members: list[list[int]], senses: int
) -> tuple[SenseSlice, ...]:
    """One slice per numeric range, labelled ``low–high``."""
    return tuple(
        _slice(_range_label(low, high), group, senses)
        for (low, high), group in zip(ranges, members, strict=True)
    )


def _by_value(field: str, pairs: list[tuple[Any, int]], senses: int, without: int) -> SensesBy:
    """One slice per distinct value: numbers in ascending order, then other values by their text."""
    groups: dict[str, tuple[tuple[int, float, str], list[int]]] = {}
    for value, sense in pairs:
        label = value if isinstance(value, str) else _number(value) if _is_number(value) else str(value)
        key = (0, float(value), "") if _is_number(value) else (1, 0.0, label)
        groups.setdefault(label, (key, []))[1].append(sense)
    if len(groups) > MAX_SLICES:
        raise QueryError(
            f"the field {field!r} has {len(groups):,} distinct values; slice it with bins or ranges "
            f"(at most {MAX_SLICES} slices)"
        )
    ordered = sorted(groups.items(), key=lambda item: item[1][0])
    return SensesBy(
        field, tuple(_slice(label, members, senses) for label, (_, members) in ordered), without, 0
    )


def _slice(label: str, members: list[int], senses: int) -> SenseSlice:
    counts = np.bincount(np.asarray(members, dtype=np.int64), minlength=senses + 1)[1 : senses + 1]
    total = int(counts.sum())
    shares = tuple(round(int(c) / total, 4) if total else 0.0 for c in counts)
    return SenseSlice(label, total, tuple(int(c) for c in counts), shares)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _as_number(value: Any, field: str) -> float:
    if _is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    raise QueryError(f"bins and slices need numbers, and the field {field!r} holds {value!r}")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _range_label(low: float, high: float) -> str:
    return f"{_number(low)}–{_number(high)}"
