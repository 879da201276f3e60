"""Word queries: the target word of a query sentence, marked in [brackets], named, or given by span."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from senseindex.errors import QueryError
from senseindex.indexer.text import Span, split_words
from senseindex.indexer.validation import check_query_text

_MARKED_TARGET = re.compile(r"\[([^\[\]]*)\]")


@dataclass(frozen=True)
class WordQuery:
    """A word in context, ready to embed.

    Attributes:
        text: the query text with the target's brackets removed.
        start: the target word's start offset in ``text``.
        end: its end offset, exclusive.
    """

    text: str
    start: int
    end: int

    @property
    def form(self) -> str:
        """The target word as written."""
        return self.text[self.start : self.end]


def parse_word_query(text: str, target: str | None = None, span: tuple[int, int] | None = None) -> WordQuery:
    """Find the target word of a word query.

    Args:
        text: a sentence with the target word in square brackets (``I sat on the [bank] of the
            river``), or a plain sentence when ``target`` or ``span`` is given.
        target: the target word, found as a whole word (case-insensitive, first occurrence).
        span: ``(start, end)`` character offsets of the target in ``text``; they must cover one
            word, or part of one (the whole word is taken).

    Returns:
        The query with its target located.

    Raises:
        QueryError: a text that is not valid Unicode, no target marked, more than one, an empty or
            multi-word target, ``target`` not in the sentence, or a span that is out of range or does
            not fall on exactly one word.
    """
    check_query_text(text)
    if not text or not text.strip():
        raise QueryError("the query text is empty")
    if target is not None:
        check_query_text(target, "the target word")
    if span is not None:
        if target is not None:
            raise QueryError("give the target word or its character span, not both")
        return _query_at_span(text, span)
    if target is not None:
        target = target.strip()
        if not target or len(split_words(target, Span(0, len(target)))) != 1:
            raise QueryError(f"the target must be one word, not {target!r}")
        # whole words as the index splits them (combining marks belong to their word)
        wanted = target.casefold()
        for word in split_words(text, Span(0, len(text))):
            if word.form.casefold() == wanted:
                return WordQuery(text, word.start, word.end)
        raise QueryError(f"the target word {target!r} does not occur in the query sentence")
    marked = list(_MARKED_TARGET.finditer(text))
    if not marked:
        raise QueryError(
            "mark the target word with square brackets, e.g. 'I sat on the [bank] of the river', "
            "or name it separately (--target)"
        )
    if len(marked) > 1:
        raise QueryError("mark exactly one target word with [brackets]")
    inner = marked[0].group(1)
    words = split_words(inner, Span(0, len(inner)))
    if len(words) != 1 or words[0].form != inner.strip():
        raise QueryError(f"the marked target must be a single word, not {inner!r}")
    clean = text[: marked[0].start()] + inner + text[marked[0].end() :]
    start = marked[0].start() + words[0].start
    end = start + len(words[0].form)
    if (start > 0 and _continues_word(clean[start - 1])) or (
        end < len(clean) and _continues_word(clean[end])
    ):
        # the model has no vector for part of a word ("[bat]ter"): name the word the brackets cut
        words_of_clean = split_words(clean, Span(0, len(clean)))
        whole = next((w.form for w in words_of_clean if w.start <= start < w.end), words[0].form)
        raise QueryError(f"brackets must surround a whole word: {whole!r}")
    return WordQuery(clean, start, end)


def _continues_word(character: str) -> bool:
    """Whether a character next to a marked target makes it part of a longer word."""
    return character.isalnum() or unicodedata.category(character).startswith("M")


def _query_at_span(text: str, span: tuple[int, int]) -> WordQuery:
    start, end = span
    if not (isinstance(start, int) and isinstance(end, int)) or not 0 <= start < end <= len(text):
        raise QueryError(
            f"the target span {start}-{end} is not within the text (0-{len(text)}, start before end)"
        )
    touched = [w for w in split_words(text, Span(0, len(text))) if w.start < end and start < w.end]
    if len(touched) != 1:
        found = ", ".join(repr(w.form) for w in touched) or "no word"
        raise QueryError(f"the target span {start}-{end} must fall on one word, not on {found}")
    return WordQuery(text, touched[0].start, touched[0].end)
