"""Assertions shared by test modules (pytest puts this folder on sys.path: ``from helpers import ...``)."""

from __future__ import annotations


def assert_found(*hit_lists: list) -> None:
    """Fail unless every list holds hits: two empty lists compare equal while proving nothing."""
    assert all(hit_lists), [len(hits) for hits in hit_lists]
