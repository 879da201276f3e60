"""The write side of an index (`IndexStore`).

Creating one, adding and deleting rows with their vectors, commits, shard merges and the move of an
``--overwrite`` build into place.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from senseindex.errors import IndexExists, SenseIndexError
from senseindex.indexer.faults import storage_error
from senseindex.indexer.storage import folder as folder_files
from senseindex.indexer.storage.check import check_store
from senseindex.indexer.storage.compaction import compact_shards, forget_deleted, plan_compaction
from senseindex.indexer.storage.merge import emptied_shards, plan_merges
from senseindex.indexer.storage.reader import IndexReader
from senseindex.indexer.storage.schema import (
    COLUMNS,
    DATABASE_FILE,
    NEXT_IDS_KEY,
    NEXT_SHARD_NUMBER_KEY,
    ROW_TABLES,
    SCHEMA_VERSION_KEY,
    STATUS_BUILDING,
    STATUS_COMPLETE,
    STATUS_KEY,
    VECTOR_TABLES,
    Row,
    row_id,
    upgrade,
)
from senseindex.indexer.storage.shards import Shard
from senseindex.indexer.storage.vectors import AUTO_INDEX_TYPE, ShardWriter, merge_shards, shard_number


class IndexStore(IndexReader):
    """An index folder: the SQLite database and the FAISS vector shards of each table.

    `open` opens an index for reading, `create` starts a new one and `open_for_writing`
    adds to or deletes from an existing one. A writer holds the folder's write lock until
    `finish`, `abort` or `close`.
    """

    def __init__(self, folder: Path, connection: sqlite3.Connection) -> None:
        super().__init__(folder, connection)
        self._writers: dict[str, ShardWriter] = {}
        self._target: Path | None = None  # set while an --overwrite build is written next to it
        self._lock: int | None = None
        self._target_lock: int | None = None
        self._created_here = False

    # ----------------------------------------------------------------------------------- lifecycle

    @classmethod
    def create(cls, folder: Path, settings: dict[str, Any], overwrite: bool = False) -> IndexStore:
        """Create an empty index in a folder and open it for writing.

        A new folder gets the index in place: every commit is searchable, and a build that is killed
        is resumed with `open_for_writing`. With ``overwrite``, the new index is written next to
        the old one and moved into its place by `finish`, so the old one stays whole until then.

        Args:
            folder: the index folder; created if missing.
            settings: index settings to store (JSON-able values); must hold ``sentence_dimension``,
                ``word_dimension`` and ``index_type`` (``auto``, ``flat`` or a FAISS factory string,
                checked with `check_index_type`).
            overwrite: replace an index already in the folder.

        Returns:
            The new store, ready for `add_batch`.

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
        folder_files.recover_interrupted_swap(folder)
        replacing = (folder / DATABASE_FILE).exists()
        if replacing and not overwrite:
            status = folder_files.read_status(folder / DATABASE_FILE)
            state = "an unfinished index" if status == STATUS_BUILDING else "an index"
            raise IndexExists(f"{folder} already holds {state}; use --overwrite to rebuild it from scratch")
        if (
            not replacing
            and folder.is_dir()
            and not all(folder_files.is_own_leftover(p.name) for p in folder.iterdir())
        ):
            raise IndexExists(
                f"{folder} is a folder with other files in it, not an index; choose a new folder"
            )
        target_lock = folder_files.take_lock(folder) if replacing else None
        where = folder_files.staging_folder(folder) if replacing else folder
        existed = where.exists() and not replacing
        try:
            if replacing and where.exists():
                shutil.rmtree(where)
            where.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            folder_files.release_lock(target_lock)
            raise _cannot_create(error, folder) from error
        try:
            lock = folder_files.take_lock(where)
        except SenseIndexError:
            folder_files.release_lock(target_lock)
            raise
        try:
            folder_files.create_database(where, settings)
            connection = folder_files.connect(where / DATABASE_FILE, writable=True)
        except (OSError, sqlite3.Error) as error:
            failure = _cannot_create(error, folder)  # before the cleanup frees what the disk lacked
            folder_files.release_lock(lock)
            folder_files.release_lock(target_lock)
            # nothing half-made stays behind (a folder that was there before stays, emptied of ours)
            for leftover in where.iterdir() if existed else ():
                if folder_files.is_own_leftover(leftover.name) and leftover.is_file():
                    leftover.unlink(missing_ok=True)
            if not existed:
                shutil.rmtree(where, ignore_errors=True)
            raise failure from error
        store = cls(where, connection)
        store._lock = lock
        store._target = folder if replacing else None
        store._target_lock = target_lock
        store._created_here = not replacing
        store._start_writing()
        return store

    @classmethod
    def open_for_writing(cls, folder: Path) -> IndexStore:
        """Open an existing index to add or delete documents.

        Takes the folder's write lock and deletes files an interrupted writer left behind.

        Args:
            folder: the index folder.

        Returns:
            The store, ready for `add_batch`, `delete_documents` and `commit`.

        Raises:
            IndexNotFound: no index in the folder.
            IndexBusy: another process is writing to it.
            SchemaMismatch: the index was written by another format version.
            IndexCorrupted: the database or a vector file cannot be read.
            SenseIndexError: the folder is not writable.
        """
        folder = Path(folder).expanduser().resolve()
        connection = folder_files.open_database(folder, writable=True)
        lock = None
        try:
            lock = folder_files.take_lock(folder)
            store = cls(folder, connection)
            store._lock = lock
            store._check_version()
            store._upgrade_format()
            folder_files.remove_unreferenced_files(folder, store.referenced_files())
            for table in VECTOR_TABLES:  # every file must be readable before anything is changed
                store.shard_set(table).open_all()
            store._start_writing()
        except BaseException:
            connection.close()
            folder_files.release_lock(lock)
            raise
        return store

    def _upgrade_format(self) -> None:
        """Bring an index of an older readable format to the current one, in a commit of its own."""
        version = self.int_setting(SCHEMA_VERSION_KEY)
        connection = self.db.conn
        if upgrade(connection, version):
            connection.commit()
            self._load_settings()

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
        """Make everything added or deleted since the last commit durable and visible to readers.

        Writes the vectors still in memory, then commits the rows with the shard records.
        """
        self._write_shards(final=False)

    def _write_shards(self, final: bool) -> None:
        retired_files: list[str] = []
        for writer in self._writers.values():
            written, retired = writer.finish() if final else writer.checkpoint()
            self._replace_shards(retired, written)
            retired_files += [shard.file for shard in retired]
        folder_files.sync_folder(self.folder)
        self._upsert_setting(NEXT_IDS_KEY, dict(zip(ROW_TABLES, self.next_ids(), strict=True)))
        self._upsert_setting(NEXT_SHARD_NUMBER_KEY, self._next_shard_number())
        self._commit_and_begin()
        self._remove_retired(retired_files)

    def _remove_retired(self, files: list[str]) -> None:
        """Delete files the last commit stopped naming.

        Readers that opened them keep them (an open file outlives its name); one that has yet to open a file
        of an older state retries on the newer one (`IndexReader.open_vectors`).
        """
        referenced = self.referenced_files()
        for name in files:
            if name not in referenced:
                (self.folder / name).unlink(missing_ok=True)

    def _remove_unreferenced(self) -> None:
        """Delete every vector file the committed state does not name (after a rollback: this session's)."""
        with contextlib.suppress(sqlite3.Error, OSError):  # a damaged database: leave the files alone
            folder_files.remove_unreferenced_files(self.folder, self.referenced_files())

    def _commit_and_begin(self) -> None:
        self.db.execute("commit")
        self._shard_sets = {}
        self._begin()

    def _next_shard_number(self) -> int:
        """The next shard file number.

        It only ever grows, so no file name is used twice (a reader may still hold a retired file under its
        name).
        """
        numbers = [shard_number(f) for f in folder_files.vector_files_on_disk(self.folder)]
        numbers += [shard_number(name) for name in self.referenced_files()]
        numbers += [w.next_number - 1 for w in self._writers.values()]
        return max([*numbers, self.int_setting(NEXT_SHARD_NUMBER_KEY, 0) - 1]) + 1

    def finish(self, complete: bool = True) -> list[str]:
        """Commit, merge, mark complete, clean up and release the write lock.

        Commits, merges small or untrained shards, marks the index complete (for a build), deletes the vector
        files no commit refers to any more and, for an ``--overwrite`` build, moves the index into its folder;
        then releases the write lock.

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
            self._upsert_setting(STATUS_KEY, STATUS_COMPLETE)
        for table in VECTOR_TABLES:
            self._upsert_setting(f"{table}_index_type", self.table_index_type(table))
        self.db.execute("commit")
        # The files this session retired (the provisional copy each commit replaced, shards merged
        # away) go now, not when the next writer opens the index: a finished index is settled, and a
        # later session that stores nothing changes no file. Readers opened theirs already, and one
        # opening a retired file retries on the newer state.
        folder_files.remove_unreferenced_files(self.folder, self.referenced_files())
        self._writers = {}
        self._writing = False
        self.db.execute("pragma wal_checkpoint(passive)")
        target, staging = self._target, self.folder
        if target is None:
            self.close()
            return merges
        self.db.conn.close()
        try:
            folder_files.swap_into_place(staging, target)
        finally:
            self._release_locks()
        self.folder = target
        self._target = None
        return merges

    def abort(self) -> None:
        """Give up writing: roll back what was not committed.

        An ``--overwrite`` build's unfinished index is deleted (the index it was to replace is untouched); an
        index built in place keeps its committed documents and can be resumed.
        """
        self._roll_back()
        self._writers = {}
        self._writing = False
        if self._lock is not None:  # the files this session wrote after its last commit
            self._remove_unreferenced()
        empty = False
        with contextlib.suppress(sqlite3.Error):  # a damaged database: keep the folder
            empty = self.db.execute("select count(*) from documents").fetchone()[0] == 0
        self.db.conn.close()
        if self._target is not None or (self._created_here and empty):
            # an --overwrite build's unfinished copy, or a new index that never stored a document
            shutil.rmtree(self.folder, ignore_errors=True)
        self._release_locks()

    def close(self) -> None:
        """Close the database connection (rolling back anything not committed).

        Also releases the write lock if this store holds it.
        """
        if self._writing and self._lock is not None:
            self._roll_back()
            self._remove_unreferenced()
            self._writers = {}
            self._writing = False
        super().close()
        folder_files.release_lock(self._lock)
        self._lock = None

    def _release_locks(self) -> None:
        folder_files.release_lock(self._lock)
        folder_files.release_lock(self._target_lock)
        self._lock = self._target_lock = None

    def check(self) -> tuple[list[str], list[str]]:
        """Verify the index (see `check_store`).

        Returns:
            ``(problems, notes)``: one line per problem found (none for a sound index), and notes
            that are not problems (an unfinished build, files left by an interrupted writer).
        """
        return check_store(self)

    # ----------------------------------------------------------------------------------- writing

    def _upsert_setting(self, key: str, value: Any) -> None:
        self.db.execute(
            "insert or replace into settings (key, value) values (?, ?)", [key, json.dumps(value)]
        )
        self.settings[key] = value

    def next_ids(self) -> tuple[int, int, int, int]:
        """The next free rowids of documents, sentences, words and passages.

        Rowids are never reused, not even after a delete: a deleted row's vector stays in its shard at
        the position its rowid names.
        """
        stored = self.settings.get(NEXT_IDS_KEY) or {}
        if not isinstance(stored, dict):
            stored = {}  # damaged: the rowids in use still give safe values
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
        documents, sentences, words, passages = result
        return documents, sentences, words, passages

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

        The rows become visible to readers, and durable, at the next `commit`.

        Raises:
            ValueError: rows without as many vectors, or ids that do not continue the table's (a bug).
        """
        self._require_writing()
        tables = (
            ("sentences", sentences, sentence_vectors),
            ("words", words, word_vectors),
            ("passages", passages, passage_vectors),
        )
        batches: list[tuple[str, Sequence[Row], np.ndarray]] = []
        for table, rows, vectors in tables:
            if not rows:
                continue
            if vectors is None or len(vectors) != len(rows):
                # a vector's position in its shard is its rowid: a missing one shifts all after it
                raise ValueError(f"{len(rows)} {table} rows need as many vectors")
            writer = self._writers[table]
            first, last = row_id(rows[0]), row_id(rows[-1])
            if first != writer.next_id or last != writer.next_id + len(rows) - 1:
                raise ValueError(f"{table} ids must continue from {writer.next_id} without gaps")
            batches.append((table, rows, vectors))
        self._insert("documents", documents)
        for table, rows, vectors in batches:
            self._insert(table, rows)
            self._record_shards(self._writers[table].add(vectors))

    def _require_writing(self) -> None:
        if not self._writing:
            raise SenseIndexError(f"the index in {self.folder} is open for reading only")

    def delete_documents(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """Delete documents with all their sentences, words and passages.

        Their vectors are skipped by every search from the next commit on.

        Args:
            doc_ids: document ids; unknown ids are ignored.

        Returns:
            Rows deleted per table: ``documents``, ``sentences``, ``words``, ``passages``.

        Raises:
            SourceError: a document id SQLite cannot look up (a lone surrogate in it).
        """
        self._require_writing()
        rowids = [
            row[0]
            for row in self._select_in(
                "select id from documents where doc_id in ({})", self._document_ids(doc_ids), kind=str
            )
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

    def merge_shards(self, full: bool = False) -> list[str]:
        """Merge shards, in one commit of their own.

        Runs of adjacent exact shards of a compressed table that hold enough vectors to train on become shards
        of the table's type, trained on them; shards whose every vector is deleted are dropped; small exact
        shards are merged by size class and exact shards that lost most of their vectors are rewritten
        without the deleted ones (`compaction`), so a table keeps about log2 of its vectors in small shards.
        The files replaced are deleted once the commit names the new ones.

        Args:
            full: compact: every small exact shard into one, every exact shard without its deleted vectors.

        Returns:
            One line per merge, saying what was merged (empty when nothing was).
        """
        self._require_writing()
        messages = []
        retired: list[str] = []
        next_number = self._next_shard_number()
        requested = str(self.settings.get("index_type", AUTO_INDEX_TYPE))
        for table in VECTOR_TABLES:
            shard_set = self.shard_set(table)
            for shard in emptied_shards(shard_set):
                self.db.execute("delete from shards where file = ?", [shard.file])
                retired.append(shard.file)
                forget_deleted(self.db.conn, table, shard.first_id, shard.first_id + shard.count - 1)
                messages.append(f"{table}: dropped {shard.file}, all its {shard.count:,} vectors deleted")
            dimension = self.dimension(table)
            for merge in plan_merges(shard_set, requested, dimension):
                new = merge_shards(self.folder, merge.run, dimension, merge.index_type, next_number)
                self._replace_shards(merge.run, new)
                retired += [shard.file for shard in merge.run]
                next_number += len(new)
                messages.append(f"{table}: {merge.message}")
        self._shard_sets = {}  # the records as changed so far
        for position, table in enumerate(VECTOR_TABLES):
            shard_set = self.shard_set(table)
            dimension = self.dimension(table)
            for plan in plan_compaction(shard_set, dimension, full):
                first_id = self.next_ids()[position + 1]
                new, ranges = compact_shards(
                    self.db.conn, self.folder, shard_set, plan, dimension, first_id, next_number
                )
                self._replace_shards(plan.shards, new)
                for first, last in ranges:
                    forget_deleted(self.db.conn, table, first, last)
                retired += [shard.file for shard in plan.shards]
                next_number += len(new)
                messages.append(f"{table}: {plan.message}")
        self._upsert_setting(NEXT_IDS_KEY, dict(zip(ROW_TABLES, self.next_ids(), strict=True)))
        self._upsert_setting(NEXT_SHARD_NUMBER_KEY, next_number)
        folder_files.sync_folder(self.folder)
        self._commit_and_begin()
        self._remove_retired(retired)
        return messages

    def compact(self) -> list[str]:
        """Merge every table's small exact shards into one and drop deleted vectors from exact shards.

        Then finishes the store (see `finish`); an unfinished build stays unfinished.

        Returns:
            One line per merge.
        """
        messages = self.merge_shards(full=True)
        return messages + self.finish(complete=self.complete)

    def _replace_shards(self, old: list[Shard], new: list[Shard]) -> None:
        for shard in old:
            self.db.execute("delete from shards where file = ?", [shard.file])
        self._record_shards(new)

    def _insert(self, table: str, rows: Sequence[Row]) -> None:
        # Plain executemany: sqlite-utils' insert_all costs more than the model on big builds.
        if not rows:
            return
        columns = COLUMNS[table]
        sql = (
            f"insert into {table} ({', '.join(f'[{c}]' for c in columns)}) "
            f"values ({', '.join('?' * len(columns))})"
        )
        # tuples go in as given: no copy of millions of word rows
        values = rows if isinstance(rows[0], tuple) else [_as_tuple(row, columns) for row in rows]
        self.db.conn.executemany(sql, values)

    def _record_shards(self, shards: list[Shard]) -> None:
        for shard in shards:
            self.db.execute(
                "insert into shards (table_name, file, first_id, count, index_type, checksum) "
                "values (?, ?, ?, ?, ?, ?)",
                [shard.table, shard.file, shard.first_id, shard.count, shard.index_type, shard.checksum],
            )


def _cannot_create(error: OSError | sqlite3.Error, folder: Path) -> SenseIndexError:
    """The error for an index the disk or the operating system would not let be created."""
    return storage_error(error, folder, "writing") or SenseIndexError(
        f"cannot create an index in {folder}: {error}"
    )


def _as_tuple(row: Row, columns: tuple[str, ...]) -> tuple[Any, ...]:
    return row if isinstance(row, tuple) else tuple(row[c] for c in columns)


def _ranges(ids: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted ids as inclusive ``(first, last)`` runs of consecutive values."""
    runs: list[tuple[int, int]] = []
    for value in ids:
        if runs and value == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs
