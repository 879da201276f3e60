"""On-disk index storage: SQLite for everything but vectors, FAISS for vectors.

This package is the only part of senseindex that touches SQLite and FAISS. A vector's FAISS position is
always tied to the SQLite rowid of the row it belongs to (``sentences.id``, ``words.id`` or
``passages.id``) through the ``shards`` table: see :mod:`indexer.storage.vectors`.

Folder layout (see the README, "On-disk index format")::

    DIR/index.sqlite            settings, documents, sentences, words, passages, shards
    DIR/sentences-00000.faiss   sentence vectors, one shard file per run of rowids
    DIR/words-00000.faiss       word-occurrence vectors
    DIR/passages-00000.faiss    passage vectors (consecutive sentences)
"""

from __future__ import annotations

import functools
import json
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import sqlite_utils

from indexer.errors import (
    IndexCorrupted,
    IndexExists,
    IndexNotFound,
    SchemaMismatch,
    SenseIndexError,
)
from indexer.storage.vectors import (
    AUTO_INDEX_TYPE,
    Shard,
    ShardSet,
    ShardWriter,
    check_index_type,
)

__all__ = ["AUTO_INDEX_TYPE", "IndexStore", "check_index_type"]

SCHEMA_VERSION = 2
DATABASE_FILE = "index.sqlite"
VECTOR_TABLES = ("sentences", "words", "passages")
_STATUS_BUILDING = "building"
_STATUS_COMPLETE = "complete"
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

    Use :meth:`create` to start a new index and :meth:`open` to read an existing one.
    """

    def __init__(self, folder: Path, database: sqlite_utils.Database) -> None:
        self.folder = folder
        self.db = database
        self.settings: dict[str, Any] = {}
        self._shard_sets: dict[str, ShardSet] = {}
        self._writers: dict[str, ShardWriter] = {}
        self._target: Path | None = None
        self._load_settings()

    @_reading
    def _load_settings(self) -> None:
        self.settings = {row["key"]: json.loads(row["value"]) for row in self.db["settings"].rows}

    def setting(self, key: str) -> Any:
        """One stored setting.

        Raises:
            IndexCorrupted: the setting is missing.
        """
        if key not in self.settings:
            raise IndexCorrupted(f"the index in {self.folder} has no {key!r} setting; rebuild it")
        return self.settings[key]

    # ----------------------------------------------------------------------------------- lifecycle

    @classmethod
    def create(cls, folder: Path, settings: dict[str, Any], overwrite: bool = False) -> IndexStore:
        """Create an empty index in a folder.

        Args:
            folder: the index folder; created if missing.
            settings: index settings to store (JSON-able values); must hold ``sentence_dimension``,
                ``word_dimension`` and ``index_type`` (``auto``, ``flat`` or a FAISS factory string,
                checked with :func:`check_index_type`).
            overwrite: replace an index already in the folder.

        Returns:
            The new store, ready for :meth:`add_batch`; :meth:`finish` completes the index and
            :meth:`abort` discards it.

        Raises:
            IndexExists: the folder holds an index and ``overwrite`` is False.
            SenseIndexError: the folder cannot be created or written.
        """
        # The finished index is moved into place by renaming: work on the real, absolute folder (a
        # symbolic link is followed), and never on the folder the process runs in.
        folder = Path(folder).expanduser().resolve()
        if folder == Path.cwd().resolve() or folder.parent == folder:
            raise SenseIndexError(f"build the index in a folder of its own, not in {folder}")
        database_path = folder / DATABASE_FILE
        if folder.exists() and not folder.is_dir():
            raise SenseIndexError(f"{folder} exists and is not a folder")
        if database_path.exists():
            if not overwrite:
                status = _read_status(database_path)
                state = "an unfinished index" if status == _STATUS_BUILDING else "an index"
                raise IndexExists(
                    f"{folder} already holds {state}; use --overwrite to rebuild it from scratch"
                )
        elif folder.is_dir() and any(folder.iterdir()):
            raise IndexExists(
                f"{folder} is a folder with other files in it, not an index; choose a new folder"
            )
        # The new index is written next to the target and moved into place only once finished, so a
        # failed or killed build never damages the index it was to replace.
        staging = _staging_folder(folder)
        try:
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir(parents=True)
            database = sqlite_utils.Database(staging / DATABASE_FILE)
        except (OSError, sqlite3.Error) as error:
            raise SenseIndexError(f"cannot create an index in {folder}: {error}") from error
        database.enable_wal()
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
        database["passages"].create(
            _SCHEMA["passages"], pk="id", foreign_keys=[("document", "documents", "id")]
        )
        database["passages"].create_index(["document"])
        database["shards"].create(_SCHEMA["shards"], pk="id")
        all_settings = {**settings, "schema_version": SCHEMA_VERSION, "status": _STATUS_BUILDING}
        database["settings"].insert_all(
            [{"key": key, "value": json.dumps(value)} for key, value in all_settings.items()]
        )
        store = cls(staging, database)
        store._target = folder
        index_type = str(settings.get("index_type", AUTO_INDEX_TYPE))
        for table in VECTOR_TABLES:
            dimension = store.dimension(table)
            store._writers[table] = ShardWriter(staging, table, dimension, index_type, first_id=1)
        return store

    @classmethod
    def open(cls, folder: Path) -> IndexStore:
        """Open a finished index for reading.

        Args:
            folder: the index folder.

        Returns:
            The store; vector files are loaded on first use.

        Raises:
            IndexNotFound: no index in the folder, or it was never finished.
            SchemaMismatch: the index was written by a newer format version.
            IndexCorrupted: the database cannot be read.
        """
        folder = Path(folder)
        database_path = folder / DATABASE_FILE
        if not folder.is_dir():
            raise IndexNotFound(f"index folder {folder} does not exist; build one with build-index")
        if not database_path.is_file():
            raise IndexNotFound(f"{folder} is not a senseindex index (no {DATABASE_FILE})")
        status = _read_status(database_path)
        if status != _STATUS_COMPLETE:
            raise IndexNotFound(
                f"{folder} holds an unfinished index (its build did not complete); "
                "rebuild it with build-index --overwrite"
            )
        database = sqlite_utils.Database(database_path)
        store = cls(folder, database)
        version = store.settings.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise SchemaMismatch(
                f"{folder} was written with index format version {version}; this senseindex reads "
                f"up to version {SCHEMA_VERSION} — upgrade senseindex"
            )
        if version < SCHEMA_VERSION:
            raise SchemaMismatch(
                f"{folder} was written with the older index format version {version}; this senseindex "
                f"reads version {SCHEMA_VERSION} — rebuild it with build-index --overwrite"
            )
        return store

    def finish(self) -> None:
        """Write the vector files, mark the index complete and move it into its folder.

        Raises:
            SenseIndexError: the finished index cannot be moved into place.
        """
        with self.db.conn:
            for table, writer in self._writers.items():
                self._record_shards(writer.finish())
                self._upsert_setting(f"{table}_index_type", writer.resolved_type or "flat")
            self._upsert_setting("status", _STATUS_COMPLETE)
        self._writers = {}
        if self._target is None:
            return
        # A finished index is read far more than written: rollback-journal mode lets it be read from
        # a read-only folder, which WAL mode does not.
        self.db.execute("pragma wal_checkpoint(truncate)")
        self.db.execute("pragma journal_mode=delete")
        self.db.close()
        target, staging = self._target, self.folder
        retired = target.with_name(f".{target.name}.replaced")
        try:
            if retired.exists():
                shutil.rmtree(retired)
            if target.exists():
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
        self.folder = target
        self._target = None
        self.db = sqlite_utils.Database(target / DATABASE_FILE)

    def abort(self) -> None:
        """Give up a build: close and delete the unfinished index (the target folder is untouched)."""
        self.db.close()
        if self._target is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def close(self) -> None:
        """Close the database connection."""
        self.db.close()

    def _upsert_setting(self, key: str, value: Any) -> None:
        self.db.execute(
            "insert or replace into settings (key, value) values (?, ?)", [key, json.dumps(value)]
        )
        self.settings[key] = value

    # ----------------------------------------------------------------------------------- writing

    def dimension(self, table: str) -> int:
        """Vector dimension of ``sentences``, ``words`` or ``passages``."""
        return int(self.settings["word_dimension" if table == "words" else "sentence_dimension"])

    def next_ids(self) -> tuple[int, int, int, int]:
        """The next free rowids of documents, sentences, words and passages."""
        return tuple(  # type: ignore[return-value]
            (self.db.execute(f"select max(id) from {table}").fetchone()[0] or 0) + 1
            for table in ("documents", "sentences", "words", "passages")
        )

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
        """
        with self.db.conn:
            for table, rows in (
                ("documents", documents),
                ("sentences", sentences),
                ("words", words),
                ("passages", passages),
            ):
                self._insert(table, rows)
            for table, rows, vectors in (
                ("sentences", sentences, sentence_vectors),
                ("words", words, word_vectors),
                ("passages", passages, passage_vectors),
            ):
                if not rows:
                    continue
                if vectors is None or len(vectors) != len(rows):
                    # a vector's position in its shard is its rowid: a missing one shifts all after it
                    raise ValueError(f"{len(rows)} {table} rows need as many vectors")
                writer = self._writers[table]
                first, last = _row_id(rows[0]), _row_id(rows[-1])
                if first != writer.next_id or last != writer.next_id + len(rows) - 1:
                    raise ValueError(f"{table} ids must continue from {writer.next_id} without gaps")
                self._record_shards(writer.add(vectors))

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
            self._shard_sets[table] = ShardSet(self.folder, shards, self.dimension(table))
        return self._shard_sets[table]

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
    def search(self, table: str, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k sentences, words or passages whose vectors best match a query vector.

        Args:
            table: ``sentences``, ``words`` or ``passages``.
            vector: ``(dimension(table),)`` float32, L2-normalised.
            k: number of hits.

        Returns:
            ``(ids, scores)``: int64 and float32 arrays of up to ``k`` hits, best first.
        """
        return self._vectors(table).search(vector, k)

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

    def _select_in(self, sql: str, values: Iterable[int], as_dicts: bool = False) -> list[Any]:
        """Run ``sql`` (with ``{}`` where the ``in (...)`` placeholders go) over many integer values,
        in chunks that stay under SQLite's bound-parameter limit; rows as tuples or dicts."""
        value_list = [int(v) for v in values]
        rows: list[Any] = []
        for start in range(0, len(value_list), 900):
            chunk = value_list[start : start + 900]
            cursor = self.db.execute(sql.format(",".join("?" * len(chunk))), chunk)
            if as_dicts:
                names = [d[0] for d in cursor.description]
                rows += [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            else:
                rows += cursor.fetchall()
        return rows


def _row_id(row: dict[str, Any] | tuple[Any, ...]) -> int:
    return int(row[0] if isinstance(row, tuple) else row["id"])


def _staging_folder(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.building")


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
