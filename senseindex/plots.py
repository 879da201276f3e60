"""A map of a word's senses: its occurrences in two dimensions, coloured by induced sense."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from senseindex.errors import QueryError
from senseindex.extras import import_extra
from senseindex.search.senses import WordSenses

PLOT_SUFFIXES = (".png", ".svg", ".pdf", ".html")
_COLOURS = ("#1b73b3", "#e07b00", "#2a9d4b", "#c8313b", "#7d56b3", "#8c5a48", "#d45fb0", "#6f6f6f")


def plot_senses(word_senses: WordSenses, path: str | Path, labelled: int = 2) -> Path:
    """Draw the occurrences of a word on their first two principal components, one colour per induced sense.

    A few typical occurrences are written next to their points.

    Args:
        word_senses: from `SenseIndex.induce_senses`.
        path: the file to write: ``.png``, ``.svg`` or ``.pdf`` (an image), or ``.html`` (a page with
            the map and, per sense, its related words and typical occurrences).
        labelled: typical occurrences labelled on the map per sense.

    Returns:
        The path written.

    Raises:
        QueryError: an unknown file type, or a folder that does not exist.
        MissingExtra: matplotlib (the ``plot`` extra) is not installed.
    """
    target = check_plot_path(path)
    suffix = target.suffix.lower()
    figure = _draw(word_senses, labelled)
    try:
        if suffix == ".html":
            image = io.BytesIO()
            figure.savefig(image, format="png", dpi=110, bbox_inches="tight")
            target.write_text(
                _page(word_senses, base64.b64encode(image.getvalue()).decode()), encoding="utf-8"
            )
        else:
            figure.savefig(target, dpi=150, bbox_inches="tight")
    except OSError as error:
        raise QueryError(f"cannot write the plot to {target}: {error.strerror or error}") from None
    return target


def check_plot_path(path: str | Path) -> Path:
    """A plot file path, checked before any work: a known type in a folder that exists, and matplotlib.

    Raises:
        QueryError: an unknown file type, or a folder that does not exist.
        MissingExtra: matplotlib (the ``plot`` extra) is not installed; every file type needs it.
    """
    target = Path(path)
    if target.suffix.lower() not in PLOT_SUFFIXES:
        raise QueryError(f"the plot must be a {', '.join(PLOT_SUFFIXES)} file, not {target.name!r}")
    if not target.parent.is_dir():
        raise QueryError(f"cannot write the plot: folder {target.parent} does not exist")
    import_extra("matplotlib.figure", "plot")
    return target


def _draw(word_senses: WordSenses, labelled: int) -> Any:
    # A bare Figure, not pyplot: drawing to a file must not switch the program's own plotting
    # backend (a notebook keeps showing its figures).
    Figure = import_extra("matplotlib.figure", "plot").Figure  # noqa: N806 (a class)

    by = word_senses.by
    figure = Figure(figsize=(9, 6.5) if by is None else (15, 6.5))
    if by is None:
        axes = figure.subplots()
    else:
        axes, shares_axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
        _draw_shares(word_senses, shares_axes)
    points = word_senses.coordinates
    positions = {int(i): n for n, i in enumerate(word_senses.occurrence_ids.tolist())}
    for sense in word_senses.senses:
        colour = _COLOURS[(sense.number - 1) % len(_COLOURS)]
        members = word_senses.assignments == sense.number
        axes.scatter(
            points[members, 0],
            points[members, 1],
            s=18 if members.sum() < 500 else 8,
            alpha=0.7,
            color=colour,
            edgecolors="none",
            label=f"{sense.number}: {sense.label()} ({sense.size:,})",
        )
        middle = float(np.median(points[:, 0])) if len(points) else 0.0
        for hit in sense.typical[:labelled]:
            x, y = points[positions[hit.word_id]]
            left, word, right = hit.context_parts(width=24)
            on_the_right = x > middle  # the label goes toward the middle, so it stays inside the map
            axes.annotate(
                f"{left}[{word}]{right}",
                (x, y),
                xytext=(-6 if on_the_right else 6, 6),
                ha="right" if on_the_right else "left",
                textcoords="offset points",
                fontsize=7.5,
                color=colour,
                bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.8, "edgecolor": colour},
            )
    count = len(word_senses.senses)
    axes.set_title(
        f"'{word_senses.word}': {word_senses.occurrences:,} occurrences, "
        f"{count} induced sense{'s' if count != 1 else ''}"
    )
    axes.set_xlabel("first principal component of the occurrences' vectors")
    axes.set_ylabel("second principal component")
    axes.legend(loc="best", fontsize=8, title="sense: nearest other words (occurrences)", title_fontsize=8)
    axes.grid(alpha=0.2)
    if not len(points) or np.ptp(points[:, 1]) == 0:
        axes.set_yticks([])
    return figure


def _draw_shares(word_senses: WordSenses, axes: Any) -> None:
    """The share of each sense per slice of a metadata field, as stacked horizontal bars."""
    by = word_senses.by
    if by is None:
        return
    labels = [f"{part.label} ({part.occurrences:,})" for part in by.slices]
    rows = np.arange(len(by.slices))
    left = np.zeros(len(by.slices))
    for sense in word_senses.senses:
        shares = np.asarray([part.shares[sense.number - 1] for part in by.slices])
        colour = _COLOURS[(sense.number - 1) % len(_COLOURS)]
        axes.barh(rows, shares, left=left, color=colour, alpha=0.8, label=f"{sense.number}: {sense.label(2)}")
        left += shares
    axes.set_yticks(rows, labels, fontsize=8)
    axes.invert_yaxis()  # the first slice on top
    axes.set_xlim(0, 1)
    axes.set_xlabel("share of the slice's occurrences")
    axes.set_title(f"senses by {by.field}")
    axes.grid(alpha=0.2, axis="x")


def _page(word_senses: WordSenses, image: str) -> str:
    """A self-contained HTML page: the map, then each sense with its words and occurrences."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Senses of {html.escape(word_senses.word)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
        "mark{background:#ffe58a}li{margin:.2em 0}.meta{color:#666}</style></head><body>",
        f"<h1>Senses of <em>{html.escape(word_senses.word)}</em></h1>",
        f"<p class='meta'>{word_senses.occurrences:,} occurrences of the lemma "
        f"<em>{html.escape(word_senses.lemma)}</em>; number of senses chosen by "
        f"{html.escape(word_senses.chosen_by)}.</p>",
        f"<img alt='map of the occurrences' src='data:image/png;base64,{image}' style='max-width:100%'>",
    ]
    for sense in word_senses.senses:
        colour = _COLOURS[(sense.number - 1) % len(_COLOURS)]
        parts.append(
            f"<h2 style='color:{colour}'>Sense {sense.number}: {html.escape(sense.label())}</h2>"
            f"<p class='meta'>{sense.size:,} occurrences ({sense.share:.0%}); other words used this way: "
            + html.escape(", ".join(hit.lemma for hit in sense.related_words) or "none found")
            + "</p><ul>"
        )
        for hit in sense.typical:
            left, word, right = (html.escape(part) for part in hit.context_parts(width=80))
            source = html.escape(hit.doc_id)
            parts.append(f"<li>{left}<mark>{word}</mark>{right} <span class='meta'>{source}</span></li>")
        parts.append("</ul>")
    if word_senses.by is not None:
        by = word_senses.by
        head = "".join(
            f"<th>{sense.number}: {html.escape(sense.label(2))}</th>" for sense in word_senses.senses
        )
        parts.append(f"<h2>Senses by {html.escape(by.field)}</h2>")
        parts.append(f"<table><tr><th>slice</th><th>occurrences</th>{head}</tr>")
        for part in by.slices:
            cells = "".join(f"<td>{share:.0%}</td>" for share in part.shares)
            parts.append(f"<tr><td>{html.escape(part.label)}</td><td>{part.occurrences:,}</td>{cells}</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
