"""Word-sense induction on CoarseWSD-20: induced senses against the gold senses, per word.

    python benchmarks/senses.py ../shared/data [--work DIR] [--index DIR] [--backend auto]

The train sentences of the 20 words are indexed (one sentence a document, as benchmarks/quality.py
does; or --index reuses such an index). For each word, `SenseIndex.induce_senses` clusters every
occurrence of its lemma in the index — the labelled target occurrences and the unlabelled ones in
other words' sentences alike — and the labelled ones are scored against their gold senses:

- adjusted Rand index (ARI) and V-measure of the induced senses;
- whether the number of senses chosen equals the number of gold senses the word has in train;
- seconds per word of `induce_senses` with its defaults (as `senseindex senses` runs it: clustering,
  5 typical occurrences and 8 related words per sense; no model pass, the vectors are read);
- the same two scores with the number of senses forced to the gold number (how good the clusters
  are when the number is known), and for the baseline of all occurrences in one sense (ARI 0,
  V-measure 0 by definition, computed in the same run as a check).

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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# benchmarks/metrics.py: this script's folder is first on sys.path when run as python benchmarks/X.py
from metrics import adjusted_rand_index, v_measure  # noqa: E402

import senseindex  # noqa: E402

WSD_WORDS = (
    "apple arm bank bass bow chair club crane deck digit hood java mole pitcher pound seal spring square "
    "trunk yard"
).split()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def read_train(folder: Path, word: str) -> list[tuple[str, int, int]]:
    """``(sentence, target start, gold sense)`` of a word's train sentences whose index is on the word."""
    data = (folder / word / "train.data.txt").read_text(encoding="utf-8").splitlines()
    gold = (folder / word / "train.gold.txt").read_text(encoding="utf-8").splitlines()
    items = []
    for line, sense in zip(data, gold, strict=True):
        position, sentence = line.split("\t", 1)
        tokens = sentence.split(" ")
        if word not in tokens[int(position)].lower():
            continue
        start = sum(len(token) + 1 for token in tokens[: int(position)])
        items.append((sentence, start, int(sense.strip())))
    return items


def build_index(train: dict[str, list[tuple[str, int, int]]], work: Path, backend: str) -> Path:
    records = [
        {"id": f"{word}:{i}", "text": sentence}
        for word in WSD_WORDS
        for i, (sentence, _, _) in enumerate(train[word])
    ]
    source = work / "wsd-train.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    index_dir = work / "wsd.idx"
    log(f"building the train index ({len(records)} sentences)")
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, help="../shared/data")
    parser.add_argument("--work", type=Path, help="folder for the index (a temporary one if not given)")
    parser.add_argument("--index", type=Path, help="reuse a train index built by an earlier run")
    parser.add_argument("--backend", default="auto", choices=senseindex.BACKENDS)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON lines too")
    arguments = parser.parse_args()
    folder = arguments.data / "coarsewsd20"
    train = {word: read_train(folder, word) for word in WSD_WORDS}
    gold_senses = {word: len({sense for *_, sense in train[word]}) for word in WSD_WORDS}

    with tempfile.TemporaryDirectory() as temporary:
        work = arguments.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        index_dir = arguments.index or build_index(train, work, arguments.backend)
        rows = []
        with senseindex.open_index(index_dir, backend=arguments.backend) as index:
            for word in WSD_WORDS:
                labelled = {(f"{word}:{i}", start): sense for i, (_, start, sense) in enumerate(train[word])}
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
                forced = index.induce_senses(word, senses=gold_senses[word], typical=0, related_words=0)
                forced_gold, forced_induced = score(forced, positions)
                one = [1] * len(gold)
                row = {
                    "word": word,
                    "occurrences": chosen.occurrences,
                    "labelled": len(gold),
                    "gold_senses": gold_senses[word],
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
                }
                rows.append(row)
                log(
                    f"{word}: {row['chosen_senses']} senses (gold {row['gold_senses']}), "
                    f"ARI {row['ari']:.3f}, V {row['v_measure']:.3f}, {seconds:.2f} s"
                )

    print(f"\nMachine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}")
    print(f"Backend {arguments.backend}; CoarseWSD-20 train sentences indexed; every occurrence clustered\n")
    header = ["word", "occurrences", "labelled", "gold senses", "chosen", "ARI", "V-measure"]
    header += ["ARI (gold k)", "V (gold k)", "ARI (one sense)", "V (one sense)", "seconds"]
    print("| " + " | ".join(header) + " |")
    print("|---" + "|---:" * (len(header) - 1) + "|")
    scores = ["ari", "v_measure", "ari_forced", "v_measure_forced", "ari_one", "v_measure_one"]
    for row in rows:
        cells = [row["word"], f"{row['occurrences']:,}", f"{row['labelled']:,}", str(row["gold_senses"])]
        cells += [str(row["chosen_senses"]), *(f"{row[key]:.3f}" for key in scores), f"{row['seconds']:.2f}"]
        print("| " + " | ".join(cells) + " |")
    right = sum(row["chosen_senses"] == row["gold_senses"] for row in rows)
    means = [f"{np.mean([row[key] for row in rows]):.3f}" for key in scores]
    seconds = np.mean([row["seconds"] for row in rows])
    print("| " + " | ".join(["**mean**", "", "", "", f"{right}/20 right", *means, f"{seconds:.2f}"]) + " |")
    if arguments.json:
        for row in rows:
            print(json.dumps(row))


if __name__ == "__main__":
    main()
