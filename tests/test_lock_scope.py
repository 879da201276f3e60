"""What an open index's lock covers: only reading the store. Work that needs no index (the model
pass, the clustering) runs outside it, so queries on other threads answer meanwhile."""

from __future__ import annotations

import sys
import threading

from senseindex.search.batching import QueryBatcher
from senseindex.search.senses import cluster_senses

ANSWER_DEADLINE = 60.0  # seconds; a deadline, not a pause: the wait ends as soon as the query answers


def test_search_word_by_sense_lets_other_queries_run_during_its_model_pass_and_clustering(sample_index):
    """Only the reads of a by-sense search hold the index's lock: while its thread runs the model and
    clusters the occurrences, a query on another thread gets its answer."""
    answered_meanwhile: dict[str, bool] = {}

    def another_query_answers() -> bool:
        answered = threading.Event()

        def query() -> None:
            sample_index.search_sentences("interest rates at the bank", k=1)
            answered.set()

        threading.Thread(target=query, daemon=True).start()
        return answered.wait(timeout=ANSWER_DEADLINE)

    # The probe stops the by-sense thread where it enters each step. The model pass is probed where
    # the by-sense call hands its text to the query batcher, not inside the batcher's run: there the
    # model is rightly busy, and the other query's own model pass would queue behind it.
    steps = {QueryBatcher.encode.__code__: "model pass", cluster_senses.__code__: "clustering"}

    def probe(frame, event, arg):  # the by-sense thread's profiler: sees each Python call it makes
        step = steps.get(frame.f_code) if event == "call" else None
        if step is not None and step not in answered_meanwhile:
            answered_meanwhile[step] = another_query_answers()

    results = []

    def by_sense() -> None:
        sys.setprofile(probe)
        try:
            results.append(sample_index.search_word_by_sense("I sat on the [bank] of the river", k=5))
        finally:
            sys.setprofile(None)

    thread = threading.Thread(target=by_sense)
    thread.start()
    thread.join(timeout=4 * ANSWER_DEADLINE)
    assert results, "the by-sense search did not finish"
    assert answered_meanwhile == {"model pass": True, "clustering": True}
    senses, _, groups = results[0]
    assert senses.word == "bank" and groups  # the probed search still answered in full
