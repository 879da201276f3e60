"""The commands that write documents into an index: build-index, add and delete.

CLI-only: the library never imports it.
"""

from __future__ import annotations

import json

import click

import senseindex
from senseindex.cli_options import (
    BACKEND_OPTION,
    DEVICE_OPTION,
    INDEX_OPTION,
    JSON_OPTION,
    MODEL_OPTION,
    QUIET_OPTION,
    SKIP_BAD_OPTION,
    THREADS_OPTION,
    one_line_errors,
)
from senseindex.terminal import print_build_summary, print_delete_summary, progress_bar, show_rates


@click.command("build-index")
@click.argument("sources", nargs=-1, required=True)
@INDEX_OPTION
@click.option(
    "--model",
    default=senseindex.DEFAULT_MODEL,
    show_default=True,
    help="Local sentence-transformers or Hugging Face model folder (the bundled default otherwise).",
)
@click.option(
    "--layers",
    default="last",
    show_default=True,
    help="Word-vector layers: last, mean-last-4, concat-last-4, mean-all or layer-N.",
)
@click.option(
    "--piece-pooling",
    type=click.Choice(senseindex.PIECE_POOLINGS),
    default="mean",
    show_default=True,
    help="How WordPiece vectors become a word vector.",
)
@click.option(
    "--sentence-pooling",
    type=click.Choice(senseindex.SENTENCE_POOLINGS),
    default="model",
    show_default=True,
    help="Sentence vector: the model's own pooling, mean of tokens, or [CLS].",
)
@click.option(
    "--max-length",
    type=click.IntRange(8, 512),
    default=None,
    help="Tokens per forward window (default: the model's maximum, 256 for the default model).",
)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=64, show_default=True)
@BACKEND_OPTION
@DEVICE_OPTION
@THREADS_OPTION
@click.option(
    "--passages",
    type=click.Choice(senseindex.PASSAGE_MODES),
    default="pooled",
    show_default=True,
    help="Passage vectors (runs of sentences up to the model's window) for document ranking: pooled "
    "from the sentences' tokens (free), encoded by another forward pass, or none.",
)
@click.option(
    "--sentences",
    "sentence_splitting",
    type=click.Choice(senseindex.SENTENCE_MODES),
    default="auto",
    show_default=True,
    help="Sentence splitting: auto, or take each paragraph / JSONL text (paragraph) or each line "
    "(line) as one sentence, for corpora already split into sentences.",
)
@click.option(
    "--index-type",
    default="auto",
    show_default=True,
    help="Vector index: auto (exact up to 65,536 vectors per table, SQ8 above), flat (always exact) "
    "or a FAISS index_factory string such as SQ8, SQ4, IVF1024,SQ8 or HNSW32.",
)
@click.option("--skip-stopwords", is_flag=True, help="Give function words no word vector.")
@click.option("--overwrite", is_flag=True, help="Replace an index already in the folder.")
@click.option(
    "--workers",
    type=click.IntRange(1, 4096),
    default=1,
    show_default=True,
    help="Processes building shards at once; more than 1 runs a Ray actor pool (the ray extra), one "
    "model per worker.",
)
@click.option(
    "--shards",
    type=click.IntRange(1, 4096),
    default=None,
    help="Split the documents by a hash of their id into this many shards, each a complete index in "
    "DIR/shard-NNNN (default: one per worker; 1 is an ordinary index).",
)
@click.option(
    "--ray-address",
    default=None,
    metavar="HOST:PORT",
    help="Join this running Ray cluster (ray start --head) instead of starting a local Ray. Every node "
    "must see the sources and DIR at the same paths.",
)
@SKIP_BAD_OPTION
@QUIET_OPTION
@JSON_OPTION
@one_line_errors
def build_index_command(
    sources: tuple[str, ...],
    index_dir: str,
    model: str,
    layers: str,
    piece_pooling: str,
    sentence_pooling: str,
    max_length: int | None,
    batch_size: int,
    backend: str,
    device: str,
    threads: int | None,
    passages: str,
    sentence_splitting: str,
    index_type: str,
    skip_stopwords: bool,
    overwrite: bool,
    workers: int,
    shards: int | None,
    ray_address: str | None,
    skip_bad: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Index documents at word and sentence level.

    SOURCES are .txt/.md files (paragraphs split at blank lines), .jsonl files (a "text" field per
    line; "id" and other fields kept as metadata), folders of them, or - for standard input.

    The index is committed every few seconds: if the build is interrupted, the documents committed
    so far are searchable, and running the same command again completes it.

    With --workers N (or --shards S) the documents are split by a hash of their id into shards, each
    a complete index under DIR, built by N Ray workers at once (a local Ray, or the cluster at
    --ray-address). A worker that dies is restarted and resumes its shard; running the same command
    again resumes a build that was stopped.

    \b
    Example:
      senseindex build-index data/sample --index sample.idx
      senseindex build-index notes.jsonl --index notes.idx --layers mean-last-4
      cat essay.txt | senseindex build-index - --index essay.idx
      senseindex build-index corpus/ --index big.idx --index-type IVF1024,SQ8
      senseindex build-index corpus/ --index big.idx --workers 2 --threads 1
      senseindex build-index /shared/corpus --index /shared/big.idx --workers 16 \\
          --ray-address 10.0.0.5:6379
    """
    bar, show_progress = progress_bar(quiet)
    try:
        summary = senseindex.build_index(
            list(sources),
            index_dir,
            senseindex.EncoderSettings(
                model=model,
                layers=layers,
                piece_pooling=piece_pooling,
                sentence_pooling=sentence_pooling,
                max_length=max_length,
                batch_size=batch_size,
                backend=backend,
                device=device,
                threads=threads,
            ),
            skip_stopwords=skip_stopwords,
            overwrite=overwrite,
            progress=show_progress,
            passages=passages,
            sentence_splitting=sentence_splitting,
            index_type=index_type,
            skip_bad=skip_bad,
            shards=shards,
            workers=workers,
            ray_address=ray_address,
            progress_report=show_rates(bar),
        )
    finally:
        bar.close()
    print_build_summary(summary, index_dir, as_json, "Indexed")


@click.command("add")
@click.argument("sources", nargs=-1, required=True)
@INDEX_OPTION
@click.option("--dry-run", is_flag=True, help="Only report which documents are new, changed or unchanged.")
@MODEL_OPTION
@BACKEND_OPTION
@DEVICE_OPTION
@THREADS_OPTION
@SKIP_BAD_OPTION
@QUIET_OPTION
@JSON_OPTION
@one_line_errors
def add_command(
    sources: tuple[str, ...],
    index_dir: str,
    dry_run: bool,
    model: str | None,
    backend: str,
    device: str,
    threads: int | None,
    skip_bad: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Add documents to an index, with the settings stored in it.

    A document's identity is its JSONL "id", or its path relative to the folder given as source.
    Unchanged documents are left alone; changed ones are replaced (old sentences, words and vectors
    disappear from queries in the same commit that adds the new ones).

    
    Example:
      senseindex add more_notes/ --index notes.idx
      senseindex add updated.jsonl --index notes.idx --dry-run
    """
    if dry_run:
        plan = senseindex.plan_changes(list(sources), index_dir, skip_bad=skip_bad)
        for warning in plan.warnings:
            click.echo(f"Warning: {warning}", err=True)
        if as_json:
            click.echo(json.dumps(plan.to_dict(), ensure_ascii=False))
            return
        for label, ids in (("new", plan.new), ("changed", plan.changed), ("unchanged", plan.unchanged)):
            click.echo(f"{len(ids):,} {label}" + (": " + ", ".join(ids[:20]) if ids else ""))
            if len(ids) > 20:
                click.echo(f"  … and {len(ids) - 20:,} more")
        return
    bar, show_progress = progress_bar(quiet)
    try:
        summary = senseindex.add_documents(
            list(sources),
            index_dir,
            model=model,
            backend=backend,
            progress=show_progress,
            skip_bad=skip_bad,
            threads=threads,
            device=device,
        )
    finally:
        bar.close()
    print_build_summary(summary, index_dir, as_json, "Added")


@click.command("delete")
@click.argument("doc_ids", nargs=-1, required=True)
@INDEX_OPTION
@click.option(
    "--missing-ok", is_flag=True, help="Pass over ids not in the index, so a delete run again succeeds."
)
@JSON_OPTION
@one_line_errors
def delete_command(doc_ids: tuple[str, ...], index_dir: str, missing_ok: bool, as_json: bool) -> None:
    """Delete documents, with all their sentences, words and vectors.

    DOC_IDS are document ids as stored (the JSONL "id", or the file's path relative to its source
    folder; `senseindex info` counts them, query hits show them). An id not in the index stops the
    delete before anything is deleted, unless --missing-ok passes over it (for retries).

    
    Example:
      senseindex delete zoo_visit.md --index sample.idx
      senseindex delete zoo_visit.md --index sample.idx --missing-ok
    """
    summary = senseindex.delete_documents(index_dir, list(doc_ids), missing_ok=missing_ok)
    print_delete_summary(summary, index_dir, as_json)
