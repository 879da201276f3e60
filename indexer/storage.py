"""On-disk index storage: SQLite for everything but vectors, FAISS for vectors.

This is the only module of senseindex that touches SQLite and FAISS. A FAISS id is always the rowid of
the SQLite row the vector belongs to (``sentences.id`` or ``words.id``).

Folder layout (see the README, "On-disk index format")::

    DIR/index.sqlite     settings, documents, sentences, words
    DIR/sentences.faiss  one vector per sentence, id = sentences.id
    DIR/words.faiss      one vector per word occurrence, id = words.id
    DIR/passages.faiss   one vector per passage (consecutive sentences), id = passages.id
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import faiss
import numpy as np
import sqlite_utils

from indexer.errors import (
    IndexCorrupted,
    IndexExists,
    IndexNotFound,
    SchemaMismatch,
    SenseIndexError,
)

SCHEMA_VERSION = 1
DATABASE_FILE = "index.sqlite"
SENTENCE_VECTORS_FILE = "sentences.faiss"
WORD_VECTORS_FILE = "words.faiss"
PASSAGE_VECTORS_FILE = "passages.faiss"
VECTOR_TABLES = ("sentences", "words", "passages")
_STATUS_BUILDING = "building"
_STATUS_COMPLETE = "complete"


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


def _new_vector_index(dimension: int) -> faiss.Index:
    # Exact inner product over L2-normalised vectors = cosine similarity; the id map keeps FAISS ids
    # equal to SQLite rowids and (IDMap2) lets vectors be read back by id.
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))


def _write_atomically(index: faiss.Index, path: Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    faiss.write_index(index, str(temporary))
    os.replace(temporary, path)


class IndexStore:
    """An index folder: the SQLite database and the two FAISS vector files.

    Use :meth:`create` to start a new index and :meth:`open` to read an existing one.
    """

    def __init__(self, folder: Path, database: sqlite_utils.Database) -> None:
        self.folder = folder
        self.db = database
        self.settings: dict[str, Any] = {}
        self._vector_indexes: dict[str, faiss.Index] = {}
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
            settings: index settings to store (JSON-able values); must hold ``sentence_dimension`` and
                ``word_dimension``.
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
        database["documents"].create(
            {
                "id": int,
                "doc_id": str,
                "source": str,
                "text": str,
                "metadata": str,
                "content_hash": str,
            },
            pk="id",
        )
        database["documents"].create_index(["doc_id"], unique=True)
        database["sentences"].create(
            {"id": int, "document": int, "position": int, "start": int, "end": int, "text": str},
            pk="id",
            foreign_keys=[("document", "documents", "id")],
        )
        database["sentences"].create_index(["document"])
        database["words"].create(
            {
                "id": int,
                "sentence": int,
                "document": int,
                "start": int,
                "end": int,
                "form": str,
                "lemma": str,
            },
            pk="id",
            foreign_keys=[("sentence", "sentences", "id"), ("document", "documents", "id")],
        )
        database["words"].create_index(["lemma"])
        database["words"].create_index(["sentence"])
        database["passages"].create(
            {
                "id": int,
                "document": int,
                "start": int,
                "end": int,
                "first_sentence": int,
                "last_sentence": int,
            },
            pk="id",
            foreign_keys=[("document", "documents", "id")],
        )
        database["passages"].create_index(["document"])
        all_settings = {**settings, "schema_version": SCHEMA_VERSION, "status": _STATUS_BUILDING}
        database["settings"].insert_all(
            [{"key": key, "value": json.dumps(value)} for key, value in all_settings.items()]
        )
        store = cls(staging, database)
        store._target = folder
        for table in VECTOR_TABLES:
            store._vector_indexes[table] = _new_vector_index(store.dimension(table))
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
        return store

    def finish(self) -> None:
        """Write the vector files, mark the index complete and move it into its folder.

        Raises:
            SenseIndexError: the finished index cannot be moved into place.
        """
        for table in VECTOR_TABLES:
            _write_atomically(self._vectors(table), self.folder / _VECTOR_FILES[table])
        self.set_setting("status", _STATUS_COMPLETE)
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

    def set_setting(self, key: str, value: Any) -> None:
        """Store one index setting.

        Args:
            key: the setting's name.
            value: a JSON-able value.
        """
        with self.db.conn:
            self.db["settings"].upsert({"key": key, "value": json.dumps(value)}, pk="key")
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
        documents: Sequence[dict[str, Any]],
        sentences: Sequence[dict[str, Any]],
        sentence_vectors: np.ndarray,
        words: Sequence[dict[str, Any]],
        word_vectors: np.ndarray,
        passages: Sequence[dict[str, Any]] = (),
        passage_vectors: np.ndarray | None = None,
    ) -> None:
        """Store rows and their vectors in one SQLite transaction.

        Args:
            documents: document rows (``id``, ``doc_id``, ``source``, ``text``, ``metadata``,
                ``content_hash``); may be empty when a batch continues earlier documents.
            sentences: sentence rows with their ``id`` already assigned.
            sentence_vectors: ``(len(sentences), sentence_dimension)`` float32.
            words: word rows with their ``id`` already assigned.
            word_vectors: ``(len(words), word_dimension)`` float32.
            passages: passage rows (``id``, ``document``, ``start``, ``end``, ``first_sentence``,
                ``last_sentence``).
            passage_vectors: ``(len(passages), sentence_dimension)`` float32.
        """
        with self.db.conn:
            if documents:
                self.db["documents"].insert_all(documents, batch_size=500)
            if sentences:
                self.db["sentences"].insert_all(sentences, batch_size=2000)
            if words:
                self.db["words"].insert_all(words, batch_size=5000)
            if passages:
                self.db["passages"].insert_all(passages, batch_size=2000)
        for table, rows, vectors in (
            ("sentences", sentences, sentence_vectors),
            ("words", words, word_vectors),
            ("passages", passages, passage_vectors),
        ):
            if rows:
                ids = np.fromiter((row["id"] for row in rows), dtype=np.int64, count=len(rows))
                self._vectors(table).add_with_ids(vectors, ids)

    # ----------------------------------------------------------------------------------- reading

    @_reading
    def _load(self, name: str) -> faiss.Index:
        path = self.folder / name
        if not path.is_file():
            raise IndexCorrupted(f"{path} is missing; rebuild the index")
        try:
            return faiss.read_index(str(path))
        except RuntimeError as error:
            raise IndexCorrupted(f"{path} cannot be read ({error}); rebuild the index") from error

    def _vectors(self, table: str) -> faiss.Index:
        if table not in self._vector_indexes:
            self._vector_indexes[table] = self._load(_VECTOR_FILES[table])
        return self._vector_indexes[table]

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
        return _search(self._vectors(table), vector, k)

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
        return self._vectors("words").reconstruct_batch(ids)

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
        return ids, owners, self._vectors(table).reconstruct_batch(ids)

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


_VECTOR_FILES = {
    "sentences": SENTENCE_VECTORS_FILE,
    "words": WORD_VECTORS_FILE,
    "passages": PASSAGE_VECTORS_FILE,
}


def _search(index: faiss.Index, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, index.ntotal)
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
    scores, ids = index.search(query, k)
    keep = ids[0] >= 0
    return ids[0][keep], scores[0][keep]


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
