"""The Python API a backend program uses: writes through an open index, filters, spans, threads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import senseindex


@pytest.fixture
def index_copy(sample_index_dir, tmp_path):
    """A private copy of the sample index, opened (float32, like the session index)."""
    folder = tmp_path / "copy.idx"
    shutil.copytree(sample_index_dir, folder)
    with senseindex.open_index(folder, backend="torch") as index:
        yield index


def test_the_public_names_are_importable_and_typed():
    for name in senseindex.__all__:
        assert hasattr(senseindex, name), name
    from importlib import resources

    assert resources.files("senseindex").joinpath("py.typed").is_file()


def test_add_documents_through_an_open_index(index_copy):
    summary = index_copy.add_documents(
        [
            {"id": "otter", "text": "An otter slid into the stream.", "metadata": {"kind": "animal"}},
            senseindex.Document("heron", "A heron stood in the reeds."),
        ]
    )
    assert (summary.documents, summary.replaced, summary.unchanged) == (2, 0, 0)
    hits = index_copy.search_sentences("an otter in the water", k=1)
    assert hits[0].doc_id == "otter" and hits[0].metadata == {"kind": "animal"}
    again = index_copy.add_documents(
        [{"id": "otter", "text": "An otter slid into the stream.", "metadata": {"kind": "animal"}}]
    )
    assert (again.documents, again.unchanged) == (0, 1)
    replaced = index_copy.add_documents([{"id": "otter", "text": "An otter ate a fish on the bank."}])
    assert (replaced.documents, replaced.replaced) == (1, 1)
    assert [h.text for h in index_copy.search_sentences("otter", k=5, doc_ids=["otter"])] == [
        "An otter ate a fish on the bank."
    ]
    deleted = index_copy.delete_documents(["otter", "heron"])
    assert deleted.documents == ["otter", "heron"]
    assert index_copy.search_sentences("otter", k=5, doc_ids=["otter", "heron"]) == []
    with pytest.raises(senseindex.DocumentNotFound, match="no document 'otter'"):
        index_copy.delete_documents(["otter"])


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], "given twice"),
        ([{"id": "", "text": "x"}], "has no id"),
        ([{"id": "a"}], "has no text"),
        ([{"id": "a", "text": "x", "metadata": {"when": object()}}], "not JSON"),
        ([{"id": "a", "text": "x", "colour": "red"}], "unknown field 'colour'"),
        ([], "no documents"),
        (["just a string"], "not a document"),
    ],
)
def test_malformed_documents_write_nothing(index_copy, documents, message):
    before = index_copy.info()["counts"]
    with pytest.raises(senseindex.SourceError, match=message):
        index_copy.add_documents(documents)
    assert index_copy.info()["counts"] == before


def test_sentence_filters_against_a_numpy_oracle(index_copy, sample_documents):
    text = "the price of fish at the market"
    wanted = ["market_day.txt", "seaside_trip.md"]
    hits = index_copy.search_sentences(text, k=6, doc_ids=wanted)
    query = index_copy.embed_query_sentence(text)
    sentences = [
        (doc_id, sentence.text, sentence.vector)
        for doc_id in wanted
        for sentence in index_copy.embed(sample_documents[doc_id])
    ]
    scores = np.asarray([vector @ query for _, _, vector in sentences])
    best = np.argsort(-scores, kind="stable")[:6]
    assert [(h.doc_id, h.text) for h in hits] == [sentences[i][:2] for i in best]
    assert np.allclose([h.score for h in hits], scores[best], atol=1e-4)
    assert index_copy.search_sentences(text, doc_ids=["no-such-document"]) == []
    with pytest.raises(senseindex.QueryError, match="list of document ids"):
        index_copy.search_sentences(text, doc_ids="market_day.txt")
    with pytest.raises(senseindex.QueryError, match="mapping"):
        index_copy.search_sentences(text, metadata=["lang"])


def test_word_query_by_span(sample_index):
    by_marks = sample_index.search_word("I sat on the [bank] of the river", k=5)
    text = "I sat on the bank of the river"
    by_span = sample_index.search_word(text, span=(13, 17), k=5)
    by_part = sample_index.search_word(text, span=(14, 15), k=5)  # part of the word: the whole word
    assert [h.word_id for h in by_span] == [h.word_id for h in by_part] == [h.word_id for h in by_marks]
    for span, message in [((13, 40), "not within"), ((5, 14), "one word"), ((17, 18), "one word")]:
        with pytest.raises(senseindex.QueryError, match=message):
            sample_index.search_word(text, span=span)
    with pytest.raises(senseindex.QueryError, match="not both"):
        senseindex.parse_word_query(text, target="bank", span=(13, 17))


def test_concurrent_threads_get_the_answers_of_sequential_calls(sample_index):
    queries = [
        "I sat on the [bank] of the river",
        "She paid the cheque into the [bank]",
        "The [crane] lifted the beams",
        "A [crane] stood in the marsh",
    ] * 4
    alone = [sample_index.search_word(q, k=5) for q in queries]
    sentences_alone = [
        sample_index.search_sentences(q.replace("[", "").replace("]", ""), k=5) for q in queries
    ]
    before = sample_index.query_batching()
    results: dict[int, tuple] = {}
    barrier = threading.Barrier(len(queries))

    def ask(i: int) -> None:
        barrier.wait()
        text = queries[i]
        results[i] = (
            sample_index.search_word(text, k=5),
            sample_index.search_sentences(text.replace("[", "").replace("]", ""), k=5),
        )

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(queries))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = sample_index.query_batching()
    assert after["calls"] - before["calls"] == 2 * len(queries)
    assert after["runs"] - before["runs"] < 2 * len(queries)  # some calls shared a model run
    for i in range(len(queries)):
        words, sentences = results[i]
        assert [h.word_id for h in words] == [h.word_id for h in alone[i]]
        assert np.allclose([h.score for h in words], [h.score for h in alone[i]], atol=1e-4)
        assert [h.sentence_id for h in sentences] == [h.sentence_id for h in sentences_alone[i]]


def test_a_thread_serving_the_model_runs_every_query(sample_index):
    expected = sample_index.embed_sentences(["a heron in the shallows", "interest rates"])
    stop = threading.Event()
    server = threading.Thread(target=sample_index.serve_model, args=(stop,))
    server.start()
    try:
        before = sample_index.query_batching()
        got = sample_index.embed_sentences(["a heron in the shallows", "interest rates"])
        assert sample_index.query_batching()["runs"] == before["runs"] + 1
    finally:
        stop.set()
        server.join(timeout=10)
    assert not server.is_alive()
    assert np.allclose(got, expected, atol=1e-5)
    # with the serving thread gone, callers run the model themselves again
    assert np.allclose(sample_index.embed_sentences(["interest rates"])[0], expected[1], atol=1e-5)


def test_refresh_if_changed_sees_another_writer(index_copy, tmp_path):
    assert index_copy.refresh_if_changed() in (True, False)  # settle the opening state
    assert index_copy.refresh_if_changed() is False
    source = tmp_path / "kite.txt"
    source.write_text("A red kite circled above the hill.", encoding="utf-8")
    senseindex.add_documents([str(source)], index_copy.path, backend="torch")
    assert index_copy.search_sentences("a kite above a hill", k=1)[0].doc_id != "kite.txt"
    assert index_copy.refresh_if_changed() is True
    assert index_copy.search_sentences("a kite above a hill", k=1)[0].doc_id == "kite.txt"


def test_embed_texts_equals_embed_one_by_one(sample_index):
    texts = ["The bank raised its rates. We sat on the bank.", "", "Unbelievably calm water."]
    together = sample_index.embed_texts(texts)
    assert together[1] == []
    for text, sentences in zip(texts, together, strict=True):
        alone = sample_index.embed(text)
        assert [(s.text, s.start, s.end) for s in sentences] == [(s.text, s.start, s.end) for s in alone]
        for a, b in zip(sentences, alone, strict=True):
            assert np.allclose(a.vector, b.vector, atol=1e-5)
            assert [w.form for w in a.words] == [w.form for w in b.words]


def test_an_index_rebuilt_with_other_settings_is_refused_not_misread(index_copy, sample_corpus):
    senseindex.build_index(
        [str(sample_corpus / "zoo_visit.md")],
        index_copy.path,
        senseindex.EncoderSettings(layers="mean-last-4", backend="torch"),
        overwrite=True,
    )
    assert index_copy.search_sentences("penguins", k=1)  # still the state it opened
    with pytest.raises(senseindex.ModelMismatch, match="rebuilt with another model or settings"):
        index_copy.refresh()
    for query in (
        lambda: index_copy.search_sentences("penguins"),
        lambda: index_copy.search_word("the [bank] of the river"),
        lambda: index_copy.add_documents([{"id": "x", "text": "Never stored."}]),
    ):
        with pytest.raises(senseindex.ModelMismatch):
            query()
    assert senseindex.index_info(index_copy.path)["counts"]["documents"] == 1


TRACED_QUERIES = """
import json, sys
import numpy as np
import senseindex

sentences = ["a heron in the shallows", "the bank raised interest rates again this spring", "zoo"]
words = [senseindex.parse_word_query(q) for q in ("I sat on the [bank] of the river", "a [crane] lifted it")]
with senseindex.open_index(sys.argv[1], backend=sys.argv[2]) as index:
    def vectors():
        return (
            [index.embed_query_sentence(s) for s in sentences],  # one sequence per pass
            index.embed_sentences(sentences),  # one padded pass
            index.embed_query_words(words),
        )

    eager, traced_before = vectors(), index.query_batching()["traced"]
    while index.query_batching()["traced"] == 0 and index.query_batching()["calls"] < 200:
        index.embed_query_sentence("a query among many")
    traced = vectors()
    difference = max(
        float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(eager, traced, strict=True)
    )
    print(json.dumps({
        "traced_before": traced_before,
        "traced": index.query_batching()["traced"],
        "calls": index.query_batching()["calls"],
        "difference": difference,
    }))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_many_queries_run_traced_with_the_same_vectors(sample_index_dir, backend):
    # a fresh process: the encoder (and its trace) is shared by every index opened in a process
    result = subprocess.run(
        [sys.executable, "-c", TRACED_QUERIES, str(sample_index_dir), backend],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["traced_before"] == 0  # a few queries are not worth tracing for
    assert report["traced"] == 1 and report["calls"] <= 60
    assert report["difference"] <= 1e-5
