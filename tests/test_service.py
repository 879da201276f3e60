"""The HTTP service: a real `senseindex serve` process on a free loopback port, spoken to over HTTP.

Every answer is compared with the Python API's answer to the same question, on a copy of the sample
index opened in this process.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from helpers import Server

import senseindex
from senseindex.cli import main

TOKEN = "test-token-7f3a"
SCORE_TOLERANCE = 1e-5


def _copy_index(source: Path, folder: Path) -> Path:
    target = folder / "served.idx"
    shutil.copytree(source, target)
    return target


@pytest.fixture(scope="module")
def served_dir(sample_index_dir, tmp_path_factory) -> Path:
    """A copy of the sample index that the open server may change."""
    return _copy_index(sample_index_dir, tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def server(served_dir):
    """A server with no token and default limits."""
    running = Server(served_dir)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def guarded_server(sample_index_dir, tmp_path_factory):
    """A server that requires a token, with small limits."""
    folder = _copy_index(sample_index_dir, tmp_path_factory.mktemp("guarded"))
    running = Server(
        folder,
        "--max-text-chars",
        "300",
        "--max-k",
        "50",
        "--max-batch",
        "3",
        "--max-body-mb",
        "0.01",
        "--allowed-host",
        "search.internal",
        "--max-connections",
        "4",
        token=TOKEN,
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def reference(served_dir):
    """The Python API over the same index files as the server (re-read after the server writes)."""
    with senseindex.open_index(served_dir, backend="torch") as index:
        yield index


def _same_hits(served: list[dict], expected: list, key: str) -> None:
    """Hits of the service equal the Python API's: same order and fields, scores within tolerance.

    Two empty lists prove nothing about the service, so they fail: compare empty answers directly.
    """
    assert served, "the service answered no hits; nothing to compare"
    wanted = [hit.to_dict() for hit in expected]
    assert [hit[key] for hit in served] == [hit[key] for hit in wanted]
    for got, want in zip(served, wanted, strict=True):
        assert abs(got.pop("score") - want.pop("score")) < SCORE_TOLERANCE
        if "best" in got:
            assert abs(got["best"].pop("score") - want["best"].pop("score")) < SCORE_TOLERANCE
        if "best_sentence" in got:
            got.pop("sentence_score"), want.pop("sentence_score")
            assert (
                abs(got["best_sentence"].pop("score") - want["best_sentence"].pop("score")) < SCORE_TOLERANCE
            )
            if got.get("passage_score") is not None:
                assert abs(got.pop("passage_score") - want.pop("passage_score")) < SCORE_TOLERANCE
        assert got == want


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["status"] == status
    message = body["error"]["message"]
    assert message and "\n" not in message and "Traceback" not in message
    return message


# --------------------------------------------------------------------------------------- endpoints


def test_health_and_info(server, reference):
    assert server.client.get("/health").json() == {"status": "ok", "writing": False}
    info = server.client.get("/info").json()
    assert info["api_version"] == "1"
    assert info["backend"] == "torch"
    assert info["model"] == senseindex.DEFAULT_MODEL
    reference.refresh()
    assert info["counts"] == reference.info()["counts"]
    assert info["settings"]["model_fingerprint"] == reference.settings["model_fingerprint"]
    assert info["limits"]["max_k"] == 1000
    assert info["device"] in ("cpu", "cuda") and info["threads"] >= 1


def test_serve_runs_the_model_with_the_threads_and_device_given(sample_index_dir, tmp_path):
    running = Server(_copy_index(sample_index_dir, tmp_path), "--threads", "1", "--device", "cpu")
    try:
        info = running.client.get("/info").json()
        assert (info["device"], info["threads"]) == ("cpu", 1)
        hits = running.post("/search/sentences", {"text": "a heron in shallow water", "k": 3}).json()["hits"]
        assert len(hits) == 3
    finally:
        running.stop()


@pytest.mark.parametrize(
    "text", ["a heron standing in shallow water", "the bank raised its interest rates", "batting practice"]
)
def test_sentence_search_equals_python_api(server, reference, text):
    served = server.post("/search/sentences", {"text": text, "k": 7}).json()["hits"]
    assert len(served) == 7
    _same_hits(served, reference.search_sentences(text, k=7), "sentence_id")


def test_sentence_filters_equal_a_brute_force_oracle(server, reference, sample_index_dir):
    text = "money and loans"
    wanted_docs = ["river_walk.md", "town_bank.md"]
    served = server.post(
        "/search/sentences", {"text": text, "k": 5, "filters": {"doc_ids": wanted_docs}}
    ).json()["hits"]
    # oracle: every stored sentence vector of those documents, scored with NumPy
    query = reference.embed_query_sentence(text)
    everything = reference.search_sentences(text, k=10_000)
    candidates = [hit for hit in everything if hit.doc_id in wanted_docs]
    assert {hit.doc_id for hit in candidates} == set(wanted_docs)
    vectors = np.stack([reference.embed_texts([hit.text])[0][0].vector for hit in candidates])
    order = np.argsort(-(vectors @ query), kind="stable")[:5]
    assert [h["sentence_id"] for h in served] == [candidates[i].sentence_id for i in order]
    assert {h["doc_id"] for h in served} <= set(wanted_docs)
    # no document matches this metadata: nothing, not an error
    none = server.post("/search/sentences", {"text": text, "filters": {"metadata": {"lang": "xx"}}})
    assert none.json() == {"hits": []}


def test_metadata_filter(server, reference):
    documents = [
        {
            "id": "meta-en",
            "text": "The ferry crossed the harbour at dawn.",
            "metadata": {"lang": "en", "year": 2024},
        },
        {
            "id": "meta-fr",
            "text": "The ferry left the harbour at noon.",
            "metadata": {"lang": "fr", "year": 2023},
        },
    ]
    assert server.post("/documents", {"documents": documents}).status_code == 200
    try:
        for metadata, expected in [
            ({"lang": "en"}, ["meta-en"]),
            ({"year": [2023, 2024]}, ["meta-en", "meta-fr"]),
            ({"lang": "en", "year": 2023}, []),
        ]:
            hits = server.post(
                "/search/sentences",
                {"text": "a ferry in the harbour", "k": 5, "filters": {"metadata": metadata}},
            ).json()["hits"]
            assert sorted(h["doc_id"] for h in hits) == expected
            reference.refresh()
            in_process = reference.search_sentences("a ferry in the harbour", k=5, metadata=metadata)
            if expected:
                _same_hits(hits, in_process, "sentence_id")
            else:  # no document matches both filters, in the service or in process
                assert in_process == []
    finally:
        for document in documents:
            server.client.delete(f"/documents/{document['id']}")


def test_word_search_equals_python_api_in_every_form(server, reference):
    expected = reference.search_word("I sat on the [bank] of the river", k=6)
    marked = server.post("/search/words", {"text": "I sat on the [bank] of the river", "k": 6}).json()["hits"]
    _same_hits(marked, expected, "word_id")
    assert all("[" in hit["context"] for hit in marked)
    by_target = server.post(
        "/search/words", {"text": "I sat on the bank of the river", "target": "bank", "k": 6}
    ).json()["hits"]
    by_span = server.post(
        "/search/words", {"text": "I sat on the bank of the river", "start": 13, "end": 17, "k": 6}
    ).json()["hits"]
    assert (
        [h["word_id"] for h in by_target] == [h["word_id"] for h in by_span] == [h.word_id for h in expected]
    )


def test_other_words_equal_python_api(server, reference):
    text = "The [crane] lifted steel beams onto the roof"
    served = server.post("/search/words", {"text": text, "same_word": False, "k": 5}).json()["hits"]
    _same_hits(served, reference.search_similar_words(text, k=5), "lemma")


def test_document_search_equals_python_api(server, reference):
    served = server.post("/search/documents", {"text": "a family day out at the zoo", "k": 3}).json()["hits"]
    _same_hits(served, reference.search_documents("a family day out at the zoo", k=3), "doc_id")
    assert served[0]["doc_id"] == "zoo_visit.md"


def test_embed_equals_python_api(server, reference):
    texts = ["The bank raised its rates. We walked along the river bank.", "Unbelievably calm."]
    both = server.post("/embed", {"texts": texts}).json()
    expected = reference.embed_texts(texts)
    assert len(both["texts"]) == 2
    for served_text, expected_text in zip(both["texts"], expected, strict=True):
        for got, want in zip(served_text["sentences"], expected_text, strict=True):
            assert (got["text"], got["start"], got["end"]) == (want.text, want.start, want.end)
            assert np.allclose(got["vector"], want.vector, atol=1e-5)
            assert [(w["form"], w["start"], w["end"], w["pieces"]) for w in got["words"]] == [
                (w.form, w.start, w.end, list(w.pieces)) for w in want.words
            ]
            for got_word, want_word in zip(got["words"], want.words, strict=True):
                assert np.allclose(got_word["vector"], want_word.vector, atol=1e-5)
    pieces = both["texts"][1]["sentences"][0]["words"][0]["pieces"]  # a word of several WordPieces
    assert len(pieces) > 1 and "".join(p.removeprefix("##") for p in pieces) == "unbelievably"
    sentences_only = server.post("/embed", {"texts": texts, "granularity": "sentences"}).json()
    assert "words" not in sentences_only["texts"][0]["sentences"][0]
    assert len(sentences_only["texts"][0]["sentences"][0]["vector"]) == 384
    words_only = server.post("/embed", {"texts": texts, "granularity": "words"}).json()
    assert "vector" not in words_only["texts"][0]["sentences"][0]
    assert len(words_only["texts"][0]["sentences"][0]["words"][1]["vector"]) == 384


def test_add_replace_and_delete_documents(server, reference):
    text = "A kingfisher dived from the willow into the millpond."
    added = server.post("/documents", {"documents": [{"id": "notes/kingfisher.txt", "text": text}]}).json()
    assert (added["documents"], added["replaced"], added["unchanged"]) == (1, 0, 0)
    hits = server.post("/search/sentences", {"text": "kingfisher diving into a pond", "k": 1}).json()["hits"]
    assert hits[0]["doc_id"] == "notes/kingfisher.txt" and hits[0]["text"] == text
    reference.refresh()
    _same_hits(hits, reference.search_sentences("kingfisher diving into a pond", k=1), "sentence_id")

    again = server.post("/documents", {"documents": [{"id": "notes/kingfisher.txt", "text": text}]}).json()
    assert (again["documents"], again["unchanged"]) == (0, 1)
    changed = "A heron waited by the millpond all morning."
    replaced = server.post(
        "/documents", {"documents": [{"id": "notes/kingfisher.txt", "text": changed}]}
    ).json()
    assert (replaced["documents"], replaced["replaced"]) == (1, 1)
    hits = server.post(
        "/search/sentences", {"text": "millpond", "k": 3, "filters": {"doc_ids": ["notes/kingfisher.txt"]}}
    ).json()["hits"]
    assert [h["text"] for h in hits] == [changed]

    deleted = server.client.delete("/documents/notes/kingfisher.txt").json()
    assert deleted["documents"] == ["notes/kingfisher.txt"] and deleted["rows"]["documents"] == 1
    hits = server.post("/search/sentences", {"text": "a heron waited by the millpond", "k": 3}).json()["hits"]
    assert "notes/kingfisher.txt" not in {h["doc_id"] for h in hits}
    _error(server.client.delete("/documents/notes/kingfisher.txt"), 404)
    # a retried delete: with missing_ok the document that is gone already is passed over, and named
    retried = server.client.delete("/documents/notes/kingfisher.txt", params={"missing_ok": "true"})
    assert retried.status_code == 200, retried.text
    assert (retried.json()["documents"], retried.json()["missing"]) == ([], ["notes/kingfisher.txt"])
    assert "missing_ok" in _error(server.client.delete("/documents/x", params={"missing_ok": "maybe"}), 400)
    reference.refresh()
    assert server.client.get("/info").json()["counts"] == reference.info()["counts"]
    # and a document that is there is deleted as without it
    server.post("/documents", {"documents": [{"id": "notes/wren.txt", "text": "A wren sang in the hedge."}]})
    deleted = server.client.delete("/documents/notes/wren.txt", params={"missing_ok": "true"}).json()
    assert (deleted["documents"], deleted["missing"]) == (["notes/wren.txt"], [])


def test_sees_documents_another_process_adds(server, served_dir, runner, tmp_path):
    source = tmp_path / "otter.txt"
    source.write_text("An otter slid down the muddy bank into the stream.", encoding="utf-8")
    result = runner.invoke(main, ["add", str(source), "--index", str(served_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    hits = server.post("/search/sentences", {"text": "an otter sliding into a stream", "k": 1}).json()["hits"]
    assert hits[0]["doc_id"] == "otter.txt"
    assert server.client.delete("/documents/otter.txt").status_code == 200


def test_senses_equal_python_api(server, reference):
    reference.refresh()
    served = server.client.get("/senses/apple").json()
    assert served == json.loads(json.dumps(reference.induce_senses("apple").to_dict(assignments=False)))
    assert len(served["senses"]) == 2 and "assignments" not in served
    full = server.client.get(
        "/senses/apple", params={"senses": 3, "examples": 1, "assignments": "true"}
    ).json()
    assert len(full["senses"]) == 3 and len(full["assignments"]) == full["occurrences"]
    assert all(len(sense["typical"]) == 1 for sense in full["senses"])
    assert "does not occur" in _error(server.client.get("/senses/zeppelin"), 404)
    _error(server.client.get("/senses/apple", params={"senses": 0}), 400)
    _error(server.client.get("/senses/apple", params={"examples": "many"}), 400)


def test_openapi_lists_every_endpoint(server):
    schema = server.client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/search/sentences",
        "/search/words",
        "/search/documents",
        "/embed",
        "/documents",
        "/info",
        "/senses/{word}",
    ):
        assert path in paths
    assert "delete" in paths["/documents/{doc_id}"] and "get" in paths["/documents/{doc_id}"]
    assert schema["info"]["version"] == senseindex.__version__
    # the errors the service gives, with their schema; not the 422 it never gives
    assert '"422"' not in json.dumps(schema) and "HTTPValidationError" not in json.dumps(schema)
    error_ref = {"$ref": "#/components/schemas/Error"}
    for path, statuses in [
        ("/search/sentences", {"400", "413", "500"}),
        ("/search/words", {"400", "404", "413"}),
        ("/documents", {"400", "409", "413", "503", "507"}),
    ]:
        responses = paths[path]["post"]["responses"]
        assert statuses <= set(responses), (path, sorted(responses))
        assert responses["400"]["content"]["application/json"]["schema"] == error_ref
    assert "404" in paths["/documents/{doc_id}"]["delete"]["responses"]


def test_openapi_declares_the_servers_bounds(guarded_server):
    schema = guarded_server.client.get("/openapi.json").json()
    search = schema["components"]["schemas"]["SentenceSearch"]["properties"]
    assert (search["k"]["minimum"], search["k"]["maximum"]) == (1, 50)  # --max-k 50
    assert search["text"]["minLength"] == 1 and search["text"]["maxLength"] == 300
    assert schema["components"]["schemas"]["Embed"]["properties"]["texts"]["maxItems"] == 3
    assert "401" in schema["paths"]["/info"]["get"]["responses"]  # a server with a token


# ------------------------------------------------------------------------------------------- auth


def test_token_is_required_everywhere_but_health(guarded_server):
    anonymous = httpx.Client(base_url=guarded_server.url, timeout=60)
    wrong = httpx.Client(base_url=guarded_server.url, headers={"Authorization": "Bearer nope"}, timeout=60)
    try:
        assert anonymous.get("/health").status_code == 200
        requests = [
            ("GET", "/info", None),
            ("GET", "/openapi.json", None),
            ("POST", "/search/sentences", {"text": "bank"}),
            ("POST", "/search/words", {"text": "the [bank]"}),
            ("POST", "/search/documents", {"text": "bank"}),
            ("POST", "/embed", {"texts": ["bank"]}),
            ("POST", "/documents", {"documents": [{"id": "x", "text": "y"}]}),
            ("DELETE", "/documents/zoo_visit.md", None),
            ("GET", "/senses/bank", None),
        ]
        for client in (anonymous, wrong):
            for method, path, body in requests:
                response = client.request(method, path, json=body)
                _error(response, 401)
                assert response.headers["WWW-Authenticate"] == "Bearer"
            # the token is checked before the body is read: neither a malformed nor a huge body gets
            # further than 401
            _error(
                client.post(
                    "/search/sentences", content=b"{oops", headers={"Content-Type": "application/json"}
                ),
                401,
            )
            _error(client.post("/embed", json={"texts": ["a" * 50_000]}), 401)
            _error(client.get("/no/such/endpoint"), 401)
        # nothing was changed by the refused requests
        assert guarded_server.client.get("/info").json()["counts"]["documents"] == 13
        assert guarded_server.post("/search/sentences", {"text": "bank", "k": 1}).status_code == 200
    finally:
        anonymous.close()
        wrong.close()


# ----------------------------------------------------------------------------------------- errors


def test_bad_input_is_400(guarded_server):
    post = guarded_server.post
    as_json = {"Content-Type": "application/json"}
    assert "not valid JSON" in _error(
        guarded_server.client.post("/search/sentences", content=b"{oops", headers=as_json), 400
    )
    # curl -d without -H sends a form content type: the body is not taken for JSON, and the error says so
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    no_json = guarded_server.client.post("/search/sentences", content=b'{"text": "bank"}', headers=form)
    assert "Content-Type: application/json" in _error(no_json, 400)
    assert "text" in _error(post("/search/sentences", {"k": 3}), 400)
    assert "k" in _error(post("/search/sentences", {"text": "bank", "k": "three"}), 400)
    assert "k must be from 1 to 50" in _error(post("/search/sentences", {"text": "bank", "k": 51}), 400)
    _error(post("/search/sentences", {"text": "bank", "k": 0}), 400)
    # strict types: never converted
    assert "k" in _error(post("/search/sentences", {"text": "bank", "k": True}), 400)
    assert "k" in _error(post("/search/sentences", {"text": "bank", "k": "3"}), 400)
    _error(post("/search/documents", {"text": "bank", "k": 2.5}), 400)  # 2.0 is a whole number
    # the target given twice, by brackets and by a span
    both = {"text": "I sat on the [bank] of the river", "start": 0, "end": 1}
    assert "not both" in _error(post("/search/words", both), 400)
    assert "colour" in _error(post("/search/sentences", {"text": "bank", "colour": "red"}), 400)
    assert "empty" in _error(post("/search/sentences", {"text": "   "}), 400)
    assert "square brackets" in _error(post("/search/words", {"text": "no target here"}), 400)
    assert "does not occur" in _error(post("/search/words", {"text": "a river", "target": "bank"}), 400)
    assert "one word" in _error(post("/search/words", {"text": "the river bank", "start": 4, "end": 14}), 400)
    _error(post("/search/words", {"text": "the river bank", "start": 4}), 400)
    _error(post("/search/documents", {"text": "bank", "scoring": "best"}), 400)
    _error(post("/embed", {"texts": ["a"], "granularity": "letters"}), 400)
    assert "twice" in _error(
        post("/documents", {"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}), 400
    )
    _error(post("/documents", {"documents": [{"id": "   ", "text": "x"}]}), 400)


def test_too_large_is_413(guarded_server):
    post = guarded_server.post
    assert "limit is 300" in _error(post("/search/sentences", {"text": "bank " * 100}), 413)
    _error(post("/search/words", {"text": "the [bank] " + "x" * 300}), 413)
    assert "limit is 3" in _error(post("/embed", {"texts": ["a", "b", "c", "d"]}), 413)
    assert "texts to embed have 320" in _error(post("/embed", {"texts": ["a" * 160, "b" * 160]}), 413)
    too_many_ids = {"text": "bank", "filters": {"doc_ids": ["a", "b", "c", "d"]}}
    _error(post("/search/sentences", too_many_ids), 413)
    documents = [{"id": f"d{i}", "text": "x"} for i in range(4)]
    _error(post("/documents", {"documents": documents}), 413)
    assert "request body" in _error(post("/embed", {"texts": ["a" * 20_000]}), 413)
    # a body with no Content-Length, streamed in chunks, is cut off as it arrives
    chunks = (b'{"texts": ["' + b"a" * 4096 for _ in range(4))
    streamed = guarded_server.client.post(
        "/embed", content=chunks, headers={"Content-Type": "application/json"}
    )
    _error(streamed, 413)
    assert guarded_server.client.get("/info").json()["counts"]["documents"] == 13


def test_unknown_document_and_route_are_404(guarded_server):
    assert "no document" in _error(guarded_server.client.delete("/documents/not-there.md"), 404)
    _error(guarded_server.client.get("/no/such/endpoint"), 404)
    _error(guarded_server.client.get("/search/sentences"), 405)


def test_a_write_while_another_process_writes_is_409(server, served_dir):
    with open(served_dir / "write.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what any other writer holds
        response = server.post("/documents", {"documents": [{"id": "blocked", "text": "Not now."}]})
        assert "writing" in _error(response, 409)
    assert server.post("/documents", {"documents": [{"id": "blocked", "text": "Now."}]}).status_code == 200
    assert server.client.delete("/documents/blocked").status_code == 200


# ------------------------------------------------------------------------------------ concurrency


@pytest.mark.slow  # embeds 230,000 characters while being asked
def test_health_and_queries_answer_during_a_long_write_that_they_never_see_half_of(server):
    # 230,000 characters: more than two of the writer's 100,000-character chunks, so it commits on
    # its way (every 3 s at a chunk's end), and a reader that moved with those commits would see half
    documents = [
        {
            "id": f"bulk/{i:03}",
            "text": f"Delivery {i} of the harbour log. " + "The tide came in over the mudflats. " * 80,
        }
        for i in range(80)
    ]
    before = server.client.get("/info").json()["counts"]
    answer: dict[str, httpx.Response] = {}
    writer = threading.Thread(
        target=lambda: answer.setdefault("write", server.post("/documents", {"documents": documents}))
    )
    writer.start()
    # each round: /health, then the queries, then /health again; a round with "writing" on both
    # sides was answered while the write ran
    rounds: list[tuple[bool, dict, bool]] = []
    deadline = time.monotonic() + 900  # for a stuck server only: the loop ends when the write does
    try:
        while writer.is_alive() and time.monotonic() < deadline:
            writing_before = server.client.get("/health").json()["writing"]
            state = server.client.get("/info").json()["counts"]
            assert server.post("/search/sentences", {"text": "the tide", "k": 3}).status_code == 200
            rounds.append((writing_before, state, server.client.get("/health").json()["writing"]))
    finally:
        writer.join()
    assert answer["write"].status_code == 200 and answer["write"].json()["documents"] == 80
    after = server.client.get("/info").json()["counts"]
    assert after["documents"] == before["documents"] + 80
    # /health answers while the write runs (it does not wait for it)
    assert any(writing for writing, _, _ in rounds), "the write ended before /health could see it"
    # every state a reader saw is the one before the write or the one after it, never one between
    assert all(state in (before, after) for _, state, _ in rounds), rounds
    # and queries answered during the write, from the state before it
    assert any(state == before for writing, state, still in rounds if writing and still), rounds
    hits = server.post("/search/sentences", {"text": "Delivery 17 of the harbour log", "k": 1}).json()["hits"]
    assert hits[0]["doc_id"] == "bulk/017"
    for document in documents:
        assert server.client.delete(f"/documents/{document['id']}").status_code == 200


def test_concurrent_queries_share_forward_passes_and_get_their_own_answers(server):
    texts = [
        f"query {i}: " + text
        for i, text in enumerate(
            ["a heron in the shallows", "interest rates", "a crane on the site", "a zoo visit"] * 6
        )
    ]
    alone = {text: server.post("/search/sentences", {"text": text, "k": 5}).json()["hits"] for text in texts}
    before = server.client.get("/info").json()["query_batching"]
    together: dict[str, list] = {}
    barrier = threading.Barrier(len(texts))

    def ask(text: str) -> None:
        barrier.wait()
        together[text] = server.post("/search/sentences", {"text": text, "k": 5}).json()["hits"]

    threads = [threading.Thread(target=ask, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = server.client.get("/info").json()["query_batching"]
    calls = after["calls"] - before["calls"]
    runs = after["runs"] - before["runs"]
    assert calls == len(texts)
    assert runs < calls
    for text in texts:
        assert [h["sentence_id"] for h in together[text]] == [h["sentence_id"] for h in alone[text]]
        assert np.allclose([h["score"] for h in together[text]], [h["score"] for h in alone[text]], atol=1e-4)


# ---------------------------------------------------------------------------------- the command


def test_serve_errors_are_one_line(runner, sample_index_dir, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = str(taken.getsockname()[1])
        result = runner.invoke(main, ["serve", "--index", str(sample_index_dir), "--port", port])
        assert result.exit_code == 1
        assert (
            result.output.startswith("Error: cannot listen on 127.0.0.1:") and result.output.count("\n") == 1
        )
    finally:
        taken.close()
    missing = runner.invoke(main, ["serve", "--index", str(tmp_path / "nothing"), "--port", "0"])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    empty = runner.invoke(main, ["serve", "--index", str(sample_index_dir), "--port", "0", "--token", " "])
    assert empty.exit_code == 1 and "token is empty" in empty.output
    assert "Example" in runner.invoke(main, ["serve", "--help"]).output


def test_error_statuses_follow_the_error_hierarchy():
    from senseindex.service import status_of

    assert status_of(senseindex.DocumentNotFound("x")) == 404
    assert status_of(senseindex.WordNotFound("x")) == 404
    assert status_of(senseindex.QueryError("x")) == 400
    assert status_of(senseindex.IndexBusy("x")) == 409
    assert status_of(senseindex.IndexCorrupted("x")) == 500
    assert status_of(senseindex.ModelMismatch("x")) == 500  # the index was rebuilt: restart the server
    assert status_of(senseindex.DiskFull("x")) == 507
    assert status_of(senseindex.StorageError("x")) == 503


def test_request_bodies_are_json_documents(server):
    # the same request sent as raw bytes (as curl sends it) and through the client's JSON encoder
    raw = server.client.post(
        "/search/sentences",
        content=json.dumps({"text": "batting practice", "k": 2}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert raw.json() == server.post("/search/sentences", {"text": "batting practice", "k": 2}).json()


@pytest.mark.slow  # a server of its own per signal
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_cleanly_while_it_answers(sample_index_dir, stop_signal):
    running = Server(sample_index_dir)
    statuses: list[int | str] = []
    stop_asking = threading.Event()

    def ask() -> None:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            while not stop_asking.is_set():
                try:
                    statuses.append(
                        client.post("/search/sentences", json={"text": "a heron", "k": 3}).status_code
                    )
                except httpx.TransportError:  # refused or closed once the server has stopped
                    statuses.append("closed")
                    return

    askers = [threading.Thread(target=ask) for _ in range(6)]
    try:
        for asker in askers:
            asker.start()
        # the signal comes while queries are being answered
        deadline = time.monotonic() + 120
        while len(statuses) <= 20:
            assert time.monotonic() < deadline, f"only {len(statuses)} answers in 120 s"
            time.sleep(0.05)
        running.process.send_signal(stop_signal)
        assert running.process.wait(timeout=30) == 0
    finally:
        stop_asking.set()
        for asker in askers:
            asker.join()
        running.stop()
    answered = [status for status in statuses if status != "closed"]
    assert len(answered) > 20 and set(answered) == {200}  # every answer given was a full answer
    assert not any("Traceback" in line for line in running.log), "".join(running.log)


# ------------------------------------------------------------------------------- security defaults


def test_an_empty_token_variable_is_refused(sample_index_dir):
    # a secret that failed to load leaves the variable set but empty: the server must not start open
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "SENSEINDEX_TOKEN": ""}
    command = [sys.executable, "-m", "senseindex.cli", "serve", "--index", str(sample_index_dir)]
    process = subprocess.Popen(
        [*command, "--port", "0", "--backend", "torch", "--quiet"],
        env=environment,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first_line = process.stderr.readline()  # "Serving ..." from a server that started
        assert "SENSEINDEX_TOKEN is set but empty" in first_line, first_line
        assert process.wait(timeout=60) == 1
    finally:
        process.kill()
        process.wait()


def test_a_foreign_host_header_is_refused(server, guarded_server):
    port = server.url.rsplit(":", 1)[1]
    count = server.client.get("/info").json()["counts"]["documents"]
    for host in (
        "rebound.example",
        f"rebound.example:{port}",
        "127.0.0.1.rebound.example",
        "search.internal",
    ):
        assert "Host" in _error(server.client.get("/health", headers={"Host": host}), 400)
        refused = server.client.post(
            "/documents", json={"documents": [{"id": "rebound", "text": "Planted."}]}, headers={"Host": host}
        )
        _error(refused, 400)
    assert server.client.get("/info").json()["counts"]["documents"] == count  # nothing was stored
    for host in ("localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert server.client.get("/health", headers={"Host": host}).status_code == 200, host
    # --allowed-host adds a name
    assert guarded_server.client.get("/info", headers={"Host": "search.internal:8080"}).status_code == 200
    _error(guarded_server.client.get("/info", headers={"Host": "search.external"}), 400)


def _address(running: Server) -> tuple[str, int]:
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    return host.strip("[]"), int(port)


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the timeout only guards a hang)."""
    sock.settimeout(60)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


@pytest.fixture(scope="module")
def impatient_server(sample_index_dir):
    """A server with one-second read and idle timeouts."""
    running = Server(sample_index_dir, "--read-timeout", "1", "--keep-alive-timeout", "1")
    yield running
    running.stop()


def test_a_slow_request_is_cut_off_by_the_read_timeout(impatient_server):
    address = _address(impatient_server)
    headers = b"POST /search/sentences HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    for sent in (
        headers + b"Content-Length: 100\r\n\r\n" + b'{"text": "a her',  # the body stops
        headers + b"Content-Len",  # the headers stop
    ):
        with socket.create_connection(address) as sock:
            sock.sendall(sent)
            answer = _read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["status"] == 408
    assert impatient_server.post("/search/sentences", {"text": "a heron", "k": 1}).status_code == 200


def test_idle_connections_are_closed(impatient_server):
    address = _address(impatient_server)
    with socket.create_connection(address) as sock:  # never sends a request
        assert _read_until_closed(sock) == b""
    with socket.create_connection(address) as sock:  # idle after an answer
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1") == 1


def test_connections_beyond_the_limit_are_refused(guarded_server):
    address = _address(guarded_server)
    held = [socket.create_connection(address) for _ in range(5)]  # the limit is 4
    try:
        answer = _read_until_closed(held[-1])
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert "limit of 4 connections" in json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["message"]
    finally:
        for sock in held:
            sock.close()
    assert guarded_server.client.get("/health").status_code == 200


def test_the_index_path_is_told_only_behind_the_token(server, guarded_server, served_dir):
    assert "path" not in server.client.get("/info").json()
    assert str(served_dir.name) not in server.client.get("/info").text
    assert guarded_server.client.get("/info").json()["path"].endswith("served.idx")


def _exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one HTTP/1.1 request on an open connection and read its answer (status, headers, body)."""
    sock.sendall(request)
    sock.settimeout(60)  # a guard against a hang only
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed: {received!r}"
        received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "the connection closed mid-answer"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def test_an_unexpected_error_is_a_500_in_user_terms_that_keeps_the_connection(
    sample_index_dir, tmp_path, caplog
):
    import uvicorn

    from senseindex.service import create_app

    caplog.set_level(logging.INFO, logger="senseindex.service")
    index = senseindex.open_index(_copy_index(sample_index_dir, tmp_path), backend="torch")
    app = create_app(index, allowed_hosts=["127.0.0.1"], access_log=True)
    listener = socket.create_server(("127.0.0.1", 0))  # listening: a client waits in its backlog
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        index.close()  # the database connection is gone: every query now fails inside
        body = json.dumps({"text": "a heron", "k": 1}).encode()
        search = (
            b"POST /search/sentences HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"X-Request-Id: failing-query-1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        with socket.create_connection(listener.getsockname()) as sock:
            status, headers, answer = _exchange(sock, search)
            assert status == 500 and headers["x-request-id"] == "failing-query-1"
            message = json.loads(answer)["error"]["message"]
            assert "failing-query-1" in message and "log" in message
            assert "Error" not in message and "database" not in message and "\n" not in message
            # the same connection answers the next request
            status, headers, answer = _exchange(sock, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert status == 200 and headers["x-request-id"] != "failing-query-1"
        # the log has the details, under the request's id
        failures = [r for r in caplog.records if getattr(r, "request_id", None) == "failing-query-1"]
        assert any(r.exc_info for r in failures)
        assert any(getattr(r, "status", None) == 500 for r in failures)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        listener.close()


def test_every_answer_has_a_request_id(server):
    given = server.client.get("/health", headers={"X-Request-Id": "abc-123"})
    assert given.headers["X-Request-Id"] == "abc-123"
    made = {server.client.get("/health").headers["X-Request-Id"] for _ in range(3)}
    assert len(made) == 3 and all(len(made_id) >= 16 for made_id in made)
    refused = server.client.get("/health", headers={"X-Request-Id": "no spaces\tor tabs"})
    assert refused.headers["X-Request-Id"] != "no spaces\tor tabs"
    assert (
        _error(server.client.get("/no/such/endpoint"), 404)
        and "X-Request-Id" in server.client.get("/no/such/endpoint").headers
    )


@pytest.mark.slow  # embeds 12,000 characters
@pytest.mark.parametrize("granularity", ["sentences", "both"])
def test_queries_are_answered_while_a_big_embed_runs(server, granularity):
    sentences = [
        "The heron stood still in the shallow water.",
        "Interest rates rose again at the bank.",
        "A crane lifted steel beams onto the roof.",
        "Children watched the penguins at feeding time.",
    ]
    text = " ".join(sentences[i % 4] for i in range(300))[:12_000]
    embedded: dict[str, Any] = {}

    def embed() -> None:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            started = time.perf_counter()
            # sentences: a small answer, so nearly all of the time is the model's; both: a ~20 MB
            # answer built and sent in pieces beside the queries
            answer = client.post("/embed", json={"texts": [text], "granularity": granularity})
            embedded["seconds"] = time.perf_counter() - started
            embedded["status"] = answer.status_code
            embedded["sentences"] = answer.json()["texts"][0]["sentences"]

    embedder = threading.Thread(target=embed)
    embedder.start()
    latencies = []
    while embedder.is_alive():  # searches one after another until the embedding is done
        started = time.perf_counter()
        assert server.post("/search/sentences", {"text": "a heron", "k": 3}).status_code == 200
        latencies.append(time.perf_counter() - started)
    embedder.join()
    assert embedded["status"] == 200
    # every sentence ends with a full stop but the last, cut short
    assert len(embedded["sentences"]) == text.count(".") + (not text.endswith("."))
    assert all(len(sentence["vector"]) == 384 for sentence in embedded["sentences"])
    if granularity == "both":
        assert all(len(word["vector"]) == 384 for word in embedded["sentences"][-1]["words"])
    # run as one piece, the embedding held a query for nearly all of its model time; in short passes
    # with queries going first, a query waits for one pass at most (the bound is relative: a loaded
    # machine slows both alike)
    assert len(latencies) >= 10, (latencies, embedded["seconds"])
    assert max(latencies) < 0.2 * embedded["seconds"], (latencies, embedded["seconds"])


# --------------------------------------------------------------------------- what a service offers


def test_health_ready_metrics_and_documents(guarded_server, reference):
    anonymous = httpx.Client(base_url=guarded_server.url, timeout=60)
    try:
        head = anonymous.head("/health")
        assert head.status_code == 200 and head.content == b""
        assert anonymous.get("/ready").json() == {"status": "ready"}  # no token needed
        _error(anonymous.get("/metrics"), 401)
        _error(anonymous.get("/documents/zoo_visit.md"), 401)
    finally:
        anonymous.close()
    document = guarded_server.client.get("/documents/zoo_visit.md").json()
    assert document == json.loads(json.dumps(reference.get_document("zoo_visit.md")))
    assert "zoo" in document["text"].lower() and document["id"] == "zoo_visit.md"
    assert "no document" in _error(guarded_server.client.get("/documents/not-there.md"), 404)
    guarded_server.post("/search/sentences", {"text": "bank", "k": 1})
    metrics = guarded_server.client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    lines = metrics.text.splitlines()
    counted = [line for line in lines if line.startswith("senseindex_http_requests_total{")]
    assert any('route="/search/sentences"' in line and 'status="200"' in line for line in counted), counted
    assert any(line.startswith("senseindex_http_request_duration_seconds_bucket{") for line in lines)
    assert any(line.startswith("senseindex_model_runs ") for line in lines)


def test_json_log_request_ids_and_cors(sample_index_dir):
    running = Server(
        sample_index_dir, "--log-format", "json", "--cors-origin", "https://app.example", quiet=False
    )
    try:
        answer = running.client.get("/health", headers={"X-Request-Id": "trace-42"})
        assert answer.headers["X-Request-Id"] == "trace-42"
        made = running.post("/search/sentences", {"text": "a heron", "k": 1}).headers["X-Request-Id"]
        allowed = {"Origin": "https://app.example"}
        preflight = running.client.options(
            "/search/sentences",
            headers={
                **allowed,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert running.client.get("/health", headers=allowed).headers["Access-Control-Allow-Origin"] == (
            "https://app.example"
        )
        other = running.client.get("/health", headers={"Origin": "https://elsewhere.example"})
        assert "Access-Control-Allow-Origin" not in other.headers
    finally:
        running.stop()
    lines = [json.loads(line) for line in running.log if line.startswith("{")]
    assert len(lines) == len([line for line in running.log if line.strip()]), running.log  # all JSON
    requests = {line.get("request_id"): line for line in lines if "status" in line}
    assert requests["trace-42"]["path"] == "/health" and requests["trace-42"]["status"] == 200
    assert requests[made]["method"] == "POST" and requests[made]["duration_ms"] > 0


def test_no_cors_unless_asked(server):
    answer = server.client.get("/health", headers={"Origin": "https://app.example"})
    assert answer.status_code == 200 and "Access-Control-Allow-Origin" not in answer.headers


@pytest.mark.slow  # about 550 generated requests, ~30 s
def test_the_openapi_document_holds_under_schemathesis(sample_index_dir, tmp_path):
    # every check of schemathesis, on every operation of the document the server gives: bodies that
    # fit the schema are accepted, those that break it refused, every answer as declared
    pytest.importorskip("schemathesis")
    running = Server(
        _copy_index(sample_index_dir, tmp_path),
        *("--max-k", "50", "--max-text-chars", "300", "--max-batch", "3", "--max-body-mb", "0.01"),
        token=TOKEN,
    )
    try:
        tests = Path(__file__).resolve().parent
        command = [str(Path(sys.executable).parent / "st"), "--config-file", str(tests / "schemathesis.toml")]
        run = subprocess.run(
            [
                *command,
                "run",
                f"{running.url}/openapi.json",
                *("--header", f"Authorization: Bearer {TOKEN}"),
                *("--checks", "all", "--max-examples", "10", "--seed", "1", "--request-timeout", "60"),
            ],
            capture_output=True,
            text=True,
            timeout=600,  # a guard: the run takes well under a minute
        )
    finally:
        running.stop()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failure" not in run.stdout.split("SUMMARY")[-1].lower()
