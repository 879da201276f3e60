"""What the build pipeline reports back: build and delete summaries, add plans, check reports.

Plain frozen dataclasses with ``to_dict`` for the CLI's ``--json`` output; nothing here touches the
model or the index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

ProgressCallback = Callable[[int, int | None], None]
"""Called as ``progress(bytes_done, bytes_total)``; ``bytes_total`` is None when reading stdin."""


@dataclass(frozen=True)
class BuildSummary:
    """What a build stored.

    Attributes:
        documents: documents stored.
        sentences: sentences stored (each with a vector).
        words: word occurrences stored (each with a vector).
        passages: passages stored (runs of consecutive sentences, each with a vector).
        tokens: WordPiece tokens run through the model (specials excluded).
        seconds: wall-clock time of the build.
        skipped_files: files in source folders that are not ``.txt``, ``.md`` or ``.jsonl``.
        empty_documents: documents with no text, not stored.
        unaligned_words: words no WordPiece covered, not stored (should be 0).
        index_types: the vector index type each table got (``flat``, a FAISS factory string, or
            several joined with ``+`` when its shards differ).
        unchanged: documents already in the index with the same content, left as they were.
        replaced: documents already in the index with other content, replaced (counted in
            ``documents`` too).
        resumed: a build that continued an unfinished index (killed or failed before).
        merges: what the shard merge after the last commit did, one line each.
        warnings: problems with sources that were skipped or repaired (``--skip-bad``, bad bytes).
        device: where the model ran: ``cpu`` or ``cuda``.
        threads: the model's CPU threads (torch's intra-op threads) at the end of the build.
    """

    documents: int
    sentences: int
    words: int
    passages: int
    tokens: int
    seconds: float
    skipped_files: list[str] = field(default_factory=list)
    empty_documents: int = 0
    unaligned_words: int = 0
    index_types: dict[str, str] = field(default_factory=dict)
    unchanged: int = 0
    replaced: int = 0
    resumed: bool = False
    merges: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    device: str = "cpu"
    threads: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The summary as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class ChangePlan:
    """What an ``add`` would do, found without running the model.

    Attributes:
        new: ids of documents not in the index.
        changed: ids of documents in the index with other content (would be replaced).
        unchanged: ids of documents in the index with the same content (would be left alone).
        skipped_files: files in source folders that are not ``.txt``, ``.md`` or ``.jsonl``.
        warnings: problems with sources that would be skipped or repaired.
    """

    new: list[str]
    changed: list[str]
    unchanged: list[str]
    skipped_files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The plan as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class DeleteSummary:
    """What a delete removed.

    Attributes:
        documents: ids of the documents deleted.
        rows: rows deleted per table (``documents``, ``sentences``, ``words``, ``passages``).
        merges: what the shard merge after the delete did, one line each.
    """

    documents: list[str]
    rows: dict[str, int]
    merges: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The summary as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class CheckReport:
    """What `check_index` found.

    Attributes:
        path: the index folder.
        problems: one line per problem; empty for a sound index.
        notes: remarks that are not problems (an unfinished build, leftover files).
        counts: rows per table.
    """

    path: str
    problems: list[str]
    notes: list[str]
    counts: dict[str, int]

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-able dict (with ``ok``)."""
        return {"ok": self.ok, **asdict(self)}
