"""Input checked at the door, and reads that never fail on what was stored before the checks.

Metadata that would not read back as given (NaN, infinities, deep nesting, huge objects, keys that
are not strings), text and ids that are not valid Unicode, ids and filters beyond the documented
limits: each is a one-line error through the command line, the Python API and HTTP, and nothing is
stored. Metadata stored by earlier versions without these rules is written straight into a copy
of an index's database, as such an index would hold it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

import senseindex
from senseindex.cli import main
from senseindex.errors import IndexCorrupted, QueryError, SourceError
from senseindex.indexer.validation import (
    MAX_DOCUMENT_ID_CHARACTERS,
    MAX_FILTER_FIELDS,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
)

LONE_SURROGATE = "\ud800"


def _nested(depth: int) -> object:
    """A list nested ``depth`` levels deep (built without recursion)."""
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.fixture(scope="module")
def small_index(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("validation")
    source = folder / "notes.jsonl"
    lines = [
        {"id": "heron", "text": "A heron stood fishing in the shallow water.", "lang": "en"},
        {"id": "crane", "text": "The tower crane lifted a steel beam.", "lang": "en", "langue_é": "fr"},
    ]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    index = folder / "small.idx"
    senseindex.build_index([str(source)], index, senseindex.EncoderSettings(backend="torch"))
    return index


@pytest.fixture
def index_copy(small_index, tmp_path) -> Path:
    target = tmp_path / "copy.idx"
    shutil.copytree(small_index, target)
    return target


def _one_line_error(result, fragment: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and fragment in lines[0], result.output
    return lines[0]


def _document_count(index: Path) -> int:
    with sqlite3.connect(index / "index.sqlite") as connection:
        count = connection.execute("select count(*) from documents").fetchone()[0]
    connection.close()
    return count


# ------------------------------------------------------------------------ metadata at the door

# (JSONL text of the metadata value, words the refusal says)
_BAD_JSONL_VALUES = [
    pytest.param("NaN", "only finite numbers", id="nan"),
    pytest.param("Infinity", "only finite numbers", id="infinity"),
    pytest.param("-Infinity", "only finite numbers", id="minus-infinity"),
    pytest.param("1e400", "only finite numbers", id="1e400"),
    pytest.param("[" * 40 + "]" * 40, f"nested more than {MAX_METADATA_DEPTH} levels", id="depth-40"),
    # deep enough that Python's JSON reader may give up first ("nested too deeply"): refused either way
    pytest.param("[" * 900 + "]" * 900, "nested", id="depth-900"),
    pytest.param(json.dumps("x" * (MAX_METADATA_BYTES + 10)), "bytes as JSON", id="too-big"),
    pytest.param('"\\ud800"', "not valid Unicode", id="lone-surrogate"),
    pytest.param(str(2**64), "beyond 64 bits", id="huge-integer"),
]


@pytest.mark.parametrize(("value", "reason"), _BAD_JSONL_VALUES)
def test_jsonl_metadata_that_would_not_read_back_is_a_one_line_error(tmp_path, value, reason):
    source = tmp_path / "bad.jsonl"
    source.write_text(
        '{"id": "fine", "text": "A fine line."}\n'
        + '{"id": "bad", "text": "Bad.", "field": '
        + value
        + "}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["build-index", str(source), "--index", str(tmp_path / "idx"), "-q"])
    line = _one_line_error(result, reason)
    assert "bad.jsonl:2" in line and "--skip-bad" in line
    assert not (tmp_path / "idx").exists()  # refused before anything was written


def test_skip_bad_skips_metadata_that_would_not_read_back(tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text(
        '{"id": "fine", "text": "A heron in the reeds."}\n{"id": "bad", "text": "Bad.", "n": NaN}\n',
        encoding="utf-8",
    )
    summary = senseindex.build_index(
        [str(source)], tmp_path / "idx", senseindex.EncoderSettings(backend="torch"), skip_bad=True
    )
    assert summary.documents == 1
    assert len(summary.warnings) == 1 and "only finite numbers" in summary.warnings[0]


_BAD_API_METADATA = [
    pytest.param({"score": float("nan")}, "only finite numbers", id="nan"),
    pytest.param({"score": float("inf")}, "only finite numbers", id="infinity"),
    pytest.param({"deep": _nested(MAX_METADATA_DEPTH)}, "nested more than", id="too-deep"),
    pytest.param({"deep": _nested(5000)}, "nested more than", id="far-too-deep"),
    pytest.param({"text": "x" * MAX_METADATA_BYTES}, "bytes as JSON", id="too-big"),
    pytest.param({1: "one"}, "field names must be strings", id="integer-key"),
    pytest.param({"tags": ("a", "b")}, "not JSON: a tuple", id="tuple"),
    pytest.param({"when": {1, 2}}, "not JSON: a set", id="set"),
    pytest.param({"name": LONE_SURROGATE}, "not valid Unicode", id="surrogate-value"),
    pytest.param({LONE_SURROGATE: 1}, "not valid Unicode", id="surrogate-key"),
    pytest.param({"n": -(2**63) - 1}, "beyond 64 bits", id="huge-integer"),
]


@pytest.mark.parametrize(("metadata", "reason"), _BAD_API_METADATA)
def test_api_metadata_that_would_not_read_back_is_refused_and_nothing_is_stored(index_copy, metadata, reason):
    before = _document_count(index_copy)
    with senseindex.open_index(index_copy, backend="torch") as index:
        good = {"id": "good", "text": "A good document."}
        with pytest.raises(SourceError, match=reason) as caught:
            index.add_documents([good, {"id": "bad", "text": "Bad.", "metadata": metadata}])
        assert len(str(caught.value).splitlines()) == 1
        assert "document 1 ('bad')" in str(caught.value)
    assert _document_count(index_copy) == before


def test_metadata_at_the_limits_is_stored_and_reads_back_as_given(index_copy):
    deepest = {"deep": _nested(MAX_METADATA_DEPTH - 1), "n": 2**63 - 1, "x": 1.5e300, "é": "ü"}
    with senseindex.open_index(index_copy, backend="torch") as index:
        index.add_documents([{"id": "edge", "text": "An egret waded in the pond.", "metadata": deepest}])
        hit = index.search_sentences("an egret wading", k=1, doc_ids=["edge"])[0]
    assert hit.metadata == deepest


# ------------------------------------------------------------------------ Unicode and id limits


def test_text_and_ids_must_be_valid_unicode_through_the_api(index_copy):
    before = _document_count(index_copy)
    with senseindex.open_index(index_copy, backend="torch") as index:
        for document in (
            {"id": "a", "text": "Broken " + LONE_SURROGATE + " text."},
            {"id": "b" + LONE_SURROGATE, "text": "Fine text."},
            {"id": "c" * (MAX_DOCUMENT_ID_CHARACTERS + 1), "text": "Fine text."},
        ):
            with pytest.raises(SourceError) as caught:
                index.add_documents([document])
            message = str(caught.value)
            assert len(message.splitlines()) == 1
            assert "not valid Unicode" in message or f"at most {MAX_DOCUMENT_ID_CHARACTERS:,}" in message
            assert "damaged" not in message
    assert _document_count(index_copy) == before


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param(
            '{"id": "a", "text": "Bad \\ud800 text."}', "the 'text' is not valid Unicode", id="text"
        ),
        pytest.param('{"id": "b\\udcff", "text": "Fine."}', "is not valid Unicode", id="id"),
        pytest.param(json.dumps({"id": "i" * 1025, "text": "Fine."}), "1,025 characters", id="long-id"),
        pytest.param('{"id": ["a"], "text": "Fine."}', "must be a string or an integer", id="list-id"),
    ],
)
def test_jsonl_text_and_ids_must_be_valid_unicode_and_within_limits(tmp_path, line, reason):
    source = tmp_path / "bad.jsonl"
    source.write_text(line + "\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["build-index", str(source), "--index", str(tmp_path / "idx"), "-q"])
    _one_line_error(result, reason)
    assert not (tmp_path / "idx").exists()


def test_a_file_name_that_is_not_utf8_is_a_one_line_error(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "fine.txt").write_text("A heron in the reeds.", encoding="utf-8")
    try:
        (folder / "bad\udcffname.txt").write_text("Some text.", encoding="utf-8")  # the byte 0xff on disk
    except (UnicodeEncodeError, OSError):
        pytest.skip("this file system takes only UTF-8 names")
    result = CliRunner().invoke(main, ["build-index", str(folder), "--index", str(tmp_path / "idx"), "-q"])
    _one_line_error(result, "not valid Unicode")
    assert not (tmp_path / "idx").exists()


def test_queries_must_be_valid_unicode(small_index, runner):
    with senseindex.open_index(small_index, backend="torch") as index:
        for call in (
            lambda: index.search_sentences("a heron " + LONE_SURROGATE),
            lambda: index.search_documents(LONE_SURROGATE + " water"),
            lambda: index.search_word("the [crane] " + LONE_SURROGATE),
            lambda: index.search_word("the crane lifted", target="crane" + LONE_SURROGATE),
            lambda: index.embed("text " + LONE_SURROGATE),
            lambda: index.embed_sentences(["text " + LONE_SURROGATE]),
        ):
            with pytest.raises(QueryError, match="not valid Unicode"):
                call()
        assert index.search_sentences("a heron", k=1)  # and the index answers as before
    result = runner.invoke(
        main, ["query", "a heron \udcff", "--index", str(small_index), "--backend", "torch"]
    )
    _one_line_error(result, "not valid Unicode")


def test_deleting_an_id_that_is_not_utf8_is_a_one_line_error_not_damage(index_copy, runner):
    # what a shell passes for $'bad\xffid': Python decodes the byte 0xff as the surrogate U+DCFF
    result = runner.invoke(main, ["delete", "bad\udcffid", "--index", str(index_copy)])
    line = _one_line_error(result, "not valid Unicode")
    assert "damaged" not in line and "rebuild" not in line
    assert "nothing was deleted" in line
    assert not senseindex.check_index(index_copy).problems


# ------------------------------------------------------------------------ filters


def test_filter_values_and_fields_beyond_the_limits_are_query_errors(small_index):
    with senseindex.open_index(small_index, backend="torch") as index:
        for metadata, reason in (
            ({"year": 2**63}, "beyond 64 bits"),
            ({"year": [1, -(2**64)]}, "beyond 64 bits"),
            ({"score": float("nan")}, "only finite numbers"),
            ({f"field{n}": n for n in range(MAX_FILTER_FIELDS + 1)}, f"at most {MAX_FILTER_FIELDS}"),
            ({f"field{n}": n for n in range(1000)}, f"at most {MAX_FILTER_FIELDS}"),
        ):
            with pytest.raises(QueryError, match=reason) as caught:
                index.search_sentences("a heron", metadata=metadata)
            assert "damaged" not in str(caught.value)
        # as many fields as allowed answer (no document has them: no hits)
        many = {f"field{n}": n for n in range(MAX_FILTER_FIELDS)}
        assert index.search_sentences("a heron", metadata=many) == []


def test_a_filter_on_a_non_ascii_field_name_matches(small_index):
    with senseindex.open_index(small_index, backend="torch") as index:
        hits = index.search_sentences("a steel beam", k=5, metadata={"langue_é": "fr"})
        assert [hit.doc_id for hit in hits] == ["crane"]
        assert index.search_sentences("a steel beam", k=5, metadata={"langue_é": "de"}) == []


# ------------------------------------------------------------------------ what earlier versions stored


def _store_metadata(index: Path, doc_id: str, text: str) -> None:
    """Write a document's metadata straight into the database, as an earlier version stored it."""
    with sqlite3.connect(index / "index.sqlite") as connection:
        connection.execute("update documents set metadata = ? where doc_id = ?", [text, doc_id])
    connection.close()


def test_metadata_stored_before_the_rules_reads_back_and_filters_never_fail(index_copy, runner):
    deep = "[" * 3000 + "]" * 3000  # deeper than Python's and SQLite's JSON readers go
    _store_metadata(index_copy, "heron", '{"lang": "en", "score": NaN, "big": 1e400, "deep": ' + deep + "}")
    _store_metadata(
        index_copy, "crane", '{"lang": "de", "inf": -Infinity, "tree": ' + "[" * 600 + "]" * 600 + "}"
    )
    with senseindex.open_index(index_copy, backend="torch") as index:
        hits = {hit.doc_id: hit for hit in index.search_sentences("a heron fishing", k=5)}
        heron = hits["heron"].metadata
        assert heron["lang"] == "en" and heron["score"] is None and heron["big"] is None
        assert isinstance(json.dumps(heron), str)  # answers serialise (HTTP, --json)
        nested, depth = heron["deep"], 1
        while isinstance(nested, list) and nested:
            nested, depth = nested[0], depth + 1
        assert depth <= MAX_METADATA_DEPTH and isinstance(nested, str) and nested.startswith("[[[")
        # filters read such rows too: on a plain field, on a NaN, and on a field a deep row lacks
        assert [h.doc_id for h in index.search_sentences("a heron", k=5, metadata={"lang": "en"})] == [
            "heron"
        ]
        assert [h.doc_id for h in index.search_sentences("a beam", k=5, metadata={"lang": "de"})] == ["crane"]
        assert index.search_sentences("a heron", k=5, metadata={"score": 1}) == []
        both = index.search_sentences("a heron", k=5, metadata={"missing": None})
        assert {h.doc_id for h in both} == {"heron", "crane"}
        assert index.search_documents("a heron fishing", k=2)
        assert index.search_word("the [crane] lifted a beam", k=2)
    result = runner.invoke(
        main, ["query", "a heron fishing", "--index", str(index_copy), "--json", "--backend", "torch"]
    )
    assert result.exit_code == 0, result.output
    assert {json.loads(line)["doc_id"] for line in result.output.splitlines()} == {"heron", "crane"}


def test_stored_metadata_that_is_not_json_at_all_is_still_damage(index_copy):
    _store_metadata(index_copy, "heron", "{broken")
    with senseindex.open_index(index_copy, backend="torch") as index:
        with pytest.raises(IndexCorrupted, match="damaged"):
            index.search_sentences("a heron", k=5)
        with pytest.raises(IndexCorrupted, match="damaged"):
            index.search_sentences("a heron", k=5, metadata={"lang": "en"})


# ------------------------------------------------------------------------ delete --missing-ok


def test_a_delete_run_again_succeeds_with_missing_ok(index_copy, runner):
    arguments = ["delete", "heron", "--index", str(index_copy)]
    first = runner.invoke(main, arguments)
    assert first.exit_code == 0 and first.output.startswith("Deleted 1 documents"), first.output
    again = runner.invoke(main, arguments)
    _one_line_error(again, "no document 'heron'")
    retried = runner.invoke(main, [*arguments, "--missing-ok"])
    assert retried.exit_code == 0, retried.output
    assert (
        "Deleted 0 documents" in retried.output
        and "Passed over 1 ids not in the index: heron" in retried.output
    )
    as_json = runner.invoke(main, [*arguments, "crane", "--missing-ok", "--json"])
    summary = json.loads(as_json.output)
    assert summary["documents"] == ["crane"] and summary["missing"] == ["heron"]
    assert summary["rows"]["documents"] == 1
    assert _document_count(index_copy) == 0


def test_missing_ok_through_the_python_api(index_copy):
    with pytest.raises(senseindex.DocumentNotFound):
        senseindex.delete_documents(index_copy, ["heron", "nope"])
    assert _document_count(index_copy) == 2  # nothing deleted
    summary = senseindex.delete_documents(index_copy, ["heron", "nope"], missing_ok=True)
    assert summary.documents == ["heron"] and summary.missing == ["nope"]
    with senseindex.open_index(index_copy, backend="torch") as index:
        again = index.delete_documents(["heron"], missing_ok=True)
        assert again.documents == [] and again.missing == ["heron"]
        assert {hit.doc_id for hit in index.search_sentences("a heron", k=5)} == {"crane"}
    assert not senseindex.check_index(index_copy).problems


# ------------------------------------------------------------------------ over HTTP


@pytest.mark.slow
def test_http_refuses_bad_input_with_400_and_answers_over_old_metadata(index_copy):
    from helpers import Server

    _store_metadata(
        index_copy, "heron", '{"lang": "en", "score": NaN, "deep": ' + "[" * 700 + "]" * 700 + "}"
    )
    server = Server(index_copy)
    try:
        headers = {"Content-Type": "application/json"}

        def post_raw(path: str, body: str):
            return server.client.post(path, content=body.encode("utf-8"), headers=headers)

        refused = [
            post_raw("/documents", '{"documents": [{"id": "n", "text": "Fine.", "metadata": {"x": NaN}}]}'),
            post_raw("/documents", '{"documents": [{"id": "n", "text": "Fine.", "metadata": {"x": 1e400}}]}'),
            server.post(
                "/documents", {"documents": [{"id": "d", "text": "Fine.", "metadata": {"x": _nested(40)}}]}
            ),
            post_raw("/documents", '{"documents": [{"id": "s", "text": "Bad \\ud800 text."}]}'),
            server.post("/documents", {"documents": [{"id": "i" * 1025, "text": "Fine."}]}),
            post_raw("/search/sentences", '{"text": "a heron \\ud800"}'),
            server.post("/search/sentences", {"text": "a heron", "filters": {"metadata": {"n": 2**64}}}),
            server.post(
                "/search/sentences",
                {"text": "a heron", "filters": {"metadata": {f"f{n}": n for n in range(1000)}}},
            ),
        ]
        for answer in refused:
            assert answer.status_code == 400, answer.text
            message = answer.json()["error"]["message"]
            assert len(message.splitlines()) == 1 and "damaged" not in message
        assert _document_count(index_copy) == 2  # nothing was stored
        found = server.post("/search/sentences", {"text": "a heron fishing", "k": 5})
        assert found.status_code == 200, found.text
        heron = next(hit for hit in found.json()["hits"] if hit["doc_id"] == "heron")
        assert heron["metadata"]["lang"] == "en" and heron["metadata"]["score"] is None
        filtered = server.post(
            "/search/sentences", {"text": "a heron", "filters": {"metadata": {"lang": "en"}}}
        )
        assert filtered.status_code == 200, filtered.text
        # heron's metadata is read in Python (SQLite cannot), crane's in SQL: both have lang "en"
        assert {hit["doc_id"] for hit in filtered.json()["hits"]} == {"heron", "crane"}
    finally:
        server.stop()


def test_missing_ok_over_a_sharded_index(tmp_path, runner):
    source = tmp_path / "docs.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": f"d{n}", "text": f"Note {n}: a heron by the mill."}) + "\n" for n in range(4)
        ),
        encoding="utf-8",
    )
    index = tmp_path / "sharded.idx"
    senseindex.build_index([str(source)], index, senseindex.EncoderSettings(backend="torch"), shards=2)
    first = runner.invoke(main, ["delete", "d1", "--index", str(index)])
    assert first.exit_code == 0, first.output
    _one_line_error(runner.invoke(main, ["delete", "d1", "d2", "--index", str(index)]), "no document 'd1'")
    retried = runner.invoke(main, ["delete", "d1", "d2", "--index", str(index), "--missing-ok", "--json"])
    assert retried.exit_code == 0, retried.output
    summary = json.loads(retried.output)
    assert (
        summary["documents"] == ["d2"] and summary["missing"] == ["d1"] and summary["rows"]["documents"] == 1
    )
    assert senseindex.index_info(index)["counts"]["documents"] == 2
    assert senseindex.check_index(index).ok
