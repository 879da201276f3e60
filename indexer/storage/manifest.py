"""A sharded index: a folder of complete indexes (shards) and the manifest that names them.

A corpus too large for one process is split by document: each document belongs to exactly one shard,
chosen by a stable hash of its id (`shard_of`), so every process and every machine routes a
document to the same shard without asking anyone. Each shard is a complete index in the ordinary
format, in its own sub-folder; the manifest (``DIR/senseindex-shards.json``) names the shard folders
and the settings they share::

    DIR/senseindex-shards.json     {"format", "version", "status", "shards": ["shard-0000", ...], "settings"}
    DIR/shard-0000/index.sqlite    an ordinary index holding the documents that hash to shard 0
    DIR/shard-0001/...

A folder without a manifest is an ordinary (single) index, unchanged.

The manifest is written before the first shard and says ``building`` until every shard is complete,
then ``complete``: a build that was killed is resumed by running it again (each unfinished shard
resumes from its last commit; complete shards are left alone).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from senseindex.errors import IndexCorrupted, SchemaMismatch
from senseindex.indexer.storage.folder import fsync_file, sync_folder

MANIFEST_FILE = "senseindex-shards.json"
MANIFEST_FORMAT = "senseindex-sharded"
MANIFEST_VERSION = 1
MAX_SHARDS = 4096
MANIFEST_BUILDING = "building"
MANIFEST_COMPLETE = "complete"


def shard_of(doc_id: str, shards: int) -> int:
    """The shard a document belongs to: a stable hash of its id, modulo the number of shards.

    BLAKE2b of the id's UTF-8 bytes, so the answer is the same in every process, on every machine and
    in every Python version (unlike ``hash()``, which is salted per process).

    Args:
        doc_id: the document's id.
        shards: the number of shards (at least 1).

    Returns:
        The shard number, in ``range(shards)``.
    """
    digest = hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def shard_folder_name(number: int) -> str:
    """The sub-folder of shard ``number``: ``shard-0000``, ``shard-0001``, ..."""
    return f"shard-{number:04d}"


@dataclass(frozen=True)
class Manifest:
    """What a sharded index's manifest records.

    Attributes:
        shards: the shard sub-folders, in shard-number order (document ``d`` lives in
            ``shards[shard_of(d, len(shards))]``).
        settings: the build settings every shard shares (model, fingerprint, strategies, index type).
        status: ``complete``, or ``building`` while a sharded build has shards left to finish.
    """

    shards: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    status: str = MANIFEST_COMPLETE

    @property
    def count(self) -> int:
        """The number of shards."""
        return len(self.shards)

    def folders(self, root: Path) -> list[Path]:
        """The shard folders under the index folder ``root``, in shard-number order."""
        return [root / name for name in self.shards]

    def shard_of(self, doc_id: str) -> int:
        """The shard number a document id routes to."""
        return shard_of(doc_id, self.count)

    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON-able data."""
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "status": self.status,
            "shards": list(self.shards),
            "settings": self.settings,
        }


def is_sharded(folder: Path) -> bool:
    """Whether ``folder`` holds a sharded index (a manifest)."""
    return (Path(folder) / MANIFEST_FILE).is_file()


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest of a sharded index, or None for a folder without one.

    Raises:
        IndexCorrupted: the manifest is unreadable or malformed.
        SchemaMismatch: the manifest was written by a newer senseindex.
    """
    path = Path(folder) / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise IndexCorrupted(f"cannot read the shard manifest {path}: {error}") from error
    try:
        data = json.loads(text)
    except ValueError as error:
        raise IndexCorrupted(f"the shard manifest {path} is not valid JSON ({error})") from error
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise IndexCorrupted(f"{path} is not a senseindex shard manifest")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise IndexCorrupted(f"the shard manifest {path} has no format version")
    if version > MANIFEST_VERSION:
        raise SchemaMismatch(
            f"{path} was written by a newer senseindex (manifest version {version}); upgrade senseindex"
        )
    shards, settings = data.get("shards"), data.get("settings", {})
    status = data.get("status", MANIFEST_COMPLETE)
    if (
        status not in (MANIFEST_BUILDING, MANIFEST_COMPLETE)
        or not isinstance(shards, list)
        or not 1 <= len(shards) <= MAX_SHARDS
        or not all(_is_plain_name(name) for name in shards)
        or len(set(shards)) != len(shards)
        or not isinstance(settings, dict)
    ):
        raise IndexCorrupted(f"the shard manifest {path} has a damaged shard list or settings")
    return Manifest(tuple(shards), settings, status)


def _is_plain_name(name: Any) -> bool:
    # a sub-folder of the index folder: no path separators, no "..", nothing hidden
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and name[0] != "."


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write a manifest atomically (a temporary file, flushed, then renamed into place).

    Raises:
        OSError: the folder cannot be written (the caller turns it into its own error).
    """
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    temporary = folder / f".{MANIFEST_FILE}.tmp"
    temporary.write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    fsync_file(temporary)
    os.replace(temporary, path)
    sync_folder(folder)
