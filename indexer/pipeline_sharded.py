"""Building a sharded index: documents split by a hash of their id, each shard a complete index.

``build_index(..., shards=S)`` puts document ``d`` in shard ``shard_of(d, S)``, builds each shard as an
ordinary index in ``DIR/shard-NNNN`` and names them in a manifest (``storage.manifest``). The shards are
built here one after another with one loaded model (``workers=1``), or by a Ray actor pool
(``workers>1``, see `distributed`). Every worker reads the sources itself and keeps its shard's documents,
so no document goes through the process that started the build.

Failures: a shard is an ordinary index committed at document boundaries, so a worker killed at any
moment leaves its shard resumable, and building it again skips the documents already stored (never
storing one twice). The manifest says ``building`` until every shard is complete; running the same build
again resumes the unfinished shards and leaves the complete ones alone. With ``--overwrite`` the new
sharded index is built next to the old one and replaces it only when complete.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from senseindex.errors import IndexExists, ModelMismatch, SenseIndexError, SettingsError, SourceError
from senseindex.indexer.encoder import EncoderSettings, load_encoder
from senseindex.indexer.pipeline_build import (
    _RESUMABLE_SETTINGS,
    ENCODER_SETTINGS,
    SourceReading,
    index_settings,
    open_build_store,
    write_documents,
)
from senseindex.indexer.pipeline_reports import (
    BuildProgress,
    BuildProgressCallback,
    BuildSummary,
    ProgressCallback,
    combine_summaries,
    peak_memory,
)
from senseindex.indexer.sources import STDIN
from senseindex.indexer.storage import (
    DATABASE_FILE,
    STATUS_COMPLETE,
    VECTOR_TABLES,
    IndexStore,
    check_index_type,
    read_index_status,
)
from senseindex.indexer.storage import folder as folder_files
from senseindex.indexer.storage.manifest import (
    MANIFEST_BUILDING,
    MANIFEST_COMPLETE,
    MANIFEST_FILE,
    MAX_SHARDS,
    Manifest,
    read_manifest,
    shard_folder_name,
    write_manifest,
)


@dataclass(frozen=True)
class ShardedBuild:
    """What a sharded build was asked for (sent as is to every worker).

    Attributes:
        sources: the sources, as for `build_index` (files and folders; not standard input).
        folder: the index folder.
        settings: the encoder settings (``threads`` per worker).
        skip_stopwords: give function words no word vector.
        passages: the passage mode.
        sentence_splitting: the sentence splitting mode.
        index_type: the vector index type asked for.
        skip_bad: skip malformed items with a warning.
        shards: the number of shards; None for one per worker.
        workers: processes building shards at once (more than 1: Ray actors).
        ray_address: the Ray cluster to join; None starts a local Ray.
    """

    sources: list[str]
    folder: Path
    settings: EncoderSettings
    skip_stopwords: bool
    passages: str
    sentence_splitting: str
    index_type: str
    skip_bad: bool
    shards: int | None
    workers: int
    ray_address: str | None

    @property
    def shard_count(self) -> int:
        """The number of shards to build."""
        return self.shards if self.shards is not None else self.workers

    def check(self) -> None:
        """Refuse what a sharded build cannot do.

        Raises:
            SettingsError: a bad number of workers or shards, or standard input as a source.
        """
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise SettingsError(f"workers must be a whole number of at least 1, not {self.workers!r}")
        count = self.shard_count
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SHARDS:
            raise SettingsError(f"shards must be a whole number from 1 to {MAX_SHARDS}, not {count!r}")
        if count == 1:
            raise SettingsError(
                "one shard is an ordinary index, built by one process: leave out --workers, or ask for "
                "more shards with --shards"
            )
        if STDIN in self.sources:
            raise SettingsError(
                "a sharded build reads its sources once per shard, so it cannot read standard input; "
                "save it to a file first"
            )


@dataclass(frozen=True)
class ShardReport:
    """A worker's progress on one shard (sent to the process that started the build).

    Attributes:
        shard: the shard number.
        pid: the worker's process id.
        bytes_done: source bytes of the shard's documents stored so far.
        documents: documents stored so far.
        tokens: tokens embedded so far.
        peak_memory: the worker's peak resident memory so far, in bytes.
        finished: the shard is complete.
    """

    shard: int
    pid: int
    bytes_done: int
    documents: int
    tokens: int
    peak_memory: int
    finished: bool


class ShardBuilder:
    """Builds whole shards with one loaded model, in this process or in a Ray actor.

    Args:
        build: what was asked for.
        reading: the sources, scanned by the process that started the build.

    Raises:
        ModelLoadError, SettingsError: the model or a setting is unusable.
    """

    def __init__(self, build: ShardedBuild, reading: SourceReading) -> None:
        self.build = build
        self.reading = reading
        self.encoder = load_encoder(build.settings)
        check_index_type(build.index_type, (self.encoder.word_dimension, self.encoder.sentence_dimension))
        self.wanted = index_settings(
            self.encoder, build.skip_stopwords, build.passages, build.sentence_splitting, build.index_type
        )

    def build_shard(
        self, root: Path, number: int, wanted: dict[str, Any], report: Callable[[ShardReport], None]
    ) -> BuildSummary:
        """Build (or resume, or leave alone if complete) one shard.

        Args:
            root: the folder the shard folders go in.
            number: the shard number.
            wanted: the index settings every shard gets (those of the manifest).
            report: called with the shard's progress after each stored chunk and at its end.

        Returns:
            What was stored in the shard.

        Raises:
            ModelMismatch: this worker's model is not the one the manifest names.
            IndexBusy: another process is writing to the shard.
        """
        changed = [key for key in ENCODER_SETTINGS if self.wanted.get(key) != wanted.get(key)]
        if changed:
            raise ModelMismatch(
                f"the worker in process {os.getpid()} on {os.uname().nodename} loaded a model or settings "
                f"that differ from the index's ({changed[0]}); give every node the same model"
            )
        started = time.perf_counter()
        folder = root / shard_folder_name(number)
        done = [0]
        count = self.build.shard_count

        def chunk_report(done_bytes: int, documents: int, tokens: int) -> None:
            done[0] = done_bytes
            report(ShardReport(number, os.getpid(), done_bytes, documents, tokens, peak_memory(), False))

        if read_index_status(folder) == STATUS_COMPLETE:
            summary = _complete_shard(folder, started)
        else:
            store, resumed = open_build_store(folder, wanted, overwrite=False)
            summary = write_documents(
                store,
                self.encoder,
                self.reading.of_shard(number, count),
                None,
                started,
                complete=True,
                resumed=resumed,
                require_text=False,
                report=chunk_report,
            )
        report(
            ShardReport(number, os.getpid(), done[0], summary.documents, summary.tokens, peak_memory(), True)
        )
        return summary


def _complete_shard(folder: Path, started: float) -> BuildSummary:
    """The summary of a shard a previous run completed: its documents count as unchanged."""
    store = IndexStore.open(folder)
    try:
        documents = store.counts()["documents"]
        types = {table: str(store.settings.get(f"{table}_index_type")) for table in VECTOR_TABLES}
    finally:
        store.close()
    return BuildSummary(
        documents=0,
        sentences=0,
        words=0,
        passages=0,
        tokens=0,
        seconds=round(time.perf_counter() - started, 3),
        index_types=types,
        unchanged=documents,
        resumed=True,
    )


class _InProcess:
    """Builds the shards here, one after another, with one loaded model."""

    def __init__(self, build: ShardedBuild, reading: SourceReading) -> None:
        self.builder = ShardBuilder(build, reading)

    def settings(self) -> dict[str, Any]:
        return self.builder.wanted

    def run(
        self, root: Path, wanted: dict[str, Any], update: Callable[[ShardReport], None]
    ) -> list[BuildSummary]:
        count = self.builder.build.shard_count
        return [self.builder.build_shard(root, number, wanted, update) for number in range(count)]

    def close(self) -> None:
        pass


class _Tracker:
    """Adds up the shards' reports into the build's progress."""

    def __init__(
        self,
        count: int,
        total_bytes: int | None,
        started: float,
        progress: ProgressCallback | None,
        progress_report: BuildProgressCallback | None,
    ) -> None:
        self.count, self.total_bytes, self.started = count, total_bytes, started
        self.progress, self.progress_report = progress, progress_report
        self.latest: dict[int, ShardReport] = {}

    def update(self, report: ShardReport) -> None:
        self.latest[report.shard] = report
        done = sum(r.bytes_done for r in self.latest.values())
        if self.progress:
            self.progress(done, self.total_bytes)
        if self.progress_report:
            self.progress_report(
                BuildProgress(
                    bytes_done=done,
                    bytes_total=self.total_bytes,
                    documents=sum(r.documents for r in self.latest.values()),
                    tokens=sum(r.tokens for r in self.latest.values()),
                    seconds=time.perf_counter() - self.started,
                    shards=self.count,
                    shards_done=sum(r.finished for r in self.latest.values()),
                    shard=report.shard,
                    worker_pid=report.pid,
                    worker_peak_memory=report.peak_memory,
                )
            )


def build_sharded_index(
    build: ShardedBuild,
    overwrite: bool,
    progress: ProgressCallback | None,
    progress_report: BuildProgressCallback | None,
) -> BuildSummary:
    """Build a sharded index (the ``shards``/``workers`` form of `build_index`).

    Args:
        build: what was asked for.
        overwrite: replace an index already in the folder (once the new one is complete).
        progress: called with source bytes done and in total, across all shards.
        progress_report: called with a `BuildProgress` as the workers report.

    Returns:
        The shards' counts added up.

    Raises:
        SettingsError: a bad number of workers or shards, standard input, or a bad setting.
        MissingExtra: several workers without the ``ray`` extra.
        SourceError: a bad source, or no text in the whole corpus.
        IndexExists: the folder holds an index (or an unfinished one built otherwise) without ``overwrite``.
        IndexBusy: another process is writing to the folder or a shard.
    """
    started = time.perf_counter()
    build.check()
    if build.workers > 1:
        from senseindex.indexer import distributed  # (imports ray, which only this needs)

        distributed.import_ray()  # a missing extra is said before any work
    reading = SourceReading.read(build.sources, None, build.skip_bad)
    place = _ShardedFolder.open(build.folder, overwrite)
    try:
        runner = _InProcess(build, reading) if build.workers == 1 else distributed.RayRunner(build, reading)
        try:
            wanted = place.start(runner.settings(), build.shard_count)
            tracker = _Tracker(build.shard_count, reading.total_bytes, started, progress, progress_report)
            summaries = runner.run(place.where, wanted, tracker.update)
        finally:
            runner.close()
        names = [shard_folder_name(n) for n in range(build.shard_count)]
        total = combine_summaries(
            list(zip(names, summaries, strict=True)),
            time.perf_counter() - started,
            reading.scan.skipped_files,
        )
        if not total.documents and not total.unchanged:
            place.discard()
            raise SourceError("the sources hold no text to index (all documents are empty)")
        place.finish(Manifest(tuple(names), wanted, MANIFEST_COMPLETE))
    except BaseException:
        place.abort()
        raise
    return total


@dataclass
class _ShardedFolder:
    """Where a sharded build writes: the index folder itself, or (``--overwrite``) a folder next to it.

    Holds the write locks (the index folder's, and with ``--overwrite`` the old shards' and the staging
    folder's) until `finish` or `abort`.
    """

    target: Path
    where: Path
    locks: list[int]
    staging: bool
    created: bool
    existing: Manifest | None

    @classmethod
    def open(cls, folder: Path, overwrite: bool) -> _ShardedFolder:
        target = Path(folder).expanduser().resolve()
        if target == Path.cwd().resolve() or target.parent == target:
            raise SenseIndexError(f"build the index in a folder of its own, not in {target}")
        if target.exists() and not target.is_dir():
            raise SenseIndexError(f"{target} exists and is not a folder")
        folder_files.recover_interrupted_swap(target)
        manifest = read_manifest(target) if target.is_dir() else None
        ordinary = (target / DATABASE_FILE).exists()
        if (manifest is not None or ordinary) and overwrite:
            return cls._staging(target, manifest)
        if ordinary:
            state = "an unfinished index" if read_index_status(target) != STATUS_COMPLETE else "an index"
            raise IndexExists(f"{target} already holds {state}; use --overwrite to rebuild it from scratch")
        if manifest is not None and manifest.status == MANIFEST_COMPLETE:
            raise IndexExists(f"{target} already holds a sharded index; use --overwrite to rebuild it")
        if manifest is None and target.is_dir() and not all(_is_leftover(p.name) for p in target.iterdir()):
            raise IndexExists(
                f"{target} is a folder with other files in it, not an index; choose a new folder"
            )
        created = not target.exists()
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SenseIndexError(f"cannot create an index in {target}: {error}") from error
        lock = folder_files.take_lock(target)
        return cls(target, target, [lock], staging=False, created=created, existing=manifest)

    @classmethod
    def _staging(cls, target: Path, manifest: Manifest | None) -> _ShardedFolder:
        locks = [folder_files.take_lock(target)]
        try:
            for shard in manifest.folders(target) if manifest else []:
                if shard.is_dir():
                    locks.append(folder_files.take_lock(shard))
            where = folder_files.staging_folder(target)
            if where.exists():
                shutil.rmtree(where)
            where.mkdir(parents=True)
            locks.append(folder_files.take_lock(where))
        except OSError as error:
            _release(locks)
            raise SenseIndexError(f"cannot create an index next to {target}: {error}") from error
        except BaseException:
            _release(locks)
            raise
        return cls(target, where, locks, staging=True, created=False, existing=None)

    def start(self, wanted: dict[str, Any], count: int) -> dict[str, Any]:
        """Write the manifest of a new build, or check an unfinished one is the same build.

        Returns:
            The settings every shard gets.

        Raises:
            IndexExists: the unfinished build has another number of shards or other settings.
        """
        names = tuple(shard_folder_name(n) for n in range(count))
        if self.existing is None:
            try:
                write_manifest(self.where, Manifest(names, wanted, MANIFEST_BUILDING))
            except OSError as error:
                raise SenseIndexError(f"cannot write to {self.where}: {error}") from error
            return wanted
        stored = self.existing.settings
        if self.existing.count != count:
            raise IndexExists(
                f"{self.target} holds an unfinished sharded index of {self.existing.count} shards, not "
                f"{count}; run the same build again to resume it, or use --overwrite"
            )
        different = [key for key in _RESUMABLE_SETTINGS if stored.get(key) != wanted[key]]
        if different:
            key = different[0]
            raise IndexExists(
                f"{self.target} holds an unfinished index built with other settings ({key}: "
                f"{stored.get(key)!r}, not {wanted[key]!r}); run the same build again to resume it, or "
                "use --overwrite"
            )
        return stored

    def finish(self, manifest: Manifest) -> None:
        """Mark the index complete and (``--overwrite``) move it into place; release the locks."""
        try:
            write_manifest(self.where, manifest)
            if self.staging:
                folder_files.swap_into_place(self.where, self.target)
        except OSError as error:
            raise SenseIndexError(f"cannot finish the index in {self.target}: {error}") from error
        finally:
            _release(self.locks)
            self.locks = []

    def discard(self) -> None:
        """Remove what this build made (it stored nothing)."""
        if self.staging or self.created:
            shutil.rmtree(self.where, ignore_errors=True)
            return
        (self.where / MANIFEST_FILE).unlink(missing_ok=True)
        for path in self.where.glob("shard-*"):
            shutil.rmtree(path, ignore_errors=True)

    def abort(self) -> None:
        """Give up: an ``--overwrite`` build's folder goes; an in-place one stays to be resumed.

        A new folder that did not get as far as its manifest goes too.
        """
        if self.staging or (self.created and not (self.where / MANIFEST_FILE).exists()):
            shutil.rmtree(self.where, ignore_errors=True)
        _release(self.locks)
        self.locks = []


def _is_leftover(name: str) -> bool:
    """Files a killed build may leave in a new index folder before its manifest."""
    return folder_files.is_own_leftover(name) or name == f".{MANIFEST_FILE}.tmp"


def _release(locks: list[int]) -> None:
    for lock in locks:
        folder_files.release_lock(lock)


__all__ = ["ShardBuilder", "ShardReport", "ShardedBuild", "build_sharded_index"]
