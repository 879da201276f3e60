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
