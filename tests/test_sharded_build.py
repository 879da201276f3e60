"""Sharded builds: in this process, and on a real local Ray (actors killed, drivers killed, resumed)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import senseindex
from senseindex.cli import main
from senseindex.indexer.storage.manifest import read_manifest, shard_folder_name, shard_of

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
COMMAND = [sys.executable, "-c", "import sys; from senseindex.cli import main; sys.exit(main())"]
# How long a started command may take to reach the moment a test waits for (a busy machine is slow).
DEADLINE_SECONDS = 600
# Every comparison below is of rows stored (documents, sentences, words, passages), which the backend
# does not change: the fastest one (the default) is used.
SETTINGS = senseindex.EncoderSettings()


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray of two CPUs, shared by the tests of this module that use Ray."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray
    ray.shutdown()


def _sentence_pool() -> list[str]:
    pool = []
    for path in sorted(SAMPLE.iterdir()):
        for paragraph in path.read_text(encoding="utf-8").split("\n\n"):
            pool += [s.strip() + "." for s in paragraph.replace("\n", " ").split(". ") if len(s.split()) > 4]
    return pool


def _write_corpus(path: Path, documents: int, seed: int = 7) -> list[str]:
    """A JSONL corpus of documents of six sentences; their ids."""
    rng = random.Random(seed)
    pool = _sentence_pool()
    texts = {f"d{i:04d}": " ".join(rng.sample(pool, 6)) for i in range(documents)}
    path.write_text("\n".join(json.dumps({"id": k, "text": v}) for k, v in texts.items()) + "\n")
    return list(texts)


def _stored(shard: Path) -> dict[str, tuple[int, int, int]]:
    """doc_id -> (sentences, words, passages) as stored in one shard (read straight from its database)."""
    with contextlib.closing(sqlite3.connect(f"file:{shard / 'index.sqlite'}?mode=ro", uri=True)) as db:
        return {
            doc_id: (sentences, words, passages)
            for doc_id, sentences, words, passages in db.execute(
                "select d.doc_id, (select count(*) from sentences s where s.document = d.id), "
                "(select count(*) from words w where w.document = d.id), "
                "(select count(*) from passages p where p.document = d.id) from documents d"
            )
        }


def _committed(shard: Path) -> int:
    """Documents committed in a shard so far (0 before its database exists)."""
    database = shard / "index.sqlite"
    if not database.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as db:
        return db.execute("select count(*) from documents").fetchone()[0]


def _assert_sharded_like(index: Path, shards: int, expected: dict[str, tuple[int, int, int]]) -> None:
    """Each shard checks out and holds exactly its documents; together they hold ``expected``, once each."""
    manifest = read_manifest(index)
    assert manifest is not None and manifest.status == "complete"
    assert manifest.shards == tuple(shard_folder_name(n) for n in range(shards))
    together: dict[str, tuple[int, int, int]] = {}
    for number, folder in enumerate(manifest.folders(index)):
        report = senseindex.check_index(folder)
        assert report.ok, report.problems
        stored = _stored(folder)
        assert all(shard_of(doc_id, shards) == number for doc_id in stored)
        assert not set(stored) & set(together)  # no document in two shards
        together.update(stored)
    assert together == expected


@pytest.mark.slow
@pytest.mark.parametrize("how", [{"shards": 3}, {"workers": 2}], ids=["in-process-3-shards", "ray-2-workers"])
def test_a_sharded_build_stores_every_document_once_in_its_shard(request, tmp_path, sample_index_dir, how):
    if how.get("workers", 1) > 1:
        request.getfixturevalue("ray_cluster")
    reports: list[senseindex.BuildProgress] = []
    summary = senseindex.build_index(
        [str(SAMPLE)], tmp_path / "sharded.idx", SETTINGS, progress_report=reports.append, **how
    )
    shards = how.get("shards", how.get("workers"))
    expected = _stored(sample_index_dir)
    _assert_sharded_like(tmp_path / "sharded.idx", shards, expected)
    single = senseindex.check_index(sample_index_dir).counts
    assert (summary.documents, summary.sentences, summary.words, summary.passages) == (
        single["documents"],
        single["sentences"],
        single["words"],
        single["passages"],
    )
    # progress came from the workers, across all shards, and ended with every shard done
    assert reports[-1].shards == shards and reports[-1].shards_done == shards
    assert reports[-1].documents == summary.documents and reports[-1].tokens == summary.tokens
    assert all(r.worker_peak_memory > 0 for r in reports)
    if how.get("workers", 1) > 1:
        assert os.getpid() not in {r.worker_pid for r in reports}  # built by the actors, not here


def test_shards_that_no_document_hashes_to_are_valid_empty_indexes(tmp_path):
    corpus = tmp_path / "two.jsonl"
    corpus.write_text('{"id": "a", "text": "A heron stood in the river."}\n{"id": "b", "text": "Bank."}\n')
    summary = senseindex.build_index([str(corpus)], tmp_path / "idx", SETTINGS, shards=5)
    assert summary.documents == 2
    manifest = read_manifest(tmp_path / "idx")
    assert manifest is not None
    empty = [folder for folder in manifest.folders(tmp_path / "idx") if not _stored(folder)]
    assert len(empty) >= 3
    for folder in empty:
        report = senseindex.check_index(folder)
        assert report.ok and report.counts["documents"] == 0


def test_a_sharded_build_of_no_text_is_refused_and_leaves_nothing(tmp_path):
    corpus = tmp_path / "empty.jsonl"
    corpus.write_text('{"id": "a", "text": ""}\n{"id": "b", "text": "  "}\n')
    with pytest.raises(senseindex.SourceError, match="hold no text"):
        senseindex.build_index([str(corpus)], tmp_path / "idx", SETTINGS, shards=2)
    assert not (tmp_path / "idx").exists()


def test_overwrite_replaces_a_sharded_index_and_other_settings_are_refused(tmp_path):
    corpus = tmp_path / "c.jsonl"
    ids = _write_corpus(corpus, 12)
    index = tmp_path / "idx"
    senseindex.build_index([str(corpus)], index, SETTINGS, shards=2)
    with pytest.raises(senseindex.IndexExists, match="already holds a sharded index; use --overwrite"):
        senseindex.build_index([str(corpus)], index, SETTINGS, shards=2)
    _write_corpus(corpus, 5, seed=1)
    senseindex.build_index([str(corpus)], index, SETTINGS, shards=3, overwrite=True)
    stored = {doc for n in range(3) for doc in _stored(index / shard_folder_name(n))}
    assert stored == set(ids[:5])
    assert not (index / shard_folder_name(3)).exists() and read_manifest(index).count == 3
    assert not list(tmp_path.glob(".idx.*"))  # no staging folder left


def _run_cli(arguments: list[str]) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, arguments)
    return result.exit_code, result.output.strip().splitlines()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--workers", "0"], "Invalid value for '--workers'"),
        (["--workers", "2", "--shards", "1"], "one shard is an ordinary index"),
        (["--shards", "2", "-"], "cannot read standard input"),
        (["--workers", "2", "--ray-address", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
    ],
    ids=["bad-workers", "one-shard", "stdin", "unreachable-address"],
)
def test_cli_refuses_bad_distributed_builds_in_one_line(tmp_path, arguments, message):
    code, lines = _run_cli(
        ["build-index", str(SAMPLE), "--index", str(tmp_path / "idx"), "--quiet", *arguments]
    )
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    assert not (tmp_path / "idx").exists()


def test_several_workers_without_ray_name_the_extra(tmp_path):
    code = (
        "import atexit, sys; sys.modules['ray'] = None; "
        "atexit.register(lambda: print('torch loaded' if 'torch' in sys.modules else 'no torch')); "
        "from senseindex.cli import main; "
        f"sys.exit(main(['build-index', {str(SAMPLE)!r}, '--index', {str(tmp_path / 'idx')!r}, "
        "'--workers', '2', '--quiet']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: a build with several workers (--workers) needs the 'ray' extra (ray is not installed): "
        "pip install 'senseindex[ray]'"
    ]
    assert result.stdout.strip() == "no torch"  # refused before the model loads


@pytest.fixture(scope="module")
def killable_corpus(tmp_path_factory) -> tuple[Path, dict[str, tuple[int, int, int]]]:
    """A corpus big enough for a worker to commit well before its shard is done, and what a clean
    two-shard build of it stores (built here, undisturbed): doc_id -> (sentences, words, passages).

    A writer commits at the first document end after 3 s of work since its last commit, its chunks
    paced to about 1 s of work. 240 documents (about 88,000 characters per shard, some 11 s of work
    for one thread) leave a shard most of its work to do after its first commit, on a machine a few
    times faster too; the word tables stay below the 65,536 vectors past which a build trains an
    inverted file.
    """
    folder = tmp_path_factory.mktemp("killable")
    corpus = folder / "corpus.jsonl"
    ids = _write_corpus(corpus, 240)
    senseindex.build_index([str(corpus)], folder / "clean.idx", SETTINGS, shards=2)
    expected = {
        doc: counts
        for n in range(2)
        for doc, counts in _stored(folder / "clean.idx" / shard_folder_name(n)).items()
    }
    assert sorted(expected) == ids
    return corpus, expected


@pytest.mark.slow
def test_a_killed_ray_worker_is_retried_without_losing_or_repeating_a_document(
    tmp_path, ray_cluster, killable_corpus
):
    corpus, expected = killable_corpus
    index = tmp_path / "sharded.idx"
    per_shard = {n: sum(shard_of(doc, 2) == n for doc in expected) for n in range(2)}
    killed: dict[str, int] = {}

    def kill_once_a_shard_has_committed(report: senseindex.BuildProgress) -> None:
        # a shard with a commit behind it and documents still to do: kill its worker
        committed = _committed(index / shard_folder_name(report.shard))
        if not killed and report.shards_done == 0 and 0 < committed < per_shard[report.shard]:
            killed.update(shard=report.shard, pid=report.worker_pid, committed=committed)
            os.kill(report.worker_pid, signal.SIGKILL)

    summary = senseindex.build_index(
        [str(corpus)], index, SETTINGS, workers=2, progress_report=kill_once_a_shard_has_committed
    )
    assert killed, "the build ended before a worker could be killed mid-shard"
    assert killed["pid"] != os.getpid()
    assert summary.resumed  # the killed worker's shard was resumed from its last commit
    assert summary.unchanged == killed["committed"]
    assert summary.documents == len(expected) - killed["committed"]
    _assert_sharded_like(index, 2, expected)


@pytest.mark.slow
def test_a_build_whose_driver_was_killed_resumes_when_run_again(tmp_path, killable_corpus):
    corpus, expected = killable_corpus
    index = tmp_path / "sharded.idx"
    arguments = ["build-index", str(corpus), "--index", str(index), "--workers", "2"]
    # in a session of its own, so that the local Ray it starts is killed with it
    process = subprocess.Popen(
        [*COMMAND, *arguments],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not any(_committed(index / shard_folder_name(n)) for n in range(2)):
        if process.poll() is not None:
            pytest.fail(
                f"the build ended (exit {process.returncode}) before a commit: {process.stderr.read()}"
            )
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("no commit before the deadline")
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    committed = sum(_committed(index / shard_folder_name(n)) for n in range(2))
    assert read_manifest(index).status == "building"
    result = subprocess.run(
        [*COMMAND, *arguments, "--json", "--quiet"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["resumed"] and summary["unchanged"] >= committed > 0
    assert summary["documents"] + summary["unchanged"] == len(expected)
    _assert_sharded_like(index, 2, expected)
