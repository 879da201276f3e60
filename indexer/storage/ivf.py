"""Inverted-file (IVF) shards: how many lists a table gets, and how many of them a search probes.

Under ``auto``, a word table past `EXACT_LIMIT` vectors is stored as ``IVF{nlist},SQ8``: its vectors
are grouped into ``nlist`` lists around k-means centroids, and a search scores only the vectors of the
``nprobe`` lists whose centroids lie nearest to the query. The number of lists follows the table's
size (`ivf_lists`); the number probed is measured when the lists are trained (`choose_nprobe`):
the smallest one whose recall@10 against exact search reaches `TARGET_RECALL` on the training
vectors themselves. It is recorded with the shard's type (`with_nprobe`), so every shard is
searched as it was measured.

The shards a writing session trains share one training (the same centroids), so a search assigns the
query to the lists once per training, not once per shard (`ShardSet` in `shards`).
"""

from __future__ import annotations

import math

import faiss
import numpy as np

__all__ = [
    "CALIBRATION_QUERIES",
    "CODES_MARGIN",
    "DUPLICATE_SCORE",
    "IVF_MAX_LISTS",
    "IVF_POINTS_PER_LIST",
    "TARGET_RECALL",
    "auto_ivf_type",
    "choose_nprobe",
    "factory_string",
    "ivf_lists",
    "ivf_training_vectors",
    "recorded_nprobe",
    "with_nprobe",
]

IVF_POINTS_PER_LIST = 39
"""Training vectors per list: FAISS' own floor for k-means (fewer and it warns of a poor training)."""
IVF_MAX_LISTS = 1_024
"""Lists of an ``auto`` word table at most: 39,936 float32 training vectors (61 MB at 384-d).

At 2.3 million words 1,024 lists searched as fast as 4,096 at the same recall (12 against 9 ms
p50, both within the measured nprobe), and trained and filled them 3× faster (126 against 388 s).
"""
TARGET_RECALL = 0.95
"""Recall@10 against exact search the chosen ``nprobe`` reaches on held-out training vectors."""
CODES_MARGIN = 0.01
"""When the codes alone (every list probed) miss `TARGET_RECALL`, the target is their recall less this."""
CALIBRATION_QUERIES = 200
DUPLICATE_SCORE = 0.9999
"""A held-out query with a stored vector this close (the same text repeated) is not used to measure."""
"""Training vectors held out of the measuring index and searched as queries."""
_PROBE_STEPS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
_NPROBE_MARK = " nprobe="


def ivf_lists(vectors: int) -> int:
    """Lists for an IVF table trained on ``vectors`` vectors: the largest power of two they can train.

    That is the largest power of two with `IVF_POINTS_PER_LIST` training vectors per list, capped at
    `IVF_MAX_LISTS`; at least 1.

    Args:
        vectors: the training vectors at hand (the writer holds up to `ivf_training_vectors` of them).

    Returns:
        A power of two.
    """
    lists = max(1, min(IVF_MAX_LISTS, vectors // IVF_POINTS_PER_LIST))
    return 1 << (lists.bit_length() - 1)


def ivf_training_vectors() -> int:
    """Vectors an ``auto`` word table waits for before it trains its lists (enough for the most lists)."""
    return IVF_POINTS_PER_LIST * IVF_MAX_LISTS


def auto_ivf_type(vectors: int) -> str:
    """The FAISS factory string of an ``auto`` word table trained on ``vectors`` vectors."""
    return f"IVF{ivf_lists(vectors)},SQ8"


def with_nprobe(index_type: str, nprobe: int) -> str:
    """A shard record's type: the factory string and the ``nprobe`` its searches use."""
    return f"{index_type}{_NPROBE_MARK}{nprobe}"


def factory_string(recorded: str) -> str:
    """The FAISS factory string of a shard record's type (without a recorded ``nprobe``)."""
    return recorded.split(_NPROBE_MARK, 1)[0]


def recorded_nprobe(recorded: str) -> int | None:
    """The ``nprobe`` a shard record's type names (None: not recorded; the file predates measuring)."""
    if _NPROBE_MARK not in recorded:
        return None
    value = recorded.split(_NPROBE_MARK, 1)[1].strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def choose_nprobe(trained: faiss.Index, sample: np.ndarray, target: float = TARGET_RECALL) -> int:
    """The smallest ``nprobe`` whose recall@10 against exact search reaches ``target`` on the sample.

    When the codes themselves fall short of ``target`` (8-bit codes on a table of near ties), the target is
    the recall with every list probed less `CODES_MARGIN`.

    `CALIBRATION_QUERIES` vectors of the sample (every n-th) are held out as queries; the rest go into a copy
    of the trained index, and those with a copy among the rest (repeated text) are left out. A hit counts when
    its exact score is at least the exact 10th score (so ties count as found). Measured on a sample, the
    lists hold fewer vectors than the whole table's: a query's true neighbours then lie farther out, so the
    full table reaches at least this recall at the same ``nprobe`` (the benchmark checks it).

    Args:
        trained: the trained, empty IVF index (not changed).
        sample: ``(n, dimension)`` float32 training vectors, L2-normalised.
        target: recall@10 to reach.

    Returns:
        The ``nprobe`` (the number of lists when no smaller one reaches the target).
    """
    ivf = faiss.extract_index_ivf(trained)
    nlist = int(ivf.nlist)
    held = max(1, min(CALIBRATION_QUERIES, len(sample) // 10))
    if len(sample) - held < 10:
        return nlist
    step = len(sample) // held
    is_query = np.zeros(len(sample), dtype=bool)
    is_query[::step] = True
    queries = np.ascontiguousarray(sample[is_query][:held])
    base = np.ascontiguousarray(sample[~is_query])
    index = faiss.clone_index(trained)
    index.add(base)
    # exact best and 10th score per query (a plain matrix product: the base is a sample)
    best = np.empty(len(queries), dtype=np.float32)
    tenth = np.empty(len(queries), dtype=np.float32)
    for first in range(0, len(queries), 50):
        top = -np.partition(-(queries[first : first + 50] @ base.T), 9, axis=1)[:, :10]
        best[first : first + 50], tenth[first : first + 50] = top.max(axis=1), top.min(axis=1)
    # A query whose copy (repeated text) is in the sample sits in the list of that copy: it would be
    # found with one list probed and make the measure hopeful. Such queries are left out.
    fresh = best < DUPLICATE_SCORE
    if fresh.sum() >= 10:
        queries, tenth = queries[fresh], tenth[fresh]
    measured = faiss.extract_index_ivf(index)

    def recall(nprobe: int) -> float:
        measured.nprobe = nprobe
        _, found = index.search(queries, 10)
        # each hit scored exactly (the codes' own scores are approximate); a missing hit (-1) scores -2
        exact = np.einsum("qd,qkd->qk", queries, base[np.maximum(found, 0)])
        exact[found < 0] = -2.0
        return float(np.mean((exact >= tenth[:, None] - 1e-6).sum(axis=1) / 10))

    # Compressed codes cap the recall even with every list probed: aim just under that cap then.
    wanted = min(target, recall(nlist) - CODES_MARGIN)
    for nprobe in [p for p in _PROBE_STEPS if p < nlist]:
        if recall(nprobe) >= wanted:
            return nprobe
    return nlist


def deep_nprobe(nprobe: int, nlist: int, depth: int, vectors: int) -> int:
    """The lists to probe for ``depth`` hits: at least enough to hold twice as many vectors on average.

    A search for hundreds of hits (``--any-word`` groups its hits by lemma) must not run out of candidates in
    the few lists probed for ten.
    """
    needed = math.ceil(2 * depth * nlist / max(1, vectors))
    return max(1, min(nlist, max(nprobe, needed)))
