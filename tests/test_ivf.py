"""Inverted-file word tables: same-word queries exact, any-word close to exact, deletes, adds, the auto rule.

The sample corpus has 7,944 words: an explicit ``IVF32,Flat`` type (exact codes) trains on them, and
``auto`` with its threshold lowered (a module constant) turns them into ``IVF128,SQ8``; everything else
is the real build and query path.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import assert_found

import senseindex
from senseindex.cli import main
from senseindex.indexer.storage import vectors

# builds of the sample corpus: the slow tier
pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
FLOAT32 = senseindex.EncoderSettings(backend="torch")  # as the sample index (see conftest)
WORD_QUERIES = [
    "I sat on the [bank] of the river",
    "The [bank] raised its rates",
    "The [crane] lifted steel beams",
    "A [crane] stood in the marsh",
    "He poured a [pitcher] of water",
    "She bought fresh [apples] at the market",
]


def _words_type(folder: Path) -> set[str]:
    return {f["index_type"] for f in senseindex.index_info(folder)["vector_files"] if f["table"] == "words"}


def _word_keys(hits) -> list[tuple[str, int]]:
    return [(h.doc_id, h.start) for h in hits]


def _lemma_overlap(hits, exact) -> float:
    assert_found(hits, exact)
    return len({h.lemma for h in hits} & {h.lemma for h in exact}) / len(exact)


@pytest.fixture(scope="module")
def ivf_flat(tmp_path_factory) -> Path:
    """The sample corpus with its word vectors in 32 lists of exact (float32) codes."""
    folder = tmp_path_factory.mktemp("ivf") / "index"
    senseindex.build_index([str(SAMPLE)], folder, FLOAT32, index_type="IVF32,Flat")
    return folder


def test_an_ivf_word_table_answers_same_word_queries_exactly_as_flat(sample_index, ivf_flat):
    (recorded,) = _words_type(ivf_flat)
    assert recorded.startswith("IVF32,Flat nprobe=")  # the measured nprobe is recorded with the type
    assert 1 <= int(recorded.split("nprobe=")[1]) <= 32
    with senseindex.open_index(ivf_flat, backend="torch") as index:
        for query in WORD_QUERIES:
            hits, exact = index.search_word(query, k=50), sample_index.search_word(query, k=50)
            assert_found(hits, exact)
            # the occurrences' vectors are read by id: the same hits and scores as a flat table
            assert _word_keys(hits) == _word_keys(exact)
            assert [h.score for h in hits] == pytest.approx([h.score for h in exact], abs=1e-5)
            similar, exact_similar = (
                index.search_similar_words(query, k=10),
                sample_index.search_similar_words(query, k=10),
            )
            assert _lemma_overlap(similar, exact_similar) >= 0.7, query
    assert senseindex.check_index(ivf_flat).ok


def test_deleted_words_are_skipped_by_an_ivf_search(ivf_flat, tmp_path, sample_index):
    folder = tmp_path / "index"
    shutil.copytree(ivf_flat, folder)
    senseindex.delete_documents(folder, ["town_bank.md"])
    assert senseindex.check_index(folder).ok
    with senseindex.open_index(folder, backend="torch") as index:
        for query in WORD_QUERIES:
            similar = index.search_similar_words(query, k=20)
            assert_found(similar)
            assert all(hit.best.doc_id != "town_bank.md" for hit in similar)
            expected = [h for h in sample_index.search_word(query, k=50) if h.doc_id != "town_bank.md"]
            assert _word_keys(index.search_word(query, k=50))[: len(expected)] == _word_keys(expected)
        # money-sense banks are all in town_bank.md: none are found any more
        assert all(h.doc_id != "town_bank.md" for h in index.search_word(WORD_QUERIES[1], k=100))


def test_documents_added_to_an_ivf_index_are_found_exactly(tmp_path, sample_index):
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLE, corpus)
    later = corpus / "zoo_visit.md"
    kept = later.read_text(encoding="utf-8")
    later.unlink()
    folder = tmp_path / "index"
    senseindex.build_index([str(corpus)], folder, FLOAT32, index_type="IVF32,Flat")
    later.write_text(kept, encoding="utf-8")
    summary = senseindex.add_documents([str(corpus)], folder, backend="torch")
    assert summary.documents == 1
    # the added words (a few hundred) are stored exactly beside the trained lists
    types = _words_type(folder)
    assert "flat" in types and any(t.startswith("IVF32,Flat nprobe=") for t in types)
    assert senseindex.check_index(folder).ok
    with senseindex.open_index(folder, backend="torch") as index:
        assert index.info()["counts"] == sample_index.info()["counts"]
        for query in [*WORD_QUERIES, "The [crane] at the zoo stood on one leg"]:
            hits, exact = index.search_word(query, k=50), sample_index.search_word(query, k=50)
            assert_found(hits, exact)
            assert _word_keys(hits) == _word_keys(exact)
            assert [h.score for h in hits] == pytest.approx([h.score for h in exact], abs=1e-5)
            assert (
                _lemma_overlap(
                    index.search_similar_words(query, k=10), sample_index.search_similar_words(query, k=10)
                )
                >= 0.7
            )


def test_auto_stores_a_word_table_over_the_threshold_as_ivf_with_a_measured_nprobe(
    tmp_path, runner, sample_index
):
    folder = tmp_path / "index"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vectors, "EXACT_LIMIT", 2_000)
        summary = senseindex.build_index([str(SAMPLE)], folder, FLOAT32)
    # 7,944 words train 128 lists (39 vectors per list); 332 sentences stay exact
    assert summary.index_types["words"].startswith("IVF128,SQ8 nprobe=")
    assert summary.index_types["sentences"] == "flat"
    nprobe = int(summary.index_types["words"].split("nprobe=")[1])
    assert 1 <= nprobe < 128
    info = runner.invoke(main, ["info", "--index", str(folder)])
    assert info.exit_code == 0 and f"IVF128,SQ8 nprobe={nprobe}" in info.output, info.output
    assert senseindex.check_index(folder).ok
    with senseindex.open_index(folder, backend="torch") as index:
        assert index.settings["words_index_type"] == summary.index_types["words"]
        for query in WORD_QUERIES:
            exact = _word_keys(sample_index.search_word(query, k=10))
            # 8-bit codes: the same occurrences, up to rounding
            assert len(set(_word_keys(index.search_word(query, k=10))) & set(exact)) >= 8
            assert (
                _lemma_overlap(
                    index.search_similar_words(query, k=10), sample_index.search_similar_words(query, k=10)
                )
                >= 0.7
            )
