"""Text segmentation: paragraphs, sentences, words, lemmas — all with character offsets.

Offsets are Python ``str`` indices (Unicode code points, end exclusive) into the document text, so that
``document_text[start:end]`` gives back the exact sentence or word.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pysbd
import regex
import simplemma

from indexer.errors import SettingsError
from indexer.stopwords import is_stopword

# A word is a number with its decimal/thousands separators ("3.5", "1,000") or a run of letters and
# digits (with their combining marks: decomposed accents, Indic vowel signs) with inner apostrophes kept
# ("don't", "O'Neil"). Punctuation and symbols are never words, so they never get a word vector.
_WORD_PATTERN = regex.compile(
    r"\p{Nd}+(?:[.,]\p{Nd}+)+(?![\p{L}\p{N}])"
    r"|[\p{L}\p{N}][\p{L}\p{N}\p{M}]*(?:['\u2019][\p{L}\p{N}][\p{L}\p{N}\p{M}]*)*"
)
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n\s*")


@dataclass(frozen=True, slots=True)
class Span:
    """A character span ``[start, end)`` into a document."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Word:
    """A word occurrence: its span in the document, surface form and lower-case lemma."""

    start: int
    end: int
    form: str
    lemma: str


@functools.lru_cache(maxsize=1)
def _segmenter() -> pysbd.Segmenter:
    # clean=False keeps the text as it is, so segments can be located back in the paragraph.
    return pysbd.Segmenter(language="en", clean=False, char_span=False)


def split_paragraphs(text: str) -> Iterator[Span]:
    """Split a document into paragraphs at blank lines.

    Args:
        text: the document text.

    Yields:
        The span of each non-blank paragraph, stripped of surrounding white space.
    """
    position = 0
    for match in [*_BLANK_LINES.finditer(text), None]:
        end = match.start() if match else len(text)
        yield from _strip_span(text, position, end)
        if match:
            position = match.end()


def _strip_span(text: str, start: int, end: int) -> Iterator[Span]:
    segment = text[start:end]
    stripped = segment.strip()
    if stripped:
        offset = start + (len(segment) - len(segment.lstrip()))
        yield Span(offset, offset + len(stripped))


def split_sentences(text: str, paragraph: Span) -> list[Span]:
    """Split one paragraph into sentences with pysbd (abbreviations, decimals and quotes aware).

    A segment that starts with a lower-case letter or with punctuation is joined to the one before:
    no sentence starts that way, so pysbd has cut after an abbreviation it did not know ("Acme
    Inc. , a subsidiary", "M. domestica"). This also keeps lower-cased, pre-tokenised text (as in
    many NLP datasets) in one piece.

    Args:
        text: the document text.
        paragraph: the paragraph's span in ``text``.

    Returns:
        Sentence spans into ``text``, in order, white space stripped; together they cover every
        non-space character of the paragraph.
    """
    # Hard-wrapped lines are not sentence ends: pysbd sees a line break as a space (same length, so
    # offsets are unchanged).
    body = text[paragraph.start : paragraph.end].replace("\r", " ").replace("\n", " ")
    starts: list[int] = []
    cursor = 0
    for segment in _segmenter().segment(body):
        piece = segment.strip()
        if not piece:
            continue
        found = body.find(piece, cursor)
        if found < 0:
            # pysbd altered the text: leave the rest of the paragraph as one sentence rather than
            # lose characters.
            break
        if not starts or not _continues_sentence(piece):
            starts.append(found)
        cursor = found + len(piece)
    if not starts:
        starts = [0]
    spans: list[Span] = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(body)
        spans.extend(_strip_span(text, paragraph.start + start, paragraph.start + end))
    return spans


def _continues_sentence(segment: str) -> bool:
    first = segment[0]
    return first.islower() or first in ",;:)]}%.!?-\u2013\u2014"


SENTENCE_MODES = ("auto", "paragraph", "line")


def split_text(text: str, mode: str = "auto") -> list[Span]:
    """Split a document into sentences.

    Args:
        text: the document text.
        mode: ``auto`` (paragraphs at blank lines, then sentences with :func:`split_sentences`),
            ``paragraph`` (each paragraph is one sentence: for text that is already one sentence per
            paragraph or JSONL record) or ``line`` (each non-blank line is one sentence).

    Returns:
        Sentence spans into ``text``, in order.

    Raises:
        SettingsError: an unknown mode.
    """
    check_sentence_mode(mode)
    if mode == "auto":
        return [s for p in split_paragraphs(text) for s in split_sentences(text, p)]
    if mode == "paragraph":
        return list(split_paragraphs(text))
    spans: list[Span] = []  # "line"
    position = 0
    for line in text.splitlines(keepends=True):
        spans.extend(_strip_span(text, position, position + len(line)))
        position += len(line)
    return spans


def check_sentence_mode(mode: str) -> None:
    """Raise :class:`SettingsError` unless ``mode`` is one of :data:`SENTENCE_MODES`."""
    if mode not in SENTENCE_MODES:
        raise SettingsError(f"unknown sentence splitting {mode!r}; use one of {', '.join(SENTENCE_MODES)}")


@functools.lru_cache(maxsize=200_000)
def lemmatize(form: str) -> str:
    """The lower-case lemma of a word form (``Banks`` -> ``bank``), from simplemma's English data.

    Args:
        form: a word as written.

    Returns:
        The lemma, lower-cased; the lower-cased form itself for unknown words.
    """
    lowered = form.lower().replace("\u2019", "'")
    return simplemma.lemmatize(lowered, lang="en").lower()


def split_words(text: str, sentence: Span, skip_stopwords: bool = False) -> list[Word]:
    """The words of one sentence, with document offsets and lemmas.

    Args:
        text: the document text.
        sentence: the sentence's span in ``text``.
        skip_stopwords: leave out function words.

    Returns:
        Word occurrences in order. Punctuation and symbols are not words.
    """
    words = []
    for match in _WORD_PATTERN.finditer(text, sentence.start, sentence.end):
        form = match.group()
        if skip_stopwords and is_stopword(form.lower()):
            continue
        words.append(Word(match.start(), match.end(), form, lemmatize(form)))
    return words
