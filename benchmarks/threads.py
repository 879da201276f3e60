"""Query latency under a competing load: FAISS's threads and the model's threads.

    python benchmarks/threads.py ../shared/data/prose/war_and_peace.txt [--queries 30] [--rounds 2]

Builds (once, reused from --work) the default index of the novel, opens it in this process and times
in-process queries end to end (query encoding and search): a sentence query, a same-word query for a
frequent word, and an --any-word query (a FAISS search of the whole word table). Each configuration
is timed with the machine idle and with a competing load: one busy-looping process per core. The
configurations are FAISS's searches on its default threads (one per core: what a search did before
searches were pinned to one thread) or on one thread (what the library does now), and the model on
torch's default threads or one (``--threads 1``); each runs --rounds times in turn, its timings
pooled. Every p50 is given as a ratio to the baseline in the same run: the library's defaults (FAISS
one thread, torch default threads) on the idle machine, measured before and after the other runs
(the mean of the two p50s).

Benchmarks are not tests: nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import senseindex  # noqa: E402
from senseindex.indexer.storage import shards, threads  # noqa: E402
from senseindex.indexer.text import split_text  # noqa: E402

BUSY_LOOP = "while True:\n    pass\n"
FREQUENT = "prince"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def start_load(processes: int) -> list[subprocess.Popen]:
    """One CPU-bound Python process per core, competing with the queries."""
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(processes)]


def stop_load(load: list[subprocess.Popen]) -> None:
    for process in load:
        process.terminate()
    for process in load:
        process.wait(timeout=30)


def query_sets(novel: Path, count: int) -> dict[str, list[tuple[str, str | None]]]:
    text = novel.read_text(encoding="utf-8")
    sentences = [text[s.start : s.end] for s in split_text(text, "auto")]
    rng = random.Random(0)
    probe = [s for s in sentences if 40 < len(s) < 200]
    frequent = [s for s in probe if f" {FREQUENT} " in s.lower()]
    return {
        "sentence query": [(q, None) for q in rng.sample(probe, count)],
        f"same-word ('{FREQUENT}')": [(q, FREQUENT) for q in rng.sample(frequent, count)],
        "--any-word": [(q, FREQUENT) for q in rng.sample(frequent, count)],
    }


def time_queries(index: senseindex.SenseIndex, kind: str, items: list[tuple[str, str | None]]) -> list[float]:
    """Milliseconds per query, end to end, in this process."""
    timings = []
    for query, target in items:
        started = time.perf_counter()
        if kind == "sentence query":
            index.search_sentences(query, k=10)
        elif kind == "--any-word":
            index.search_similar_words(query, target=target, k=10)
        else:
            index.search_word(query, target=target, k=10)
        timings.append(1000 * (time.perf_counter() - started))
    return timings


def run_configuration(
    index: senseindex.SenseIndex,
    queries: dict[str, list[tuple[str, str | None]]],
    faiss_threads: int,
    torch_threads: int,
) -> dict[str, list[float]]:
    """Time every query kind with FAISS's search threads and the model's threads set."""
    import torch

    shards.SEARCH_THREADS = faiss_threads  # the library's setting, overridden for this measurement
    torch.set_num_threads(torch_threads)
    try:
        time_queries(index, "sentence query", queries["sentence query"][:3])  # warm up
        return {kind: time_queries(index, kind, items) for kind, items in queries.items()}
    finally:
        shards.SEARCH_THREADS = threads.SEARCH_THREADS


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("novel", type=Path)
    parser.add_argument("--queries", type=int, default=30, help="queries per kind, configuration and round")
    parser.add_argument("--rounds", type=int, default=2, help="times each configuration is run, in turn")
    parser.add_argument("--work", type=Path, default=Path("/tmp/senseindex-threads-bench"))
    args = parser.parse_args()
    import torch

    cores = os.cpu_count() or 1
    default_torch = torch.get_num_threads()
    default_faiss = threads.DEFAULT_THREADS
    index_dir = args.work / "novel.idx"
    if senseindex.index_info(index_dir)["counts"]["words"] if index_dir.exists() else 0:
        log(f"reusing {index_dir}")
    else:
        log(f"building {index_dir}")
        senseindex.build_index([str(args.novel)], index_dir, overwrite=True)
    queries = query_sets(args.novel, args.queries)
    configurations = [
        ("FAISS default threads, torch default threads", default_faiss, default_torch),
        ("FAISS 1 thread, torch default threads (library default)", 1, default_torch),
        ("FAISS default threads, torch 1 thread", default_faiss, 1),
        ("FAISS 1 thread, torch 1 thread (--threads 1)", 1, 1),
    ]
    results: dict[tuple[str, str], dict[str, list[float]]] = {}

    def measure(machine: str) -> None:
        """Every configuration in turn, ``--rounds`` times; timings of a configuration pooled."""
        for round_number in range(args.rounds):
            for name, faiss_count, torch_count in configurations:
                log(f"{machine}, round {round_number + 1}: {name}")
                timings = run_configuration(index, queries, faiss_count, torch_count)
                pooled = results.setdefault((machine, name), {kind: [] for kind in queries})
                for kind, values in timings.items():
                    pooled[kind].extend(values)

    with senseindex.open_index(index_dir) as index:
        info = index.info()
        words, sentences = info["counts"]["words"], info["counts"]["sentences"]
        log(f"{words:,} words, {sentences:,} sentences; backend {index.backend}")
        baseline_runs = [run_configuration(index, queries, 1, default_torch)]
        measure("idle")
        load = start_load(cores)
        try:
            time.sleep(1)  # let the load get going
            measure("load")
        finally:
            stop_load(load)
        baseline_runs.append(run_configuration(index, queries, 1, default_torch))
        backend = index.backend
    baseline = {
        kind: float(np.mean([np.percentile(run[kind], 50) for run in baseline_runs])) for kind in queries
    }
    print(
        f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {cores} cores; {words:,} words, "
        f"{sentences:,} sentences; backend {backend}; {args.queries} queries per kind x {args.rounds} "
        f"rounds; load: {cores} busy processes; FAISS default {default_faiss} threads, "
        f"torch default {default_torch}"
    )
    print("| machine | configuration | query | p50 ms | p95 ms | p50 / baseline |")
    print("|---|---|---|---:|---:|---:|")
    for kind in queries:
        print(
            f"| idle | baseline (FAISS 1, torch {default_torch}), before and after | {kind} | "
            f"{baseline[kind]:.1f} | | 1.00 |"
        )
    for (machine, name), timings in results.items():
        for kind, values in timings.items():
            p50, p95 = np.percentile(values, 50), np.percentile(values, 95)
            print(
                f"| {'idle' if machine == 'idle' else 'under load'} | {name} | {kind} | {p50:.1f} | "
                f"{p95:.1f} | {p50 / baseline[kind]:.2f} |"
            )


if __name__ == "__main__":
    main()
