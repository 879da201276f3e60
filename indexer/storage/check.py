"""Verification of a whole index (behind ``check``).

Checks the database's integrity, every vector file against its record, every row against its vector and its
document's text.
"""

from __future__ import annotations

import sqlite3

from senseindex.errors import IndexCorrupted
from senseindex.indexer.storage.folder import vector_files_on_disk
from senseindex.indexer.storage.reader import IndexReader
from senseindex.indexer.storage.schema import VECTOR_TABLES
from senseindex.indexer.storage.verify import check_checksums, check_vector_values, missing_settings


def check_store(store: IndexReader) -> tuple[list[str], list[str]]:
    """Verify an opened index.

    Checks the settings queries need, the database's integrity, every vector file against its record and
    its recorded checksum, every stored vector (finite, of unit length), every row against its vector and
    its document's text, and that no document is half-stored.

    Args:
        store: the index, at the snapshot to check.

    Returns:
        ``(problems, notes)``: one line per problem found (none for a sound index), and notes
        that are not problems (an unfinished build, files left by an interrupted writer).
    """
    problems: list[str] = []
    notes: list[str] = []
    problems += missing_settings(store)
    try:
        result = store.db.execute("pragma quick_check").fetchone()[0]
        if result != "ok":
            return [*problems, f"index.sqlite fails SQLite's integrity check: {result}"], notes
        checksum_problems, checksum_notes = check_checksums(store)
        notes += checksum_notes
        try:
            problems += _check_vectors(store)
            problems += checksum_problems
            problems += check_vector_values(store)
        except IndexCorrupted as error:  # the settings the shards need are damaged: said above
            if not problems:
                problems.append(str(error))
        problems += _check_rows(store)
    except sqlite3.DatabaseError as error:
        problems.append(f"index.sqlite cannot be read: {error}")
    if not store.complete:
        notes.append("the build did not finish; run the same build-index again to complete it")
    leftovers = sorted(set(vector_files_on_disk(store.folder)) - store.referenced_files())
    if leftovers:
        notes.append(
            f"{len(leftovers)} vector file(s) no commit refers to (left by an interrupted or "
            f"merging writer; the next add removes them): {', '.join(leftovers[:5])}"
        )
    return problems, notes


def _check_vectors(store: IndexReader) -> list[str]:
    problems = []
    for table in VECTOR_TABLES:
        shard_set = store.shard_set(table)
        end = covered = 0
        for shard in shard_set.shards:
            if shard.first_id < end:
                problems.append(f"{table}: {shard.file} overlaps the shard before it")
            end = shard.first_id + shard.count
            rows = store.db.execute(
                f"select count(*) from {table} where id >= ? and id < ?", [shard.first_id, end]
            ).fetchone()[0]
            covered += rows
            try:
                shard_set.shard_index(shard)
            except IndexCorrupted as error:
                problems.append(f"{table}: {error}")
                continue
            gone = shard.count - shard_set.live_count(shard)
            if rows + gone != shard.count:
                problems.append(
                    f"{table}: {shard.file} holds {shard.count:,} vectors but {rows:,} rows and "
                    f"{gone:,} deleted ids fall in its range"
                )
        total = store.db.execute(f"select count(*) from {table}").fetchone()[0]
        if covered != total:
            problems.append(f"{table}: {total - covered:,} rows have no vector in any shard")
        revived = store.db.execute(
            f"select count(*) from {table} t join deleted d on d.table_name = ? "
            "and t.id between d.first_id and d.last_id",
            [table],
        ).fetchone()[0]
        if revived:
            problems.append(f"{table}: {revived:,} rows have ids recorded as deleted")
    return problems


def _check_rows(store: IndexReader) -> list[str]:
    problems = []
    for sql, what in (
        ("select count(*) from sentences where document not in (select id from documents)", "sentences"),
        ("select count(*) from words where sentence not in (select id from sentences)", "words"),
        ("select count(*) from words where document not in (select id from documents)", "words"),
        ("select count(*) from passages where document not in (select id from documents)", "passages"),
    ):
        orphans = store.db.execute(sql).fetchone()[0]
        if orphans:
            problems.append(f"{orphans:,} {what} belong to no stored document or sentence")
    empty = store.db.execute(
        "select count(*) from documents where id not in (select document from sentences)"
    ).fetchone()[0]
    if empty:
        problems.append(f"{empty:,} documents have no sentences (stored by halves)")
    if store.settings.get("passages", "none") != "none":
        bare = store.db.execute(
            "select count(*) from documents where id not in (select document from passages)"
        ).fetchone()[0]
        if bare:
            problems.append(f"{bare:,} documents have no passages (stored by halves)")
    problems += _check_spans(store)
    return problems


def _check_spans(store: IndexReader) -> list[str]:
    """Every sentence and word must slice its document's text to the text it stores."""
    bad_spans = 0
    examples: list[str] = []
    for document, text in store.db.execute("select id, text from documents"):
        for kind, sql in (
            ("sentence", "select id, start, end, text from sentences where document = ?"),
            ("word", "select id, start, end, form from words where document = ?"),
        ):
            for row_id, start, end, stored in store.db.execute(sql, [document]):
                if text[start:end] != stored:
                    bad_spans += 1
                    if len(examples) < 3:
                        examples.append(f"{kind} {row_id}: {stored[:30]!r} at {start}-{end}")
    if not bad_spans:
        return []
    return [f"{bad_spans:,} stored spans do not slice their document to their text ({'; '.join(examples)})"]
