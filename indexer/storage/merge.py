"""Which shards a writer merges when it finishes.

Shards whose vectors are all deleted are dropped, runs of exact shards of a compressed table become trained
shards; small exact shards are merged by size class (`compaction`). The writer (`IndexStore.merge_shards`)
writes the new files and records them.
"""

from __future__ import annotations

from typing import NamedTuple

from senseindex.indexer.storage import vectors
from senseindex.indexer.storage.ivf import auto_ivf_type, ivf_training_vectors
from senseindex.indexer.storage.shards import Shard, ShardSet
from senseindex.indexer.storage.vectors import (
    AUTO_COMPRESSED_TYPE,
    AUTO_INDEX_TYPE,
    AUTO_IVF_TABLES,
    FLAT_INDEX_TYPE,
    MIN_TRAINED_SHARD,
    training_needed,
)

# Formerly the run of small shards merged into one; small shards are now merged by size class
# (see `compaction`), and this stays for callers that import it.
MERGE_SMALL_SHARDS = 8
# Vectors read back and rewritten by one merge at most (200 MB of 384-d float32, held twice).
MERGE_VECTORS = 131_072


class Merge(NamedTuple):
    """Adjacent shards to rewrite as shards of one index type.

    Attributes:
        run: the shards, in rowid order, each starting where the previous one ends.
        index_type: the type of the new shards.
        message: what the merge does, for the writer's report.
    """

    run: list[Shard]
    index_type: str
    message: str


def emptied_shards(shard_set: ShardSet) -> list[Shard]:
    """The shards of a table whose every vector is deleted (dropped without a rewrite)."""
    return [shard for shard in shard_set.shards if shard_set.live_count(shard) == 0]


def plan_merges(shard_set: ShardSet, requested_type: str, dimension: int) -> list[Merge]:
    """The merges of one table's live shards.

    Exact runs are trained into its compressed type when the table has one and a run holds enough vectors to
    train it (small exact shards are merged by `compaction.plan_compaction`).

    Args:
        shard_set: the table's shards.
        requested_type: the index's ``index_type`` setting.
        dimension: the table's vector dimension.

    Returns:
        The merges, in rowid order (none when nothing is worth merging).
    """
    live = [s for s in shard_set.shards if shard_set.live_count(s) > 0]
    table = shard_set.shards[0].table if shard_set.shards else ""
    target = compressed_type(requested_type, sum(s.count for s in live), table)
    exact = [s for s in live if s.index_type == FLAT_INDEX_TYPE]
    merges: list[Merge] = []
    if target is not None:
        enough = max(MIN_TRAINED_SHARD, training_needed(target, dimension))
        for whole in adjacent_runs(exact):
            for run in pieces(whole, MERGE_VECTORS, enough):
                total = sum(s.count for s in run)
                run_type = target
                if requested_type == AUTO_INDEX_TYPE and table in AUTO_IVF_TABLES:
                    # an auto word table's lists follow the size of the run they are trained on
                    run_type = auto_ivf_type(min(total, ivf_training_vectors()))
                if total >= enough:
                    message = (
                        f"{len(run)} exact shard(s), {total:,} vectors, "
                        f"compressed to {run_type} trained on them"
                    )
                    merges.append(Merge(run, run_type, message))
    return merges


def compressed_type(requested_type: str, total: int, table: str = "") -> str | None:
    """The type a table's exact shards are merged into (None: they stay exact).

    Args:
        requested_type: the index's ``index_type`` setting.
        total: the table's live vectors.
        table: the table (under ``auto`` a word table gets lists, sized by each run merged).
    """
    if requested_type == FLAT_INDEX_TYPE:
        return None
    if requested_type == AUTO_INDEX_TYPE:
        # read at call time, like the shard writer does: tests lower the threshold
        if total <= vectors.EXACT_LIMIT:
            return None
        # the fewest lists a run needs to train: a larger run gets more (plan_merges)
        return auto_ivf_type(MIN_TRAINED_SHARD) if table in AUTO_IVF_TABLES else AUTO_COMPRESSED_TYPE
    return requested_type


def adjacent_runs(shards: list[Shard]) -> list[list[Shard]]:
    """Shards (in rowid order) grouped into runs where each starts where the previous one ends."""
    runs: list[list[Shard]] = []
    for shard in shards:
        if runs and runs[-1][-1].first_id + runs[-1][-1].count == shard.first_id:
            runs[-1].append(shard)
        else:
            runs.append([shard])
    return runs


def pieces(run: list[Shard], limit: int, least: int) -> list[list[Shard]]:
    """A run of shards cut into consecutive pieces of at most ``limit`` vectors where it can be.

    A last piece under ``least`` vectors joins the piece before it.
    """
    result: list[list[Shard]] = []
    for shard in run:
        if result and sum(s.count for s in result[-1]) + shard.count <= limit:
            result[-1].append(shard)
        else:
            result.append([shard])
    if len(result) > 1 and sum(s.count for s in result[-1]) < least:
        result[-2] += result.pop()
    return result
