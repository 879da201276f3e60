"""The commands that look after an index without searching it: info, check and compact.

CLI-only: the library never imports it.
"""

from __future__ import annotations

import json
import sys

import click

import senseindex
from senseindex.cli_options import (
    BACKEND_OPTION,
    INDEX_OPTION,
    JSON_OPTION,
    one_line_errors,
)
from senseindex.terminal import print_info


@click.command("info")
@INDEX_OPTION
@JSON_OPTION
@one_line_errors
def info_command(index_dir: str, as_json: bool) -> None:
    """Show an index's settings and counts.

    \b
    Example:
      senseindex info --index sample.idx
    """
    info = senseindex.index_info(index_dir)
    if as_json:
        click.echo(json.dumps(info))
        return
    print_info(info)


@click.command("check")
@INDEX_OPTION
@click.option(
    "--deep",
    is_flag=True,
    help="Also re-embed a sample of sentences and compare them with their stored vectors.",
)
@click.option(
    "--sample",
    type=click.IntRange(1, 100_000),
    default=50,
    show_default=True,
    help="Sentences --deep re-embeds (in each shard of a sharded index).",
)
@click.option("--model", default=None, help="Model folder to use if the stored one has moved (--deep).")
@BACKEND_OPTION
@JSON_OPTION
@one_line_errors
def check_command(
    index_dir: str, deep: bool, sample: int, model: str | None, backend: str, as_json: bool
) -> None:
    """Verify an index: files readable and unchanged, vectors sound, every vector with its row, spans exact.

    Exits with status 1 and lists the problems, one a line, if there are any.

    \b
    Example:
      senseindex check --index sample.idx
      senseindex check --index sample.idx --deep --sample 200
    """
    report = senseindex.check_index(index_dir, deep=deep, sample=sample, backend=backend, model=model)
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        counts = ", ".join(f"{value:,} {name}" for name, value in report.counts.items())
        for note in report.notes:
            click.echo(f"Note: {note}")
        if report.ok:
            click.echo(f"OK: {index_dir} ({counts})")
        for problem in report.problems:
            click.echo(f"Problem: {problem}")
    if not report.ok:
        sys.exit(1)


@click.command("compact")
@INDEX_OPTION
@JSON_OPTION
@one_line_errors
def compact_command(index_dir: str, as_json: bool) -> None:
    """Merge an index's small vector files and drop the vectors of deleted documents.

    Adds and deletes already keep the number of files low; compact leaves the fewest, for an index
    that will mostly be read. Searches keep working meanwhile.

    \b
    Example:
      senseindex compact --index sample.idx
    """
    merges = senseindex.compact_index(index_dir)
    if as_json:
        click.echo(json.dumps({"merges": merges}, ensure_ascii=False))
        return
    for merge in merges:
        click.echo(f"Merged shards: {merge}")
    click.echo(f"Compacted {index_dir}" if merges else f"Nothing to compact in {index_dir}")
