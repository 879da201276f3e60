"""A sharded index read as one index: every read fans out to the shards and is merged (`ShardedReader`).

Each shard is an ordinary index (see `manifest`). Rows keep their shard's rowids on disk; the reader
gives them index-wide ids ``rowid * shards + shard``, so ids from different shards never collide and a
single-shard index keeps its rowids. Every method answers exactly what one index holding all the
documents would: a search takes each shard's best ``k`` and keeps the best ``k`` of those, filters and
lookups are routed to the shards that hold the rows, and a lemma's occurrences come in one order for
any number of shards (by document id, then position), so sense induction sees the same sequence.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from senseindex.errors import IndexCorrupted, IndexNotFound
from senseindex.indexer.storage.manifest import MANIFEST_COMPLETE, Manifest, read_manifest
from senseindex.indexer.storage.reader import IndexReader
from senseindex.indexer.storage.schema import STATUS_BUILDING, STATUS_COMPLETE, STATUS_KEY, VECTOR_TABLES

# Settings that belong to one shard's database, not to the index as a whole.
_PER_SHARD_SETTINGS = ("next_ids", "next_shard_number", "created_at", "status")


class ShardedReader:
    """The shards of a sharded index, opened for reading and queried as one index.

    The same reading interface as `IndexReader` (the parts queries use), with index-wide ids.

    Args:
        folder: the index folder (holding the manifest).
        manifest: its manifest.
        shards: one reader per shard, in shard-number order.
    """

    def __init__(self, folder: Path, manifest: Manifest, shards: list[IndexReader]) -> None:
        self.folder = folder
        self.manifest = manifest
        self.shards = shards
        self.settings: dict[str, Any] = {}
        self._load_settings()

    @classmethod
    def open(cls, folder: Path, reader: type[IndexReader] = IndexReader) -> ShardedReader:
        """Open every shard of a sharded index for reading.

        Args:
            folder: the index folder.
            reader: the class each shard is opened with.

        Raises:
            IndexNotFound: no manifest in the folder.
            IndexCorrupted: the manifest is damaged, or a shard it names is missing.
            SchemaMismatch: a shard was written by another format version.
        """
        folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest is None:
            raise IndexNotFound(f"no sharded index in {folder}")
        opened: list[IndexReader] = []
        try:
            for shard_folder in manifest.folders(folder):
                try:
                    opened.append(reader.open(shard_folder))
                except IndexNotFound as error:
                    raise IndexCorrupted(
                        f"shard {shard_folder.name} of the sharded index in {folder} is missing ({error})"
                    ) from error
        except BaseException:
            for store in opened:
                store.close()
            raise
        return cls(folder, manifest, opened)

    def _load_settings(self) -> None:
        """The index's settings: the first shard's, with a status that is complete once every shard is."""
        settings = {k: v for k, v in self.shards[0].settings.items() if k not in _PER_SHARD_SETTINGS}
        settings[STATUS_KEY] = STATUS_COMPLETE if self.complete else STATUS_BUILDING
        settings["shards"] = self.count
        self.settings = settings

    @property
    def count(self) -> int:
        """The number of shards."""
        return len(self.shards)

    @property
    def complete(self) -> bool:
        """False while the sharded build (or any shard's) has not finished."""
        return self.manifest.status == MANIFEST_COMPLETE and all(store.complete for store in self.shards)

    def dimension(self, table: str) -> int:
        """Vector dimension of ``sentences``, ``words`` or ``passages``."""
        return self.shards[0].dimension(table)

    # ----------------------------------------------------------------------------------- ids

    def _global(self, shard: int, ids: np.ndarray) -> np.ndarray:
        return np.asarray(ids, dtype=np.int64) * self.count + shard

    def _split(self, ids: Iterable[int] | np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Index-wide ids by shard: ``(shard, positions in the input, shard rowids)`` per shard with any."""
        array = np.fromiter((int(i) for i in ids), dtype=np.int64) if not isinstance(ids, np.ndarray) else ids
        array = np.asarray(array, dtype=np.int64)
        shard_of_id = array % self.count
        parts = []
        for shard in range(self.count):
            positions = np.flatnonzero(shard_of_id == shard)
            if len(positions):
                parts.append((shard, positions, array[positions] // self.count))
        return parts

    # ----------------------------------------------------------------------------------- lifecycle

    def refresh(self) -> None:
        """Move every shard to its latest committed state."""
        for store in self.shards:
            store.refresh()
        manifest = read_manifest(self.folder)
        if manifest is not None and manifest.shards == self.manifest.shards:
            self.manifest = manifest  # a build in progress may have finished meanwhile
        self._load_settings()

    def changed_on_disk(self) -> bool:
        """Whether any shard may have committed since the last `refresh`."""
        return any(store.changed_on_disk() for store in self.shards)

    def open_vectors(self) -> None:
        """Open every vector file of every shard now."""
        for store in self.shards:
            store.open_vectors()

    def close(self) -> None:
        """Close every shard's database connection."""
        for store in self.shards:
            store.close()

    # ----------------------------------------------------------------------------------- vectors

    def search(
        self,
        table: str,
        vector: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
        function_words: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best-matching rows over all shards (see `IndexReader.search`), with index-wide ids.

        Each shard gives its best ``k``; the best ``k`` of those are the index's best ``k``.
        """
        found_ids, found_scores = [], []
        if allowed is None:
            wanted: list[tuple[int, np.ndarray | None]] = [(shard, None) for shard in range(self.count)]
        else:
            wanted = [(shard, local) for shard, _, local in self._split(allowed)]
        excluded_in = (
            {shard: local for shard, _, local in self._split(excluded)} if excluded is not None else {}
        )
        for shard, local in wanted:
            ids, scores = self.shards[shard].search(
                table, vector, k, local, excluded_in.get(shard), function_words
            )
            found_ids.append(self._global(shard, ids))
            found_scores.append(scores)
        if not found_ids:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        ids, scores = np.concatenate(found_ids), np.concatenate(found_scores)
        # best first; equal scores by id, so the order does not depend on the shards' order
        order = np.lexsort((ids, -scores))[:k]
        return ids[order], scores[order].astype(np.float32)

    def live_vectors(self, table: str) -> int:
        """Vectors of a table that searches can return (not deleted), over all shards."""
        return sum(store.live_vectors(table) for store in self.shards)

    def word_vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of word occurrences, by index-wide id.

        Returns:
            ``(len(ids), word_dimension)`` float32, in the order of ``ids``.
        """
        result = np.zeros((len(ids), self.dimension("words")), dtype=np.float32)
        for shard, positions, local in self._split(np.asarray(ids, dtype=np.int64)):
            result[positions] = self.shards[shard].word_vectors(local)
        return result

    def sentence_vectors_of_words(self, ids: np.ndarray) -> np.ndarray:
        """The vector of each word occurrence's sentence (see `IndexReader.sentence_vectors_of_words`)."""
        result = np.zeros((len(ids), self.dimension("sentences")), dtype=np.float32)
        for shard, positions, local in self._split(np.asarray(ids, dtype=np.int64)):
            result[positions] = self.shards[shard].sentence_vectors_of_words(local)
        return result

    def vectors_of_documents(
        self, table: str, documents: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every sentence or passage vector of some documents (see `IndexReader.vectors_of_documents`)."""
        ids, owners, vectors = [], [], []
        for shard, _, local in self._split(documents):
            shard_ids, shard_owners, shard_vectors = self.shards[shard].vectors_of_documents(
                table, local.tolist()
            )
            ids.append(self._global(shard, shard_ids))
            owners.append(self._global(shard, shard_owners))
            vectors.append(shard_vectors)
        if not ids:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros((0, self.dimension(table)), dtype=np.float32)
        return np.concatenate(ids), np.concatenate(owners), np.concatenate(vectors)

    # ----------------------------------------------------------------------------------- summaries

    def counts(self) -> dict[str, int]:
        """Row counts over all shards: documents, sentences, words, passages."""
        return _summed(store.counts() for store in self.shards)

    def deleted_count(self) -> dict[str, int]:
        """Vectors of deleted rows still on disk, per table, over all shards."""
        return _summed(store.deleted_count() for store in self.shards)

    def vector_files(self) -> list[dict[str, Any]]:
        """Every vector file of every shard, its ``file`` relative to the index folder."""
        files = []
        for name, store in zip(self.manifest.shards, self.shards, strict=True):
            files += [
                {**file, "file": f"{name}/{file['file']}", "shard": name} for file in store.vector_files()
            ]
        return files

    def table_index_type(self, table: str) -> str:
        """The index types of a table's vectors over all shards, joined with ``+``."""
        kinds = dict.fromkeys(
            kind for store in self.shards for kind in store.table_index_type(table).split("+")
        )
        return "+".join(kinds)

    def shard_summaries(self) -> list[dict[str, Any]]:
        """Per shard: its folder name, whether its build finished, and its row counts."""
        return [
            {"shard": name, "complete": store.complete, "counts": store.counts()}
            for name, store in zip(self.manifest.shards, self.shards, strict=True)
        ]

    # ----------------------------------------------------------------------------------- rows

    def document(self, doc_id: str) -> dict[str, Any] | None:
        """A stored document, asked of its own shard (see `IndexReader.document`)."""
        return self.shards[self.manifest.shard_of(doc_id)].document(doc_id)

    def document_hashes(self, doc_ids: Iterable[str]) -> dict[str, str]:
        """Content hash of each stored document among ``doc_ids``, each asked of its own shard."""
        by_shard: dict[int, list[str]] = {}
        for doc_id in doc_ids:
            by_shard.setdefault(self.manifest.shard_of(doc_id), []).append(doc_id)
        found: dict[str, str] = {}
        for shard, listed in by_shard.items():
            found.update(self.shards[shard].document_hashes(listed))
        return found

    def documents_of(self, table: str, ids: Iterable[int]) -> dict[int, int]:
        """Index-wide document id of each index-wide sentence, word or passage id."""
        found: dict[int, int] = {}
        for shard, _, local in self._split(ids):
            for row, document in self.shards[shard].documents_of(table, local.tolist()).items():
                found[row * self.count + shard] = document * self.count + shard
        return found

    def filter_documents(
        self, doc_ids: Sequence[str] | None, metadata: dict[str, list[Any]] | None
    ) -> list[dict[str, Any]]:
        """The documents that pass a filter, over all shards (see `IndexReader.filter_documents`)."""
        found = []
        for shard, store in enumerate(self.shards):
            listed = None
            if doc_ids is not None:
                listed = [doc_id for doc_id in doc_ids if self.manifest.shard_of(doc_id) == shard]
                if not listed:
                    continue
            for row in store.filter_documents(listed, metadata):
                found.append({**row, "id": row["id"] * self.count + shard})
        return found

    def rows_of_documents(self, table: str, documents: Sequence[int]) -> np.ndarray:
        """Index-wide ids (int64, in order) of the sentences, words or passages of some documents."""
        if table not in VECTOR_TABLES:
            raise ValueError(table)
        parts = [
            self._global(shard, self.shards[shard].rows_of_documents(table, local.tolist()))
            for shard, _, local in self._split(documents)
        ]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def word_occurrences(self, lemma: str) -> list[tuple[int, str, str, int]]:
        """A lemma's occurrences in all shards: ``(id, form, doc_id, start)``, by document and position."""
        streams = [
            [
                (doc_id, start, row * self.count + shard, form)
                for row, form, doc_id, start in store.word_occurrences(lemma)
            ]
            for shard, store in enumerate(self.shards)
        ]
        return [(word_id, form, doc_id, start) for doc_id, start, word_id, form in heapq.merge(*streams)]

    def word_ids_for_lemma(self, lemma: str) -> tuple[np.ndarray, list[str]]:
        """Ids and surface forms of every occurrence of a lemma, by document id, then position."""
        rows = self.word_occurrences(lemma)
        return np.asarray([row[0] for row in rows], dtype=np.int64), [row[1] for row in rows]

    def word_ids_of_lemmas(self, lemmas: Sequence[str]) -> np.ndarray:
        """Index-wide ids of every occurrence of some lemmas, in no set order: ``(n,)`` int64."""
        parts = [
            store.word_ids_of_lemmas(lemmas) * self.count + shard for shard, store in enumerate(self.shards)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def lemma_ids_of_documents(self, documents: Sequence[int]) -> dict[str, np.ndarray]:
        """Index-wide ids of the word occurrences of some documents, by lemma: ``{lemma: (n,) int64}``."""
        parts: dict[str, list[np.ndarray]] = {}
        for shard, _, local in self._split(documents):
            for lemma, ids in self.shards[shard].lemma_ids_of_documents(local.tolist()).items():
                parts.setdefault(lemma, []).append(self._global(shard, ids))
        return {lemma: np.concatenate(found) for lemma, found in parts.items()}

    def word_lemmas(self, ids: Iterable[int]) -> dict[int, tuple[str, str]]:
        """The lemma and form of word occurrences, by index-wide id."""
        found: dict[int, tuple[str, str]] = {}
        for shard, _, local in self._split(ids):
            for row, pair in self.shards[shard].word_lemmas(local.tolist()).items():
                found[row * self.count + shard] = pair
        return found

    def document_rows(self, rowids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Document rows (without their text), keyed by index-wide document id."""
        return self._rows(rowids, "document_rows", ())

    def sentence_rows(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Sentence rows with their document's id and metadata (see `IndexReader.sentence_rows`)."""
        return self._rows(ids, "sentence_rows", ())

    def word_rows(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Word rows with their sentence and document (see `IndexReader.word_rows`)."""
        return self._rows(ids, "word_rows", ("sentence_id",))

    def _rows(self, ids: Iterable[int], method: str, also_ids: tuple[str, ...]) -> dict[int, dict[str, Any]]:
        result: dict[int, dict[str, Any]] = {}
        for shard, _, local in self._split(ids):
            rows = getattr(self.shards[shard], method)(local.tolist())
            for row in rows.values():
                for key in ("id", *also_ids):
                    row[key] = row[key] * self.count + shard
                result[row["id"]] = row
        return result


def _summed(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total
