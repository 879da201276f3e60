"""What the build pipeline reports back: build and delete summaries, add plans, check reports.

Plain frozen dataclasses with ``to_dict`` for the CLI's ``--json`` output; nothing here touches the
model or the index.
"""

from __future__ import annotations

import os
import resource
import sys
import time
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
class BuildProgress:
    """How far a build has got, across all its shards and workers.

    Attributes:
        bytes_done: source bytes read into stored chunks so far.
        bytes_total: source bytes in all; None when standard input is read.
        documents: documents stored so far.
        tokens: WordPiece tokens run through the model so far.
        seconds: wall-clock time since the build began.
        shards: shards in the index (1 for an ordinary index).
        shards_done: shards complete.
        shard: the shard the latest report came from.
        worker_pid: the process (a Ray actor's, or this one) that built it.
        worker_peak_memory: that process's peak resident memory so far, in bytes.
    """

    bytes_done: int
    bytes_total: int | None
    documents: int
    tokens: int
    seconds: float
    shards: int = 1
    shards_done: int = 0
    shard: int = 0
    worker_pid: int = 0
    worker_peak_memory: int = 0

    @property
    def documents_per_second(self) -> float:
        """Documents stored per second of the build so far."""
        return self.documents / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_second(self) -> float:
        """Tokens embedded per second of the build so far."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


BuildProgressCallback = Callable[[BuildProgress], None]
"""Called with a `BuildProgress` after each stored chunk (for a sharded build: as workers report)."""


def chunk_reporter(
    progress_report: BuildProgressCallback | None, total_bytes: int | None, started: float
) -> Callable[[int, int, int], None] | None:
    """The per-chunk callback of an ordinary build that calls ``progress_report`` (None without one).

    Args:
        progress_report: the caller's callback, or None.
        total_bytes: source bytes in all (None for standard input).
        started: ``time.perf_counter()`` when the build began.

    Returns:
        A callback taking source bytes done, documents and tokens so far.
    """
    if progress_report is None:
        return None
    callback = progress_report

    def report(done_bytes: int, documents: int, tokens: int) -> None:
        seconds, pid, peak = time.perf_counter() - started, os.getpid(), peak_memory()
        callback(BuildProgress(done_bytes, total_bytes, documents, tokens, seconds, 1, 0, 0, pid, peak))

    return report


def peak_memory() -> int:
    """This process's peak resident memory so far, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # kibibytes on Linux


def combine_summaries(
    summaries: list[tuple[str, BuildSummary]], seconds: float, skipped_files: list[str]
) -> BuildSummary:
    """One summary for a sharded build: the shards' counts added up.

    Args:
        summaries: each shard's folder name and summary, in shard order.
        seconds: the build's wall-clock time.
        skipped_files: the files the sources' scan skipped (every shard skipped the same ones).

    Returns:
        The totals; a table's index type lists the shards' different types joined with ``+``;
        warnings once each; merges prefixed by their shard.
    """

    def total(name: str) -> int:
        return sum(getattr(summary, name) for _, summary in summaries)

    index_types: dict[str, str] = {}
    for _, summary in summaries:
        for table, kind in summary.index_types.items():
            kinds = index_types.get(table, "").split("+") if table in index_types else []
            for part in kind.split("+"):
                if part not in kinds:
                    kinds.append(part)
            index_types[table] = "+".join(kinds)
    return BuildSummary(
        documents=total("documents"),
        sentences=total("sentences"),
        words=total("words"),
        passages=total("passages"),
        tokens=total("tokens"),
        seconds=round(seconds, 3),
        skipped_files=skipped_files,
        empty_documents=total("empty_documents"),
        unaligned_words=total("unaligned_words"),
        index_types=index_types,
        unchanged=total("unchanged"),
        replaced=total("replaced"),
        resumed=any(summary.resumed for _, summary in summaries),
        merges=[f"{name}: {merge}" for name, summary in summaries for merge in summary.merges],
        warnings=list(dict.fromkeys(w for _, summary in summaries for w in summary.warnings)),
    )


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
        missing: ids passed over because no document has them (a delete with ``missing_ok``).
    """

    documents: list[str]
    rows: dict[str, int]
    merges: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

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
