"""The read side of an index: settings, snapshots, rows and vectors (`IndexReader`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import sqlite_utils

from senseindex.errors import IndexCorrupted, QueryError, SchemaMismatch, SenseIndexError, SourceError
from senseindex.indexer.storage import folder as folder_files
from senseindex.indexer.storage.filters import decoded_metadata, filter_documents, select_in
from senseindex.indexer.storage.function_words import FunctionWords
from senseindex.indexer.storage.guards import check_bindable, reading, stored_json
from senseindex.indexer.storage.schema import (
    OLDEST_READABLE_VERSION,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    STATUS_COMPLETE,
    STATUS_KEY,
    VECTOR_TABLES,
)
from senseindex.indexer.storage.shards import Shard, ShardSet
from senseindex.indexer.storage.vectors import FLAT_INDEX_TYPE

# Fresh snapshots `IndexReader.open_vectors` takes while writers keep retiring the files it was told
# about (each one needs another commit to have landed in between).
_MOVED_ON_RETRIES = 1000


class IndexReader:
    """An index folder opened for reading: the SQLite database and the FAISS shards of each table.

    `open` opens an index at the state of its last commit; `refresh` moves it on.
    """

    def __init__(self, folder: Path, connection: sqlite3.Connection) -> None:
        self.folder = folder
        self.db = sqlite_utils.Database(connection)
        self.settings: dict[str, Any] = {}
        self._shard_sets: dict[str, ShardSet] = {}
        self._writing = False  # set by a writer: its snapshot is the one it writes
        self._opened: dict[str, Any] = {}  # shard indexes an older snapshot opened, by file name
        self._database_identity: tuple[int, int] | None = None
        self._refreshed_state: tuple[folder_files.FileState | None, ...] = ()
        self._function_words = FunctionWords()  # kept across snapshots: word ids are never reused
        self._load_settings()

    @reading
    def _load_settings(self) -> None:
        self.settings = {
            key: stored_json(value, f"the {key!r} setting", self.folder)
            for key, value in self.db.execute("select key, value from settings")
        }

    def setting(self, key: str) -> Any:
        """One stored setting.

        Raises:
            IndexCorrupted: the setting is missing.
        """
        if key not in self.settings:
            raise IndexCorrupted(f"the index in {self.folder} has no {key!r} setting; rebuild it")
        return self.settings[key]

    def int_setting(self, key: str, default: int | None = None) -> int:
        """A stored whole-number setting (``default`` when missing, if given).

        Raises:
            IndexCorrupted: the setting is missing (and has no default) or not a whole number.
        """
        value = self.settings.get(key, default) if default is not None else self.setting(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise IndexCorrupted(f"the index in {self.folder} has a damaged {key!r} setting; rebuild it")
        return value

    @property
    def complete(self) -> bool:
        """False while a build-index run has not finished.

        The documents committed so far are searchable.
        """
        return self.settings.get(STATUS_KEY) == STATUS_COMPLETE

    def dimension(self, table: str) -> int:
        """Vector dimension of ``sentences``, ``words`` or ``passages``.

        Raises:
            IndexCorrupted: the dimension setting is missing or damaged.
        """
        return self.int_setting("word_dimension" if table == "words" else "sentence_dimension")

    # ----------------------------------------------------------------------------------- lifecycle

    @classmethod
    def open(cls, folder: Path) -> Self:
        """Open an index for reading, at the state of its last commit.

        Args:
            folder: the index folder.

        Returns:
            The store (of the class it is called on); its snapshot stays fixed until
            `refresh`. Vector files are opened on first use (or all at once with
            `open_vectors`).

        Raises:
            IndexNotFound: no index in the folder.
            SchemaMismatch: the index was written by another format version.
            IndexCorrupted: the database cannot be read.
        """
        folder = Path(folder)
        store = cls(folder, folder_files.open_database(folder, writable=False))
        try:
            store._check_version()
            store.refresh()
        except BaseException:
            store.db.conn.close()
            raise
        return store

    def _check_version(self) -> None:
        version = self.settings.get(SCHEMA_VERSION_KEY)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise SchemaMismatch(
                f"{self.folder} was written with index format version {version}; this senseindex reads "
                f"up to version {SCHEMA_VERSION} — upgrade senseindex"
            )
        if version < OLDEST_READABLE_VERSION:
            raise SchemaMismatch(
                f"{self.folder} was written with the older index format version {version}; this "
                f"senseindex reads version {SCHEMA_VERSION} — rebuild it with build-index --overwrite"
            )

    def refresh(self) -> None:
        """Move a reader to the index's latest committed state.

        A reader otherwise keeps the state it opened, whatever writers do meanwhile. An index replaced by
        ``--overwrite`` is reopened.
        """
        if self._writing:
            return
        connection = self.db.conn
        if connection.in_transaction:
            connection.execute("commit")
        if self._database_identity is not None and self._database_identity != folder_files.identity(
            self.folder
        ):
            connection.close()
            connection = folder_files.open_database(self.folder, writable=False)
            self.db = sqlite_utils.Database(connection)
            self._shard_sets, self._opened = {}, {}
            self._function_words = FunctionWords()
        self._database_identity = folder_files.identity(self.folder)
        # taken before the snapshot, so a commit landing in between shows as a change next time
        self._refreshed_state = folder_files.database_state(self.folder)
        connection.execute("begin")
        self._load_settings()  # the first read fixes the snapshot
        opened: dict[str, Any] = {}
        for shard_set in self._shard_sets.values():
            opened.update(shard_set.opened)
        self._shard_sets = {}
        self._opened = opened

    def changed_on_disk(self) -> bool:
        """Whether a commit may have happened since the last `refresh`.

        Judged by the database files' sizes and times: cheap; a checkpoint may give a false alarm.
        """
        return folder_files.database_state(self.folder) != self._refreshed_state

    def open_vectors(self) -> None:
        """Open every vector file of the snapshot now.

        Then a writer retiring one later cannot take it away from this reader.

        Raises:
            IndexCorrupted: a vector file is missing or unreadable.
        """
        for _ in range(_MOVED_ON_RETRIES):
            try:
                for table in VECTOR_TABLES:
                    self.shard_set(table).open_all()
                return
            except IndexCorrupted:
                # A writer may have retired a file between this snapshot and opening it: a newer
                # snapshot no longer names it. Only a file the latest state still names, missing or
                # unreadable, is a damaged index.
                if self._writing:
                    raise
                named = self._named_files()
                self.refresh()
                if self._named_files() == named:
                    raise
        raise IndexCorrupted(
            f"the vector files of the index in {self.folder} kept changing while it was being opened; "
            "try again when the writer has finished"
        )

    def _named_files(self) -> set[str]:
        """The vector files this snapshot names (cheap: one query)."""
        try:
            return self.referenced_files()
        except sqlite3.Error:
            return set()

    def close(self) -> None:
        """Close the database connection (rolling back anything not committed)."""
        self._roll_back()
        self.db.conn.close()

    def _roll_back(self) -> None:
        try:
            if self.db.conn.in_transaction:
                self.db.execute("rollback")
        except sqlite3.Error:
            pass  # a closed or damaged database has nothing to roll back

    # ----------------------------------------------------------------------------------- vectors

    @reading
    def shard_set(self, table: str) -> ShardSet:
        """The shards of ``sentences``, ``words`` or ``passages`` in this snapshot.

        Raises:
            ValueError: an unknown table (a bug).
            IndexCorrupted: the shard records are damaged.
        """
        if table not in VECTOR_TABLES:
            raise ValueError(f"no vector table {table!r}")
        if table not in self._shard_sets:
            rows = self.db.execute(
                "select file, first_id, count, index_type from shards where table_name = ? order by first_id",
                [table],
            ).fetchall()
            deleted = self.db.execute(
                "select first_id, last_id from deleted where table_name = ?", [table]
            ).fetchall()
            dimension = self.dimension(table)
            try:
                shards = [Shard(table, file, first, count, kind) for file, first, count, kind in rows]
                self._shard_sets[table] = ShardSet(self.folder, shards, dimension, deleted, self._opened)
            except (TypeError, ValueError) as error:  # only stored records go in here
                raise IndexCorrupted(
                    f"the index in {self.folder} has damaged {table} shard records ({error}); rebuild it"
                ) from error
        return self._shard_sets[table]

    def table_index_type(self, table: str) -> str:
        """The index type of a table's vectors (``flat`` when it has none).

        One type, or the types of its shards joined with ``+``, most vectors first.
        """
        rows = self.db.execute(
            "select index_type, sum(count) as n from shards where table_name = ? "
            "group by index_type order by n desc",
            [table],
        ).fetchall()
        return "+".join(row[0] for row in rows) or FLAT_INDEX_TYPE

    def referenced_files(self) -> set[str]:
        """The vector files the committed state names."""
        return {row[0] for row in self.db.execute("select file from shards")}

    @reading
    def search(
        self,
        table: str,
        vector: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
        function_words: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k sentences, words or passages whose vectors best match a query vector.

        Args:
            table: ``sentences``, ``words`` or ``passages``.
            vector: ``(dimension(table),)`` float32, L2-normalised.
            k: number of hits.
            allowed: only these rowids (int64), when given.
            excluded: never these rowids (int64), when given: the ``k`` hits are ``k`` others.
            function_words: False leaves out the occurrences of function words (``words`` only; their
                rowids are read once per reader and kept up to date with the rows added since).

        Returns:
            ``(ids, scores)``: int64 and float32 arrays of up to ``k`` hits, best first.
        """
        excluded_rows = None
        if not function_words and table == "words":
            excluded_rows = self._function_words.rows(self.db.conn)
        return self.shard_set(table).search(vector, k, allowed, excluded, excluded_rows)

    @reading
    def live_vectors(self, table: str) -> int:
        """Vectors of ``sentences``, ``words`` or ``passages`` that searches can return (not deleted)."""
        shard_set = self.shard_set(table)
        return sum(shard_set.live_count(shard) for shard in shard_set.shards)

    @reading
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
        return self.shard_set("words").reconstruct(ids)

    @reading
    def sentence_vectors_of_words(self, ids: np.ndarray) -> np.ndarray:
        """``(n, sentence_dimension)`` float32: the stored vector of each word occurrence's sentence."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        sentence_of = dict(self._select_in("select id, sentence from words where id in ({})", ids.tolist()))
        # a sentence holding the word twice is read once
        unique, inverse = np.unique([sentence_of[i] for i in ids.tolist()], return_inverse=True)
        if not len(unique):
            return np.zeros((0, self.dimension("sentences")), dtype=np.float32)
        return self.shard_set("sentences").reconstruct(unique.astype(np.int64))[inverse]

    @reading
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
        return ids, owners, self.shard_set(table).reconstruct(ids)

    # ----------------------------------------------------------------------------------- rows

    @reading
    def counts(self) -> dict[str, int]:
        """Row counts: documents, sentences, words, passages."""
        return {
            table: self.db.execute(f"select count(*) from {table}").fetchone()[0]
            for table in ("documents", "sentences", "words", "passages")
        }

    @reading
    def deleted_count(self) -> dict[str, int]:
        """Vectors of deleted rows still on disk, per table (skipped by searches)."""
        return {
            table: self.db.execute(
                "select coalesce(sum(last_id - first_id + 1), 0) from deleted where table_name = ?", [table]
            ).fetchone()[0]
            for table in VECTOR_TABLES
        }

    @reading
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
                    "bytes": folder_files.file_size(path),
                }
            )
        return result

    @reading
    def document(self, doc_id: str) -> dict[str, Any] | None:
        """A stored document: ``{"id", "source", "text", "metadata"}``; None when the id is not stored.

        Raises:
            SourceError: a document id SQLite cannot look up (a lone surrogate in it).
        """
        rows = self._select_in(
            "select id, doc_id, source, text, metadata from documents where doc_id in ({})",
            self._document_ids([doc_id]),
            as_dicts=True,
            kind=str,
        )
        for row in rows:
            return {
                "id": row["doc_id"],
                "source": row["source"],
                "text": row["text"],
                "metadata": self._metadata(row["metadata"], row["id"]),
            }
        return None

    @reading
    def document_hashes(self, doc_ids: Iterable[str]) -> dict[str, str]:
        """Content hash of each stored document among ``doc_ids`` (absent ids are left out).

        Raises:
            SourceError: a document id SQLite cannot look up (a lone surrogate in it).
        """
        return dict(
            self._select_in(
                "select doc_id, content_hash from documents where doc_id in ({})",
                self._document_ids(doc_ids),
                kind=str,
            )
        )

    def _document_ids(self, doc_ids: Iterable[str], error: type[SenseIndexError] | None = None) -> list[str]:
        listed = list(doc_ids)
        check_bindable(listed, "document id", error or SourceError)
        return listed

    @reading
    def documents_of(self, table: str, ids: Iterable[int]) -> dict[int, int]:
        """Document rowid of each sentence, word or passage id."""
        if table not in ("sentences", "words", "passages"):
            raise ValueError(table)
        return dict(self._select_in(f"select id, document from {table} where id in ({{}})", ids))

    @reading
    def filter_documents(
        self, doc_ids: Sequence[str] | None, metadata: dict[str, list[Any]] | None
    ) -> list[dict[str, Any]]:
        """The documents that pass a filter, found in SQL (see `filters.filter_documents`).

        Returns:
            ``{"id": rowid, "metadata": parsed metadata}`` per document.

        Raises:
            QueryError: a document id or value SQLite cannot look up.
        """
        if doc_ids is not None:
            doc_ids = self._document_ids(doc_ids, QueryError)
        return filter_documents(self.db.conn, self.folder, doc_ids, metadata)

    def _metadata(self, text: str | None, document: int) -> dict[str, Any]:
        return decoded_metadata(self.folder, text, document)

    @reading
    def rows_of_documents(self, table: str, documents: Sequence[int]) -> np.ndarray:
        """Rowids (int64, in order) of the sentences, words or passages of some documents."""
        if table not in VECTOR_TABLES:
            raise ValueError(table)
        pairs = self._select_in(f"select id from {table} where document in ({{}})", documents)
        return np.asarray(sorted(p[0] for p in pairs), dtype=np.int64)

    @reading
    def word_occurrences(self, lemma: str) -> list[tuple[int, str, str, int]]:
        """Every occurrence of a lemma: ``(id, form, doc_id, start)``, by document id, then position.

        The order depends only on the documents, not on when they were stored, so an index split into
        shards lists a lemma's occurrences in the same order (sense induction samples from it).

        Raises:
            QueryError: a lemma SQLite cannot look up (a lone surrogate in it).
        """
        check_bindable([lemma], "word")
        rows = self.db.execute(
            "select w.id, w.form, d.doc_id, w.start from words w join documents d on d.id = w.document "
            "where w.lemma = ? order by d.doc_id, w.start",
            [lemma],
        ).fetchall()
        return [(int(r[0]), r[1], r[2], int(r[3])) for r in rows]

    def word_ids_for_lemma(self, lemma: str) -> tuple[np.ndarray, list[str]]:
        """Ids and surface forms of every occurrence of a lemma.

        Args:
            lemma: lower-case lemma.

        Returns:
            ``(ids, forms)``: int64 ids and their surface forms, by document id, then position.

        Raises:
            QueryError: a lemma SQLite cannot look up (a lone surrogate in it).
        """
        rows = self.word_occurrences(lemma)
        return np.asarray([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

    def word_ids_of_lemmas(self, lemmas: Sequence[str]) -> np.ndarray:
        """Ids of every occurrence of some lemmas, in no set order (an index-only read, cheap for many).

        Args:
            lemmas: the lemmas (one query for all of them).

        Returns:
            ``(n,)`` int64.

        Raises:
            QueryError: a lemma SQLite cannot look up (a lone surrogate in it).
        """
        check_bindable(lemmas, "word")
        # One comma-joined string per chunk of lemmas, parsed in C: a frequent lemma's thousands of
        # rows cost a fifth of what fetching them as Python tuples does.
        rows = self._select_in("select group_concat(id) from words where lemma in ({})", lemmas, kind=str)
        parts = [np.fromstring(row[0], dtype=np.int64, sep=",") for row in rows if row[0]]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def lemma_ids_of_documents(self, documents: Sequence[int]) -> dict[str, np.ndarray]:
        """Ids of some documents' word occurrences by lemma, ``{lemma: (n,) int64}``; cheap for millions."""
        sql = "select lemma, group_concat(id) from words where document in ({}) group by lemma"
        parts: dict[str, list[np.ndarray]] = {}
        for lemma, ids in self._select_in(sql, documents):
            parts.setdefault(lemma, []).append(np.fromstring(ids, dtype=np.int64, sep=","))
        return {lemma: np.concatenate(found) for lemma, found in parts.items()}

    def document_rows(self, rowids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Document rows (without their text), keyed by document rowid."""
        return self._rows("select id, doc_id, source, metadata from documents where id in ({})", rowids)

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

    def word_lemmas(self, ids: Iterable[int]) -> dict[int, tuple[str, str]]:
        """The lemma and form of word occurrences (no sentence or document: cheap for many ids).

        Args:
            ids: word rowids.

        Returns:
            ``{word id: (lemma, form)}``.
        """
        rows = self._select_in("select id, lemma, form from words where id in ({})", ids)
        return {row[0]: (row[1], row[2]) for row in rows}

    @reading
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

    @reading
    def _rows(self, sql: str, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        result: dict[int, dict[str, Any]] = {}
        for record in self._select_in(sql, ids, as_dicts=True):
            if "metadata" in record:
                record["metadata"] = self._metadata(record["metadata"], record["id"])
            result[record["id"]] = record
        return result

    def _select_in(
        self,
        sql: str,
        values: Iterable[Any],
        as_dicts: bool = False,
        kind: Callable[[Any], Any] = int,
        after: Sequence[Any] = (),
        before: Sequence[Any] = (),
    ) -> list[Any]:
        """`select_in` on this reader's snapshot."""
        return select_in(self.db.conn, sql, values, as_dicts, kind, after, before)
