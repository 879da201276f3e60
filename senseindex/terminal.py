"""How the command line shows results on a terminal: hit lines, summaries, senses, progress bars.

Part of the command-line layer: only ``cli.py`` imports it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

import senseindex


def progress_bar(quiet: bool) -> tuple[Any, Callable[[int, int | None], None]]:
    """A progress bar on stderr (bytes of input) and the callback that moves it."""
    from tqdm import tqdm

    bar = tqdm(
        total=None, unit="B", unit_scale=True, desc="indexing", disable=quiet, file=sys.stderr, leave=False
    )

    def show_progress(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    return bar, show_progress


def show_rates(bar: Any) -> Callable[[senseindex.BuildProgress], None]:
    """The callback that shows a build's documents and tokens per second (all workers) on its bar."""

    def show(report: senseindex.BuildProgress) -> None:
        shards = f", {report.shards_done}/{report.shards} shards" if report.shards > 1 else ""
        bar.set_postfix_str(
            f"{report.documents_per_second:,.1f} docs/s, {report.tokens_per_second:,.0f} tokens/s{shards}"
        )

    return show


def print_build_summary(summary: senseindex.BuildSummary, index_dir: str, as_json: bool, verb: str) -> None:
    """Print what a build or add did (warnings to stderr), as text or one JSON object."""
    for warning in summary.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps({"index": index_dir, **summary.to_dict()}, ensure_ascii=False))
        return
    resumed = " (resumed an unfinished build)" if summary.resumed else ""
    click.echo(
        f"{verb} {summary.documents:,} documents, {summary.sentences:,} sentences, "
        f"{summary.words:,} words, {summary.passages:,} passages ({summary.tokens:,} tokens) "
        f"in {summary.seconds:.1f} s -> {index_dir}{resumed}"
    )
    if summary.replaced:
        click.echo(f"Replaced {summary.replaced:,} changed documents (counted above).")
    if summary.unchanged:
        click.echo(f"Left {summary.unchanged:,} unchanged documents as they were.")
    click.echo("Vector index: " + ", ".join(f"{table} {kind}" for table, kind in summary.index_types.items()))
    for merge in summary.merges:
        click.echo(f"Merged shards: {merge}")
    if summary.skipped_files:
        click.echo(f"Skipped {len(summary.skipped_files):,} files that are not .txt, .md or .jsonl.")
    if summary.empty_documents:
        click.echo(f"Skipped {summary.empty_documents:,} empty documents.")
    if summary.unaligned_words:
        click.echo(f"{summary.unaligned_words:,} words got no token from the tokenizer and were left out.")
    if summary.warnings:
        click.echo(f"{len(summary.warnings):,} warnings (above).")


def print_delete_summary(summary: senseindex.DeleteSummary, index_dir: str, as_json: bool) -> None:
    """Print what a delete did, as text or one JSON object."""
    if as_json:
        click.echo(json.dumps(summary.to_dict(), ensure_ascii=False))
        return
    rows = summary.rows
    click.echo(
        f"Deleted {rows['documents']:,} documents ({rows['sentences']:,} sentences, {rows['words']:,} words, "
        f"{rows['passages']:,} passages) from {index_dir}"
    )
    if summary.missing:
        shown = ", ".join(summary.missing[:20]) + (
            f" and {len(summary.missing) - 20:,} more" if len(summary.missing) > 20 else ""
        )
        click.echo(f"Passed over {len(summary.missing):,} ids not in the index: {shown}")
    for merge in summary.merges:
        click.echo(f"Merged shards: {merge}")


def print_sense_groups(
    word_senses: senseindex.WordSenses, query_sense: int, groups: list[senseindex.SenseGroup], as_json: bool
) -> None:
    """Print same-word hits grouped under the word's induced senses, as text or one JSON object."""
    if as_json:
        summary = word_senses.to_dict(assignments=False)
        click.echo(
            json.dumps(
                {"senses": summary, "query_sense": query_sense, "groups": [g.to_dict() for g in groups]},
                ensure_ascii=False,
            )
        )
        return
    senses = {sense.number: sense for sense in word_senses.senses}
    count = len(word_senses.senses)
    click.echo(
        f"'{word_senses.word}': {count} induced sense{'s' if count != 1 else ''} in "
        f"{word_senses.occurrences:,} occurrences; the query is nearest sense {query_sense} "
        f"({senses[query_sense].label()})"
    )
    rank = 0
    for group in groups:
        sense = senses.get(group.sense)
        title = (
            f"sense {group.sense}: {sense.label()} ({sense.size:,} occurrences)"
            if sense
            else "not yet grouped"
        )
        click.echo(f"\n{click.style(title, bold=True)}")
        for hit in group.hits:
            rank += 1
            click.echo(format_hit(rank, hit))


def format_hit(rank: int, hit: Any) -> str:
    """One line for a sentence, document, word or lemma hit: rank, score, document, text."""
    if isinstance(hit, senseindex.DocumentHit):
        return f"{rank:3d}. {hit.score:.3f}  {hit.doc_id}  {hit.best_sentence.text}"
    if isinstance(hit, senseindex.SentenceHit):
        return f"{rank:3d}. {hit.score:.3f}  {hit.doc_id}  {hit.text}"
    if isinstance(hit, senseindex.LemmaHit):
        return f"{rank:3d}. {hit.score:.3f}  {hit.lemma:<14} {hit.best.doc_id}  {highlight(hit.best, 50)}"
    return f"{rank:3d}. {hit.score:.3f}  {hit.doc_id}  {highlight(hit, 60)}"


def highlight(hit: senseindex.WordHit, width: int) -> str:
    """A word hit's context line, about ``width`` characters, with the word in bold brackets."""
    before, word, after = hit.context_parts(width)
    # Brackets survive when output is not a terminal (click strips the styling there).
    return before + click.style(f"[{word}]", bold=True, fg="yellow") + after


def graph_reason(word_senses: senseindex.WordSenses) -> str:
    """Why that many senses: the communities kept, or the best one tried, against a featureless cloud."""
    scores, bars = word_senses.silhouettes, word_senses.baseline_silhouettes
    if not scores:
        return "its uses form one community"
    count = len(word_senses.senses)
    if count == 1:
        best = max(scores, key=lambda k: scores[k] - bars.get(k, 0.0))
        return (
            f"its uses part into {best} communities no better than a featureless cloud: "
            f"silhouette {scores[best]:.3f} against {bars.get(best, float('nan')):.3f}"
        )
    return (
        f"{count} communities of uses: silhouette {scores[count]:.3f} "
        f"against a featureless cloud's {bars.get(count, float('nan')):.3f}"
    )


def print_info(info: dict[str, Any]) -> None:
    """Print an index's description (``senseindex.index_info``) as ``name: value`` lines."""
    click.echo(f"index: {info['path']}")
    for name, value in info["counts"].items():
        click.echo(f"{name}: {value:,}")
    for name, value in info["settings"].items():
        click.echo(f"{name}: {value}")
    click.echo("vector files: " + ", ".join(f"{table} {n:,}" for table, n in info["shard_counts"].items()))
    deleted = {table: n for table, n in info["deleted_vectors"].items() if n}
    if deleted:
        click.echo(
            "vectors of deleted rows still on disk (skipped by searches): "
            + ", ".join(f"{table} {n:,}" for table, n in deleted.items())
        )
    for shard in info.get("shards", []):
        state = "complete" if shard["complete"] else "build unfinished"
        rows = ", ".join(f"{n:,} {table}" for table, n in shard["counts"].items())
        click.echo(f"shard {shard['shard']}: {rows} ({state})")
    for shard in info["vector_files"]:
        size = "missing" if shard["bytes"] is None else f"{shard['bytes']:,} bytes"
        click.echo(f"vector file {shard['file']}: {shard['count']:,} vectors, {shard['index_type']}, {size}")


def print_senses(word_senses: senseindex.WordSenses) -> None:
    """Print a word's induced senses: how many and why, then each sense with its typical uses."""
    count = len(word_senses.senses)
    if word_senses.chosen_by == "graph":
        how = graph_reason(word_senses)
    else:
        how = {"forced": "as asked", "no spread": "all its vectors are the same"}.get(
            word_senses.chosen_by, "too few occurrences to split"
        )
    sampled = (
        f", clustered on a sample of {word_senses.clustered:,}"
        if word_senses.clustered < word_senses.occurrences
        else ""
    )
    click.echo(
        f"'{word_senses.word}' (lemma {word_senses.lemma}): {word_senses.occurrences:,} occurrences"
        f"{sampled}, {count} sense{'s' if count != 1 else ''} ({how})"
    )
    for sense in word_senses.senses:
        click.echo(
            f"\n{click.style(f'Sense {sense.number}: {sense.label()}', bold=True)}  "
            f"{sense.size:,} occurrences ({sense.share:.0%})"
        )
        if sense.related_words:
            click.echo("  other words used this way: " + ", ".join(hit.lemma for hit in sense.related_words))
        for hit in sense.typical:
            click.echo(f"  {hit.score:.3f}  {hit.doc_id}  {highlight(hit, 60)}")


def print_senses_by(word_senses: senseindex.WordSenses) -> None:
    """Print the share of each sense per slice of a metadata field, a row per slice."""
    by = word_senses.by
    if by is None:
        return
    click.echo(f"\n{click.style(f'Senses by {by.field}', bold=True)}")
    labels = [f"{sense.number}: {sense.label(2)}" for sense in word_senses.senses]
    width = max(len(by.field), *(len(s.label) for s in by.slices))
    columns = [max(6, len(label)) for label in labels]
    click.echo(
        f"  {by.field:<{width}}  {'occurrences':>11}  "
        + "  ".join(f"{label:>{column}}" for label, column in zip(labels, columns, strict=True))
    )
    for part in by.slices:
        shares = "  ".join(
            f"{share:>{column}.0%}" for share, column in zip(part.shares, columns, strict=True)
        )
        click.echo(f"  {part.label:<{width}}  {part.occurrences:>11,}  {shares}")
    notes = []
    if by.without_value:
        notes.append(f"{by.without_value:,} occurrences have no {by.field}")
    if by.outside:
        notes.append(f"{by.outside:,} fall outside the slices")
    if notes:
        click.echo("  (" + "; ".join(notes) + ")")


def print_change(report: senseindex.ChangeReport) -> None:
    """Print words ranked by change between two slices, with the senses they gained or lost."""
    click.echo(
        f"Change in use between {report.field} {report.slice_from} and {report.slice_to} "
        f"(ranked by {report.measure})"
    )
    if report.candidates is not None:
        click.echo(
            f"{report.candidates:,} words occur often enough in both slices; the {len(report.words):,} "
            "most changed:"
        )
    if report.words:
        width = max(4, *(len(change.word) for change in report.words))
        click.echo(f"\n  {'word':<{width}}  {'jsd':>6}  {'apd':>6}  {'centroid':>8}  {'from':>6}  {'to':>6}")
    for change in report.words:
        click.echo(
            f"  {change.word:<{width}}  {change.jsd:>6.3f}  {change.apd:>6.3f}  {change.centroid:>8.3f}  "
            f"{change.occurrences_from:>6,}  {change.occurrences_to:>6,}"
        )
    for change in report.words:
        moved = [sense for sense in change.senses if sense.status != "kept"]
        for sense in moved:
            click.echo(
                f"\n{change.word}: sense {sense.number} ({sense.label}) {sense.status}: "
                f"{sense.share_from:.0%} -> {sense.share_to:.0%}"
            )
            for hit in (*sense.typical_from, *sense.typical_to):
                click.echo(f"  {hit.doc_id}  {highlight(hit, 60)}")
    for word, reason in report.skipped.items():
        click.echo(f"\nNot compared: {word} ({reason})")
