"""Word-sense induction: cluster a word's contextual vectors into the senses its corpus uses.

No sense inventory: the senses are groups of occurrences used alike. Each occurrence is described by
its word vector and its sentence's vector side by side; the occurrences are linked to their nearest
others and the graph is cut into communities (`sense_graph`), which finds the number of senses and
keeps a small sense whose uses lie close together. The communities, and the coarser partitions made
by joining the closest of them, must then part the occurrences better than k-means parts a
featureless cloud — a Gaussian with the occurrences' spread along their first ten principal axes
(five draws: the mean silhouette plus 1.5 standard deviations; silhouettes averaged per cluster, so a
small tight sense counts as much as a large spread one). The partition that beats its bar by most
is kept; when none does, the word keeps one sense. So one sense is an answer, and the bar adapts to
each word's spread and number of occurrences instead of being one fixed score for every word,
corpus and model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from senseindex.search.hits import LemmaHit, WordHit
from senseindex.search.sense_graph import (
    cluster_centres,
    coarser_partitions,
    neighbour_communities,
    normalise_rows,
    occurrence_features,
)
from senseindex.search.sense_slices import SensesBy

MAX_SENSES = 8
MAX_FORCED_SENSES = 50
CLUSTER_SAMPLE = 2_000
"""Occurrences clustered at most: a frequent word's sample (seeded), the rest joins the nearest
sense afterwards, so the cost stays that of 2,000 occurrences however frequent the word."""
REDUCED_DIMENSIONS = 10
"""Principal axes the communities are scored on against the featureless cloud, and the map drawn on."""
MIN_OCCURRENCES = 6
"""Fewer occurrences than this are one sense: too few to tell groups from noise."""
BASELINE_DRAWS = 5
BASELINE_DEVIATIONS = 1.5
"""Featureless clouds drawn; the bar is their silhouettes' mean plus 1.5 standard deviations."""
CLOUD_POINTS = 500
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
        chosen_by: how the number of senses was decided: ``graph``, ``forced`` (asked for),
            ``too few occurrences`` or ``no spread`` (every occurrence has the same vector).
        silhouettes: the silhouette (averaged per cluster) of the communities found and of the
            coarser partitions made by joining the closest ones, keyed by their number of senses
            (empty when one community was found).
        baseline_silhouettes: the bar each had to pass: the featureless clouds' mean silhouette
            plus 1.5 standard deviations. The partition that beats its bar by most is kept.
        senses: the senses, most frequent first.
        occurrence_ids: ``(occurrences,)`` int64 word rowids.
        assignments: ``(occurrences,)`` int64, the sense number (1-based) of each occurrence.
        coordinates: ``(occurrences, 2)`` float32, what was clustered of each occurrence (word and
            sentence vector) on the first two principal axes of the clustered sample (for a map).
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
        chosen_by: ``graph``, ``forced``, ``too few occurrences`` or ``no spread``.
        silhouettes: per partition tried (by its number of clusters), its silhouette on the sample.
        baseline_silhouettes: per partition tried, the bar from the featureless clouds.
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
    sentence_vectors: np.ndarray | None = None,
) -> Clustering:
    """Cluster a word's occurrences into senses, choosing their number unless given.

    Args:
        vectors: ``(n, d)`` float32, L2-normalised: the word's contextual vectors.
        senses: force this many senses (1…n).
        max_senses: most senses kept when choosing.
        sample: most occurrences the clustering is fitted on; the others join their nearest sense.
        seed: seed of the sample, the graph communities, the k-means starts and the baseline cloud.
        sentence_vectors: ``(n, e)`` float32, the vector of each occurrence's sentence; clustered
            beside the word vectors when given (see `sense_graph.occurrence_features`).

    Returns:
        The clustering; clusters are numbered by size, largest first.
    """
    n = len(vectors)
    rng = np.random.default_rng(seed)
    fit_rows = np.arange(n) if n <= sample else np.sort(rng.choice(n, sample, replace=False))
    features = occurrence_features(vectors, sentence_vectors)
    fit = features[fit_rows]
    mean, components = _principal_axes(fit, REDUCED_DIMENSIONS)
    projected = (features - mean) @ components.T
    silhouettes: dict[int, float] = {}
    baseline: dict[int, float] = {}
    fitted = np.zeros(len(fit), dtype=np.int64)
    if senses is not None:
        chosen_by = "forced"
        if senses > 1 and len(components):
            fitted = spherical_kmeans(fit, min(senses, len(fit)), rng)[0]
    elif len(fit) < MIN_OCCURRENCES:
        chosen_by = "too few occurrences"
    elif not len(components):
        chosen_by = "no spread"  # every occurrence has the same vector
    else:
        chosen_by = "graph"
        found = neighbour_communities(fit, max_senses, seed)
        if found.max() > 0:
            # the communities, or coarser ones, must part the occurrences better than k-means parts
            # a cloud without groups; the partition that beats its cloud by most is kept
            reduced = normalise_rows(projected[fit_rows])
            similarity = reduced @ reduced.T
            spread = projected[fit_rows].std(axis=0, ddof=1)
            margins = {}
            for partition in coarser_partitions(fit, found):
                k = int(partition.max()) + 1
                silhouettes[k] = round(silhouette(similarity, partition, by_cluster=True), 4)
                baseline[k] = _cloud_bar(spread, len(fit), k, rng)
                if silhouettes[k] > baseline[k]:
                    margins[k] = (silhouettes[k] - baseline[k], partition)
            if margins:
                fitted = max(margins.values(), key=lambda margin: margin[0])[1]
    labels = _extend(features, fit_rows, fit, fitted)
    present = np.unique(labels)
    labels = np.searchsorted(present, labels)  # no empty cluster keeps a number
    centres = cluster_centres(vectors, labels, range(len(present)))
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


def _cloud_bar(spread: np.ndarray, count: int, k: int, rng: np.random.Generator) -> float:
    """The bar a k-way partition must pass: k-means silhouettes of featureless clouds (by cluster).

    Their mean plus `BASELINE_DEVIATIONS` standard deviations. A cloud has at most `CLOUD_POINTS`
    points: beyond a few hundred its silhouettes hardly change with its size, and the bar is drawn
    for every partition tried.
    """
    clouds = []
    for _ in range(BASELINE_DRAWS):
        cloud = featureless_cloud(spread, min(count, CLOUD_POINTS), rng)
        labels, _ = spherical_kmeans(cloud, k, rng)
        clouds.append(silhouette(cloud @ cloud.T, labels, by_cluster=True))
    return round(float(np.mean(clouds) + BASELINE_DEVIATIONS * np.std(clouds, ddof=1)), 4)


def _extend(features: np.ndarray, fit_rows: np.ndarray, fit: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """The clusters of the fitted sample extended to every occurrence: each joins the nearest centre.

    ``fit`` holds the features of ``fit_rows``, ``fitted`` their clusters.
    """
    if len(fit_rows) == len(features) or not fitted.max(initial=0):
        labels = np.zeros(len(features), dtype=np.int64)
        labels[fit_rows] = fitted
        return labels
    centres = cluster_centres(fit, fitted, range(int(fitted.max()) + 1))
    labels = np.argmax(features @ centres.T, axis=1).astype(np.int64)
    labels[fit_rows] = fitted  # the fitted occurrences keep the clusters that were scored
    return labels


def _principal_axes(vectors: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean ``(d,)`` and up to ``count`` principal axes ``(m, d)`` of some vectors.

    Only axes along which they really vary (none for identical vectors).
    """
    mean = vectors.mean(axis=0)
    if len(vectors) < 2:
        return mean, np.zeros((0, vectors.shape[1]), dtype=np.float32)
    centred = (vectors - mean).astype(np.float64)
    if len(vectors) > vectors.shape[1]:
        # many occurrences: the covariance's eigenvectors cost far less than the SVD of all of them
        values, vectors_by_value = np.linalg.eigh(centred.T @ centred)
        order = np.argsort(values)[::-1]
        strengths = np.sqrt(np.clip(values[order], 0.0, None))
        axes = vectors_by_value[:, order].T
    else:
        _, strengths, axes = np.linalg.svd(centred, full_matrices=False)
    # float rounding leaves tiny axes even in identical vectors; normalised, they would look real
    real = strengths > max(strengths[0] * 1e-5, 1e-6) if len(strengths) else strengths > 0
    return mean, axes[: min(count, int(real.sum()))].astype(np.float32)


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
                normalise_rows(members.sum(axis=0, keepdims=True))[0]
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


def silhouette(similarity: np.ndarray, labels: np.ndarray, by_cluster: bool = False) -> float:
    """Mean silhouette with cosine distance (``1 - similarity``).

    Args:
        similarity: ``(n, n)`` cosine similarities of the clustered vectors.
        labels: ``(n,)`` int cluster of each.
        by_cluster: average each cluster's mean instead of every point, so that a small tight
            cluster weighs as much as a large spread one.

    Returns:
        The mean, in [-1, 1]; a point alone in its cluster counts 0.
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
    if by_cluster:
        return float(np.mean([score[own == c].mean() for c in range(len(clusters))]))
    return float(score.mean())


def featureless_cloud(spread: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` points of one Gaussian with the occurrences' spread along each principal axis.

    The Gaussian has no groups. The points are L2-normalised like the occurrences: ``(count, len(spread))``
    float32.
    """
    return normalise_rows(rng.standard_normal((count, len(spread))) * spread)
