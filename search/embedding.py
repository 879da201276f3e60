"""Embedding with an index's settings: texts split as documents are, and queries run whole."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from senseindex.errors import QueryError
from senseindex.indexer.text import Span, split_text, split_words
from senseindex.indexer.validation import check_query_text
from senseindex.search.hits import EmbeddedSentence, EmbeddedWord
from senseindex.search.state import IndexState
from senseindex.search.word_query import WordQuery


def embed_texts(state: IndexState, texts: Sequence[str]) -> list[list[EmbeddedSentence]]:
    """Texts split into sentences and words as documents are when indexed, run through the model together.

    Args:
        state: the open index.
        texts: any texts.

    Returns:
        Per text, its sentences, each with a ``(sentence_dimension,)`` float32 vector and its words
        with ``(word_dimension,)`` float32 vectors; all offsets are into the text.
    """
    for text in texts:
        check_query_text(text, "a text to embed")
    settings = state.settings  # one state's settings for every text
    skip_stopwords = settings.skip_stopwords
    split = []  # per text: its sentences, and per sentence its words relative to the sentence
    for text in texts:
        sentences = []
        for s in split_text(text, settings.sentence_splitting):
            state.queries.give_way()
            found = split_words(text, s, skip_stopwords)
            sentences.append((s, [(w, w.start - s.start, w.end - s.start) for w in found]))
        split.append(sentences)
    flat = [(text, s, ws) for text, sentences in zip(texts, split, strict=True) for s, ws in sentences]
    # a pass at a time, waiting queries going first: they wait for one short pass, not for all the text
    encoded = state.queries.encode_long(
        [text[s.start : s.end] for text, s, _ in flat],
        [[(start, end) for _, start, end in ws] for _, _, ws in flat],
    )
    embedded, word_index = [], 0
    for i, (text, sentence, words) in enumerate(flat):
        state.queries.give_way()  # queries in progress go ahead of the Python work of each sentence
        sentence_text = text[sentence.start : sentence.end]
        pieces = state.encoder.word_pieces(sentence_text, [(start, end) for _, start, end in words])
        embedded_words = []
        for (word, _, _), word_pieces in zip(words, pieces, strict=True):
            if encoded.word_aligned[word_index]:
                embedded_words.append(
                    EmbeddedWord(
                        word.form,
                        word.lemma,
                        word.start,
                        word.end,
                        encoded.word_vectors[word_index],
                        tuple(word_pieces),
                    )
                )
            word_index += 1
        embedded.append(
            EmbeddedSentence(
                sentence_text,
                sentence.start,
                sentence.end,
                encoded.sentence_vectors[i],
                tuple(embedded_words),
            )
        )
    result, taken = [], 0
    for text_sentences in split:
        result.append(embedded[taken : taken + len(text_sentences)])
        taken += len(text_sentences)
    return result


def embed_sentences(state: IndexState, texts: Sequence[str]) -> np.ndarray:
    """Sentence vectors of texts, each text embedded whole as one sequence (as queries are).

    Args:
        state: the open index.
        texts: non-empty texts.

    Returns:
        ``(len(texts), sentence_dimension)`` float32, L2-normalised.

    Raises:
        QueryError: a text is empty or not valid Unicode.
    """
    for text in texts:
        check_query_text(text, "a text to embed")
    if any(not text or not text.strip() for text in texts):
        raise QueryError("cannot embed an empty text")
    return state.queries.encode(list(texts), [[] for _ in texts]).sentence_vectors


def embed_query_sentence(state: IndexState, text: str) -> np.ndarray:
    """The vector of a sentence query: the whole text as one sequence.

    Args:
        state: the open index.
        text: the query.

    Returns:
        ``(sentence_dimension,)`` float32, L2-normalised.

    Raises:
        QueryError: the text is empty or not valid Unicode.
    """
    return embed_query_sentences(state, [text])[0]


def embed_query_sentences(state: IndexState, texts: Sequence[str]) -> np.ndarray:
    """The vectors of several sentence queries, in one model pass.

    Returns:
        ``(len(texts), sentence_dimension)`` float32, L2-normalised.

    Raises:
        QueryError: a text is empty or not valid Unicode.
    """
    for text in texts:
        check_query_text(text)
        if not text or not text.strip():
            raise QueryError("the query text is empty")
    return state.queries.encode(list(texts), [[] for _ in texts]).sentence_vectors


def embed_query_words(state: IndexState, queries: Sequence[WordQuery]) -> np.ndarray:
    """Contextual vectors of queries' target words, each from the sentence that holds it.

    Args:
        state: the open index.
        queries: parsed queries.

    Returns:
        ``(len(queries), word_dimension)`` float32, L2-normalised.

    Raises:
        QueryError: the tokenizer gives a target no token.
    """
    splitting = state.settings.sentence_splitting
    texts, spans = [], []
    for query in queries:
        sentence = next(
            (s for s in split_text(query.text, splitting) if s.start <= query.start and query.end <= s.end),
            Span(0, len(query.text)),
        )
        texts.append(query.text[sentence.start : sentence.end])
        spans.append([(query.start - sentence.start, query.end - sentence.start)])
    encoded = state.queries.encode(texts, spans)
    for query, aligned in zip(queries, encoded.word_aligned, strict=True):
        if not aligned:
            raise QueryError(f"the model's tokenizer gives no token for {query.form!r}")
    return encoded.word_vectors
