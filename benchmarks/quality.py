"""Search quality on public data, measured through senseindex itself (build-index, then the public API).

    python benchmarks/quality.py ../shared/data [--sections sts,scifact,wsd,anyword] [--work DIR]

Sections (data formats: ../shared/data/README.md):
  sts      STS-B test: Spearman x100 of cosine vs gold, model pooling and [CLS].
  scifact  BEIR SciFact: index the corpus, rank documents for the 300 test claims: nDCG@10, recall@100
           by best sentence, passage (pooled and encoded) and combined; the combined weight is chosen
           on the train claims, never on test.
  wsd      CoarseWSD-20: index the train sentences, query every test occurrence: 1-NN accuracy,
           precision@10, macro-F1 per word and overall, with most-frequent-sense and random baselines;
           plus a layer-strategy x piece-pooling sweep outside the index (one forward pass for all
           layers).
  anyword  --any-word on the bundled sample corpus, per layer strategy.
Prints one table per section and the total runtime. Not a test: nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import senseindex  # noqa: E402
from senseindex.indexer.encoder import BACKENDS, EncoderSettings, combine_layers, load_encoder  # noqa: E402

BACKEND = "torch"  # set from --backend
# benchmarks/metrics.py: this script's folder is first on sys.path when run as python benchmarks/X.py
from metrics import macro_f1, ndcg_at_k, precision_at_k, recall_at_k, spearman  # noqa: E402

from senseindex.indexer.text import split_text  # noqa: E402

WSD_WORDS = (
    "apple arm bank bass bow chair club crane deck digit hood java mole pitcher pound seal spring square "
    "trunk yard"
).split()
LAYER_STRATEGIES = [f"layer-{i}" for i in range(7)] + ["mean-last-4", "concat-last-4", "mean-all"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(f"{c:.2f}" if isinstance(c, float) else str(c) for c in row) + " |")
    sys.stdout.flush()


def write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------------------- STS-B


def run_sts(data: Path, work: Path) -> None:
    rows = []
    with (data / "stsbenchmark" / "sts-test.csv").open(encoding="utf-8") as handle:
        for fields in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            rows.append((float(fields[4]), fields[5], fields[6]))
    log(f"STS-B test: {len(rows)} pairs")
    texts = sorted({t for _, a, b in rows for t in (a, b)})
    source = work / "sts.jsonl"
    write_jsonl(source, [{"id": str(i), "text": t} for i, t in enumerate(texts)])
    results = []
    for pooling in ("model", "cls"):
        index_dir = work / f"sts-{pooling}.idx"
        senseindex.build_index(
            [str(source)],
            index_dir,
            EncoderSettings(sentence_pooling=pooling, backend=BACKEND),
            overwrite=True,
            passages="none",
            sentence_splitting="paragraph",
        )
        with senseindex.open_index(index_dir, backend=BACKEND) as index:
            vectors = dict(zip(texts, index.embed_sentences(texts), strict=True))
            resolved = index.settings["sentence_pooling_resolved"]
        cosines = [float(vectors[a] @ vectors[b]) for _, a, b in rows]
        rho = 100 * spearman(cosines, [gold for gold, _, _ in rows])
        results.append([f"{pooling} ({resolved})", len(rows), rho, 82.03 if pooling == "model" else "—"])
    table(
        "STS-B test: Spearman x100, cosine of sentence vectors",
        ["sentence pooling", "pairs", "Spearman", "published (MTEB)"],
        results,
    )


# ------------------------------------------------------------------------------------------- SciFact


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with path.open(encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            query, document, score = line.rstrip("\n").split("\t")
            qrels[query][document] = int(score)
    return qrels


def _rank_all(index, queries, qrels, scoring, weight=None, k=100):
    ndcg, recall = [], []
    for query_id, relevant in qrels.items():
        hits = index.search_documents(queries[query_id], k=k, scoring=scoring, passage_weight=weight)
        ranked = [h.doc_id for h in hits]
        ndcg.append(ndcg_at_k(ranked, relevant, 10))
        recall.append(recall_at_k(ranked, {d for d, s in relevant.items() if s > 0}, 100))
    return 100 * float(np.mean(ndcg)), 100 * float(np.mean(recall))


def run_scifact(data: Path, work: Path, passage_modes: list[str]) -> None:
    folder = data / "beir_scifact"
    records = []
    with (folder / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            # title as its own paragraph: its own sentence, and the first sentence of the first passage
            records.append({"id": doc["_id"], "text": f"{doc['title']}\n\n{doc['text']}".strip()})
    source = work / "scifact.jsonl"
    write_jsonl(source, records)
    queries = {}
    with (folder / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            q = json.loads(line)
            queries[q["_id"]] = q["text"]
    test = _read_qrels(folder / "qrels" / "test.tsv")
    train = _read_qrels(folder / "qrels" / "train.tsv")
    results = []
    for mode in passage_modes:
        index_dir = work / f"scifact-{mode}.idx"
        log(f"SciFact: building {len(records)} documents, passages={mode}")
        summary = senseindex.build_index(
            [str(source)], index_dir, EncoderSettings(backend=BACKEND), overwrite=True, passages=mode
        )
        log(
            f"SciFact: built in {summary.seconds:.0f} s ({summary.sentences} sentences, "
            f"{summary.passages} passages, {summary.tokens} tokens)"
        )
        with senseindex.open_index(index_dir, backend=BACKEND) as index:
            configs = [("sentence", None), ("passage", None)] + [("combined", w) for w in (0.25, 0.5, 0.75)]
            # every choice (scoring, weight, passage mode) is made on the train claims; test is only
            # reported
            train_scores = {}
            for scoring, weight in configs:
                train_scores[(scoring, weight)], _ = _rank_all(index, queries, train, scoring, weight)
                log(
                    f"SciFact {mode}: {scoring} {weight}: train nDCG@10 {train_scores[(scoring, weight)]:.2f}"
                )
            for scoring, weight in configs:
                ndcg, recall = _rank_all(index, queries, test, scoring, weight)
                label = scoring if weight is None else f"{scoring}, passage weight {weight}"
                results.append(
                    [mode, label, train_scores[(scoring, weight)], ndcg, recall, f"{summary.seconds:.0f}"]
                )
    best = max(results, key=lambda row: row[2])
    table(
        "BEIR SciFact: document ranking (train: 809 claims, test: 300 claims)",
        ["passages", "document scoring", "train nDCG@10", "test nDCG@10", "test recall@100", "build s"],
        results,
    )
    print(f"\nBest on train: passages={best[0]}, {best[1]} (test nDCG@10 {best[3]:.2f}).")
    print("\nPublished (MTEB, whole abstract as one 256-token passage): nDCG@10 64.51.")


# -------------------------------------------------------------------------------------- CoarseWSD-20


SKIPPED_WSD_ITEMS: list[str] = []


def _read_wsd(folder: Path, word: str, split: str) -> list[tuple[str, int, int, str]]:
    """(sentence, char start, char end, sense) of each occurrence; items whose index does not point
    at the word (characters lost in the dataset's preprocessing) are left out and counted."""
    classes = json.loads((folder / word / "classes_map.txt").read_text(encoding="utf-8"))
    data = (folder / word / f"{split}.data.txt").read_text(encoding="utf-8").splitlines()
    gold = (folder / word / f"{split}.gold.txt").read_text(encoding="utf-8").splitlines()
    result = []
    for line, sense in zip(data, gold, strict=True):
        position, sentence = line.split("\t", 1)
        tokens = sentence.split(" ")
        start = sum(len(t) + 1 for t in tokens[: int(position)])
        if word not in tokens[int(position)].lower():
            SKIPPED_WSD_ITEMS.append(f"{word} {split}: index {position} is {tokens[int(position)]!r}")
            continue
        result.append((sentence, start, start + len(tokens[int(position)]), classes[sense.strip()]))
    return result


def run_wsd(data: Path, work: Path, sweep: bool) -> None:
    folder = data / "coarsewsd20"
    train = {w: _read_wsd(folder, w, "train") for w in WSD_WORDS}
    test = {w: _read_wsd(folder, w, "test") for w in WSD_WORDS}
    log(f"CoarseWSD-20: {sum(map(len, train.values()))} train, {sum(map(len, test.values()))} test sentences")
    log(f"CoarseWSD-20 items left out (index not on the word): {SKIPPED_WSD_ITEMS}")
    if sweep:
        _wsd_sweep(train, test)
    _wsd_through_index(train, test, work)


def _wsd_sweep(train, test) -> None:
    """1-NN accuracy per layer strategy and piece pooling, outside any index: all layers from one pass."""
    texts = [s for w in WSD_WORDS for s, *_ in train[w] + test[w]]
    spans = [[(a, b)] for w in WSD_WORDS for _, a, b, _ in train[w] + test[w]]
    encoder = load_encoder(EncoderSettings(backend=BACKEND))
    started = time.perf_counter()
    stacks = {}
    log(f"sweep: all layers, mean pooling, {len(texts)} sentences")
    stacks["mean"], aligned = encoder.encode_word_layers(texts, spans)
    # first-piece pooling differs only for targets of several pieces: re-encode just those
    pieces = np.asarray(
        [len(encoder.tokenize([t[a:b]])[0][0]) for t, ((a, b),) in zip(texts, spans, strict=True)]
    )
    multi = np.flatnonzero(pieces > 1)
    stacks["first"] = stacks["mean"].copy()
    if len(multi):
        first_encoder = load_encoder(EncoderSettings(piece_pooling="first", backend=BACKEND))
        stacks["first"][multi], _ = first_encoder.encode_word_layers(
            [texts[i] for i in multi], [spans[i] for i in multi]
        )
    log(f"sweep: encoded in {time.perf_counter() - started:.0f} s; {len(multi)} multi-piece targets")
    rows = []
    for pooling in ("mean", "first"):
        for strategy in LAYER_STRATEGIES:
            vectors = combine_layers(stacks[pooling], strategy)
            correct = total = 0
            offset = 0
            for word in WSD_WORDS:
                n_train, n_test = len(train[word]), len(test[word])
                train_vectors = vectors[offset : offset + n_train]
                test_vectors = vectors[offset + n_train : offset + n_train + n_test]
                train_senses = [s for *_, s in train[word]]
                nearest = np.argmax(test_vectors @ train_vectors.T, axis=1)
                correct += sum(train_senses[j] == test[word][i][3] for i, j in enumerate(nearest))
                total += n_test
                offset += n_train + n_test
            rows.append([strategy, pooling, 100 * correct / total])
    rows.sort(key=lambda r: -r[2])
    table(
        "CoarseWSD-20, outside the index: 1-NN accuracy by layer strategy and piece pooling "
        f"({int(aligned.sum())} of {len(aligned)} targets aligned)",
        ["layers", "piece pooling", "1-NN %"],
        rows,
    )


def _labelled(hits, word: str, labels: dict) -> list[str]:
    """Senses of the first 10 hits that are labelled train occurrences of the word."""
    return [
        labels[(h.doc_id, h.start)]
        for h in hits
        if h.doc_id.startswith(word + ":") and (h.doc_id, h.start) in labels
    ][:10]


def _wsd_through_index(train, test, work: Path) -> None:
    records, labels = [], {}
    for word in WSD_WORDS:
        for i, (sentence, start, _, sense) in enumerate(train[word]):
            doc_id = f"{word}:{i}"
            records.append({"id": doc_id, "text": sentence})
            labels[(doc_id, start)] = sense
    source = work / "wsd-train.jsonl"
    write_jsonl(source, records)
    index_dir = work / "wsd.idx"
    # Each record is one dataset sentence: keep it whole (the auto splitter's cuts are counted below).
    auto_splits = sum(len(split_text(r["text"], "auto")) > 1 for r in records)
    log(f"WSD: building the train index ({len(records)} sentences), default encoder settings")
    summary = senseindex.build_index(
        [str(source)],
        index_dir,
        EncoderSettings(backend=BACKEND),
        overwrite=True,
        passages="none",
        sentence_splitting="paragraph",
    )
    log(
        f"WSD: built in {summary.seconds:.0f} s; {summary.sentences} sentences, {summary.documents} documents"
    )
    rng = random.Random(0)
    rows = []
    totals: dict[str, list[float]] = defaultdict(list)
    with senseindex.open_index(index_dir, backend=BACKEND) as index:
        settings = index.settings
        missing_targets = 0
        for word in WSD_WORDS:
            found = set()
            for hit in index.search_word(f"the [{word}]", k=10_000):
                if (hit.doc_id, hit.start) in labels and hit.doc_id.startswith(word + ":"):
                    found.add((hit.doc_id, hit.start))
            missing_targets += sum(
                1 for i, (_, start, _, _) in enumerate(train[word]) if (f"{word}:{i}", start) not in found
            )
        started = time.perf_counter()
        done = deeper_queries = 0
        every_gold, every_predicted, every_mfs = [], [], []
        for word in WSD_WORDS:
            train_senses = [s for *_, s in train[word]]
            most_frequent = Counter(train_senses).most_common(1)[0][0]
            gold, predicted, precision, mfs, random_hit, random_p10 = [], [], [], [], [], []
            queries = [f"{s[:a]}[{s[a:b]}]{s[b:]}" for s, a, b, _ in test[word]]
            # one batched call per word: the same answers as search_word, query by query
            all_hits = index.search_word_many(queries, k=60)
            for query, (_, _, _, sense), hits in zip(queries, test[word], all_hits, strict=True):
                labelled = _labelled(hits, word, labels)
                if len(labelled) < 10:  # other occurrences of the lemma crowded the top 60: look deeper
                    deeper_queries += 1
                    labelled = _labelled(index.search_word(query, k=10_000), word, labels)
                gold.append(sense)
                done += 1
                if done % 2000 == 0:
                    log(f"WSD: {done} queries")
                predicted.append(labelled[0] if labelled else most_frequent)
                precision.append(precision_at_k(labelled, sense, 10))
                mfs.append(most_frequent == sense)
                sample = rng.sample(train_senses, min(10, len(train_senses)))
                random_hit.append(sample[0] == sense)
                random_p10.append(precision_at_k(sample, sense, 10))
            every_gold += gold
            every_predicted += predicted
            every_mfs += [most_frequent] * len(gold)
            accuracy = 100 * float(np.mean([g == p for g, p in zip(gold, predicted, strict=True)]))
            row = [
                word,
                len(train[word]),
                len(test[word]),
                accuracy,
                100 * float(np.mean(precision)),
                100 * macro_f1(gold, predicted),
                100 * float(np.mean(mfs)),
                100 * macro_f1(gold, [most_frequent] * len(gold)),
                100 * float(np.mean(random_hit)),
                100 * float(np.mean(random_p10)),
            ]
            rows.append(row)
            for name, value, weight in zip(
                ["acc", "p10", "f1", "mfs", "mfs_f1", "rand", "rand_p10"],
                row[3:],
                [len(gold)] * 7,
                strict=True,
            ):
                totals[name].append(value)
                totals[name + "_n"].append(weight)
        seconds = time.perf_counter() - started
    n_queries = sum(len(test[w]) for w in WSD_WORDS)

    def micro(name):
        return float(np.average(totals[name], weights=totals[name + "_n"]))

    all_row = [micro(n) for n in ("acc", "p10", "f1", "mfs", "mfs_f1", "rand", "rand_p10")]
    # F1 over all queries at once: macro over all senses of all words (sense names are unique)
    all_row[2] = 100 * macro_f1(every_gold, every_predicted)
    all_row[4] = 100 * macro_f1(every_gold, every_mfs)
    rows.append(["**all queries**", sum(map(len, train.values())), n_queries, *all_row])
    rows.append(
        ["**mean over words**", "", ""]
        + [float(np.mean(totals[n])) for n in ("acc", "p10", "f1", "mfs", "mfs_f1", "rand", "rand_p10")]
    )
    table(
        f"CoarseWSD-20 through the index (layers={settings['layers']}, "
        f"piece pooling={settings['piece_pooling']}): same-word queries",
        [
            "word",
            "train",
            "test",
            "1-NN %",
            "P@10 %",
            "macro-F1",
            "MFS %",
            "MFS F1",
            "random %",
            "random P@10",
        ],
        rows,
    )
    print(
        f"\nTrain targets not found as an indexed word: {missing_targets}; unaligned words: "
        f"{summary.unaligned_words}; train sentences split into more than one sentence: "
        f"{summary.sentences - summary.documents} (the auto splitter would cut {auto_splits} of "
        f"{len(records)} of these lower-cased, pre-tokenised sentences). Dataset items left out because "
        f"their index does not point at the word: {len(SKIPPED_WSD_ITEMS)}. "
        f"{n_queries} queries in {seconds:.0f} s ({1000 * seconds / n_queries:.1f} ms each); "
        f"{deeper_queries} needed a deeper search to collect 10 labelled hits. The 'all queries' row "
        "gives accuracy and P@10 over all queries and macro-F1 over all senses of all words."
    )


# ------------------------------------------------------------------------------------- any-word check

# On the bundled sample corpus: a query in one sense, lemmas that belong to that sense and lemmas that
# belong to the other. A query passes when its best "same sense" lemma ranks above its best "other
# sense" lemma among the --any-word answers.
_SENSE_WORDS = {
    "bank/river": {"river", "stream", "shore", "water", "current"},
    "bank/money": {"loan", "money", "cash", "dollar", "teller"},
    "crane/machine": {"tower", "lift", "container", "lever", "cable", "operator"},
    "crane/bird": {"bird", "heron", "neck", "wing", "marsh", "feather"},
    "apple/fruit": {"pear", "fruit", "orchard", "tree", "cider", "plum"},
    "apple/company": {"company", "phone", "software", "computer", "iphone", "laptop"},
    "pitcher/baseball": {"catcher", "throw", "inning", "batter", "mound", "ball"},
    "pitcher/jug": {"jug", "lemonade", "water", "glass", "milk", "pour"},
}
ANY_WORD_CHECKS = [  # (query, its sense, the other sense)
    ("I sat on the [bank] of the river", "bank/river", "bank/money"),
    ("She deposited her savings at the [bank]", "bank/money", "bank/river"),
    ("The [crane] lifted steel beams onto the roof", "crane/machine", "crane/bird"),
    ("A [crane] waded through the marsh on long legs", "crane/bird", "crane/machine"),
    ("He ate a crisp red [apple] from the tree", "apple/fruit", "apple/company"),
    ("[Apple] released a new phone and laptop", "apple/company", "apple/fruit"),
    ("The [pitcher] threw a fastball to the batter", "pitcher/baseball", "pitcher/jug"),
    ("She poured lemonade from the glass [pitcher]", "pitcher/jug", "pitcher/baseball"),
]


def run_any_word(work: Path) -> None:
    sample = ROOT / "data" / "sample"
    rows = []
    for strategy in ["last", "mean-last-4", "concat-last-4", "mean-all"] + [
        f"layer-{i}" for i in range(1, 6)
    ]:
        index_dir = work / f"anyword-{strategy}.idx"
        senseindex.build_index(
            [str(sample)],
            index_dir,
            EncoderSettings(layers=strategy, backend=BACKEND),
            overwrite=True,
            passages="none",
        )
        passed = 0
        mrr = []
        with senseindex.open_index(index_dir, backend=BACKEND) as index:
            for query, own_sense, other_sense in ANY_WORD_CHECKS:
                good, bad = _SENSE_WORDS[own_sense], _SENSE_WORDS[other_sense]
                lemmas = [hit.lemma for hit in index.search_similar_words(query, k=50)]
                good_rank = next((i for i, lemma in enumerate(lemmas) if lemma in good), len(lemmas))
                bad_rank = next((i for i, lemma in enumerate(lemmas) if lemma in bad), len(lemmas))
                passed += good_rank < bad_rank
                mrr.append(1 / (good_rank + 1) if good_rank < len(lemmas) else 0.0)
        rows.append([strategy, f"{passed}/{len(ANY_WORD_CHECKS)}", float(np.mean(mrr))])
    table(
        "--any-word on the sample corpus: same-sense lemma ranked above other-sense lemma",
        ["layers", "checks passed", "MRR of first same-sense lemma"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, help="the shared data folder (../shared/data)")
    parser.add_argument("--sections", default="sts,scifact,wsd,anyword")
    parser.add_argument("--work", type=Path, help="folder for indexes (a temporary one by default)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the WSD layer sweep")
    parser.add_argument(
        "--backend", default="torch", choices=BACKENDS, help="what runs the model (judge each backend)"
    )
    parser.add_argument(
        "--passages", default="pooled", help="SciFact passage modes to build and compare (pooled,encoded)"
    )
    args = parser.parse_args()
    if not (args.data / "stsbenchmark").is_dir():
        parser.error(f"{args.data} does not look like the shared data folder (no stsbenchmark/)")
    global BACKEND
    BACKEND = args.backend
    started = time.perf_counter()
    sections = args.sections.split(",")
    print(
        f"senseindex {senseindex.__version__} quality benchmark, {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()} {platform.processor() or ''} Python {platform.python_version()}, "
        f"backend {BACKEND}"
    )
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        if "sts" in sections:
            run_sts(args.data, work)
        if "scifact" in sections:
            run_scifact(args.data, work, args.passages.split(","))
        if "wsd" in sections:
            run_wsd(args.data, work, sweep=not args.no_sweep)
        if "anyword" in sections:
            run_any_word(work)
    print(f"\nTotal runtime: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
