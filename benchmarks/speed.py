"""Speed, memory and index size of senseindex, against the bare model forward pass in the same run.

    python benchmarks/speed.py ../shared/data/prose/war_and_peace.txt [--repeat 4] [--queries 200]

Prints one table:
  1. the ceiling: the novel's sentences through the bare transformers forward pass, length-sorted
     batches of 64, tokens/s; measured before and after the build, the ratio uses their mean (the
     machine's speed drifts by several per cent over minutes);
  2. build-index end to end (a fresh process, default settings) per backend (torch float32,
     torch-bf16, onnx): wall time, words/s, tokens/s, ratio to (1) and to that backend's own bare
     forward pass (how much the work around the model costs);
  3. peak resident memory of the build, for the novel and for the novel repeated --repeat times;
  4. index size on disk: bytes per word occurrence (FAISS and SQLite apart), and per index type;
  5. query latency p50/p95 (sentence, same-word frequent, same-word rare, --any-word) on the default
     index, with the query-encoding share measured in a separate call;
  6. recall@10 of every compressed or approximate index type against exact search, for word queries
     (whole word index, as --any-word searches it; and one word's occurrences, as same-word queries
     score them) and sentence queries. The types are built in this process with the library's own
     shard writer from the exact vectors of a `--index-type flat` build.
Benchmarks are not tests: nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
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
from senseindex.indexer.encoder import EncoderSettings, load_encoder  # noqa: E402
from senseindex.indexer.text import split_text  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bare_forward_tokens_per_second(sentences: list[str], backend: str = "torch") -> tuple[float, int]:
    """The ceiling: token ids of every sentence through the model, length-sorted batches of 64 (torch's
    transformers forward pass, or the same batches through ONNX Runtime)."""
    import torch

    encoder = load_encoder(EncoderSettings(backend=backend))
    if encoder.backend != backend:  # e.g. onnx without its packages
        raise SystemExit(f"the {backend} backend is not available")
    runner = encoder.onnx_runner
    forward = (
        runner.run
        if backend == "onnx" and runner is not None
        else lambda ids, mask: encoder.model(input_ids=ids, attention_mask=mask)
    )
    ids, _ = encoder.tokenize(sentences)
    width = encoder.max_length - 2
    sequences = sorted(([encoder.cls_id, *i[:width], encoder.sep_id] for i in ids), key=len)
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
            forward(input_ids, mask)
    return tokens / (time.perf_counter() - started), tokens


def build_in_fresh_process(
    source: Path, index_dir: Path, extra: tuple[str, ...] = ()
) -> tuple[dict, float, float]:
    """Run `senseindex build-index` as a child process: its JSON summary, wall seconds, peak RSS (MB)."""
    command = [
        sys.executable,
        "-c",
        _REPORT_PEAK + "import sys; from senseindex.cli import main; sys.exit(main())",
        "build-index",
        str(source),
        "--index",
        str(index_dir),
        "--overwrite",
        "--quiet",
        "--json",
        *extra,
    ]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"build failed: {result.stderr.strip()}")
    peak = [line for line in result.stderr.splitlines() if line.startswith("VmHWM:")]
    return json.loads(result.stdout), seconds, int(peak[-1].split()[1]) / 1024


# The child reports its own peak RSS (VmHWM) as it exits. getrusage's ru_maxrss cannot be used: Linux
# carries a forked child's maximum over exec, so it is never below this (large) process's own RSS.
_REPORT_PEAK = (
    "import atexit, sys; atexit.register(lambda: sys.stderr.write("
    "[l for l in open('/proc/self/status') if l.startswith('VmHWM')][0])); "
)


def percentiles(values: list[float]) -> str:
    return f"{np.percentile(values, 50):.1f} / {np.percentile(values, 95):.1f}"


INDEX_TYPES = {
    "words": ["SQ8", "SQ4", "IVF1024,SQ8", "IVF1024,PQ64"],
    "sentences": ["SQ8", "SQ4", "IVF256,SQ8", "HNSW32"],
}


def recall_of_index_types(
    exact_dir: Path, word_queries: np.ndarray, sentence_queries: np.ndarray, prince: tuple
) -> list[list[str]]:
    """Build every index type from the exact vectors with the library's shard writer; recall@10 against
    exact search, bytes per vector, build seconds."""
    from senseindex.indexer.storage import IndexStore
    from senseindex.indexer.storage.vectors import ShardSet, ShardWriter

    store = IndexStore.open(exact_dir)
    rows = []
    for table, queries in (("words", word_queries), ("sentences", sentence_queries)):
        exact = store.shard_set(table)
        vectors = exact.reconstruct(np.arange(1, exact.ntotal + 1, dtype=np.int64))
        truth = [set(exact.search(q, 10)[0].tolist()) for q in queries]
        for index_type in INDEX_TYPES[table]:
            folder = Path(tempfile.mkdtemp(dir=exact_dir.parent))
            started = time.perf_counter()
            writer = ShardWriter(folder, table, vectors.shape[1], index_type, first_id=1)
            shards = []
            for first in range(0, len(vectors), 50_000):
                shards += writer.add(vectors[first : first + 50_000])
            shards += writer.finish()
            seconds = time.perf_counter() - started
            approximate = ShardSet(folder, shards, vectors.shape[1])
            found = [set(approximate.search(q, 10)[0].tolist()) for q in queries]
            recall = np.mean([len(t & f) / 10 for t, f in zip(truth, found, strict=True)])
            size = sum((folder / shard.file).stat().st_size for shard in shards) / len(vectors)
            note = f"{size:,.0f} B per vector ({size / 1536:.0%} of float32); built in {seconds:.0f} s"
            if table == "words":
                # same-word queries: the word's occurrences read back by id and ranked by the decoded vectors
                ids, prince_queries = prince
                exact_vectors, decoded = vectors[ids - 1], approximate.reconstruct(ids)
                same = np.mean(
                    [
                        len(
                            set(np.argsort(-(exact_vectors @ q))[:10].tolist())
                            & set(np.argsort(-(decoded @ q))[:10].tolist())
                        )
                        / 10
                        for q in prince_queries
                    ]
                )
                note += f"; same-word ('prince') recall@10 {same:.3f}"
            rows.append([f"recall@10, {table}, {index_type}", f"{recall:.3f}", note])
            shutil.rmtree(folder)
        del vectors
    store.close()
    return rows


def latency_rows(index_dir: Path, sentences: list[str], count: int) -> tuple[list[list[str]], dict]:
    """Query latency on an index, and the query vectors the recall section reuses."""
    from senseindex.search.index import parse_word_query

    rng = random.Random(0)
    rows = []
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
            w for w in sorted(rare_candidates) if 3 <= len(index.search_word(f"the [{w}]", k=10_000)) <= 20
        )
        counts = {
            "frequent": len(index.search_word(f"the [{frequent}]", k=10_000)),
            "rare": len(index.search_word(f"the [{rare}]", k=10_000)),
        }
        queries = rng.sample(probe, count)
        frequent_queries = [s for s in probe if f" {frequent} " in s.lower()][:count]
        kinds = {
            "sentence query": [(q, None) for q in queries],
            f"same-word, frequent ('{frequent}', {counts['frequent']:,} occurrences)": [
                (q, frequent) for q in frequent_queries
            ],
            f"same-word, rare ('{rare}', {counts['rare']} occurrences)": [
                (f"They spoke of the {rare} again.", rare) for _ in range(count)
            ],
            "--any-word": [(q, frequent) for q in frequent_queries],
        }
        for name, items in kinds.items():
            total, encode = [], []
            for query, target in items:
                started = time.perf_counter()
                if name == "sentence query":
                    index.embed_query_sentence(query)
                else:
                    index.embed_query_word(parse_word_query(query, target))
                encoded = time.perf_counter()
                if name == "sentence query":
                    index.search_sentences(query, k=10)
                elif name == "--any-word":
                    index.search_similar_words(query, target=target, k=10)
                else:
                    index.search_word(query, target=target, k=10)
                finished = time.perf_counter()
                encode.append(1000 * (encoded - started))
                total.append(1000 * (finished - encoded))
            search_share = np.percentile(total, 50) - np.percentile(encode, 50)
            rows.append(
                [
                    f"latency p50 / p95, {name}",
                    f"{percentiles(total)} ms",
                    f"query encoding {percentiles(encode)} ms, search ≈ {search_share:.1f} ms at p50 "
                    f"({len(items)} queries)",
                ]
            )
        word_vectors = np.vstack(
            [index.embed_query_word(parse_word_query(q, frequent)) for q in frequent_queries]
        )
        random_words = []
        for q in queries:
            words = [w.strip(".,;:!?\"'()“”‘’") for w in q.split()]
            words = [w for w in words if w.isalpha() and len(w) > 3]
            if words:
                random_words.append(index.embed_query_word(parse_word_query(q, rng.choice(words))))
        sentence_vectors = np.vstack([index.embed_query_sentence(q) for q in queries])
        prince_hits = index.search_word(f"the [{frequent}]", k=10_000)
        prince_ids = np.asarray([h.word_id for h in prince_hits], dtype=np.int64)
    return rows, {
        "words": np.vstack([np.vstack(random_words), word_vectors]),
        "sentences": sentence_vectors,
        "prince": (np.sort(prince_ids), word_vectors),
    }


def measure_pairs(novel: Path, work: Path, pairs: int) -> None:
    """The build's speed against a ceiling measured right before it, N times: the machine's speed
    drifts by several per cent within minutes, so one ceiling and one build far apart mislead."""
    text = novel.read_text(encoding="utf-8")
    sentences = [text[s.start : s.end] for s in split_text(text)]
    source = work / "pairs"
    source.mkdir(exist_ok=True)
    shutil.copy(novel, source / "novel.txt")
    ratios = []
    for pair in range(pairs):
        ceiling, _ = bare_forward_tokens_per_second(sentences)
        summary, seconds, _ = build_in_fresh_process(source, work / "pairs.idx")
        end_to_end = summary["tokens"] / seconds / ceiling
        library = summary["tokens"] / summary["seconds"] / ceiling
        ratios.append((end_to_end, library))
        log(
            f"pair {pair + 1}: ceiling {ceiling:.0f} tokens/s, build {seconds:.0f} s, "
            f"{end_to_end:.2f}x end to end, {library:.2f}x as the library times it"
        )
    default_backend = load_encoder(EncoderSettings()).backend
    print(
        f"| default build ({default_backend}) / torch ceiling, median of {pairs} pairs |"
        f" {np.median([r[0] for r in ratios]):.2f}x end to end, "
        f"{np.median([r[1] for r in ratios]):.2f}x as the library times it | "
        + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in ratios)
        + " |"
    )


def measure_memory(novel: Path, work: Path, repeat: int) -> None:
    """Peak RSS of a default build of the novel and of the novel repeated; nothing else."""
    rows = []
    for copies in (1, repeat):
        source = work / f"memory-x{copies}"
        source.mkdir(exist_ok=True)
        for copy in range(copies):
            shutil.copy(novel, source / f"novel-{copy}.txt")
        summary, seconds, peak = build_in_fresh_process(source, work / f"memory-x{copies}.idx")
        shutil.rmtree(work / f"memory-x{copies}.idx")
        log(f"{copies}x build: {seconds:.0f} s, peak {peak:.0f} MB")
        rows.append((copies, summary, seconds, peak))
    print("\n| measure | value | notes |\n|---|---|---|")
    for copies, summary, seconds, peak in rows:
        print(
            f"| peak RSS of the build, {copies}x novel | {peak:,.0f} MB | {peak / rows[0][3]:.2f}x the 1x "
            f"peak; {summary['words']:,} words; {summary['tokens'] / seconds:,.0f} tokens/s; "
            f"types {summary['index_types']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("novel", type=Path, help="../shared/data/prose/war_and_peace.txt")
    parser.add_argument("--repeat", type=int, default=4, help="copies of the novel for the memory check")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--work", type=Path)
    parser.add_argument(
        "--memory-only", action="store_true", help="only the 1x and --repeat x builds' peak memory"
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=0,
        help="only N alternating ceiling / default-build pairs: the build's ratio to the ceiling next to it",
    )
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
        if args.memory_only:
            measure_memory(args.novel, work, args.repeat)
            return
        if args.pairs:
            measure_pairs(args.novel, work, args.pairs)
            return
        text = args.novel.read_text(encoding="utf-8")
        sentences = [text[s.start : s.end] for s in split_text(text)]
        log(f"{len(sentences)} sentences; measuring the bare forward pass")
        ceiling_before, tokens = bare_forward_tokens_per_second(sentences)
        log(f"ceiling {ceiling_before:.0f} tokens/s over {tokens} tokens")

        one = work / "novel"
        one.mkdir(exist_ok=True)
        shutil.copy(args.novel, one / "novel.txt")
        builds = {}  # name -> (summary, wall seconds, peak MB)
        for name, source, extra in (
            ("torch", one, ("--backend", "torch")),
            ("torch-bf16", one, ("--backend", "torch-bf16")),
            ("onnx", one, ("--backend", "onnx")),
            ("onnx-int8", one, ("--backend", "onnx-int8")),
        ):
            builds[name] = build_in_fresh_process(source, work / f"{name}.idx", extra)
            log(f"1x build, {name}: {builds[name][1]:.0f} s, peak {builds[name][2]:.0f} MB")
        ceiling_after, _ = bare_forward_tokens_per_second(sentences)
        ceiling = (ceiling_before + ceiling_after) / 2
        log(f"ceiling again {ceiling_after:.0f} tokens/s")
        onnx_forward, _ = bare_forward_tokens_per_second(sentences, backend="onnx")
        log(f"ONNX Runtime forward {onnx_forward:.0f} tokens/s")
        bf16_forward, _ = bare_forward_tokens_per_second(sentences, backend="torch-bf16")
        log(f"bfloat16 forward {bf16_forward:.0f} tokens/s")
        forwards = {"torch": ceiling, "torch-bf16": bf16_forward, "onnx": onnx_forward}
        many = work / f"novel-x{args.repeat}"
        many.mkdir(exist_ok=True)
        for copy in range(args.repeat):
            shutil.copy(args.novel, many / f"novel-{copy}.txt")
        builds["many"] = build_in_fresh_process(many, work / "many.idx")
        log(f"{args.repeat}x build: {builds['many'][1]:.0f} s, peak {builds['many'][2]:.0f} MB")
        shutil.rmtree(work / "many.idx")
        builds["flat"] = build_in_fresh_process(one, work / "flat.idx", ("--index-type", "flat"))
        log(f"1x flat build: {builds['flat'][1]:.0f} s, peak {builds['flat'][2]:.0f} MB")
        default_backend = load_encoder(EncoderSettings()).backend
        summary, _, peak_one = builds[default_backend]
        summary_many, seconds_many, peak_many = builds["many"]
        summary_flat, seconds_flat, peak_flat = builds["flat"]
        (work / f"{default_backend}.idx").rename(work / "novel.idx")

        index_dir = work / "novel.idx"
        info = senseindex.index_info(index_dir)
        flat_info = senseindex.index_info(work / "flat.idx")

        def faiss_bytes(description: dict, table: str) -> int:
            return sum(f["bytes"] for f in description["vector_files"] if f["table"] == table)

        sqlite_bytes = (index_dir / "index.sqlite").stat().st_size
        words = summary["words"]
        rows = [
            [
                "bare forward pass (ceiling), length-sorted batches of 64",
                f"{ceiling:,.0f} tokens/s",
                f"before the build {ceiling_before:,.0f}, after {ceiling_after:,.0f}",
            ],
            [
                "ONNX Runtime forward pass, same batches",
                f"{onnx_forward:,.0f} tokens/s",
                f"{onnx_forward / ceiling:.2f}x the torch ceiling",
            ],
            [
                "torch-bf16 forward pass (bfloat16 linear layers), same batches",
                f"{bf16_forward:,.0f} tokens/s",
                f"{bf16_forward / ceiling:.2f}x the torch ceiling",
            ],
            *[
                [
                    f"build-index --backend {name}, end to end (fresh process, model load included)",
                    f"{built['tokens'] / wall:,.0f} tokens/s, {built['words'] / wall:,.0f} words/s",
                    f"**{built['tokens'] / wall / ceiling:.2f}x the torch ceiling**; {wall:.0f} s wall; "
                    f"as the library times it {built['tokens'] / built['seconds'] / ceiling:.2f}x; "
                    f"{built['tokens'] / wall / forwards[name]:.2f}x its own backend's forward pass",
                ]
                for name, (built, wall, _) in builds.items()
                if name in forwards
            ],
            [
                "peak RSS of the build, 1x novel",
                f"{peak_one:,.0f} MB",
                f"{words:,} words; default backend ({default_backend}); torch build "
                f"{builds['torch'][2]:,.0f} MB",
            ],
            [
                f"peak RSS of the build, {args.repeat}x novel",
                f"{peak_many:,.0f} MB",
                f"**{peak_many / peak_one:.2f}x the 1x peak**; {summary_many['words']:,} words; "
                f"{summary_many['tokens'] / seconds_many:,.0f} tokens/s",
            ],
            [
                "peak RSS of the build, 1x novel, --index-type flat",
                f"{peak_flat:,.0f} MB",
                f"{summary_flat['tokens'] / seconds_flat:,.0f} tokens/s",
            ],
            [
                "word vectors on disk per word occurrence, default (auto)",
                f"{faiss_bytes(info, 'words') / words:,.0f} B",
                f"types: {summary['index_types']}",
            ],
            [
                "word vectors on disk per word occurrence, flat",
                f"{faiss_bytes(flat_info, 'words') / words:,.0f} B",
                "exact float32",
            ],
            [
                "index.sqlite per word occurrence (all tables)",
                f"{sqlite_bytes / words:,.0f} B",
                "documents, sentences, words, passages",
            ],
            [
                "sentence vectors on disk per sentence, default",
                f"{faiss_bytes(info, 'sentences') / summary['sentences']:,.0f} B",
                f"{summary['sentences']:,} sentences",
            ],
        ]
        log("query latency")
        latency, queries = latency_rows(index_dir, sentences, args.queries)
        rows += latency
        log("recall of index types")
        rows += recall_of_index_types(
            work / "flat.idx", queries["words"], queries["sentences"], queries["prince"]
        )
        print("\n| measure | value | notes |\n|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
