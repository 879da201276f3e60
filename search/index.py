"""Querying an index: sentences similar to a text, and word occurrences used in a matching sense."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from senseindex.errors import ModelMismatch, QueryError, SourceError, WordNotFound
from senseindex.indexer.encoder import Encoder, load_index_encoder
from senseindex.indexer.pipeline import (
    ENCODER_SETTINGS,
    BuildSummary,
    DeleteSummary,
    add_document_list,
    delete_documents,
    index_replaced,
)
from senseindex.indexer.sources import Document
from senseindex.indexer.stopwords import is_stopword
from senseindex.indexer.storage import IndexStore
from senseindex.indexer.text import Span, lemmatize, split_text, split_words
from senseindex.search.batching import QueryBatcher
from senseindex.search.hits import DocumentHit, EmbeddedSentence, EmbeddedWord, LemmaHit, SentenceHit, WordHit
from senseindex.search.senses import (
    MAX_FORCED_SENSES,
    Clustering,
    InducedSense,
    SenseGroup,
    WordSenses,
    cluster_senses,
)

_MARKED_TARGET = re.compile(r"\[([^\[\]]*)\]")
MAX_K = 10_000
DOCUMENT_SCORINGS = ("sentence", "passage", "combined")
DEFAULT_DOCUMENT_SCORING = "combined"
# The passage share of "combined" document scoring, per passage mode: the best on BEIR SciFact's train
# claims (benchmarks/quality.py; README, "Quality").
DEFAULT_PASSAGE_WEIGHTS = {"pooled": 0.25, "encoded": 0.5}


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
        QueryError: no target marked, more than one, an empty or multi-word target, ``target`` not
            in the sentence, or a span that is out of range or does not fall on exactly one word.
    """
    if not text or not text.strip():
        raise QueryError("the query text is empty")
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
    return WordQuery(clean, start, start + len(words[0].form))


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


def _metadata_filter(metadata: Mapping[str, Any] | None) -> dict[str, list[Any]] | None:
    """A metadata filter checked and put in one form: per field, the list of values accepted."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise QueryError("the metadata filter must be a mapping of field names to values")
    wanted = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or '"' in key or "\\" in key:
            raise QueryError(
                f"metadata filter field names must be non-empty strings without quotes, not {key!r}"
            )
        values = value if isinstance(value, list) else [value]
        if not values or not all(v is None or isinstance(v, (str, int, float, bool)) for v in values):
            raise QueryError(
                f"the metadata filter on {key!r} must be a string, number, boolean or null, "
                "or a non-empty list of them"
            )
        wanted[key] = values
    return wanted


def _matches(stored: Any, values: list[Any]) -> bool:
    """A metadata filter's test: the stored value equals one of the values (``true`` is not ``1``;
    null matches a missing field)."""
    return any(stored == value and isinstance(stored, bool) == isinstance(value, bool) for value in values)


def _dot(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``vectors @ query`` without BLAS: a query scores a few thousand vectors at most, and BLAS's
    own worker threads, left spinning after the call, slowed the next query's model pass (same-word
    p50 for a frequent word: 36-65 ms with BLAS, 13 ms without, on 2 cores)."""
    return np.einsum("ij,j->i", vectors, query)


def _check_k(k: int) -> None:
    if not isinstance(k, int) or k < 1 or k > MAX_K:
        raise QueryError(f"k must be a whole number from 1 to {MAX_K}, not {k!r}")


class SenseIndex:
    """An opened index: query it for similar sentences and for words used in a matching sense.

    Open one with :func:`open_index`. Queries are embedded with the encoder settings stored in the
    index, whatever the caller's defaults.

    An opened index is safe to use from many threads at once: the query texts of concurrent calls
    share forward passes (see :class:`~senseindex.indexer.encoder.QueryBatcher`), and each query reads one
    consistent state of the index. Writes through :meth:`add_documents` and :meth:`delete_documents`
    run one at a time, and queries move to their result only once a write is complete.
    """

    def __init__(self, store: IndexStore, encoder: Encoder, max_query_batch: int = 64) -> None:
        self._store = store
        self._encoder = encoder
        self._queries = QueryBatcher(encoder, max_query_batch)
        self._sentence_splitting = str(store.settings.get("sentence_splitting", "auto"))
        # Reads of the store (and the refresh that moves it) happen under this lock, so a query never
        # reads ids from one state and rows from the next. The model runs outside it.
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        # what the encoder was checked against when the index was opened
        self._encoder_settings = {key: store.settings.get(key) for key in ENCODER_SETTINGS}
        self._replaced: str | None = None
        self._generation = 0  # counts refreshes: work done between two holds of the lock checks it

    @property
    def settings(self) -> dict[str, Any]:
        """The index settings as stored (model, fingerprint, layer strategy, pooling, ...)."""
        return dict(self._store.settings)

    @property
    def path(self) -> Path:
        """The index folder."""
        return self._store.folder

    @property
    def backend(self) -> str:
        """What runs the model for queries (``torch``, ``torch-bf16``, ``onnx`` or ``onnx-int8``)."""
        return self._encoder.backend

    def info(self) -> dict[str, Any]:
        """Settings, row counts and vector files: ``{"path", "settings", "counts", "vector_files",
        "deleted_vectors"}``."""
        with self._lock:
            return _describe(self._store)

    def refresh(self) -> None:
        """See the documents committed since the index was opened (or last refreshed).

        An open index answers every query from the state it opened, whatever another process adds or
        deletes meanwhile; a long-running program calls this to move to the latest committed state.
        While a write through this object runs on another thread, this waits for it to finish.

        Raises:
            IndexCorrupted: a vector file of the new state cannot be read.
            ModelMismatch: the index was rebuilt with another model or other encoder settings; open
                it again.
        """
        with self._write_lock:
            self._refresh()

    def refresh_if_changed(self) -> bool:
        """:meth:`refresh` if anything was committed to the index since this state was read (a cheap
        check of the database files), unless a write through this object is under way (its
        documents appear when it completes).

        Returns:
            Whether the index moved to a newer state.

        Raises:
            IndexCorrupted, ModelMismatch: as :meth:`refresh`.
        """
        if not self._store.changed_on_disk() and self._replaced is None:
            return False
        # Holding the write lock for the moment of the refresh keeps a write of this object from
        # starting in between and showing its first commits.
        if not self._write_lock.acquire(blocking=False):
            return False
        try:
            self._refresh()
        finally:
            self._write_lock.release()
        return True

    def _refresh(self) -> None:
        with self._lock:
            self._generation += 1
            self._store.refresh()
            self._store.open_vectors()
            self._sentence_splitting = str(self._store.settings.get("sentence_splitting", "auto"))
            self._replaced = index_replaced(self._store.settings, self._encoder_settings, self._store.folder)
            self._check_current()

    def _check_current(self) -> None:
        """Refuse to answer from an index whose vectors this encoder no longer matches."""
        if self._replaced is not None:
            raise ModelMismatch(self._replaced)

    def serve_model(self, stop: threading.Event) -> None:
        """Run the model for every query of this index in the calling thread until ``stop`` is set;
        queries made meanwhile on other threads wait for this thread to embed them (batched).

        For servers that answer on worker threads: give the model the main thread (see
        :meth:`~senseindex.indexer.encoder.QueryBatcher.serve`). Writes keep running on their own thread.

        Args:
            stop: ends the loop once set.
        """
        self._queries.serve(stop)

    def query_batching(self) -> dict[str, int]:
        """How concurrent queries shared the model: ``{"max_texts", "calls", "runs"}``, where each run
        of the model served one or more calls."""
        return {
            "max_texts": self._queries.max_texts,
            "calls": self._queries.calls_run,
            "runs": self._queries.batches_run,
        }

    def close(self) -> None:
        """Release the database connection."""
        with self._lock:
            self._store.close()

    # ---------------------------------------------------------------------------------------- writes

    def add_documents(
        self,
        documents: Iterable[Document | Mapping[str, Any]],
        progress: Callable[[int, int | None], None] | None = None,
    ) -> BuildSummary:
        """Add documents, or replace stored ones with the same id, with this index's model, in one
        commit: all of them are stored or (on an error) none; queries on this object see all of them
        once the call returns, and none of them before.

        A document stored with the same text and metadata is left alone (as ``senseindex add``).

        Args:
            documents: :class:`~senseindex.indexer.sources.Document` objects or mappings ``{"id", "text",
                "metadata"?}``; ids must be unique.
            progress: called after each stored chunk with characters done and in total.

        Returns:
            What was stored (``documents`` counts new and replaced ones).

        Raises:
            SourceError: a malformed document or a repeated id (nothing is written then).
            IndexBusy: another process is writing to the index.
            ModelMismatch: the index was rebuilt with another model since it was opened.
        """
        given = _documents_of(documents)
        with self._write_lock:
            self._check_current()
            summary = add_document_list(
                given, self._store.folder, self._encoder, self._encoder_settings, progress
            )
            self._refresh()
        return summary

    def delete_documents(self, doc_ids: Sequence[str]) -> DeleteSummary:
        """Delete documents (all their sentences, words, passages and vectors), in one commit; queries
        on this object stop finding them when the call returns.

        Args:
            doc_ids: ids of stored documents.

        Returns:
            What was deleted.

        Raises:
            DocumentNotFound: an id is not in the index (nothing is deleted then).
            IndexBusy: another process is writing to the index.
        """
        with self._write_lock:
            summary = delete_documents(self._store.folder, doc_ids)
            self._refresh()
        return summary

    def __enter__(self) -> SenseIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------- embedding

    def embed(self, text: str) -> list[EmbeddedSentence]:
        """Embed a text with the index's settings: its sentences and their words.

        The text is split into paragraphs and sentences as documents are when indexed, so the vectors
        equal those a document with this text would get.

        Args:
            text: any text.

        Returns:
            Its sentences, each with a ``(sentence_dimension,)`` float32 vector and its words with
            ``(word_dimension,)`` float32 vectors; all offsets are into ``text``.
        """
        return self.embed_texts([text])[0]

    def embed_texts(self, texts: Sequence[str]) -> list[list[EmbeddedSentence]]:
        """:meth:`embed` for many texts, their sentences run through the model together.

        Args:
            texts: any texts.

        Returns:
            Per text, its sentences with their words, as :meth:`embed` gives them.
        """
        skip_stopwords = bool(self._store.settings.get("skip_stopwords"))
        split = []  # per text: its sentences, and per sentence its words relative to the sentence
        for text in texts:
            sentences = split_text(text, self._sentence_splitting)
            split.append(
                [
                    (
                        s,
                        [
                            (w, w.start - s.start, w.end - s.start)
                            for w in split_words(text, s, skip_stopwords)
                        ],
                    )
                    for s in sentences
                ]
            )
        flat = [(text, s, ws) for text, sentences in zip(texts, split, strict=True) for s, ws in sentences]
        encoded = self._queries.encode(
            [text[s.start : s.end] for text, s, _ in flat],
            [[(start, end) for _, start, end in ws] for _, _, ws in flat],
        )
        embedded, word_index = [], 0
        for i, (text, sentence, words) in enumerate(flat):
            sentence_text = text[sentence.start : sentence.end]
            pieces = self._encoder.word_pieces(sentence_text, [(start, end) for _, start, end in words])
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
        for sentences in split:
            result.append(embedded[taken : taken + len(sentences)])
            taken += len(sentences)
        return result

    def embed_sentences(self, texts: list[str]) -> np.ndarray:
        """Sentence vectors of texts, each text embedded whole as one sequence (as queries are).

        Args:
            texts: any texts; batched and length-sorted internally.

        Returns:
            ``(len(texts), sentence_dimension)`` float32, L2-normalised.

        Raises:
            QueryError: a text is empty.
        """
        if any(not text or not text.strip() for text in texts):
            raise QueryError("cannot embed an empty text")
        return self._queries.encode(list(texts), [[] for _ in texts]).sentence_vectors

    def embed_query_sentence(self, text: str) -> np.ndarray:
        """The vector of a sentence query: the whole text as one sequence.

        Args:
            text: the query.

        Returns:
            ``(sentence_dimension,)`` float32, L2-normalised.

        Raises:
            QueryError: the text is empty.
        """
        if not text or not text.strip():
            raise QueryError("the query text is empty")
        return self._queries.encode([text], [[]]).sentence_vectors[0]

    def embed_query_word(self, query: WordQuery) -> np.ndarray:
        """The contextual vector of a query's target word, from the sentence that holds it.

        Args:
            query: the parsed query (see :func:`parse_word_query`).

        Returns:
            ``(word_dimension,)`` float32, L2-normalised.

        Raises:
            QueryError: the tokenizer gives the target no token.
        """
        return self.embed_query_words([query])[0]

    def embed_query_words(self, queries: Sequence[WordQuery]) -> np.ndarray:
        """Contextual vectors of many queries' target words, in length-sorted batches.

        Args:
            queries: parsed queries.

        Returns:
            ``(len(queries), word_dimension)`` float32, L2-normalised.

        Raises:
            QueryError: the tokenizer gives a target no token.
        """
        texts, spans = [], []
        for query in queries:
            sentence = next(
                (
                    s
                    for s in split_text(query.text, self._sentence_splitting)
                    if s.start <= query.start and query.end <= s.end
                ),
                Span(0, len(query.text)),
            )
            texts.append(query.text[sentence.start : sentence.end])
            spans.append([(query.start - sentence.start, query.end - sentence.start)])
        encoded = self._queries.encode(texts, spans)
        for query, aligned in zip(queries, encoded.word_aligned, strict=True):
            if not aligned:
                raise QueryError(f"the model's tokenizer gives no token for {query.form!r}")
        return encoded.word_vectors

    # --------------------------------------------------------------------------------------- queries

    def search_sentences(
        self,
        text: str,
        k: int = 10,
        doc_ids: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[SentenceHit]:
        """The sentences most similar to a text, optionally only those of some documents.

        With a filter, every sentence of the matching documents is scored exactly (the cost grows
        with the number of sentences they hold); without one, the vector index is searched.

        Args:
            text: the query.
            k: number of hits.
            doc_ids: only sentences of these documents (unknown ids match nothing).
            metadata: only sentences of documents whose metadata has these values: ``{"lang": "en"}``;
                a list of values means any of them: ``{"year": [2023, 2024]}``.

        Returns:
            Up to ``k`` hits, best first.

        Raises:
            QueryError: an empty text, a bad ``k`` or a malformed filter.
        """
        _check_k(k)
        wanted = _metadata_filter(metadata)
        if doc_ids is not None and (isinstance(doc_ids, str) or not all(isinstance(d, str) for d in doc_ids)):
            raise QueryError("doc_ids must be a list of document ids (strings)")
        vector = self.embed_query_sentence(text)
        with self._lock:
            self._check_current()
            if doc_ids is None and wanted is None:
                return self._sentence_hits(*self._store.search("sentences", vector, k))
            documents = [
                found["id"]
                for found in self._store.filter_documents(doc_ids, wanted)
                if all(_matches(found["metadata"].get(key), values) for key, values in (wanted or {}).items())
            ]
            allowed = self._store.rows_of_documents("sentences", documents)
            return self._sentence_hits(*self._store.search("sentences", vector, k, allowed))

    def _sentence_hits(self, ids: np.ndarray, scores: np.ndarray) -> list[SentenceHit]:
        rows = self._store.sentence_rows(ids)
        return [
            SentenceHit(
                score=float(score),
                doc_id=rows[i]["doc_id"],
                sentence_id=int(i),
                start=rows[i]["start"],
                end=rows[i]["end"],
                text=rows[i]["text"],
                metadata=rows[i]["metadata"],
            )
            for i, score in zip(ids.tolist(), scores.tolist(), strict=True)
        ]

    def search_documents(
        self,
        text: str,
        k: int = 10,
        scoring: str = DEFAULT_DOCUMENT_SCORING,
        passage_weight: float | None = None,
    ) -> list[DocumentHit]:
        """The documents that best match a text.

        Candidates come from the nearest sentences and passages; each candidate is then scored
        exactly from all its stored vectors.

        Args:
            text: the query.
            k: number of documents.
            scoring: ``sentence`` (best sentence), ``passage`` (best passage) or ``combined``
                (``passage_weight * passage + (1 - passage_weight) * sentence``).
            passage_weight: the passage share of ``combined``, in [0, 1]; None takes the measured
                best for the index's passage mode (0.25 for ``pooled``, 0.5 for ``encoded``).

        Returns:
            Up to ``k`` documents, best first.

        Raises:
            QueryError: an unknown scoring, or passage scoring on an index built without passages.
        """
        _check_k(k)
        if scoring not in DOCUMENT_SCORINGS:
            raise QueryError(
                f"unknown document scoring {scoring!r}; use one of {', '.join(DOCUMENT_SCORINGS)}"
            )
        passage_mode = str(self._store.settings.get("passages", "none"))
        if passage_weight is None:
            passage_weight = DEFAULT_PASSAGE_WEIGHTS.get(passage_mode, 0.0)
        if not 0.0 <= passage_weight <= 1.0:
            raise QueryError(f"passage_weight must be within [0, 1], not {passage_weight}")
        has_passages = passage_mode != "none"
        if scoring != "sentence" and not has_passages:
            raise QueryError("this index has no passage vectors; use sentence scoring or rebuild it")
        vector = self.embed_query_sentence(text)
        with self._lock:
            self._check_current()
            return self._rank_documents(vector, k, scoring, passage_weight, has_passages)

    def _rank_documents(
        self, vector: np.ndarray, k: int, scoring: str, passage_weight: float, has_passages: bool
    ) -> list[DocumentHit]:
        depth = max(100, 10 * k)
        sentence_ids, _ = self._store.search("sentences", vector, depth)
        candidates = set(self._store.documents_of("sentences", sentence_ids).values())
        if has_passages:
            passage_ids, _ = self._store.search("passages", vector, depth)
            candidates |= set(self._store.documents_of("passages", passage_ids).values())
        documents = np.asarray(sorted(candidates), dtype=np.int64)
        if not len(documents):
            return []
        sentence_best, sentence_score = _best_per_document(
            *self._store.vectors_of_documents("sentences", documents), vector, documents
        )
        if has_passages:
            _, passage_score = _best_per_document(
                *self._store.vectors_of_documents("passages", documents), vector, documents
            )
            # a document without a passage vector (none should exist) falls back to its sentence score
            passage_score = np.where(np.isfinite(passage_score), passage_score, sentence_score)
        else:
            passage_score = np.full(len(documents), np.nan, dtype=np.float32)
        if scoring == "sentence":
            scores = sentence_score
        elif scoring == "passage":
            scores = passage_score
        else:
            scores = passage_weight * passage_score + (1 - passage_weight) * sentence_score
        order = np.argsort(-scores, kind="stable")[:k]
        best_sentences = self._sentence_hits(sentence_best[order], sentence_score[order])
        document_rows = self._store.document_rows(documents[order])
        return [
            DocumentHit(
                score=float(scores[i]),
                doc_id=best.doc_id,
                sentence_score=best.score,
                passage_score=float(passage_score[i]) if has_passages else None,
                best_sentence=best,
                metadata=document_rows[int(documents[i])]["metadata"],
            )
            for i, best in zip(order.tolist(), best_sentences, strict=True)
        ]

    def search_word(
        self,
        text: str,
        target: str | None = None,
        k: int = 10,
        exact_form: bool = False,
        span: tuple[int, int] | None = None,
    ) -> list[WordHit]:
        """Occurrences of the same word, ranked by how closely their sense matches the query's.

        Only occurrences of the target's lemma are scored (``banks`` and ``Bank`` count for
        ``bank``), by reading their vectors by id: the cost follows the word's frequency, not the
        index size.

        Args:
            text: the query sentence, the target in [brackets] unless ``target`` is given.
            target: the target word in a plain sentence.
            k: number of hits.
            exact_form: only occurrences with the target's surface form (case-insensitive).
            span: ``(start, end)`` of the target in a plain sentence, instead of ``target``.

        Returns:
            Up to ``k`` hits, best first.

        Raises:
            QueryError: a malformed query.
        """
        return self._search_parsed_words([parse_word_query(text, target, span)], k, exact_form)[0]

    def search_word_many(
        self, texts: Sequence[str], k: int = 10, exact_form: bool = False
    ) -> list[list[WordHit]]:
        """:meth:`search_word` for many queries at once: one batched forward pass for all of them.

        Args:
            texts: query sentences, each with its target in [brackets].
            k: hits per query.
            exact_form: only occurrences with each target's surface form.

        Returns:
            Per query, up to ``k`` hits, best first.

        Raises:
            QueryError: a malformed query.
        """
        return self._search_parsed_words([parse_word_query(text) for text in texts], k, exact_form)

    def _search_parsed_words(
        self, queries: Sequence[WordQuery], k: int, exact_form: bool
    ) -> list[list[WordHit]]:
        _check_k(k)
        vectors = self.embed_query_words(queries)
        with self._lock:
            self._check_current()
            return self._rank_occurrences(queries, vectors, k, exact_form)

    def _rank_occurrences(
        self, queries: Sequence[WordQuery], vectors: np.ndarray, k: int, exact_form: bool
    ) -> list[list[WordHit]]:
        occurrences: dict[str, tuple[np.ndarray, list[str], np.ndarray]] = {}
        results = []
        for query, vector in zip(queries, vectors, strict=True):
            lemma = lemmatize(query.form)
            if lemma not in occurrences:  # queries on the same word share one read of its vectors
                ids, forms = self._store.word_ids_for_lemma(lemma)
                occurrences[lemma] = (ids, forms, self._store.word_vectors(ids))
            ids, forms, stored = occurrences[lemma]
            if exact_form and len(ids):
                wanted = query.form.lower()
                keep = np.asarray([form.lower() == wanted for form in forms], dtype=bool)
                ids, stored = ids[keep], stored[keep]
            if not len(ids):
                results.append([])
                continue
            scores = _dot(stored, vector)
            order = np.argsort(-scores, kind="stable")[:k]
            results.append(self._word_hits(ids[order], scores[order]))
        return results

    def search_similar_words(
        self, text: str, target: str | None = None, k: int = 10, span: tuple[int, int] | None = None
    ) -> list[LemmaHit]:
        """Other words used in the target's sense: nearest occurrences of other lemmas, by lemma.

        Stop-words are left out of the answer.

        Args:
            text: the query sentence, the target in [brackets] unless ``target`` is given.
            target: the target word in a plain sentence.
            k: number of lemmas.
            span: ``(start, end)`` of the target in a plain sentence, instead of ``target``.

        Returns:
            Up to ``k`` lemmas, each with its best-matching occurrence, best first.
        """
        _check_k(k)
        query = parse_word_query(text, target, span)
        vector = self.embed_query_word(query)
        with self._lock:
            self._check_current()
            return self._rank_other_lemmas(vector, lemmatize(query.form), k)

    def _rank_other_lemmas(self, vector: np.ndarray, own_lemma: str, k: int) -> list[LemmaHit]:
        depth = max(200, 50 * k)
        while True:
            ids, scores = self._store.search("words", vector, depth)
            rows = self._store.word_rows(ids)
            by_lemma: dict[str, list[tuple[int, float]]] = {}
            for word_id, score in zip(ids.tolist(), scores.tolist(), strict=True):
                lemma = rows[word_id]["lemma"]
                # Function words sit next to the target and share its context, but are never
                # "another word for" it.
                if lemma != own_lemma and not is_stopword(rows[word_id]["form"].lower()):
                    by_lemma.setdefault(lemma, []).append((word_id, score))
            # Search deeper until k other lemmas turn up or the whole index has been seen.
            if len(by_lemma) >= k or len(ids) < depth:
                break
            depth *= 4
        ranked = sorted(by_lemma.items(), key=lambda item: -item[1][0][1])[:k]
        best = self._word_hits(
            np.asarray([hits[0][0] for _, hits in ranked], dtype=np.int64),
            np.asarray([hits[0][1] for _, hits in ranked], dtype=np.float32),
        )
        return [
            LemmaHit(lemma=lemma, score=hit.score, occurrences=len(hits), best=hit)
            for (lemma, hits), hit in zip(ranked, best, strict=True)
        ]

    # ---------------------------------------------------------------------------------------- senses

    def induce_senses(
        self, word: str, senses: int | None = None, typical: int = 5, related_words: int = 8
    ) -> WordSenses:
        """The senses a word is used in across the index, induced from its occurrences' vectors.

        Every occurrence of the word's lemma is clustered (see :mod:`~senseindex.search.senses`); each
        sense is named by its most typical occurrences and by the other words nearest to its centre.

        Args:
            word: one word (every form of its lemma counts).
            senses: force this many senses instead of choosing (1 to the number of occurrences).
            typical: occurrences shown per sense.
            related_words: other words listed per sense.

        Returns:
            The senses, most frequent first, with each occurrence's sense and a 2-D map.

        Raises:
            WordNotFound: the index does not hold the word.
            QueryError: not one word, or a bad number.
        """
        form = word.strip() if isinstance(word, str) else ""
        found = split_words(form, Span(0, len(form)))
        if len(found) != 1 or found[0].form != form:
            raise QueryError(f"give one word, not {word!r}")
        for name, value, least in (
            ("senses", senses, 1),
            ("typical", typical, 0),
            ("related_words", related_words, 0),
        ):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
                raise QueryError(f"{name} must be a whole number of at least {least}, not {value!r}")
        if senses is not None and senses > MAX_FORCED_SENSES:
            raise QueryError(f"senses must be at most {MAX_FORCED_SENSES}, not {senses}")
        lemma = lemmatize(form)
        for _ in range(3):  # again if the index moved while the occurrences were clustered
            with self._lock:
                self._check_current()
                generation = self._generation
                ids, _ = self._store.word_ids_for_lemma(lemma)
                if not len(ids):
                    raise WordNotFound(f"{form!r} does not occur in the index")
                if senses is not None and senses > len(ids):
                    raise QueryError(f"{form!r} occurs {len(ids)} times: it cannot have {senses} senses")
                vectors = self._store.word_vectors(ids)
            # the clustering needs no index: other queries go on meanwhile
            clustering = cluster_senses(vectors, senses)
            with self._lock:
                if self._generation == generation:
                    return self._name_senses(form, lemma, ids, vectors, clustering, typical, related_words)
        raise QueryError(f"the index kept changing while the senses of {form!r} were induced; try again")

    def _name_senses(
        self,
        form: str,
        lemma: str,
        ids: np.ndarray,
        vectors: np.ndarray,
        clustering: Clustering,
        typical: int,
        related_words: int,
    ) -> WordSenses:
        """The induced senses with their typical occurrences and related words (under the lock)."""
        related = self._distinct_related_words(clustering.centres, lemma, related_words)
        induced = []
        for number, centre in enumerate(clustering.centres, start=1):
            members = np.flatnonzero(clustering.labels == number - 1)
            closeness = vectors[members] @ centre
            order = np.argsort(-closeness, kind="stable")[:typical]
            induced.append(
                InducedSense(
                    number=number,
                    size=len(members),
                    share=round(len(members) / len(ids), 4),
                    typical=tuple(self._word_hits(ids[members[order]], closeness[order])) if typical else (),
                    related_words=tuple(related[number - 1]),
                    centre=centre,
                )
            )
        return WordSenses(
            word=form,
            lemma=lemma,
            occurrences=len(ids),
            clustered=clustering.clustered,
            chosen_by=clustering.chosen_by,
            silhouettes=clustering.silhouettes,
            baseline_silhouettes=clustering.baseline_silhouettes,
            senses=tuple(induced),
            occurrence_ids=ids,
            assignments=clustering.labels + 1,
            coordinates=clustering.coordinates,
        )

    def _distinct_related_words(
        self, centres: np.ndarray, own_lemma: str, count: int
    ) -> list[list[LemmaHit]]:
        """Per sense centre, the other words nearest to it, each word kept only under the sense it is
        nearest to (so the senses' lists tell them apart)."""
        if not count:
            return [[] for _ in centres]
        candidates = [self._rank_other_lemmas(centre, own_lemma, 3 * count) for centre in centres]
        best_sense: dict[str, tuple[float, int]] = {}
        for number, hits in enumerate(candidates):
            for hit in hits:
                if hit.lemma not in best_sense or hit.score > best_sense[hit.lemma][0]:
                    best_sense[hit.lemma] = (hit.score, number)
        return [
            [hit for hit in hits if best_sense[hit.lemma][1] == number][:count]
            for number, hits in enumerate(candidates)
        ]

    def search_word_by_sense(
        self,
        text: str,
        target: str | None = None,
        k: int = 10,
        span: tuple[int, int] | None = None,
        senses: int | None = None,
    ) -> tuple[WordSenses, int, list[SenseGroup]]:
        """:meth:`search_word`, its hits grouped under the word's induced senses.

        Args:
            text: the query sentence, the target in [brackets] unless ``target`` or ``span`` is given.
            target: the target word in a plain sentence.
            k: number of hits, over all groups.
            span: ``(start, end)`` of the target in a plain sentence.
            senses: force this many induced senses.

        Returns:
            ``(senses, query_sense, groups)``: the word's senses, the sense of the query's nearest
            occurrence (the best hit), and one group per sense that holds hits (the query's sense
            first, then by best hit).

        Raises:
            QueryError: a malformed query or a bad number.
        """
        query = parse_word_query(text, target, span)
        with self._lock:  # the hits and the senses from one state of the index
            hits = self._search_parsed_words([query], k, exact_form=False)[0]
            word_senses = self.induce_senses(query.form, senses, typical=0)
        sense_of = dict(
            zip(word_senses.occurrence_ids.tolist(), word_senses.assignments.tolist(), strict=True)
        )
        query_sense = sense_of.get(hits[0].word_id, 1) if hits else 1
        grouped: dict[int, list[WordHit]] = {}
        for hit in hits:
            grouped.setdefault(sense_of.get(hit.word_id, 0), []).append(hit)
        order = sorted(grouped, key=lambda number: (number != query_sense, -grouped[number][0].score))
        return (
            word_senses,
            query_sense,
            [SenseGroup(number, tuple(grouped[number])) for number in order],
        )

    def _word_hits(self, ids: np.ndarray, scores: np.ndarray) -> list[WordHit]:
        rows = self._store.word_rows(ids)
        return [
            WordHit(
                score=float(score),
                doc_id=rows[i]["doc_id"],
                word_id=int(i),
                form=rows[i]["form"],
                lemma=rows[i]["lemma"],
                start=rows[i]["start"],
                end=rows[i]["end"],
                sentence_id=rows[i]["sentence_id"],
                sentence_start=rows[i]["sentence_start"],
                sentence=rows[i]["sentence_text"],
                metadata=rows[i]["metadata"],
            )
            for i, score in zip(ids.tolist(), scores.tolist(), strict=True)
        ]


def _best_per_document(
    ids: np.ndarray, owners: np.ndarray, vectors: np.ndarray, query: np.ndarray, documents: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per document (in the order of ``documents``): the id and score of its best-matching vector."""
    scores = _dot(vectors, query)
    position = np.searchsorted(documents, owners)
    best_score = np.full(len(documents), -np.inf, dtype=scores.dtype)
    np.maximum.at(best_score, position, scores)
    best_id = np.full(len(documents), -1, dtype=np.int64)
    is_best = scores >= best_score[position]
    best_id[position[is_best]] = ids[is_best]
    return best_id, best_score


def open_index(
    path: str | Path, model: str | None = None, backend: str = "auto", max_query_batch: int = 64
) -> SenseIndex:
    """Open an index for querying, loading the model it was built with.

    Args:
        path: the index folder.
        model: a model folder to use instead of the stored one (e.g. the index was moved to another
            machine); its weights must have the stored fingerprint.
        backend: what runs the model for queries: ``auto``, ``torch``, ``torch-bf16`` or ``onnx``
            (see :class:`EncoderSettings`); any backend queries any index.
        max_query_batch: most query texts that concurrent calls run through the model together
            (1: every call on its own).

    Returns:
        The opened index.

    Raises:
        IndexNotFound: no index in ``path``.
        SchemaMismatch: the index was written by another format version.
        IndexCorrupted: a file of the index cannot be read.
        ModelMismatch: ``model`` (or the stored model folder) is not the model the index was built
            with.
        ModelLoadError: the model cannot be loaded.
    """
    store = IndexStore.open(Path(path))
    try:
        store.open_vectors()
        encoder = load_index_encoder(store.settings, model, backend)
    except BaseException:
        store.close()
        raise
    return SenseIndex(store, encoder, max_query_batch)


def index_info(path: str | Path) -> dict[str, Any]:
    """An index's settings and row counts, without loading its model.

    Args:
        path: the index folder.

    Returns:
        ``{"path", "settings", "counts", "vector_files"}``; each vector file is ``{"table", "file",
        "first_id", "count", "index_type", "bytes"}``.

    Raises:
        IndexNotFound, SchemaMismatch, IndexCorrupted: as :func:`open_index`.
    """
    store = IndexStore.open(Path(path))
    try:
        return _describe(store)
    finally:
        store.close()


def _documents_of(documents: Iterable[Document | Mapping[str, Any]]) -> list[Document]:
    """Documents given to :meth:`SenseIndex.add_documents`, checked before anything is written."""
    result: list[Document] = []
    seen: set[str] = set()
    for position, given in enumerate(documents):
        if isinstance(given, Document):
            document = given
        elif isinstance(given, Mapping):
            unknown = set(given) - {"id", "text", "metadata"}
            if unknown:
                raise SourceError(f"document {position}: unknown field {sorted(unknown)[0]!r}")
            document = Document(
                doc_id=given.get("id"),  # type: ignore[arg-type]  # checked just below
                text=given.get("text"),  # type: ignore[arg-type]
                source="api",
                metadata=given.get("metadata") or {},
            )
        else:
            raise SourceError(f"document {position} is not a document or a mapping")
        if not isinstance(document.doc_id, str) or not document.doc_id.strip():
            raise SourceError(f"document {position} has no id (a non-empty string)")
        if not isinstance(document.text, str):
            raise SourceError(f"document {document.doc_id!r} has no text (a string)")
        if not isinstance(document.metadata, dict):
            raise SourceError(f"the metadata of document {document.doc_id!r} is not a mapping")
        try:
            json.dumps(document.metadata)
        except (TypeError, ValueError) as error:
            raise SourceError(f"the metadata of document {document.doc_id!r} is not JSON: {error}") from None
        if document.doc_id in seen:
            raise SourceError(f"document id {document.doc_id!r} is given twice")
        seen.add(document.doc_id)
        result.append(dataclasses.replace(document, size=len(document.text)))
    if not result:
        raise SourceError("no documents given")
    return result


def _describe(store: IndexStore) -> dict[str, Any]:
    return {
        "path": str(store.folder),
        "settings": dict(store.settings),
        "counts": store.counts(),
        "vector_files": store.vector_files(),
        "deleted_vectors": store.deleted_count(),
    }
