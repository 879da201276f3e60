"""On-disk index storage: SQLite for everything but vectors, FAISS for vectors.

This is the only module of senseindex that touches SQLite and FAISS. A FAISS id is always the rowid of
the SQLite row the vector belongs to (``sentences.id`` or ``words.id``).

Folder layout (see the README, "On-disk index format")::

    DIR/index.sqlite     settings, documents, sentences, words
    DIR/sentences.faiss  one vector per sentence, id = sentences.id
    DIR/words.faiss      one vector per word occurrence, id = words.id
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

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
_STATUS_BUILDING = "building"
_STATUS_COMPLETE = "complete"


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
        self.settings: dict[str, Any] = {
            row["key"]: json.loads(row["value"]) for row in database["settings"].rows
        }
        self._sentence_index: faiss.Index | None = None
        self._word_index: faiss.Index | None = None

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
            The new store, ready for :meth:`add_document`, :meth:`add_sentences`, :meth:`add_words`.

        Raises:
            IndexExists: the folder holds an index and ``overwrite`` is False.
            SenseIndexError: the folder cannot be created or written.
        """
        folder = Path(folder)
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
            for name in (DATABASE_FILE, SENTENCE_VECTORS_FILE, WORD_VECTORS_FILE):
                for suffix in ("", "-wal", "-shm", ".tmp"):
                    (folder / (name + suffix)).unlink(missing_ok=True)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            database = sqlite_utils.Database(database_path)
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
        all_settings = {**settings, "schema_version": SCHEMA_VERSION, "status": _STATUS_BUILDING}
        database["settings"].insert_all(
            [{"key": key, "value": json.dumps(value)} for key, value in all_settings.items()]
        )
        store = cls(folder, database)
        store._sentence_index = _new_vector_index(int(settings["sentence_dimension"]))
        store._word_index = _new_vector_index(int(settings["word_dimension"]))
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
        """Write the vector files atomically and mark the index complete."""
        _write_atomically(self._sentence_vectors(), self.folder / SENTENCE_VECTORS_FILE)
        _write_atomically(self._word_vectors(), self.folder / WORD_VECTORS_FILE)
        self.set_setting("status", _STATUS_COMPLETE)

    def close(self) -> None:
        """Close the database connection."""
        self.db.close()

    def set_setting(self, key: str, value: Any) -> None:
        """Store one index setting (a JSON-able value)."""
        with self.db.conn:
            self.db["settings"].upsert({"key": key, "value": json.dumps(value)}, pk="key")
        self.settings[key] = value

    # ----------------------------------------------------------------------------------- writing

    def next_ids(self) -> tuple[int, int, int]:
        """The next free rowids of documents, sentences and words."""
        return tuple(  # type: ignore[return-value]
            (self.db.execute(f"select max(id) from {table}").fetchone()[0] or 0) + 1
            for table in ("documents", "sentences", "words")
        )

    def has_document(self, doc_id: str) -> bool:
        """Whether a document id is already stored."""
        return self.db.execute("select 1 from documents where doc_id = ?", [doc_id]).fetchone() is not None

    def add_batch(
        self,
        documents: Sequence[dict[str, Any]],
        sentences: Sequence[dict[str, Any]],
        sentence_vectors: np.ndarray,
        words: Sequence[dict[str, Any]],
        word_vectors: np.ndarray,
    ) -> None:
        """Store rows and their vectors in one SQLite transaction.

        Args:
            documents: document rows (``id``, ``doc_id``, ``source``, ``text``, ``metadata``,
                ``content_hash``); may be empty when a batch continues earlier documents.
            sentences: sentence rows with their ``id`` already assigned.
            sentence_vectors: ``(len(sentences), sentence_dimension)`` float32.
            words: word rows with their ``id`` already assigned.
            word_vectors: ``(len(words), word_dimension)`` float32.
        """
        with self.db.conn:
            if documents:
                self.db["documents"].insert_all(documents, batch_size=500)
            if sentences:
                self.db["sentences"].insert_all(sentences, batch_size=2000)
            if words:
                self.db["words"].insert_all(words, batch_size=5000)
        if sentences:
            ids = np.fromiter((row["id"] for row in sentences), dtype=np.int64, count=len(sentences))
            self._sentence_vectors().add_with_ids(sentence_vectors, ids)
        if words:
            ids = np.fromiter((row["id"] for row in words), dtype=np.int64, count=len(words))
            self._word_vectors().add_with_ids(word_vectors, ids)

    # ----------------------------------------------------------------------------------- reading

    def _load(self, name: str) -> faiss.Index:
        path = self.folder / name
        if not path.is_file():
            raise IndexCorrupted(f"{path} is missing; rebuild the index")
        try:
            return faiss.read_index(str(path))
        except RuntimeError as error:
            raise IndexCorrupted(f"{path} cannot be read ({error}); rebuild the index") from error

    def _sentence_vectors(self) -> faiss.Index:
        if self._sentence_index is None:
            self._sentence_index = self._load(SENTENCE_VECTORS_FILE)
        return self._sentence_index

    def _word_vectors(self) -> faiss.Index:
        if self._word_index is None:
            self._word_index = self._load(WORD_VECTORS_FILE)
        return self._word_index

    def counts(self) -> dict[str, int]:
        """Row counts: documents, sentences, words."""
        return {
            table: self.db.execute(f"select count(*) from {table}").fetchone()[0]
            for table in ("documents", "sentences", "words")
        }

    def search_sentences(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k sentences whose vectors have the highest inner product with a query vector.

        Args:
            vector: ``(sentence_dimension,)`` float32, L2-normalised.
            k: number of hits.

        Returns:
            ``(ids, scores)``: int64 and float32 arrays of up to ``k`` hits, best first.
        """
        return _search(self._sentence_vectors(), vector, k)

    def search_words(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k word occurrences whose vectors best match a query vector, over the whole index.

        Args:
            vector: ``(word_dimension,)`` float32, L2-normalised.
            k: number of hits.

        Returns:
            ``(ids, scores)``: int64 and float32 arrays, best first.
        """
        return _search(self._word_vectors(), vector, k)

    def word_vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of word occurrences, read by id (no scan of the whole index).

        Args:
            ids: ``(n,)`` int64 word ids.

        Returns:
            ``(n, word_dimension)`` float32.
        """
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(ids):
            return np.zeros((0, int(self.settings["word_dimension"])), dtype=np.float32)
        return self._word_vectors().reconstruct_batch(ids)

    def sentence_vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored sentence vectors read by id: ``(n,)`` int64 -> ``(n, sentence_dimension)`` float32."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(ids):
            return np.zeros((0, int(self.settings["sentence_dimension"])), dtype=np.float32)
        return self._sentence_vectors().reconstruct_batch(ids)

    def word_ids_for_lemma(self, lemma: str) -> tuple[np.ndarray, list[str]]:
        """Ids and surface forms of every occurrence of a lemma.

        Args:
            lemma: lower-case lemma.

        Returns:
            ``(ids, forms)``: int64 ids in storage order and their surface forms.
        """
        rows = self.db.execute("select id, form from words where lemma = ?", [lemma]).fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

    def all_ids(self, table: str) -> np.ndarray:
        """Every rowid of ``sentences`` or ``words``, ascending, as int64."""
        if table not in ("sentences", "words"):
            raise ValueError(table)
        rows = self.db.execute(f"select id from {table} order by id").fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def sentence_rows(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Sentence rows with their document id, keyed by sentence id."""
        return self._rows(
            "select s.id, s.start, s.end, s.text, s.position, d.doc_id, d.metadata "
            "from sentences s join documents d on d.id = s.document where s.id in ({})",
            ids,
        )

    def word_rows(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Word rows with their sentence and document, keyed by word id."""
        return self._rows(
            "select w.id, w.start, w.end, w.form, w.lemma, s.id as sentence_id, "
            "s.start as sentence_start, s.end as sentence_end, s.text as sentence_text, "
            "d.doc_id, d.metadata from words w join sentences s on s.id = w.sentence "
            "join documents d on d.id = w.document where w.id in ({})",
            ids,
        )

    def document_text(self, doc_id: str) -> str:
        """The full text of a stored document.

        Raises:
            SenseIndexError: no such document.
        """
        row = self.db.execute("select text from documents where doc_id = ?", [doc_id]).fetchone()
        if row is None:
            raise SenseIndexError(f"no document {doc_id!r} in the index")
        return row[0]

    def _rows(self, sql: str, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        id_list = [int(i) for i in ids]
        result: dict[int, dict[str, Any]] = {}
        for start in range(0, len(id_list), 900):  # stay under SQLite's bound-parameter limit
            chunk = id_list[start : start + 900]
            cursor = self.db.execute(sql.format(",".join("?" * len(chunk))), chunk)
            names = [d[0] for d in cursor.description]
            for row in cursor.fetchall():
                record = dict(zip(names, row, strict=True))
                if "metadata" in record:
                    record["metadata"] = json.loads(record["metadata"] or "{}")
                result[record["id"]] = record
        return result


def _search(index: faiss.Index, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, index.ntotal)
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
    scores, ids = index.search(query, k)
    keep = ids[0] >= 0
    return ids[0][keep], scores[0][keep]


def _read_status(database_path: Path) -> str | None:
    try:
        connection = sqlite3.connect(f"file:{database_path}?mode=ro", uri=True)
        try:
            row = connection.execute("select value from settings where key = 'status'").fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise IndexCorrupted(f"{database_path} is not a readable index database: {error}") from error
    return json.loads(row[0]) if row else None
