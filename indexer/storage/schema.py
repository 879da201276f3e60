"""The index database's layout.

Tables and their columns, the format version, the settings keys the store itself keeps, and the tables of a
new database (`initialise`).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import sqlite_utils
from sqlite_utils.db import Table

SCHEMA_VERSION = 4
OLDEST_READABLE_VERSION = 3
"""Format 3 lacks ``shards.checksum``: it is read as it is, and upgraded in place by its next writer."""
DATABASE_FILE = "index.sqlite"
LOCK_FILE = "write.lock"
VECTOR_TABLES = ("sentences", "words", "passages")
ROW_TABLES = ("documents", *VECTOR_TABLES)
STATUS_BUILDING = "building"
STATUS_COMPLETE = "complete"
# Settings the store keeps besides those the caller gives to create(): format version, build status,
# next free rowid per table and next shard file number (both only ever grow).
SCHEMA_VERSION_KEY = "schema_version"
STATUS_KEY = "status"
NEXT_IDS_KEY = "next_ids"
NEXT_SHARD_NUMBER_KEY = "next_shard_number"
# Every table's columns, in the order rows given as tuples use; `id` is the rowid.
SCHEMA: dict[str, dict[str, type]] = {
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
    "shards": {
        "id": int,
        "table_name": str,
        "file": str,
        "first_id": int,
        "count": int,
        "index_type": str,
        "checksum": str,
    },
    # rowids (inclusive ranges) of deleted rows whose vectors are still in a shard file
    "deleted": {"id": int, "table_name": str, "first_id": int, "last_id": int},
}
COLUMNS = {table: tuple(columns) for table, columns in SCHEMA.items()}

Row = dict[str, Any] | tuple[Any, ...]
"""A table row: a dict by column name, or a tuple in the table's column order."""


def row_id(row: Row) -> int:
    """The rowid of a row given as a dict or as a tuple (``id`` first)."""
    return int(row[0]) if isinstance(row, tuple) else int(row["id"])


def _table(database: sqlite_utils.Database, name: str) -> Table:
    # Database.table() is typed as a Table; database[name] may also be a view
    return database.table(name)


def initialise(connection: sqlite3.Connection, settings: dict[str, Any]) -> None:
    """Create every table of a new index in an empty database and store its settings (uncommitted).

    Args:
        connection: a writable connection to the empty database.
        settings: the caller's settings (JSON-able values), stored with the store's own.
    """
    database = sqlite_utils.Database(connection)
    _table(database, "settings").create({"key": str, "value": str}, pk="key")
    _create_tables(database)
    all_settings = {
        **settings,
        SCHEMA_VERSION_KEY: SCHEMA_VERSION,
        STATUS_KEY: STATUS_BUILDING,
        NEXT_IDS_KEY: dict.fromkeys(ROW_TABLES, 1),
        NEXT_SHARD_NUMBER_KEY: 0,
    }
    _table(database, "settings").insert_all(
        [{"key": key, "value": json.dumps(value)} for key, value in all_settings.items()]
    )


def upgrade(connection: sqlite3.Connection, version: int) -> bool:
    """Bring a database of an older readable format to `SCHEMA_VERSION` (inside the caller's transaction).

    Format 3 to 4: ``shards`` gains ``checksum`` (null for the shards already written).

    Returns:
        Whether anything changed.
    """
    if version >= SCHEMA_VERSION:
        return False
    columns = {row[1] for row in connection.execute("pragma table_info(shards)")}
    if "checksum" not in columns:
        connection.execute("alter table shards add column checksum text")
    connection.execute(
        "update settings set value = ? where key = ?", [json.dumps(SCHEMA_VERSION), SCHEMA_VERSION_KEY]
    )
    return True


def has_checksums(connection: sqlite3.Connection) -> bool:
    """Whether the ``shards`` table has its ``checksum`` column (format 4 on)."""
    return any(row[1] == "checksum" for row in connection.execute("pragma table_info(shards)"))


def _create_tables(database: sqlite_utils.Database) -> None:
    documents = _table(database, "documents")
    documents.create(SCHEMA["documents"], pk="id")
    documents.create_index(["doc_id"], unique=True)
    sentences = _table(database, "sentences")
    sentences.create(SCHEMA["sentences"], pk="id", foreign_keys=[("document", "documents", "id")])
    sentences.create_index(["document"])
    words = _table(database, "words")
    words.create(
        SCHEMA["words"],
        pk="id",
        foreign_keys=[("sentence", "sentences", "id"), ("document", "documents", "id")],
    )
    words.create_index(["lemma"])
    words.create_index(["sentence"])
    words.create_index(["document"])
    passages = _table(database, "passages")
    passages.create(SCHEMA["passages"], pk="id", foreign_keys=[("document", "documents", "id")])
    passages.create_index(["document"])
    _table(database, "shards").create(SCHEMA["shards"], pk="id")
    _table(database, "deleted").create(SCHEMA["deleted"], pk="id")
