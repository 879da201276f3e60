"""``check --deep`` (stored vectors compared with the model's) and ``compact``.

`deep_problems` re-embeds a sample of stored sentences with the index's own model and compares each with the
vector stored for it: a vector swapped, overwritten or written for another sentence shows there even when the
file is whole and its checksum matches (it was wrong when written). `compact_index` merges an index's small
shards and drops deleted vectors (see `storage.compaction`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from senseindex.indexer.encoder import Encoder, load_index_encoder
from senseindex.indexer.storage import IndexReader, IndexStore, faiss_threads, read_manifest
from senseindex.indexer.storage.verify import norm_tolerance

DEEP_SAMPLE = 50
"""Sentences ``check --deep`` re-embeds by default."""
# Least cosine between a re-embedded sentence and its stored vector, by how the type stores vectors: the
# model's own run-to-run differences (batch shapes, bfloat16 against float32) stay above 0.99; a quantised
# vector keeps 0.97 or more; a vector of another sentence is rarely above 0.9.
EXACT_COSINE = 0.99
SQ_COSINE = 0.97
LOSSY_COSINE = 0.85


def least_cosine(index_type: str) -> float:
    """The least cosine a re-embedded sentence may have with its stored vector under an index type."""
    tolerance = norm_tolerance(index_type)
    if tolerance <= 1e-3:
        return EXACT_COSINE
    return SQ_COSINE if tolerance <= 0.05 else LOSSY_COSINE


def deep_problems(
    store: IndexReader,
    sample: int = DEEP_SAMPLE,
    backend: str = "auto",
    model: str | None = None,
    encoder: Encoder | None = None,
) -> list[str]:
    """Re-embed a sample of stored sentences and report those whose stored vector differs.

    Args:
        store: the index, opened.
        sample: sentences to re-embed, spread evenly over the table by rowid.
        backend: what runs the model.
        model: a model folder to use instead of the stored one.
        encoder: the index's encoder, already loaded (the shards of a sharded index share one);
            ``backend`` and ``model`` load it otherwise.

    Returns:
        One line when some sampled vectors differ (how many, the least cosine, the first rowid); none
        otherwise.

    Raises:
        ModelMismatch, ModelLoadError: the index's model cannot be loaded.
        IndexCorrupted: a setting the model needs is missing.
    """
    rows = store.db.execute("select id, text from sentences order by id").fetchall()
    if not rows or sample <= 0:
        return []
    picked = [rows[int(i)] for i in np.unique(np.linspace(0, len(rows) - 1, min(sample, len(rows))).round())]
    ids = np.asarray([row[0] for row in picked], dtype=np.int64)
    if encoder is None:
        encoder = load_index_encoder(store.settings, model, backend)
    fresh = encoder.encode([row[1] for row in picked], [[] for _ in picked]).sentence_vectors
    shard_set = store.shard_set("sentences")
    with faiss_threads(1):
        stored = shard_set.reconstruct(ids)
    cosines = np.einsum("ij,ij->i", fresh, stored)
    firsts = np.asarray([s.first_id for s in shard_set.shards], dtype=np.int64)
    types = [shard_set.shards[i].index_type for i in np.searchsorted(firsts, ids, side="right") - 1]
    least = np.asarray([least_cosine(kind) for kind in types])
    bad = ~(cosines >= least)  # NaN counts as bad
    if not bad.any():
        return []
    first = int(np.flatnonzero(bad)[0])
    return [
        f"sentences: {int(bad.sum())} of {len(ids)} sampled sentences have a stored vector that is not the "
        f"model's for their text (least cosine {np.nanmin(np.where(np.isfinite(cosines), cosines, -1)):.3f}, "
        f"needed {least[first]:.2f}; the first is rowid {int(ids[first])}); rebuild the index"
    ]


def compact_index(index_dir: str | Path) -> list[str]:
    """Merge an index's small exact shards into one per table and drop the vectors of deleted rows.

    Merges and deletes already keep a table at about log2 of its vectors in small shards; ``compact``
    goes further, for an index that will mostly be read: the fewest files, and no deleted vector left
    in an exact shard. Readers keep working meanwhile.

    Args:
        index_dir: the index folder (a sharded index: every shard).

    Returns:
        One line per merge (empty when there was nothing to compact).

    Raises:
        IndexNotFound, SchemaMismatch, IndexCorrupted: no usable index in ``index_dir``.
        IndexBusy: another process is writing to it.
    """
    manifest = read_manifest(Path(index_dir))
    folders = manifest.folders(Path(index_dir)) if manifest is not None else [Path(index_dir)]
    messages: list[str] = []
    for folder in folders:
        store = IndexStore.open_for_writing(folder)
        try:
            with faiss_threads(None):
                lines = store.compact()
        except BaseException:
            store.abort()
            raise
        prefix = f"{folder.name}: " if manifest is not None else ""
        messages += [prefix + line for line in lines]
    return messages


__all__ = ["DEEP_SAMPLE", "compact_index", "deep_problems", "least_cosine"]
