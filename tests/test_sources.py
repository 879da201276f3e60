"""Sources: JSONL with metadata, standard input, folders, malformed input."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

import senseindex
from senseindex.cli import main


def test_jsonl_keeps_ids_and_metadata(tmp_path):
    source = tmp_path / "notes.jsonl"
    rows = [
        {"id": "n1", "text": "The seal slept on the warm rock.", "author": "ana"},
        {"id": 2, "text": "Press the wax seal onto the envelope.", "tags": ["post"]},
        {"text": "A third note without an id."},
    ]
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    senseindex.build_index([str(source)], tmp_path / "idx")
    with senseindex.open_index(tmp_path / "idx") as index:
        hits = index.search_word("A [seal] basked on the beach.", k=2)
        assert [h.doc_id for h in hits] == ["n1", "2"]
        assert hits[0].metadata == {"author": "ana"}
        assert hits[1].metadata == {"tags": ["post"]}
        third = index.search_sentences("a note with no identifier", k=1)[0]
        assert third.doc_id == "notes.jsonl:3"


def test_stdin_is_one_document(tmp_path):
    result = CliRunner().invoke(
        main,
        ["build-index", "-", "--index", str(tmp_path / "idx"), "-q", "--json"],
        input="The pitcher threw a curveball.\n\nShe filled the pitcher with water.",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["documents"], summary["sentences"], summary["words"]) == (1, 2, 11)
    with senseindex.open_index(tmp_path / "idx") as index:
        assert {h.doc_id for h in index.search_sentences("baseball", k=2)} == {"stdin"}


def test_folders_are_walked_and_other_files_counted(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.md").write_text("# Bats\n\nA bat hung from the barn roof.", encoding="utf-8")
    (tmp_path / "docs" / "sub" / "b.txt").write_text("He swung the bat and missed.", encoding="utf-8")
    (tmp_path / "docs" / "image.png").write_bytes(b"\x89PNG\x00\x00")
    (tmp_path / "docs" / ".hidden.txt").write_text("secret", encoding="utf-8")
    summary = senseindex.build_index([str(tmp_path / "docs")], tmp_path / "idx")
    assert summary.documents == 2
    assert len(summary.skipped_files) == 1
    with senseindex.open_index(tmp_path / "idx") as index:
        assert {h.doc_id for h in index.search_word("the [bat] flew", k=5)} == {"a.md", "sub/b.txt"}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", b'{"text": "fine"}\n{not json}\n', "bad.jsonl:2: not valid JSON"),
        ("notext.jsonl", b'{"title": "no text field"}\n', "notext.jsonl:1: each line must be a JSON object"),
        ("dupes.jsonl", b'{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n', "document id '1' occurs twice"),
        ("binary.txt", b"\x00\x01\x02binary", "binary file"),
    ],
)
def test_malformed_sources_are_one_line_errors(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    result = CliRunner().invoke(
        main, ["build-index", str(tmp_path / name), "--index", str(tmp_path / "idx"), "-q"]
    )
    assert result.exit_code == 1
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not (tmp_path / "idx").exists()  # found before anything was written


def test_bytes_that_are_not_utf8_are_replaced_with_a_warning(tmp_path, runner):
    (tmp_path / "latin1.txt").write_bytes("The caf\u00e9 sold cr\u00e8me cakes.".encode("latin-1"))
    result = runner.invoke(
        main, ["build-index", str(tmp_path / "latin1.txt"), "--index", str(tmp_path / "i"), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "latin1.txt is not valid UTF-8 (first bad byte at 7); bad bytes were replaced" in result.output
    with senseindex.open_index(tmp_path / "i") as index:
        hit = index.search_sentences("cakes", k=1)[0]
    assert hit.text == "The caf\ufffd sold cr\ufffdme cakes."


@pytest.mark.parametrize(
    ("name", "content", "kept"),
    [
        ("bad.jsonl", b'{"id": "a", "text": "Fine."}\n{not json}\n{"id": "b", "text": "Also fine."}\n', 2),
        ("dupes.jsonl", b'{"id": 1, "text": "First."}\n{"id": 1, "text": "Second."}\n', 1),
    ],
)
def test_skip_bad_goes_on_past_bad_lines_with_a_warning(tmp_path, runner, name, content, kept):
    (tmp_path / name).write_bytes(content)
    (tmp_path / "blob.txt").write_bytes(b"\x00\x01 binary")
    arguments = [str(tmp_path / name), str(tmp_path / "blob.txt"), "--index", str(tmp_path / "i"), "-q"]
    result = runner.invoke(main, ["build-index", *arguments, "--skip-bad", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["documents"] == kept
    assert len(summary["warnings"]) == 2
    assert any("blob.txt: a binary file" in w for w in summary["warnings"])


# JSON that the decoder parses but Python refuses to hold: an integer past the int-from-string digit
# limit (4,300 digits by default) and arrays nested deeper than the recursion limit.
_UNREADABLE_LINES = [
    pytest.param(
        b'{"text": "Huge.", "n": ' + b"7" * 5000 + b"}\n", "unreadable JSON (Exceeds", id="huge-int"
    ),
    pytest.param(
        b'{"text": "Deep.", "n": ' + b"[" * 100_000 + b"\n", "unreadable JSON (nested too deeply)", id="deep"
    ),
]


@pytest.mark.parametrize(("bad_line", "reason"), _UNREADABLE_LINES)
def test_json_python_cannot_hold_is_a_one_line_cli_error(tmp_path, bad_line, reason):
    source = tmp_path / "odd.jsonl"
    source.write_bytes(b'{"id": "a", "text": "Fine."}\n' + bad_line)
    result = CliRunner().invoke(main, ["build-index", str(source), "--index", str(tmp_path / "idx"), "-q"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # the CLI's own exit, not an uncaught error
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: ")
    assert f"{source}:2: {reason}" in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize(("bad_line", "reason"), _UNREADABLE_LINES)
def test_json_python_cannot_hold_is_a_source_error_or_skipped(tmp_path, bad_line, reason):
    source = tmp_path / "odd.jsonl"
    source.write_bytes(b'{"id": "a", "text": "Fine."}\n' + bad_line + b'{"id": "b", "text": "Also fine."}\n')
    with pytest.raises(senseindex.SourceError, match=re.escape(f"odd.jsonl:2: {reason}")):
        senseindex.build_index([str(source)], tmp_path / "refused")
    summary = senseindex.build_index([str(source)], tmp_path / "skipped", skip_bad=True)
    assert summary.documents == 2
    assert len(summary.warnings) == 1
    assert summary.warnings[0].startswith(f"skipped {source}:2: {reason}")
