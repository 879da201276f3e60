"""Word-sense induction on CoarseWSD-20: induced senses against the gold senses, per word.

    python benchmarks/senses.py ../shared/data [--split test] [--work DIR] [--index DIR]
    python benchmarks/senses.py ../shared/data --time-index big.idx --time-word from

The sentences of one split of the 20 words (``test`` by default; the method's settings were chosen
on ``train``) are indexed, one sentence a document, as benchmarks/quality.py does (or --index
reuses such an index). For each word, `SenseIndex.induce_senses` clusters every occurrence of its
lemma in the index — the labelled target occurrences and the unlabelled ones in other words'
sentences alike — and the labelled ones are scored against their gold senses:

- adjusted Rand index (ARI) and V-measure of the induced senses;
- whether the number of senses chosen equals the number of gold senses among them;
- seconds per word of `induce_senses` with its defaults (as `senseindex senses` runs it);
- the same scores with the number of senses forced to the gold number, and for all occurrences in
  one sense (ARI 0 by definition, computed as a check);
- the words with a rare sense (a gold sense under 5 % of the labelled occurrences), apart;
- random subsamples of 10, 30 and 100 labelled occurrences per word (five draws each), clustered
  as the index would cluster them, and balanced draws of two senses (5 + 5) from the words with
  two: how often they get two senses.

With --time-index, it only times `induce_senses` (three runs, median) for a word of a large index.

Benchmarks are not tests: nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# benchmarks/metrics.py: this script's folder is first on sys.path when run as python benchmarks/X.py
from metrics import adjusted_rand_index, v_measure  # noqa: E402

import senseindex  # noqa: E402
from senseindex.search.senses import cluster_senses  # noqa: E402

WSD_WORDS = (
    "apple arm bank bass bow chair club crane deck digit hood java mole pitcher pound seal spring square "
    "trunk yard"
).split()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


RARE_SHARE = 0.05
SUBSAMPLES = (10, 30, 100)
DRAWS = 5


def read_split(folder: Path, word: str, split: str) -> list[tuple[str, int, int]]:
    """``(sentence, target start, gold sense)`` of a word's sentences whose index is on the word."""
    data = (folder / word / f"{split}.data.txt").read_text(encoding="utf-8").splitlines()
    gold = (folder / word / f"{split}.gold.txt").read_text(encoding="utf-8").splitlines()
    items = []
    for line, sense in zip(data, gold, strict=True):
        position, sentence = line.split("\t", 1)
        tokens = sentence.split(" ")
        if word not in tokens[int(position)].lower():
            continue
        start = sum(len(token) + 1 for token in tokens[: int(position)])
        items.append((sentence, start, int(sense.strip())))
    return items


def build_index(
    sentences: dict[str, list[tuple[str, int, int]]], work: Path, backend: str, split: str
) -> Path:
    records = [
        {"id": f"{word}:{i}", "text": sentence}
        for word in WSD_WORDS
        for i, (sentence, _, _) in enumerate(sentences[word])
    ]
    source = work / f"wsd-{split}.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    index_dir = work / f"wsd-{split}.idx"
    log(f"building the {split} index ({len(records)} sentences)")
    summary = senseindex.build_index(
        [str(source)],
        index_dir,
        senseindex.EncoderSettings(backend=backend),
        overwrite=True,
        passages="none",
        sentence_splitting="paragraph",
    )
    log(f"built in {summary.seconds:.0f} s: {summary.words} words")
    return index_dir


def score(word_senses: senseindex.WordSenses, positions: dict[int, int]) -> tuple[list[int], list[int]]:
    """Gold and induced senses of the labelled occurrences (``positions``: word rowid -> gold)."""
    gold, induced = [], []
    for word_id, sense in zip(
        word_senses.occurrence_ids.tolist(), word_senses.assignments.tolist(), strict=True
    ):
        if word_id in positions:
            gold.append(positions[word_id])
            induced.append(sense)
    return gold, induced


def occurrence_vectors(index: senseindex.SenseIndex, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The word and sentence vectors the index clusters for these occurrences."""
    with index._state.snapshot() as store:  # a benchmark may look inside
        return store.word_vectors(ids), store.sentence_vectors_of_words(ids)


def subsample_scores(
    index: senseindex.SenseIndex, chosen: senseindex.WordSenses, positions: dict[int, int]
) -> dict[str, Any]:
    """Clusterings of random subsamples of a word's labelled occurrences, as the index clusters them."""
    labelled_ids = np.asarray(sorted(positions), dtype=np.int64)
    vectors, sentence_vectors = occurrence_vectors(index, labelled_ids)
    gold = np.asarray([positions[i] for i in labelled_ids.tolist()])
    scores: dict[str, Any] = {}
    for size in SUBSAMPLES:
        if len(labelled_ids) < size:
            continue
        aris, right = [], 0
        for draw in range(DRAWS):
            picked = np.random.default_rng(draw).choice(len(labelled_ids), size, replace=False)
            found = cluster_senses(vectors[picked], sentence_vectors=sentence_vectors[picked])
            aris.append(adjusted_rand_index(gold[picked].tolist(), found.labels.tolist()))
            right += len(set(gold[picked].tolist())) == len(found.centres)
        scores[str(size)] = {"ari": float(np.mean(aris)), "right": right, "draws": DRAWS}
    senses = sorted(set(gold.tolist()))
    if len(senses) == 2 and min(int((gold == sense).sum()) for sense in senses) >= 5:
        two = 0
        for draw in range(DRAWS):
            rng = np.random.default_rng(100 + draw)
            picked = np.concatenate(
                [rng.choice(np.flatnonzero(gold == sense), 5, replace=False) for sense in senses]
            )
            found = cluster_senses(vectors[picked], sentence_vectors=sentence_vectors[picked])
            two += len(found.centres) == 2
        scores["balanced_two"] = two
    return scores


def time_senses(index_dir: Path, word: str, backend: str) -> None:
    """Median seconds of `induce_senses` for one word of a large index (three runs after a warm-up)."""
    with senseindex.open_index(index_dir, backend=backend) as index:
        found = index.induce_senses(word)
        seconds = []
        for _ in range(3):
            started = time.perf_counter()
            index.induce_senses(word)
            seconds.append(time.perf_counter() - started)
    print(f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}")
    print(
        f"senses {word!r}: {found.occurrences:,} occurrences (clustered {found.clustered:,}), "
        f"{len(found.senses)} senses, median {np.median(seconds):.2f} s "
        f"(runs {', '.join(f'{x:.2f}' for x in seconds)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, help="../shared/data")
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--work", type=Path, help="folder for the index (a temporary one if not given)")
    parser.add_argument("--index", type=Path, help="reuse an index of the split built by an earlier run")
    parser.add_argument("--backend", default="auto", choices=senseindex.BACKENDS)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON lines too")
    parser.add_argument("--no-subsamples", action="store_true", help="score the whole words only")
    parser.add_argument("--time-index", type=Path, help="only time `senses` for --time-word in this index")
    parser.add_argument("--time-word", default="from")
    arguments = parser.parse_args()
    if arguments.time_index:
        time_senses(arguments.time_index, arguments.time_word, arguments.backend)
        return
    folder = arguments.data / "coarsewsd20"
    sentences = {word: read_split(folder, word, arguments.split) for word in WSD_WORDS}

    with tempfile.TemporaryDirectory() as temporary:
        work = arguments.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        index_dir = arguments.index or build_index(sentences, work, arguments.backend, arguments.split)
        rows = []
        with senseindex.open_index(index_dir, backend=arguments.backend) as index:
            for word in WSD_WORDS:
                labelled = {
                    (f"{word}:{i}", start): sense for i, (_, start, sense) in enumerate(sentences[word])
                }
                positions = {
                    hit.word_id: labelled[(hit.doc_id, hit.start)]
                    for hit in index.search_word(f"the [{word}]", k=10_000)
                    if (hit.doc_id, hit.start) in labelled
                }
                # timed as `senseindex senses` runs it: 5 typical occurrences and 8 related words a sense
                started = time.perf_counter()
                chosen = index.induce_senses(word)
                seconds = time.perf_counter() - started
                gold, induced = score(chosen, positions)
                gold_senses = len(set(gold))
                shares = np.bincount(gold) / len(gold)
                forced = index.induce_senses(word, senses=gold_senses, typical=0, related_words=0)
                forced_gold, forced_induced = score(forced, positions)
                one = [1] * len(gold)
                row = {
                    "word": word,
                    "occurrences": chosen.occurrences,
                    "labelled": len(gold),
                    "gold_senses": gold_senses,
                    "rarest_share": float(shares[shares > 0].min()),
                    "chosen_senses": len(chosen.senses),
                    "silhouettes": chosen.silhouettes,
                    "baseline": chosen.baseline_silhouettes,
                    "ari": adjusted_rand_index(gold, induced),
                    "v_measure": v_measure(gold, induced)[2],
                    "ari_forced": adjusted_rand_index(forced_gold, forced_induced),
                    "v_measure_forced": v_measure(forced_gold, forced_induced)[2],
                    "ari_one": adjusted_rand_index(gold, one),
                    "v_measure_one": v_measure(gold, one)[2],
                    "seconds": seconds,
                    "subsamples": {}
                    if arguments.no_subsamples
                    else subsample_scores(index, chosen, positions),
                }
                rows.append(row)
                log(
                    f"{word}: {row['chosen_senses']} senses (gold {row['gold_senses']}), "
                    f"ARI {row['ari']:.3f}, V {row['v_measure']:.3f}, {seconds:.2f} s"
                )

    print(f"\nMachine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}")
    print(
        f"Backend {arguments.backend}; CoarseWSD-20 {arguments.split} sentences indexed; "
        "every occurrence clustered\n"
    )
    header = ["word", "occurrences", "labelled", "gold senses", "rarest", "chosen", "ARI", "V-measure"]
    header += ["ARI (gold k)", "V (gold k)", "ARI (one sense)", "V (one sense)", "seconds"]
    print("| " + " | ".join(header) + " |")
    print("|---" + "|---:" * (len(header) - 1) + "|")
    scores = ["ari", "v_measure", "ari_forced", "v_measure_forced", "ari_one", "v_measure_one"]
    for row in rows:
        cells = [row["word"], f"{row['occurrences']:,}", f"{row['labelled']:,}", str(row["gold_senses"])]
        cells += [f"{100 * row['rarest_share']:.1f} %", str(row["chosen_senses"])]
        cells += [*(f"{row[key]:.3f}" for key in scores), f"{row['seconds']:.2f}"]
        print("| " + " | ".join(cells) + " |")
    for name, group in (
        ("**mean**", rows),
        ("mean, no rare sense", [row for row in rows if row["rarest_share"] >= RARE_SHARE]),
        ("mean, a rare sense", [row for row in rows if row["rarest_share"] < RARE_SHARE]),
    ):
        if not group:
            continue
        right = sum(row["chosen_senses"] == row["gold_senses"] for row in group)
        means = [f"{np.mean([row[key] for row in group]):.3f}" for key in scores]
        seconds = np.mean([row["seconds"] for row in group])
        cells = [
            name,
            "",
            "",
            f"{len(group)} words",
            "",
            f"{right}/{len(group)} right",
            *means,
            f"{seconds:.2f}",
        ]
        print("| " + " | ".join(cells) + " |")
    rare = [row["word"] for row in rows if row["rarest_share"] < RARE_SHARE]
    print(
        f"\nWords with a sense under {100 * RARE_SHARE:.0f} % of their labelled occurrences: "
        f"{', '.join(rare) or 'none'}"
    )
    print(f"\nSubsamples of the labelled occurrences ({DRAWS} draws per word and size):\n")
    print("| occurrences | words | mean ARI | right number of senses |")
    print("|---:|---:|---:|---:|")
    for size in SUBSAMPLES:
        found = [row["subsamples"][str(size)] for row in rows if str(size) in row["subsamples"]]
        if not found:
            continue
        right = sum(item["right"] for item in found)
        draws = sum(item["draws"] for item in found)
        print(f"| {size} | {len(found)} | {np.mean([item['ari'] for item in found]):.3f} | {right}/{draws} |")
    balanced = [row["subsamples"]["balanced_two"] for row in rows if "balanced_two" in row["subsamples"]]
    print(
        f"\nBalanced draws of two senses (5 + 5 occurrences) of the {len(balanced)} two-sense words: "
        f"two senses in {sum(balanced)} of {DRAWS * len(balanced)}"
    )
    if arguments.json:
        for row in rows:
            print(json.dumps(row))


if __name__ == "__main__":
    main()
