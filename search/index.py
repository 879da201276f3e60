"""Querying an index: sentences similar to a text, and word occurrences used in a matching sense."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.encoder import Encoder, load_index_encoder
from indexer.errors import QueryError
from indexer.stopwords import is_stopword
from indexer.storage import IndexStore
from indexer.text import Span, lemmatize, split_text, split_words
from search.hits import DocumentHit, EmbeddedSentence, EmbeddedWord, LemmaHit, SentenceHit, WordHit

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


def parse_word_query(text: str, target: str | None = None) -> WordQuery:
    """Find the target word of a word query.

    Args:
        text: a sentence with the target word in square brackets (``I sat on the [bank] of the
            river``), or a plain sentence when ``target`` is given.
        target: the target word, found as a whole word (case-insensitive, first occurrence).

    Returns:
        The query with its target located.

    Raises:
        QueryError: no target marked, more than one, an empty or multi-word target, or ``target`` not
            in the sentence.
    """
    if not text or not text.strip():
        raise QueryError("the query text is empty")
    if target is not None:
        target = target.strip()
        if not target or len(split_words(target, Span(0, len(target)))) != 1:
            raise QueryError(f"--target must be one word, not {target!r}")
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
            "or name it with --target"
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
    """

    def __init__(self, store: IndexStore, encoder: Encoder) -> None:
        self._store = store
        self._encoder = encoder
        self._sentence_splitting = str(store.settings.get("sentence_splitting", "auto"))

    @property
    def settings(self) -> dict[str, Any]:
        """The index settings as stored (model, fingerprint, layer strategy, pooling, ...)."""
        return dict(self._store.settings)

    @property
    def path(self) -> Path:
        """The index folder."""
        return self._store.folder

    def info(self) -> dict[str, Any]:
        """Settings, row counts and vector files: ``{"path", "settings", "counts", "vector_files"}``."""
        return _describe(self._store)

    def refresh(self) -> None:
        """See the documents committed since the index was opened (or last refreshed).

        An open index answers every query from the state it opened, whatever another process adds or
        deletes meanwhile; a long-running program calls this to move to the latest committed state.

        Raises:
            IndexCorrupted: a vector file of the new state cannot be read.
        """
        self._store.refresh()
        self._store.open_vectors()

    def close(self) -> None:
        """Release the database connection."""
        self._store.close()

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
        sentences = split_text(text, self._sentence_splitting)
        if not sentences:
            return []
        words = [split_words(text, s, bool(self._store.settings.get("skip_stopwords"))) for s in sentences]
        encoded = self._encoder.encode(
            [text[s.start : s.end] for s in sentences],
            [
                [(w.start - s.start, w.end - s.start) for w in ws]
                for s, ws in zip(sentences, words, strict=True)
            ],
        )
        result = []
        flat = 0
        for i, (sentence, sentence_words) in enumerate(zip(sentences, words, strict=True)):
            embedded_words = []
            pieces = self._encoder.word_pieces(
                text[sentence.start : sentence.end],
                [(w.start - sentence.start, w.end - sentence.start) for w in sentence_words],
            )
            for word, word_pieces in zip(sentence_words, pieces, strict=True):
                if encoded.word_aligned[flat]:
                    embedded_words.append(
                        EmbeddedWord(
                            word.form,
                            word.lemma,
                            word.start,
                            word.end,
                            encoded.word_vectors[flat],
                            tuple(word_pieces),
                        )
                    )
                flat += 1
            result.append(
                EmbeddedSentence(
                    text[sentence.start : sentence.end],
                    sentence.start,
                    sentence.end,
                    encoded.sentence_vectors[i],
                    tuple(embedded_words),
                )
            )
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
        return self._encoder.encode(list(texts), [[] for _ in texts]).sentence_vectors

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
        return self._encoder.encode([text], [[]]).sentence_vectors[0]

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
        encoded = self._encoder.encode(texts, spans)
        for query, aligned in zip(queries, encoded.word_aligned, strict=True):
            if not aligned:
                raise QueryError(f"the model's tokenizer gives no token for {query.form!r}")
        return encoded.word_vectors

    # --------------------------------------------------------------------------------------- queries

    def search_sentences(self, text: str, k: int = 10) -> list[SentenceHit]:
        """The sentences most similar to a text.

        Args:
            text: the query.
            k: number of hits.

        Returns:
            Up to ``k`` hits, best first.
        """
        _check_k(k)
        return self._sentence_hits(*self._store.search("sentences", self.embed_query_sentence(text), k))

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
        self, text: str, target: str | None = None, k: int = 10, exact_form: bool = False
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

        Returns:
            Up to ``k`` hits, best first.

        Raises:
            QueryError: a malformed query.
        """
        return self._search_parsed_words([parse_word_query(text, target)], k, exact_form)[0]

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

    def search_similar_words(self, text: str, target: str | None = None, k: int = 10) -> list[LemmaHit]:
        """Other words used in the target's sense: nearest occurrences of other lemmas, by lemma.

        Stop-words are left out of the answer.

        Args:
            text: the query sentence, the target in [brackets] unless ``target`` is given.
            target: the target word in a plain sentence.
            k: number of lemmas.

        Returns:
            Up to ``k`` lemmas, each with its best-matching occurrence, best first.
        """
        _check_k(k)
        query = parse_word_query(text, target)
        vector = self.embed_query_word(query)
        own_lemma = lemmatize(query.form)
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


def open_index(path: str | Path, model: str | None = None, backend: str = "auto") -> SenseIndex:
    """Open an index for querying, loading the model it was built with.

    Args:
        path: the index folder.
        model: a model folder to use instead of the stored one (e.g. the index was moved to another
            machine); its weights must have the stored fingerprint.
        backend: what runs the model for queries: ``auto``, ``torch``, ``torch-bf16`` or ``onnx``
            (see :class:`EncoderSettings`); any backend queries any index.

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
    return SenseIndex(store, encoder)


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


def _describe(store: IndexStore) -> dict[str, Any]:
    return {
        "path": str(store.folder),
        "settings": dict(store.settings),
        "counts": store.counts(),
        "vector_files": store.vector_files(),
        "deleted_vectors": store.deleted_count(),
    }
