"""Word-sense search on the sample corpus: same word, same sense first."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

import senseindex
from senseindex.cli import main

# Words whose every labelled query (two per sense) must get three same-sense hits on top. The other
# ambiguous words of the corpus are held to the aggregate bound below.
STRICT_WORDS = ["spring", "apple", "pitcher", "pound", "trunk", "palm", "jam", "match"]


def _queries(labels, word):
    return [q for q in labels["queries"] if q["word"] == word]


@pytest.mark.parametrize("word", STRICT_WORDS)
def test_top_three_hits_share_the_query_sense(sample_index, labels, sense_of, word):
    queries = _queries(labels, word)
    assert len({q["sense"] for q in queries}) == 2
    for query in queries:
        hits = sample_index.search_word(query["text"], k=3)
        assert len(hits) == 3
        senses = [sense_of.get((hit.doc_id, hit.start)) for hit in hits]
        assert senses == [query["sense"]] * 3, query["text"]


def test_precision_at_three_over_all_labelled_queries(sample_index, labels, sense_of):
    per_word: dict[str, list[bool]] = defaultdict(list)
    for query in labels["queries"]:
        for hit in sample_index.search_word(query["text"], k=3):
            per_word[query["word"]].append(sense_of.get((hit.doc_id, hit.start)) == query["sense"])
    assert len(per_word) >= 12
    total = [ok for oks in per_word.values() for ok in oks]
    assert sum(total) / len(total) >= 0.9
    # every word still gets a majority of same-sense hits
    assert all(sum(oks) / len(oks) > 0.5 for oks in per_word.values()), per_word


def test_same_lemma_counts_inflections_and_case(sample_index, labels):
    hits = sample_index.search_word("We had a picnic on the [bank] of the stream.", k=1000)
    found = {(hit.doc_id, hit.start) for hit in hits}
    labelled = {(o["document"], o["start"]) for o in labels["occurrences"] if o["word"] == "bank"}
    assert found == labelled
    assert {"banks", "Bank"} <= {hit.form for hit in hits}
    assert {hit.lemma for hit in hits} == {"bank"}


def test_exact_form_restricts_to_the_surface_form(sample_index):
    hits = sample_index.search_word("We had a picnic on the [banks] of the stream.", k=1000, exact_form=True)
    assert hits
    assert {hit.form.lower() for hit in hits} == {"banks"}


def test_target_option_equals_brackets(sample_index):
    marked = sample_index.search_word("I sat on the [bank] of the river", k=5)
    named = sample_index.search_word("I sat on the bank of the river", target="bank", k=5)
    assert [h.word_id for h in marked] == [h.word_id for h in named]
    assert [h.score for h in marked] == pytest.approx([h.score for h in named])


def test_word_hits_match_a_brute_force_oracle(sample_index):
    """Scores are cosines between the query word's vector and the stored vectors of that lemma."""
    import numpy as np

    query_sentence = sample_index.embed("The heavy crane lifted the roof beams into place.")[0]
    crane = next(w for w in query_sentence.words if w.form == "crane")
    hits = sample_index.search_word("The heavy [crane] lifted the roof beams into place.", k=5)
    # Oracle: re-embed every sentence holding a crane and score with NumPy.
    every_crane = sample_index.search_word("The heavy [crane] lifted the roof beams into place.", k=1000)
    oracle = []
    for hit in every_crane:
        embedded = sample_index.embed(hit.sentence)[0]
        local = hit.start - hit.sentence_start
        word = next(w for w in embedded.words if w.start == local)
        oracle.append((hit.word_id, float(np.dot(word.vector, crane.vector))))
    oracle.sort(key=lambda pair: -pair[1])
    assert [h.word_id for h in hits] == [pair[0] for pair in oracle[:5]]
    assert [h.score for h in hits] == pytest.approx([pair[1] for pair in oracle[:5]], abs=1e-4)
    assert len(every_crane) == 15


def test_any_word_finds_words_of_the_same_sense(sample_index):
    def rank(hits, lemma):
        lemmas = [hit.lemma for hit in hits]
        return lemmas.index(lemma) if lemma in lemmas else len(lemmas)

    river_sense = sample_index.search_similar_words("I sat on the [bank] of the river", k=20)
    money_sense = sample_index.search_similar_words("The [bank] raised its interest rates again.", k=20)
    assert all(hit.lemma != "bank" for hit in river_sense + money_sense)
    assert rank(river_sense, "river") < min(rank(river_sense, "loan"), rank(river_sense, "money"))
    assert rank(money_sense, "loan") < rank(money_sense, "river")
    assert rank(money_sense, "money") < rank(money_sense, "river")
    assert [h.score for h in river_sense] == sorted((h.score for h in river_sense), reverse=True)
    assert all(hit.best.lemma == hit.lemma for hit in river_sense)


def test_many_queries_at_once_equal_one_by_one(sample_index, labels):
    texts = [q["text"] for q in labels["queries"][:12]]
    together = sample_index.search_word_many(texts, k=4)
    for text, hits in zip(texts, together, strict=True):
        alone = sample_index.search_word(text, k=4)
        assert [h.word_id for h in hits] == [h.word_id for h in alone]
        assert [h.score for h in hits] == pytest.approx([h.score for h in alone], abs=1e-5)


def test_many_sentence_queries_at_once_equal_one_by_one(sample_index):
    texts = ["a heron standing in shallow water", "the bank raised its interest rates", "batting practice"]
    for options in ({}, {"doc_ids": ["river_walk.md", "town_bank.md"]}):
        together = sample_index.search_sentences_many(texts, k=5, **options)
        for text, hits in zip(texts, together, strict=True):
            alone = sample_index.search_sentences(text, k=5, **options)
            assert [h.sentence_id for h in hits] == [h.sentence_id for h in alone]
            assert [h.score for h in hits] == pytest.approx([h.score for h in alone], abs=1e-5)
    assert sample_index.search_sentences_many([]) == []


@pytest.mark.parametrize(
    ("query", "word"), [("The [bat]ter swung hard", "batter"), ("The bat[ter] swung hard", "batter")]
)
def test_brackets_inside_a_word_ask_for_the_whole_word(sample_index, sample_index_dir, runner, query, word):
    expected = f"brackets must surround a whole word: {word!r}"
    with pytest.raises(senseindex.QueryError, match=re.escape(expected)):
        senseindex.parse_word_query(query)
    with pytest.raises(senseindex.QueryError, match=re.escape(expected)):
        sample_index.search_word(query, k=3)
    result = runner.invoke(main, ["query", "--word", query, "--index", str(sample_index_dir)])
    assert result.exit_code == 1
    assert result.output == f"Error: {expected}\n"
    # a bracket next to punctuation still marks a whole word
    assert senseindex.parse_word_query("The [bat]'s handle broke").form == "bat"
