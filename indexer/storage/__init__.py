"""On-disk index storage: SQLite for everything but vectors, FAISS for vectors.

This package is the only part of senseindex that touches SQLite and FAISS. A vector's FAISS position is
always tied to the SQLite rowid of the row it belongs to (``sentences.id``, ``words.id`` or
``passages.id``) through the ``shards`` table: see :mod:`~senseindex.indexer.storage.vectors`.

Folder layout (see the README, "On-disk index format")::

    DIR/index.sqlite            settings, documents, sentences, words, passages, shards, deleted
    DIR/sentences-00000.faiss   sentence vectors, one shard file per run of rowids
    DIR/words-00000.faiss       word-occurrence vectors
    DIR/passages-00000.faiss    passage vectors (consecutive sentences)
    DIR/write.lock              held by the one process writing, if any

Writing is crash safe: a writer adds rows inside one SQLite transaction per batch of whole
documents, writes the batch's vectors to new shard files (under a temporary name, flushed, then
renamed) and only then commits the rows together with the ``shards`` records that make those files
part of the index. A process killed at any moment leaves the last committed state; files it wrote
after that are not referenced and the next writer deletes them. Readers use SQLite's write-ahead log:
each reader keeps the snapshot it opened (see :meth:`IndexStore.refresh`) and never sees a
half-applied batch.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import sqlite_utils

from senseindex.errors import (
    IndexBusy,
    IndexCorrupted,
    IndexExists,
    IndexNotFound,
    SchemaMismatch,
    SenseIndexError,
)
from senseindex.indexer.storage.vectors import (
    AUTO_COMPRESSED_TYPE,
    AUTO_INDEX_TYPE,
    EXACT_LIMIT,
    FLAT_INDEX_TYPE,
    MIN_TRAINED_SHARD,
    SHARD_BYTES,
    Shard,
    ShardSet,
    ShardWriter,
    check_index_type,
    merge_shards,
    shard_number,
    training_needed,
)

__all__ = ["AUTO_INDEX_TYPE", "IndexStore", "check_index_type", "read_index_status"]

SCHEMA_VERSION = 3
DATABASE_FILE = "index.sqlite"
LOCK_FILE = "write.lock"
VECTOR_TABLES = ("sentences", "words", "passages")
ROW_TABLES = ("documents", *VECTOR_TABLES)
STATUS_BUILDING = "building"
STATUS_COMPLETE = "complete"
# A run of at least this many small shards of a table is merged into one (fewer files to search).
MERGE_SMALL_SHARDS = 8
# Vectors read back and rewritten by one merge at most (200 MB of 384-d float32, held twice).
MERGE_VECTORS = 131_072
# Every table's columns, in the order rows given as tuples use; `id` is the rowid.
_SCHEMA: dict[str, dict[str, type]] = {
    "documents": {"id": int, "doc_id": str, "source": str, "text": str, "metadata": str, "content_hash": str},
    "sentences": {"id": int, "document": int, "position": int, "start": int, "end": int, "text": str},
    "words": {
        "id": int,
        "sentence": int,
        "document": int,
        "start": int,
        "end": int,
        "form": str,
        "lemma": str,
    },
    "passages": {
        "id": int,
        "document": int,
        "start": int,
        "end": int,
        "first_sentence": int,
        "last_sentence": int,
    },
    "shards": {"id": int, "table_name": str, "file": str, "first_id": int, "count": int, "index_type": str},
    # rowids (inclusive ranges) of deleted rows whose vectors are still in a shard file
    "deleted": {"id": int, "table_name": str, "first_id": int, "last_id": int},
}
_COLUMNS = {table: tuple(columns) for table, columns in _SCHEMA.items()}


Row = dict[str, Any] | tuple[Any, ...]
"""A table row: a dict by column name, or a tuple in the table's column order."""

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _reading(method: _Method) -> _Method:
    """Report a damaged index (unreadable rows, a vector file that disagrees) as IndexCorrupted."""

    @functools.wraps(method)
    def wrapper(self: IndexStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.Error, RuntimeError, KeyError, ValueError) as error:
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise IndexCorrupted(
                f"the index in {self.folder} is damaged ({detail[:200]}); rebuild it"
            ) from error

    return wrapper  # type: ignore[return-value]


class IndexStore:
    """An index folder: the SQLite database and the FAISS vector shards of each table.

    :meth:`open` opens an index for reading, :meth:`create` starts a new one and :meth:`open_for_writing`
    adds to or deletes from an existing one. A writer holds the folder's write lock until
    :meth:`finish`, :meth:`abort` or :meth:`close`.
    """

    def __init__(self, folder: Path, connection: sqlite3.Connection) -> None:
        self.folder = folder
        self.db = sqlite_utils.Database(connection)
        self.settings: dict[str, Any] = {}
        self._shard_sets: dict[str, ShardSet] = {}
        self._writers: dict[str, ShardWriter] = {}
        self._target: Path | None = None  # set while an --overwrite build is written next to it
        self._lock: int | None = None
        self._target_lock: int | None = None
        self._created_here = False
        self._writing = False
        self._opened: dict[str, Any] = {}
        self._database_identity: tuple[int, int] | None = None
        self._refreshed_state: tuple[tuple[int, int, int, int] | None, ...] = ()
        self._load_settings()

    @_reading
    def _load_settings(self) -> None:
        self.settings = {
            row[0]: json.loads(row[1]) for row in self.db.execute("select key, value from settings")
        }

    def setting(self, key: str) -> Any:
        """One stored setting.

        Raises:
            IndexCorrupted: the setting is missing.
        """
        if key not in self.settings:
            raise IndexCorrupted(f"the index in {self.folder} has no {key!r} setting; rebuild it")
        return self.settings[key]

    @property
    def complete(self) -> bool:
        """False while a build-index run has not finished (the documents committed so far are
        searchable)."""
        return self.settings.get("status") == STATUS_COMPLETE

    # ----------------------------------------------------------------------------------- lifecycle

    @classmethod
    def create(cls, folder: Path, settings: dict[str, Any], overwrite: bool = False) -> IndexStore:
        """Create an empty index in a folder and open it for writing.

        A new folder gets the index in place: every commit is searchable, and a build that is killed
        is resumed with :meth:`open_for_writing`. With ``overwrite``, the new index is written next to
        the old one and moved into its place by :meth:`finish`, so the old one stays whole until then.

        Args:
            folder: the index folder; created if missing.
            settings: index settings to store (JSON-able values); must hold ``sentence_dimension``,
                ``word_dimension`` and ``index_type`` (``auto``, ``flat`` or a FAISS factory string,
                checked with :func:`check_index_type`).
            overwrite: replace an index already in the folder.

        Returns:
            The new store, ready for :meth:`add_batch`.

        Raises:
            IndexExists: the folder holds an index and ``overwrite`` is False.
            IndexBusy: another process is writing to the index being replaced.
            SenseIndexError: the folder cannot be created or written.
        """
        # The finished index may be moved into place by renaming: work on the real, absolute folder
        # (a symbolic link is followed), and never on the folder the process runs in.
        folder = Path(folder).expanduser().resolve()
        if folder == Path.cwd().resolve() or folder.parent == folder:
            raise SenseIndexError(f"build the index in a folder of its own, not in {folder}")
        if folder.exists() and not folder.is_dir():
            raise SenseIndexError(f"{folder} exists and is not a folder")
        _recover_interrupted_swap(folder)
        replacing = (folder / DATABASE_FILE).exists()
        if replacing and not overwrite:
            status = _read_status(folder / DATABASE_FILE)
            state = "an unfinished index" if status == STATUS_BUILDING else "an index"
            raise IndexExists(f"{folder} already holds {state}; use --overwrite to rebuild it from scratch")
        if not replacing and folder.is_dir() and any(not _is_own_leftover(p.name) for p in folder.iterdir()):
            raise IndexExists(
                f"{folder} is a folder with other files in it, not an index; choose a new folder"
            )
        target_lock = None
        if replacing:
            target_lock = _take_lock(folder)
        where = _staging_folder(folder) if replacing else folder
        try:
            if replacing and where.exists():
                shutil.rmtree(where)
            where.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            _release_lock(target_lock)
            raise SenseIndexError(f"cannot create an index in {folder}: {error}") from error
        try:
            lock = _take_lock(where)
        except SenseIndexError:
            _release_lock(target_lock)
            raise
        try:
            _create_database(where, settings)
            connection = _connect(where / DATABASE_FILE, writable=True)
        except (OSError, sqlite3.Error) as error:
            _release_lock(lock)
            _release_lock(target_lock)
            raise SenseIndexError(f"cannot create an index in {folder}: {error}") from error
        store = cls(where, connection)
        store._lock = lock
        store._target = folder if replacing else None
        store._target_lock = target_lock
        store._created_here = not replacing
        store._start_writing()
        return store

    @classmethod
    def open(cls, folder: Path) -> IndexStore:
        """Open an index for reading, at the state of its last commit.

        Args:
            folder: the index folder.

        Returns:
            The store; its snapshot stays fixed until :meth:`refresh`. Vector files are opened on
            first use (or all at once with :meth:`open_vectors`).

        Raises:
            IndexNotFound: no index in the folder.
            SchemaMismatch: the index was written by another format version.
            IndexCorrupted: the database cannot be read.
        """
        folder = Path(folder)
        store = cls(folder, _open_database(folder, writable=False))
        try:
            store._check_version()
            store.refresh()
        except BaseException:
            store.db.conn.close()
            raise
        return store

    @classmethod
    def open_for_writing(cls, folder: Path) -> IndexStore:
        """Open an existing index to add or delete documents; takes the folder's write lock and
        deletes files an interrupted writer left behind.

        Args:
            folder: the index folder.

        Returns:
            The store, ready for :meth:`add_batch`, :meth:`delete_documents` and :meth:`commit`.

        Raises:
            IndexNotFound: no index in the folder.
            IndexBusy: another process is writing to it.
            SchemaMismatch: the index was written by another format version.
            IndexCorrupted: the database or a vector file cannot be read.
            SenseIndexError: the folder is not writable.
        """
        folder = Path(folder).expanduser().resolve()
        connection = _open_database(folder, writable=True)
        lock = None
        try:
            lock = _take_lock(folder)
            store = cls(folder, connection)
            store._lock = lock
            store._check_version()
            store._remove_unreferenced_files()
            for table in VECTOR_TABLES:  # every file must be readable before anything is changed
                store._vectors(table).open_all()
            store._start_writing()
        except BaseException:
            connection.close()
            _release_lock(lock)
            raise
        return store

    def _check_version(self) -> None:
        version = self.settings.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise SchemaMismatch(
                f"{self.folder} was written with index format version {version}; this senseindex reads "
                f"up to version {SCHEMA_VERSION} — upgrade senseindex"
            )
        if version < SCHEMA_VERSION:
            raise SchemaMismatch(
                f"{self.folder} was written with the older index format version {version}; this "
                f"senseindex reads version {SCHEMA_VERSION} — rebuild it with build-index --overwrite"
            )

    def refresh(self) -> None:
        """Move a reader to the index's latest committed state (a reader otherwise keeps the state
        it opened, whatever writers do meanwhile). An index replaced by ``--overwrite`` is reopened."""
        if self._writing:
            return
        connection = self.db.conn
        if connection.in_transaction:
            connection.execute("commit")
        if self._database_identity is not None and self._database_identity != _identity(self.folder):
            connection.close()
            connection = _open_database(self.folder, writable=False)
            self.db = sqlite_utils.Database(connection)
            self._shard_sets, self._opened = {}, {}
        self._database_identity = _identity(self.folder)
        # taken before the snapshot, so a commit landing in between shows as a change next time
        self._refreshed_state = self._file_state()
        connection.execute("begin")
        self._load_settings()  # the first read fixes the snapshot
        opened: dict[str, Any] = {}
        for shard_set in self._shard_sets.values():
            opened.update(shard_set._indexes)
        self._shard_sets = {}
        self._opened = opened

    def changed_on_disk(self) -> bool:
        """Whether a commit may have happened since the last :meth:`refresh` (by the database files'
        sizes and times: cheap; a checkpoint may give a false alarm)."""
        return self._file_state() != self._refreshed_state

    def _file_state(self) -> tuple[tuple[int, int, int, int] | None, ...]:
        states = []
        for name in (DATABASE_FILE, DATABASE_FILE + "-wal"):
            try:
                stat = (self.folder / name).stat()
            except OSError:
                states.append(None)
                continue
            states.append((stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))
        return tuple(states)

    def open_vectors(self) -> None:
        """Open every vector file of the snapshot now, so a writer retiring one later cannot take it
        away from this reader.

        Raises:
            IndexCorrupted: a vector file is missing or unreadable.
        """
        for attempt in range(3):
            try:
                for table in VECTOR_TABLES:
                    self._vectors(table).open_all()
                return
            except IndexCorrupted:
                # A writer may have retired a file between this snapshot and opening it: a newer
                # snapshot no longer needs it. A file that stays missing is a damaged index.
                if attempt == 2 or self._writing:
                    raise
                self.refresh()

    def _start_writing(self) -> None:
        self.db.conn.isolation_level = None  # explicit transactions: one per commit
        self.db.execute("pragma synchronous=full")
        self._writing = True
        next_ids = self.next_ids()
        next_number = self._next_shard_number()
        index_type = str(self.settings.get("index_type", AUTO_INDEX_TYPE))
        for position, table in enumerate(VECTOR_TABLES):
            existing = self.db.execute(
                "select coalesce(sum(count), 0) from shards where table_name = ?", [table]
            ).fetchone()[0]
            self._writers[table] = ShardWriter(
                self.folder,
                table,
                self.dimension(table),
                index_type,
                first_id=next_ids[position + 1],
                first_number=next_number,
                existing=int(existing),
            )
        self._begin()

    def _begin(self) -> None:
        if not self.db.conn.in_transaction:
            self.db.execute("begin immediate")

    def commit(self) -> None:
        """Make everything added or deleted since the last commit durable and visible to readers:
        write the vectors still in memory, then commit the rows with the shard records."""
        self._write_shards(final=False)

    def _write_shards(self, final: bool) -> None:
        for writer in self._writers.values():
            written, retired = writer.finish() if final else writer.checkpoint()
            self._replace_shards(retired, written)
        _sync_folder(self.folder)
        self._upsert_setting("next_ids", dict(zip(ROW_TABLES, self.next_ids(), strict=True)))
        self._upsert_setting("next_shard_number", self._next_shard_number())
        self.db.execute("commit")
        self._shard_sets = {}
        self._begin()

    def _next_shard_number(self) -> int:
        """The next shard file number: only ever grows, so no file name is used twice (a reader may
        still hold a retired file under its name)."""
        numbers = [shard_number(f) for f in self._files_on_disk()]
        numbers += [shard_number(row[0]) for row in self.db.execute("select file from shards")]
        numbers += [w.next_number - 1 for w in self._writers.values()]
        return max([*numbers, int(self.settings.get("next_shard_number", 0)) - 1]) + 1

    def finish(self, complete: bool = True) -> list[str]:
        """Commit, merge small or untrained shards, mark the index complete (for a build) and, for an
        ``--overwrite`` build, move it into its folder; then release the write lock.

        Args:
            complete: mark the index complete (a build that read all its sources).

        Returns:
            What the shard merge did, one line each.

        Raises:
            SenseIndexError: the finished index cannot be moved into place.
        """
        self._write_shards(final=True)
        merges = self.merge_shards()
        if complete:
            self._upsert_setting("status", STATUS_COMPLETE)
        self._index_types()
        self.db.execute("commit")
        self._writers = {}
        self._writing = False
        self.db.execute("pragma wal_checkpoint(passive)")
        target, staging = self._target, self.folder
        if target is None:
            self.close()
            return merges
        self.db.conn.close()
        retired = target.with_name(f".{target.name}.replaced")
        try:
            if retired.exists():
                shutil.rmtree(retired)
            target.rename(retired)
            try:
                staging.rename(target)
            except OSError:
                if retired.exists() and not target.exists():
                    retired.rename(target)  # put the previous index back
                raise
            if retired.exists():
                shutil.rmtree(retired)
        except OSError as error:
            raise SenseIndexError(f"cannot move the finished index into {target}: {error}") from error
        finally:
            _release_lock(self._lock)
            _release_lock(self._target_lock)
            self._lock = self._target_lock = None
        self.folder = target
        self._target = None
        return merges

    def abort(self) -> None:
        """Give up writing: roll back what was not committed. An ``--overwrite`` build's unfinished
        index is deleted (the index it was to replace is untouched); an index built in place keeps its
        committed documents and can be resumed."""
        self._roll_back()
        self._writers = {}
        self._writing = False
        empty = False
        with contextlib.suppress(sqlite3.Error):
            empty = self.db.execute("select count(*) from documents").fetchone()[0] == 0
        self.db.conn.close()
        if self._target is not None or (self._created_here and empty):
            # an --overwrite build's unfinished copy, or a new index that never stored a document
            shutil.rmtree(self.folder, ignore_errors=True)
        _release_lock(self._lock)
        _release_lock(self._target_lock)
        self._lock = self._target_lock = None

    def close(self) -> None:
        """Close the database connection (rolling back anything not committed) and release the write
        lock if this store holds it."""
        self._roll_back()
        self.db.conn.close()
        _release_lock(self._lock)
        self._lock = None

    def _roll_back(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if self.db.conn.in_transaction:
                self.db.execute("rollback")

    def _upsert_setting(self, key: str, value: Any) -> None:
        self.db.execute(
            "insert or replace into settings (key, value) values (?, ?)", [key, json.dumps(value)]
        )
        self.settings[key] = value

    def _files_on_disk(self) -> list[str]:
        return [p.name for p in self.folder.iterdir() if p.suffix in (".faiss", ".tmp")]

    def _remove_unreferenced_files(self) -> list[str]:
        """Delete vector files no commit refers to: written by a writer killed before its commit, or
        replaced by a merge (readers that still use them opened them already)."""
        referenced = {row[0] for row in self.db.execute("select file from shards")}
        removed = []
        for name in self._files_on_disk():
            if name not in referenced:
                (self.folder / name).unlink(missing_ok=True)
                removed.append(name)
        return removed

    def _index_types(self) -> None:
        for table in VECTOR_TABLES:
            self._upsert_setting(f"{table}_index_type", self.table_index_type(table))

    def table_index_type(self, table: str) -> str:
        """The index type of a table's vectors: one type, or the types of its shards joined with ``+``,
        most vectors first (``flat`` when it has none)."""
        rows = self.db.execute(
            "select index_type, sum(count) as n from shards where table_name = ? "
            "group by index_type order by n desc",
            [table],
        ).fetchall()
        return "+".join(row[0] for row in rows) or FLAT_INDEX_TYPE

    # ----------------------------------------------------------------------------------- writing

    def dimension(self, table: str) -> int:
        """Vector dimension of ``sentences``, ``words`` or ``passages``."""
        return int(self.settings["word_dimension" if table == "words" else "sentence_dimension"])

    def next_ids(self) -> tuple[int, int, int, int]:
        """The next free rowids of documents, sentences, words and passages.

        Rowids are never reused, not even after a delete: a deleted row's vector stays in its shard at
        the position its rowid names.
        """
        stored = self.settings.get("next_ids") or {}
        result = []
        for table in ROW_TABLES:
            largest = self.db.execute(f"select max(id) from {table}").fetchone()[0] or 0
            if table in VECTOR_TABLES:
                covered = self.db.execute(
                    "select max(first_id + count) from shards where table_name = ?", [table]
                ).fetchone()[0]
                largest = max(largest, (covered or 1) - 1)
                writer = self._writers.get(table)
                if writer is not None:
                    largest = max(largest, writer.next_id - 1)
            result.append(max(largest + 1, int(stored.get(table, 1))))
        return tuple(result)  # type: ignore[return-value]

    def add_batch(
        self,
        documents: Sequence[Row],
        sentences: Sequence[Row],
        sentence_vectors: np.ndarray,
        words: Sequence[Row],
        word_vectors: np.ndarray,
        passages: Sequence[Row] = (),
        passage_vectors: np.ndarray | None = None,
    ) -> None:
        """Store rows and their vectors in one SQLite transaction.

        Args:
            documents: document rows (``id``, ``doc_id``, ``source``, ``text``, ``metadata``,
                ``content_hash``); may be empty when a batch continues earlier documents.
            sentences: sentence rows with their ``id`` already assigned.
            sentence_vectors: ``(len(sentences), sentence_dimension)`` float32.
            words: word rows with their ``id`` already assigned. Any table's rows may also be tuples
                in the table's column order (``id`` first), which is cheaper for millions of words.
            word_vectors: ``(len(words), word_dimension)`` float32.
            passages: passage rows (``id``, ``document``, ``start``, ``end``, ``first_sentence``,
                ``last_sentence``).
            passage_vectors: ``(len(passages), sentence_dimension)`` float32.

        The rows become visible to readers, and durable, at the next :meth:`commit`.
        """
        self._require_writing()
        tables = (
            ("sentences", sentences, sentence_vectors),
            ("words", words, word_vectors),
            ("passages", passages, passage_vectors),
        )
        for table, rows, vectors in tables:
            if not rows:
                continue
            if vectors is None or len(vectors) != len(rows):
                # a vector's position in its shard is its rowid: a missing one shifts all after it
                raise ValueError(f"{len(rows)} {table} rows need as many vectors")
            writer = self._writers[table]
            first, last = _row_id(rows[0]), _row_id(rows[-1])
            if first != writer.next_id or last != writer.next_id + len(rows) - 1:
                raise ValueError(f"{table} ids must continue from {writer.next_id} without gaps")
        self._insert("documents", documents)
        for table, rows, vectors in tables:
            self._insert(table, rows)
            if rows:
                self._record_shards(self._writers[table].add(vectors))

    def _require_writing(self) -> None:
        if not self._writing:
            raise SenseIndexError(f"the index in {self.folder} is open for reading only")

    @_reading
    def document_hashes(self, doc_ids: Iterable[str]) -> dict[str, str]:
        """Content hash of each stored document among ``doc_ids`` (absent ids are left out)."""
        return dict(
            self._select_in(
                "select doc_id, content_hash from documents where doc_id in ({})", doc_ids, kind=str
            )
        )

    def delete_documents(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """Delete documents with all their sentences, words and passages (their vectors are skipped by
        every search from the next commit on).

        Args:
            doc_ids: document ids; unknown ids are ignored.

        Returns:
            Rows deleted per table: ``documents``, ``sentences``, ``words``, ``passages``.
        """
        self._require_writing()
        rowids = [
            row[0]
            for row in self._select_in("select id from documents where doc_id in ({})", doc_ids, kind=str)
        ]
        counts = dict.fromkeys(ROW_TABLES, 0)
        if not rowids:
            return counts
        for table in VECTOR_TABLES:
            ids = self.rows_of_documents(table, rowids).tolist()
            for first, last in _ranges(ids):
                self.db.execute(
                    "insert into deleted (table_name, first_id, last_id) values (?, ?, ?)",
                    [table, first, last],
                )
            counts[table] = len(ids)
        for table in ("words", "passages", "sentences"):
            self._select_in(f"delete from {table} where document in ({{}})", rowids)
        self._select_in("delete from documents where id in ({})", rowids)
        counts["documents"] = len(rowids)
        return counts

    def merge_shards(self) -> list[str]:
        """Merge shards, in one commit of their own: runs of adjacent exact shards of a compressed
        table that hold enough vectors to train on become shards of the table's type, trained on
        them; runs of many small shards become one; shards whose every vector is deleted are dropped.
        Old files stay until the next writer starts (readers may use them).

        Returns:
            One line per merge, saying what was merged (empty when nothing was).
        """
        self._require_writing()
        messages = []
        next_number = self._next_shard_number()
        for table in VECTOR_TABLES:
            shard_set = self._vectors(table)
            shards = shard_set.shards
            for shard in shards:
                if shard_set.live_count(shard) == 0:
                    self.db.execute("delete from shards where file = ?", [shard.file])
                    self.db.execute(
                        "delete from deleted where table_name = ? and first_id >= ? and last_id < ?",
                        [table, shard.first_id, shard.first_id + shard.count],
                    )
                    messages.append(f"{table}: dropped {shard.file}, all its {shard.count:,} vectors deleted")
            live = [s for s in shards if shard_set.live_count(s) > 0]
            target = self._compressed_type(table, sum(s.count for s in live))
            exact = [s for s in live if s.index_type == FLAT_INDEX_TYPE]
            merges: list[tuple[list[Shard], str, str]] = []
            if target is not None:
                enough = max(MIN_TRAINED_SHARD, training_needed(target, self.dimension(table)))
                for whole in _adjacent_runs(exact):
                    for run in _pieces(whole, MERGE_VECTORS, enough):
                        total = sum(s.count for s in run)
                        if total < enough:
                            continue
                        merges.append(
                            (
                                run,
                                target,
                                f"{len(run)} exact shard(s), {total:,} vectors, "
                                f"compressed to {target} trained on them",
                            )
                        )
            if not merges:
                small_limit = SHARD_BYTES // (4 * self.dimension(table)) // 4
                for run in _adjacent_runs([s for s in exact if s.count < small_limit]):
                    if len(run) >= MERGE_SMALL_SHARDS:
                        total = sum(s.count for s in run)
                        merges.append(
                            (
                                run,
                                FLAT_INDEX_TYPE,
                                f"{len(run)} small exact shards, {total:,} vectors, merged into one",
                            )
                        )
            for run, kind, message in merges:
                new = merge_shards(self.folder, run, self.dimension(table), kind, next_number)
                self._replace_shards(run, new)
                next_number += len(new)
                messages.append(f"{table}: {message}")
        self._upsert_setting("next_shard_number", next_number)
        _sync_folder(self.folder)
        self.db.execute("commit")
        self._shard_sets = {}
        self._begin()
        return messages

    def _compressed_type(self, table: str, total: int) -> str | None:
        requested = str(self.settings.get("index_type", AUTO_INDEX_TYPE))
        if requested == FLAT_INDEX_TYPE:
            return None
        if requested == AUTO_INDEX_TYPE:
            return AUTO_COMPRESSED_TYPE if total > EXACT_LIMIT else None
        return requested

    def _replace_shards(self, old: list[Shard], new: list[Shard]) -> None:
        for shard in old:
            self.db.execute("delete from shards where file = ?", [shard.file])
        self._record_shards(new)

    def _insert(self, table: str, rows: Sequence[Row]) -> None:
        # Plain executemany: sqlite-utils' insert_all costs more than the model on big builds.
        if not rows:
            return
        columns = _COLUMNS[table]
        sql = (
            f"insert into {table} ({', '.join(f'[{c}]' for c in columns)}) "
            f"values ({', '.join('?' * len(columns))})"
        )
        values = rows if isinstance(rows[0], tuple) else [tuple(row[c] for c in columns) for row in rows]
        self.db.conn.executemany(sql, values)

    def _record_shards(self, shards: list[Shard]) -> None:
        for shard in shards:
            self.db.execute(
                "insert into shards (table_name, file, first_id, count, index_type) values (?, ?, ?, ?, ?)",
                [shard.table, shard.file, shard.first_id, shard.count, shard.index_type],
            )

    # ----------------------------------------------------------------------------------- reading

    @_reading
    def _vectors(self, table: str) -> ShardSet:
        if table not in self._shard_sets:
            rows = self.db.execute(
                "select file, first_id, count, index_type from shards where table_name = ? order by first_id",
                [table],
            ).fetchall()
            shards = [Shard(table, file, first, count, kind) for file, first, count, kind in rows]
            deleted = self.db.execute(
                "select first_id, last_id from deleted where table_name = ?", [table]
            ).fetchall()
            self._shard_sets[table] = ShardSet(
                self.folder, shards, self.dimension(table), deleted, self._opened
            )
        return self._shard_sets[table]

    def check(self) -> tuple[list[str], list[str]]:
        """Verify the index: the database's integrity, every vector file against its record, every
        row against its vector and its document's text, no half-stored document.

        Returns:
            ``(problems, notes)``: one line per problem found (none for a sound index), and notes
            that are not problems (an unfinished build, files left by an interrupted writer).
        """
        problems: list[str] = []
        notes: list[str] = []
        try:
            result = self.db.execute("pragma quick_check").fetchone()[0]
            if result != "ok":
                return [f"index.sqlite fails SQLite's integrity check: {result}"], notes
            problems += self._check_vectors()
            problems += self._check_rows()
        except sqlite3.DatabaseError as error:
            problems.append(f"index.sqlite cannot be read: {error}")
        if not self.complete:
            notes.append("the build did not finish; run the same build-index again to complete it")
        referenced = {row[0] for row in self.db.execute("select file from shards")}
        leftovers = sorted(set(self._files_on_disk()) - referenced)
        if leftovers:
            notes.append(
                f"{len(leftovers)} vector file(s) no commit refers to (left by an interrupted or "
                f"merging writer; the next add removes them): {', '.join(leftovers[:5])}"
            )
        return problems, notes

    def _check_vectors(self) -> list[str]:
        problems = []
        for table in VECTOR_TABLES:
            shard_set = self._vectors(table)
            end = covered = 0
            for shard in shard_set.shards:
                if shard.first_id < end:
                    problems.append(f"{table}: {shard.file} overlaps the shard before it")
                end = shard.first_id + shard.count
                rows = self.db.execute(
                    f"select count(*) from {table} where id >= ? and id < ?", [shard.first_id, end]
                ).fetchone()[0]
                covered += rows
                try:
                    shard_set._index(shard)
                except IndexCorrupted as error:
                    problems.append(f"{table}: {error}")
                    continue
                gone = shard.count - shard_set.live_count(shard)
                if rows + gone != shard.count:
                    problems.append(
                        f"{table}: {shard.file} holds {shard.count:,} vectors but {rows:,} rows and "
                        f"{gone:,} deleted ids fall in its range"
                    )
            total = self.db.execute(f"select count(*) from {table}").fetchone()[0]
            if covered != total:
                problems.append(f"{table}: {total - covered:,} rows have no vector in any shard")
            revived = self.db.execute(
                f"select count(*) from {table} t join deleted d on d.table_name = ? "
                "and t.id between d.first_id and d.last_id",
                [table],
            ).fetchone()[0]
            if revived:
                problems.append(f"{table}: {revived:,} rows have ids recorded as deleted")
        return problems

    def _check_rows(self) -> list[str]:
        problems = []
        for sql, what in (
            ("select count(*) from sentences where document not in (select id from documents)", "sentences"),
            ("select count(*) from words where sentence not in (select id from sentences)", "words"),
            ("select count(*) from words where document not in (select id from documents)", "words"),
            ("select count(*) from passages where document not in (select id from documents)", "passages"),
        ):
            orphans = self.db.execute(sql).fetchone()[0]
            if orphans:
                problems.append(f"{orphans:,} {what} belong to no stored document or sentence")
        empty = self.db.execute(
            "select count(*) from documents where id not in (select document from sentences)"
        ).fetchone()[0]
        if empty:
            problems.append(f"{empty:,} documents have no sentences (stored by halves)")
        if self.settings.get("passages", "none") != "none":
            bare = self.db.execute(
                "select count(*) from documents where id not in (select document from passages)"
            ).fetchone()[0]
            if bare:
                problems.append(f"{bare:,} documents have no passages (stored by halves)")
        bad_spans = 0
        examples: list[str] = []
        for document, text in self.db.execute("select id, text from documents"):
            for kind, sql in (
                ("sentence", "select id, start, end, text from sentences where document = ?"),
                ("word", "select id, start, end, form from words where document = ?"),
            ):
                for row_id, start, end, stored in self.db.execute(sql, [document]):
                    if text[start:end] != stored:
                        bad_spans += 1
                        if len(examples) < 3:
                            examples.append(f"{kind} {row_id}: {stored[:30]!r} at {start}-{end}")
        if bad_spans:
            problems.append(
                f"{bad_spans:,} stored spans do not slice their document to their text "
                f"({'; '.join(examples)})"
            )
        return problems

    @_reading
    def deleted_count(self) -> dict[str, int]:
        """Vectors of deleted rows still on disk, per table (skipped by searches)."""
        return {
            table: self.db.execute(
                "select coalesce(sum(last_id - first_id + 1), 0) from deleted where table_name = ?", [table]
            ).fetchone()[0]
            for table in VECTOR_TABLES
        }

    @_reading
    def vector_files(self) -> list[dict[str, Any]]:
        """Every vector shard: table, file, first rowid, vector count, index type and bytes on disk."""
        rows = self.db.execute(
            "select table_name, file, first_id, count, index_type from shards order by table_name, first_id"
        ).fetchall()
        result = []
        for table, file, first, count, kind in rows:
            path = self.folder / file
            result.append(
                {
                    "table": table,
                    "file": file,
                    "first_id": first,
                    "count": count,
                    "index_type": kind,
                    "bytes": path.stat().st_size if path.is_file() else None,
                }
            )
        return result

    @_reading
    def counts(self) -> dict[str, int]:
        """Row counts: documents, sentences, words."""
        return {
            table: self.db.execute(f"select count(*) from {table}").fetchone()[0]
            for table in ("documents", "sentences", "words", "passages")
        }

    @_reading
    def search(
        self, table: str, vector: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k sentences, words or passages whose vectors best match a query vector.

        Args:
            table: ``sentences``, ``words`` or ``passages``.
            vector: ``(dimension(table),)`` float32, L2-normalised.
            k: number of hits.
            allowed: only these rowids (int64), when given.

        Returns:
            ``(ids, scores)``: int64 and float32 arrays of up to ``k`` hits, best first.
        """
        return self._vectors(table).search(vector, k, allowed)

    @_reading
    def word_vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of word occurrences, read by id (no scan of the whole index).

        Args:
            ids: ``(n,)`` int64 word ids.

        Returns:
            ``(n, word_dimension)`` float32.
        """
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(ids):
            return np.zeros((0, self.dimension("words")), dtype=np.float32)
        return self._vectors("words").reconstruct(ids)

    @_reading
    def vectors_of_documents(
        self, table: str, documents: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stored sentence or passage vector of some documents, read by id.

        Args:
            table: ``sentences`` or ``passages``.
            documents: document rowids.

        Returns:
            ``(ids, document_rowids, vectors)``: ``(n,)`` int64, ``(n,)`` int64 and
            ``(n, sentence_dimension)`` float32.
        """
        if table not in ("sentences", "passages"):
            raise ValueError(table)
        pairs = self._select_in(f"select id, document from {table} where document in ({{}})", documents)
        ids = np.asarray([p[0] for p in pairs], dtype=np.int64)
        owners = np.asarray([p[1] for p in pairs], dtype=np.int64)
        if not len(ids):
            return ids, owners, np.zeros((0, self.dimension(table)), dtype=np.float32)
        return ids, owners, self._vectors(table).reconstruct(ids)

    @_reading
    def documents_of(self, table: str, ids: Iterable[int]) -> dict[int, int]:
        """Document rowid of each sentence or passage id."""
        if table not in ("sentences", "passages"):
            raise ValueError(table)
        return dict(self._select_in(f"select id, document from {table} where id in ({{}})", ids))

    @_reading
    def filter_documents(
        self, doc_ids: Sequence[str] | None, metadata: dict[str, list[Any]] | None
    ) -> list[dict[str, Any]]:
        """The documents that pass a filter, found in SQL.

        Args:
            doc_ids: only these documents, when given.
            metadata: per metadata field, the values accepted: strings, numbers, booleans or None
                (SQL equality, so ``true`` also matches ``1``: the caller checks types).

        Returns:
            ``{"id": rowid, "metadata": parsed metadata}`` per document.
        """
        clauses, parameters = [], []
        for key, values in (metadata or {}).items():
            path = "$." + json.dumps(key)
            present = [v for v in values if v is not None]
            tests = []
            if present:
                tests.append(f"json_extract(metadata, ?) in ({','.join('?' * len(present))})")
                parameters += [path, *present]
            if len(present) < len(values):
                tests.append("json_extract(metadata, ?) is null")
                parameters.append(path)
            clauses.append("(" + " or ".join(tests) + ")")
        where = " and ".join(clauses) or "1"
        if doc_ids is None:
            found = self.db.execute(
                f"select id, metadata from documents where {where}", parameters
            ).fetchall()
        else:
            found = self._select_in(
                f"select id, metadata from documents where doc_id in ({{}}) and {where}",
                dict.fromkeys(doc_ids),
                kind=str,
                after=parameters,
            )
        return [{"id": row[0], "metadata": json.loads(row[1] or "{}")} for row in found]

    @_reading
    def rows_of_documents(self, table: str, documents: Sequence[int]) -> np.ndarray:
        """Rowids (int64, in order) of the sentences, words or passages of some documents."""
        if table not in VECTOR_TABLES:
            raise ValueError(table)
        pairs = self._select_in(f"select id from {table} where document in ({{}})", documents)
        return np.asarray(sorted(p[0] for p in pairs), dtype=np.int64)

    def document_rows(self, rowids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Document rows (without their text), keyed by document rowid."""
        return self._rows("select id, doc_id, source, metadata from documents where id in ({})", rowids)

    @_reading
    def word_ids_for_lemma(self, lemma: str) -> tuple[np.ndarray, list[str]]:
        """Ids and surface forms of every occurrence of a lemma.

        Args:
            lemma: lower-case lemma.

        Returns:
            ``(ids, forms)``: int64 ids in storage order and their surface forms.
        """
        rows = self.db.execute("select id, form from words where lemma = ?", [lemma]).fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

    def sentence_rows(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Sentence rows with their document's id and metadata.

        Args:
            ids: sentence rowids.

        Returns:
            ``{sentence id: {"id", "start", "end", "text", "position", "doc_id", "metadata"}}``.
        """
        return self._rows(
            "select s.id, s.start, s.end, s.text, s.position, d.doc_id, d.metadata "
            "from sentences s join documents d on d.id = s.document where s.id in ({})",
            ids,
        )

    def word_rows(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Word rows with their sentence and document.

        Args:
            ids: word rowids.

        Returns:
            ``{word id: {"id", "start", "end", "form", "lemma", "sentence_id", "sentence_start",
            "sentence_end", "sentence_text", "doc_id", "metadata"}}``.
        """
        return self._rows(
            "select w.id, w.start, w.end, w.form, w.lemma, s.id as sentence_id, "
            "s.start as sentence_start, s.end as sentence_end, s.text as sentence_text, "
            "d.doc_id, d.metadata from words w join sentences s on s.id = w.sentence "
            "join documents d on d.id = w.document where w.id in ({})",
            ids,
        )

    @_reading
    def _rows(self, sql: str, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        result: dict[int, dict[str, Any]] = {}
        for record in self._select_in(sql, ids, as_dicts=True):
            if "metadata" in record:
                record["metadata"] = json.loads(record["metadata"] or "{}")
            result[record["id"]] = record
        return result

    def _select_in(
        self,
        sql: str,
        values: Iterable[int | str],
        as_dicts: bool = False,
        kind: type = int,
        after: Sequence[Any] = (),
    ) -> list[Any]:
        """Run ``sql`` (with ``{}`` where the ``in (...)`` placeholders go) over many values (rowids,
        or document ids with ``kind=str``), in chunks that stay under SQLite's bound-parameter limit;
        ``after`` binds the placeholders that follow the list. Rows as tuples or dicts."""
        value_list = [kind(v) for v in values]
        size = max(1, 900 - len(after))
        rows: list[Any] = []
        for start in range(0, len(value_list), size):
            chunk = value_list[start : start + size]
            cursor = self.db.execute(sql.format(",".join("?" * len(chunk))), [*chunk, *after])
            if as_dicts:
                names = [d[0] for d in cursor.description]
                rows += [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            else:
                rows += cursor.fetchall()
        return rows


def _row_id(row: dict[str, Any] | tuple[Any, ...]) -> int:
    return int(row[0] if isinstance(row, tuple) else row["id"])


def _ranges(ids: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted ids as inclusive ``(first, last)`` runs of consecutive values."""
    runs: list[tuple[int, int]] = []
    for value in ids:
        if runs and value == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


def _adjacent_runs(shards: list[Shard]) -> list[list[Shard]]:
    """Shards (in rowid order) grouped into runs where each starts where the previous one ends."""
    runs: list[list[Shard]] = []
    for shard in shards:
        if runs and runs[-1][-1].first_id + runs[-1][-1].count == shard.first_id:
            runs[-1].append(shard)
        else:
            runs.append([shard])
    return runs


def _pieces(run: list[Shard], limit: int, least: int) -> list[list[Shard]]:
    """A run of shards cut into consecutive pieces of at most ``limit`` vectors where it can be; a
    last piece under ``least`` vectors joins the piece before it."""
    pieces: list[list[Shard]] = []
    for shard in run:
        if pieces and sum(s.count for s in pieces[-1]) + shard.count <= limit:
            pieces[-1].append(shard)
        else:
            pieces.append([shard])
    if len(pieces) > 1 and sum(s.count for s in pieces[-1]) < least:
        pieces[-2] += pieces.pop()
    return pieces


def _create_database(folder: Path, settings: dict[str, Any]) -> None:
    """Write a new, empty database under a temporary name and rename it into place: a process killed
    meanwhile leaves no half-made ``index.sqlite``."""
    temporary = folder / f"{DATABASE_FILE}.tmp"
    for leftover in folder.glob(f"{DATABASE_FILE}.tmp*"):
        leftover.unlink()
    connection = _connect(temporary, writable=True)
    try:
        connection.execute("pragma journal_mode=wal")  # kept in the file: readers during writes
        database = sqlite_utils.Database(connection)
        database["settings"].create({"key": str, "value": str}, pk="key")
        database["documents"].create(_SCHEMA["documents"], pk="id")
        database["documents"].create_index(["doc_id"], unique=True)
        database["sentences"].create(
            _SCHEMA["sentences"], pk="id", foreign_keys=[("document", "documents", "id")]
        )
        database["sentences"].create_index(["document"])
        database["words"].create(
            _SCHEMA["words"],
            pk="id",
            foreign_keys=[("sentence", "sentences", "id"), ("document", "documents", "id")],
        )
        database["words"].create_index(["lemma"])
        database["words"].create_index(["sentence"])
        database["words"].create_index(["document"])
        database["passages"].create(
            _SCHEMA["passages"], pk="id", foreign_keys=[("document", "documents", "id")]
        )
        database["passages"].create_index(["document"])
        database["shards"].create(_SCHEMA["shards"], pk="id")
        database["deleted"].create(_SCHEMA["deleted"], pk="id")
        all_settings = {
            **settings,
            "schema_version": SCHEMA_VERSION,
            "status": STATUS_BUILDING,
            "next_ids": dict.fromkeys(ROW_TABLES, 1),
            "next_shard_number": 0,
        }
        database["settings"].insert_all(
            [{"key": key, "value": json.dumps(value)} for key, value in all_settings.items()]
        )
        connection.commit()
    finally:
        connection.close()  # the last connection: the write-ahead log is folded in and removed
    descriptor = os.open(temporary, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary, folder / DATABASE_FILE)
    _sync_folder(folder)


def _identity(folder: Path) -> tuple[int, int] | None:
    """Device and inode of an index's database file: they change when the index is replaced."""
    try:
        status = (folder / DATABASE_FILE).stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _is_own_leftover(name: str) -> bool:
    """Files a killed ``create`` may leave in a new index folder."""
    return name == LOCK_FILE or name.startswith(f"{DATABASE_FILE}.tmp")


def _recover_interrupted_swap(folder: Path) -> None:
    """Finish or undo an ``--overwrite`` build killed between its two renames (old index moved
    aside, new one not yet moved in): the new index goes in if it was complete, else the old one goes
    back. Nothing happens while a writer holds the old index's lock (it is in the middle of the swap)."""
    folder = Path(folder).expanduser().resolve()
    if folder.parent == folder or folder.exists():
        return
    retired = folder.with_name(f".{folder.name}.replaced")
    if not retired.is_dir():
        return
    try:
        lock = _take_lock(retired)
    except SenseIndexError:
        return
    try:
        staging = _staging_folder(folder)
        database = staging / DATABASE_FILE
        if database.is_file() and _read_status(database) == STATUS_COMPLETE:
            staging.rename(folder)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            retired.rename(folder)
    except (OSError, IndexCorrupted):
        pass
    finally:
        _release_lock(lock)


def _staging_folder(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.building")


def _connect(path: Path, writable: bool) -> sqlite3.Connection:
    if writable or os.access(path.parent, os.W_OK):
        # A reader opens the database writable but with query_only on: as the last connection to
        # close it can then remove the write-ahead log files, which a read-only one would leave.
        connection = sqlite3.connect(path, timeout=30, check_same_thread=False)
        if not writable:
            connection.execute("pragma query_only=1")
    else:  # a read-only folder cannot hold the write-ahead log's index: read the file as it is
        connection = sqlite3.connect(
            path.resolve().as_uri() + "?immutable=1", uri=True, timeout=30, check_same_thread=False
        )
    connection.execute("pragma busy_timeout=30000")
    return connection


def _open_database(folder: Path, writable: bool) -> sqlite3.Connection:
    _recover_interrupted_swap(folder)
    database_path = folder / DATABASE_FILE
    if not folder.is_dir():
        raise IndexNotFound(f"index folder {folder} does not exist; build one with build-index")
    if not database_path.is_file():
        raise IndexNotFound(f"{folder} is not a senseindex index (no {DATABASE_FILE})")
    try:
        connection = _connect(database_path, writable)
        connection.execute("select count(*) from settings").fetchone()
    except sqlite3.DatabaseError as error:
        raise IndexCorrupted(f"{database_path} is not a readable index database ({error})") from error
    return connection


def _take_lock(folder: Path) -> int:
    """Take the folder's write lock (released when the process ends, however it ends)."""
    try:
        descriptor = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise SenseIndexError(f"cannot write to the index in {folder}: {error.strerror}") from error
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        raise IndexBusy(
            f"another process is writing to the index in {folder}; try again when it has finished"
        ) from None
    return descriptor


def _release_lock(descriptor: int | None) -> None:
    if descriptor is not None:
        with contextlib.suppress(OSError):
            os.close(descriptor)  # closing the descriptor releases its lock


def _sync_folder(folder: Path) -> None:
    """Flush the folder's entries (the renamed vector files) to disk before the commit names them."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def read_index_status(folder: Path) -> str | None:
    """``building`` or ``complete`` for an index folder; None when the folder holds no index.

    Raises:
        IndexCorrupted: the database cannot be read.
    """
    _recover_interrupted_swap(Path(folder))
    database_path = Path(folder) / DATABASE_FILE
    return _read_status(database_path) if database_path.is_file() else None


def _read_status(database_path: Path) -> str | None:
    try:
        connection = sqlite3.connect(database_path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            row = connection.execute("select value from settings where key = 'status'").fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise IndexCorrupted(f"{database_path} is not a readable index database: {error}") from error
    return json.loads(row[0]) if row else None
