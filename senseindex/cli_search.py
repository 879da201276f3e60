"""The commands that search an index: query and senses.

CLI-only: the library never imports it.
"""

from __future__ import annotations

import json
from typing import Any

import click

import senseindex
from senseindex.cli_options import (
    BACKEND_OPTION,
    DEVICE_OPTION,
    INDEX_OPTION,
    JSON_OPTION,
    MODEL_OPTION,
    THREADS_OPTION,
    one_line_errors,
)
from senseindex.terminal import format_hit, print_change, print_sense_groups, print_senses, print_senses_by


@click.command("query")
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
@MODEL_OPTION
@BACKEND_OPTION
@DEVICE_OPTION
@THREADS_OPTION
@JSON_OPTION
@one_line_errors
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


@click.command("senses")
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
@click.option(
    "--by",
    "by_field",
    default=None,
    metavar="FIELD",
    help="Also show the share of each sense per value of this metadata field (e.g. year, source).",
)
@click.option(
    "--bins",
    type=click.IntRange(1, 100),
    default=None,
    help="With --by: cut a numeric field into this many equal-width bins.",
)
@click.option(
    "--slices",
    default=None,
    metavar="RANGES",
    help="With --by: numeric ranges, both ends included, e.g. 1810-1860,1960-2010.",
)
@MODEL_OPTION
@BACKEND_OPTION
@DEVICE_OPTION
@THREADS_OPTION
@JSON_OPTION
@one_line_errors
def senses_command(
    word: str,
    index_dir: str,
    forced: int | None,
    examples: int,
    related: int,
    plot: str | None,
    by_field: str | None,
    bins: int | None,
    slices: str | None,
    model: str | None,
    backend: str,
    device: str,
    threads: int | None,
    as_json: bool,
) -> None:
    """Show the senses WORD is used in across the index, induced from its contextual vectors.

    Every occurrence of the word (any form of its lemma) is clustered; the number of senses is
    chosen from the data (communities of the occurrences' nearest-neighbour graph, which must part
    them better than a featureless cloud is parted; one sense when they do not) unless --senses
    forces it. Each sense is shown with its size, its most typical
    occurrences, and the other words used most like it.

    \b
    Example:
      senseindex senses bank --index sample.idx
      senseindex senses crane --index sample.idx --plot crane.png
      senseindex senses bank --senses 3 --json --index sample.idx
      senseindex senses bank --by year --bins 4 --index news.idx
    """
    if plot:
        senseindex.check_plot_path(plot)  # before the work, not after
    with senseindex.open_index(
        index_dir, model=model, backend=backend, threads=threads, device=device
    ) as index:
        word_senses = index.induce_senses(
            word,
            senses=forced,
            typical=examples,
            related_words=related,
            by=by_field,
            bins=bins,
            slices=slices,
        )
    if plot:
        senseindex.plot_senses(word_senses, plot)
    if as_json:
        click.echo(json.dumps(word_senses.to_dict(), ensure_ascii=False))
        return
    print_senses(word_senses)
    if word_senses.by is not None:
        print_senses_by(word_senses)
    if plot:
        click.echo(f"\nMap written to {plot}")


@click.command("change")
@click.argument("words", nargs=-1)
@INDEX_OPTION
@click.option(
    "--by", "by_field", required=True, metavar="FIELD", help="The metadata field the slices are of."
)
@click.option(
    "--from",
    "slice_from",
    required=True,
    metavar="SLICE",
    help="The earlier slice: a value or a range (1810-1860).",
)
@click.option("--to", "slice_to", required=True, metavar="SLICE", help="The later slice: a value or a range.")
@click.option(
    "--measure",
    type=click.Choice(senseindex.CHANGE_MEASURES),
    default=senseindex.DEFAULT_CHANGE_MEASURE,
    show_default=True,
    help="Rank by the Jensen-Shannon divergence of the sense distributions (jsd), the average cosine "
    "distance across the slices (apd), or the distance of the mean vectors (centroid).",
)
@click.option(
    "--top",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Show the most changed N words (all WORDS; without WORDS, 20).",
)
@click.option(
    "--min-count",
    type=click.IntRange(1, 1_000_000),
    default=5,
    show_default=True,
    help="Occurrences a word needs in each slice.",
)
@MODEL_OPTION
@BACKEND_OPTION
@DEVICE_OPTION
@THREADS_OPTION
@JSON_OPTION
@one_line_errors
def change_command(
    words: tuple[str, ...],
    index_dir: str,
    by_field: str,
    slice_from: str,
    slice_to: str,
    measure: str,
    top: int | None,
    min_count: int,
    model: str | None,
    backend: str,
    device: str,
    threads: int | None,
    as_json: bool,
) -> None:
    """Rank WORDS by how much their use changed between two slices of the corpus.

    The slices are the documents whose metadata field --by has the value (or a number in the range)
    --from, and --to. Each word's senses are induced over all its occurrences; its occurrences in the
    two slices are compared by three measures, shown side by side, and the senses it gained or lost
    are listed with typical uses from both slices.

    Without WORDS, every word with --min-count occurrences in both slices is measured (function
    words, numbers and other tokens that are not made of letters left out) and the --top most changed
    are shown; with --measure jsd, the 5 x --top words of highest apd are ranked by their JSD.

    \b
    Example:
      senseindex change bank cell mouse --by year --from 1810-1860 --to 1960-2010 --index news.idx
      senseindex change bank --by source --from novel --to news --json --index news.idx
      senseindex change --by year --from 1810-1860 --to 1960-2010 --top 30 --index news.idx
    """
    with senseindex.open_index(
        index_dir, model=model, backend=backend, threads=threads, device=device
    ) as index:
        report = index.change(by_field, slice_from, slice_to, list(words) or None, measure, top, min_count)
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False))
        return
    print_change(report)
