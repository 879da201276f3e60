"""Telling a damaged index from a caller's mistake.

A failure while reading becomes `IndexCorrupted` ("rebuild it") only when
the stored data is at fault: SQLite reports a damaged database (or a table of ours is missing),
stored JSON does not parse, a setting is missing, a vector file cannot be read. A full disk or a file
the operating system refuses is said as such, without rebuild advice. Values SQLite cannot bind are
refused before the query with the caller's error (`check_bindable`), and programming errors keep
their own type.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from senseindex.errors import DiskFull, IndexBusy, IndexCorrupted, QueryError, SenseIndexError, StorageError

_Method = TypeVar("_Method", bound=Callable[..., Any])
_SQLITE_INTEGERS = range(-(2**63), 2**63)


class _HasFolder(Protocol):
    folder: Path


# SQLite's words for a file that is not a sound database of ours
_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")
# the operating system refused the file: nothing is wrong with the index itself
_OS_PROBLEMS = {
    "SQLITE_IOERR": ("an I/O error", "check the disk, then run the command again"),
    "SQLITE_CANTOPEN": (
        "the database file cannot be opened",
        "check that the folder and its files may be opened by this user",
    ),
    "SQLITE_READONLY": ("the database is read-only", "give this user write access to the index folder"),
    "SQLITE_PERM": ("permission denied", "give this user access to the index folder"),
}


def _error_code_name(error: sqlite3.DatabaseError) -> str:
    """SQLite's primary result code name (``SQLITE_IOERR`` for ``SQLITE_IOERR_READ``), or ``""``."""
    name = getattr(error, "sqlite_errorname", None) or ""
    for primary in (*_DAMAGED, *_BUSY, *_OS_PROBLEMS, "SQLITE_FULL"):
        if name == primary or name.startswith(primary + "_"):
            return primary
    return name


def reading(method: _Method) -> _Method:
    """Translate what SQLite reports while reading by its cause.

    A damaged database (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``, or a table or column of ours
    missing) becomes IndexCorrupted ("rebuild it"); a database held by a writer IndexBusy; a full
    disk or a file the operating system refuses a StorageError that says so, with no rebuild
    advice. Anything else (a bug, such as too many SQL variables) is re-raised as it is. Malformed
    stored JSON, a missing setting and an unreadable vector file raise IndexCorrupted where they are
    read; a caller's bad argument keeps its own error.
    """

    @functools.wraps(method)
    def wrapper(self: _HasFolder, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.ProgrammingError:
            raise
        except sqlite3.DatabaseError as error:
            raise sqlite_failure(error, self.folder) from error

    return wrapper  # type: ignore[return-value]  # functools.wraps loses the wrapped signature


def sqlite_failure(error: sqlite3.DatabaseError, folder: Path) -> Exception:
    """The error to raise for what SQLite reported about an index's database.

    Args:
        error: what SQLite raised.
        folder: the index folder, for the message.

    Returns:
        IndexBusy, IndexCorrupted or StorageError by the error's cause (see `reading`), or
        ``error`` itself when it is not about the index (a bug).
    """
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    code = _error_code_name(error)
    if code in _BUSY:
        return IndexBusy(f"the index in {folder} stayed locked by a writer ({detail}); try again")
    if code in _DAMAGED or detail.startswith(("no such table", "no such column")):
        return IndexCorrupted(f"the index in {folder} is damaged ({detail[:200]}); rebuild it")
    if code == "SQLITE_FULL" or (code == "SQLITE_IOERR" and out_of_space(folder)):
        return DiskFull(
            f"no space left on device writing the index in {folder} ({detail[:200]}): free space and "
            "run the command again; the index keeps every committed document"
        )
    if code in _OS_PROBLEMS:
        problem, advice = _OS_PROBLEMS[code]
        if code != "SQLITE_IOERR" and read_only_file_system(folder):
            advice = READ_ONLY_ADVICE
        return StorageError(f"cannot use the index in {folder}: {problem} ({detail[:200]}); {advice}")
    return error


READ_ONLY_ADVICE = (
    "its file system is read-only: remount it read-write, or copy the index to a writable folder"
)


def out_of_space(path: Path) -> bool:
    """Whether the file system of ``path`` (or of the nearest folder above it) has less than 1 MiB free.

    SQLite reports a disk that filled up while it grew its shared-memory file as an I/O error.
    """
    for place in (path, *path.parents):
        try:
            usage = os.statvfs(place)
        except OSError:
            continue
        return usage.f_bavail * usage.f_frsize < 2**20
    return False


def read_only_file_system(path: Path) -> bool:
    """Whether ``path`` (or the nearest folder above it that exists) is on a read-only file system."""
    for place in (path, *path.parents):
        try:
            return bool(os.statvfs(place).f_flag & os.ST_RDONLY)
        except OSError:
            continue
    return False


def check_bindable(values: Iterable[Any], what: str, error: type[SenseIndexError] = QueryError) -> None:
    """Refuse values SQLite cannot take as parameters, with the caller's error.

    The caller's error rather than a damaged-index one, for text holding a lone surrogate (not UTF-8) and
    integers beyond 64 bits.

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
