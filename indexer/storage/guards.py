"""Telling a damaged index from a caller's mistake.

A failure while reading becomes `IndexCorrupted` ("rebuild it") only when
the stored data is at fault: SQLite reports a damaged database, stored JSON does not parse, a setting
is missing, a vector file cannot be read. Values SQLite cannot bind are refused before the query with
the caller's error (`check_bindable`), and programming errors keep their own type.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from senseindex.errors import IndexBusy, IndexCorrupted, QueryError, SenseIndexError

_Method = TypeVar("_Method", bound=Callable[..., Any])
_SQLITE_INTEGERS = range(-(2**63), 2**63)


class _HasFolder(Protocol):
    folder: Path


def reading(method: _Method) -> _Method:
    """Report a database SQLite finds damaged (a missing table, a malformed file) as IndexCorrupted.

    Only `sqlite3.DatabaseError` is translated, and not its ProgrammingError (misuse of the
    API: a bug). Malformed stored JSON, a missing setting and an unreadable vector file raise
    IndexCorrupted where they are read; a caller's bad argument keeps its own error.
    """

    @functools.wraps(method)
    def wrapper(self: _HasFolder, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.ProgrammingError:
            raise
        except sqlite3.DatabaseError as error:
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            if isinstance(error, sqlite3.OperationalError) and ("locked" in detail or "busy" in detail):
                raise IndexBusy(
                    f"the index in {self.folder} stayed locked by a writer ({detail}); try again"
                ) from error
            raise IndexCorrupted(
                f"the index in {self.folder} is damaged ({detail[:200]}); rebuild it"
            ) from error

    return wrapper  # type: ignore[return-value]  # functools.wraps loses the wrapped signature


def check_bindable(values: Iterable[Any], what: str, error: type[SenseIndexError] = QueryError) -> None:
    """Refuse values SQLite cannot take as parameters, with the caller's error rather than a
    damaged-index one: text holding a lone surrogate (not UTF-8) and integers beyond 64 bits.

    Args:
        values: the values to look up.
        what: what they are, for the message (``document id``).
        error: the error to raise.

    Raises:
        SenseIndexError: ``error``, for the first value that cannot be bound.
    """
    for value in values:
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise error(f"the {what} {value!r} is not valid text (it holds a lone surrogate)") from None
        elif isinstance(value, int) and not isinstance(value, bool) and value not in _SQLITE_INTEGERS:
            raise error(f"the {what} {value} is out of range (64-bit integers only)")


def stored_json(text: Any, what: str, folder: Path) -> Any:
    """A JSON value read from the database.

    Args:
        text: the stored text.
        what: what it is, for the message (``the 'layers' setting``).
        folder: the index folder, for the message.

    Raises:
        IndexCorrupted: the text is not JSON.
    """
    try:
        return json.loads(text)
    except (TypeError, ValueError) as error:
        raise IndexCorrupted(
            f"the index in {folder} is damaged ({what} is not valid JSON); rebuild it"
        ) from error
