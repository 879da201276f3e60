"""Word-sense induction: the senses a word is used in, from the index alone."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

import senseindex
from senseindex.cli import main
from senseindex.search.senses import cluster_senses, silhouette

# the metrics live with the benchmarks that use them (benchmarks/metrics.py)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from metrics import adjusted_rand_index, v_measure

# ----------------------------------------------------------------------------------- the method


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_identical_vectors_are_one_sense():
    same = np.tile(_unit(np.arange(1, 9, dtype=np.float32)[None, :]), (20, 1))
    found = cluster_senses(same)
    assert len(found.centres) == 1 and found.chosen_by == "no spread"
    assert len(cluster_senses(same, senses=3).centres) == 1  # nothing to split, whatever is asked


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_separated_groups_are_found_and_a_featureless_cloud_is_one_sense(seed):
    rng = np.random.default_rng(seed)
    dimension = 48
    centres = rng.standard_normal((3, dimension)) * 3
    truth = np.repeat([0, 1, 2], [150, 90, 60])
    groups = _unit(centres[truth] + rng.standard_normal((300, dimension)))
    found = cluster_senses(groups, seed=seed)
    assert len(found.centres) == 3 and found.chosen_by == "graph"
    assert adjusted_rand_index(truth.tolist(), found.labels.tolist()) == pytest.approx(1.0)
    assert np.bincount(found.labels).tolist() == [150, 90, 60]  # numbered by size
    # one Gaussian with a long axis and many short ones: spread, but no groups
    cloud = _unit(
        np.full(dimension, 3.0) + rng.standard_normal((300, dimension)) * np.linspace(2, 0.2, dimension)
    )
    assert len(cluster_senses(cloud, seed=seed).centres) == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_small_tight_sense_beside_a_large_spread_one_gets_its_own(seed):
    # a rare sense (24 of 424 uses, under 6 %) whose uses lie close together, beside a common
    # sense spread all over: centres-based clustering splits the common one instead
    rng = np.random.default_rng(seed)
    dimension = 48
    spread = _unit(rng.standard_normal((400, dimension)))
    tight = _unit(_unit(rng.standard_normal((1, dimension))) * 3 + rng.standard_normal((24, dimension)) * 0.2)
    found = cluster_senses(np.vstack([spread, tight]), seed=seed)
    assert len(found.centres) == 2 and found.chosen_by == "graph"
    rare = found.labels[400:]
    assert (rare == 1).all()  # every rare use in the smaller sense
    assert (found.labels == 1).sum() <= 2 * len(rare)  # which is mostly them


def test_silhouette_equals_its_definition():
    rng = np.random.default_rng(3)
    vectors = _unit(rng.standard_normal((40, 8)))
    labels = rng.integers(0, 3, 40)
    distance = 1 - vectors @ vectors.T
    scores = []
    for i in range(40):
        own = [j for j in range(40) if labels[j] == labels[i] and j != i]
        if not own:
            scores.append(0.0)
            continue
        a = distance[i, own].mean()
        b = min(distance[i, labels == c].mean() for c in set(labels.tolist()) if c != labels[i])
        scores.append((b - a) / max(a, b))
    assert silhouette(vectors @ vectors.T, labels) == pytest.approx(np.mean(scores), abs=1e-5)


def test_clustering_metrics_on_known_cases():
    assert adjusted_rand_index([0, 0, 1, 2], [0, 0, 1, 1]) == pytest.approx(4 / 7)
    assert adjusted_rand_index(["a", "a", "b", "b"], [1, 1, 0, 0]) == 1.0
    assert adjusted_rand_index(["a", "a", "b", "b"], [0, 0, 0, 0]) == 0.0
    homogeneity, completeness, v = v_measure([0, 0, 1, 2], [0, 0, 1, 1])
    assert (homogeneity, completeness, v) == pytest.approx((2 / 3, 1.0, 0.8))
    assert v_measure(["a", "a", "b", "b"], [0, 0, 0, 0])[2] == 0.0


# ---------------------------------------------------------------------------- the sample corpus


def test_a_word_with_two_senses_gets_two_that_match_the_labels(sample_index, sense_of):
    found = sample_index.induce_senses("apple")
    assert len(found.senses) == 2 and found.chosen_by == "graph"
    rows = {hit.word_id: hit for hit in sample_index.search_word("the [apple]", k=1000)}
    gold = [sense_of[(rows[i].doc_id, rows[i].start)] for i in found.occurrence_ids.tolist()]
    assert set(gold) == {"fruit", "company"}
    homogeneity, _, _ = v_measure(gold, found.assignments.tolist())
    assert homogeneity == pytest.approx(1.0)  # no induced sense mixes the fruit and the company
    assert adjusted_rand_index(gold, found.assignments.tolist()) == pytest.approx(1.0)
    for sense in found.senses:
        assert sense.size == int((found.assignments == sense.number).sum())
        labels = {sense_of[(hit.doc_id, hit.start)] for hit in sense.typical}
        assert len(labels) == 1 and sense.related_words
    assert sum(sense.share for sense in found.senses) == pytest.approx(1.0, abs=1e-3)
    # the related words tell the senses apart: none is listed under both
    first, second = ({hit.lemma for hit in sense.related_words} for sense in found.senses)
    assert not first & second


def test_typical_occurrences_are_the_closest_to_the_centre(sample_index, sample_documents):
    found = sample_index.induce_senses("apple", typical=4)
    hits = {hit.word_id: hit for hit in sample_index.search_word("the [apple]", k=1000)}
    # oracle: every occurrence's vector from its document embedded afresh, matched by offsets
    vectors = {}
    for doc_id in {hit.doc_id for hit in hits.values()}:
        for sentence in sample_index.embed(sample_documents[doc_id]):
            for word in sentence.words:
                vectors[(doc_id, word.start)] = word.vector
    pairs = list(zip(found.occurrence_ids.tolist(), found.assignments.tolist(), strict=True))
    for sense in found.senses:
        members = [word_id for word_id, number in pairs if number == sense.number]
        closeness = {i: float(vectors[(hits[i].doc_id, hits[i].start)] @ sense.centre) for i in members}
        expected = sorted(members, key=lambda i: -closeness[i])[:4]
        assert [hit.word_id for hit in sense.typical] == expected
        assert [hit.score for hit in sense.typical] == pytest.approx(
            [closeness[i] for i in expected], abs=1e-4
        )


@pytest.mark.parametrize("word", ["street", "river", "water"])
def test_a_word_with_one_sense_gets_one(sample_index, word):
    found = sample_index.induce_senses(word)
    assert found.occurrences >= 6 and found.chosen_by == "graph"
    assert len(found.senses) == 1 and found.senses[0].size == found.occurrences


def test_forced_numbers_and_bad_requests(sample_index):
    assert len(sample_index.induce_senses("bank", senses=3).senses) == 3
    assert sample_index.induce_senses("bank", senses=3).chosen_by == "forced"
    for word, options, message in [
        ("zeppelin", {}, "does not occur"),
        ("river bank", {}, "one word"),
        ("", {}, "one word"),
        ("bank", {"senses": 0}, "at least 1"),
        ("bank", {"senses": 15}, "cannot have 15 senses"),
        ("bank", {"senses": 51}, "at most 50"),
    ]:
        with pytest.raises(senseindex.QueryError, match=message):
            sample_index.induce_senses(word, **options)


def test_senses_command_text_and_json(runner, sample_index_dir, sample_index):
    shown = runner.invoke(main, ["senses", "apple", "--index", str(sample_index_dir), "--backend", "torch"])
    assert shown.exit_code == 0, shown.output
    assert "2 senses" in shown.output and "Sense 1:" in shown.output and "Sense 2:" in shown.output
    assert "[apple]" in shown.output.lower()
    as_json = runner.invoke(
        main, ["senses", "apple", "--index", str(sample_index_dir), "--backend", "torch", "--json"]
    )
    assert as_json.exit_code == 0, as_json.output
    parsed = json.loads(as_json.output)
    expected = sample_index.induce_senses("apple").to_dict()
    assert parsed == json.loads(json.dumps(expected))  # the same answer, round-tripped through JSON
    assert len(parsed["assignments"]) == parsed["occurrences"]
    assert {s["number"] for s in parsed["senses"]} == set(parsed["assignments"].values())
    for word, options, said in [
        ("bank", ["--senses", "3"], "3 senses (as asked)"),
        ("garden", [], "1 sense (too few occurrences to split)"),
        ("street", [], "1 sense (its uses part into 2 communities no better than a featureless cloud"),
    ]:
        result = runner.invoke(
            main, ["senses", word, "--index", str(sample_index_dir), "--backend", "torch", *options]
        )
        assert result.exit_code == 0 and said in result.output, result.output
    missing = runner.invoke(main, ["senses", "zeppelin", "--index", str(sample_index_dir)])
    assert missing.exit_code == 1 and missing.output.startswith("Error: 'zeppelin' does not occur")


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plots_are_valid_images_and_pages(runner, sample_index_dir, tmp_path):
    image = tmp_path / "apple.png"
    drawn = runner.invoke(
        main,
        ["senses", "apple", "--index", str(sample_index_dir), "--backend", "torch", "--plot", str(image)],
    )
    assert drawn.exit_code == 0, drawn.output
    width, height = _png_size(image.read_bytes())
    assert width > 400 and height > 300
    page = tmp_path / "apple.html"
    runner.invoke(
        main, ["senses", "apple", "--index", str(sample_index_dir), "--backend", "torch", "--plot", str(page)]
    )
    html = page.read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and "<mark>" in html and "Sense 2" in html
    svg = tmp_path / "apple.svg"
    runner.invoke(
        main, ["senses", "apple", "--index", str(sample_index_dir), "--backend", "torch", "--plot", str(svg)]
    )
    assert svg.read_text(encoding="utf-8").lstrip().startswith("<?xml")
    wrong = runner.invoke(
        main, ["senses", "apple", "--index", str(sample_index_dir), "--plot", str(tmp_path / "a.gif")]
    )
    assert wrong.exit_code == 1 and "must be a" in wrong.output


def test_word_hits_grouped_by_sense(runner, sample_index_dir, sample_index, sense_of):
    query = "She bit into a crisp [apple] from the orchard"
    word_senses, query_sense, groups = sample_index.search_word_by_sense(query, k=30)
    plain = sample_index.search_word(query, k=30)
    assert sorted(h.word_id for g in groups for h in g.hits) == sorted(h.word_id for h in plain)
    assert len(groups) == 2  # 30 hits: more than the fruit has
    assert groups[0].sense == query_sense == word_senses.sense_of(plain[0].word_id)
    # the query is about fruit: the fruit hits are its group, the company hits the other one
    labelled = {group.sense: {sense_of[(hit.doc_id, hit.start)] for hit in group.hits} for group in groups}
    assert labelled[query_sense] == {"fruit"}
    assert [senses for number, senses in labelled.items() if number != query_sense] == [{"company"}]
    result = runner.invoke(
        main,
        [
            "query",
            "--word",
            query,
            "--by-sense",
            "-k",
            "30",
            "--index",
            str(sample_index_dir),
            "--backend",
            "torch",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"the query is nearest sense {query_sense}" in result.output and "sense 2:" in result.output
    as_json = json.loads(
        runner.invoke(
            main,
            [
                "query",
                "--word",
                query,
                "--by-sense",
                "--json",
                "--index",
                str(sample_index_dir),
                "--backend",
                "torch",
            ],
        ).output
    )
    assert as_json["query_sense"] == query_sense and as_json["groups"][0]["sense"] == query_sense
    clash = runner.invoke(
        main, ["query", "--word", query, "--by-sense", "--any-word", "--index", str(sample_index_dir)]
    )
    assert clash.exit_code == 1 and "--by-sense" in clash.output
