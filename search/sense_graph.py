"""The occurrences of a word as a graph of nearest neighbours, cut into communities of like uses.

A word's senses show locally before they show globally: an occurrence's nearest occurrences are
mostly used in its sense, while the directions along which all occurrences vary most are often
other things (the topic of the text, its register). So the senses are looked for as communities of
the graph that links each occurrence to its nearest others (Louvain modularity, at a resolution
below 1 so that only well-separated groups stand apart), not as clusters around a few centres.

Each occurrence is described by its word vector and by the vector of its sentence, side by side:
the sentence vector carries what the sentence is about, which the word's own vector holds only in
part (see docs/decisions.md, "Clustering for word senses").
"""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx
import numpy as np

NEIGHBOURS = 10
"""Nearest occurrences each occurrence is linked to (fewer for small words: a third of them)."""
RESOLUTION = 0.3
"""Louvain resolution: below 1, communities merge unless they are clearly apart."""
MIN_SENSE_SHARE = 0.04
MIN_SENSE_SIZE = 3
"""A community smaller than both 4 % of the occurrences and 3 joins the community nearest to it."""


def occurrence_features(word_vectors: np.ndarray, sentence_vectors: np.ndarray | None) -> np.ndarray:
    """What the occurrences are clustered on: word and sentence vector, side by side, centred.

    Args:
        word_vectors: ``(n, d)`` float32, the occurrences' word vectors.
        sentence_vectors: ``(n, e)`` float32, the vector of each occurrence's sentence, or None.

    Returns:
        ``(n, d + e)`` float32 (``(n, d)`` without sentence vectors), centred on the occurrences'
        mean and L2-normalised, so that a dot product is a cosine around the word's own centre.
    """
    parts = [normalise_rows(word_vectors)]
    if sentence_vectors is not None:
        parts.append(normalise_rows(sentence_vectors))
    features = np.hstack(parts) if len(parts) > 1 else parts[0]
    return normalise_rows(features - features.mean(axis=0))


def neighbour_communities(
    features: np.ndarray, max_communities: int, seed: int, neighbours: int = NEIGHBOURS
) -> np.ndarray:
    """Communities of the nearest-neighbour graph, the small ones joined to their nearest.

    Args:
        features: ``(n, d)`` float32, L2-normalised (see `occurrence_features`).
        max_communities: most communities kept: beyond that the smallest join their nearest.
        seed: seed of the Louvain passes.
        neighbours: nearest occurrences each one is linked to.

    Returns:
        ``(n,)`` int64 community of each occurrence, numbered from 0 (not by size).
    """
    n = len(features)
    if n < 3:
        return np.zeros(n, dtype=np.int64)
    count = max(2, min(neighbours, n // 3))
    similarity = features @ features.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argpartition(-similarity, count - 1, axis=1)[:, :count]
    linked = np.zeros((n, n), dtype=bool)
    linked[np.arange(n)[:, None], nearest] = True
    linked |= linked.T  # a link either way is an edge
    rows, columns = np.nonzero(np.triu(linked, 1))
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    # weights stay positive: modularity needs them so
    weights = np.clip(similarity[rows, columns], 0.01, None)
    graph.add_weighted_edges_from(zip(rows.tolist(), columns.tolist(), weights.tolist(), strict=True))
    labels = np.zeros(n, dtype=np.int64)
    communities = nx.community.louvain_communities(graph, resolution=RESOLUTION, seed=seed)
    for number, members in enumerate(communities):
        labels[list(members)] = number
    smallest = max(MIN_SENSE_SIZE, int(MIN_SENSE_SHARE * n))
    return join_small_communities(features, labels, smallest, max_communities)


def join_small_communities(
    features: np.ndarray, labels: np.ndarray, smallest: int, max_communities: int
) -> np.ndarray:
    """Join the communities under ``smallest`` members, and those beyond ``max_communities``, to others.

    Each member of a joined community goes to the kept community whose centre is nearest to it.

    Returns:
        ``(n,)`` int64 labels numbered 0…m-1; all 0 when no community is large enough.
    """
    labels = np.unique(labels, return_inverse=True)[1].astype(np.int64)
    while True:
        sizes = np.bincount(labels)
        kept = np.flatnonzero(sizes >= smallest)
        if len(kept) > max_communities:
            kept = kept[np.argsort(-sizes[kept], kind="stable")[:max_communities]]
        if len(kept) == len(sizes) or len(kept) <= 1:
            break
        centres = cluster_centres(features, labels, kept)
        moved = ~np.isin(labels, kept)
        labels[moved] = kept[np.argmax(features[moved] @ centres.T, axis=1)]
        labels = np.unique(labels, return_inverse=True)[1].astype(np.int64)
    if len(kept) <= 1:
        return np.zeros(len(labels), dtype=np.int64)
    return labels


def coarser_partitions(features: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """The partition and the coarser ones made by joining its two closest communities, down to two.

    Args:
        features: ``(n, d)`` float32, L2-normalised.
        labels: ``(n,)`` int64 communities numbered 0…k-1, k ≥ 2.

    Returns:
        ``k - 1`` label arrays ``(n,)`` int64, with k, k-1, …, 2 communities.
    """
    partitions = [labels]
    while labels.max() > 1:
        centres = cluster_centres(features, labels, range(int(labels.max()) + 1))
        similarity = centres @ centres.T
        np.fill_diagonal(similarity, -np.inf)
        first, second = sorted(np.unravel_index(int(np.argmax(similarity)), similarity.shape))
        labels = labels.copy()
        labels[labels == second] = first
        labels = np.unique(labels, return_inverse=True)[1].astype(np.int64)
        partitions.append(labels)
    return partitions


def cluster_centres(vectors: np.ndarray, labels: np.ndarray, clusters: Iterable[int]) -> np.ndarray:
    """``(len(clusters), d)`` float32: each cluster's mean vector, L2-normalised.

    Args:
        vectors: ``(n, d)`` vectors.
        labels: ``(n,)`` int cluster of each.
        clusters: the clusters wanted, each with at least one member.
    """
    return normalise_rows(np.stack([vectors[labels == c].mean(axis=0) for c in clusters]))


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """``(n, d)`` float32 copy with each row scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
