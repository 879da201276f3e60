"""Sentence search: paraphrases first, FAISS equal to a NumPy oracle, offsets exact."""

from __future__ import annotations

import numpy as np
import pytest

# (paraphrase of a corpus sentence, a distinctive fragment of that sentence)
PARAPHRASES = [
    ("A grey heron waited without moving in the shallow water, staring at the surface.", "stood motionless"),
    ("The bank lent small businesses millions of dollars over ten years.", "small-business loans"),
    ("It is polite in Japan to bend forward when you greet someone older.", None),
]


def test_a_paraphrase_ranks_its_original_first(sample_index, sample_documents):
    for paraphrase, fragment in PARAPHRASES[:2]:
        hits = sample_index.search_sentences(paraphrase, k=5)
        assert fragment in hits[0].text, (paraphrase, hits[0].text)
        # an unrelated query scores the original far lower
        unrelated = sample_index.search_sentences("The compiler reported a syntax error on line four.", k=300)
        original = next(h for h in unrelated if fragment in h.text)
        assert hits[0].score > original.score + 0.3


def test_sentence_hits_equal_a_brute_force_oracle(sample_index, sample_documents):
    """Embed the whole corpus again through the public API and rank with NumPy."""
    vectors, keys = [], []
    for doc_id, text in sample_documents.items():
        for sentence in sample_index.embed(text):
            vectors.append(sentence.vector)
            keys.append((doc_id, sentence.start))
    matrix = np.vstack(vectors)
    assert matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    assert len(keys) == sample_index.info()["counts"]["sentences"]
    for query in [
        "a market stall selling fruit",
        "the new tower crane on the building site",
        "seals on rocks",
    ]:
        query_vector = sample_index.embed_query_sentence(query)
        scores = matrix @ query_vector
        order = np.argsort(-scores)[:10]
        hits = sample_index.search_sentences(query, k=10)
        assert [(h.doc_id, h.start) for h in hits] == [keys[i] for i in order]
        assert [h.score for h in hits] == pytest.approx(scores[order].tolist(), abs=1e-4)


def test_every_hit_slices_back_to_its_text(sample_index, sample_documents):
    for hit in sample_index.search_sentences("a day out by the water", k=50):
        assert sample_documents[hit.doc_id][hit.start : hit.end] == hit.text
    for hit in sample_index.search_word("The [seal] slid off the rock into the sea.", k=50):
        document = sample_documents[hit.doc_id]
        assert document[hit.start : hit.end] == hit.form
        assert hit.sentence[hit.start - hit.sentence_start : hit.end - hit.sentence_start] == hit.form
        assert document[hit.sentence_start : hit.sentence_start + len(hit.sentence)] == hit.sentence
        assert "[" + hit.form + "]" in hit.context()


def test_hits_are_json_able(sample_index):
    import json

    sentence_hit = sample_index.search_sentences("fishing", k=1)[0]
    word_hit = sample_index.search_word("a [pitcher] of lemonade", k=1)[0]
    lemma_hit = sample_index.search_similar_words("a [pitcher] of lemonade", k=1)[0]
    for hit in (sentence_hit, word_hit, lemma_hit):
        assert json.loads(json.dumps(hit.to_dict()))["score"] == pytest.approx(hit.score)
