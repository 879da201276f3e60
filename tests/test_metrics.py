"""Evaluation metrics against values computed by hand."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

# the metrics live with the benchmarks that use them (benchmarks/metrics.py)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from metrics import macro_f1, ndcg_at_k, precision_at_k, rank_with_ties, recall_at_k, spearman


def test_ndcg_by_hand():
    # relevant: a (gain 1) at rank 2, c (gain 1) at rank 4; one more relevant doc never retrieved
    ranked = ["x", "a", "y", "c", "z"]
    relevance = {"a": 1, "c": 1, "d": 1}
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, relevance, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(ranked, relevance, 1) == 0.0
    assert ndcg_at_k(["a", "c", "d"], relevance, 3) == pytest.approx(1.0)
    assert ndcg_at_k(["a"], {}, 10) == 0.0
    # graded: the ideal order puts the gain-2 document first
    assert ndcg_at_k(["b", "a"], {"a": 2, "b": 1}, 2) == pytest.approx(
        (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    )


def test_recall_and_precision_by_hand():
    assert recall_at_k(["a", "b", "c"], {"a", "c", "d", "e"}, 2) == 0.25
    assert recall_at_k(["a", "b", "c"], {"a", "c", "d", "e"}, 3) == 0.5
    assert recall_at_k(["a"], set(), 3) == 0.0
    assert precision_at_k(["river", "money", "river"], "river", 3) == pytest.approx(2 / 3)
    assert precision_at_k(["river"], "river", 10) == pytest.approx(0.1)  # missing results are misses


def test_spearman_by_hand():
    assert list(rank_with_ties([10, 20, 20, 5])) == [2.0, 3.5, 3.5, 1.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # d = rank differences (0, -2, 1, 1): rho = 1 - 6 * 6 / (4 * 15) = 0.4
    assert spearman([1, 2, 3, 4], [1, 4, 2, 3]) == pytest.approx(0.4)
    # with ties: ranks x = (1, 2.5, 2.5, 4), y = (1, 2, 3, 4); Pearson of those, worked by hand
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    with pytest.raises(ValueError):
        spearman([1], [1])


def test_macro_f1_by_hand():
    gold = ["a", "a", "a", "b"]
    predicted = ["a", "a", "b", "b"]
    # a: P = 1, R = 2/3, F1 = 0.8; b: P = 1/2, R = 1, F1 = 2/3
    assert macro_f1(gold, predicted) == pytest.approx((0.8 + 2 / 3) / 2)
    assert macro_f1(["a", "b"], ["a", "b"]) == 1.0
    assert macro_f1(["a", "a"], ["c", "c"]) == 0.0
