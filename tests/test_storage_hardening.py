"""Stored vectors verified by ``check`` (finite, unit length, checksums, ``--deep``), no stray files after a
command, shard counts kept logarithmic by merges and ``compact``, and readers racing writers."""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

import senseindex
from senseindex.cli import main
from senseindex.indexer.storage.manifest import shard_of

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
TORCH = senseindex.EncoderSettings(backend="torch")


def _database(index: Path) -> sqlite3.Connection:
    return sqlite3.connect(index / "index.sqlite")


def _query(index: Path, sql: str, *parameters) -> list[tuple]:
    connection = _database(index)
    try:
        return connection.execute(sql, parameters).fetchall()
    finally:
        connection.close()


def _change(index: Path, sql: str, *parameters) -> None:
    """Change an index's database behind senseindex's back, as damage would."""
    connection = _database(index)
    try:
        with connection:
            connection.execute(sql, parameters)
    finally:
        connection.close()


def _referenced(index: Path) -> set[str]:
    return {row[0] for row in _query(index, "select file from shards")}


def _vector_files(index: Path) -> set[str]:
    return {p.name for p in index.iterdir() if p.suffix in (".faiss", ".tmp")}


def _sentence_shard(index: Path) -> tuple[Path, int]:
    """The largest sentence shard file of an index, with its first rowid."""
    file, first = _query(
        index, "select file, first_id from shards where table_name = 'sentences' order by count desc"
    )[0]
    return index / file, first


def _problems(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Problem: ")]


@pytest.fixture(scope="module")
def small_index(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hardening") / "idx"
    senseindex.build_index([str(SAMPLE / "zoo_visit.md")], folder, TORCH)
    return folder


@pytest.fixture
def copy(small_index, tmp_path) -> Path:
    folder = tmp_path / "idx"
    shutil.copytree(small_index, folder)
    return folder


def test_a_sound_index_passes_check_with_checksums_recorded(small_index, runner):
    result = runner.invoke(main, ["check", "--index", str(small_index)])
    assert result.exit_code == 0, result.output
    checksums = [row[0] for row in _query(small_index, "select checksum from shards")]
    assert checksums and all(c.startswith("sha256:") for c in checksums)
    for file, recorded in _query(small_index, "select file, checksum from shards"):
        assert recorded == "sha256:" + hashlib.sha256((small_index / file).read_bytes()).hexdigest()


def test_a_nan_vector_written_into_a_shard_is_found_by_check(copy, runner):
    path, first = _sentence_shard(copy)
    vector = faiss.read_index(str(path)).reconstruct(1)
    data = path.read_bytes()
    at = data.find(vector.tobytes())
    assert at > 0
    path.write_bytes(
        data[:at] + np.full(len(vector), np.nan, dtype=np.float32).tobytes() + data[at + 4 * len(vector) :]
    )
    result = runner.invoke(main, ["check", "--index", str(copy)])
    assert result.exit_code == 1, result.output
    problems = _problems(result.output)
    assert any("not finite" in line and f"rowid {first + 1}" in line for line in problems), result.output
    assert any("checksum" in line for line in problems), result.output
    assert len(problems) == len(set(problems)) == 2, result.output  # one line per problem


def test_a_zeroed_vector_is_found_by_check_even_without_a_checksum(copy, runner):
    path, first = _sentence_shard(copy)
    vector = faiss.read_index(str(path)).reconstruct(2)
    data = path.read_bytes()
    at = data.find(vector.tobytes())
    path.write_bytes(data[:at] + bytes(4 * len(vector)) + data[at + 4 * len(vector) :])
    _change(copy, "update shards set checksum = null")
    result = runner.invoke(main, ["check", "--index", str(copy)])
    assert result.exit_code == 1, result.output
    assert [
        line
        for line in _problems(result.output)
        if "length is not 1" in line and f"rowid {first + 2}" in line
    ]


def test_a_valid_shard_of_the_same_size_swapped_in_is_found_by_check(copy, runner):
    path, _ = _sentence_shard(copy)
    original = faiss.read_index(str(path))
    rng = np.random.default_rng(0)
    others = rng.standard_normal((original.ntotal, original.d)).astype(np.float32)
    others /= np.linalg.norm(others, axis=1, keepdims=True)
    replacement = faiss.IndexFlatIP(original.d)
    replacement.add(others)
    size = path.stat().st_size
    faiss.write_index(replacement, str(path))
    assert path.stat().st_size == size  # a sound file of the right size: only the checksum tells
    result = runner.invoke(main, ["check", "--index", str(copy)])
    assert result.exit_code == 1, result.output
    problems = _problems(result.output)
    assert len(problems) == 1 and path.name in problems[0] and "checksum" in problems[0], result.output


def test_a_deleted_model_fingerprint_is_damage_check_reports(copy, runner):
    _change(copy, "delete from settings where key = 'model_fingerprint'")
    result = runner.invoke(main, ["check", "--index", str(copy)])
    assert result.exit_code == 1, result.output
    assert any("model_fingerprint" in line for line in _problems(result.output)), result.output


def test_check_deep_finds_vectors_that_are_not_their_sentences(copy, runner):
    path, _ = _sentence_shard(copy)
    index = faiss.read_index(str(path))
    vectors = index.reconstruct_n(0, index.ntotal)
    swapped = faiss.IndexFlatIP(index.d)
    swapped.add(np.ascontiguousarray(vectors[[1, 0, *range(2, len(vectors))]]))
    faiss.write_index(swapped, str(path))
    # the checksum recorded for the swapped file: as if the vectors were wrong when written
    checksum = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    _change(copy, "update shards set checksum = ? where file = ?", checksum, path.name)
    shallow = runner.invoke(main, ["check", "--index", str(copy)])
    assert shallow.exit_code == 0, shallow.output
    deep = runner.invoke(
        main, ["check", "--index", str(copy), "--deep", "--sample", "50", "--backend", "torch"]
    )
    assert deep.exit_code == 1, deep.output
    assert any("2 of" in line and "sampled sentences" in line for line in _problems(deep.output)), deep.output


def test_check_deep_passes_a_sound_index(small_index, runner):
    result = runner.invoke(main, ["check", "--index", str(small_index), "--deep", "--backend", "torch"])
    assert result.exit_code == 0, result.output


def _swap_first_two_vectors(path: Path, index: Path) -> None:
    """Swap a flat vector file's first two vectors and record the checksum of the result, as if the
    vectors had been wrong when written (``index``: the folder whose database records the file)."""
    stored = faiss.read_index(str(path))
    vectors = stored.reconstruct_n(0, stored.ntotal)
    swapped = faiss.IndexFlatIP(stored.d)
    swapped.add(np.ascontiguousarray(vectors[[1, 0, *range(2, len(vectors))]]))
    faiss.write_index(swapped, str(path))
    checksum = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    _change(index, "update shards set checksum = ? where file = ?", checksum, path.name)


def test_check_deep_re_embeds_every_shard_of_a_sharded_index(tmp_path, runner):
    index = tmp_path / "sharded.idx"
    senseindex.build_index([str(_corpus(tmp_path / "corpus.jsonl", 8))], index, TORCH, shards=2)
    shards = sorted(p for p in index.iterdir() if p.name.startswith("shard-"))
    sentences = [_query(shard, "select count(*) from sentences")[0][0] for shard in shards]
    assert len(shards) == 2 and min(sentences) >= 2, sentences
    deep = ["check", "--index", str(index), "--deep", "--sample", "1000", "--backend", "torch"]
    result = runner.invoke(main, deep)
    assert result.exit_code == 0, result.output
    for shard, count in zip(shards, sentences, strict=True):  # every shard reports, all its sentences
        assert f"Note: {shard.name}: {count} sampled sentences match their stored vectors" in result.output
    path, _ = _sentence_shard(shards[1])
    _swap_first_two_vectors(path, shards[1])
    assert runner.invoke(main, ["check", "--index", str(index)]).exit_code == 0  # whole, checksums right
    result = runner.invoke(main, deep)
    assert result.exit_code == 1, result.output
    assert _problems(result.output) == [
        line
        for line in _problems(result.output)
        if line.startswith(f"Problem: {shards[1].name}: sentences: 2 of")
    ], result.output
    assert len(_problems(result.output)) == 1
    assert f"Note: {shards[0].name}: {sentences[0]} sampled sentences match" in result.output


def test_an_index_of_the_format_before_checksums_is_read_checked_and_upgraded(copy, runner):
    _change(copy, "alter table shards drop column checksum")
    _change(copy, "update settings set value = '3' where key = 'schema_version'")
    result = runner.invoke(main, ["check", "--index", str(copy)])
    assert result.exit_code == 0, result.output
    assert "format 3" in result.output
    with senseindex.open_index(copy, backend="torch") as index:
        assert index.search_sentences("a day at the zoo", k=1)
        index.add_documents([{"id": "extra", "text": "The giraffes were fed at noon."}])
    assert _query(copy, "select value from settings where key = 'schema_version'") == [("4",)]
    assert _query(copy, "select count(*) from shards where checksum is not null")[0][0] >= 1
    assert runner.invoke(main, ["check", "--index", str(copy)]).exit_code == 0


def _corpus(path: Path, documents: int, seed: int = 1, prefix: str = "d") -> Path:
    rng = random.Random(seed)
    pool = [
        s.strip() + "."
        for s in (SAMPLE / "zoo_visit.md").read_text().replace("\n", " ").split(". ")
        if s.strip()
    ]
    with path.open("w", encoding="utf-8") as stream:
        for i in range(documents):
            stream.write(json.dumps({"id": f"{prefix}{i:04d}", "text": " ".join(rng.sample(pool, 3))}) + "\n")
    return path


@pytest.mark.slow
def test_no_unreferenced_files_after_a_build_an_add_and_a_delete(tmp_path, runner):
    index = tmp_path / "idx"
    corpus = _corpus(tmp_path / "corpus.jsonl", 150)
    result = runner.invoke(main, ["build-index", str(corpus), "--index", str(index), "--backend", "torch"])
    assert result.exit_code == 0, result.output
    assert _vector_files(index) == _referenced(index)
    more = _corpus(tmp_path / "more.jsonl", 50, seed=2, prefix="m")
    assert runner.invoke(main, ["add", str(more), "--index", str(index), "--backend", "torch"]).exit_code == 0
    assert _vector_files(index) == _referenced(index)
    assert runner.invoke(main, ["delete", "d0001", "m0003", "--index", str(index)]).exit_code == 0
    assert _vector_files(index) == _referenced(index)
    assert runner.invoke(main, ["compact", "--index", str(index)]).exit_code == 0
    assert _vector_files(index) == _referenced(index)
    assert runner.invoke(main, ["check", "--index", str(index)]).exit_code == 0


@pytest.mark.slow
def test_mixed_small_adds_and_deletes_keep_the_shard_count_logarithmic(tmp_path, runner):
    index_dir = tmp_path / "idx"
    senseindex.build_index([str(SAMPLE / "zoo_visit.md")], index_dir, TORCH)
    rng = random.Random(7)
    live: list[str] = []
    with senseindex.open_index(index_dir, backend="torch") as index:
        for step in range(300):
            if live and step % 3 == 2:
                index.delete_documents([live.pop(rng.randrange(len(live)))])
            else:
                live.append(f"t{step}")
                index.add_documents([{"id": live[-1], "text": f"Note {step}: the keeper fed the seals."}])
        result = index.search_sentences("the keeper fed the seals", k=3)
        assert result
    info = senseindex.index_info(index_dir)
    for table in ("sentences", "words"):
        rows = info["counts"][table]
        assert info["shard_counts"][table] <= math.ceil(math.log2(rows)) + 2, (
            table,
            rows,
            info["shard_counts"],
        )
    assert _vector_files(index_dir) == _referenced(index_dir)
    before = sum(info["shard_counts"].values())
    compacted = runner.invoke(main, ["compact", "--index", str(index_dir)])
    assert compacted.exit_code == 0, compacted.output
    after = senseindex.index_info(index_dir)
    assert sum(after["shard_counts"].values()) <= before
    assert sum(after["deleted_vectors"].values()) == 0  # exact shards hold no deleted vector any more
    check = runner.invoke(main, ["check", "--index", str(index_dir)])
    assert check.exit_code == 0, check.output
    assert "shard" in runner.invoke(main, ["info", "--index", str(index_dir)]).output
    with senseindex.open_index(index_dir, backend="torch") as index:
        hits = index.search_sentences("the keeper fed the seals", k=len(live) + 5)
        found = {hit.doc_id for hit in hits}
        assert set(live) <= found, sorted(set(live) - found)[:5]


# A writer that retires vector files as fast as it can, without the model: each round deletes a
# document of one shard folder (an ordinary index) and compacts it, which rewrites each of its tables'
# files without the deleted vectors under a new name and removes the old file once the commit lands.
CHURN = """
import sys, senseindex
shard_dir, doc_ids = sys.argv[1], sys.argv[2:]
for doc_id in doc_ids:
    senseindex.delete_documents(shard_dir, [doc_id])
    assert senseindex.compact_index(shard_dir), "compact rewrote nothing"
print("done", flush=True)
"""
RACE_SHARDS = 32
CHURN_ROUNDS = 60


@pytest.mark.slow
def test_a_reader_refreshing_while_a_writer_retires_files_never_sees_a_missing_file(tmp_path):
    """A refresh reads which files the latest commit names, then opens them; a commit landing in between
    may remove one. The reader must move on to the newer state, not report the index damaged.

    A sharded index widens that moment for its first shard: a refresh takes every shard's state, then
    opens every shard's new files, first shard first. The writer retires the first shard's files every
    few milliseconds while the reader refreshes as fast as it can; without moving on, a refresh fails
    with '... is missing' or '... cannot be read; rebuild the index'.
    """
    index_dir = tmp_path / "idx"
    first_shard = [f"d{i:05d}" for i in range(5000) if shard_of(f"d{i:05d}", RACE_SHARDS) == 0]
    corpus = tmp_path / "corpus.jsonl"
    rng = random.Random(3)
    text = (SAMPLE / "zoo_visit.md").read_text().replace("\n", " ")
    pool = [s.strip() + "." for s in text.split(". ") if len(s.split()) > 3]
    kept = CHURN_ROUNDS + 10
    corpus.write_text(
        "".join(
            json.dumps({"id": i, "text": " ".join(rng.sample(pool, 1))}) + "\n" for i in first_shard[:kept]
        ),
        encoding="utf-8",
    )
    senseindex.build_index([str(corpus)], index_dir, TORCH, shards=RACE_SHARDS)
    shard_dir = index_dir / "shard-0000"
    assert _query(shard_dir, "select count(*) from documents")[0][0] == kept
    writer = subprocess.Popen(
        [sys.executable, "-c", CHURN, str(shard_dir), *first_shard[:CHURN_ROUNDS]],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    refreshes, states = 0, set()
    try:
        with senseindex.open_index(index_dir, backend="torch") as index:
            while writer.poll() is None:
                index.refresh()  # raises IndexCorrupted if a file it was told about is gone for good
                refreshes += 1
                # info names every file's size (a file retired meanwhile has none); it also makes each
                # refresh find files it has not opened yet, as the writer commits more than once meanwhile
                states.add(index.info()["counts"]["documents"])
            index.refresh()
            assert index.info()["counts"]["documents"] == kept - CHURN_ROUNDS
            assert index.search_sentences("the keeper fed the animals", k=1)
    finally:
        writer.wait(timeout=600)
    assert writer.returncode == 0, writer.stderr.read()
    # the reader kept up with the writer: it saw many of the states the writer went through
    assert len(states) > CHURN_ROUNDS // 8, (len(states), refreshes)


BUILD = """
import sys, senseindex
senseindex.build_index(
    [sys.argv[1]], sys.argv[2], senseindex.EncoderSettings(backend="torch", threads=1),
    progress=lambda done, total: print("progress", flush=True),
)
"""
# After its first progress report, how long a build runs before it is killed, and the commits it
# must have made by then: one every COMMIT_SECONDS (3 s) of work, whatever the chunk size.
KILL_AFTER_SECONDS = 8.0


def _last_document_row(index: Path) -> int:
    if not (index / "index.sqlite").exists():
        return 0
    connection = sqlite3.connect(f"file:{index / 'index.sqlite'}?mode=ro", uri=True, timeout=5)
    try:
        return connection.execute("select coalesce(max(id), 0) from documents").fetchone()[0]
    finally:
        connection.close()


@pytest.mark.slow
def test_a_build_killed_seconds_in_has_committed_every_few_seconds(tmp_path, runner):
    corpus = _corpus(tmp_path / "corpus.jsonl", 2000)  # far more than the seconds watched
    index = tmp_path / "idx"
    process = subprocess.Popen(
        [sys.executable, "-c", BUILD, str(corpus), str(index)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "progress"  # the first chunk is stored
        first_report = time.monotonic()
        commits, seen = 0, _last_document_row(index)
        while time.monotonic() - first_report < KILL_AFTER_SECONDS:  # watching the database
            assert process.poll() is None, "the build ended before it was killed"
            row = _last_document_row(index)
            commits, seen = commits + (row > seen), max(row, seen)
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    assert seen > 0, "nothing was committed"
    assert commits >= 2, f"{commits} commit(s) in {KILL_AFTER_SECONDS} s of work"
    # replaced files went at each commit: what is left unnamed is what the kill interrupted
    stray = _vector_files(index) - _referenced(index)
    assert len(stray) <= 6, sorted(stray)
    result = runner.invoke(main, ["check", "--index", str(index)])
    assert result.exit_code == 0, result.output
