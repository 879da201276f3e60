"""A build's commits: how often they land, and how many bytes the build writes for them.

    python benchmarks/commits.py [--documents 300] [--threads 1] [--baseline DIR] [--work DIR]

Builds a corpus of short documents (six sentences of the bundled sample each) in a subprocess with the
torch backend, and meanwhile reads the index's database every 50 ms: each rise of the highest document
row is a commit. Prints the time from the first progress report to the first commit, the commit
intervals (median, 95th percentile, largest), the bytes the build process wrote (``wchar`` of
``/proc/PID/io``: shard files, SQLite and its log) and the bytes the finished index holds.

``--baseline DIR`` runs the same build with the senseindex tree in DIR too (e.g. an earlier release
unpacked there), once as it is and once with its chunks cut to 3,000 characters, so that it commits
about as often as this tree; the ratio of bytes written is the figure to compare.

Benchmarks are not tests: nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
SMALL_CHUNKS = (
    "import senseindex.indexer.pipeline_chunks as chunks; "
    "chunks.CHUNK_CHARACTERS = chunks.FIRST_CHUNK_CHARACTERS = 3000; "
)
BUILD = (
    "import sys, senseindex; "
    "senseindex.build_index([sys.argv[1]], sys.argv[2], senseindex.EncoderSettings(backend='torch', "
    "threads=int(sys.argv[3])), progress=lambda done, total: print('progress', flush=True))"
)


def write_corpus(path: Path, documents: int) -> int:
    """A JSONL corpus of short documents; returns its characters."""
    rng = random.Random(1)
    pool = []
    for source in sorted(SAMPLE.iterdir()):
        for paragraph in source.read_text(encoding="utf-8").split("\n\n"):
            pool += [s.strip() + "." for s in paragraph.replace("\n", " ").split(". ") if len(s.split()) > 4]
    texts = [" ".join(rng.sample(pool, 6)) for _ in range(documents)]
    path.write_text("\n".join(json.dumps({"id": f"d{i:05d}", "text": t}) for i, t in enumerate(texts)) + "\n")
    return sum(len(t) for t in texts)


def last_document(index: Path) -> int:
    database = index / "index.sqlite"
    if not database.exists():
        return 0
    try:
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
        try:
            return connection.execute("select coalesce(max(id), 0) from documents").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error:
        return 0


def run(tree: Path, corpus: Path, index: Path, threads: int, prefix: str = "") -> dict:
    """Build ``corpus`` with the senseindex of ``tree``, watching its commits."""
    environment = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", prefix + BUILD, str(corpus), str(index), str(threads)],
        cwd=tree,
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
    )
    reports: list[float] = []

    def read_reports() -> None:
        for _ in process.stdout:
            reports.append(time.monotonic())

    threading.Thread(target=read_reports, daemon=True).start()
    commits: list[float] = []
    seen = 0
    written = 0
    while process.poll() is None:
        row = last_document(index)
        if row > seen:
            seen = row
            commits.append(time.monotonic())
        try:
            io = dict(line.split(": ") for line in Path(f"/proc/{process.pid}/io").read_text().splitlines())
            written = int(io["wchar"])
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    intervals = [b - a for a, b in itertools.pairwise(commits)]
    size = sum(p.stat().st_size for p in index.iterdir() if p.is_file())
    return {
        "exit": process.returncode,
        "commits": len(commits),
        "first_commit_after_progress_s": round(commits[0] - reports[0], 2) if commits and reports else None,
        "interval_median_s": round(statistics.median(intervals), 2) if intervals else None,
        "interval_p95_s": round(sorted(intervals)[int(0.95 * (len(intervals) - 1))], 2)
        if intervals
        else None,
        "interval_max_s": round(max(intervals), 2) if intervals else None,
        "intervals_s": [round(i, 1) for i in intervals],
        "bytes_written": written,
        "index_bytes": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--baseline", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None)
    arguments = parser.parse_args()
    work = arguments.work or Path(tempfile.mkdtemp(prefix="senseindex-commits-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.jsonl"
    characters = write_corpus(corpus, arguments.documents)
    print(f"corpus: {arguments.documents} documents, {characters:,} characters; threads {arguments.threads}")
    runs = [("this tree", ROOT, "")]
    if arguments.baseline is not None:
        runs += [
            ("baseline", arguments.baseline, ""),
            ("baseline, 3,000-character chunks", arguments.baseline, SMALL_CHUNKS),
        ]
    for number, (name, tree, prefix) in enumerate(runs):
        result = run(tree, corpus, work / f"index-{number}", arguments.threads, prefix)
        print(f"{name}: {json.dumps(result)}")


if __name__ == "__main__":
    main()
