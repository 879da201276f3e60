"""FAISS shard files opened for reading: searching a table's shards and reading vectors by rowid.

A shard holds the vectors of a contiguous run of SQLite rowids (see
`vectors`, which writes them): FAISS result ``i`` of a shard is
rowid ``first_id + i``. Deleted rows keep their vectors; searches skip them with a FAISS ID selector.

An IVF shard is searched with the ``nprobe`` recorded with its type (measured when it was trained, see
`ivf`); shards that share one training (the same centroids) have the query assigned to their
lists once per search, not once per shard.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from senseindex.errors import IndexCorrupted
from senseindex.indexer.storage.ivf import deep_nprobe, recorded_nprobe
from senseindex.indexer.storage.threads import SEARCH_THREADS, faiss_threads

IVF_PROBE_FRACTION = 16
"""IVF shards without a recorded ``nprobe`` are searched with ``nprobe = nlist / IVF_PROBE_FRACTION``."""
# Which training each opened IVF shard has (see `_coarse_key`; faiss objects take no new attributes)
_TRAININGS: weakref.WeakKeyDictionary[faiss.Index, str] = weakref.WeakKeyDictionary()
HNSW_EF_SEARCH = 128
SHALLOW_DEPTH = 32
"""Hits a deep search over many shards first asks of each shard at least (see `ShardSet.search`)."""
# The file each opened shard was read from, as (device, inode, size): a memory-mapped file cut short
# under a reader would kill the process (SIGBUS) at the first touch of a page that is gone
_OPENED_FROM: weakref.WeakKeyDictionary[faiss.Index, tuple[int, int, int]] = weakref.WeakKeyDictionary()

# A shard's live vectors: (bitmap of those kept, little-endian bit order; its FAISS selector; number
# left out). The bitmap must stay referenced while the selector is used.
Selection = tuple[np.ndarray, faiss.IDSelector, int]
# The vectors of a shard that standing exclusions keep: ((count,) bool mask, its selection).
Standing = tuple[np.ndarray, Selection]


@dataclass(frozen=True)
class Shard:
    """One vector file of a table.

    Attributes:
        table: ``sentences``, ``words`` or ``passages``.
        file: the file name inside the index folder.
        first_id: rowid of the shard's first vector; vector ``i`` is rowid ``first_id + i``.
        count: number of vectors.
        index_type: ``flat`` or the FAISS factory string it was built with.
        checksum: ``sha256:`` and the hex digest of the file's bytes, taken when it was written (None for
            a shard of a format-3 index, written before checksums were recorded).
    """

    table: str
    file: str
    first_id: int
    count: int
    index_type: str
    checksum: str | None = None


CHECKSUM_PREFIX = "sha256:"


def bytes_checksum(data: memoryview | bytes) -> str:
    """The checksum recorded for a shard file's bytes: ``sha256:`` and the hex digest."""
    return CHECKSUM_PREFIX + hashlib.sha256(data).hexdigest()


def file_checksum(path: Path) -> str:
    """`bytes_checksum` of a file, read in blocks.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 22):
            digest.update(block)
    return CHECKSUM_PREFIX + digest.hexdigest()


class ShardSet:
    """The shards of one table, opened for searching and for reading vectors by rowid.

    Flat and scalar-quantised shards are memory-mapped, so opening an index is fast and processes
    reading the same index share its pages.

    Args:
        folder: the index folder.
        shards: the table's shards, as recorded in the database.
        dimension: the table's vector dimension.
        deleted: ``(first_id, last_id)`` rowid ranges (inclusive) whose vectors searches must skip.
        opened: shard indexes already opened, by file name (shared with an older snapshot).
    """

    def __init__(
        self,
        folder: Path,
        shards: list[Shard],
        dimension: int,
        deleted: Iterable[tuple[int, int]] = (),
        opened: dict[str, faiss.Index] | None = None,
    ) -> None:
        self.folder = folder
        self.shards = sorted(shards, key=lambda s: s.first_id)
        self.dimension = dimension
        # indexes a previous snapshot opened, for the files this one still has (names are never reused)
        names = {s.file for s in shards}
        self._indexes: dict[str, faiss.Index] = {k: v for k, v in (opened or {}).items() if k in names}
        self._firsts = np.asarray([s.first_id for s in self.shards], dtype=np.int64)
        self.ntotal = sum(s.count for s in self.shards)
        # per shard with deleted vectors: (live bitmap, its FAISS selector, number deleted)
        self._live: dict[str, Selection] = {}
        ranges = sorted(deleted)
        for shard in self.shards:
            live = np.ones(shard.count, dtype=bool)
            for first, last in ranges:
                start, stop = max(first, shard.first_id), min(last + 1, shard.first_id + shard.count)
                if start < stop:
                    live[start - shard.first_id : stop - shard.first_id] = False
            gone = int(shard.count - live.sum())
            if gone:
                bitmap = np.packbits(live, bitorder="little")
                selector = faiss.IDSelectorBitmap(shard.count, faiss.swig_ptr(bitmap))
                self._live[shard.file] = (bitmap, selector, gone)
        # per shard and kind of standing exclusion (none, or the function-word bitmap given): the
        # array it was built from, and the mask and selection of the vectors it keeps (None: all)
        self._standing: dict[tuple[str, bool], tuple[np.ndarray | None, Standing | None]] = {}
        self._trainings: dict[str, int] | None = None  # `_trained_together`, once every shard is open

    def open_all(self) -> dict[str, faiss.Index]:
        """Open every shard now (a reader then keeps its files even if a writer retires them).

        Returns:
            The opened indexes by file name.

        Raises:
            IndexCorrupted: a shard file is missing or unreadable.
        """
        for shard in self.shards:
            self.shard_index(shard)
        return self.opened

    @property
    def opened(self) -> dict[str, faiss.Index]:
        """The shard indexes opened so far, by file name (a newer snapshot reuses them)."""
        return dict(self._indexes)

    def live_mask(self, shard: Shard) -> np.ndarray:
        """``(count,)`` bool: which of a shard's vectors are not deleted."""
        if shard.file not in self._live:
            return np.ones(shard.count, dtype=bool)
        bitmap = self._live[shard.file][0]
        return np.unpackbits(bitmap, count=shard.count, bitorder="little").astype(bool)

    def live_count(self, shard: Shard) -> int:
        """Vectors of a shard that are not deleted."""
        return shard.count - (self._live[shard.file][2] if shard.file in self._live else 0)

    def shard_index(self, shard: Shard) -> faiss.Index:
        """A shard's FAISS index, opened on first use.

        Raises:
            IndexCorrupted: the file is missing, unreadable or disagrees with its record.
        """
        index = self._indexes.get(shard.file)
        if index is None:
            index = open_shard(self.folder / shard.file, shard, self.dimension)
            self._indexes[shard.file] = index
        else:
            _check_still_whole(self.folder / shard.file, index)
        return index

    def search(
        self,
        vector: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
        excluded_rows: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rowids over every shard.

        Args:
            vector: ``(dimension,)`` float32, L2-normalised.
            k: number of hits.
            allowed: ``(n,)`` int64 rowids; when given, only these are searched (through a FAISS ID
                selector, so the cost stays that of a search, whatever their number).
            excluded: ``(m,)`` int64 rowids never returned (also through the selector, so the ``k``
                hits are ``k`` others, not what is left of ``k`` once these are dropped).
            excluded_rows: ``(m,)`` bool by rowid: True for rows never returned (rows past its end
                are not excluded). For a standing set too large to pass as rowids at every search.

        Returns:
            ``(ids, scores)``: int64 and float32, best first.

        FAISS runs on one thread of the caller's (see `threads`).
        """
        with faiss_threads(SEARCH_THREADS):
            return self._search(vector, k, allowed, excluded, excluded_rows)

    def _search(
        self,
        vector: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        excluded: np.ndarray | None,
        excluded_rows: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`search`, with FAISS's threads already set.

        A deep search over many shards first asks each shard for its share of ``k`` (twice over, at
        least `SHALLOW_DEPTH`), then searches deeper only the shards whose last hit could still be among
        the ``k`` best: the hits are those of searching every shard ``k`` deep, at a fraction of the cost
        of filling ``k``-long result heaps in every shard.
        """
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        coarse = _Coarse(query, k, self._trained_together())
        plans: list[tuple[Shard, Selection | None, int]] = []
        for shard in self.shards:
            standing = self._standing_selection(shard, excluded_rows)
            dropped = _local_ids(shard, excluded) if excluded is not None else None
            if allowed is None and (dropped is None or not len(dropped)):
                selection = standing[1] if standing is not None else None
            else:
                selection = self._selection(shard, allowed, dropped, standing)
                if selection is None:
                    continue
            depth = min(k, shard.count - (selection[2] if selection is not None else 0))
            if depth > 0:
                plans.append((shard, selection, depth))
        searched = sum(shard.count for shard, _, _ in plans)
        results: list[tuple[np.ndarray, np.ndarray]] = []
        shallow: list[int] = []  # plans searched less deep than they may be
        for number, (shard, selection, depth) in enumerate(plans):
            share = max(SHALLOW_DEPTH, -(-2 * k * shard.count // max(1, searched)))
            asked = depth if len(plans) == 1 else min(depth, share)
            scores, local = self._search_shard(shard, query, asked, selection, coarse)
            results.append((local + shard.first_id, scores))
            if asked < depth and len(local) == asked:
                shallow.append(number)
        ids, scores = _best(results, k)
        if shallow:
            # a shard's unseen hits score at most its last one: only where that reaches the k-th best
            # can they count (ties included)
            bar = scores[-1] if len(scores) == k else -np.inf
            deeper = [n for n in shallow if results[n][1][-1] >= bar]
            for number in deeper:
                shard, selection, depth = plans[number]
                found, local = self._search_shard(shard, query, depth, selection, coarse)
                results[number] = (local + shard.first_id, found)
            if deeper:
                ids, scores = _best(results, k)
        return ids, scores

    def _standing_selection(self, shard: Shard, excluded_rows: np.ndarray | None) -> Standing | None:
        """The mask and selection of a shard's vectors that are neither deleted nor in ``excluded_rows``.

        Kept per shard while the same ``excluded_rows`` array comes back (a reader's function-word
        bitmap, replaced only when rows are added), so a search pays for its own exclusions only.

        Returns:
            ``((count,) bool mask of the vectors kept, its selection)``; None when every vector is kept.
        """
        key = (shard.file, excluded_rows is None)
        cached = self._standing.get(key)
        if cached is not None and cached[0] is excluded_rows:
            return cached[1]
        live = self._live.get(shard.file)
        if excluded_rows is None:  # deleted rows only: the selection made when the set was opened
            standing = (self.live_mask(shard), live) if live is not None else None
        else:
            mask = self.live_mask(shard)
            part = excluded_rows[shard.first_id : shard.first_id + shard.count]
            mask[: len(part)] &= ~part
            left_out = int(shard.count - np.count_nonzero(mask))
            standing = (mask, _selected(shard, mask, left_out)) if left_out else None
        self._standing[key] = (excluded_rows, standing)
        return standing

    def _selection(
        self,
        shard: Shard,
        allowed: np.ndarray | None,
        dropped: np.ndarray | None,
        standing: Standing | None,
    ) -> Selection | None:
        """The selection of a shard's allowed vectors, less ``dropped`` and the standing exclusions.

        Args:
            shard: the shard.
            allowed: ``(n,)`` int64 rowids (any shard's) searched; None for all.
            dropped: ``(m,)`` int64 positions in the shard never returned; None for none.
            standing: `_standing_selection` of the shard.

        Returns:
            The selection; None when no vector is left. A bitmap costs a bit per vector of the
            shard, built in well under a millisecond per million.
        """
        if allowed is None:
            mask = standing[0].copy() if standing is not None else np.ones(shard.count, dtype=bool)
        else:
            local = _local_ids(shard, allowed)
            if not len(local):
                return None
            mask = np.zeros(shard.count, dtype=bool)
            mask[local] = True
            if standing is not None:
                mask &= standing[0]
        if dropped is not None:
            mask[dropped] = False
        left_out = int(shard.count - np.count_nonzero(mask))
        if left_out == shard.count:
            return None
        return _selected(shard, mask, left_out)

    def _search_shard(
        self,
        shard: Shard,
        query: np.ndarray,
        depth: int,
        selection: Selection | None,
        coarse: _Coarse | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search one shard, only among the vectors ``selection`` keeps (all when None).

        Raises:
            IndexCorrupted: FAISS fails on the stored file.
        """
        index = self.shard_index(shard)
        try:
            if coarse is not None and index in _TRAININGS:
                return coarse.search(index, depth, selection[1] if selection is not None else None)
            if selection is None:
                scores, local = index.search(query, depth)
            else:
                bitmap, selector, left_out = selection
                try:
                    scores, local = index.search(query, depth, params=_search_parameters(index, selector))
                except RuntimeError:  # a type without selector support (plain PQ): search deeper, filter
                    scores, local = index.search(query, min(shard.count, depth + left_out))
                    kept = np.unpackbits(bitmap, count=shard.count, bitorder="little").astype(bool)
                    keep = (local[0] >= 0) & kept[np.maximum(local[0], 0)]
                    return scores[0][keep][:depth], local[0][keep][:depth]
        except RuntimeError as error:
            raise _damaged(self.folder / shard.file, error) from error
        keep = local[0] >= 0
        return scores[0][keep], local[0][keep]

    def _trained_together(self) -> dict[str, int]:
        """Vectors per IVF training (the key `open_shard` gives), over every shard of the table."""
        if self._trainings is None:
            totals: dict[str, int] = {}
            for shard in self.shards:
                key = _TRAININGS.get(self.shard_index(shard))
                if key is not None:
                    totals[key] = totals.get(key, 0) + shard.count
            self._trainings = totals  # a set's shards never change: a new snapshot is a new set
        return self._trainings

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors read by rowid (decoded from a compressed shard), without a scan.

        Args:
            ids: ``(n,)`` int64 rowids, each in some shard.

        Returns:
            ``(n, dimension)`` float32, in the order of ``ids``.

        Raises:
            IndexCorrupted: an id is in no shard.
        """
        ids = np.asarray(ids, dtype=np.int64)
        result = np.zeros((len(ids), self.dimension), dtype=np.float32)
        if not len(ids):
            return result
        which = np.searchsorted(self._firsts, ids, side="right") - 1
        for number in np.unique(which):
            rows = np.flatnonzero(which == number)
            if number < 0:
                raise IndexCorrupted(f"vector {int(ids[rows[0]])} is in no shard; rebuild the index")
            shard = self.shards[number]
            local = ids[rows] - shard.first_id
            if local.max() >= shard.count:
                raise IndexCorrupted(f"vector {int(ids[rows].max())} is in no shard; rebuild the index")
            index = self.shard_index(shard)
            try:
                with faiss_threads(SEARCH_THREADS):
                    result[rows] = index.reconstruct_batch(np.ascontiguousarray(local))
            except RuntimeError as error:
                raise _damaged(self.folder / shard.file, error) from error
        return result


class _Coarse:
    """One query's assignment to IVF lists, computed once per training and reused by its shards.

    Args:
        query: ``(1, dimension)`` float32.
        depth: hits asked for over the whole table (a deep search probes more lists, see
            `ivf.deep_nprobe`).
        totals: vectors per training, over the table.
    """

    def __init__(self, query: np.ndarray, depth: int, totals: dict[str, int]) -> None:
        self.query = query
        self.depth = depth
        self.totals = totals
        self._assigned: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}

    def search(
        self, index: faiss.Index, depth: int, selector: faiss.IDSelector | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search an IVF shard (``index`` itself an `IndexIVF`) among the lists assigned to the query."""
        key = _TRAININGS[index]
        ivf = faiss.extract_index_ivf(index)
        if key not in self._assigned:
            nprobe = deep_nprobe(int(ivf.nprobe), int(ivf.nlist), self.depth, self.totals.get(key, 0))
            scores, lists = ivf.quantizer.search(self.query, nprobe)
            self._assigned[key] = (scores, lists, nprobe)
        scores, lists, nprobe = self._assigned[key]
        # The faiss stub lacks the keyword constructors faiss's Python layer adds.
        params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)  # type: ignore[call-arg]
        found = np.empty((1, depth), dtype=np.float32)
        local = np.empty((1, depth), dtype=np.int64)
        # the C++ call: faiss's Python wrapper of it takes no search parameters (the selector)
        ivf.search_preassigned_c(  # type: ignore[attr-defined]  # the C++ method, renamed by faiss
            1,
            faiss.swig_ptr(self.query),
            depth,
            faiss.swig_ptr(lists),
            faiss.swig_ptr(scores),
            faiss.swig_ptr(found),
            faiss.swig_ptr(local),
            False,
            params,
        )
        keep = local[0] >= 0
        return found[0][keep], local[0][keep]


def _best(results: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of some shards' ``(rowids, scores)`` hits, best first (the earlier shard on ties)."""
    if not results:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    ids = np.concatenate([found for found, _ in results])
    scores = np.concatenate([found for _, found in results])
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[order], scores[order]


def _selected(shard: Shard, mask: np.ndarray, left_out: int) -> Selection:
    """The selection of the vectors a ``(count,)`` bool mask keeps (``left_out`` of them are not)."""
    bitmap = np.packbits(mask, bitorder="little")
    return bitmap, faiss.IDSelectorBitmap(shard.count, faiss.swig_ptr(bitmap)), left_out


def _held(shard: Shard, ids: np.ndarray) -> np.ndarray:
    """``(len(ids),)`` bool: which of some rowids a shard holds."""
    return (ids >= shard.first_id) & (ids < shard.first_id + shard.count)


def _local_ids(shard: Shard, ids: np.ndarray) -> np.ndarray:
    """The positions in a shard of those of some rowids that it holds."""
    return ids[_held(shard, ids)] - shard.first_id


def _coarse_key(index: faiss.Index) -> str | None:
    """What identifies an IVF shard's training (its centroids), when its lists can be assigned apart."""
    if not isinstance(index, faiss.IndexIVF):
        return None  # a transform before the lists, or no lists at all
    quantizer = faiss.downcast_index(index.quantizer)
    if not isinstance(quantizer, faiss.IndexFlat):
        return None
    centroids = faiss.vector_to_array(quantizer.codes)
    digest = hashlib.blake2b(centroids.tobytes(), digest_size=16)
    digest.update(f"{index.nlist} {index.metric_type}".encode())
    return digest.hexdigest()


def _damaged(path: Path, error: RuntimeError) -> IndexCorrupted:
    """The error for a stored shard FAISS cannot use (the vectors and the query were checked)."""
    reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]
    return IndexCorrupted(f"{path} cannot be read ({reason[:160]}); rebuild the index")


def _search_parameters(index: faiss.Index, selector: faiss.IDSelector) -> faiss.SearchParameters:
    """Search parameters that skip deleted vectors and keep the shard's own search settings."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        # The faiss stub lacks the keyword constructors faiss's Python layer adds to every
        # SearchParameters class (and SearchParametersHNSW itself).
        return faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nprobe)  # type: ignore[call-arg]
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
            sel=selector, efSearch=index.hnsw.efSearch
        )
    return faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]


def open_shard(path: Path, shard: Shard, dimension: int) -> faiss.Index:
    """Open a shard file, set up for searching and for reading vectors by id.

    Memory-mapped where the type allows.

    Raises:
        IndexCorrupted: the file is missing, unreadable or holds other vectors than its record says.
    """
    try:
        read_from = os.stat(path)
    except FileNotFoundError:
        raise IndexCorrupted(f"{path} is missing; rebuild the index") from None
    if not path.is_file():
        raise IndexCorrupted(f"{path} is missing; rebuild the index")
    try:
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError:
            index = faiss.read_index(str(path))  # types that cannot be memory-mapped
    except RuntimeError as error:
        raise IndexCorrupted(f"{path} cannot be read; rebuild the index") from error
    if index.ntotal != shard.count or index.d != dimension:
        raise IndexCorrupted(
            f"{path} holds {index.ntotal} vectors of dimension {index.d}; the database expects "
            f"{shard.count} of dimension {dimension}; rebuild the index"
        )
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        recorded = recorded_nprobe(shard.index_type)
        ivf.nprobe = recorded if recorded is not None else max(1, ivf.nlist // IVF_PROBE_FRACTION)
        ivf.make_direct_map()  # reading vectors by id
        key = _coarse_key(index)
        if key is not None:
            _TRAININGS[index] = key
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = HNSW_EF_SEARCH
    _OPENED_FROM[index] = (read_from.st_dev, read_from.st_ino, read_from.st_size)
    return index


def _check_still_whole(path: Path, index: faiss.Index) -> None:
    """Refuse to use an opened shard whose file was cut short since (one ``stat``, no read).

    Shard files are written whole under new names and never changed in place; a file that is gone or
    replaced leaves the reader the one it opened. Only the same file grown shorter is damage.

    Raises:
        IndexCorrupted: the file is shorter than when it was opened.
    """
    opened = _OPENED_FROM.get(index)
    if opened is None:
        return
    try:
        now = os.stat(path)
    except OSError:  # retired by a writer (or unreadable now): the reader keeps the file it opened
        return
    if (now.st_dev, now.st_ino) == opened[:2] and now.st_size < opened[2]:
        raise IndexCorrupted(
            f"{path} was cut short while the index was open ({now.st_size:,} bytes of {opened[2]:,}); "
            "the index is damaged: rebuild it"
        )
