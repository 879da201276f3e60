"""Distributed build: a Ray actor pool against one process on the same corpus, in the same run.

    python benchmarks/scale.py NOVEL.txt [--fraction F] [--workers N] [--rounds R]

The novel is split into documents at its chapter headings (a sharded build partitions documents, and
one file is one document), written as JSONL in a temporary folder. Then, each in a fresh process with
the default settings:

  1. baseline: one process building an ordinary index with every core (``--workers 1``; torch uses
     one thread per core);
  2. Ray: ``--workers N --threads 1`` (a local Ray started by the build, N actors of one thread each,
     N shards).

Prints for each: wall time (model loading and, for Ray, starting Ray included), tokens/s, the ratio of
Ray's throughput to the baseline's (goal: at least 0.9), and peak resident memory of the process and
of each actor (as the actors report it). Benchmarks are not tests: nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run in a fresh process: builds the index, prints one JSON line with the summary and the peaks.
CHILD = r"""
import json, os, resource, sys
import senseindex
corpus, index, workers, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
peaks = {}
first = []
def report(progress):
    peaks[progress.worker_pid] = max(peaks.get(progress.worker_pid, 0), progress.worker_peak_memory)
    if not first:
        first.append((progress.seconds, progress.tokens))
summary = senseindex.build_index(
    [corpus], index,
    senseindex.EncoderSettings(threads=None if threads == "none" else int(threads)),
    workers=workers, progress_report=report,
)
print(json.dumps({
    "summary": summary.to_dict(),
    "worker_peaks": peaks,
    "process_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "first_report": first[0] if first else None,
}))
"""


def split_into_documents(text: str, fraction: float) -> list[dict[str, str]]:
    """The novel's chapters (and the front and back matter) as documents; the first ``fraction``."""
    parts = re.split(r"\n(?=CHAPTER [IVXLC]+\n)", text)
    documents = [{"id": f"part-{i:04d}", "text": part} for i, part in enumerate(parts) if part.strip()]
    return documents[: max(2, round(len(documents) * fraction))]


def run(corpus: Path, index: Path, workers: int, threads: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(corpus), str(index), str(workers), threads],
        capture_output=True,
        text=True,
        env=env,
        cwd=index.parent,
    )
    if result.returncode != 0:
        sys.exit(f"build failed: {result.stderr[-3000:]}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    data["wall"] = time.perf_counter() - started
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("novel", type=Path)
    parser.add_argument("--fraction", type=float, default=1.0, help="share of the chapters to index")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="pairs of runs, in alternating order")
    arguments = parser.parse_args()
    documents = split_into_documents(arguments.novel.read_text(encoding="utf-8"), arguments.fraction)
    ray_name = f"Ray {arguments.workers} actors x 1 thread"
    with tempfile.TemporaryDirectory(prefix="senseindex-scale-") as folder:
        corpus = Path(folder) / "novel.jsonl"
        corpus.write_text("\n".join(json.dumps(d) for d in documents) + "\n", encoding="utf-8")
        print(
            f"corpus: {len(documents)} documents, {corpus.stat().st_size / 1e6:.2f} MB, {os.cpu_count()} CPUs"
        )
        ratios = []
        for round_number in range(arguments.rounds):
            # alternate the order (AB, BA, ...) so a drift of the machine's speed does not favour one
            order = [(1, "none"), (arguments.workers, "1")]
            if round_number % 2:
                order.reverse()
            results = {}
            for workers, threads in order:
                index = Path(folder) / f"r{round_number}-w{workers}.idx"
                results[workers] = run(corpus, index, workers, threads)
            rates = {}
            for workers, name in ((1, "1 process x all cores"), (arguments.workers, ray_name)):
                data = results[workers]
                summary = data["summary"]
                rates[workers] = summary["tokens"] / summary["seconds"]
                print(
                    f"round {round_number + 1} {name:28s} {summary['documents']:5d} docs "
                    f"{summary['tokens']:9,d} tokens {summary['seconds']:7.1f} s build ({data['wall']:.1f} s "
                    f"process)  {rates[workers]:8,.0f} tokens/s  peak RSS process "
                    f"{data['process_peak'] / 2**20:,.0f} MiB"
                )
                if workers > 1:
                    for pid, peak in sorted(data["worker_peaks"].items()):
                        print(f"    actor pid {pid}: peak RSS {peak / 2**20:,.0f} MiB")
            single, ray = results[1]["summary"], results[arguments.workers]["summary"]
            same = (single["sentences"], single["words"]) == (ray["sentences"], ray["words"])
            ratios.append(rates[arguments.workers] / rates[1])
            print(
                f"round {round_number + 1} throughput ratio Ray / one process: {ratios[-1]:.3f}; "
                f"same rows: {same}"
            )
    print(f"throughput ratio, mean of {len(ratios)} rounds: {sum(ratios) / len(ratios):.3f} (goal >= 0.9)")
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")


if __name__ == "__main__":
    main()
