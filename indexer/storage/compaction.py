"""Merging small exact shards by size, dropping the vectors of deleted rows (behind merges and ``compact``).

A shard holds a contiguous run of rowids, so shards that are not neighbours (a shard between them was
dropped, all its rows deleted) cannot simply be concatenated, and a deleted row's vector keeps its place.
A *compacting* merge gives the live rows of the shards it merges new rowids instead: fresh ones, from the
table's next free rowid on, in their old order, so the merged shard is a contiguous run again and holds
no deleted vector. The rows move with their vectors in the same commit (a sentence's words and passages
follow it), and readers of the state before keep their own rowids and files.

Which shards (`plan_compaction`): small exact shards are grouped by size class (powers of two of their live
vectors) and two of one class become one of the next, like the digits of a binary counter; so a table
holds at most one small shard per class, about log2 of its small vectors in all, however adds and deletes
alternate, and a vector is rewritten about log2 times over its life. A shard that has lost most of its
vectors to deletes is rewritten without them. ``compact`` merges every small exact shard into one and
rewrites every exact shard holding deleted vectors.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from senseindex.indexer.storage import vectors
from senseindex.indexer.storage.shards import Shard, ShardSet
from senseindex.indexer.storage.vectors import FLAT_INDEX_TYPE, merge_vectors

# Exact shards under this share of a full shard's bytes (`vectors.SHARD_BYTES`, read at each plan) are
# "small" (merged by size class).
SMALL_SHARD_SHARE = 4
# A shard whose deleted vectors are at least this share of it is rewritten without them.
DELETED_SHARE = 0.5


class Compaction(NamedTuple):
    """Shards of one table whose live vectors become one run of fresh rowids.

    Attributes:
        shards: the shards, in rowid order.
        live: their live vectors, in all.
        message: what the merge does, for the writer's report.
    """

    shards: list[Shard]
    live: int
    message: str


def plan_compaction(shard_set: ShardSet, dimension: int, full: bool = False) -> list[Compaction]:
    """The compacting merges of one table's exact shards.

    Args:
        shard_set: the table's shards, with its deleted rowids.
        dimension: the table's vector dimension.
        full: ``compact``: every small exact shard into one, and every exact shard holding deleted
            vectors rewritten without them.

    Returns:
        The merges (none when nothing is worth it).
    """
    small = vectors.SHARD_BYTES // SMALL_SHARD_SHARE // (4 * dimension)
    exact = [s for s in shard_set.shards if s.index_type == FLAT_INDEX_TYPE and shard_set.live_count(s) > 0]
    plans: list[Compaction] = []
    sparse = [
        s
        for s in exact
        if s.count - shard_set.live_count(s) >= (1 if full else max(1, int(DELETED_SHARE * s.count)))
    ]
    candidates = [s for s in exact if shard_set.live_count(s) < small]
    if full:
        group = sorted({*candidates, *sparse}, key=lambda s: s.first_id)
        if len(group) > 1 or any(s in sparse for s in group):
            plans.append(_plan(group, shard_set, "compacted"))
        return plans
    # binary counter over size classes: two small shards of a class become one of the next
    classes: dict[int, list[Shard]] = {}
    groups: list[list[Shard]] = []
    for shard in sorted(candidates, key=shard_set.live_count):
        group = [shard]
        while True:
            live = sum(shard_set.live_count(s) for s in group)
            size_class = live.bit_length() - 1
            if live >= small:
                groups.append(group)
                break
            if size_class not in classes:
                classes[size_class] = group
                break
            group = classes.pop(size_class) + group
    for group in [*groups, *classes.values()]:
        if len(group) > 1 or any(s in sparse for s in group):
            plans.append(_plan(sorted(group, key=lambda s: s.first_id), shard_set, "merged"))
    for shard in sparse:
        if shard not in candidates:
            plans.append(_plan([shard], shard_set, "rewritten"))
    return plans


def _plan(group: list[Shard], shard_set: ShardSet, verb: str) -> Compaction:
    live = sum(shard_set.live_count(s) for s in group)
    dropped = sum(s.count for s in group) - live
    return Compaction(
        group,
        live,
        f"{len(group)} exact shard(s) {verb} into one of {live:,} vectors"
        + (f", {dropped:,} deleted vectors dropped" if dropped else ""),
    )


def compact_shards(
    connection: sqlite3.Connection,
    folder: Path,
    shard_set: ShardSet,
    plan: Compaction,
    dimension: int,
    first_id: int,
    first_number: int,
) -> tuple[list[Shard], list[tuple[int, int]]]:
    """Write a compaction's live vectors as new shards from ``first_id`` on and move their rows there.

    Runs inside the caller's transaction; the caller replaces the shard records and commits.

    Args:
        connection: the writer's connection.
        folder: the index folder.
        shard_set: the table's shards.
        plan: the compaction.
        dimension: the table's vector dimension.
        first_id: the table's next free rowid: the first new one.
        first_number: number of the first new shard file.

    Returns:
        ``(new shards, deleted ranges no longer needed)``.
    """
    table = shard_set.shards[0].table
    parts: list[np.ndarray] = []
    old_ids: list[np.ndarray] = []
    for shard in plan.shards:
        mask = shard_set.live_mask(shard)
        vectors = shard_set.shard_index(shard).reconstruct_n(0, shard.count)
        parts.append(np.ascontiguousarray(vectors[mask]))
        old_ids.append(np.arange(shard.first_id, shard.first_id + shard.count, dtype=np.int64)[mask])
    moved = np.concatenate(old_ids)
    _move_rows(connection, table, moved.tolist(), first_id)
    new = merge_vectors(folder, table, parts, dimension, FLAT_INDEX_TYPE, first_id, first_number)
    ranges = [(s.first_id, s.first_id + s.count - 1) for s in plan.shards]
    return new, ranges


def _move_rows(connection: sqlite3.Connection, table: str, old: Sequence[int], first_id: int) -> None:
    """Give rows of a table the rowids ``first_id, first_id + 1, …`` in their order, and follow them."""
    connection.execute("create temp table if not exists moved_rows (old integer primary key, new integer)")
    connection.execute("delete from moved_rows")
    connection.executemany(
        "insert into moved_rows (old, new) values (?, ?)",
        [(int(o), first_id + i) for i, o in enumerate(old)],
    )
    connection.execute(
        f"update {table} set id = (select new from moved_rows where old = {table}.id) "
        "where id in (select old from moved_rows)"
    )
    if table == "sentences":
        for column in ("sentence",):
            connection.execute(
                f"update words set {column} = (select new from moved_rows where old = words.{column}) "
                f"where {column} in (select old from moved_rows)"
            )
        for column in ("first_sentence", "last_sentence"):
            connection.execute(
                f"update passages set {column} = (select new from moved_rows where old = passages.{column}) "
                f"where {column} in (select old from moved_rows)"
            )
    connection.execute("delete from moved_rows")


def forget_deleted(connection: sqlite3.Connection, table: str, first: int, last: int) -> None:
    """Drop the deleted-rowid records within a range whose vectors are gone from every shard.

    A record reaching past the range (a document cut between two shards) keeps its part outside.
    """
    where = "table_name = ? and "
    connection.execute(
        f"delete from deleted where {where} first_id >= ? and last_id <= ?", [table, first, last]
    )
    connection.execute(
        f"update deleted set first_id = ? where {where} first_id between ? and ? and last_id > ?",
        [last + 1, table, first, last, last],
    )
    connection.execute(
        f"update deleted set last_id = ? where {where} last_id between ? and ? and first_id < ?",
        [first - 1, table, first, last, first],
    )
