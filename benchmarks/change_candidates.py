"""`senseindex change` without words: every word of two slices of a million-word corpus, timed.

    python benchmarks/change_candidates.py ../shared/data [--work DIR] [--words 1000000]
        [--min-counts 5,2,1] [--top 20] [--runs 3] [--shards N] [--backend auto]

The corpus is the paragraphs of War and Peace, then SciFact abstracts (title and text) while it
holds at most ``--words`` words as the index counts them, one document each, the two sources in
turns so that every slice holds both. Each document has a ``year``, 1990 + its number modulo 20, and
a ``source``, ``novel`` or ``abstract``. The index is built once with the default settings (no
passage vectors, which `change` never reads) into WORK and kept between runs.

In one process, the index opened first (its vector files loaded), `SenseIndex.change` compares
without words the halves ``year`` 1990-1999 and 2000-2009 ``--runs`` times each (the first call
shown on its own): by ``apd`` at each of ``--min-counts``, by the other measures at the first, then
``source`` novel and abstract once. It prints the number of candidates (words with ``min_count``
occurrences in both slices), the seconds (for ``apd``, also those of the first pass alone: every
candidate measured, no senses induced, as many times), and the most changed words.

Benchmarks are not tests: nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import senseindex  # noqa: E402
from senseindex.indexer.text import Span, split_words  # noqa: E402
from senseindex.search.change import SliceTest  # noqa: E402
from senseindex.search.change_candidates import measure_candidates  # noqa: E402

SLICES = ("1990-1999", "2000-2009")
SOURCES = ("novel", "abstract")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_corpus(data: Path, target: Path, words: int) -> int:
    """The benchmark's JSONL corpus of about ``words`` words; returns the words it holds."""
    chosen: list[list[str]] = [[], []]
    total = 0
    novel = (line.strip() for line in (data / "prose" / "war_and_peace.txt").open(encoding="utf-8"))
    with (data / "beir_scifact" / "corpus.jsonl").open(encoding="utf-8") as lines:
        abstracts = [f"{r['title']}\n\n{r['text']}" for r in map(json.loads, lines)]
    for group, texts in enumerate((novel, abstracts)):
        for text in texts:
            counted = len(split_words(text, Span(0, len(text))))
            if not counted or total + counted > words:
                continue
            chosen[group].append(text)
            total += counted
    # the two sources in turns, by position in each, so that every slice holds both
    mixed = sorted(
        (
            (number / len(texts), group, text)
            for group, texts in enumerate(chosen)
            for number, text in enumerate(texts)
        ),
        key=lambda item: item[:2],
    )
    with target.open("w", encoding="utf-8") as out:
        for number, (_, group, text) in enumerate(mixed):
            record = {"id": f"d{number}", "text": text, "year": 1990 + number % 20, "source": SOURCES[group]}
            out.write(json.dumps(record) + "\n")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--words", type=int, default=1_000_000)
    parser.add_argument("--min-counts", default="5,2,1", help="apd is timed at each; the rest at the first")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shards", type=int, default=None, help="build the index in this many shards")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--measures", default=",".join(senseindex.CHANGE_MEASURES))
    arguments = parser.parse_args()
    work = arguments.work or Path(tempfile.mkdtemp(prefix="senseindex-candidates-"))
    work.mkdir(parents=True, exist_ok=True)
    name = "corpus.idx" if arguments.shards is None else f"corpus-{arguments.shards}-shards.idx"
    index_dir = work / name
    if not (index_dir / "index.sqlite").exists() and not (index_dir / "manifest.json").exists():
        source = work / "corpus.jsonl"
        total = write_corpus(arguments.data, source, arguments.words)
        log(f"building {index_dir} ({total:,} words)")
        started = time.perf_counter()
        senseindex.build_index(
            [str(source)],
            index_dir,
            senseindex.EncoderSettings(backend=arguments.backend),
            passages="none",
            shards=arguments.shards,
        )
        log(f"built in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    with senseindex.open_index(index_dir, backend=arguments.backend) as index:
        opened = time.perf_counter() - started
        counts = index.info()["counts"]
        print(
            f"Date: {time.strftime('%Y-%m-%d')}. Machine: {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}"
        )
        print(f"index: {index_dir} ({counts['documents']:,} documents, {counts['words']:,} words)")
        print(f"opened in {opened:.2f} s; top {arguments.top}")
        least = [int(n) for n in arguments.min_counts.split(",")]
        comparisons = [("year", *SLICES, "apd", n) for n in least]
        comparisons += [("year", *SLICES, m, least[0]) for m in arguments.measures.split(",") if m != "apd"]
        comparisons.append(("source", *SOURCES, "apd", least[0]))
        for field, first, second, measure, min_count in comparisons:
            seconds = []
            for _ in range(arguments.runs if field == "year" else 1):
                started = time.perf_counter()
                report = index.change(
                    field, first, second, measure=measure, top=arguments.top, min_count=min_count
                )
                seconds.append(time.perf_counter() - started)
            rest = f", then median {statistics.median(seconds[1:]):.2f} s" if len(seconds) > 1 else ""
            print(
                f"{field} {first} / {second}, {measure}, min_count {min_count}: {report.candidates:,} "
                f"candidates, first call {seconds[0]:.2f} s{rest} ({', '.join(f'{s:.2f}' for s in seconds)})"
            )
            if measure == "apd":
                # the first pass alone: every candidate measured, no senses induced
                alone = []
                for _ in range(len(seconds)):
                    started = time.perf_counter()
                    measure_candidates(index._state, field, (SliceTest(first), SliceTest(second)), min_count)
                    alone.append(time.perf_counter() - started)
                print(
                    f"  first pass alone: median {statistics.median(alone):.2f} s "
                    f"({', '.join(f'{s:.2f}' for s in alone)})"
                )
            shown = ", ".join(f"{w.word} {w.score(measure):.3f}" for w in report.words[:10])
            print(f"  most changed: {shown}")


if __name__ == "__main__":
    main()
