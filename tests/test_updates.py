"""Updating an index: add, replace, delete, dry runs, merges and check, against clean builds."""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_found

import senseindex
from senseindex.cli import main
from senseindex.indexer import pipeline_build
from senseindex.indexer.storage import IndexStore, vectors

# most tests build the whole sample corpus, some several times: the slow tier
pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
FLOAT32 = senseindex.EncoderSettings(backend="torch")  # comparable with the float32 sample index
SENTENCE_QUERIES = [
    "a heron fishing in shallow water",
    "the bank raised its interest rates",
    "a day at the zoo",
]
WORD_QUERIES = ["I sat on the [bank] of the river", "The [crane] lifted steel beams", "a [seal] on the rocks"]


def _copy_sample(folder: Path, leave_out: tuple[str, ...] = ()) -> Path:
    folder.mkdir(parents=True)
    for path in SAMPLE.iterdir():
        if path.name not in leave_out:
            shutil.copy(path, folder / path.name)
    return folder


def _same_results(index, expected) -> None:
    """Two indexes answer every test query with the same hits and (float32) scores."""
    assert index.info()["counts"] == expected.info()["counts"]
    for query in SENTENCE_QUERIES:
        hits, oracle = index.search_sentences(query, k=300), expected.search_sentences(query, k=300)
        assert_found(hits, oracle)
        assert [(h.doc_id, h.start) for h in hits] == [(h.doc_id, h.start) for h in oracle]
        assert [h.score for h in hits] == pytest.approx([h.score for h in oracle], abs=1e-4)
    for query in WORD_QUERIES:
        hits, oracle = index.search_word(query, k=50), expected.search_word(query, k=50)
        assert_found(hits, oracle)
        assert [(h.doc_id, h.start) for h in hits] == [(h.doc_id, h.start) for h in oracle]
        assert [h.score for h in hits] == pytest.approx([h.score for h in oracle], abs=1e-4)
        similar, oracle = index.search_similar_words(query, k=20), expected.search_similar_words(query, k=20)
        assert_found(similar, oracle)
        assert [(h.lemma, h.best.doc_id, h.best.start) for h in similar] == [
            (h.lemma, h.best.doc_id, h.best.start) for h in oracle
        ]
    documents = index.search_documents(SENTENCE_QUERIES[0], k=20)
    oracle_documents = expected.search_documents(SENTENCE_QUERIES[0], k=20)
    assert_found(documents, oracle_documents)
    assert [d.doc_id for d in documents] == [d.doc_id for d in oracle_documents]


def _check(path: Path) -> None:
    report = senseindex.check_index(path)
    assert report.ok, report.problems


def test_adding_documents_answers_like_building_them_together(tmp_path, sample_index):
    first = _copy_sample(tmp_path / "first", leave_out=("zoo_visit.md", "town_bank.md", "river_walk.md"))
    rest = tmp_path / "rest"
    rest.mkdir()
    for name in ("zoo_visit.md", "town_bank.md", "river_walk.md"):
        shutil.copy(SAMPLE / name, rest / name)
    senseindex.build_index([str(first)], tmp_path / "idx", FLOAT32)
    added = senseindex.add_documents([str(rest)], tmp_path / "idx", backend="torch")
    assert (added.documents, added.unchanged, added.replaced) == (3, 0, 0)
    _check(tmp_path / "idx")
    with senseindex.open_index(tmp_path / "idx", backend="torch") as index:
        _same_results(index, sample_index)


def test_deep_searches_over_many_shards_answer_like_one_index(tmp_path, sample_index):
    # one document per add: each add's vectors land in shards of their own (merged into a few), and
    # the nearest vectors of a query crowd into the shards of the documents on its topic
    parts = []
    for number, path in enumerate(sorted(SAMPLE.iterdir())):
        part = tmp_path / f"part-{number}"
        part.mkdir()
        shutil.copy(path, part / path.name)
        parts.append(part)
    senseindex.build_index([str(parts[0])], tmp_path / "idx", FLOAT32)
    for part in parts[1:]:
        senseindex.add_documents([str(part)], tmp_path / "idx", backend="torch")
    with senseindex.open_index(tmp_path / "idx", backend="torch") as index:
        files = index.info()["vector_files"]
        assert min(sum(f["table"] == table for f in files) for table in ("sentences", "words")) >= 2
        for query, k in itertools.product(SENTENCE_QUERIES, (5, 40, 60, 120)):
            hits, oracle = index.search_sentences(query, k=k), sample_index.search_sentences(query, k=k)
            assert [(h.doc_id, h.start) for h in hits] == [(h.doc_id, h.start) for h in oracle]
            assert [h.score for h in hits] == pytest.approx([h.score for h in oracle], abs=1e-4)
        for query, k in itertools.product(WORD_QUERIES, (5, 20)):
            similar, oracle = (
                index.search_similar_words(query, k=k),
                sample_index.search_similar_words(query, k=k),
            )
            assert [(h.lemma, h.best.doc_id, h.best.start, h.occurrences) for h in similar] == [
                (h.lemma, h.best.doc_id, h.best.start, h.occurrences) for h in oracle
            ]
            assert [h.score for h in similar] == pytest.approx([h.score for h in oracle], abs=1e-4)


@pytest.mark.parametrize("commits", ["one", "after every document"])
def test_adding_unchanged_documents_changes_nothing(tmp_path, runner, monkeypatch, commits):
    """A finished build leaves its index settled, however many commits it made: each commit rewrites
    the growing shards to new files, and the copies they replace are gone once the build finishes,
    not left for the next writer (even one that stores nothing) to delete."""
    if commits != "one":
        monkeypatch.setattr(pipeline_build, "COMMIT_SECONDS", 0.0)
    senseindex.build_index([str(SAMPLE)], tmp_path / "idx", FLOAT32)
    referenced = {f["file"] for f in senseindex.index_info(tmp_path / "idx")["vector_files"]}
    files_before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "idx").glob("*.faiss")}
    assert set(files_before) == referenced
    if commits != "one":  # the build really committed several times: later files, higher numbers
        assert all(vectors.shard_number(name) > 1 for name in referenced)
    result = runner.invoke(main, ["add", str(SAMPLE), "--index", str(tmp_path / "idx"), "-q", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["documents"], summary["unchanged"], summary["tokens"]) == (0, 13, 0)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "idx").glob("*.faiss")} == files_before


def test_a_changed_document_replaces_its_old_version(tmp_path, runner):
    corpus = _copy_sample(tmp_path / "corpus")
    senseindex.build_index([str(corpus)], tmp_path / "idx", FLOAT32)
    old_sentence = "The zoo opened its new penguin pool on Saturday morning."
    zoo = corpus / "zoo_visit.md"
    zoo.write_text(
        "A fire engine raced down the high street with its siren wailing.\n\n"
        "The firefighters unrolled the hose and sprayed water on the burning shed.\n",
        encoding="utf-8",
    )
    plan = runner.invoke(main, ["add", str(corpus), "--index", str(tmp_path / "idx"), "--dry-run", "--json"])
    assert json.loads(plan.output) == {
        "new": [],
        "changed": ["zoo_visit.md"],
        "unchanged": sorted(p.name for p in corpus.iterdir() if p.name != "zoo_visit.md"),
        "skipped_files": [],
        "warnings": [],
    }
    result = runner.invoke(
        main, ["add", str(corpus), "--index", str(tmp_path / "idx"), "--backend", "torch", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "Replaced 1 changed documents" in result.output
    assert "Left 12 unchanged documents" in result.output
    _check(tmp_path / "idx")
    senseindex.build_index([str(corpus)], tmp_path / "clean", FLOAT32)
    with (
        senseindex.open_index(tmp_path / "idx", backend="torch") as index,
        senseindex.open_index(tmp_path / "clean", backend="torch") as clean,
    ):
        _same_results(index, clean)
        assert all(h.doc_id != "zoo_visit.md" for h in index.search_word("the [penguin] pool", k=100))
        top = index.search_sentences("a fire engine with a wailing siren", k=1)[0]
        assert (top.doc_id, top.start) == ("zoo_visit.md", 0)
        assert old_sentence not in [h.text for h in index.search_sentences(old_sentence, k=300)]


def test_a_dry_run_writes_nothing(tmp_path, runner):
    corpus = _copy_sample(tmp_path / "corpus", leave_out=("baseball.md",))
    senseindex.build_index([str(corpus)], tmp_path / "idx", FLOAT32)
    shutil.copy(SAMPLE / "baseball.md", corpus / "baseball.md")
    before = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in (tmp_path / "idx").iterdir())
    result = runner.invoke(main, ["add", str(corpus), "--index", str(tmp_path / "idx"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == ["1 new: baseball.md", "0 changed"]
    after = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in (tmp_path / "idx").iterdir())
    assert after == before


def test_deleting_documents_answers_like_never_having_added_them(tmp_path, runner):
    senseindex.build_index([str(SAMPLE)], tmp_path / "idx", FLOAT32)
    result = runner.invoke(
        main, ["delete", "zoo_visit.md", "town_bank.md", "--index", str(tmp_path / "idx"), "--json"]
    )
    assert result.exit_code == 0, result.output
    deleted = json.loads(result.output)
    assert deleted["documents"] == ["zoo_visit.md", "town_bank.md"]
    info = senseindex.index_info(tmp_path / "idx")
    assert info["deleted_vectors"]["words"] == deleted["rows"]["words"] > 0
    _check(tmp_path / "idx")
    corpus = _copy_sample(tmp_path / "corpus", leave_out=("zoo_visit.md", "town_bank.md"))
    senseindex.build_index([str(corpus)], tmp_path / "clean", FLOAT32)
    with (
        senseindex.open_index(tmp_path / "idx", backend="torch") as index,
        senseindex.open_index(tmp_path / "clean", backend="torch") as clean,
    ):
        _same_results(index, clean)


def test_deleting_an_unknown_document_is_a_one_line_error_and_deletes_nothing(tmp_path, runner):
    senseindex.build_index([str(SAMPLE)], tmp_path / "idx", FLOAT32)
    result = runner.invoke(main, ["delete", "zoo_visit.md", "nope.md", "--index", str(tmp_path / "idx")])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: no document 'nope.md' in {tmp_path / 'idx'}; nothing was deleted "
        "(--missing-ok passes over ids that are not there)\n"
    )
    assert senseindex.index_info(tmp_path / "idx")["counts"]["documents"] == 13


def test_many_small_adds_end_in_compressed_shards_trained_on_their_own_vectors(tmp_path, monkeypatch):
    """auto with a threshold of 1,500 vectors: tables pass it after a few adds; their exact shards are
    then merged into compressed shards trained on them (lists of 8-bit codes for words), and searches stay
    close to exact."""
    monkeypatch.setattr(vectors, "EXACT_LIMIT", 1_500)
    monkeypatch.setattr(vectors, "TRAINING_VECTORS", 1_500)
    monkeypatch.setattr("senseindex.indexer.storage.EXACT_LIMIT", 1_500)
    names = sorted(p.name for p in SAMPLE.iterdir())
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(SAMPLE / names[0], corpus / names[0])
    senseindex.build_index([str(corpus)], tmp_path / "idx", FLOAT32)
    merges = []
    for name in names[1:]:
        shutil.copy(SAMPLE / name, corpus / name)
        summary = senseindex.add_documents([str(corpus)], tmp_path / "idx", backend="torch")
        assert (summary.documents, summary.unchanged) == (1, names.index(name))
        merges += summary.merges
    assert any(m.startswith("words: ") and ",SQ8 trained on them" in m for m in merges), merges
    info = senseindex.index_info(tmp_path / "idx")
    word_types = {f["index_type"] for f in info["vector_files"] if f["table"] == "words"}
    assert any(t.startswith("IVF") and ",SQ8 nprobe=" in t for t in word_types), word_types
    _check(tmp_path / "idx")
    senseindex.build_index([str(SAMPLE)], tmp_path / "flat", FLOAT32, index_type="flat")
    with (
        senseindex.open_index(tmp_path / "idx", backend="torch") as index,
        senseindex.open_index(tmp_path / "flat", backend="torch") as exact,
    ):
        assert index.info()["counts"] == exact.info()["counts"]
        for query in WORD_QUERIES:
            hits = {(h.doc_id, h.start) for h in index.search_word(query, k=10)}
            assert len(hits & {(h.doc_id, h.start) for h in exact.search_word(query, k=10)}) >= 9


def test_check_reports_every_kind_of_damage(tmp_path, runner):
    senseindex.build_index([str(SAMPLE)], tmp_path / "idx", FLOAT32)
    result = runner.invoke(main, ["check", "--index", str(tmp_path / "idx")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"OK: {tmp_path / 'idx'} (13 documents, ")

    # the shard files' numbers depend on how many commits the build made
    shard_file = {f["table"]: f["file"] for f in senseindex.index_info(tmp_path / "idx")["vector_files"]}

    damaged = tmp_path / "truncated"
    shutil.copytree(tmp_path / "idx", damaged)
    words = damaged / shard_file["words"]
    words.write_bytes(words.read_bytes()[:5000])
    result = runner.invoke(main, ["check", "--index", str(damaged)])
    assert result.exit_code == 1
    assert "Problem: words:" in result.output and shard_file["words"] in result.output

    damaged = tmp_path / "missing"
    shutil.copytree(tmp_path / "idx", damaged)
    (damaged / shard_file["sentences"]).unlink()
    result = runner.invoke(main, ["check", "--index", str(damaged), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False and f"{shard_file['sentences']} is missing" in report["problems"][0]

    damaged = tmp_path / "rows"
    shutil.copytree(tmp_path / "idx", damaged)
    with sqlite3.connect(damaged / "index.sqlite") as connection:
        connection.execute("update words set start = start + 1 where id = 7")
        connection.execute("delete from sentences where id = 3")
    result = runner.invoke(main, ["check", "--index", str(damaged)])
    assert result.exit_code == 1
    assert "stored spans do not slice their document" in result.output
    assert "sentences" in result.output and "words belong to no stored document or sentence" in result.output

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "index.sqlite").write_bytes(b"not a database at all" * 100)
    result = runner.invoke(main, ["check", "--index", str(garbage)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and len(result.output.splitlines()) == 1


def test_a_second_writer_is_refused_while_readers_go_on(tmp_path, runner):
    senseindex.build_index([str(SAMPLE)], tmp_path / "idx", FLOAT32)
    writer = IndexStore.open_for_writing(tmp_path / "idx")
    try:
        result = runner.invoke(main, ["add", str(SAMPLE), "--index", str(tmp_path / "idx"), "-q"])
        assert result.exit_code == 1
        assert result.output.startswith("Error: another process is writing to the index in ")
        with senseindex.open_index(tmp_path / "idx", backend="torch") as index:
            assert index.search_sentences("a day at the zoo", k=1)
    finally:
        writer.close()
    result = runner.invoke(main, ["add", str(SAMPLE), "--index", str(tmp_path / "idx"), "-q"])
    assert result.exit_code == 0, result.output


def test_an_index_of_a_newer_format_is_refused_by_every_command(tmp_path, runner):
    senseindex.build_index([str(SAMPLE / "zoo_visit.md")], tmp_path / "idx", FLOAT32)
    with sqlite3.connect(tmp_path / "idx" / "index.sqlite") as connection:
        connection.execute("update settings set value = '99' where key = 'schema_version'")
    for command in (
        ["add", str(SAMPLE), "-q"],
        ["delete", "zoo_visit.md"],
        ["check"],
        ["query", "zoo"],
        ["info"],
    ):
        result = runner.invoke(main, [*command, "--index", str(tmp_path / "idx")])
        assert result.exit_code == 1, (command, result.output)
        assert "upgrade senseindex" in result.output and len(result.output.splitlines()) == 1


def test_adding_with_another_model_is_refused(tmp_path, runner, altered_model):
    senseindex.build_index([str(SAMPLE / "zoo_visit.md")], tmp_path / "idx", FLOAT32)
    result = runner.invoke(
        main, ["add", str(SAMPLE), "--index", str(tmp_path / "idx"), "--model", str(altered_model), "-q"]
    )
    assert result.exit_code == 1
    assert "has different weights" in result.output
    assert senseindex.index_info(tmp_path / "idx")["counts"]["documents"] == 1


def test_a_very_long_single_line_file_is_indexed_in_bounded_pieces(tmp_path):
    """5 MB on one line, of words too long for WordPiece (one [UNK] token each): the sentence
    splitter cuts it into pieces of at most 5,000 characters, so no chunk of the build is huge.

    1,008 pieces show the cutting as well as more would; 41,322 words keep the build below the
    exact-vector limit (past it the build would spend most of its time training an inverted file)."""
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, 20)) * 6 for _ in range(300)]
    line = " ".join(words[i % 300] for i in range(5_000_000 // 121))
    (tmp_path / "long.txt").write_text(line, encoding="utf-8")
    summary = senseindex.build_index([str(tmp_path / "long.txt")], tmp_path / "idx", FLOAT32, passages="none")
    assert summary.documents == 1
    assert summary.sentences == pytest.approx(len(line) / 5_000, rel=0.01)
    assert summary.words == len(line.split())
    _check(tmp_path / "idx")
