"""Query latency of a sharded index as the number of shards grows, against one index of the same corpus.

    python benchmarks/fanout.py ../shared/data/prose/war_and_peace.txt [--shards 1 2 4 8] [--queries 100]
    python benchmarks/fanout.py ../shared/data/prose/war_and_peace.txt --compare 4 [--queries 100]

The novel (one paragraph a line) is cut into documents of --paragraphs lines, written as JSONL, and
built once per shard count with the default settings (one process, shards built one after another).
Each index is then opened in a fresh process, which times every query kind (p50 / p95 over the same
queries, the query's model pass included) and reports its peak resident memory; --rounds rounds go
over all the shard counts in turn and their timings are pooled. Latency ratios are against the
one-shard index of the same run.

With --compare S, the corpus is built twice in float32 with exact search (``--backend torch
--index-type flat``), as one index and as S shards, and every query kind is asked of both: the share of
queries whose top 10 hits are the same (same documents and offsets, in the same order up to ties within
1e-5; an 11th hit is asked for, to tell a tie cut at the 10th place) and the largest score difference
are printed.

Benchmarks are not tests: nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import senseindex  # noqa: E402

FREQUENT = "prince"
SENSE_WORD = "ball"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_documents(novel: Path, folder: Path, paragraphs: int) -> tuple[Path, list[str]]:
    """The novel as JSONL documents of ``paragraphs`` lines each; also the lines, for queries."""
    lines = [line.strip() for line in novel.read_text(encoding="utf-8").splitlines() if line.strip()]
    path = folder / "war_and_peace.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for number, start in enumerate(range(0, len(lines), paragraphs)):
            text = "\n\n".join(lines[start : start + paragraphs])
            out.write(json.dumps({"id": f"part-{number:04d}", "text": text}) + "\n")
    return path, lines


def time_queries(index_dir: str, queries: list[str]) -> dict:
    """Run in a child process: per query kind, latencies in ms; and the process's peak RSS."""
    timings: dict[str, list[float]] = {}
    with senseindex.open_index(index_dir) as index:
        word_queries = [q for q in queries if f" {FREQUENT} " in q.lower()] or [f"The {FREQUENT} smiled."]
        kinds = {
            "sentences": lambda q: index.search_sentences(q, k=10),
            "documents": lambda q: index.search_documents(q, k=10),
            f"same word ('{FREQUENT}')": lambda q: index.search_word(q, target=FREQUENT, k=10),
            "--any-word": lambda q: index.search_similar_words(q, target=FREQUENT, k=10),
        }
        for name, run in kinds.items():
            chosen = word_queries if "word" in name else queries
            run(chosen[0])  # warm
            timings[name] = []
            for query in chosen:
                started = time.perf_counter()
                run(query)
                timings[name].append(1000 * (time.perf_counter() - started))
        timings[f"senses of '{SENSE_WORD}'"] = []
        for _ in range(3):
            started = time.perf_counter()
            index.induce_senses(SENSE_WORD)
            timings[f"senses of '{SENSE_WORD}'"].append(1000 * (time.perf_counter() - started))
    peak = [line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM")]
    return {"timings": timings, "peak_mb": int(peak[0].split()[1]) / 1024}


def _identity(hit: object) -> tuple:
    return (getattr(hit, "doc_id", None), getattr(hit, "start", None), getattr(hit, "lemma", None))


def _same(expected: list, found: list, tolerance: float = 1e-5) -> tuple[bool, float]:
    """Whether two hit lists agree, and their largest score gap.

    Both lists are asked for one hit more than compared: the extra hit tells whether the last hits
    compared tie with one left out (then either may come last). Hits tied within ``tolerance`` may come in
    any order.
    """
    if len(expected) != len(found):
        return False, float("inf")
    gap = max((abs(a.score - b.score) for a, b in zip(expected, found, strict=True)), default=0.0)
    shown = max(0, len(expected) - 1)
    position, agree = 0, gap <= tolerance
    while agree and position < shown:
        end = position + 1
        while end < len(expected) and expected[end - 1].score - expected[end].score <= tolerance:
            end += 1
        cut = end > shown  # the tie runs past the hits compared: other members may fill its places
        agree = cut or {_identity(h) for h in expected[position:end]} == {
            _identity(h) for h in found[position:end]
        }
        if not agree:
            print(f"differ at {position}: {expected[position:end]} / {found[position:end]}", file=sys.stderr)
        position = end
    return agree, gap


def compare(corpus: Path, work: Path, shards: int, queries: list[str]) -> None:
    """Build one and a sharded float32 flat index of the corpus; print how their answers agree."""
    settings = senseindex.EncoderSettings(backend="torch")
    for name, count in (("one", None), ("sharded", shards)):
        log(f"building '{name}' (float32, flat)")
        senseindex.build_index([str(corpus)], work / name, settings, index_type="flat", shards=count)
    word_queries = [q for q in queries if f" {FREQUENT} " in q.lower()]
    rows = []
    with (
        senseindex.open_index(work / "one", backend="torch") as one,
        senseindex.open_index(work / "sharded", backend="torch") as sharded,
    ):
        kinds = {
            "sentences": (queries, lambda index, q: index.search_sentences(q, k=11)),
            "documents": (queries, lambda index, q: index.search_documents(q, k=11)),
            "same word": (word_queries, lambda index, q: index.search_word(q, target=FREQUENT, k=11)),
            "--any-word": (
                word_queries,
                lambda index, q: [h.best for h in index.search_similar_words(q, target=FREQUENT, k=11)],
            ),
            "by sense": (
                word_queries[:20],
                lambda index, q: sorted(
                    (
                        hit
                        for group in index.search_word_by_sense(q, target=FREQUENT, k=11)[2]
                        for hit in group.hits
                    ),
                    key=lambda hit: -hit.score,
                ),
            ),
        }
        for kind, (chosen, run) in kinds.items():
            outcomes = [_same(run(one, q), run(sharded, q)) for q in chosen]
            rows.append((kind, sum(a for a, _ in outcomes), len(outcomes), max(g for _, g in outcomes)))
        for word in (SENSE_WORD, "bank", "battle"):
            a, b = one.induce_senses(word), sharded.induce_senses(word)
            same = a.assignments.tolist() == b.assignments.tolist() and len(a.senses) == len(b.senses)
            rows.append((f"senses of '{word}' ({a.occurrences} uses)", int(same), 1, 0.0))
    print(f"\nOne index against {shards} shards, float32, flat ({time.strftime('%Y-%m-%d')})")
    print("| query kind | same hits | largest score difference |")
    print("|---|---|---|")
    for kind, agreeing, total, gap in rows:
        print(f"| {kind} | {agreeing} / {total} | {gap:.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("novel", type=Path)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--paragraphs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3, help="query rounds over all shard counts")
    parser.add_argument("--compare", type=int, metavar="S", help="compare one index with S shards")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        index_dir, queries_file = arguments.child
        print(json.dumps(time_queries(index_dir, json.loads(Path(queries_file).read_text()))))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="fanout-") as temporary:
        work = Path(temporary)
        corpus, lines = write_documents(arguments.novel, work, arguments.paragraphs)
        rng = random.Random(0)
        probe = [line for line in lines if 40 < len(line) < 200]
        queries = rng.sample(probe, arguments.queries)
        queries += [line for line in probe if f" {FREQUENT} " in line.lower()][: arguments.queries]
        queries_file = work / "queries.json"
        queries_file.write_text(json.dumps(queries))
        if arguments.compare:
            compare(corpus, work, arguments.compare, queries)
            return
        built = {}
        for shards in arguments.shards:
            index_dir = work / f"index-{shards}"
            log(f"building with {shards} shard(s)")
            started = time.perf_counter()
            summary = senseindex.build_index([str(corpus)], index_dir, shards=shards if shards > 1 else None)
            log(f"built {summary.words:,} words in {time.perf_counter() - started:.0f} s")
            built[shards] = summary
        # rounds alternate the shard counts, so a drift in the machine's speed touches them all alike
        rounds: dict[int, list[dict]] = {shards: [] for shards in arguments.shards}
        for number in range(arguments.rounds):
            for shards in arguments.shards:
                log(f"round {number + 1}: querying {shards} shard(s)")
                child = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        str(arguments.novel),
                        "--child",
                        str(work / f"index-{shards}"),
                        str(queries_file),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rounds[shards].append(json.loads(child.stdout))
        results = {
            shards: {
                "timings": {
                    name: [t for run in runs for t in run["timings"][name]] for name in runs[0]["timings"]
                },
                "peak_mb": max(run["peak_mb"] for run in runs),
                "types": built[shards].index_types,
                "words": built[shards].words,
            }
            for shards, runs in rounds.items()
        }
    base = results[arguments.shards[0]]["timings"]
    print(f"\nQuery latency by number of shards ({platform.node()}, {time.strftime('%Y-%m-%d')})")
    print(
        "| shards | " + " | ".join(f"{name} p50 / p95 ms (× one index)" for name in base) + " | peak RSS MB |"
    )
    print("|---" * (len(base) + 2) + "|")
    for shards, result in results.items():
        cells = []
        for name, values in result["timings"].items():
            ratio = np.percentile(values, 50) / np.percentile(base[name], 50)
            cells.append(f"{np.percentile(values, 50):.1f} / {np.percentile(values, 95):.1f} ({ratio:.2f}×)")
        print(f"| {shards} | " + " | ".join(cells) + f" | {result['peak_mb']:.0f} |")
    for shards, result in results.items():
        print(f"{shards} shard(s): {result['words']:,} words; index types {result['types']}")


if __name__ == "__main__":
    main()
