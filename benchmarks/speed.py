"""Speed, memory and index size of senseindex, against the bare model forward pass in the same run.

    python benchmarks/speed.py ../shared/data/prose/war_and_peace.txt [--repeat 4] [--queries 200]

Prints one table:
  1. the ceiling: the novel's sentences through the bare transformers forward pass, length-sorted
     batches of 64, tokens/s;
  2. build-index end to end (a fresh process): wall time, words/s, tokens/s, ratio to (1);
  3. peak resident memory of the build, for the novel and for the novel repeated --repeat times;
  4. index size on disk: bytes per word occurrence (FAISS and SQLite apart), bytes per sentence;
  5. query latency p50/p95 (sentence, same-word frequent, same-word rare, --any-word), with the
     query-encoding share;
  6. recall@10 of approximate index types against exact search (none exist yet: the index is exact).
Benchmarks are not tests: nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import senseindex  # noqa: E402
from indexer.encoder import EncoderSettings, load_encoder  # noqa: E402
from indexer.text import split_text  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bare_forward_tokens_per_second(sentences: list[str]) -> tuple[float, int]:
    """The ceiling: token ids of every sentence through the model, length-sorted batches of 64."""
    import torch

    encoder = load_encoder(EncoderSettings())
    ids, _ = encoder.tokenize(sentences)
    width = encoder.max_length - 2
    sequences = sorted(([encoder._cls_id, *i[:width], encoder._sep_id] for i in ids), key=len)
    tokens = sum(len(s) - 2 for s in sequences)
    started = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, len(sequences), 64):
            batch = sequences[first : first + 64]
            longest = len(batch[-1])
            input_ids = torch.zeros((len(batch), longest), dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            for row, sequence in enumerate(batch):
                input_ids[row, : len(sequence)] = torch.tensor(sequence)
                mask[row, : len(sequence)] = 1
            encoder.model(input_ids=input_ids, attention_mask=mask)
    return tokens / (time.perf_counter() - started), tokens


def build_in_fresh_process(source: Path, index_dir: Path) -> tuple[dict, float, float]:
    """Run `senseindex build-index` as a child process: its JSON summary, wall seconds, peak RSS (MB)."""
    command = [
        sys.executable,
        "-c",
        "import sys; from cli import main; sys.exit(main())",
        "build-index",
        str(source),
        "--index",
        str(index_dir),
        "--overwrite",
        "--quiet",
        "--json",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"build failed: {result.stderr.strip()}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        log("warning: peak RSS of this child not above an earlier child's; figure is a lower bound")
    import json

    return json.loads(result.stdout), seconds, peak / 1024


def percentiles(values: list[float]) -> str:
    return f"{np.percentile(values, 50):.1f} / {np.percentile(values, 95):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("novel", type=Path, help="../shared/data/prose/war_and_peace.txt")
    parser.add_argument("--repeat", type=int, default=4, help="copies of the novel for the memory check")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if not args.novel.is_file():
        parser.error(f"{args.novel} is not a file")
    print(
        f"senseindex {senseindex.__version__} speed benchmark, {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        text = args.novel.read_text(encoding="utf-8")
        sentences = [text[s.start : s.end] for s in split_text(text)]
        log(f"{len(sentences)} sentences; measuring the bare forward pass")
        ceiling, tokens = bare_forward_tokens_per_second(sentences)
        log(f"ceiling {ceiling:.0f} tokens/s over {tokens} tokens")

        one = work / "novel"
        one.mkdir(exist_ok=True)
        shutil.copy(args.novel, one / "novel.txt")
        summary, seconds, peak_one = build_in_fresh_process(one, work / "novel.idx")
        log(f"1x build: {seconds:.0f} s, peak {peak_one:.0f} MB")
        many = work / f"novel-x{args.repeat}"
        many.mkdir(exist_ok=True)
        for copy in range(args.repeat):
            shutil.copy(args.novel, many / f"novel-{copy}.txt")
        summary_many, seconds_many, peak_many = build_in_fresh_process(many, work / "many.idx")
        log(f"{args.repeat}x build: {seconds_many:.0f} s, peak {peak_many:.0f} MB")

        index_dir = work / "novel.idx"
        sizes = {p.name: p.stat().st_size for p in index_dir.iterdir()}
        rows = [
            ["bare forward pass (ceiling), length-sorted batches of 64", f"{ceiling:,.0f} tokens/s", ""],
            [
                "build-index, end to end (fresh process, model load included)",
                f"{summary['tokens'] / seconds:,.0f} tokens/s, {summary['words'] / seconds:,.0f} words/s",
                f"{summary['tokens'] / seconds / ceiling:.2f}x ceiling; {seconds:.0f} s wall",
            ],
            [
                "build-index, as the library times it (model loaded)",
                f"{summary['tokens'] / summary['seconds']:,.0f} tokens/s",
                f"{summary['tokens'] / summary['seconds'] / ceiling:.2f}x ceiling",
            ],
            ["peak RSS of the build, 1x novel", f"{peak_one:,.0f} MB", f"{summary['words']:,} words"],
            [
                f"peak RSS of the build, {args.repeat}x novel",
                f"{peak_many:,.0f} MB",
                f"{peak_many / peak_one:.2f}x the 1x peak; {summary_many['words']:,} words",
            ],
            [
                "words.faiss per word occurrence",
                f"{sizes['words.faiss'] / summary['words']:,.0f} B",
                "exact IndexFlatIP, float32",
            ],
            [
                "index.sqlite per word occurrence (all tables)",
                f"{sizes['index.sqlite'] / summary['words']:,.0f} B",
                "documents, sentences, words, passages",
            ],
            ["sentences.faiss per sentence", f"{sizes['sentences.faiss'] / summary['sentences']:,.0f} B", ""],
        ]

        rng = random.Random(0)
        with senseindex.open_index(index_dir) as index:
            frequent = "prince"
            probe = [s for s in sentences if 40 < len(s) < 200]
            rare_candidates = {}
            for sentence in rng.sample(probe, 2000):
                for word in sentence.split():
                    word = word.strip(".,;:!?\"'()“”‘’").lower()
                    if word.isalpha() and len(word) > 6:
                        rare_candidates.setdefault(word, sentence)
            rare = next(
                w
                for w in sorted(rare_candidates)
                if 3 <= len(index.search_word(f"the [{w}]", k=10_000)) <= 20
            )
            counts = {
                "frequent": len(index.search_word(f"the [{frequent}]", k=10_000)),
                "rare": len(index.search_word(f"the [{rare}]", k=10_000)),
            }
            queries = rng.sample(probe, args.queries)
            frequent_queries = [s for s in probe if f" {frequent} " in s.lower()][: args.queries]
            kinds = {
                "sentence query": [(q, None) for q in queries],
                f"same-word, frequent ('{frequent}', {counts['frequent']:,} occurrences)": [
                    (q, frequent) for q in frequent_queries
                ],
                f"same-word, rare ('{rare}', {counts['rare']} occurrences)": [
                    (f"They spoke of the {rare} again.", rare) for _ in range(args.queries)
                ],
                "--any-word": [(q, frequent) for q in frequent_queries],
            }
            for name, items in kinds.items():
                total, encode = [], []
                for query, target in items:
                    started = time.perf_counter()
                    if name == "sentence query":
                        index.embed_query_sentence(query)
                        encoded = time.perf_counter()
                        index.search_sentences(query, k=10)
                    else:
                        from search.index import parse_word_query

                        index.embed_query_word(parse_word_query(query, target))
                        encoded = time.perf_counter()
                        if name == "--any-word":
                            index.search_similar_words(query, target=target, k=10)
                        else:
                            index.search_word(query, target=target, k=10)
                    finished = time.perf_counter()
                    encode.append(1000 * (encoded - started))
                    total.append(1000 * (finished - encoded))
                rows.append(
                    [
                        f"latency p50 / p95, {name}",
                        f"{percentiles(total)} ms",
                        f"of which query encoding {percentiles(encode)} ms ({len(items)} queries)",
                    ]
                )
        rows.append(["recall@10 of approximate index types", "—", "only the exact index exists so far"])
        print("\n| measure | value | notes |\n|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
