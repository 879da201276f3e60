"""A damaged index is reported as damaged, and only a damaged one: a caller's bad value is the
caller's error, however deep in the storage it is found."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

import senseindex
from senseindex.cli import main
from senseindex.errors import IndexCorrupted, QueryError, SenseIndexError

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
LONE_SURROGATE = "\ud800"  # valid in a Python str (and in JSON as "\ud800"), not in UTF-8


@pytest.fixture(scope="module")
def small_index(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("small") / "idx"
    settings = senseindex.EncoderSettings(backend="torch")
    senseindex.build_index([str(SAMPLE / "zoo_visit.md")], folder, settings)
    return folder


@pytest.fixture
def damaged_copy(small_index, tmp_path) -> Path:
    folder = tmp_path / "idx"
    shutil.copytree(small_index, folder)
    return folder


def _raises_caller_error(call) -> str:
    with pytest.raises(SenseIndexError) as caught:
        call()
    assert not isinstance(caught.value, IndexCorrupted), caught.value
    assert isinstance(caught.value, QueryError)
    return str(caught.value)


def test_a_filter_value_sqlite_cannot_bind_is_a_query_error_not_a_damaged_index(small_index):
    with senseindex.open_index(small_index, backend="torch") as index:
        message = _raises_caller_error(
            lambda: index.search_sentences("a day at the zoo", metadata={"lang": LONE_SURROGATE})
        )
        assert "metadata filter value" in message and "damaged" not in message
        _raises_caller_error(lambda: index.search_sentences("a day at the zoo", doc_ids=[LONE_SURROGATE]))
        _raises_caller_error(lambda: index.search_sentences("a day at the zoo", metadata={"year": 2**70}))
        # the index is as healthy as before
        assert index.search_sentences("a day at the zoo", k=1)
    assert not senseindex.check_index(small_index).problems


def _alter(index: Path, statement: str) -> None:
    """Change an index's database behind senseindex's back, as damage would."""
    with sqlite3.connect(index / "index.sqlite") as connection:
        connection.execute(statement)
    connection.close()


def test_a_deleted_setting_is_reported_as_a_damaged_index(damaged_copy):
    _alter(damaged_copy, "delete from settings where key = 'sentence_dimension'")
    with (
        pytest.raises(IndexCorrupted, match="sentence_dimension"),
        senseindex.open_index(damaged_copy, backend="torch") as index,
    ):
        index.search_sentences("a day at the zoo", k=1)


def test_a_setting_that_is_not_json_is_reported_as_a_damaged_index(damaged_copy, runner):
    _alter(damaged_copy, "update settings set value = '{not json' where key = 'layers'")
    with pytest.raises(IndexCorrupted, match="damaged"):
        senseindex.open_index(damaged_copy, backend="torch")
    result = runner.invoke(main, ["info", "--index", str(damaged_copy)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "damaged" in result.output


def test_stored_metadata_that_is_not_json_is_reported_as_a_damaged_index(damaged_copy):
    _alter(damaged_copy, "update documents set metadata = '{broken'")
    with (
        senseindex.open_index(damaged_copy, backend="torch") as index,
        pytest.raises(IndexCorrupted, match="damaged"),
    ):
        index.search_sentences("a day at the zoo", k=1)


def test_a_missing_table_is_reported_as_a_damaged_index(damaged_copy):
    _alter(damaged_copy, "drop table passages")
    with (
        pytest.raises(IndexCorrupted, match="damaged"),
        senseindex.open_index(damaged_copy, backend="torch") as index,
    ):
        index.search_documents("a day at the zoo", k=1)


# More values than this SQLite build binds in one statement (250,000 here; 32,766 in older builds).
MANY_VALUES = 300_000


def test_a_metadata_filter_with_any_number_of_values_answers_normally(sample_index):
    query = "a heron fishing in shallow water"
    unknown = [f"value {number}" for number in range(MANY_VALUES)]
    # no sample document has the field: only values that match none ...
    assert sample_index.search_sentences(query, k=5, metadata={"field": unknown}) == []
    # ... or a missing field as well (None), which every document passes
    everything = sample_index.search_sentences(query, k=5)
    hits = sample_index.search_sentences(query, k=5, metadata={"field": [*unknown, None]})
    assert [(h.doc_id, h.start) for h in hits] == [(h.doc_id, h.start) for h in everything]
    assert [h.score for h in hits] == pytest.approx([h.score for h in everything])


def _raises_without_rebuild_advice(call) -> str:
    with pytest.raises(SenseIndexError) as caught:
        call()
    message = str(caught.value)
    assert not isinstance(caught.value, IndexCorrupted), message
    assert "damaged" not in message and "rebuild" not in message
    assert len(message.splitlines()) == 1
    return message


def test_a_database_file_sqlite_cannot_open_is_not_called_damaged(damaged_copy, runner):
    # a folder where SQLite keeps the write-ahead log: the database file cannot be opened (even by root)
    (damaged_copy / "index.sqlite-wal").mkdir()
    message = _raises_without_rebuild_advice(lambda: senseindex.open_index(damaged_copy, backend="torch"))
    assert "cannot be opened" in message
    _raises_without_rebuild_advice(lambda: senseindex.check_index(damaged_copy))
    result = runner.invoke(main, ["info", "--index", str(damaged_copy)])
    assert result.exit_code == 1 and "damaged" not in result.output and "rebuild" not in result.output
    (damaged_copy / "index.sqlite-wal").rmdir()
    assert not senseindex.check_index(damaged_copy).problems  # nothing was wrong with the index


def test_a_read_only_database_opened_for_writing_is_not_called_damaged(damaged_copy):
    import os
    import stat

    database = damaged_copy / "index.sqlite"
    database.chmod(stat.S_IRUSR)
    try:
        if os.access(database, os.W_OK):
            pytest.skip("running as a user who may write anywhere (root)")
        _raises_without_rebuild_advice(
            lambda: senseindex.add_documents([str(SAMPLE / "river_walk.md")], damaged_copy, backend="torch")
        )
    finally:
        database.chmod(stat.S_IRUSR | stat.S_IWUSR)
