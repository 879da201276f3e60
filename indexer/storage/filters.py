"""Metadata filters in SQL, and the chunked ``in (...)`` reads every lookup of many rows goes through."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from senseindex.errors import IndexCorrupted
from senseindex.indexer.storage.guards import check_bindable
from senseindex.indexer.validation import decode_stored_metadata

# SQLite binds at most 999 parameters per statement in older builds: lists are sent in chunks.
_CHUNK_PARAMETERS = 900


def _as_is(value: Any) -> Any:
    """Bind a value as given (metadata filter values: text, numbers, booleans)."""
    return value


def _same(stored: Any, wanted: Any) -> bool:
    """SQL equality of a stored metadata value and a filter value (None: a missing or null field)."""
    if wanted is None:
        return stored is None
    return not isinstance(stored, (dict, list)) and stored == wanted


def filter_documents(
    connection: sqlite3.Connection,
    folder: Path,
    doc_ids: Sequence[str] | None,
    metadata: dict[str, list[Any]] | None,
) -> list[dict[str, Any]]:
    """The documents that pass a filter, found in SQL.

    Args:
        connection: a reader's connection (its snapshot).
        folder: the index folder, for messages.
        doc_ids: only these documents, when given (checked for SQLite by the caller).
        metadata: per metadata field, the values accepted: strings, numbers, booleans or None
            (SQL equality, so ``true`` also matches ``1``: the caller checks types).

    Returns:
        ``{"id": rowid, "metadata": parsed metadata}`` per document.

    Raises:
        QueryError: a document id or value SQLite cannot look up (a lone surrogate in the text,
            an integer beyond 64 bits).
    """
    # Each field's accepted documents are found by chunked queries, so a filter may list any
    # number of values (one statement binds at most a few thousand).
    allowed: set[int] | None = None
    # metadata SQLite's JSON functions cannot read (NaN, or deeper than they go, stored by earlier
    # versions) is left out of the SQL and tested here on its defensive reading
    unreadable = (
        connection.execute("select id, metadata from documents where not json_valid(metadata)").fetchall()
        if metadata
        else []
    )
    for key, values in (metadata or {}).items():
        check_bindable(values, f"metadata filter value of {key!r}")
        # a quoted label, as is: json.dumps would escape non-ASCII names, which SQLite reads literally
        path = f'$."{key}"'
        present = [v for v in values if v is not None]
        passing = {
            row[0]
            for row in select_in(
                connection,
                "select id from documents where "
                "(case when json_valid(metadata) then json_extract(metadata, ?) end) in ({})",
                present,
                kind=_as_is,
                before=[path],
            )
        }
        if len(present) < len(values):
            passing.update(
                row[0]
                for row in connection.execute(
                    "select id from documents where "
                    "(case when json_valid(metadata) then json_extract(metadata, ?) else 0 end) is null",
                    [path],
                )
            )
        passing.update(
            row[0]
            for row in unreadable
            if any(_same(decoded_metadata(folder, row[1], row[0]).get(key), value) for value in values)
        )
        allowed = passing if allowed is None else allowed & passing
    if doc_ids is not None:
        found = select_in(
            connection,
            "select id, metadata from documents where doc_id in ({})",
            dict.fromkeys(doc_ids),
            kind=str,
        )
        if allowed is not None:
            found = [row for row in found if row[0] in allowed]
    elif allowed is None:
        found = connection.execute("select id, metadata from documents order by id").fetchall()
    else:
        found = select_in(connection, "select id, metadata from documents where id in ({})", sorted(allowed))
    return [{"id": row[0], "metadata": decoded_metadata(folder, row[1], row[0])} for row in found]


def decoded_metadata(folder: Path, text: str | None, document: int) -> dict[str, Any]:
    """A document's stored metadata, read defensively (see `validation.decode_stored_metadata`).

    Raises:
        IndexCorrupted: the stored text is not JSON at all.
    """
    try:
        return decode_stored_metadata(text)
    except ValueError as error:
        raise IndexCorrupted(
            f"the index in {folder} is damaged (the metadata of document {document} is not "
            "valid JSON); rebuild it"
        ) from error


def select_in(
    connection: sqlite3.Connection,
    sql: str,
    values: Iterable[Any],
    as_dicts: bool = False,
    kind: Callable[[Any], Any] = int,
    after: Sequence[Any] = (),
    before: Sequence[Any] = (),
) -> list[Any]:
    """Run ``sql`` over many values, in chunks that stay under SQLite's bound-parameter limit.

    ``sql`` has ``{}`` where the ``in (...)`` placeholders go; the values are rowids, or document ids with
    ``kind=str``. ``before`` and ``after`` bind the placeholders that come before and after the list. Rows
    as tuples or dicts, in the order of the chunks.
    """
    value_list = [kind(v) for v in values]
    size = max(1, _CHUNK_PARAMETERS - len(before) - len(after))
    rows: list[Any] = []
    for start in range(0, len(value_list), size):
        chunk = value_list[start : start + size]
        cursor = connection.execute(sql.format(",".join("?" * len(chunk))), [*before, *chunk, *after])
        if as_dicts:
            names = [d[0] for d in cursor.description]
            rows += [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        else:
            rows += cursor.fetchall()
    return rows
