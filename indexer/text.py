"""Text segmentation: paragraphs, sentences, words, lemmas — all with character offsets.

Offsets are Python ``str`` indices (Unicode code points, end exclusive) into the document text, so that
``document_text[start:end]`` gives back the exact sentence or word.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

import regex
import simplemma

from senseindex.errors import SettingsError
from senseindex.indexer.stopwords import is_stopword

# A word is a number with its decimal/thousands separators ("3.5", "1,000") or a run of letters and
# digits (with their combining marks: decomposed accents, Indic vowel signs) with inner apostrophes kept
# ("don't", "O'Neil"). Punctuation and symbols are never words, so they never get a word vector.
_WORD_PATTERN = regex.compile(
    r"\p{Nd}+(?:[.,]\p{Nd}+)+(?![\p{L}\p{N}])"
    r"|[\p{L}\p{N}][\p{L}\p{N}\p{M}]*(?:['\u2019][\p{L}\p{N}][\p{L}\p{N}\p{M}]*)*"
)
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n\s*")

# A possible sentence end: terminal punctuation, closing quotes or brackets, then white space. Group 1
# is the word just before the punctuation (with inner dots, as in "U.S" or "e.g"), group 2 the
# punctuation itself; the character after the white space is checked in code.
_SENTENCE_END = regex.compile(
    r"((?<![\p{L}\p{N}\p{M}'\u2019.-])[\p{L}\p{N}][\p{L}\p{N}\p{M}'\u2019-]*"
    r"(?:\.[\p{L}\p{N}][\p{L}\p{N}\p{M}'\u2019-]*)*)?"
    r"([.!?\u2026]+)[\"'\u201d\u2019)\]]*\s+"
)
# Words that end with a period without ending a sentence: titles, Latin and publishing shorthand,
# months. Ordinary English words ("sun", "apt", "no") are left out: a missed split costs less than a
# wrong one. Some only abbreviate before a number ("No. 5", "Fig. 2").
_ABBREVIATIONS = frozenset(
    """
    mr mrs ms messrs dr prof rev fr st sr jr gen col capt lt sgt maj cmdr adm gov sen pres hon esq
    mme mlle mm vs etc al cf ca approx resp viz ibid cit dept univ inc ltd corp bros assn ave blvd
    jan feb apr jun jul aug sep sept oct nov dec fig figs eq eqs vol vols pp chap nos nr
    """.split()
)
_NUMBER_ABBREVIATIONS = frozenset("no p sec ch tab ref refs".split())
# A word with inner dots is an abbreviation when its parts are short runs of letters (U.S, e.g, a.m,
# Ph.D), not a number or a domain name ("3.5", "example.com"), which may end a sentence.
_DOTTED_ABBREVIATION = regex.compile(r"(?:\p{L}{1,4}\.)+\p{L}{1,4}")


MAX_SENTENCE_CHARACTERS = 5_000
"""A longer "sentence" (a text without sentence ends, a line of data) is cut into pieces this long,
so that one sentence never holds more words than a chunk of the build should."""


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
    """Split one paragraph into sentences, by rule.

    A sentence ends at ``.``, ``!``, ``?`` or ``…`` (with any closing quotes or brackets) followed by
    white space, unless

    - the next text starts with a lower-case letter or with punctuation (no sentence starts that way:
      "Acme Inc. , a subsidiary", "M. domestica", ``"Look!" she said``); this also keeps lower-cased,
      pre-tokenised text (as in many NLP datasets) in one piece;
    - a single ``.`` follows a known abbreviation (``Mr.``, ``et al.``, ``Fig. 2``), a word with inner
      dots (``U.S.``, ``e.g.``) or a single letter (an initial, ``J. S. Bach``; not ``I``).

    Decimals ("3.5") never split, as no white space follows their dot. Line breaks inside a paragraph
    are white space, not sentence ends (hard-wrapped text).

    Args:
        text: the document text.
        paragraph: the paragraph's span in ``text``.

    Returns:
        Sentence spans into ``text``, in order, white space stripped; together they cover every
        non-space character of the paragraph.
    """
    starts = [paragraph.start]
    for match in _SENTENCE_END.finditer(text, paragraph.start, paragraph.end):
        following = match.end()
        if following >= paragraph.end or _continues_sentence(text[following]):
            continue
        word, punctuation = match.group(1), match.group(2)
        if punctuation == "." and word is not None and _is_abbreviation(word, text[following]):
            continue
        starts.append(following)
    spans: list[Span] = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else paragraph.end
        spans.extend(_strip_span(text, start, end))
    return spans


def _is_abbreviation(word: str, following: str) -> bool:
    if "." in word:
        return _DOTTED_ABBREVIATION.fullmatch(word) is not None
    lowered = word.lower()
    if following.isdigit() and lowered in _NUMBER_ABBREVIATIONS:
        return True
    if len(word) == 1:
        return word.isalpha() and word != "I"  # an initial, but not "So did I."
    return lowered in _ABBREVIATIONS


def _continues_sentence(segment: str) -> bool:
    first = segment[0]
    return first.islower() or first in ",;:)]}%.!?-\u2013\u2014"


SENTENCE_MODES = ("auto", "paragraph", "line")


def split_text(text: str, mode: str = "auto") -> list[Span]:
    """Split a document into sentences.

    Args:
        text: the document text.
        mode: ``auto`` (paragraphs at blank lines, then sentences with `split_sentences`),
            ``paragraph`` (each paragraph is one sentence: for text that is already one sentence per
            paragraph or JSONL record) or ``line`` (each non-blank line is one sentence).

    Returns:
        Sentence spans into ``text``, in order.

    Raises:
        SettingsError: an unknown mode.
    """
    check_sentence_mode(mode)
    if mode == "auto":
        spans = [s for p in split_paragraphs(text) for s in split_sentences(text, p)]
    elif mode == "paragraph":
        spans = list(split_paragraphs(text))
    else:  # "line"
        spans = []
        position = 0
        for line in text.splitlines(keepends=True):
            spans.extend(_strip_span(text, position, position + len(line)))
            position += len(line)
    if any(span.end - span.start > MAX_SENTENCE_CHARACTERS for span in spans):
        spans = [piece for span in spans for piece in _cut_long(text, span)]
    return spans


def _cut_long(text: str, span: Span) -> Iterator[Span]:
    """A span cut into pieces of at most `MAX_SENTENCE_CHARACTERS`.

    Cuts fall at white space where there is some in the second half of a piece.
    """
    start = span.start
    while span.end - start > MAX_SENTENCE_CHARACTERS:
        limit = start + MAX_SENTENCE_CHARACTERS
        cut = max(
            text.rfind(" ", start + MAX_SENTENCE_CHARACTERS // 2, limit), text.rfind("\n", start, limit)
        )
        end = cut if cut > start + MAX_SENTENCE_CHARACTERS // 2 else limit
        yield from _strip_span(text, start, end)
        start = end
    yield from _strip_span(text, start, span.end)


def check_sentence_mode(mode: str) -> None:
    """Raise `SettingsError` unless ``mode`` is one of `SENTENCE_MODES`."""
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
