"""Adding to, deleting from and checking a sharded index: each document goes to the shard its id hashes to.

Every shard is an ordinary index with its own write lock, so each shard has one writer. A write takes
the locks of every shard it touches before it changes anything, so two writers never interleave on a
sharded index. Each shard commits on its own: an add of documents in memory (`add_document_list`)
and a delete write every shard first and commit them one after another at the end, so a failure while
writing leaves every shard as it was; a crash between two shards' commits leaves the earlier shards
changed (the same add or delete run again completes it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from senseindex.errors import DocumentNotFound, ModelMismatch, SenseIndexError
from senseindex.indexer.encoder import Encoder, load_index_encoder
from senseindex.indexer.pipeline_build import (
    ENCODER_SETTINGS,
    SourceReading,
    index_replaced,
    write_documents,
)
from senseindex.indexer.pipeline_reports import (
    BuildSummary,
    CheckReport,
    DeleteSummary,
    ProgressCallback,
    combine_summaries,
)
from senseindex.indexer.pipeline_verify import DEEP_SAMPLE, deep_problems
from senseindex.indexer.sources import Document
from senseindex.indexer.storage import (
    IndexStore,
    Manifest,
    read_manifest,
    shard_of,
)
from senseindex.indexer.storage import folder as folder_files
from senseindex.indexer.validation import not_found_message


def sharded_manifest(index_dir: str | Path) -> Manifest | None:
    """The manifest of a sharded index folder; None for an ordinary index (or no index)."""
    return read_manifest(Path(index_dir))


def add_to_shards(
    index_dir: Path,
    manifest: Manifest,
    reading: SourceReading,
    model: str | None,
    runtime: tuple[str, str, int | None],
    progress: ProgressCallback | None,
) -> BuildSummary:
    """`add_documents` for a sharded index: each shard adds the documents that hash to it.

    The sources are read once per shard; each shard commits along the way, as an ordinary add does.
    ``runtime`` is ``(backend, device, threads)`` of the model.
    """
    started = time.perf_counter()
    with _writers(index_dir, manifest, range(manifest.count)) as stores:
        encoder = load_index_encoder(stores[0].settings, model, *runtime)
        summaries = []
        for shard, store in stores.items():
            shard_progress = _shard_progress(progress, shard, manifest.count)
            summaries.append(
                (
                    manifest.shards[shard],
                    write_documents(
                        store,
                        encoder,
                        reading.of_shard(shard, manifest.count),
                        shard_progress,
                        started,
                        complete=False,
                        resumed=False,
                    ),
                )
            )
    return combine_summaries(summaries, time.perf_counter() - started, reading.scan.skipped_files)


def add_list_to_shards(
    index_dir: Path,
    manifest: Manifest,
    documents: list[Document],
    encoder: Encoder,
    encoder_settings: dict,
    progress: ProgressCallback | None,
) -> BuildSummary:
    """`add_document_list` for a sharded index: every shard written, then each committed."""
    started = time.perf_counter()
    routed: dict[int, list[Document]] = {}
    for document in documents:
        routed.setdefault(manifest.shard_of(document.doc_id), []).append(document)
    summaries = []
    with _writers(index_dir, manifest, sorted(routed)) as stores:
        for store in stores.values():
            replaced = index_replaced(store.settings, encoder_settings, index_dir)
            if replaced:
                raise ModelMismatch(replaced)
        for shard, store in stores.items():
            summaries.append(
                (
                    manifest.shards[shard],
                    write_documents(
                        store,
                        encoder,
                        SourceReading.of_documents(routed[shard]),
                        progress,
                        started,
                        complete=False,
                        resumed=False,
                        commit_on_the_way=False,
                        finish=False,
                    ),
                )
            )
        merges = [
            f"{manifest.shards[shard]}: {line}"
            for shard, store in stores.items()
            for line in store.finish(complete=False)
        ]
    summary = combine_summaries(summaries, time.perf_counter() - started, [])
    return dataclasses.replace(summary, merges=merges)


def delete_from_shards(
    index_dir: Path, manifest: Manifest, doc_ids: Sequence[str], missing_ok: bool = False
) -> DeleteSummary:
    """`delete_documents` for a sharded index: every shard's rows deleted, then each committed."""
    unique = list(dict.fromkeys(doc_ids))
    routed: dict[int, list[str]] = {}
    for doc_id in unique:
        routed.setdefault(manifest.shard_of(doc_id), []).append(doc_id)
    rows: dict[str, int] = {}
    with _writers(index_dir, manifest, sorted(routed)) as stores:
        unknown = []
        for shard, store in stores.items():
            known = store.document_hashes(routed[shard])
            unknown += [doc_id for doc_id in routed[shard] if doc_id not in known]
        unknown.sort(key=unique.index)
        if unknown and not missing_ok:
            raise DocumentNotFound(not_found_message(unknown, index_dir))
        for shard, store in stores.items():
            for table, count in store.delete_documents(routed[shard]).items():
                rows[table] = rows.get(table, 0) + count
        merges = [line for store in stores.values() for line in store.finish(complete=False)]
    missing = set(unknown)
    return DeleteSummary(
        [doc_id for doc_id in unique if doc_id not in missing], rows, merges, missing=unknown
    )


def check_shards(
    index_dir: Path,
    manifest: Manifest,
    deep: bool = False,
    sample: int = DEEP_SAMPLE,
    backend: str = "auto",
    model: str | None = None,
) -> CheckReport:
    """`check_index` for a sharded index: every shard checked, and every document in its own shard.

    With ``deep``, every shard without problems re-embeds ``sample`` of its sentences (one model, loaded
    once for all shards), and a note or a problem names each shard's outcome.
    """
    problems: list[str] = []
    notes: list[str] = []
    counts: dict[str, int] = {}
    encoders: list[Encoder] = []  # loaded by the first shard that re-embeds, shared by the rest
    for number, folder in enumerate(manifest.folders(index_dir)):
        name = folder.name
        try:
            store = IndexStore.open(folder)
        except SenseIndexError as error:
            problems.append(f"{name}: {error}")
            continue
        try:
            with contextlib.suppress(SenseIndexError):
                store.open_vectors()
            shard_problems, shard_notes = store.check()
            shard_problems += _settings_disagree(manifest, store.settings)
            shard_problems += _misplaced(store, number, manifest.count)
            problems += [f"{name}: {line}" for line in shard_problems]
            notes += [f"{name}: {line}" for line in shard_notes]
            if deep and shard_problems:
                notes.append(f"{name}: the sample was not re-embedded: the problems above come first")
            elif deep:
                found, note = _deep_check(store, sample, backend, model, encoders)
                problems += [f"{name}: {line}" for line in found]
                notes += [f"{name}: {note}"] if note else []
            with contextlib.suppress(SenseIndexError):
                for table, count in store.counts().items():
                    counts[table] = counts.get(table, 0) + count
        finally:
            store.close()
    return CheckReport(str(index_dir), problems, notes, counts)


def _deep_check(
    store: IndexStore, sample: int, backend: str, model: str | None, encoders: list[Encoder]
) -> tuple[list[str], str]:
    """``check --deep`` on one sound shard: its problems, and a note when it has none."""
    rows = int(store.db.execute("select count(*) from sentences").fetchone()[0])
    if not rows:
        return [], "no sentences to re-embed"
    if not encoders:
        encoders.append(load_index_encoder(store.settings, model, backend))
    found = deep_problems(store, sample, encoder=encoders[0])
    return found, "" if found else f"{min(sample, rows):,} sampled sentences match their stored vectors"


def _settings_disagree(manifest: Manifest, settings: dict) -> list[str]:
    return [
        f"its setting {key!r} is {settings.get(key)!r}, the manifest's is {value!r}"
        for key, value in manifest.settings.items()
        if key in ENCODER_SETTINGS and settings.get(key) != value
    ]


def _misplaced(store: IndexStore, number: int, shards: int) -> list[str]:
    try:
        doc_ids = [row[0] for row in store.db.execute("select doc_id from documents")]
    except sqlite3.Error as error:
        return [f"its documents cannot be read ({error})"]
    wrong = [doc_id for doc_id in doc_ids if shard_of(doc_id, shards) != number]
    if not wrong:
        return []
    return [f"{len(wrong)} documents belong to another shard (e.g. {wrong[0]!r}); queries still find them"]


@contextlib.contextmanager
def _writers(
    index_dir: Path, manifest: Manifest, shards: Sequence[int] | range
) -> Iterator[dict[int, IndexStore]]:
    """Open shards for writing (taking every lock first); abort whatever is unfinished on an error.

    The index folder's own lock comes first: a sharded build holds it while it runs.
    """
    stores: dict[int, IndexStore] = {}
    folders = manifest.folders(index_dir)
    top_lock = folder_files.take_lock(Path(index_dir))
    try:
        for shard in shards:
            stores[shard] = IndexStore.open_for_writing(folders[shard])
        yield stores
    except BaseException:
        for store in stores.values():
            store.abort()
        raise
    else:
        for store in stores.values():
            store.close()
    finally:
        folder_files.release_lock(top_lock)


def _shard_progress(progress: ProgressCallback | None, shard: int, shards: int) -> ProgressCallback | None:
    if progress is None:
        return None

    def report(done: int, total: int | None) -> None:
        progress(shard * total + done if total else done, total * shards if total else None)

    return report
