"""Querying an index: sentences similar to a text, and word occurrences used in a matching sense.

`SenseIndex` is the front door; the work is done by the modules beside this one: the state
it answers from and its lock (`state`), embedding (`embedding`), sentence and document
search (`sentences`), word queries and word search (`word_query`, `words`), sense
induction (`by_sense`) and writes (`writes`). `opening` opens one (`open_index`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from senseindex.errors import DocumentNotFound
from senseindex.indexer.pipeline import BuildSummary, DeleteSummary
from senseindex.indexer.sources import Document
from senseindex.indexer.storage import ReadableIndex
from senseindex.search import by_sense, embedding, sentences, words, writes
from senseindex.search import change as change_module
from senseindex.search.change import ChangeReport
from senseindex.search.hits import DocumentHit, EmbeddedSentence, LemmaHit, SentenceHit, WordHit
from senseindex.search.ranking import MAX_K
from senseindex.search.senses import SenseGroup, WordSenses
from senseindex.search.sentences import DEFAULT_DOCUMENT_SCORING, DEFAULT_PASSAGE_WEIGHTS, DOCUMENT_SCORINGS
from senseindex.search.state import IndexState, describe
from senseindex.search.word_query import WordQuery, parse_word_query

if TYPE_CHECKING:
    from senseindex.indexer.encoder import Encoder

__all__ = [
    "DEFAULT_DOCUMENT_SCORING",
    "DEFAULT_PASSAGE_WEIGHTS",
    "DOCUMENT_SCORINGS",
    "MAX_K",
    "SenseIndex",
    "WordQuery",
    "parse_word_query",
]


class SenseIndex:
    """An opened index: query it for similar sentences and for words used in a matching sense.

    Open one with `open_index`. Queries are embedded with the encoder settings stored in the
    index, whatever the caller's defaults.

    An opened index is safe to use from many threads at once: the query texts of concurrent calls
    share forward passes (see `QueryBatcher`), and each query reads one
    consistent state of the index. Writes through `add_documents` and `delete_documents`
    run one at a time, and queries move to their result only once a write is complete.
    """

    def __init__(self, store: ReadableIndex, encoder: Encoder, max_query_batch: int = 64) -> None:
        self._state = IndexState(store, encoder, max_query_batch)

    @property
    def settings(self) -> dict[str, Any]:
        """The index settings as stored (model, fingerprint, layer strategy, pooling, ...)."""
        return dict(self._state.settings.stored)

    @property
    def path(self) -> Path:
        """The index folder."""
        return self._state.store.folder

    @property
    def backend(self) -> str:
        """What runs the model for queries (``torch``, ``torch-bf16``, ``onnx`` or ``onnx-int8``)."""
        return self._state.encoder.backend

    @property
    def device(self) -> str:
        """Where the model runs for queries: ``cpu`` or ``cuda``."""
        return self._state.encoder.device

    @property
    def threads(self) -> int:
        """CPU threads the model runs with now (torch's intra-op threads, shared by the process).

        FAISS searches always run on one thread.
        """
        return self._state.encoder.threads

    def info(self) -> dict[str, Any]:
        """Settings, row counts and vector files.

        Keys: ``{"path", "settings", "counts", "vector_files", "deleted_vectors"}``.
        """
        with self._state.snapshot(require_current=False) as store:
            return describe(store)

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
        self._state.refresh()

    def refresh_if_changed(self) -> bool:
        """`refresh` if anything was committed to the index since this state was read.

        The check of the database files is cheap. Nothing happens while a write through this object is under
        way (its documents appear when it completes).

        Returns:
            Whether the index moved to a newer state.

        Raises:
            IndexCorrupted, ModelMismatch: as `refresh`.
        """
        return self._state.refresh_if_changed()

    def serve_model(self, stop: threading.Event) -> None:
        """Run the model for every query of this index in the calling thread until ``stop`` is set.

        Queries made meanwhile on other threads wait for this thread to embed them (batched).

        For servers that answer on worker threads: give the model the main thread (see
        `serve`). Writes keep running on their own thread.

        Args:
            stop: ends the loop once set.
        """
        self._state.queries.serve(stop)

    def query_batching(self) -> dict[str, int]:
        """How concurrent queries shared the model: ``{"max_texts", "calls", "runs", "traced"}``.

        Each run of the model served one or more calls; ``traced`` is 1 once forward passes run
        traced (see `QueryBatcher`), else 0.
        """
        queries = self._state.queries
        return {
            "max_texts": queries.max_texts,
            "calls": queries.calls_run,
            "runs": queries.batches_run,
            "traced": int(queries.encoder.traced),
        }

    def speed_up_queries(self) -> bool:
        """Trace the model's forward pass now, as a process does after 50 queries (about 0.6 s, once).

        For servers, before they take requests; `serve_model` does it too. The trace is kept only if
        it gives the same vectors as the model itself (see the design notes on query encoding).

        Returns:
            Whether forward passes now run traced (never for ONNX backends or GPUs).
        """
        return self._state.encoder.trace_for_queries()

    def give_way_to_queries(self) -> None:
        """A pause point for long Python work on a thread beside queries (e.g. encoding a large answer).

        Returns at once unless queries are in progress on other threads; then waits for them a
        little (at most 30 ms, and only after 10 ms of work since it last waited), so they are not
        slowed by taking turns with the long work. `embed_texts` pauses here between sentences.
        """
        self._state.queries.give_way()

    def close(self) -> None:
        """Release the database connection."""
        self._state.close()

    def add_documents(
        self,
        documents: Iterable[Document | Mapping[str, Any]],
        progress: Callable[[int, int | None], None] | None = None,
    ) -> BuildSummary:
        """Add documents, or replace stored ones with the same id, with this index's model, in one commit.

        All of them are stored or (on an error) none; queries on this object see all of them once the call
        returns, and none of them before.

        A document stored with the same text and metadata is left alone (as ``senseindex add``).

        Args:
            documents: `Document` objects or mappings ``{"id", "text",
                "metadata"?}``; ids must be unique.
            progress: called after each stored chunk with characters done and in total.

        Returns:
            What was stored (``documents`` counts new and replaced ones).

        Raises:
            SourceError: a malformed document or a repeated id (nothing is written then).
            IndexBusy: another process is writing to the index.
            ModelMismatch: the index was rebuilt with another model since it was opened.
        """
        return writes.add(self._state, documents, progress)

    def delete_documents(self, doc_ids: Sequence[str], missing_ok: bool = False) -> DeleteSummary:
        """Delete documents (all their sentences, words, passages and vectors), in one commit.

        Queries on this object stop finding them when the call returns.

        Args:
            doc_ids: ids of stored documents.
            missing_ok: pass over ids that are not in the index (the summary lists them under
                ``missing``) instead of refusing the delete: running a delete again succeeds.

        Returns:
            What was deleted.

        Raises:
            DocumentNotFound: without ``missing_ok``, an id is not in the index (nothing is deleted then).
            SourceError: an id that is not valid Unicode text.
            IndexBusy: another process is writing to the index.
        """
        return writes.delete(self._state, doc_ids, missing_ok)

    def get_document(self, doc_id: str) -> dict[str, Any]:
        """A stored document as it was added.

        Args:
            doc_id: its id.

        Returns:
            ``{"id", "source", "text", "metadata"}``.

        Raises:
            DocumentNotFound: the id is not in the index.
        """
        with self._state.snapshot(require_current=False) as store:
            found = store.document(doc_id)
        if found is None:
            raise DocumentNotFound(f"no document {doc_id!r} in the index")
        return found

    def __enter__(self) -> SenseIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        """`embed` for many texts, their sentences run through the model together.

        Args:
            texts: any texts.

        Returns:
            Per text, its sentences with their words, as `embed` gives them.
        """
        return embedding.embed_texts(self._state, texts)

    def embed_sentences(self, texts: list[str]) -> np.ndarray:
        """Sentence vectors of texts, each text embedded whole as one sequence (as queries are).

        Args:
            texts: any texts; batched and length-sorted internally.

        Returns:
            ``(len(texts), sentence_dimension)`` float32, L2-normalised.

        Raises:
            QueryError: a text is empty.
        """
        return embedding.embed_sentences(self._state, texts)

    def embed_query_sentence(self, text: str) -> np.ndarray:
        """The vector of a sentence query: the whole text as one sequence.

        Args:
            text: the query.

        Returns:
            ``(sentence_dimension,)`` float32, L2-normalised.

        Raises:
            QueryError: the text is empty.
        """
        return embedding.embed_query_sentence(self._state, text)

    def embed_query_word(self, query: WordQuery) -> np.ndarray:
        """The contextual vector of a query's target word, from the sentence that holds it.

        Args:
            query: the parsed query (see `parse_word_query`).

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
        return embedding.embed_query_words(self._state, queries)

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
        return sentences.search_sentences(self._state, [text], k, doc_ids, metadata)[0]

    def search_sentences_many(
        self,
        texts: Sequence[str],
        k: int = 10,
        doc_ids: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[list[SentenceHit]]:
        """`search_sentences` for many texts at once: one batched forward pass for all of them.

        Returns:
            Per text, up to ``k`` hits, best first.
        """
        return sentences.search_sentences(self._state, texts, k, doc_ids, metadata)

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
        return sentences.search_documents(self._state, text, k, scoring, passage_weight)

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
        return words.search_same_word(self._state, [parse_word_query(text, target, span)], k, exact_form)[0]

    def search_word_many(
        self, texts: Sequence[str], k: int = 10, exact_form: bool = False
    ) -> list[list[WordHit]]:
        """`search_word` for many queries at once: one batched forward pass for all of them.

        Args:
            texts: query sentences, each with its target in [brackets].
            k: hits per query.
            exact_form: only occurrences with each target's surface form.

        Returns:
            Per query, up to ``k`` hits, best first.

        Raises:
            QueryError: a malformed query.
        """
        return words.search_same_word(self._state, [parse_word_query(text) for text in texts], k, exact_form)

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
        return words.search_other_words(self._state, parse_word_query(text, target, span), k)

    def induce_senses(
        self,
        word: str,
        senses: int | None = None,
        typical: int = 5,
        related_words: int = 8,
        by: str | None = None,
        bins: int | None = None,
        slices: str | Sequence[tuple[float, float]] | None = None,
    ) -> WordSenses:
        """The senses a word is used in across the index, induced from its occurrences' vectors.

        Every occurrence of the word's lemma is clustered (see `senses`); each
        sense is named by its most typical occurrences and by the other words nearest to its centre.
        With ``by``, the result also holds the share of each sense per slice of a metadata field
        (``WordSenses.by``): per distinct value, or per numeric bin or range.

        Args:
            word: one word (every form of its lemma counts).
            senses: force this many senses instead of choosing (1 to the number of occurrences).
            typical: occurrences shown per sense.
            related_words: other words listed per sense.
            by: a top-level metadata field of the documents, e.g. ``"year"``.
            bins: with ``by``: cut a numeric field into this many equal-width bins.
            slices: with ``by``: numeric ranges, both ends included, e.g. ``"1810-1860,1960-2010"``.

        Returns:
            The senses, most frequent first, with each occurrence's sense and a 2-D map.

        Raises:
            WordNotFound: the index does not hold the word.
            QueryError: not one word, a bad number, or a slicing that cannot be made (no occurrence
                with the field, bins over values that are not numbers).
        """
        return by_sense.induce_senses(self._state, word, senses, typical, related_words, by, bins, slices)

    def change(
        self,
        by: str,
        slice_from: str,
        slice_to: str,
        words: Sequence[str] | None = None,
        measure: str = change_module.DEFAULT_MEASURE,
        top: int | None = None,
        min_count: int = change_module.MIN_COUNT,
    ) -> ChangeReport:
        """Words ranked by how much their use changed between two slices (see `search.change`).

        A slice: the documents whose field ``by`` has a value (``"news"``) or a number in a range
        (``"1810-1860"``). No ``words``: every word with ``min_count`` occurrences in both slices is
        compared, the ``top`` (20) most changed shown. ``measure``: ``apd``, ``jsd`` or ``centroid``.

        Raises:
            QueryError: a bad field, slice, measure or number, or an empty list of words.
            WordNotFound: no word has enough occurrences in both slices.
        """
        changes = change_module.word_changes
        return changes(self._state, by, slice_from, slice_to, words, measure, top, min_count)

    def search_word_by_sense(
        self,
        text: str,
        target: str | None = None,
        k: int = 10,
        span: tuple[int, int] | None = None,
        senses: int | None = None,
    ) -> tuple[WordSenses, int, list[SenseGroup]]:
        """`search_word`, its hits grouped under the word's induced senses.

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
        return by_sense.search_word_by_sense(self._state, parse_word_query(text, target, span), k, senses)
