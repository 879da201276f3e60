"""A word's senses across parts of a corpus: the share of each sense per slice of a metadata field."""

from __future__ import annotations

import json

import pytest
from helpers import MONEY_BANK, RIVER_BANK, Server

import senseindex
from senseindex.cli import main

RIVER, MONEY = RIVER_BANK, MONEY_BANK
# (year, river occurrences, money occurrences): the river sense gives way to the money one
PERIODS = [(1820, 8, 2), (1990, 2, 8)]


@pytest.fixture(scope="module")
def sliced_index(tmp_path_factory):
    """An index of short documents about banks, each with a year and a source; two without a year."""
    folder = tmp_path_factory.mktemp("senses_by")
    lines = []
    for year, river, money in PERIODS:
        sentences = [RIVER[n % 5] for n in range(river)] + [MONEY[n % 5] for n in range(money)]
        for number, sentence in enumerate(sentences):
            source = "novel" if year < 1900 else "news"
            lines.append(
                {"id": f"{year}-{number}", "text": sentence, "year": year + number, "source": source}
            )
    lines += [
        {"id": "undated-1", "text": RIVER[0], "source": "letter"},
        {"id": "undated-2", "text": MONEY[1]},
    ]
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    senseindex.build_index([str(corpus)], folder / "idx", senseindex.EncoderSettings(backend="torch"))
    return folder / "idx"


def _river_sense(word_senses: senseindex.WordSenses) -> int:
    """The number of the sense whose typical uses are the river ones."""
    for sense in word_senses.senses:
        if all(hit.sentence in RIVER for hit in sense.typical):
            return sense.number
    raise AssertionError([[hit.sentence for hit in s.typical] for s in word_senses.senses])


def test_the_share_of_each_sense_per_range_of_years(sliced_index):
    with senseindex.open_index(sliced_index, backend="torch") as index:
        found = index.induce_senses("bank", senses=2, typical=20, by="year", slices="1810-1860,1960-2010")
    assert found.by is not None and found.by.field == "year"
    river = _river_sense(found) - 1
    early, late = found.by.slices
    assert (early.label, late.label) == ("1810–1860", "1960–2010")
    assert (early.occurrences, late.occurrences) == (10, 10)
    assert (early.counts[river], late.counts[river]) == (8, 2)
    assert early.shares[river] == pytest.approx(0.8) and late.shares[river] == pytest.approx(0.2)
    assert (found.by.without_value, found.by.outside) == (2, 0)
    assert found.to_dict()["by"]["slices"][0]["counts"] == list(early.counts)


def test_values_and_bins_make_the_slices(sliced_index):
    with senseindex.open_index(sliced_index, backend="torch") as index:
        by_source = index.induce_senses("bank", senses=2, by="source").by
        binned = index.induce_senses("bank", senses=2, by="year", bins=2).by
        outside = index.induce_senses("bank", senses=2, by="year", slices="1815-1821").by
    assert by_source is not None and [s.label for s in by_source.slices] == ["letter", "news", "novel"]
    assert [s.occurrences for s in by_source.slices] == [1, 10, 10] and by_source.without_value == 1
    assert binned is not None and [s.occurrences for s in binned.slices] == [10, 10]
    assert [s.label for s in binned.slices] == ["1820–1909.5", "1909.5–1999"]
    assert all(sum(s.counts) == s.occurrences and sum(s.shares) == pytest.approx(1) for s in binned.slices)
    assert outside is not None and outside.slices[0].occurrences == 2 and outside.outside == 18


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"by": "decade"}, "no occurrence's document has a value for the field 'decade'"),
        ({"bins": 3}, "need a metadata field"),
        ({"by": "source", "bins": 2}, "need numbers"),
        ({"by": "year", "bins": 2, "slices": "1-2"}, "not both"),
        ({"by": "year", "slices": "1900 to 1950"}, "ranges such as"),
        ({"by": "year", "slices": "1950-1900"}, "from a low number to a high one"),
        ({"by": "year", "bins": 0}, "bins must be"),
        ({"by": "year", "slices": "1700-1750,1810-1860"}, "no occurrence falls in the slice 1700–1750"),
    ],
)
def test_a_slicing_that_cannot_be_made_is_a_one_line_error(sliced_index, options, message):
    with (
        senseindex.open_index(sliced_index, backend="torch") as index,
        pytest.raises(senseindex.QueryError, match=message),
    ):
        index.induce_senses("bank", senses=2, **options)


def test_the_senses_command_shows_a_row_per_slice(runner, sliced_index):
    base = ["senses", "bank", "--index", str(sliced_index), "--backend", "torch", "--senses", "2"]
    shown = runner.invoke(main, [*base, "--by", "year", "--slices", "1810-1860,1960-2010"])
    assert shown.exit_code == 0, shown.output
    table = shown.output.split("Senses by year")[1].splitlines()
    assert [line.split()[0] for line in table[2:4]] == ["1810–1860", "1960–2010"]
    assert "2 occurrences have no year" in shown.output
    as_json = runner.invoke(main, [*base, "--by", "source", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert [s["label"] for s in json.loads(as_json.output)["by"]["slices"]] == ["letter", "news", "novel"]
    refused = runner.invoke(main, [*base, "--bins", "2"])
    assert refused.exit_code == 1 and refused.output.strip().splitlines() == [
        "Error: bins and slices need a metadata field to slice by"
    ]


def test_the_plot_shows_the_share_of_each_sense_per_slice(runner, sliced_index, tmp_path):
    base = ["senses", "bank", "--index", str(sliced_index), "--backend", "torch", "--senses", "2"]
    plain, sliced, page = tmp_path / "plain.png", tmp_path / "sliced.png", tmp_path / "sliced.html"
    for arguments in (["--plot", str(plain)], ["--by", "year", "--bins", "2", "--plot", str(sliced)]):
        result = runner.invoke(main, [*base, *arguments])
        assert result.exit_code == 0, result.output
    assert _png_width(sliced.read_bytes()) > 1.4 * _png_width(plain.read_bytes())  # the panel beside the map
    result = runner.invoke(main, [*base, "--by", "source", "--plot", str(page)])
    assert result.exit_code == 0, result.output
    html = page.read_text(encoding="utf-8")
    assert "<h2>Senses by source</h2>" in html
    assert all(f"<td>{label}</td>" in html for label in ("letter", "news", "novel"))


def _png_width(data: bytes) -> int:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big")


def test_the_service_answers_senses_by_a_field(sliced_index):
    server = Server(sliced_index)
    try:
        answer = server.client.get("/senses/bank", params={"senses": 2, "by": "year", "bins": 2})
        assert answer.status_code == 200, answer.text
        with senseindex.open_index(sliced_index, backend="torch") as index:
            expected = index.induce_senses("bank", senses=2, by="year", bins=2).to_dict(assignments=False)
        assert answer.json()["by"] == expected["by"]
        refused = server.client.get("/senses/bank", params={"by": "source", "bins": 2})
        assert refused.status_code == 400 and "need numbers" in refused.json()["error"]["message"]
    finally:
        server.stop()
