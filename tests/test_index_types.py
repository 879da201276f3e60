"""Vector index types and shards: sharding changes no result, compressed types stay close to exact.

The shard size and the ``auto`` threshold are lowered (module constants) so the small sample corpus
spans many shard files and crosses the threshold; everything else is the real build and query path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_found

import senseindex
from senseindex.cli import main
from senseindex.indexer.storage import vectors

# builds with every vector index type: the slow tier
pytestmark = pytest.mark.slow

SAMPLE = str(Path(__file__).resolve().parent.parent / "data" / "sample")

SENTENCE_QUERIES = [
    "a market stall selling fruit",
    "the new tower crane on the building site",
    "seals on rocks",
    "interest rates went up again",
    "a quiet walk along the river",
]
WORD_QUERIES = [
    "I sat on the [bank] of the river",
    "The [bank] raised its rates",
    "The [crane] lifted steel beams",
    "A [crane] stood in the marsh",
    "He poured a [pitcher] of water",
]


def _build(tmp_path_factory, name: str, index_type: str, shard_vectors: int, exact_limit: int | None = None):
    folder = tmp_path_factory.mktemp(name) / "index"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vectors, "SHARD_BYTES", shard_vectors * 1536)
        if exact_limit is not None:
            patch.setattr(vectors, "EXACT_LIMIT", exact_limit)
            patch.setattr(vectors, "TRAINING_VECTORS", exact_limit)
        # float32, like the sample index these are compared with (see conftest)
        summary = senseindex.build_index(
            [SAMPLE], folder, senseindex.EncoderSettings(backend="torch"), index_type=index_type
        )
    return folder, summary


@pytest.fixture(scope="module")
def sharded_flat(tmp_path_factory):
    """Exact vectors cut into shards of 300 float32 vectors."""
    return _build(tmp_path_factory, "sharded", "flat", shard_vectors=300)


@pytest.fixture(scope="module")
def sq8(tmp_path_factory):
    """8-bit scalar quantisation, shards of about 1,200 vectors (384-byte codes)."""
    return _build(tmp_path_factory, "sq8", "SQ8", shard_vectors=300)


@pytest.fixture(scope="module")
def auto_small_threshold(tmp_path_factory):
    """auto with a threshold of 2,000 vectors: words (7,944) go over it, sentences (332) do not."""
    return _build(tmp_path_factory, "auto", "auto", shard_vectors=10_000, exact_limit=2_000)


def _word_keys(hits):
    return [(h.doc_id, h.start) for h in hits]


def test_sharding_changes_no_result(sample_index, sharded_flat):
    folder, summary = sharded_flat
    assert summary.index_types == {"sentences": "flat", "words": "flat", "passages": "flat"}
    info = senseindex.index_info(folder)
    word_files = [f for f in info["vector_files"] if f["table"] == "words"]
    assert len(word_files) == -(-info["counts"]["words"] // 300)  # ceil: every shard full but the last
    assert [f["first_id"] for f in word_files] == [1 + 300 * i for i in range(len(word_files))]
    with senseindex.open_index(folder, backend="torch") as sharded:
        for query in SENTENCE_QUERIES:
            exact = sample_index.search_sentences(query, k=10)
            hits = sharded.search_sentences(query, k=10)
            assert_found(hits, exact)
            assert [(h.doc_id, h.start) for h in hits] == [(h.doc_id, h.start) for h in exact]
            assert [h.score for h in hits] == pytest.approx([h.score for h in exact], abs=1e-6)
            documents, exact_documents = (
                sharded.search_documents(query, k=5),
                sample_index.search_documents(query, k=5),
            )
            assert_found(documents, exact_documents)
            assert [d.doc_id for d in documents] == [d.doc_id for d in exact_documents]
        for query in WORD_QUERIES:
            words, exact_words = sharded.search_word(query, k=20), sample_index.search_word(query, k=20)
            assert_found(words, exact_words)
            assert _word_keys(words) == _word_keys(exact_words)
            similar, exact_similar = (
                sharded.search_similar_words(query, k=10),
                sample_index.search_similar_words(query, k=10),
            )
            assert_found(similar, exact_similar)
            assert [h.lemma for h in similar] == [h.lemma for h in exact_similar]


def test_sq8_is_a_quarter_of_float32_and_close_to_exact(sample_index, sq8):
    folder, summary = sq8
    assert summary.index_types == {"sentences": "SQ8", "words": "SQ8", "passages": "SQ8"}
    info = senseindex.index_info(folder)
    word_files = [f for f in info["vector_files"] if f["table"] == "words"]
    assert len(word_files) > 1 and {f["index_type"] for f in word_files} == {"SQ8"}
    stored = sum(f["bytes"] for f in word_files)
    # 384 bytes of codes per vector; each file also carries a small header and the trained ranges
    assert stored <= 0.25 * 1536 * info["counts"]["words"] + 4096 * len(word_files)
    recalls = []
    with senseindex.open_index(folder, backend="torch") as compressed:
        for query in SENTENCE_QUERIES:
            exact = sample_index.search_sentences(query, k=10)
            hits = compressed.search_sentences(query, k=10)
            recalls.append(len({h.start for h in hits} & {h.start for h in exact}) / 10)
            exact_scores = {(h.doc_id, h.start): h.score for h in sample_index.search_sentences(query, k=300)}
            for hit in hits:  # a decoded 8-bit vector scores within a hair of the float32 one
                assert hit.score == pytest.approx(exact_scores[(hit.doc_id, hit.start)], abs=0.01)
        for query in WORD_QUERIES:
            exact = _word_keys(sample_index.search_word(query, k=10))
            recalls.append(len(set(_word_keys(compressed.search_word(query, k=10))) & set(exact)) / 10)
    assert np.mean(recalls) >= 0.95, recalls


def test_auto_compresses_only_tables_over_the_threshold(auto_small_threshold, runner):
    folder, summary = auto_small_threshold
    # a large word table gets lists of 8-bit codes (see test_ivf.py)
    assert summary.index_types["words"].startswith("IVF128,SQ8 nprobe=")
    assert (summary.index_types["sentences"], summary.index_types["passages"]) == ("flat", "flat")
    result = runner.invoke(main, ["info", "--index", str(folder)])
    assert result.exit_code == 0
    # one words file, whatever its number (each commit of the build writes the growing shard anew)
    word_files = [line for line in result.output.splitlines() if line.startswith("vector file words-")]
    assert len(word_files) == 1, result.output
    assert f".faiss: 7,944 vectors, {summary.index_types['words']}, " in word_files[0], result.output
    info = json.loads(runner.invoke(main, ["info", "--index", str(folder), "--json"]).output)
    assert info["settings"]["index_type"] == "auto"
    assert info["settings"]["words_index_type"] == summary.index_types["words"]


def test_a_type_too_big_to_train_on_a_small_table_falls_back_to_exact(tmp_path):
    summary = senseindex.build_index([SAMPLE], tmp_path / "ivf", index_type="IVF4096,SQ8")
    # 7,944 words and 332 sentences cannot train 4,096 clusters: stored exactly, and said so
    assert summary.index_types == {"sentences": "flat", "words": "flat", "passages": "flat"}
    with senseindex.open_index(tmp_path / "ivf") as index:
        assert index.search_word("I sat on the [bank] of the river", k=3)


def test_an_ivf_index_reads_vectors_by_id_and_searches(sample_index, tmp_path):
    senseindex.build_index([SAMPLE], tmp_path / "ivf", index_type="IVF16,SQ8")
    with senseindex.open_index(tmp_path / "ivf") as index:
        # the nprobe measured when the lists were trained is recorded with the type
        assert index.settings["words_index_type"].startswith("IVF16,SQ8 nprobe=")
        # same-word queries read the word's vectors by id: same hits as exact, up to 8-bit rounding
        for query in WORD_QUERIES:
            exact = _word_keys(sample_index.search_word(query, k=5))
            assert len(set(_word_keys(index.search_word(query, k=5))) & set(exact)) >= 4
        hits = index.search_sentences("seals on rocks", k=5)
        assert len(hits) == 5 and "seal" in hits[0].text.lower()


def test_an_hnsw_graph_index_builds_searches_and_reads_by_id(sample_index, tmp_path):
    summary = senseindex.build_index([SAMPLE], tmp_path / "hnsw", index_type="HNSW32")
    assert summary.index_types == {"sentences": "HNSW32", "words": "HNSW32", "passages": "HNSW32"}
    with senseindex.open_index(tmp_path / "hnsw") as index:
        for query in SENTENCE_QUERIES:
            exact = {h.start for h in sample_index.search_sentences(query, k=10)}
            assert len(exact & {h.start for h in index.search_sentences(query, k=10)}) >= 9
        for query in WORD_QUERIES:  # float vectors read back by id: same-word hits equal exact ones
            assert _word_keys(index.search_word(query, k=10)) == _word_keys(
                sample_index.search_word(query, k=10)
            )


def test_a_type_that_needs_more_training_vectors_waits_for_them(tmp_path):
    """IVF64 needs 39 x 64 = 2,496 training vectors: with a 500-vector training default the writer
    still waits for 2,496 words (the table has 7,944) instead of giving up on compression."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vectors, "TRAINING_VECTORS", 500)
        summary = senseindex.build_index([SAMPLE], tmp_path / "ivf", index_type="IVF64,SQ8")
    assert summary.index_types["words"].startswith("IVF64,SQ8 nprobe=")
    assert summary.index_types["sentences"] == "flat"  # 332 sentences cannot train 64 lists


@pytest.mark.parametrize(
    "index_type, message, extra",
    [
        ("IVF9,Foo", "not a FAISS index_factory string", []),
        ("IDMap,Flat", "must not contain IDMap", []),
        # 1,536-d word vectors split into 256 sub-vectors, but 384-d sentence vectors do not
        ("PQ256", "not a FAISS index_factory string for 384-d", ["--layers", "concat-last-4"]),
    ],
)
def test_a_bad_index_type_is_a_one_line_error_and_writes_nothing(
    runner, tmp_path, index_type, message, extra
):
    folder = tmp_path / "bad.idx"
    result = runner.invoke(
        main, ["build-index", SAMPLE, "--index", str(folder), "--index-type", index_type, "--quiet", *extra]
    )
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not folder.exists()
    assert not any(tmp_path.iterdir())
