"""--any-word at hundreds of thousands and millions of words: latency and recall by vector index type.

    python benchmarks/any_word.py ../shared/data/prose/war_and_peace.txt [--queries 100]
        [--runs 4:auto,4:SQ8,1:auto,1:SQ8,1:flat] [--work DIR] [--max-lists N]
        [--measure-only]

1. Builds the novel once with the model (`--index-type flat`, so its word vectors are exact), in
   WORK/novel-flat (kept between runs).
2. For each run (a number of copies of the novel and an index type), writes a new index through
   the library's own write path (`IndexStore.create`, `add_batch`, `commit`, `finish`: shard writer,
   training, measured nprobe, merges) from the stored rows and exact vectors, the copies as documents of
   their own. Times that write (rows included) and reads the word files' bytes per vector.
3. Per index: latency p50/p95 of the whole `search_similar_words` call (query encoding included, and
   encoding alone), of the vector search alone (`depth` = 500 hits, as --any-word asks for k=10, with
   the target's own lemma and function words left out, as the call's first round does), and
   recall@10 of the vector search against exact search (a NumPy product over the exact vectors). With
   identical copies exact neighbours tie in groups of copies, so a returned hit counts when its exact
   score is at least the exact 10th score less 1e-6. Two query sets: the 200 `prince` sentences of
   the novel the speed benchmark uses, and word queries from STS Benchmark test sentences (text the
   index does not hold).
4. Memory to serve: resident memory of a fresh process that opened the index and answered 20 queries.

Benchmarks are not tests: nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import senseindex  # noqa: E402
from senseindex.indexer.stopwords import is_stopword  # noqa: E402
from senseindex.indexer.storage import IndexReader, IndexStore, ivf  # noqa: E402
from senseindex.indexer.storage.schema import COLUMNS  # noqa: E402
from senseindex.indexer.text import lemmatize  # noqa: E402
from senseindex.search.word_query import parse_word_query  # noqa: E402

DEPTH = 500  # what --any-word searches for k=10: max(200, 50 k)
STORE_KEYS = {"schema_version", "status", "next_ids", "next_shard_number", "created_at"}
WORD_BATCH = 100_000


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentiles(values: list[float]) -> str:
    return f"{np.percentile(values, 50):.1f} / {np.percentile(values, 95):.1f}"


def build_novel(text: Path, folder: Path) -> None:
    """The novel indexed once with the model, exact vectors (reused when complete)."""
    if (folder / "index.sqlite").exists() and senseindex.index_info(folder)["settings"].get(
        "status"
    ) == "complete":
        return
    log(f"building {folder} with the model (flat)")
    senseindex.build_index([str(text)], folder, index_type="flat", overwrite=True)


def read_table(reader: IndexReader, table: str) -> tuple[list[tuple], np.ndarray]:
    columns = list(COLUMNS[table])
    rows = reader.db.execute(f"select {', '.join(columns)} from {table} order by id").fetchall()
    vectors = reader.shard_set(table).reconstruct(np.asarray([r[0] for r in rows], dtype=np.int64))
    return rows, vectors


def write_copies(novel: Path, folder: Path, index_type: str, copies: int) -> float:
    """Write ``copies`` copies of the novel's rows and exact vectors as a new index; returns seconds."""
    if folder.exists():
        shutil.rmtree(folder)
    reader = IndexReader.open(novel)
    try:
        settings = {
            k: v for k, v in reader.settings.items() if k not in STORE_KEYS and "_index_type" not in k
        }
        settings["index_type"] = index_type
        (documents,) = [
            reader.db.execute(f"select {', '.join(COLUMNS['documents'])} from documents").fetchall()
        ]
        tables = {table: read_table(reader, table) for table in ("sentences", "words", "passages")}
    finally:
        reader.close()
    sizes = {"documents": len(documents), **{t: len(rows) for t, (rows, _) in tables.items()}}
    started = time.perf_counter()
    store = IndexStore.create(folder, settings)
    try:
        for copy in range(copies):
            shift = {table: copy * size for table, size in sizes.items()}

            def moved(table: str, row: tuple, copy: int = copy, shift: dict = shift) -> tuple:
                values = dict(zip(COLUMNS[table], row, strict=True))
                values["id"] += shift[table]
                for column, target in (("document", "documents"), ("sentence", "sentences")):
                    if column in values:
                        values[column] += shift[target]
                for column in ("first_sentence", "last_sentence"):
                    if column in values:
                        values[column] += shift["sentences"]
                if table == "documents":
                    values["doc_id"] = f"{values['doc_id']}#{copy + 1}"
                return tuple(values[c] for c in COLUMNS[table])

            sentence_rows, sentence_vectors = tables["sentences"]
            passage_rows, passage_vectors = tables["passages"]
            word_rows, word_vectors = tables["words"]
            store.add_batch(
                [moved("documents", r) for r in documents],
                [moved("sentences", r) for r in sentence_rows],
                sentence_vectors,
                [],
                np.zeros((0, word_vectors.shape[1]), np.float32),
                [moved("passages", r) for r in passage_rows],
                passage_vectors,
            )
            for first in range(0, len(word_rows), WORD_BATCH):
                part = word_rows[first : first + WORD_BATCH]
                store.add_batch(
                    [],
                    [],
                    sentence_vectors[:0],
                    [moved("words", r) for r in part],
                    word_vectors[first : first + len(part)],
                )
            store.commit()
        store.finish()
    except BaseException:
        store.abort()
        raise
    return time.perf_counter() - started


def sts_queries(data: Path, count: int) -> list[tuple[str, str]]:
    """Word queries from STS-B test sentences: a random content word of each."""
    rng = random.Random(0)
    path = data / "stsbenchmark" / "sts-test.csv"
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    sentences = sorted({r[5] for r in rows} | {r[6] for r in rows})
    rng.shuffle(sentences)
    queries = []
    for sentence in sentences:
        words = [w for w in re.findall(r"[A-Za-z]+", sentence) if len(w) > 3 and not is_stopword(w.lower())]
        if not words:
            continue
        target = rng.choice(words)
        try:
            parse_word_query(sentence, target)
        except senseindex.QueryError:
            continue
        queries.append((sentence, target))
        if len(queries) == count:
            break
    return queries


def prince_queries(text: Path, count: int) -> list[tuple[str, str]]:
    """The speed benchmark's --any-word queries: sentences of the novel with `prince` in them."""
    from senseindex.indexer.text import split_text

    content = text.read_text(encoding="utf-8")
    sentences = [content[s.start : s.end] for s in split_text(content)]
    probe = [s for s in sentences if 40 < len(s) < 200]
    return [(s, "prince") for s in probe if " prince " in s.lower()][:count]


def exact_tenth(vectors: np.ndarray, queries: np.ndarray, copies: int) -> np.ndarray:
    """The exact 10th best score per query over ``copies`` copies of ``vectors`` (ties in copies)."""
    scores = queries @ vectors.T
    distinct = -np.partition(-scores, 10, axis=1)[:, :11]
    distinct = -np.sort(-distinct, axis=1)
    # with c copies, positions 0..9 of the multiset hold each distinct score c times
    return distinct[:, (10 - 1) // copies]


def measure(
    folder: Path,
    queries: dict[str, list[tuple[str, str]]],
    vectors: np.ndarray,
    copies: int,
    backend: str = "auto",
) -> dict:
    result: dict = {}
    with senseindex.open_index(folder, backend=backend) as index:
        reader = IndexReader.open(folder)
        try:
            for name, items in queries.items():
                embedded = np.vstack([index.embed_query_word(parse_word_query(q, t)) for q, t in items])
                tenth = exact_tenth(vectors, embedded, copies)
                for q, t in items[:5]:  # warm-up: opens every shard
                    index.search_similar_words(q, target=t, k=10)
                total, encode, search, recall = [], [], [], []
                for (q, t), vector, limit in zip(items, embedded, tenth, strict=True):
                    started = time.perf_counter()
                    index.embed_query_word(parse_word_query(q, t))
                    encoded = time.perf_counter()
                    called = time.perf_counter()
                    index.search_similar_words(q, target=t, k=10)
                    finished = time.perf_counter()
                    # the call's first search: the nearest DEPTH, the target's own lemma and function
                    # words left out
                    own_ids = reader.word_ids_of_lemmas([lemmatize(t)])
                    vector_started = time.perf_counter()
                    reader.search("words", vector, DEPTH, excluded=own_ids, function_words=False)
                    searched = time.perf_counter()
                    ids, _ = reader.search("words", vector, 10)
                    # the hits' exact scores (the codes' own are approximate); rowid i of copy c is c N + i
                    scores = vectors[(ids - 1) % len(vectors)] @ vector
                    encode.append(1000 * (encoded - started))
                    total.append(1000 * (finished - called))
                    search.append(1000 * (searched - vector_started))
                    recall.append(float(np.sum(scores >= limit - 1e-6)) / 10)
                result[name] = {
                    "call": percentiles(total),
                    "call_p50": float(np.percentile(total, 50)),
                    "encode": percentiles(encode),
                    "search": percentiles(search),
                    "recall": float(np.mean(recall)),
                }
        finally:
            reader.close()
        info = index.info()
    files = [f for f in info["vector_files"] if f["table"] == "words"]
    result["bytes_per_vector"] = sum(f["bytes"] for f in files) / info["counts"]["words"]
    result["files"] = len(files)
    result["type"] = info["settings"]["words_index_type"]
    result["words"] = info["counts"]["words"]
    return result


def serve_memory(folder: Path, queries: list[tuple[str, str]]) -> float:
    """Resident MB of a fresh process that opened the index and answered 20 any-word queries."""
    code = (
        "import json, sys, senseindex\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        f"queries = json.loads({json.dumps(json.dumps(queries[:20]))})\n"
        f"with senseindex.open_index({str(folder)!r}) as index:\n"
        "    for q, t in queries:\n"
        "        index.search_similar_words(q, target=t, k=10)\n"
        "    status = open('/proc/self/status').read()\n"
        "print([l.split()[1] for l in status.splitlines() if l.startswith('VmRSS')][0])\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment)
    if output.returncode:
        raise SystemExit(output.stderr)
    return int(output.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("text", type=Path, help="the novel (data/prose/war_and_peace.txt)")
    parser.add_argument(
        "--runs",
        default="4:auto,4:SQ8,1:auto,1:SQ8,1:flat",
        help="copies:index-type pairs, measured in this order",
    )
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument(
        "--measure-only",
        action="store_true",
        help="measure the indexes a previous run wrote (complete ones) instead of writing them again",
    )
    parser.add_argument(
        "--max-lists",
        type=int,
        help="cap on an auto word table's IVF lists instead of the library's (to compare list counts)",
    )
    parser.add_argument(
        "--backend",
        default="auto",
        help="what encodes the queries (any backend queries any index; the indexes stay as written)",
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/senseindex-any-word"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.max_lists:
        ivf.IVF_MAX_LISTS = args.max_lists  # read at each call, so the write path trains this many
    novel = args.work / "novel-flat"
    build_novel(args.text, novel)
    reader = IndexReader.open(novel)
    try:
        rows, vectors = read_table(reader, "words")
        if [rows[0][0], rows[-1][0]] != [1, len(rows)]:
            raise SystemExit(f"{novel}: word rowids are not 1..{len(rows)}; rebuild it")
    finally:
        reader.close()
    queries = {
        "prince": prince_queries(args.text, args.queries),
        "sts": sts_queries(args.text.resolve().parent.parent, args.queries),
    }
    print(f"Date: {time.strftime('%Y-%m-%d')}. Machine: {platform.machine()}, {os.cpu_count()} cores.")
    print(f"query backend: {args.backend}")
    print(
        f"queries: {len(queries['prince'])} prince (from the novel), {len(queries['sts'])} STS-B test words"
    )
    print(
        "| words | index type (as stored) | write s | B/vector | files | RSS MB | call p50/p95 prince | "
        "call p50/p95 STS-B | encode p50/p95 | search p50/p95 prince | search p50/p95 STS-B | "
        "recall@10 prince | recall@10 STS-B |"
    )
    for run in args.runs.split(","):
        copies_text, index_type = run.split(":", 1)
        copies = int(copies_text)
        lists = f"-max{args.max_lists}" if args.max_lists else ""
        folder = args.work / f"x{copies}-{index_type.replace(',', '_')}{lists}"
        written = (folder / "index.sqlite").exists() and senseindex.index_info(folder)["settings"].get(
            "status"
        ) == "complete"
        if args.measure_only and written:
            seconds = float("nan")  # written by an earlier run: its write time is in that run's table
        else:
            log(f"writing {copies} cop{'y' if copies == 1 else 'ies'} as {index_type}")
            seconds = write_copies(novel, folder, index_type, copies)
        log(f"measuring {folder}")
        result = measure(folder, queries, vectors, copies, args.backend)
        rss = serve_memory(folder, queries["prince"])
        prince, sts = result["prince"], result["sts"]
        print(
            f"| {result['words']:,} | {index_type} ({result['type']}) | {seconds:.0f} | "
            f"{result['bytes_per_vector']:.0f} | {result['files']} | {rss:,.0f} | {prince['call']} | "
            f"{sts['call']} | {prince['encode']} | {prince['search']} | {sts['search']} | "
            f"{prince['recall']:.3f} | {sts['recall']:.3f} |",
            flush=True,
        )
        if index_type == "flat" and copies > 1:
            shutil.rmtree(folder)  # 3.5 GB


if __name__ == "__main__":
    main()
