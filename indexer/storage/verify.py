"""Verification of what an index's files hold (behind ``check``): settings, checksums and vectors.

`check` (`check_store`) runs these after the structural checks: every setting queries need is there,
every shard file still has the bytes it had when it was written (the checksum recorded with its shard
record), and every stored vector is finite and of unit length (within what its index type keeps of it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import faiss
import numpy as np

from senseindex.errors import IndexCorrupted
from senseindex.indexer.storage.reader import IndexReader
from senseindex.indexer.storage.schema import SCHEMA_VERSION_KEY, VECTOR_TABLES, has_checksums
from senseindex.indexer.storage.shards import Shard, ShardSet, file_checksum
from senseindex.indexer.storage.threads import faiss_threads

REQUIRED_SETTINGS = (
    SCHEMA_VERSION_KEY,
    "model",
    "model_fingerprint",
    "layers",
    "piece_pooling",
    "sentence_pooling",
    "max_length",
    "batch_size",
    "sentence_dimension",
    "word_dimension",
)
"""Settings without which the index cannot be opened or queried."""
# Vectors decoded per step while checking a shard (6 MB of 384-d float32).
_STEP = 4096
# How far a decoded vector's length may be from 1, by how the index type stores it.
EXACT_NORM_TOLERANCE = 1e-3
SQ_NORM_TOLERANCE = 0.05
LOSSY_NORM_TOLERANCE = 0.35


def norm_tolerance(index_type: str) -> float:
    """How far from 1 a stored vector's decoded length may be for an index type.

    Exact types (``flat``, HNSW over flat storage) keep float32 vectors; scalar quantisers (``SQ8``,
    ``SQfp16``, ``IVF…,SQ8``) decode within a few hundredths; product quantisers and anything else within
    a wide bound that still tells a zero or a blown-up vector.
    """
    kind = index_type.split(" ", 1)[0].upper()
    last = kind.split(",")[-1]
    if kind == "FLAT" or last in ("FLAT", "IDMAP") or (kind.startswith("HNSW") and "," not in kind):
        return EXACT_NORM_TOLERANCE
    if last.startswith("SQ"):
        return SQ_NORM_TOLERANCE
    return LOSSY_NORM_TOLERANCE


def missing_settings(store: IndexReader) -> list[str]:
    """One problem per setting the index needs that is missing, or not a whole number where it must be."""
    problems = [
        f"the {key!r} setting is missing (queries cannot run without it); rebuild the index"
        for key in REQUIRED_SETTINGS
        if key not in store.settings
    ]
    for key in ("sentence_dimension", "word_dimension", "max_length", "batch_size", SCHEMA_VERSION_KEY):
        value = store.settings.get(key)
        if key in store.settings and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            problems.append(f"the {key!r} setting is damaged ({value!r}); rebuild the index")
    return problems


def check_checksums(store: IndexReader) -> tuple[list[str], list[str]]:
    """Compare every shard file with the checksum recorded when it was written.

    Returns:
        ``(problems, notes)``: a line per file whose bytes changed; a note when shards written by an
        older format carry no checksum (their contents are still checked by `check_vector_values`).
    """
    if not has_checksums(store.db.conn):
        return [], [
            "this index was written before shard checksums were recorded (format 3): its vector files "
            "were checked for readable, finite, unit-length vectors but not against checksums; the next "
            "add, delete or compact upgrades it, and shards written from then on carry checksums"
        ]
    problems: list[str] = []
    unrecorded = 0
    records = store.db.execute("select table_name, file, checksum from shards order by id").fetchall()
    for table, file, recorded in records:
        if recorded is None:
            unrecorded += 1
            continue
        path = store.folder / file
        try:
            actual = file_checksum(path)
        except OSError:
            continue  # a missing or unreadable file is reported by the structural check
        if actual != recorded:
            problems.append(
                f"{table}: {file} does not hold the bytes written for it (checksum {actual[:19]}…, "
                f"recorded {str(recorded)[:19]}…); rebuild the index"
            )
    notes = []
    if unrecorded:
        notes.append(
            f"{unrecorded} vector file(s) were written before checksums were recorded and were not "
            "compared with one"
        )
    return problems, notes


def check_vector_values(store: IndexReader) -> list[str]:
    """Decode every stored vector and report shards holding vectors that are not finite or not of unit length.

    Returns:
        One line per shard and kind of fault, with the number of vectors and the first rowid.
    """
    problems: list[str] = []
    for table in VECTOR_TABLES:
        try:
            shard_set = store.shard_set(table)
        except (IndexCorrupted, sqlite3.Error):
            continue  # reported by the structural check
        for shard in shard_set.shards:
            try:
                index = shard_set.shard_index(shard)
            except IndexCorrupted:
                continue  # reported by the structural check
            problems += _check_shard(shard_set, shard, index)
    return problems


def _check_shard(shard_set: ShardSet, shard: Shard, index: faiss.Index) -> list[str]:
    tolerance = norm_tolerance(shard.index_type)
    not_finite = off_length = 0
    first_bad: dict[str, int] = {}
    try:
        for start, vectors in _decoded(index, shard.count):
            finite = np.isfinite(vectors).all(axis=1)
            norms = np.linalg.norm(np.where(np.isfinite(vectors), vectors, 0), axis=1)
            wrong = finite & (np.abs(norms - 1.0) > tolerance)
            if not finite.all():
                not_finite += int((~finite).sum())
                first_bad.setdefault("nan", shard.first_id + start + int(np.flatnonzero(~finite)[0]))
            if wrong.any():
                off_length += int(wrong.sum())
                first_bad.setdefault("norm", shard.first_id + start + int(np.flatnonzero(wrong)[0]))
    except RuntimeError as error:
        return [f"{shard.table}: {shard.file}: its vectors cannot be decoded ({str(error).strip()[-120:]})"]
    problems = []
    if not_finite:
        problems.append(
            f"{shard.table}: {shard.file} holds {not_finite:,} vector(s) that are not finite (NaN or "
            f"infinite; the first is rowid {first_bad['nan']}); rebuild the index"
        )
    if off_length:
        problems.append(
            f"{shard.table}: {shard.file} holds {off_length:,} vector(s) whose length is not 1 (within "
            f"{tolerance:g} for {shard.index_type}; the first is rowid {first_bad['norm']}); "
            "rebuild the index"
        )
    return problems


def _decoded(index: faiss.Index, count: int) -> Iterator[tuple[int, np.ndarray]]:
    """A shard's vectors decoded in steps: ``(position of the first, (n, dimension) float32)``."""
    with faiss_threads(1):
        for start in range(0, count, _STEP):
            yield start, index.reconstruct_n(start, min(_STEP, count - start))
