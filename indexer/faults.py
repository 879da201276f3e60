"""Faults of the machine, said as what they are and what to do: a full disk, a refused file, an I/O error.

The storage raises what the operating system, SQLite and FAISS report: `OSError`, `sqlite3.Error`,
and FAISS's `RuntimeError` whose message is a C++ signature followed by the reason. The public entry
points (build, add, delete, check, open, every query) turn them into a `StorageError` with one line
that names the file and says what to do, through `storage_faults` (for functions given an index
folder) and `as_storage_error` (for code that knows its folder otherwise). None of them says the
index is damaged: a full disk or a refused file leaves every committed document in place, and only
a check proves damage.
"""

from __future__ import annotations

import errno
import functools
import inspect
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from senseindex.errors import DiskFull, SenseIndexError, StorageError

_Function = TypeVar("_Function", bound=Callable[..., Any])

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)
# What FAISS's file writer and reader say: "write error in FILE: 5 != 8 (No space left on device)"
_FAISS_FILE = re.compile(r"(?:error in|could not open) (?P<file>\S+?)(?: for \w+)?: (?P<detail>.*)$")
_FAISS_REASON = re.compile(r"\(([^()]*)\)\s*$")


def storage_error(error: BaseException, where: Path | str, doing: str) -> SenseIndexError | None:
    """A `StorageError` for a fault of the machine, or None when ``error`` is not one.

    What SQLite reports is said by its cause (see `sqlite_failure`): a database held by a writer is
    `IndexBusy`, one SQLite finds damaged `IndexCorrupted`.

    Args:
        error: what was raised: an `OSError`, an `sqlite3.Error` or a FAISS `RuntimeError`.
        where: the index folder (the file, when the error does not name one).
        doing: ``reading`` or ``writing``, for the message.

    Returns:
        The error to raise instead, or None for anything else (a bug keeps its own type).
    """
    if isinstance(error, OSError):
        return os_failure(error, where, doing)
    if isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.ProgrammingError):
        from senseindex.indexer.storage.guards import sqlite_failure  # (here: storage imports this module)

        translated = sqlite_failure(error, Path(where))
        if isinstance(translated, SenseIndexError):
            return translated
        if isinstance(error, sqlite3.OperationalError):
            return StorageError(
                f"SQLite failed {doing} the index in {where} ({_first_line(error)[:200]}); "
                "run the command again"
            )
        return None
    if isinstance(error, RuntimeError) and _is_faiss(error):
        return _faiss_error(error, where, doing)
    return None


def os_failure(error: OSError, where: Path | str, doing: str) -> StorageError:
    """The `StorageError` for what the operating system refused.

    Args:
        error: the error.
        where: the file or folder, when the error does not name one.
        doing: ``reading`` or ``writing``.

    Returns:
        The error to raise, with what to do.
    """
    return _os_error(error.errno, error.filename or where, error.strerror or str(error), doing)


def _os_error(number: int | None, file: Any, detail: str, doing: str) -> StorageError:
    file = os.fsdecode(file) if isinstance(file, (bytes, os.PathLike)) else str(file)
    if number in _NO_SPACE:
        return DiskFull(
            f"no space left on device {doing} {file}: free space and run the command again; the index "
            "keeps every committed document"
        )
    from senseindex.indexer.storage.guards import READ_ONLY_ADVICE, out_of_space, read_only_file_system

    if number == errno.EROFS or (number in _REFUSED and read_only_file_system(Path(file))):
        return StorageError(f"cannot write {file}: {READ_ONLY_ADVICE}")
    if number in _REFUSED:
        return StorageError(
            f"permission denied {doing} {file} ({detail}): give this user access to the index folder, or "
            "use another one"
        )
    if number == errno.EIO and out_of_space(Path(file)):
        return _os_error(errno.ENOSPC, file, detail, doing)
    if number == errno.EIO:
        return StorageError(
            f"I/O error {doing} {file}: check the disk (dmesg, SMART), then run the command again; "
            "'senseindex check' tells whether the index was harmed"
        )
    return StorageError(f"cannot go on {doing} {file}: {detail}; fix that and run the command again")


def _is_faiss(error: RuntimeError) -> bool:
    message = str(error)
    return message.startswith("Error in ") and "faiss" in message


def _faiss_error(error: RuntimeError, where: Path | str, doing: str) -> StorageError:
    """What a FAISS failure says: the file and the operating system's reason, when it gives them."""
    message = _first_line(error)
    reason = message.split("failed:", 1)[-1].strip()
    found = _FAISS_FILE.search(reason)
    file = found.group("file") if found else str(where)
    why = _FAISS_REASON.search(reason)
    if why:
        number = _errno_of(why.group(1))
        if number is not None:
            return _os_error(number, file, why.group(1), doing)
    return StorageError(
        f"FAISS failed {doing} vectors of the index in {where} ({reason[:200]}); run the command again"
    )


def _errno_of(reason: str) -> int | None:
    """The error number whose text is ``reason`` (``No space left on device`` -> ENOSPC)."""
    for number in (*_NO_SPACE, *_REFUSED, errno.EIO):
        if os.strerror(number) == reason:
            return number
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def as_storage_error(where: Path | str, doing: str) -> Iterator[None]:
    """Turn the machine's faults raised inside the block into a `StorageError` (see `storage_error`).

    Args:
        where: the index folder.
        doing: ``reading`` or ``writing``.

    Raises:
        StorageError: for an `OSError`, an `sqlite3.Error` or a FAISS failure; anything else as it is.
    """
    try:
        yield
    except (OSError, sqlite3.Error, RuntimeError) as error:
        translated = storage_error(error, where, doing)
        if translated is None:
            raise
        raise translated from error


def storage_faults(doing: str, folder_argument: str = "index_dir") -> Callable[[_Function], _Function]:
    """Decorate an entry point so the machine's faults leave it as a `StorageError`.

    Args:
        doing: ``reading`` or ``writing``, for the message.
        folder_argument: the name of the argument that gives the index folder.

    Returns:
        The decorator.
    """

    def decorate(function: _Function) -> _Function:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except (OSError, sqlite3.Error, RuntimeError) as error:
                bound = signature.bind_partial(*args, **kwargs).arguments
                translated = storage_error(error, bound.get(folder_argument, "the index folder"), doing)
                if translated is None:
                    raise
                raise translated from error

        return wrapper  # type: ignore[return-value]  # functools.wraps loses the wrapped signature

    return decorate
