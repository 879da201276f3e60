"""The state an open index answers from: its store, its encoder and the locks that keep them consistent.

Every query reads the store under one lock and runs the model outside it; `IndexState.snapshot`
is the one place that takes the lock and refuses an index rebuilt under the encoder, so the rule is
written once and every query follows it. Settings a query needs before it takes the lock (how to
split the query text, say) come from `IndexState.settings`, an immutable copy swapped whole when the
state moves, so they are never read from a store that a refresh is changing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from senseindex.errors import ModelMismatch
from senseindex.indexer.faults import as_storage_error
from senseindex.indexer.pipeline import ENCODER_SETTINGS, index_replaced
from senseindex.indexer.storage import ReadableIndex, ShardedReader
from senseindex.search.batching import QueryBatcher

if TYPE_CHECKING:
    from senseindex.indexer.encoder import Encoder


@dataclass(frozen=True)
class IndexSettings:
    """One state's stored index settings, read-only: a query reads them all from one state.

    Args:
        stored: the settings as stored (model, fingerprint, layer strategy, pooling, ...).
    """

    stored: Mapping[str, Any]

    @classmethod
    def of(cls, store: ReadableIndex) -> IndexSettings:
        """A read-only copy of a store's settings (the caller holds the state's lock)."""
        return cls(MappingProxyType(dict(store.settings)))

    @property
    def sentence_splitting(self) -> str:
        """How texts are split into sentences, as when the index was built."""
        return str(self.stored.get("sentence_splitting", "auto"))

    @property
    def skip_stopwords(self) -> bool:
        """Whether stopwords were left out of the word vectors."""
        return bool(self.stored.get("skip_stopwords"))

    @property
    def passage_mode(self) -> str:
        """The index's passage mode (``none`` when it has no passage vectors)."""
        return str(self.stored.get("passages", "none"))


class IndexState:
    """An open index's store and encoder, read one consistent state at a time.

    Reads of the store (and the refresh that moves it to a newer state) happen under `lock`,
    so a query never reads ids from one state and rows from the next. The model runs outside it:
    embed first, then take a `snapshot`. Writes run one at a time under `writing`.

    Args:
        store: the opened index storage, its vectors loaded.
        encoder: the encoder loaded for the index's settings.
        max_query_batch: most query texts that concurrent calls run through the model together.
    """

    def __init__(self, store: ReadableIndex, encoder: Encoder, max_query_batch: int = 64) -> None:
        self.store = store
        self.encoder = encoder
        self.queries = QueryBatcher(encoder, max_query_batch)
        self.lock = threading.RLock()
        self._write_lock = threading.Lock()
        # replaced whole (never changed in place) when the state moves, so reading it needs no lock
        self.settings = IndexSettings.of(store)
        # what the encoder was checked against when the index was opened
        self.encoder_settings = {key: store.settings.get(key) for key in ENCODER_SETTINGS}
        self._replaced: str | None = None
        # counts refreshes: work done between two snapshots compares it to know the state held
        self.generation = 0

    @contextmanager
    def snapshot(self, require_current: bool = True) -> Iterator[ReadableIndex]:
        """Hold the read lock and give the store: everything read inside is from one state.

        Args:
            require_current: refuse an index rebuilt with other encoder settings since it was opened.

        Yields:
            The store, not to be used once the block ends.

        Raises:
            ModelMismatch: ``require_current`` and the index no longer matches the encoder.
        """
        with self.queries.querying(), self.lock, as_storage_error(self.store.folder, "reading"):
            if require_current:
                self.check_current()
            yield self.store

    @contextmanager
    def writing(self) -> Iterator[ReadableIndex]:
        """Hold the write lock: writes through this object run one at a time.

        Yields:
            The store; call `reload` before the block ends to show what was written.
        """
        with self._write_lock, as_storage_error(self.store.folder, "writing"):
            yield self.store

    def check_current(self) -> None:
        """Refuse to answer from an index whose vectors this encoder no longer matches.

        Raises:
            ModelMismatch: the index was rebuilt with another model or other encoder settings.
        """
        if self._replaced is not None:
            raise ModelMismatch(self._replaced)

    def refresh(self) -> None:
        """Move to the latest committed state, after any write through this object completes.

        Raises:
            IndexCorrupted: a vector file of the new state cannot be read.
            ModelMismatch: the index was rebuilt with other encoder settings.
        """
        with self._write_lock:
            self.reload()

    def refresh_if_changed(self) -> bool:
        """`refresh` if anything was committed since this state was read.

        Nothing happens while a write through this object is under way (its documents appear when it
        completes).

        Returns:
            Whether the state moved.

        Raises:
            IndexCorrupted, ModelMismatch: as `refresh`.
        """
        if not self.store.changed_on_disk() and self._replaced is None:
            return False
        # Holding the write lock for the moment of the refresh keeps a write of this object from
        # starting in between and showing its first commits.
        if not self._write_lock.acquire(blocking=False):
            return False
        try:
            self.reload()
        finally:
            self._write_lock.release()
        return True

    def reload(self) -> None:
        """Read the latest committed state; the caller holds the write lock (see `writing`).

        Raises:
            IndexCorrupted, ModelMismatch: as `refresh`.
        """
        with self.lock, as_storage_error(self.store.folder, "reading"):
            self.generation += 1
            self.store.refresh()
            self.store.open_vectors()
            self.settings = IndexSettings.of(self.store)
            self._replaced = index_replaced(self.store.settings, self.encoder_settings, self.store.folder)
            self.check_current()

    def close(self) -> None:
        """Release the database connection."""
        with self.lock:
            self.store.close()


def describe(store: ReadableIndex) -> dict[str, Any]:
    """An index's ``{"path", "settings", "counts", "vector_files", "shard_counts", "deleted_vectors"}``.

    ``shard_counts`` is the number of vector files of each table.

    A sharded index adds ``"shards"``: per shard, its folder, whether its build finished and its counts.
    """
    vector_files = store.vector_files()
    info = {
        "path": str(store.folder),
        "settings": dict(store.settings),
        "counts": store.counts(),
        "vector_files": vector_files,
        "shard_counts": {
            table: sum(1 for f in vector_files if f["table"] == table)
            for table in ("sentences", "words", "passages")
        },
        "deleted_vectors": store.deleted_count(),
    }
    if isinstance(store, ShardedReader):
        info["shards"] = store.shard_summaries()
    return info
