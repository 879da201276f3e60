"""Word-sense induction: cluster a word's contextual vectors into the senses its corpus uses.

No sense inventory: the senses are groups of occurrences whose vectors lie together. A word's
occurrences are projected on their first ten principal axes (where the differences between uses
are; the other few hundred dimensions mostly carry each sentence's own context) and clustered with
spherical k-means for k = 2…8; the k with the best silhouette (cosine) wins, and it must beat the
same clustering of a featureless cloud — a Gaussian with the occurrences' spread along each axis
(five draws: their mean silhouette plus two standard deviations) — or the word keeps one sense. So
one sense is an answer, and the bar adapts to each word's spread and number of occurrences instead
of being one fixed silhouette for every word, corpus and model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from senseindex.search.hits import LemmaHit, WordHit
from senseindex.search.sense_slices import SensesBy

MAX_SENSES = 8
MAX_FORCED_SENSES = 50
CLUSTER_SAMPLE = 2_000
"""Occurrences clustered at most: a frequent word's sample (seeded), the rest joins the nearest
sense afterwards, so the cost stays that of 2,000 occurrences however frequent the word."""
REDUCED_DIMENSIONS = 10
"""Principal axes the occurrences are clustered on (chosen on the sample corpus; see docs/decisions.md,
"Clustering for word senses")."""
MIN_OCCURRENCES = 6
"""Fewer occurrences than this are one sense: too few to tell groups from noise."""
BASELINE_DRAWS = 5
"""Featureless clouds drawn: the bar is their silhouettes' mean plus two standard deviations."""
_RESTARTS = 4
_ITERATIONS = 60


@dataclass(frozen=True)
class InducedSense:
    """One sense of a word, induced from its occurrences.

    Attributes:
        number: 1 for the most frequent sense, 2 for the next, ...
        size: occurrences in this sense.
        share: ``size`` over all occurrences.
        typical: the occurrences closest to the sense's centre, best first (score: cosine to it).
        related_words: other words nearest to the centre in the whole word index (score: cosine).
        centre: ``(word_dimension,)`` float32, L2-normalised mean of the sense's vectors.
    """

    number: int
    size: int
    share: float
    typical: tuple[WordHit, ...]
    related_words: tuple[LemmaHit, ...]
    centre: np.ndarray = field(repr=False, compare=False)

    def label(self, words: int = 3) -> str:
        """A short name: the sense's first related words, e.g. ``"river, shore, stream"``."""
        return ", ".join(hit.lemma for hit in self.related_words[:words]) or f"sense {self.number}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (without the centre vector)."""
        return {
            "number": self.number,
            "label": self.label(),
            "size": self.size,
            "share": self.share,
            "typical": [hit.to_dict() for hit in self.typical],
            "related_words": [{"lemma": hit.lemma, "score": hit.score} for hit in self.related_words],
        }


@dataclass(frozen=True)
class WordSenses:
    """The induced senses of a word.

    Attributes:
        word: the word asked for.
        lemma: its lemma (every form of it was clustered).
        occurrences: its occurrences in the index.
        clustered: occurrences the clustering was fitted on (a sample above 2,000).
        chosen_by: how the number of senses was decided: ``silhouette``, ``forced`` (asked for),
            ``too few occurrences`` or ``no spread`` (every occurrence has the same vector).
        silhouettes: mean silhouette of the clustering per number of senses tried (2…8).
        baseline_silhouettes: the bar the best number had to pass: the featureless clouds' mean
            silhouette plus two standard deviations.
        senses: the senses, most frequent first.
        occurrence_ids: ``(occurrences,)`` int64 word rowids.
        assignments: ``(occurrences,)`` int64, the sense number (1-based) of each occurrence.
        coordinates: ``(occurrences, 2)`` float32, the occurrences' vectors on the first two
            principal axes of the clustered ones (for a map).
        by: the share of each sense per slice of a metadata field, when asked for.
    """

    word: str
    lemma: str
    occurrences: int
    clustered: int
    chosen_by: str
    silhouettes: dict[int, float]
    baseline_silhouettes: dict[int, float]
    senses: tuple[InducedSense, ...]
    occurrence_ids: np.ndarray = field(repr=False, compare=False)
    assignments: np.ndarray = field(repr=False, compare=False)
    coordinates: np.ndarray = field(repr=False, compare=False)
    by: SensesBy | None = None

    def sense_of(self, word_id: int) -> int | None:
        """The sense number of an occurrence, by its word rowid (None: not an occurrence of this lemma)."""
        position = np.flatnonzero(self.occurrence_ids == word_id)
        return int(self.assignments[position[0]]) if len(position) else None

    def to_dict(self, assignments: bool = True) -> dict[str, Any]:
        """JSON-able dict: the senses, the choice and its scores.

        With ``assignments``, also the sense of each occurrence by word rowid.
        """
        described: dict[str, Any] = {
            "word": self.word,
            "lemma": self.lemma,
            "occurrences": self.occurrences,
            "clustered": self.clustered,
            "chosen_by": self.chosen_by,
            "silhouettes": {str(k): v for k, v in self.silhouettes.items()},
            "baseline_silhouettes": {str(k): v for k, v in self.baseline_silhouettes.items()},
            "senses": [sense.to_dict() for sense in self.senses],
        }
        if self.by is not None:
            described["by"] = self.by.to_dict()
        if assignments:
            pairs = zip(self.occurrence_ids.tolist(), self.assignments.tolist(), strict=True)
            described["assignments"] = {str(word_id): int(sense) for word_id, sense in pairs}
        return described


@dataclass(frozen=True)
class SenseGroup:
    """Hits of a same-word query that belong to one induced sense.

    Attributes:
        sense: the sense number (as in `WordSenses.senses`); 0 for an occurrence added after
            the senses were induced.
        hits: the group's hits, best first.
    """

    sense: int
    hits: tuple[WordHit, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {"sense": self.sense, "hits": [hit.to_dict() for hit in self.hits]}


@dataclass(frozen=True)
class Clustering:
    """The outcome of `cluster_senses`.

    Attributes:
        labels: ``(n,)`` int64 cluster of each vector, 0 = largest.
        centres: ``(k, d)`` float32, L2-normalised, largest cluster first.
        chosen_by: ``silhouette``, ``forced``, ``too few occurrences`` or ``no spread``.
        silhouettes: per k tried, the silhouette of the fitted sample.
        baseline_silhouettes: per k compared, the bar from the featureless clouds.
        clustered: how many vectors the clustering was fitted on.
        coordinates: ``(n, 2)`` float32, each vector on the first two principal axes of the sample.
    """

    labels: np.ndarray
    centres: np.ndarray
    chosen_by: str
    silhouettes: dict[int, float]
    baseline_silhouettes: dict[int, float]
    clustered: int
    coordinates: np.ndarray


def cluster_senses(
    vectors: np.ndarray,
    senses: int | None = None,
    max_senses: int = MAX_SENSES,
    sample: int = CLUSTER_SAMPLE,
    seed: int = 0,
) -> Clustering:
    """Cluster a word's occurrence vectors into senses, choosing their number unless given.

    Args:
        vectors: ``(n, d)`` float32, L2-normalised: the word's contextual vectors.
        senses: force this many senses (1…n).
        max_senses: most senses tried when choosing.
        sample: most vectors the clustering is fitted on; the others join their nearest centre.
        seed: seed of the sample, the k-means starts and the baseline cloud.

    Returns:
        The clustering; clusters are numbered by size, largest first.
    """
    n = len(vectors)
    rng = np.random.default_rng(seed)
    fit_rows = np.arange(n) if n <= sample else np.sort(rng.choice(n, sample, replace=False))
    mean, components = _principal_axes(vectors[fit_rows], REDUCED_DIMENSIONS)
    projected = (vectors - mean) @ components.T
    reduced = _normalise(projected)
    fit = reduced[fit_rows]
    silhouettes: dict[int, float] = {}
    baseline: dict[int, float] = {}
    fitted: dict[int, np.ndarray] = {}  # centres in the reduced space, per k
    if senses is not None:
        k, chosen_by = senses, "forced"
        if k > 1 and len(components):
            fitted[k] = spherical_kmeans(fit, min(k, len(fit)), rng)[1]
    elif len(fit) < MIN_OCCURRENCES:
        k, chosen_by = 1, "too few occurrences"
    elif not len(components):
        k, chosen_by = 1, "no spread"  # every occurrence has the same vector
    else:
        similarity = fit @ fit.T
        for k in range(2, min(max_senses, len(fit) - 1) + 1):
            labels, fitted[k] = spherical_kmeans(fit, k, rng)
            silhouettes[k] = round(silhouette(similarity, labels), 4)
        best = max(silhouettes, key=lambda key: (silhouettes[key], -key))
        spread = projected[fit_rows].std(axis=0, ddof=1)
        clouds = []
        for _ in range(BASELINE_DRAWS):
            cloud = featureless_cloud(spread, len(fit), rng)
            labels, _ = spherical_kmeans(cloud, best, rng)
            clouds.append(silhouette(cloud @ cloud.T, labels))
        baseline[best] = round(float(np.mean(clouds) + 2 * np.std(clouds, ddof=1)), 4)
        k = best if silhouettes[best] > baseline[best] else 1
        chosen_by = "silhouette"
    if k == 1 or k not in fitted:
        labels = np.zeros(n, dtype=np.int64)
    else:
        # the clustering that was scored, extended to every occurrence
        labels = np.argmax(reduced @ fitted[k].T, axis=1)
    present = np.unique(labels)
    labels = np.searchsorted(present, labels)  # no empty cluster keeps a number
    centres = np.stack(
        [_normalise(vectors[labels == c].mean(axis=0, keepdims=True))[0] for c in range(len(present))]
    )
    order = np.argsort(-np.bincount(labels, minlength=len(centres)), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return Clustering(
        labels=rank[labels].astype(np.int64),
        centres=centres[order].astype(np.float32),
        chosen_by=chosen_by,
        silhouettes=silhouettes,
        baseline_silhouettes=baseline,
        clustered=len(fit),
        coordinates=np.pad(projected[:, :2], ((0, 0), (0, max(0, 2 - projected.shape[1])))).astype(
            np.float32
        ),
    )


def _principal_axes(vectors: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean ``(d,)`` and up to ``count`` principal axes ``(m, d)`` of some vectors.

    Only axes along which they really vary (none for identical vectors).
    """
    mean = vectors.mean(axis=0)
    if len(vectors) < 2:
        return mean, np.zeros((0, vectors.shape[1]), dtype=np.float32)
    _, strengths, axes = np.linalg.svd(vectors - mean, full_matrices=False)
    # float rounding leaves tiny axes even in identical vectors; normalised, they would look real
    real = strengths > max(strengths[0] * 1e-5, 1e-6) if len(strengths) else strengths > 0
    return mean, axes[: min(count, int(real.sum()))]


def spherical_kmeans(vectors: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """k-means on the unit sphere (cosine), k-means++ starts, the best of a few restarts.

    Args:
        vectors: ``(n, d)`` float32, L2-normalised, n ≥ k.
        k: number of clusters.
        rng: random source.

    Returns:
        ``(labels, centres)``: ``(n,)`` int64 and ``(k, d)`` float32 L2-normalised.
    """
    results = [_one_kmeans_run(vectors, k, rng) for _ in range(_RESTARTS)]
    _, labels, centres = max(results, key=lambda result: result[0])
    return labels, centres.astype(np.float32)


def _one_kmeans_run(
    vectors: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[float, np.ndarray, np.ndarray]:
    """Lloyd's iterations from one k-means++ start: ``(sum of cosines to the centres, labels, centres)``."""
    centres = _plus_plus_starts(vectors, k, rng)
    labels = np.zeros(len(vectors), dtype=np.int64)
    for iteration in range(_ITERATIONS):
        similarity = vectors @ centres.T
        new_labels = np.argmax(similarity, axis=1)
        if iteration and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for c in range(k):
            members = vectors[labels == c]
            # an emptied cluster restarts at the vector its centre explains worst
            centres[c] = (
                _normalise(members.sum(axis=0, keepdims=True))[0]
                if len(members)
                else vectors[np.argmin(similarity.max(axis=1))]
            )
    return float((vectors @ centres.T).max(axis=1).sum()), labels, centres


def _plus_plus_starts(vectors: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [vectors[rng.integers(len(vectors))]]
    distance = 1.0 - vectors @ centres[0]
    for _ in range(1, k):
        weights = np.clip(distance, 0, None) ** 2
        total = weights.sum()
        chosen = rng.choice(len(vectors), p=weights / total) if total > 0 else rng.integers(len(vectors))
        centres.append(vectors[chosen])
        distance = np.minimum(distance, 1.0 - vectors @ vectors[chosen])
    return np.stack(centres).astype(np.float32)


def silhouette(similarity: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette with cosine distance (``1 - similarity``).

    Args:
        similarity: ``(n, n)`` cosine similarities of the clustered vectors.
        labels: ``(n,)`` int cluster of each.

    Returns:
        The mean over all points, in [-1, 1]; a point alone in its cluster counts 0.
    """
    clusters = np.unique(labels)
    if len(clusters) < 2:
        return 0.0
    distance = 1.0 - similarity
    sizes = np.asarray([(labels == c).sum() for c in clusters], dtype=np.float64)
    sums = np.stack([distance[:, labels == c].sum(axis=1) for c in clusters], axis=1)
    own = np.searchsorted(clusters, labels)
    rows = np.arange(len(labels))
    own_size = sizes[own]
    inside = np.where(own_size > 1, sums[rows, own] / np.maximum(own_size - 1, 1), 0.0)
    means = sums / sizes
    means[rows, own] = np.inf
    nearest = means.min(axis=1)
    score = np.where(own_size > 1, (nearest - inside) / np.maximum(np.maximum(nearest, inside), 1e-12), 0.0)
    return float(score.mean())


def featureless_cloud(spread: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` points of one Gaussian with the occurrences' spread along each principal axis.

    The Gaussian has no groups. The points are L2-normalised like the occurrences: ``(count, len(spread))``
    float32.
    """
    return _normalise(rng.standard_normal((count, len(spread))) * spread)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
