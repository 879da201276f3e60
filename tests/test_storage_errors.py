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


def test_a_deleted_setting_is_reported_as_a_damaged_index(damaged_copy):
    with sqlite3.connect(damaged_copy / "index.sqlite") as connection:
        connection.execute("delete from settings where key = 'sentence_dimension'")
    connection.close()
    with (
        pytest.raises(IndexCorrupted, match="sentence_dimension"),
        senseindex.open_index(damaged_copy, backend="torch") as index,
    ):
        index.search_sentences("a day at the zoo", k=1)


def test_a_setting_that_is_not_json_is_reported_as_a_damaged_index(damaged_copy, runner):
    with sqlite3.connect(damaged_copy / "index.sqlite") as connection:
        connection.execute("update settings set value = '{not json' where key = 'layers'")
    connection.close()
    with pytest.raises(IndexCorrupted, match="damaged"):
        senseindex.open_index(damaged_copy, backend="torch")
    result = runner.invoke(main, ["info", "--index", str(damaged_copy)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "damaged" in result.output


def test_stored_metadata_that_is_not_json_is_reported_as_a_damaged_index(damaged_copy):
    with sqlite3.connect(damaged_copy / "index.sqlite") as connection:
        connection.execute("update documents set metadata = '{broken'")
    connection.close()
    with (
        senseindex.open_index(damaged_copy, backend="torch") as index,
        pytest.raises(IndexCorrupted, match="damaged"),
    ):
        index.search_sentences("a day at the zoo", k=1)


def test_a_missing_table_is_reported_as_a_damaged_index(damaged_copy):
    with sqlite3.connect(damaged_copy / "index.sqlite") as connection:
        connection.execute("drop table passages")
    connection.close()
    with (
        pytest.raises(IndexCorrupted, match="damaged"),
        senseindex.open_index(damaged_copy, backend="torch") as index,
    ):
        index.search_documents("a day at the zoo", k=1)
