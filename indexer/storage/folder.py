"""The index folder on disk.

Its write lock, flushing files and folder entries, opening the database, the ``--overwrite`` swap (and its
recovery after a crash), and clean-up of files no commit names.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from senseindex.errors import IndexBusy, IndexCorrupted, IndexNotFound, SchemaMismatch, SenseIndexError
from senseindex.indexer.faults import os_failure
from senseindex.indexer.storage.guards import sqlite_failure
from senseindex.indexer.storage.schema import (
    DATABASE_FILE,
    LOCK_FILE,
    STATUS_COMPLETE,
    STATUS_KEY,
    initialise,
)

FileState = tuple[int, int, int, int]
"""A file's inode, size, modification and change times (ns)."""


def take_lock(folder: Path) -> int:
    """Take the folder's write lock (released when the process ends, however it ends).

    Returns:
        The lock file's descriptor; `release_lock` releases it.

    Raises:
        IndexBusy: another process holds the lock.
        StorageError: the lock file cannot be created or opened for writing.
    """
    try:
        descriptor = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise os_failure(error, folder / LOCK_FILE, "writing") from error
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        raise IndexBusy(
            f"another process is writing to the index in {folder}; try again when it has finished"
        ) from None
    return descriptor


def release_lock(descriptor: int | None) -> None:
    """Release a lock taken by `take_lock` (nothing for None)."""
    if descriptor is not None:
        with contextlib.suppress(OSError):
            os.close(descriptor)  # closing the descriptor releases its lock


def fsync_file(path: Path) -> None:
    """Flush a file's contents to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sync_folder(folder: Path) -> None:
    """Flush the folder's entries (renamed files) to disk before a commit names them."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def connect(path: Path, writable: bool) -> sqlite3.Connection:
    """A connection to a database file; a reader's is query-only (immutable in a read-only folder)."""
    if writable or os.access(path.parent, os.W_OK):
        # A reader opens the database writable but with query_only on: as the last connection to
        # close it can then remove the write-ahead log files, which a read-only one would leave.
        connection = sqlite3.connect(path, timeout=30, check_same_thread=False)
        if not writable:
            connection.execute("pragma query_only=1")
    else:  # a read-only folder cannot hold the write-ahead log's index: read the file as it is
        connection = sqlite3.connect(
            path.resolve().as_uri() + "?immutable=1", uri=True, timeout=30, check_same_thread=False
        )
    connection.execute("pragma busy_timeout=30000")
    return connection


def create_database(folder: Path, settings: dict[str, Any]) -> None:
    """Write a new, empty database under a temporary name and rename it into place.

    A process killed meanwhile leaves no half-made ``index.sqlite``.

    Args:
        folder: the index folder (exists).
        settings: the caller's settings (JSON-able values).

    Raises:
        OSError, sqlite3.Error: the folder cannot be written.
    """
    temporary = folder / f"{DATABASE_FILE}.tmp"
    for leftover in folder.glob(f"{DATABASE_FILE}.tmp*"):
        leftover.unlink()
    connection = connect(temporary, writable=True)
    try:
        connection.execute("pragma journal_mode=wal")  # kept in the file: readers during writes
        initialise(connection, settings)
        connection.commit()
    finally:
        connection.close()  # the last connection: the write-ahead log is folded in and removed
    fsync_file(temporary)
    os.replace(temporary, folder / DATABASE_FILE)
    sync_folder(folder)


def open_database(folder: Path, writable: bool) -> sqlite3.Connection:
    """Connect to an index's database, after finishing an interrupted ``--overwrite`` swap.

    Raises:
        IndexNotFound: no index in the folder.
        IndexCorrupted: the file is not a readable index database.
        IndexBusy: a writer held the database too long.
        SenseIndexError: the disk is full or the operating system refuses the file.
    """
    recover_interrupted_swap(folder)
    database_path = folder / DATABASE_FILE
    if not folder.is_dir():
        raise IndexNotFound(f"index folder {folder} does not exist; build one with build-index")
    if not database_path.is_file():
        raise IndexNotFound(f"{folder} is not a senseindex index (no {DATABASE_FILE})")
    try:
        connection = connect(database_path, writable)
        connection.execute("select count(*) from settings").fetchone()
    except sqlite3.DatabaseError as error:
        failure = sqlite_failure(error, folder)
        if isinstance(failure, IndexCorrupted):
            raise IndexCorrupted(f"{database_path} is not a readable index database ({error})") from error
        if failure is error:
            raise
        raise failure from error
    return connection


def identity(folder: Path) -> tuple[int, int] | None:
    """Device and inode of an index's database file: they change when the index is replaced."""
    try:
        status = (folder / DATABASE_FILE).stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def database_state(folder: Path) -> tuple[FileState | None, ...]:
    """The state of the database file and its write-ahead log (None for a missing one).

    It changes with every commit (a checkpoint may change it too).
    """
    states: list[FileState | None] = []
    for name in (DATABASE_FILE, DATABASE_FILE + "-wal"):
        try:
            stat = (folder / name).stat()
        except OSError:
            states.append(None)
            continue
        states.append((stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))
    return tuple(states)


def is_own_leftover(name: str) -> bool:
    """Files a killed ``create`` may leave in a new index folder."""
    return name == LOCK_FILE or name.startswith(f"{DATABASE_FILE}.tmp")


def staging_folder(folder: Path) -> Path:
    """Where an ``--overwrite`` build writes the index that will replace ``folder``'s."""
    return folder.with_name(f".{folder.name}.building")


def retired_folder(folder: Path) -> Path:
    """Where the replaced index waits during an ``--overwrite`` swap."""
    return folder.with_name(f".{folder.name}.replaced")


def recover_interrupted_swap(folder: Path) -> None:
    """Finish or undo an ``--overwrite`` build killed between its two renames.

    The killed build had moved the old index aside and not yet moved the new one in: the new index goes in if
    it was complete, else the old one goes back. Nothing happens while a writer holds the old index's lock (it
    is in the middle of the swap).
    """
    folder = Path(folder).expanduser().resolve()
    if folder.parent == folder or folder.exists():
        return
    retired = retired_folder(folder)
    if not retired.is_dir():
        return
    try:
        lock = take_lock(retired)
    except SenseIndexError:
        return
    try:
        staging = staging_folder(folder)
        if _is_complete(staging):
            staging.rename(folder)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            retired.rename(folder)
    except (OSError, IndexCorrupted, SchemaMismatch):
        pass
    finally:
        release_lock(lock)


def _is_complete(folder: Path) -> bool:
    """Whether a folder holds a complete index: an ordinary one, or a sharded one (its manifest)."""
    # (imported here: the manifest module writes its file with this module's helpers)
    from senseindex.indexer.storage.manifest import MANIFEST_COMPLETE, read_manifest

    database = folder / DATABASE_FILE
    if database.is_file():
        return read_status(database) == STATUS_COMPLETE
    manifest = read_manifest(folder)
    return manifest is not None and manifest.status == MANIFEST_COMPLETE


def swap_into_place(staging: Path, target: Path) -> None:
    """Move a finished ``--overwrite`` build into its folder.

    The old index is moved aside, the new one in, then the old one deleted (`recover_interrupted_swap`
    completes a killed swap).

    Raises:
        SenseIndexError: a rename fails (the previous index is put back where it can be).
    """
    retired = retired_folder(target)
    try:
        if retired.exists():
            shutil.rmtree(retired)
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


def vector_files_on_disk(folder: Path) -> list[str]:
    """Names of the vector files (finished or temporary) in an index folder."""
    return [p.name for p in folder.iterdir() if p.suffix in (".faiss", ".tmp")]


def remove_unreferenced_files(folder: Path, referenced: Iterable[str]) -> list[str]:
    """Delete vector files no commit refers to.

    They were written by a writer killed before its commit, or replaced by a later commit or a merge (readers
    that still use them opened them already).

    Returns:
        The names of the files deleted.
    """
    keep = set(referenced)
    removed = []
    for name in vector_files_on_disk(folder):
        if name not in keep:
            (folder / name).unlink(missing_ok=True)
            removed.append(name)
    return removed


def read_index_status(folder: Path) -> str | None:
    """``building`` or ``complete`` for an index folder; None when the folder holds no index.

    Raises:
        IndexCorrupted: the database cannot be read.
    """
    recover_interrupted_swap(Path(folder))
    database_path = Path(folder) / DATABASE_FILE
    return read_status(database_path) if database_path.is_file() else None


def read_status(database_path: Path) -> str | None:
    """The build status stored in a database file, read without opening the index.

    Raises:
        IndexCorrupted: the database cannot be read, or the status is not JSON.
    """
    try:
        connection = sqlite3.connect(database_path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            row = connection.execute("select value from settings where key = ?", [STATUS_KEY]).fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise IndexCorrupted(f"{database_path} is not a readable index database: {error}") from error
    if row is None:
        return None
    try:
        status = json.loads(row[0])
    except (TypeError, ValueError) as error:
        raise IndexCorrupted(f"{database_path} has a damaged status setting; rebuild it") from error
    return str(status) if status is not None else None


def file_size(path: Path) -> int | None:
    """A vector file's size in bytes; None when it is not there.

    A writer may remove a file a reader's snapshot names (it retired it in a later commit) at any
    moment, between the two looks included.
    """
    try:
        return path.stat().st_size if path.is_file() else None
    except FileNotFoundError:
        return None
