"""`senseindex change` against a known truth: slices of CoarseWSD-20 with drawn sense proportions.

    python benchmarks/change.py ../shared/data [--work DIR] [--draws 6] [--size 40] [--backend auto]

For each of the 20 words and each draw, two slices ("A" and "B") of labelled train sentences are
drawn with known proportions of the word's two most frequent gold senses: draw 0 has only the first
sense in A and a mix in B (the second sense gained), draw 1 a mix in A and only the first sense in B
(lost), later draws a random share of the first sense in each slice (any JSD, gain and loss included
when a share comes out 0 or 1). Every drawn sentence is a document with the field
``slice`` = ``WORD-DRAW-A`` or ``-B`` (a sentence may be drawn again in another draw; never twice in
one). The true JSD is that of the gold senses' counts in the two slices. `SenseIndex.change` then
compares each word's slices, and the benchmark reports, per measure, the Spearman correlation with
the true JSD, and the accuracy of the gained/lost flags (a pair truly gains a sense when a gold
sense holds at least 10 % of B and none of A).

The default measure is chosen on the words at even positions of the alphabetical list and reported
on the others. Fixed seeds. Benchmarks are not tests: nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metrics import spearman  # noqa: E402
from senses import WSD_WORDS, log, read_split  # noqa: E402

import senseindex  # noqa: E402

GAIN_SHARE = 0.10


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """JSD in bits of two count vectors."""
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    total = 0.0
    for x in (p, q):
        keep = x > 0
        total += float(np.sum(x[keep] * np.log2(x[keep] / m[keep]))) / 2
    return total


def draw_slices(
    items: list[tuple[str, int, int]], draws: int, size: int, rng: np.random.Generator
) -> list[dict]:
    """The drawn slices of one word: per draw, the sentences of A and B and their gold senses."""
    by_sense: dict[int, list[str]] = {}
    for sentence, _, sense in items:
        by_sense.setdefault(sense, []).append(sentence)
    first, second = sorted(by_sense, key=lambda s: -len(by_sense[s]))[:2]
    drawn = []
    for draw in range(draws):
        if draw == 0:
            shares = (1.0, rng.uniform(0.2, 0.8))
        elif draw == 1:
            shares = (rng.uniform(0.2, 0.8), 1.0)
        else:
            shares = (rng.choice([0.0, rng.uniform(0, 1), 1.0], p=[0.15, 0.7, 0.15]), rng.uniform(0, 1))
        used: set[str] = set()
        slices = {}
        for name, share in zip("AB", shares, strict=True):
            wanted = {first: round(share * size), second: size - round(share * size)}
            chosen = []
            for sense, count in wanted.items():
                pool = [s for s in by_sense[sense] if s not in used]
                picked = [pool[i] for i in rng.permutation(len(pool))[: min(count, len(pool))]]
                used.update(picked)
                chosen += [(sentence, sense) for sentence in picked]
            slices[name] = chosen
        drawn.append(slices)
    return drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--draws", type=int, default=6)
    parser.add_argument("--size", type=int, default=40, help="sentences per slice")
    parser.add_argument("--backend", default="auto")
    arguments = parser.parse_args()
    work = arguments.work or Path(tempfile.mkdtemp(prefix="senseindex-change-"))
    work.mkdir(parents=True, exist_ok=True)
    folder = arguments.data / "coarsewsd20"
    rng = np.random.default_rng(0)
    records, truth = [], {}
    for word in WSD_WORDS:
        for draw, slices in enumerate(
            draw_slices(read_split(folder, word, "train"), arguments.draws, arguments.size, rng)
        ):
            senses = sorted({sense for chosen in slices.values() for _, sense in chosen})
            counts = {
                name: np.asarray([sum(1 for _, s in chosen if s == sense) for sense in senses], dtype=float)
                for name, chosen in slices.items()
            }
            shares = {name: c / max(c.sum(), 1) for name, c in counts.items()}
            truth[(word, draw)] = {
                "jsd": jensen_shannon(counts["A"], counts["B"]),
                "gained": bool(np.any((shares["B"] >= GAIN_SHARE) & (counts["A"] == 0))),
                "lost": bool(np.any((shares["A"] >= GAIN_SHARE) & (counts["B"] == 0))),
            }
            for name, chosen in slices.items():
                for number, (sentence, _) in enumerate(chosen):
                    records.append(
                        {
                            "id": f"{word}-{draw}-{name}-{number}",
                            "text": sentence,
                            "slice": f"{word}-{draw}-{name}",
                        }
                    )
    source = work / "slices.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    index_dir = work / "slices.idx"
    log(f"building the index ({len(records)} sentences)")
    senseindex.build_index(
        [str(source)],
        index_dir,
        senseindex.EncoderSettings(backend=arguments.backend),
        overwrite=True,
        passages="none",
        sentence_splitting="paragraph",
    )
    results = {}
    started = time.perf_counter()
    with senseindex.open_index(index_dir, backend=arguments.backend) as index:
        for word, draw in truth:
            try:
                report = index.change("slice", f"{word}-{draw}-A", f"{word}-{draw}-B", [word], min_count=3)
            except senseindex.WordNotFound:  # a slice the word's small senses could not fill
                results[(word, draw)] = None
                continue
            results[(word, draw)] = report.words[0]
    seconds = (time.perf_counter() - started) / len(truth)
    halves = {"choose": WSD_WORDS[0::2], "report": WSD_WORDS[1::2]}
    print(f"Date: {time.strftime('%Y-%m-%d')}. Machine: {platform.machine()}, {len(records)} sentences")
    print(f"pairs: {len(truth)} ({arguments.draws} per word), {arguments.size} sentences per slice")
    print(f"change per word: {seconds:.2f} s")
    missing = [key for key, value in results.items() if value is None]
    if missing:
        print(f"not compared: {missing}")
    rows = {}
    for half, words in halves.items():
        keys = [key for key in truth if key[0] in words and results[key] is not None]
        true_jsd = [truth[key]["jsd"] for key in keys]
        row = {
            measure: spearman([results[key].score(measure) for key in keys], true_jsd)
            for measure in senseindex.CHANGE_MEASURES
        }
        for flag in ("gained", "lost"):
            predicted = [any(s.status == flag for s in results[key].senses) for key in keys]
            actual = [truth[key][flag] for key in keys]
            row[f"{flag} accuracy"] = float(np.mean([p == a for p, a in zip(predicted, actual, strict=True)]))
            row[f"{flag} true pairs"] = int(sum(actual))
        row["pairs"] = len(keys)
        row["true JSD range"] = (round(min(true_jsd), 3), round(max(true_jsd), 3))
        rows[half] = row
    chosen = max(senseindex.CHANGE_MEASURES, key=lambda measure: rows["choose"][measure])
    print(f"default measure chosen on the first half: {chosen}")
    print(
        "| words | pairs | true JSD | Spearman jsd | Spearman apd | Spearman centroid "
        "| gained acc. (true) | lost acc. (true) |"
    )
    print("|---|---:|---|---:|---:|---:|---|---|")
    for half, row in rows.items():
        print(
            f"| {half} half | {row['pairs']} | {row['true JSD range'][0]}–{row['true JSD range'][1]} | "
            f"{row['jsd']:.3f} | {row['apd']:.3f} | {row['centroid']:.3f} | "
            f"{row['gained accuracy']:.2f} ({row['gained true pairs']}) | "
            f"{row['lost accuracy']:.2f} ({row['lost true pairs']}) |"
        )


if __name__ == "__main__":
    main()
