"""Crash safety for real: build-index and add killed with SIGKILL at several moments, then checked and
run again; the result must equal a clean build, with no half document at any point."""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import senseindex
from senseindex.cli import main

# real builds killed and rerun: the slow tier
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
COMMAND = [sys.executable, "-c", "import sys; from senseindex.cli import main; sys.exit(main())"]
# How long a killed command may take to reach the moment it is killed at; generous, as the machine
# may be busy with other work.
DEADLINE_SECONDS = 600
# A writer commits at the first document end after COMMIT_SECONDS (3 s) of work since its last commit,
# with chunks paced to about 1 s of work: the tests wait for one commit (two for the build, in two
# runs), a few seconds of work each. The corpus holds 300 documents (220,926 characters, about 28 s of
# work for one thread of the machine the suite runs on) and the update 120 documents to embed (about
# 11 s): several times the work the waited-for commits take, so a run killed just after one has landed
# has work left, on a machine a few times faster too. Both stay below the EXACT_LIMIT of 65,536 word
# vectors (the add's replaced vectors included), so no build spends minutes training an inverted file
# that none of these tests is about.
CORPUS_DOCUMENTS = 300
UPDATED_DOCUMENTS = 60


def _sentence_pool() -> list[str]:
    pool = []
    for path in sorted(SAMPLE.iterdir()):
        for paragraph in path.read_text(encoding="utf-8").split("\n\n"):
            pool += [s.strip() + "." for s in paragraph.replace("\n", " ").split(". ") if len(s.split()) > 4]
    return pool


def _write_corpus(path: Path, documents: int, seed: int, prefix: str = "d") -> dict[str, str]:
    rng = random.Random(seed)
    pool = _sentence_pool()
    texts = {f"{prefix}{i:04d}": " ".join(rng.sample(pool, 6)) for i in range(documents)}
    path.write_text(
        "\n".join(json.dumps({"id": k, "text": v}) for k, v in texts.items()) + "\n", encoding="utf-8"
    )
    return texts


def _start(arguments: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [*COMMAND, *arguments], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _last_document_row(index: Path) -> int:
    """The highest document row id committed so far (0 before any), read without disturbing the writer.

    Every commit that stores a document raises it: new and replacing versions get fresh row ids.
    """
    database = index / "index.sqlite"
    if not database.exists():  # the writer makes it whole (by a rename), not piece by piece
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as connection:
        return connection.execute("select coalesce(max(id), 0) from documents").fetchone()[0]


def _wait_until(process: subprocess.Popen, condition, what: str) -> None:
    """Poll ``condition`` until it holds; fail the test if the process ends or the deadline passes first."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if process.poll() is not None:
            pytest.fail(
                f"the command ended (exit {process.returncode}) before {what}: {process.stderr.read()}"
            )
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"no sign after {DEADLINE_SECONDS} s that {what}")
        time.sleep(0.05)


def _start_and_kill(arguments: list[str], index: Path, after_a_commit: bool) -> subprocess.Popen:
    """Start a command and SIGKILL it once it holds the index's write lock, and with
    ``after_a_commit`` once it has also committed a document."""
    # no process holds the lock now; its file is made again by the writer that takes it
    (index / "write.lock").unlink(missing_ok=True)
    committed_before = _last_document_row(index)
    process = _start(arguments)
    _wait_until(process, (index / "write.lock").exists, "it took the write lock")
    if after_a_commit:
        _wait_until(process, lambda: _last_document_row(index) > committed_before, "it committed a document")
    process.send_signal(signal.SIGKILL)
    process.wait()
    return process


def _stored(index: Path) -> dict[str, tuple[str, int, int]]:
    """doc_id -> (text, sentences, words) as stored (read straight from the database)."""
    with sqlite3.connect(f"file:{index / 'index.sqlite'}?mode=ro", uri=True) as connection:
        return {
            doc_id: (text, sentences, words)
            for doc_id, text, sentences, words in connection.execute(
                "select d.doc_id, d.text, (select count(*) from sentences s where s.document = d.id), "
                "(select count(*) from words w where w.document = d.id) from documents d"
            )
        }


def _check_passes(runner, index: Path) -> None:
    result = runner.invoke(main, ["check", "--index", str(index)])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crash")
    first = _write_corpus(folder / "corpus.jsonl", CORPUS_DOCUMENTS, seed=1)
    # the update: some documents changed, as many new, the rest as they were
    changed = _write_corpus(folder / "changed.jsonl", UPDATED_DOCUMENTS, seed=2)
    new = _write_corpus(folder / "new.jsonl", UPDATED_DOCUMENTS, seed=3, prefix="n")
    second = {**first, **changed, **new}
    (folder / "update.jsonl").write_text(
        "\n".join(json.dumps({"id": k, "text": v}) for k, v in second.items()) + "\n", encoding="utf-8"
    )
    clean = {}
    for name in ("corpus", "update"):
        index = folder / f"{name}-clean.idx"
        senseindex.build_index(
            [str(folder / f"{name}.jsonl")], index, senseindex.EncoderSettings(backend="torch")
        )
        clean[name] = _stored(index)
    return folder, first, second, clean


def test_a_killed_build_keeps_whole_documents_and_the_same_command_completes_it(tmp_path, runner, corpora):
    folder, first, _, clean = corpora
    index = tmp_path / "idx"
    arguments = [
        "build-index",
        str(folder / "corpus.jsonl"),
        "--index",
        str(index),
        "--backend",
        "torch",
        "-q",
    ]
    seen = []
    # killed after its first commit, then before a rerun commits anything, then after a commit again
    for after_a_commit in (True, False, True):
        process = _start_and_kill(arguments, index, after_a_commit)
        assert process.returncode == -signal.SIGKILL, process.stderr.read()
        _check_passes(runner, index)
        stored = _stored(index)
        # every stored document is whole: the same sentences and words as in a clean build
        assert {k: v for k, v in clean["corpus"].items() if k in stored} == stored
        seen.append(len(stored))
        with senseindex.open_index(index, backend="torch") as opened:  # it opens and answers
            opened.search_sentences("a heron in the reeds", k=3)
    assert 0 < seen[0] <= seen[1] < seen[2] < len(first), seen  # commits are never lost
    result = subprocess.run([*COMMAND, *arguments, "--json"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["resumed"] is True
    assert summary["unchanged"] == seen[-1] and summary["documents"] == len(first) - seen[-1]
    _check_passes(runner, index)
    assert _stored(index) == clean["corpus"]
    assert (
        senseindex.index_info(index)["counts"] == senseindex.index_info(folder / "corpus-clean.idx")["counts"]
    )
    assert senseindex.index_info(index)["settings"]["status"] == "complete"


def test_a_killed_add_leaves_each_document_old_or_new_and_rerunning_completes_it(tmp_path, runner, corpora):
    folder, first, second, clean = corpora
    index = tmp_path / "idx"
    shutil.copytree(folder / "corpus-clean.idx", index)  # the clean build of the first corpus, unopened
    arguments = ["add", str(folder / "update.jsonl"), "--index", str(index), "--backend", "torch", "-q"]
    process = _start_and_kill(arguments, index, after_a_commit=True)
    assert process.returncode == -signal.SIGKILL, process.stderr.read()
    _check_passes(runner, index)
    stored = _stored(index)
    for doc_id, (text, _, _) in stored.items():
        assert text in (first.get(doc_id), second[doc_id])  # never a mixture, never lost
    assert set(first) <= set(stored)  # a replaced document is never missing, not even for a moment
    assert any(text == second[doc_id] != first.get(doc_id) for doc_id, (text, _, _) in stored.items())
    result = subprocess.run([*COMMAND, *arguments, "--json"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    _check_passes(runner, index)
    assert _stored(index) == clean["update"]
    counts = senseindex.index_info(index)["counts"]
    assert counts == senseindex.index_info(folder / "update-clean.idx")["counts"]
    assert not [p for p in index.iterdir() if p.suffix == ".tmp"]


def test_files_left_by_a_killed_writer_are_removed_by_the_next_one(tmp_path, runner):
    index = tmp_path / "idx"
    senseindex.build_index([str(SAMPLE / "zoo_visit.md")], index, senseindex.EncoderSettings(backend="torch"))

    def unreferenced() -> int:
        """The vector files `check` finds no commit refers to (its note is absent when there are none)."""
        notes = [n for n in senseindex.check_index(index).notes if "no commit refers to" in n]
        return int(notes[0].split()[0]) if notes else 0

    # counted, not assumed: how many files the build itself leaves depends on how often it committed
    before = unreferenced()
    (index / "words-00042.faiss").write_bytes(b"half-written")  # as a killed writer leaves it
    (index / "words-00043.faiss.tmp").write_bytes(b"half")
    result = runner.invoke(main, ["check", "--index", str(index)])
    assert result.exit_code == 0
    assert f"{before + 2} vector file(s) no commit refers to" in result.output
    senseindex.add_documents([str(SAMPLE / "town_bank.md")], index, backend="torch")
    assert not (index / "words-00042.faiss").exists() and not (index / "words-00043.faiss.tmp").exists()
    assert unreferenced() == 0
    _check_passes(runner, index)


def test_an_overwrite_killed_between_its_two_renames_is_finished_or_undone(tmp_path):
    """finish() moves the old index aside, then the new one in; a kill in between leaves neither in
    place. The next command that opens the folder puts the complete new index in (or, if the new one
    was not complete, the old one back)."""
    settings = senseindex.EncoderSettings(backend="torch")
    for outcome in ("new", "old"):
        index = tmp_path / outcome / "idx"
        senseindex.build_index([str(SAMPLE / "zoo_visit.md")], index, settings)
        senseindex.build_index([str(SAMPLE / "town_bank.md")], tmp_path / outcome / "other", settings)
        staging = index.with_name(".idx.building")
        (tmp_path / outcome / "other").rename(staging)
        if outcome == "old":  # the new index never finished
            with sqlite3.connect(staging / "index.sqlite") as connection:
                connection.execute("update settings set value = '\"building\"' where key = 'status'")
        index.rename(index.with_name(".idx.replaced"))
        with senseindex.open_index(index, backend="torch") as opened:
            expected = "town_bank.md" if outcome == "new" else "zoo_visit.md"
            assert opened.search_sentences("money", k=1)[0].doc_id == expected
        assert not index.with_name(".idx.replaced").exists()


def test_a_build_killed_while_creating_the_database_starts_again_cleanly(tmp_path):
    index = tmp_path / "idx"
    index.mkdir()
    (index / "index.sqlite.tmp").write_bytes(b"half a database")  # as a kill during create leaves it
    (index / "write.lock").touch()
    summary = senseindex.build_index(
        [str(SAMPLE / "zoo_visit.md")], index, senseindex.EncoderSettings(backend="torch")
    )
    assert summary.documents == 1
    assert sorted(p.name for p in index.iterdir() if p.name.startswith("index")) == ["index.sqlite"]
