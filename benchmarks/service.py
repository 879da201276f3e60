"""Throughput and latency of `senseindex serve` under 1, 4 and 16 concurrent clients, on loopback.

    python benchmarks/service.py [--index DIR] [--requests 60] [--clients 1,4,16]

The index is the bundled sample corpus (built into a temporary folder unless --index is given). Each
client is a thread with its own HTTP connection sending --requests queries one after another, a fixed
mix: half sentence searches, half same-word searches, on a cycle of different queries. Per number of
clients the table gives requests/s, latency p50 and p99, and errors (non-200 answers; must be 0).

Two servers run in turn, each alone on the machine: the default (concurrent queries batched into one
forward pass) and `--max-query-batch 1` (every query on its own), so the table shows what batching
gives. The baseline row is the Python API called in this process, one query after another, on the
same queries: the service's cost over the library itself.

Each server is warmed up first with 10 requests per client at every number of clients (the first
batches of a new shape stall once while their kernels are built). The clients run on the same two
cores as the server, so the figures include their share.
Benchmarks are not tests: nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import senseindex  # noqa: E402

SENTENCE_QUERIES = [
    "a heron standing still in shallow water",
    "the bank raised its interest rates",
    "children watching the penguins at feeding time",
    "a crane lifting steel beams on the building site",
    "fresh bread and vegetables at the market stalls",
    "practising the guitar before a concert",
    "a pitcher throwing a fast ball",
    "waves breaking on the sand at low tide",
]
WORD_QUERIES = [
    "I sat on the [bank] of the river",
    "She deposited the cheque at the [bank]",
    "The [crane] lifted the steel beams",
    "A [crane] waded through the marsh",
    "He swung the [bat] and hit the ball",
    "A [bat] flew out of the cave at dusk",
    "The [pitch] of the note was too high",
    "She drew a [bow] across the strings",
]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def request_plan(count: int, offset: int) -> list[tuple[str, dict]]:
    """``count`` requests, alternating sentence and same-word searches, starting at ``offset`` in the
    query cycle (so concurrent clients ask different things)."""
    plan = []
    for i in range(count):
        j = offset + i
        if j % 2:
            plan.append(("/search/words", {"text": WORD_QUERIES[(j // 2) % len(WORD_QUERIES)], "k": 10}))
        else:
            plan.append(
                ("/search/sentences", {"text": SENTENCE_QUERIES[(j // 2) % len(SENTENCE_QUERIES)], "k": 10})
            )
    return plan


class Server:
    def __init__(self, index_dir: Path, backend: str, *options: str) -> None:
        command = [
            sys.executable,
            "-m",
            "senseindex.cli",
            "serve",
            "--index",
            str(index_dir),
            "--port",
            "0",
            "--quiet",
        ]
        self.process = subprocess.Popen(
            [*command, "--backend", backend, *options],
            cwd=ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.process.stderr.readline()
        if "Serving" not in line:
            raise SystemExit(f"the server did not start: {line}{self.process.stderr.read()}")
        self.url = line.split(" at ")[1].split(" ")[0]
        threading.Thread(target=self.process.stderr.read, daemon=True).start()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def run_clients(url: str, clients: int, requests: int) -> dict:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(number: int) -> None:
        plan = request_plan(requests, number * 7)
        mine, failed = [], 0
        with httpx.Client(base_url=url, timeout=120) as http:
            http.get("/health")  # connect before the clock starts
            barrier.wait()
            for path, body in plan:
                started = time.perf_counter()
                try:
                    ok = http.post(path, json=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                mine.append(time.perf_counter() - started)
                failed += not ok
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    values = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "seconds": round(seconds, 3),
        "requests_per_second": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p99_ms": round(float(np.percentile(values, 99)), 1),
        "errors": errors[0],
    }


def maximal_embed_text(characters: int) -> str:
    """Plain sentences up to ``characters`` (the service's default limit of one /embed: 20,000)."""
    sentences = [query[0].upper() + query[1:] + "." for query in SENTENCE_QUERIES]
    sentences += [query.replace("[", "").replace("]", "") + "." for query in WORD_QUERIES]
    text, i = "", 0
    while len(text) + len(sentences[i % len(sentences)]) + 1 <= characters:
        text += sentences[i % len(sentences)] + " "
        i += 1
    return text.strip()


# The embedding client, in a process of its own: receiving ~35 MB answers in the measuring process
# would make its queries wait for the interpreter lock, which no real client of the service shares.
EMBED_CLIENT = """
import json, sys, time
import httpx
url, embeds, granularity = sys.argv[1], int(sys.argv[2]), sys.argv[3]
text = sys.stdin.read()
seconds = []
with httpx.Client(base_url=url, timeout=600) as http:
    for _ in range(embeds):
        started = time.perf_counter()
        http.post("/embed", json={"texts": [text], "granularity": granularity}).raise_for_status()
        seconds.append(time.perf_counter() - started)
print(json.dumps(seconds))
"""


def embed_interference(url: str, characters: int, embeds: int, granularity: str = "both") -> dict:
    """Sentence-search latency alone, and while maximal /embed requests run one after another.

    One client (another process) embeds ``embeds`` texts of ``characters`` characters in turn (each
    answer ~35 MB of JSON at 20,000 with ``granularity`` both; a small one with sentences, so that
    nearly all of an /embed is the model's); this one sends sentence searches, one after another,
    until the embedding ends.
    """
    text = maximal_embed_text(characters)
    query = {"text": SENTENCE_QUERIES[0], "k": 10}
    with httpx.Client(base_url=url, timeout=600) as http:
        for _ in range(10):  # warm-up
            http.post("/search/sentences", json=query)
        body = {"texts": [text], "granularity": granularity}
        started = time.perf_counter()
        http.post("/embed", json=body).raise_for_status()  # alone (and a warm-up)
        embed_alone = time.perf_counter() - started
        idle = []
        for _ in range(40):
            started = time.perf_counter()
            http.post("/search/sentences", json=query).raise_for_status()
            idle.append(time.perf_counter() - started)
        embedder = subprocess.Popen(
            [sys.executable, "-c", EMBED_CLIENT, url, str(embeds), granularity],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert embedder.stdin is not None
        embedder.stdin.write(text)
        embedder.stdin.close()
        during = []
        while embedder.poll() is None:
            started = time.perf_counter()
            http.post("/search/sentences", json=query).raise_for_status()
            during.append(time.perf_counter() - started)
        assert embedder.stdout is not None
        output = embedder.stdout.read()
        if embedder.wait():
            raise SystemExit("the embedding client failed")
        embed_seconds = json.loads(output)
    idle_ms, during_ms = np.asarray(idle) * 1000, np.asarray(during) * 1000
    return {
        "granularity": granularity,
        "characters": len(text),
        "embed_alone_seconds": round(embed_alone, 2),
        "embed_seconds": round(float(np.mean(embed_seconds)), 2),
        "idle_p50_ms": round(float(np.percentile(idle_ms, 50)), 1),
        "during_queries": len(during),
        "during_p50_ms": round(float(np.percentile(during_ms, 50)), 1),
        "during_p99_ms": round(float(np.percentile(during_ms, 99)), 1),
        "during_max_ms": round(float(during_ms.max()), 1),
        "during_over_100_ms": int(np.sum(during_ms > 100)),
    }


def embed_model_seconds(index_dir: Path, backend: str, characters: int, rounds: int = 3) -> dict:
    """The model part of a maximal /embed in this process (main thread, as the service runs it):
    in passes of measured length with queries free to go between them (what the service does), and
    as one call of the encoder (the same sentences, unsliced). Medians of ``rounds`` alternations."""
    from senseindex.indexer.text import split_text, split_words

    text = maximal_embed_text(characters)
    with senseindex.open_index(index_dir, backend=backend) as index:
        state = index._state  # the encoder itself, for the unsliced baseline
        sentences = split_text(text, state.settings.sentence_splitting)
        texts = [text[s.start : s.end] for s in sentences]
        skip = state.settings.skip_stopwords
        spans = [
            [(w.start - s.start, w.end - s.start) for w in split_words(text, s, skip)] for s in sentences
        ]
        state.encoder.encode(texts, spans)  # warm-up of both
        state.queries.encode_long(texts, spans)
        whole, stepped = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            state.encoder.encode(texts, spans)
            whole.append(time.perf_counter() - started)
            steps_before = state.queries.steps_run
            started = time.perf_counter()
            state.queries.encode_long(texts, spans)
            stepped.append(time.perf_counter() - started)
            steps = state.queries.steps_run - steps_before
    return {
        "sentences": len(texts),
        "unsliced_seconds": round(float(np.median(whole)), 3),
        "sliced_seconds": round(float(np.median(stepped)), 3),
        "passes": steps,
    }


def python_api_baseline(index_dir: Path, backend: str, requests: int) -> dict:
    """The same queries through the Python API in this process, one after another."""
    with senseindex.open_index(index_dir, backend=backend) as index:
        index.speed_up_queries()  # traced, as `senseindex serve` runs it from its start
        plan = request_plan(requests, 0)
        for path, body in request_plan(30, 100):  # warm-up, as the servers get
            call(index, path, body)
        latencies = []
        started = time.perf_counter()
        for path, body in plan:
            begun = time.perf_counter()
            call(index, path, body)
            latencies.append(time.perf_counter() - begun)
        seconds = time.perf_counter() - started
    values = np.asarray(latencies) * 1000
    return {
        "clients": 1,
        "requests": len(plan),
        "seconds": round(seconds, 3),
        "requests_per_second": round(len(plan) / seconds, 1),
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p99_ms": round(float(np.percentile(values, 99)), 1),
        "errors": 0,
    }


def call(index: senseindex.SenseIndex, path: str, body: dict) -> None:
    if path == "/search/words":
        index.search_word(body["text"], k=body["k"])
    else:
        index.search_sentences(body["text"], k=body["k"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", type=Path, help="an index of the sample corpus (built if not given)")
    parser.add_argument("--requests", type=int, default=60, help="requests per client")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--backend", default="auto", choices=senseindex.BACKENDS)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON lines too")
    parser.add_argument("--embed-only", action="store_true", help="only the /embed interference figures")
    parser.add_argument("--embeds", type=int, default=3, help="maximal /embed requests in a row")
    arguments = parser.parse_args()
    client_counts = [int(c) for c in arguments.clients.split(",")]

    with tempfile.TemporaryDirectory() as work:
        index_dir = arguments.index
        if index_dir is None:
            index_dir = Path(work) / "sample.idx"
            log("building the sample index")
            senseindex.build_index([str(ROOT / "data" / "sample")], index_dir)
        log("the model part of a maximal /embed, sliced and unsliced, in process")
        model_part = embed_model_seconds(index_dir, arguments.backend, 20_000)
        log("queries while maximal /embed requests run")
        server = Server(index_dir, arguments.backend)
        try:
            rows = [
                embed_interference(server.url, 20_000, arguments.embeds, granularity)
                for granularity in ("both", "sentences")
            ]
        finally:
            server.stop()
        print_interference(rows, model_part)
        if arguments.embed_only:
            return
        log("baseline: the Python API in this process")
        baseline = python_api_baseline(index_dir, arguments.backend, arguments.requests)
        rows = [("Python API, in process (baseline)", baseline)]
        for label, options in [
            ("service, batched (default)", ()),
            ("service, --max-query-batch 1", ("--max-query-batch", "1")),
        ]:
            server = Server(index_dir, arguments.backend, *options)
            try:
                # Warm-up, concurrent too: the first batches of each new shape stall once for ~200 ms
                # while the kernels for that shape are built.
                for clients in client_counts:
                    run_clients(server.url, clients, 10)
                with httpx.Client(base_url=server.url, timeout=120) as http:
                    batching_before = http.get("/info").json()["query_batching"]
                for clients in client_counts:
                    log(f"{label}: {clients} clients x {arguments.requests} requests")
                    rows.append((label, run_clients(server.url, clients, arguments.requests)))
                with httpx.Client(base_url=server.url, timeout=120) as http:
                    batching = http.get("/info").json()["query_batching"]
                calls = batching["calls"] - batching_before["calls"]
                runs = batching["runs"] - batching_before["runs"]
                log(f"{label}: {calls} query embeddings in {runs} model runs")
            finally:
                server.stop()

    cpu = platform.processor() or platform.machine()
    python = platform.python_version()
    print(f"\nMachine: {os.cpu_count()} cores, {cpu}, Python {python}, backend {arguments.backend}")
    print(f"Sample index; {arguments.requests} requests per client, half sentence, half same-word; k=10\n")
    print("| server | clients | requests/s | × baseline | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, row in rows:
        ratio = row["requests_per_second"] / baseline["requests_per_second"]
        print(
            f"| {label} | {row['clients']} | {row['requests_per_second']:.1f} | {ratio:.2f} | "
            f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['errors']} |"
        )
    if arguments.json:
        for label, row in rows:
            print(json.dumps({"server": label, **row}))


def print_interference(rows: list[dict], model_part: dict) -> None:
    row = rows[0]
    print(
        "\nSentence searches (k=10) one after another, alone and while maximal "
        f"/embed requests ({row['characters']:,} characters each) run one after another:\n"
    )
    print(
        "| /embed answer | /embed alone, s | beside the queries, s | queries | p50 ms | p99 ms | max ms "
        "| over 100 ms | alone p50 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['granularity']} | {row['embed_alone_seconds']} | {row['embed_seconds']} | "
            f"{row['during_queries']} | {row['during_p50_ms']} | {row['during_p99_ms']} | "
            f"{row['during_max_ms']} | {row['during_over_100_ms']} | {row['idle_p50_ms']} |"
        )
    for row in rows:
        print(json.dumps(row))
    ratio = model_part["sliced_seconds"] / model_part["unsliced_seconds"]
    print(
        f"\nThe model part of one /embed ({model_part['sentences']} sentences), in process: "
        f"{model_part['unsliced_seconds']} s in one encoder call, {model_part['sliced_seconds']} s in "
        f"{model_part['passes']} passes ({ratio:.2f}x)"
    )
    print(json.dumps(model_part))


if __name__ == "__main__":
    main()
