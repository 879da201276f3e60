"""Result types of queries: frozen, JSON-able dataclasses."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

_WHITE_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class SentenceHit:
    """A sentence found by a sentence query.

    Attributes:
        score: cosine similarity to the query, in [-1, 1].
        doc_id: the document's id.
        sentence_id: the sentence's rowid (= its FAISS id).
        start: start offset of the sentence in the document (characters).
        end: end offset, exclusive.
        text: the sentence.
        metadata: the document's metadata.
    """

    score: float
    doc_id: str
    sentence_id: int
    start: int
    end: int
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The hit as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class DocumentHit:
    """A document found by a document query.

    Attributes:
        score: the document's score under the scoring asked for.
        doc_id: the document's id.
        sentence_score: cosine of its best-matching sentence.
        passage_score: cosine of its best-matching passage (None in an index without passages).
        best_sentence: its best-matching sentence.
        metadata: the document's metadata.
    """

    score: float
    doc_id: str
    sentence_score: float
    passage_score: float | None
    best_sentence: SentenceHit
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The hit as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class WordHit:
    """A word occurrence found by a word query.

    Attributes:
        score: cosine similarity of its contextual vector to the query word's.
        doc_id: the document's id.
        word_id: the occurrence's rowid (= its FAISS id).
        form: the word as written.
        lemma: its lower-case lemma.
        start: start offset of the word in the document (characters).
        end: end offset, exclusive.
        sentence_id: rowid of its sentence.
        sentence_start: start offset of the sentence in the document.
        sentence: the sentence's text; ``sentence[start - sentence_start : end - sentence_start]`` is
            ``form``.
        metadata: the document's metadata.
    """

    score: float
    doc_id: str
    word_id: int
    form: str
    lemma: str
    start: int
    end: int
    sentence_id: int
    sentence_start: int
    sentence: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def context_parts(self, width: int = 60) -> tuple[str, str, str]:
        """Keyword in context, in three parts: left context, the word, right context.

        Args:
            width: characters of context kept on each side (cut with an ellipsis beyond).

        Returns:
            ``(left, word, right)``; line breaks in the context become spaces.
        """
        local_start = self.start - self.sentence_start
        local_end = self.end - self.sentence_start
        left = _WHITE_SPACE.sub(" ", self.sentence[:local_start])
        right = _WHITE_SPACE.sub(" ", self.sentence[local_end:])
        if len(left) > width:
            left = "…" + left[-width:].lstrip()
        if len(right) > width:
            right = right[:width].rstrip() + "…"
        return left, self.sentence[local_start:local_end], right

    def context(self, width: int = 60, marks: tuple[str, str] = ("[", "]")) -> str:
        """Keyword in context: the sentence around the word, the word marked.

        Args:
            width: characters of context kept on each side.
            marks: strings put before and after the word.

        Returns:
            e.g. ``"…we sat on the [bank] of the river…"``.
        """
        left, word, right = self.context_parts(width)
        return f"{left}{marks[0]}{word}{marks[1]}{right}"

    def to_dict(self) -> dict[str, Any]:
        """The hit as a JSON-able dict, with its keyword-in-context line."""
        return {**asdict(self), "context": self.context()}


@dataclass(frozen=True)
class LemmaHit:
    """Another word used in the query word's sense (``--any-word``): a lemma and its best occurrence.

    Attributes:
        lemma: the lemma.
        score: the best occurrence's cosine similarity to the query word.
        occurrences: how many of its occurrences were among the hits of the search that found it
            (the nearest ``max(200, 50 k)`` occurrences of words not found before).
        best: the best-matching occurrence.
    """

    lemma: str
    score: float
    occurrences: int
    best: WordHit

    def to_dict(self) -> dict[str, Any]:
        """The hit as a JSON-able dict."""
        return {
            "lemma": self.lemma,
            "score": self.score,
            "occurrences": self.occurrences,
            "best": self.best.to_dict(),
        }


@dataclass(frozen=True)
class EmbeddedWord:
    """A word of embedded text.

    Attributes:
        form: the word as written.
        lemma: its lemma.
        start: start offset in the embedded text.
        end: end offset, exclusive.
        vector: ``(word_dimension,)`` float32, L2-normalised.
        pieces: the model's WordPiece tokens of the word, pooled into ``vector``.
    """

    form: str
    lemma: str
    start: int
    end: int
    vector: np.ndarray = field(repr=False, compare=False)
    pieces: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; the vector as a list of floats."""
        return {
            "form": self.form,
            "lemma": self.lemma,
            "start": self.start,
            "end": self.end,
            "pieces": list(self.pieces),
            "vector": self.vector.tolist(),
        }


@dataclass(frozen=True)
class EmbeddedSentence:
    """A sentence of embedded text, with its vector and its words.

    Attributes:
        text: the sentence.
        start: start offset in the embedded text.
        end: end offset, exclusive.
        vector: ``(sentence_dimension,)`` float32, L2-normalised.
        words: its words, in order.
    """

    text: str
    start: int
    end: int
    vector: np.ndarray = field(repr=False, compare=False)
    words: tuple[EmbeddedWord, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; vectors as lists of floats."""
        return {
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "vector": self.vector.tolist(),
            "words": [word.to_dict() for word in self.words],
        }
