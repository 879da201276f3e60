"""How a word's use changed between two slices of a corpus: `senseindex change`, Python and HTTP."""

from __future__ import annotations

import json

import pytest
from helpers import MONEY_BANK, RIVER_BANK, Server

import senseindex
from senseindex.cli import main

RIVER, MONEY = RIVER_BANK, MONEY_BANK
# 'lantern' is used the same way in both slices
STEADY = ["The lantern hung by the door.", "She lit the lantern at dusk.", "A lantern glowed in the window."]


@pytest.fixture(scope="module")
def change_index(tmp_path_factory):
    """'bank' only by rivers in the 1820s, mostly about money in the 1990s; 'lantern' alike in both."""
    folder = tmp_path_factory.mktemp("change")
    early = RIVER * 2 + STEADY * 2
    late = RIVER[:3] + MONEY * 2 + STEADY * 2
    lines = [{"id": f"early-{n}", "text": text, "year": 1820 + n % 10} for n, text in enumerate(early)]
    lines += [{"id": f"late-{n}", "text": text, "year": 1990 + n % 10} for n, text in enumerate(late)]
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    senseindex.build_index([str(corpus)], folder / "idx", senseindex.EncoderSettings(backend="torch"))
    return folder / "idx"


@pytest.mark.parametrize("measure", senseindex.CHANGE_MEASURES)
def test_a_word_with_a_new_sense_ranks_first_and_one_used_alike_last(change_index, measure):
    with senseindex.open_index(change_index, backend="torch") as index:
        report = index.change("year", "1800-1900", "1950-2050", ["lantern", "bank"], measure=measure)
    assert [change.word for change in report.words] == ["bank", "lantern"]
    bank, lantern = report.words
    assert (bank.occurrences_from, bank.occurrences_to) == (10, 13)
    assert lantern.score(measure) < 0.01 < bank.score(measure)
    gained = [sense for sense in bank.senses if sense.status == "gained"]
    assert gained, [(s.label, s.share_from, s.share_to) for s in bank.senses]
    for sense in gained:
        assert sense.share_from == 0 and not sense.typical_from
        assert sense.typical_to and all(hit.sentence in MONEY for hit in sense.typical_to)
    assert not any(sense.status != "kept" for sense in lantern.senses)


def test_words_without_enough_occurrences_are_skipped_or_refused(change_index):
    with senseindex.open_index(change_index, backend="torch") as index:
        report = index.change("year", "1820-1829", "1990-1999", ["bank", "river", "zeppelin"], min_count=4)
        assert [change.word for change in report.words] == ["bank"]
        assert report.skipped["zeppelin"] == "not in the index"
        assert report.skipped["river"].startswith("6 and 2 occurrences in the slices")
        with pytest.raises(senseindex.QueryError, match="no word could be compared"):
            index.change("decade", "1820", "1990", ["bank"])
        with pytest.raises(senseindex.QueryError, match="measure must be one of"):
            index.change("year", "1820-1829", "1990-1999", ["bank"], measure="vibes")
        with pytest.raises(senseindex.QueryError, match="from a low number to a high one"):
            index.change("year", "1900-1800", "1990-1999", ["bank"])


def test_the_change_command_and_the_service_answer_alike(runner, change_index):
    base = ["change", "lantern", "bank", "--index", str(change_index), "--backend", "torch"]
    base += ["--by", "year", "--from", "1800-1900", "--to", "1950-2050"]
    shown = runner.invoke(main, base)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    header = next(n for n, line in enumerate(lines) if line.split()[:2] == ["word", "jsd"])
    assert [line.split()[0] for line in lines[header + 1 : header + 3]] == ["bank", "lantern"]
    assert "gained: 0% ->" in shown.output
    as_json = runner.invoke(main, [*base, "--json", "--measure", "centroid"])
    assert as_json.exit_code == 0, as_json.output
    answer = json.loads(as_json.output)
    refused = runner.invoke(main, [*base[:-6], "--by", "decade", "--from", "1", "--to", "2"])
    assert refused.exit_code == 1 and len(refused.output.strip().splitlines()) == 1
    server = Server(change_index)
    try:
        body = {"by": "year", "from": "1800-1900", "to": "1950-2050", "words": ["lantern", "bank"]}
        served = server.post("/change", {**body, "measure": "centroid"})
        assert served.status_code == 200, served.text
        assert served.json() == answer
        bad = server.post("/change", {**body, "measure": "vibes"})
        assert bad.status_code == 400
    finally:
        server.stop()


# without words: every word with enough occurrences in both slices


def test_without_words_the_word_with_a_new_sense_ranks_first(change_index):
    with senseindex.open_index(change_index, backend="torch") as index:
        report = index.change("year", "1800-1900", "1950-2050")
        named = index.change("year", "1800-1900", "1950-2050", ["bank", "lantern"])
    # at 5 occurrences in each slice: 'bank' (10 and 13) and 'lantern' (6 and 6); 'the' and the other
    # function words have dozens, and are no candidates
    assert report.candidates == 2
    assert [change.word for change in report.words] == ["bank", "lantern"]
    bank, lantern = report.words
    assert bank.apd > 0.01 > lantern.apd
    gained = [sense for sense in bank.senses if sense.status == "gained"]
    assert gained, [(s.label, s.share_from, s.share_to) for s in bank.senses]
    for sense in gained:
        assert sense.share_from == 0 and sense.typical_to
        assert all(hit.sentence in MONEY for hit in sense.typical_to)
    assert all(sense.status == "kept" for sense in lantern.senses)
    # the same comparison as when the words are named
    assert [c.to_dict() for c in report.words] == [c.to_dict() for c in named.words]
    assert report.skipped == {} and named.candidates is None


@pytest.mark.parametrize("measure", senseindex.CHANGE_MEASURES)
def test_without_words_every_measure_ranks_the_new_sense_first(change_index, measure):
    with senseindex.open_index(change_index, backend="torch") as index:
        report = index.change("year", "1800-1900", "1950-2050", measure=measure, min_count=2, top=3)
        every = index.change("year", "1800-1900", "1950-2050", measure=measure, min_count=2, top=1000)
    assert len(report.words) == 3 and report.candidates == len(every.words) > 3
    assert report.words[0].word == "bank"
    # the words picked by the first pass are the most changed by the full comparison of every word
    scores = [change.score(measure) for change in every.words]
    assert scores == sorted(scores, reverse=True)
    assert [change.score(measure) for change in report.words] == scores[:3]


def test_without_words_min_count_and_function_words(change_index):
    with senseindex.open_index(change_index, backend="torch") as index:
        every = index.change("year", "1800-1900", "1950-2050", min_count=2, top=1000)
        strict = index.change("year", "1800-1900", "1950-2050", min_count=7)
        with pytest.raises(
            senseindex.WordNotFound, match="no word has at least 14 occurrences in both slices"
        ):
            index.change("year", "1800-1900", "1950-2050", min_count=14)
        with pytest.raises(
            senseindex.QueryError, match="no document with words has a value of 'decade' in the slice 1820"
        ):
            index.change("decade", "1820", "1990")
        with pytest.raises(senseindex.QueryError, match="give the words to compare"):
            index.change("year", "1800-1900", "1950-2050", [])
    found = {change.word: change for change in every.words}
    assert len(found) == every.candidates
    # 'river': 6 early, 2 late; 'lantern' 6 and 6; 'bank' 10 and 13
    assert {"bank", "lantern", "river"} <= set(found)
    assert all(min(c.occurrences_from, c.occurrences_to) >= 2 for c in every.words)
    assert not {"the", "of", "at", "a", "she", "to", "its"} & set(found)
    assert all(word.isalpha() for word in found)
    assert [change.word for change in strict.words] == ["bank"] and strict.candidates == 1


def test_without_words_the_command_and_the_service_answer_as_python(runner, change_index):
    with senseindex.open_index(change_index, backend="torch") as index:
        expected = index.change("year", "1800-1900", "1950-2050", measure="jsd", min_count=2, top=4).to_dict()
    base = ["change", "--index", str(change_index), "--backend", "torch"]
    base += ["--by", "year", "--from", "1800-1900", "--to", "1950-2050"]
    as_json = runner.invoke(main, [*base, "--json", "--measure", "jsd", "--min-count", "2", "--top", "4"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == expected
    shown = runner.invoke(main, base)
    assert shown.exit_code == 0, shown.output
    assert "2 words occur often enough in both slices; the 2 most changed" in shown.output
    assert "gained: 0% ->" in shown.output
    refused = runner.invoke(main, [*base, "--min-count", "40"])
    assert refused.exit_code == 1 and len(refused.output.strip().splitlines()) == 1
    assert "no word has at least 40 occurrences in both slices" in refused.output
    helped = runner.invoke(main, ["change", "--help"])
    assert "senseindex change --by year" in helped.output
    server = Server(change_index)
    try:
        body = {"by": "year", "from": "1800-1900", "to": "1950-2050", "measure": "jsd", "min_count": 2}
        served = server.post("/change", {**body, "top": 4})
        assert served.status_code == 200, served.text
        assert served.json() == expected
        assert server.post("/change", {**body, "min_count": 40}).status_code == 404
        assert server.post("/change", {**body, "words": []}).status_code == 400
    finally:
        server.stop()


def test_without_words_a_sharded_index_answers_as_one(tmp_path, change_index):
    corpus = change_index.parent / "corpus.jsonl"
    senseindex.build_index(
        [str(corpus)], tmp_path / "sharded", senseindex.EncoderSettings(backend="torch"), shards=2
    )
    with (
        senseindex.open_index(change_index, backend="torch") as one,
        senseindex.open_index(tmp_path / "sharded", backend="torch") as sharded,
    ):
        expected = one.change("year", "1800-1900", "1950-2050", min_count=2, top=1000)
        found = sharded.change("year", "1800-1900", "1950-2050", min_count=2, top=1000)
    assert found.candidates == expected.candidates
    assert found.words[0].word == expected.words[0].word == "bank"
    # the same words with the same measures; words whose measures tie (to float rounding) in any order
    theirs = {change.word: change for change in expected.words}
    assert set(theirs) == {change.word for change in found.words}
    for mine in found.words:
        other = theirs[mine.word]
        assert (mine.occurrences_from, mine.occurrences_to) == (other.occurrences_from, other.occurrences_to)
        assert mine.apd == pytest.approx(other.apd, abs=1e-3)
        assert mine.centroid == pytest.approx(other.centroid, abs=1e-3)
