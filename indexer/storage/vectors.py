"""FAISS vector shards: index types, and how vectors are streamed to disk during a build and merged.

Reading and searching the shards is `shards` (its names are
re-exported here).

A table's vectors (sentences, words or passages) live in one or more shard files. A shard holds the
vectors of a contiguous run of SQLite rowids, so a FAISS result ``i`` of a shard is rowid
``first_id + i`` and no id map (8 bytes per vector) is stored. During a build at most one shard per
table is in memory; a full shard is written to disk and dropped, which keeps a build's memory flat in
the corpus size. At every commit the vectors still in memory are written too, to provisional files
that the next commit replaces (`ShardWriter.checkpoint`), so everything committed has its
vectors on disk and frequent commits do not cut a table into small shards.

Shard files are never changed once written: deleting a document leaves its vectors in place and
records their rowids as deleted (searches skip them with a FAISS ID selector); merging shards writes
new files. A reader therefore keeps using the files of the state it opened while a writer works.

Index types (``index_type``):

- ``flat``: exact inner product over float32 vectors (1,536 bytes per 384-d vector).
- ``auto`` (default): exact while a table holds at most `EXACT_LIMIT` vectors; above it the
  word table is an inverted file of 8-bit codes (``IVF{nlist},SQ8``, lists and probes chosen by
  `ivf`), the sentence and passage tables `AUTO_COMPRESSED_TYPE` (8-bit scalar quantisation, a
  quarter of the size).
- any FAISS ``index_factory`` string (``SQ8``, ``SQ4``, ``IVF1024,SQ8``, ``HNSW32``, ``PQ64``...),
  trained on the first `TRAINING_VECTORS` vectors of each writing session (a build, or an
  ``add``); the session's later shards reuse that training. Vectors committed before a session had
  enough to train on are stored exactly and merged into trained shards later
  (`merge_shards`), so every compressed shard is trained on data of its own time and the
  training never goes stale as documents are added. An IVF type's ``nprobe`` is measured when it is
  trained and recorded with each shard's type (`ivf.with_nprobe`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from senseindex.errors import SettingsError
from senseindex.indexer.storage.ivf import auto_ivf_type, choose_nprobe, ivf_training_vectors, with_nprobe
from senseindex.indexer.storage.shards import (
    HNSW_EF_SEARCH,
    IVF_PROBE_FRACTION,
    Shard,
    ShardSet,
    bytes_checksum,
    open_shard,
)

__all__ = [
    "AUTO_COMPRESSED_TYPE",
    "AUTO_INDEX_TYPE",
    "EXACT_LIMIT",
    "FLAT_INDEX_TYPE",
    "HNSW_EF_SEARCH",
    "IVF_PROBE_FRACTION",
    "MIN_TRAINED_SHARD",
    "SHARD_BYTES",
    "TRAINING_VECTORS",
    "Shard",
    "ShardSet",
    "ShardWriter",
    "check_index_type",
    "merge_shards",
    "merge_vectors",
    "shard_file_name",
    "shard_number",
    "training_needed",
    "write_index_atomically",
]

AUTO_INDEX_TYPE = "auto"
FLAT_INDEX_TYPE = "flat"
AUTO_COMPRESSED_TYPE = "SQ8"
AUTO_IVF_TABLES = ("words",)
"""Tables ``auto`` stores as an inverted file once large (their any-word search must not scan them)."""
EXACT_LIMIT = 65_536
"""Under ``auto``, a table with more vectors than this is compressed."""
TRAINING_VECTORS = 65_536
"""Vectors a trained index type (SQ, IVF, PQ) learns from: the first ones of a writing session."""
MIN_TRAINED_SHARD = 4_096
"""An ``add`` with fewer new vectors than this stores them exactly; runs of such shards are merged
into a trained shard once they hold this many (`merge_shards`)."""
SHARD_BYTES = 64 * 2**20
"""A shard is written to disk once its stored codes reach this size."""


def check_index_type(index_type: str, dimensions: Iterable[int]) -> None:
    """Raise `SettingsError` unless ``index_type`` is ``auto``, ``flat`` or a usable FAISS factory string.

    A usable factory string builds an inner-product index for vectors of every given dimension, without an id
    map of its own.
    """
    if index_type in (AUTO_INDEX_TYPE, FLAT_INDEX_TYPE):
        return
    if "IDMap" in index_type:
        raise SettingsError("--index-type must not contain IDMap: senseindex maps ids itself")
    for dimension in sorted(set(dimensions)):
        try:
            index = _factory(index_type, dimension)
        except RuntimeError as error:
            raise SettingsError(
                f"--index-type {index_type!r} is not a FAISS index_factory string for {dimension}-d "
                f"vectors ({_faiss_reason(error)}); try auto, flat, SQ8, IVF1024,SQ8 or HNSW32"
            ) from error
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise SettingsError(
                f"--index-type {index_type!r} does not score by inner product (cosine); senseindex needs it"
            )


def _faiss_reason(error: RuntimeError) -> str:
    # FAISS messages start with the C++ function's signature; the reason follows "failed:" or "Error:".
    return (str(error).split("failed:")[-1].split("Error:")[-1].strip() or "invalid")[:120]


def _training_points_needed(index: faiss.Index) -> int:
    """Training vectors a type needs.

    FAISS' own rule of 39 points per k-means centroid (IVF lists, PQ codebooks); scalar quantisers only learn
    value ranges.
    """
    needed = 1
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        needed = max(needed, 39 * ivf.nlist)
    for candidate in (index, ivf):
        quantizer = getattr(faiss.downcast_index(candidate), "pq", None) if candidate is not None else None
        if quantizer is not None:
            needed = max(needed, 39 * int(quantizer.ksub))
    return needed


def training_needed(index_type: str, dimension: int) -> int:
    """Vectors a type must be trained on at the least (0 for ``flat``)."""
    if index_type == FLAT_INDEX_TYPE:
        return 0
    return _training_points_needed(_factory(index_type, dimension))


def _factory(index_type: str, dimension: int) -> faiss.Index:
    description = "Flat" if index_type == FLAT_INDEX_TYPE else index_type
    return faiss.index_factory(dimension, description, faiss.METRIC_INNER_PRODUCT)


class ShardWriter:
    """Receives a table's vectors in rowid order and writes them as shards.

    Args:
        folder: the index folder the shard files go to.
        table: the table's name (used in file names).
        dimension: vector dimension.
        index_type: ``auto``, ``flat`` or a FAISS factory string (checked by `check_index_type`).
        first_id: rowid of the first vector that will be added.
        first_number: number of the first shard file (files are ``{table}-{number:05d}.faiss``).
        existing: vectors the table already holds (``auto`` compresses once the table is large).
        settle_at: hold this many vectors before settling the type (default: a training sample, or
            for ``auto`` until the table is large); `merge_vectors` holds all of them.
    """

    def __init__(
        self,
        folder: Path,
        table: str,
        dimension: int,
        index_type: str,
        first_id: int,
        first_number: int = 0,
        existing: int = 0,
        settle_at: int | None = None,
    ) -> None:
        self.folder = folder
        self.existing = existing
        self.table = table
        self.dimension = dimension
        self.requested = index_type
        self.next_id = first_id
        self.next_number = first_number
        self.bytes_written = 0  # bytes of every shard file this writer wrote (provisional copies too)
        # Until the type is settled (auto, or a type still to be trained), vectors wait as float32 in
        # one buffer allocated once (no copy when it becomes the training sample); vectors past its
        # end, from the batch that fills it, wait in a list.
        self._buffer: np.ndarray | None = None
        self._overflow: list[np.ndarray] = []
        self._pending_count = 0
        self._trained: np.ndarray | None = None  # the trained, empty index every shard starts from (uint8)
        self._current: faiss.Index | None = None
        self._current_first = first_id
        self._capacity = 0
        self._resolved: str | None = FLAT_INDEX_TYPE if index_type == FLAT_INDEX_TYPE else None
        self._provisional: list[Shard] = []  # written at the last checkpoint, still held in memory
        # A fixed type waits for as many vectors as it needs to train well (IVF4096: 159,744).
        self._training = TRAINING_VECTORS
        if index_type not in (AUTO_INDEX_TYPE, FLAT_INDEX_TYPE):
            self._training = max(TRAINING_VECTORS, _training_points_needed(_factory(index_type, dimension)))
        elif index_type == AUTO_INDEX_TYPE and table in AUTO_IVF_TABLES:
            self._training = max(TRAINING_VECTORS, ivf_training_vectors())
        # auto waits until the table is known to be large (and for a training sample); a fixed type
        # only for its training sample
        self._settle_at = self._training
        if index_type == AUTO_INDEX_TYPE:
            self._settle_at = max(self._training, EXACT_LIMIT + 1 - existing)
        if settle_at is not None:
            self._settle_at = settle_at
        if self._resolved == FLAT_INDEX_TYPE:
            self._start_shards(_factory(FLAT_INDEX_TYPE, dimension))

    def add(self, vectors: np.ndarray) -> list[Shard]:
        """Append vectors (the next rowids in order).

        Args:
            vectors: ``(n, dimension)`` float32, L2-normalised.

        Returns:
            The shards this call completed and wrote to disk (often none).
        """
        if not len(vectors):
            return []
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.next_id += len(vectors)
        if self._current is None:
            self._hold(vectors)
            if self._pending_count < self._settle_at:
                return []
            self._settle(large=True)
            return self._drain_pending()
        return self._append(vectors)

    def checkpoint(self) -> tuple[list[Shard], list[Shard]]:
        """Make every vector added so far durable without changing how the table is laid out.

        The vectors still in memory (the shard being filled, or those waiting for the table's type to be
        settled) are covered by *provisional* files; the writer keeps them in memory and goes on filling
        the same shard, so frequent commits do not cut a table into small shards. A checkpoint writes
        only the vectors added since the last one, folding in the provisional files no larger than
        what it writes (each file is larger than all those after it together): a vector is rewritten
        about log2(commits) times, not at every commit, and a table has a few dozen provisional files
        at most. Where the vectors in memory cannot be sliced (an IVF or HNSW shard), the checkpoint
        writes the whole shard being filled, as one provisional file. `finish`, or the shard being
        written for good, retires them.

        Returns:
            ``(written, retired)``: the shards this call wrote, and the provisional shards they (or the
            shards written for good since the last checkpoint) replace. A caller records both in the
            same commit.
        """
        start = self.next_id - self._pending_count if self._current is None else self._current_first
        retired = [s for s in self._provisional if s.first_id + s.count <= start]
        kept = [s for s in self._provisional if s.first_id + s.count > start]
        if self.next_id == start:
            self._provisional = []
            return [], retired + kept
        sliceable = self._current is None or isinstance(
            faiss.downcast_index(self._current), faiss.IndexFlatCodes
        )
        if not sliceable or (kept and kept[0].first_id != start):
            # write everything in memory as one file, replacing every provisional one
            retired += kept
            kept = []
        first = kept[-1].first_id + kept[-1].count if kept else start
        while kept and kept[-1].count <= self.next_id - first:
            first = kept[-1].first_id
            retired.append(kept.pop())
        if first == self.next_id:
            self._provisional = kept
            return [], retired
        if self._current is None:
            index, kind = self._pending_slice(first), FLAT_INDEX_TYPE
        elif sliceable:
            index, kind = self._current_slice(first - self._current_first), str(self._resolved)
        else:
            index, kind = self._current, str(self._resolved)
        written = self._write(index, first, kind)
        self._provisional = [*kept, written]
        return [written], retired

    def _pending_slice(self, first: int) -> faiss.Index:
        """The waiting vectors from rowid ``first`` on, in an exact index."""
        index = _factory(FLAT_INDEX_TYPE, self.dimension)
        skip = first - (self.next_id - self._pending_count)
        for vectors in self._pending():
            if skip < len(vectors):
                index.add(vectors[max(skip, 0) :])
            skip -= len(vectors)
        return index

    def _current_slice(self, start: int) -> faiss.Index:
        """The shard being filled from its position ``start`` on, as an index of its type (codes copied)."""
        current: Any = faiss.downcast_index(self._shard_in_memory())  # an IndexFlatCodes (the stub lacks it)
        size = int(current.code_size)
        codes = faiss.rev_swig_ptr(current.codes.data(), int(current.ntotal) * size)
        owner = self._empty_shard()
        part: Any = faiss.downcast_index(owner)  # a view: ``owner`` keeps the C++ object alive
        faiss.copy_array_to_vector(np.ascontiguousarray(codes[start * size :]), part.codes)
        part.ntotal = int(current.ntotal) - start
        return owner

    def finish(self) -> tuple[list[Shard], list[Shard]]:
        """Write every vector still in memory for good, and stop.

        Vectors still waiting for the table's type to be settled are written exactly (``flat``) while
        an ``auto`` table is small, when there are too few of them to train the type at all, or when
        they are a small addition (under `MIN_TRAINED_SHARD`) to a table that has vectors;
        otherwise trained on themselves. `merge_shards` turns runs of exact shards into trained
        shards later.

        Returns:
            ``(written, retired)``, as for `checkpoint`.
        """
        retired, self._provisional = self._provisional, []
        written: list[Shard] = []
        if self._current is None and self._pending_count:
            large = self.requested != AUTO_INDEX_TYPE or self.existing + self._pending_count > EXACT_LIMIT
            # a small add is kept exact, to be merged and trained with later ones
            few = self.existing > 0 and self._pending_count < MIN_TRAINED_SHARD
            if (
                self.requested == FLAT_INDEX_TYPE
                or not large
                or few
                or self._pending_count < self.training_needed()
            ):
                written = [self._write_pending_flat()]
            else:
                self._settle(large=True)
                written = self._drain_pending()
        if self._current is not None and self._current.ntotal:
            written.append(self._write_current())
        self._current = None
        return written, retired

    def training_needed(self) -> int:
        """Vectors the table's compressed type needs before this writer trains it."""
        return training_needed(self._target_type(large=True), self.dimension)

    def _target_type(self, large: bool) -> str:
        """The FAISS type of the table's next trained shards (``auto``: by the table and its sample)."""
        if self.requested == AUTO_INDEX_TYPE:
            if not large:
                return FLAT_INDEX_TYPE
            if self.table in AUTO_IVF_TABLES:
                return auto_ivf_type(min(self._training, self._pending_count))
            return AUTO_COMPRESSED_TYPE
        return self.requested

    def _pending_as_flat(self) -> tuple[faiss.Index, int]:
        """The waiting vectors in an exact index, with the rowid of the first."""
        index = _factory(FLAT_INDEX_TYPE, self.dimension)
        for vectors in self._pending():
            index.add(vectors)
        return index, self.next_id - self._pending_count

    def _write_pending_flat(self) -> Shard:
        shard = self._write(*self._pending_as_flat(), FLAT_INDEX_TYPE)
        self.existing += self._pending_count
        self._pending_count = 0
        self._buffer, self._overflow = None, []
        if self.requested == AUTO_INDEX_TYPE:
            self._settle_at = max(self._training, EXACT_LIMIT + 1 - self.existing)
        return shard

    def _hold(self, vectors: np.ndarray) -> None:
        capacity = self._settle_at
        if self._buffer is None:
            self._buffer = np.empty((capacity, self.dimension), dtype=np.float32)
        room = min(len(vectors), capacity - self._pending_count) if not self._overflow else 0
        self._buffer[self._pending_count : self._pending_count + room] = vectors[:room]
        if room < len(vectors):
            self._overflow.append(vectors[room:])
        self._pending_count += len(vectors)

    def _pending(self) -> list[np.ndarray]:
        buffer = self._buffer
        held = min(self._pending_count, len(buffer)) if buffer is not None else 0
        return ([buffer[:held]] if buffer is not None and held else []) + self._overflow

    def _settle(self, large: bool) -> None:
        """Choose the table's index type and train it on the waiting vectors."""
        self._resolved = self._target_type(large)
        try:
            index = _factory(self._resolved, self.dimension)
            if not index.is_trained:
                # the type is settled once the buffer is full, or by finish() with vectors waiting
                held = self._buffer if self._buffer is not None else np.empty((0, self.dimension), np.float32)
                sample = held[: min(self._training, self._pending_count)]
                if len(sample) < _training_points_needed(index):
                    # The whole table is too small to train this type well (IVF4096 on 10,000 vectors):
                    # a badly trained index would lose hits for good, so the table is stored exactly.
                    self._resolved = FLAT_INDEX_TYPE
                    index = _factory(FLAT_INDEX_TYPE, self.dimension)
                else:
                    index.train(sample)
                    ivf = faiss.try_extract_index_ivf(index)
                    if ivf is not None:
                        # every shard trained here carries the measured nprobe, in its file and record
                        ivf.nprobe = choose_nprobe(index, sample)
                        self._resolved = with_nprobe(self._resolved, int(ivf.nprobe))
        except RuntimeError as error:
            raise SettingsError(
                f"index type {self._resolved!r} cannot be built for the {self.table} table "
                f"({_faiss_reason(error)})"
            ) from error
        self._start_shards(index)

    def _start_shards(self, trained: faiss.Index) -> None:
        self._trained = faiss.serialize_index(trained)
        self._capacity = max(1, SHARD_BYTES // max(1, _bytes_per_vector(trained, self.dimension)))
        self._current = faiss.deserialize_index(self._trained)
        self._current_first = self.next_id - self._pending_count

    def _shard_in_memory(self) -> faiss.Index:
        """The shard being filled (exists once the type is settled)."""
        if self._current is None:
            raise RuntimeError(f"the {self.table} shard writer has no settled index type yet")
        return self._current

    def _empty_shard(self) -> faiss.Index:
        """A new, empty shard of the settled type (trained, when the type is)."""
        if self._trained is None:
            raise RuntimeError(f"the {self.table} shard writer has no settled index type yet")
        return faiss.deserialize_index(self._trained)

    def _drain_pending(self) -> list[Shard]:
        pending = self._pending()
        self._pending_count = 0
        written: list[Shard] = []
        for vectors in pending:
            written += self._append(vectors)
        self._buffer, self._overflow = None, []
        return written

    def _append(self, vectors: np.ndarray) -> list[Shard]:
        written = []
        while len(vectors):
            current = self._shard_in_memory()
            room = self._capacity - current.ntotal
            part, vectors = vectors[:room], vectors[room:]
            current.add(part)
            if current.ntotal >= self._capacity:
                written.append(self._write_current())
                self._current = self._empty_shard()
        return written

    def _write_current(self) -> Shard:
        index = self._shard_in_memory()
        shard = self._write(index, self._current_first, str(self._resolved))
        self._current_first += int(index.ntotal)
        self.existing += int(index.ntotal)
        return shard

    def _write(self, index: faiss.Index, first_id: int, index_type: str) -> Shard:
        name = shard_file_name(self.table, self.next_number)
        checksum = write_index_atomically(index, self.folder / name)
        self.next_number += 1
        self.bytes_written += (self.folder / name).stat().st_size
        return Shard(self.table, name, first_id, int(index.ntotal), index_type, checksum)


def shard_file_name(table: str, number: int) -> str:
    """The file name of a table's shard number ``number``."""
    return f"{table}-{number:05d}.faiss"


def shard_number(file: str) -> int:
    """The number in a shard file name (-1 for a name not made by `shard_file_name`)."""
    stem = file.rsplit(".", 1)[0]
    number = stem.rsplit("-", 1)[-1]
    return int(number) if number.isdigit() else -1


def merge_shards(
    folder: Path, shards: list[Shard], dimension: int, index_type: str, first_number: int
) -> list[Shard]:
    """Rewrite adjacent shards (a contiguous run of rowids) as new shards of ``index_type``.

    The new shards are trained on their own vectors. The old files are left in place: readers may still use
    them.

    Args:
        folder: the index folder.
        shards: shards in rowid order, each starting where the previous one ends; their vectors are
            read back exactly only from ``flat`` shards, so callers pass flat ones.
        dimension: vector dimension.
        index_type: ``flat`` or a FAISS factory string; a run too small to train it stays flat.
        first_number: number of the first new shard file.

    Returns:
        The new shards, in rowid order.
    """
    parts = [
        open_shard(folder / shard.file, shard, dimension).reconstruct_n(0, shard.count) for shard in shards
    ]
    return merge_vectors(
        folder, shards[0].table, parts, dimension, index_type, shards[0].first_id, first_number
    )


def merge_vectors(
    folder: Path,
    table: str,
    parts: list[np.ndarray],
    dimension: int,
    index_type: str,
    first_id: int,
    first_number: int,
) -> list[Shard]:
    """Write vectors (consecutive rowids from ``first_id``) as shards of ``index_type`` trained on them.

    Training uses its first `TRAINING_VECTORS`; with too few to train it, the type is ``flat``.
    """
    # hold everything, so that finish() trains once on the sample and writes the shards
    total = sum(len(p) for p in parts)
    writer = ShardWriter(folder, table, dimension, index_type, first_id, first_number, settle_at=total + 1)
    written: list[Shard] = []
    for part in parts:
        written += writer.add(part)
    return written + writer.finish()[0]


def _bytes_per_vector(index: faiss.Index, dimension: int) -> int:
    """Memory a type needs per stored vector (its code, plus the graph's links for HNSW)."""
    # A downcast view does not own the C++ object: `index` must stay referenced while it is used.
    concrete = faiss.downcast_index(index)
    graph = concrete if isinstance(concrete, faiss.IndexHNSW) else None
    codec = faiss.downcast_index(graph.storage) if graph is not None else concrete
    try:
        size = int(codec.sa_code_size())
    except RuntimeError:  # a type without a standalone codec: assume float32
        size = 4 * dimension
    if graph is not None:
        # level-0 links; the faiss stub's HNSW lacks nb_neighbors
        size += 4 * graph.hnsw.nb_neighbors(0)  # type: ignore[attr-defined]
    return size


def write_index_atomically(index: faiss.Index, path: Path) -> str:
    """Write a FAISS index under a temporary name, flush it to the disk, then rename it into place.

    A file with the final name is always complete.

    Returns:
        The file's checksum (`file_checksum` of the bytes written), recorded with the shard.
    """
    temporary = path.with_name(path.name + ".tmp")
    data = faiss.serialize_index(index).tobytes()
    checksum = bytes_checksum(data)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while len(view):
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
    return checksum
