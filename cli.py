"""The senseindex command line: parses arguments, calls one library function, prints the result."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

import senseindex
from senseindex.service import ServiceLimits, serve_index
from senseindex.terminal import (
    format_hit,
    print_build_summary,
    print_delete_summary,
    print_info,
    print_sense_groups,
    print_senses,
    progress_bar,
    show_rates,
)

INDEX_OPTION = click.option(
    "--index",
    "index_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Index folder.",
)
BACKEND_OPTION = click.option(
    "--backend",
    type=click.Choice(senseindex.BACKENDS),
    default="auto",
    show_default=True,
    help="What runs the model: torch (float32), torch-bf16 (bfloat16 matrix products, ~2x faster on "
    "CPUs with AMX or AVX512-BF16), onnx (ONNX Runtime; needs the onnx extra), or auto (torch-bf16 "
    "where the CPU has bfloat16 instructions, else torch). Same search results.",
)
THREADS_OPTION = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads of the model (and of FAISS while vectors are trained, added and merged), per "
    "worker with --workers; default: one per core (the cores shared out among local workers). "
    "Searches always run FAISS on one thread.",
)
DEVICE_OPTION = click.option(
    "--device",
    type=click.Choice(senseindex.DEVICES),
    default="auto",
    show_default=True,
    help="Where the model runs: cpu, cuda (a CUDA GPU through torch) or auto (cuda when torch sees "
    "a GPU). The onnx backends run on the CPU.",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per line).")
QUIET_OPTION = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
SKIP_BAD_OPTION = click.option(
    "--skip-bad",
    is_flag=True,
    help="Skip binary files, malformed JSONL lines and repeated ids with a warning instead of stopping.",
)


def _one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's own errors into click's one-line 'Error: ...' and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except senseindex.SenseIndexError as error:
            raise click.ClickException(str(error)) from error

    return wrapper


class _OneLineErrorGroup(click.Group):
    """A click group whose every error, usage errors included, is one line on stderr and exit 1."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as error:
            if not standalone_mode:
                raise
            hint = ""
            if isinstance(error, click.UsageError) and error.ctx is not None:
                hint = f" (see '{error.ctx.command_path} --help')"
            click.echo(f"Error: {error.format_message()}{hint}", err=True)
            sys.exit(1)
        except click.Abort:
            if not standalone_mode:
                raise
            click.echo("Aborted.", err=True)
            sys.exit(1)


@click.group(cls=_OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(senseindex.__version__, prog_name="senseindex")
def main() -> None:
    """Semantic search over contextual embeddings: words in context, and sentences.

    \b
    Example:
      senseindex build-index data/sample --index sample.idx
      senseindex query --word "I sat on the [bank] of the river" --index sample.idx
      senseindex query "a heron fishing in shallow water" --index sample.idx
    """


@main.command("build-index")
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
@_one_line_errors
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


@main.command("add")
@click.argument("sources", nargs=-1, required=True)
@INDEX_OPTION
@click.option("--dry-run", is_flag=True, help="Only report which documents are new, changed or unchanged.")
@click.option("--model", default=None, help="Model folder to use if the stored one has moved.")
@BACKEND_OPTION
@DEVICE_OPTION
@THREADS_OPTION
@SKIP_BAD_OPTION
@QUIET_OPTION
@JSON_OPTION
@_one_line_errors
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


@main.command("delete")
@click.argument("doc_ids", nargs=-1, required=True)
@INDEX_OPTION
@click.option(
    "--missing-ok", is_flag=True, help="Pass over ids not in the index, so a delete run again succeeds."
)
@JSON_OPTION
@_one_line_errors
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


@main.command("check")
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
    help="Sentences --deep re-embeds.",
)
@click.option("--model", default=None, help="Model folder to use if the stored one has moved (--deep).")
@BACKEND_OPTION
@JSON_OPTION
@_one_line_errors
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


@main.command("compact")
@INDEX_OPTION
@JSON_OPTION
@_one_line_errors
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


@main.command("query")
@click.argument("text", required=False)
@INDEX_OPTION
@click.option("--word", "word_text", help="Word query: a sentence with the target in [brackets].")
@click.option("--target", help="Word query: the target word of a plain sentence.")
@click.option("--any-word", is_flag=True, help="Other words used in the target's sense, by lemma.")
@click.option("--exact-form", is_flag=True, help="Only occurrences with the target's surface form.")
@click.option("--documents", is_flag=True, help="Rank documents instead of sentences.")
@click.option(
    "--by-sense",
    is_flag=True,
    help="Word query: group the hits under the word's senses induced from the index (see 'senses').",
)
@click.option(
    "--scoring",
    type=click.Choice(senseindex.DOCUMENT_SCORINGS),
    default=senseindex.DEFAULT_DOCUMENT_SCORING,
    show_default=True,
    help="With --documents: score a document by its best sentence, best passage, or both.",
)
@click.option("-k", "k", type=click.IntRange(1, 10_000), default=10, show_default=True)
@click.option("--model", default=None, help="Model folder to use if the stored one has moved.")
@BACKEND_OPTION
@DEVICE_OPTION
@THREADS_OPTION
@JSON_OPTION
@_one_line_errors
def query_command(
    text: str | None,
    index_dir: str,
    word_text: str | None,
    target: str | None,
    any_word: bool,
    exact_form: bool,
    documents: bool,
    by_sense: bool,
    scoring: str,
    k: int,
    model: str | None,
    backend: str,
    device: str,
    threads: int | None,
    as_json: bool,
) -> None:
    """Search an index for similar sentences, or for a word used in a matching sense.

    \b
    Example:
      senseindex query "the pitcher threw a fast ball" --index sample.idx
      senseindex query "a day at the zoo" --documents --index sample.idx
      senseindex query --word "I sat on the [bank] of the river" --index sample.idx
      senseindex query --word "I sat on the bank of the river" --target bank --index sample.idx
      senseindex query --word "the [crane] lifted steel beams" --any-word --index sample.idx --json
      senseindex query --word "I sat on the [bank] of the river" --by-sense --index sample.idx
    """
    is_word_query = word_text is not None or target is not None or any_word or exact_form or by_sense
    if by_sense and (any_word or exact_form or documents):
        raise click.UsageError(
            "--by-sense groups same-word hits: not with --any-word, --exact-form or --documents"
        )
    if word_text is not None and text is not None:
        raise click.UsageError("give the query either as TEXT or with --word, not both")
    query_text = word_text if word_text is not None else text
    if query_text is None:
        raise click.UsageError("give a query TEXT, or a word query with --word")
    if by_sense:
        with senseindex.open_index(
            index_dir, model=model, backend=backend, threads=threads, device=device
        ) as index:
            word_senses, query_sense, groups = index.search_word_by_sense(query_text, target=target, k=k)
        print_sense_groups(word_senses, query_sense, groups, as_json)
        return
    with senseindex.open_index(
        index_dir, model=model, backend=backend, threads=threads, device=device
    ) as index:
        if documents and not is_word_query:
            hits: list[Any] = index.search_documents(query_text, k=k, scoring=scoring)
        elif not is_word_query:
            hits = index.search_sentences(query_text, k=k)
        elif any_word:
            hits = index.search_similar_words(query_text, target=target, k=k)
        else:
            hits = index.search_word(query_text, target=target, k=k, exact_form=exact_form)
    if as_json:
        for hit in hits:
            click.echo(json.dumps(hit.to_dict(), ensure_ascii=False))
        return
    if not hits:
        click.echo("No matches.")
    for rank, hit in enumerate(hits, start=1):
        click.echo(format_hit(rank, hit))


@main.command("info")
@INDEX_OPTION
@JSON_OPTION
@_one_line_errors
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


@main.command("senses")
@click.argument("word")
@INDEX_OPTION
@click.option("--senses", "forced", type=click.IntRange(1, 50), default=None, help="Force this many senses.")
@click.option(
    "--examples",
    type=click.IntRange(0, 50),
    default=5,
    show_default=True,
    help="Typical occurrences per sense.",
)
@click.option(
    "--related", type=click.IntRange(0, 50), default=8, show_default=True, help="Other words per sense."
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Also draw a map of the occurrences coloured by sense: FILE.png, .svg, .pdf or .html.",
)
@click.option("--model", default=None, help="Model folder to use if the stored one has moved.")
@BACKEND_OPTION
@DEVICE_OPTION
@THREADS_OPTION
@JSON_OPTION
@_one_line_errors
def senses_command(
    word: str,
    index_dir: str,
    forced: int | None,
    examples: int,
    related: int,
    plot: str | None,
    model: str | None,
    backend: str,
    device: str,
    threads: int | None,
    as_json: bool,
) -> None:
    """Show the senses WORD is used in across the index, induced from its contextual vectors.

    Every occurrence of the word (any form of its lemma) is clustered; the number of senses is
    chosen from the data (2 to 8 by silhouette, against a featureless cloud; one sense when no
    split stands out) unless --senses forces it. Each sense is shown with its size, its most typical
    occurrences, and the other words used most like it.

    \b
    Example:
      senseindex senses bank --index sample.idx
      senseindex senses crane --index sample.idx --plot crane.png
      senseindex senses bank --senses 3 --json --index sample.idx
    """
    if plot:
        senseindex.check_plot_path(plot)  # before the work, not after
    with senseindex.open_index(
        index_dir, model=model, backend=backend, threads=threads, device=device
    ) as index:
        word_senses = index.induce_senses(word, senses=forced, typical=examples, related_words=related)
    if plot:
        senseindex.plot_senses(word_senses, plot)
    if as_json:
        click.echo(json.dumps(word_senses.to_dict(), ensure_ascii=False))
        return
    print_senses(word_senses)
    if plot:
        click.echo(f"\nMap written to {plot}")


_DEFAULT_LIMITS = ServiceLimits()


@main.command("serve")
@INDEX_OPTION
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (this machine only)."
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port."
)
@click.option(
    "--token",
    envvar="SENSEINDEX_TOKEN",
    default=None,
    help="Require 'Authorization: Bearer TOKEN' on every endpoint but /health "
    "[env: SENSEINDEX_TOKEN; prefer it, a command line is visible to other users].",
)
@click.option(
    "--max-text-chars",
    type=click.IntRange(1),
    default=_DEFAULT_LIMITS.max_text_characters,
    show_default=True,
    help="Longest query text, and most characters of all texts of one /embed (more: 413).",
)
@click.option(
    "--max-k",
    type=click.IntRange(1, 10_000),
    default=_DEFAULT_LIMITS.max_k,
    show_default=True,
    help="Largest k a search may ask for (larger: 400).",
)
@click.option(
    "--max-batch",
    type=click.IntRange(1),
    default=_DEFAULT_LIMITS.max_batch,
    show_default=True,
    help="Most texts per /embed, documents per POST /documents and ids per filter (more: 413).",
)
@click.option(
    "--max-body-mb",
    type=click.FloatRange(0.001),
    default=_DEFAULT_LIMITS.max_body_bytes / 2**20,
    show_default=True,
    help="Largest request body in MiB, which bounds the documents of one POST /documents (larger: 413).",
)
@click.option(
    "--max-query-batch",
    type=click.IntRange(1, 4096),
    default=64,
    show_default=True,
    help="Most query texts of concurrent requests run through the model together (1: no batching).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="A name clients reach the service by (the Host header, without the port), besides localhost, "
    "127.0.0.1, ::1 and --host; repeatable; '*' allows any. Other Host headers are answered 400, "
    "which keeps web pages from reaching the service through DNS rebinding.",
)
@click.option(
    "--read-timeout",
    type=click.FloatRange(0.01),
    default=_DEFAULT_LIMITS.read_timeout,
    show_default=True,
    help="Seconds a request (headers and body) may take to arrive; later: 408 and the connection closed.",
)
@click.option(
    "--keep-alive-timeout",
    type=click.FloatRange(0.01),
    default=_DEFAULT_LIMITS.keep_alive_timeout,
    show_default=True,
    help="Seconds a connection may stay idle, before its first request or between requests.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    default=_DEFAULT_LIMITS.max_connections,
    show_default=True,
    help="Most connections open at once; beyond it a new one is answered 503 and closed.",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="A web origin (https://app.example) whose pages may call the service from a browser; "
    "repeatable; '*' allows any. None by default.",
)
@click.option("--model", default=None, help="Model folder to use if the stored one has moved.")
@BACKEND_OPTION
@DEVICE_OPTION
@THREADS_OPTION
@click.option("--quiet", "-q", is_flag=True, help="No access log (one line per request on stderr).")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="The log on stderr: lines of text, or one JSON object per line.",
)
@_one_line_errors
def serve_command(
    index_dir: str,
    host: str,
    port: int,
    token: str | None,
    max_text_chars: int,
    max_k: int,
    max_batch: int,
    max_body_mb: float,
    max_query_batch: int,
    allowed_hosts: tuple[str, ...],
    read_timeout: float,
    keep_alive_timeout: float,
    max_connections: int,
    cors_origins: tuple[str, ...],
    model: str | None,
    backend: str,
    device: str,
    threads: int | None,
    quiet: bool,
    log_format: str,
) -> None:
    """Serve an index over HTTP: JSON search, embedding and document endpoints.

    Loads the model and the index once, then answers until Ctrl+C. Endpoints: POST /search/sentences,
    /search/words, /search/documents, /embed, /documents; GET and DELETE /documents/ID; GET
    /senses/WORD, /health, /ready, /info, /metrics, /openapi.json. Errors are JSON with a status and
    a message; every answer carries an X-Request-Id.

    \b
    Example:
      senseindex serve --index sample.idx --port 8000
      curl -s localhost:8000/search/sentences -H 'Content-Type: application/json' \\
           -d '{"text": "a heron in shallow water", "k": 3}'
    """
    limits = ServiceLimits(
        max_text_characters=max_text_chars,
        max_k=max_k,
        max_batch=max_batch,
        max_body_bytes=int(max_body_mb * 2**20),
        read_timeout=read_timeout,
        keep_alive_timeout=keep_alive_timeout,
        max_connections=max_connections,
    )
    if token is None and os.environ.get("SENSEINDEX_TOKEN") is not None:
        # click takes an empty variable for an absent one: a secret that failed to load would serve openly
        raise click.ClickException(
            "SENSEINDEX_TOKEN is set but empty; set it to the token, or unset it to serve without one"
        )
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"Warning: serving on {host} without --token: anyone who can reach it can change the index",
            err=True,
        )

    def announce(url: str) -> None:
        auth = "token required" if token else "no token"
        click.echo(f"Serving {index_dir} at {url} ({auth}); Ctrl+C stops", err=True)

    serve_index(
        index_dir,
        host=host,
        port=port,
        token=token,
        limits=limits,
        model=model,
        backend=backend,
        max_query_batch=max_query_batch,
        access_log=not quiet,
        on_ready=announce,
        threads=threads,
        device=device,
        allowed_hosts=allowed_hosts,
        log_format=log_format,
        cors_origins=cors_origins,
    )


if __name__ == "__main__":
    main()
