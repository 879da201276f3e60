"""Evaluation metrics for search quality: ranking (nDCG, recall, precision) and correlation."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np


def ndcg_at_k(ranked: Sequence[Hashable], relevance: Mapping[Hashable, float], k: int) -> float:
    """Normalised discounted cumulative gain of a ranking, cut at k (gain = relevance, log2 discount).

    Args:
        ranked: retrieved ids, best first.
        relevance: graded relevance of the relevant ids (others count 0).
        k: cut-off.

    Returns:
        nDCG@k in [0, 1]; 0 when nothing is relevant.
    """
    dcg = sum(relevance.get(item, 0.0) / math.log2(rank + 2) for rank, item in enumerate(ranked[:k]))
    ideal = sorted((g for g in relevance.values() if g > 0), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[Hashable], relevant: set[Hashable], k: int) -> float:
    """Share of the relevant ids found in the top k.

    Args:
        ranked: retrieved ids, best first.
        relevant: the relevant ids.
        k: cut-off.

    Returns:
        Recall@k in [0, 1]; 0 when nothing is relevant.
    """
    if not relevant:
        return 0.0
    return len(set(ranked[:k]) & relevant) / len(relevant)


def precision_at_k(labels: Sequence[Hashable], wanted: Hashable, k: int) -> float:
    """Share of the top k results carrying the wanted label (fewer than k results count as misses).

    Args:
        labels: labels of the retrieved results, best first.
        wanted: the label that counts as a hit.
        k: cut-off.

    Returns:
        Precision@k in [0, 1].
    """
    return sum(1 for label in labels[:k] if label == wanted) / k


def rank_with_ties(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks.

    Args:
        values: ``(n,)`` numbers.

    Returns:
        ``(n,)`` float64 ranks.
    """
    array = np.asarray(values, dtype=np.float64)
    order = np.argsort(array, kind="mergesort")
    ranks = np.empty(len(array), dtype=np.float64)
    sorted_values = array[order]
    start = 0
    while start < len(array):
        end = start
        while end + 1 < len(array) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of tie-averaged ranks).

    Args:
        x: ``(n,)`` numbers.
        y: ``(n,)`` numbers.

    Returns:
        The correlation in [-1, 1].

    Raises:
        ValueError: different lengths or fewer than two values.
    """
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("spearman needs two sequences of equal length, at least 2")
    return float(np.corrcoef(rank_with_ties(x), rank_with_ties(y))[0, 1])


def macro_f1(gold: Sequence[Hashable], predicted: Sequence[Hashable]) -> float:
    """Unweighted mean of per-label F1 over the labels seen in gold or predictions.

    Args:
        gold: true labels.
        predicted: predicted labels, same length.

    Returns:
        Macro-F1 in [0, 1].
    """
    if len(gold) != len(predicted):
        raise ValueError("gold and predicted differ in length")
    labels = set(gold) | set(predicted)
    if not labels:
        return 0.0
    scores = []
    for label in labels:
        true_positive = sum(1 for g, p in zip(gold, predicted, strict=True) if g == label and p == label)
        predicted_count = sum(1 for p in predicted if p == label)
        gold_count = sum(1 for g in gold if g == label)
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / gold_count if gold_count else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(scores) / len(scores)


def _contingency(gold: Sequence[Hashable], predicted: Sequence[Hashable]) -> np.ndarray:
    """Counts of (gold class, predicted cluster) pairs: ``(classes, clusters)`` float64."""
    if len(gold) != len(predicted):
        raise ValueError("gold and predicted differ in length")
    classes = {label: i for i, label in enumerate(dict.fromkeys(gold))}
    clusters = {label: i for i, label in enumerate(dict.fromkeys(predicted))}
    table = np.zeros((len(classes), len(clusters)), dtype=np.float64)
    for g, p in zip(gold, predicted, strict=True):
        table[classes[g], clusters[p]] += 1
    return table


def adjusted_rand_index(gold: Sequence[Hashable], predicted: Sequence[Hashable]) -> float:
    """Agreement of a clustering with gold classes, corrected for chance (Hubert and Arabie).

    Args:
        gold: true class of each item.
        predicted: cluster of each item, same length.

    Returns:
        1 for the same partition, about 0 for a random one (can be negative); 1 when both put
        everything in one group, 0 when only one of them does.
    """
    table = _contingency(gold, predicted)
    n = table.sum()
    if n < 2:
        return 1.0

    def pairs(counts: np.ndarray) -> float:
        return float((counts * (counts - 1) / 2).sum())

    together = pairs(table)
    gold_pairs, predicted_pairs = pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    expected = gold_pairs * predicted_pairs / (n * (n - 1) / 2)
    maximum = (gold_pairs + predicted_pairs) / 2
    if maximum == expected:  # one side is a single group (or all singletons)
        return 1.0 if gold_pairs == predicted_pairs else 0.0
    return (together - expected) / (maximum - expected)


def v_measure(gold: Sequence[Hashable], predicted: Sequence[Hashable]) -> tuple[float, float, float]:
    """Homogeneity, completeness and their harmonic mean, the V-measure (Rosenberg and Hirschberg).

    Args:
        gold: true class of each item.
        predicted: cluster of each item, same length.

    Returns:
        ``(homogeneity, completeness, v_measure)``, each in [0, 1]. One cluster for all is perfectly
        complete and not homogeneous at all (V = 0 when gold has several classes).
    """
    table = _contingency(gold, predicted)
    n = table.sum()
    if n == 0:
        return 1.0, 1.0, 1.0

    def entropy(counts: np.ndarray) -> float:
        p = counts[counts > 0] / n
        return float(-(p * np.log(p)).sum())

    nonzero = table > 0
    joint = table[nonzero] / n
    class_given_cluster = table / np.maximum(table.sum(axis=0, keepdims=True), 1)
    cluster_given_class = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
    h_class_given_cluster = float(-(joint * np.log(class_given_cluster[nonzero])).sum())
    h_cluster_given_class = float(-(joint * np.log(cluster_given_class[nonzero])).sum())
    h_class, h_cluster = entropy(table.sum(axis=1)), entropy(table.sum(axis=0))
    homogeneity = 1.0 if h_class == 0 else 1.0 - h_class_given_cluster / h_class
    completeness = 1.0 if h_cluster == 0 else 1.0 - h_cluster_given_class / h_cluster
    total = homogeneity + completeness
    return homogeneity, completeness, (2 * homogeneity * completeness / total if total else 0.0)
