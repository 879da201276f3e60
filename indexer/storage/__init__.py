"""On-disk index storage: SQLite for everything but vectors, FAISS for vectors.

This package is the only part of senseindex that touches SQLite and FAISS. A vector's FAISS position is
always tied to the SQLite rowid of the row it belongs to (``sentences.id``, ``words.id`` or
``passages.id``) through the ``shards`` table: see `vectors`.

Folder layout (see docs/design.md, "On-disk format")::

    DIR/index.sqlite            settings, documents, sentences, words, passages, shards, deleted
    DIR/sentences-00000.faiss   sentence vectors, one shard file per run of rowids
    DIR/words-00000.faiss       word-occurrence vectors
    DIR/passages-00000.faiss    passage vectors (consecutive sentences)
    DIR/write.lock              held by the one process writing, if any

Writing is crash safe: a writer adds rows inside one SQLite transaction per batch of whole
documents, writes the batch's vectors to new shard files (under a temporary name, flushed, then
renamed) and only then commits the rows together with the ``shards`` records that make those files
part of the index. A process killed at any moment leaves the last committed state; files it wrote
after that are not referenced and the next writer deletes them; files a commit replaces are deleted
right after it. Readers use SQLite's write-ahead log:
each reader keeps the snapshot it opened (see `IndexStore.refresh`) and never sees a
half-applied batch.

Modules: `schema` (tables, format version), `folder` (write lock, flushing, the
``--overwrite`` swap, clean-up), `guards` (damaged index or caller's mistake), `reader`
(`IndexReader`), `writer` (`IndexStore`), `merge` (which shards to merge),
`compaction` (small shards merged by size, deleted vectors dropped), `check` and `verify` (verification),
`vectors` (index types, writing shards), `shards`
(reading and searching them) and `threads` (FAISS's threads for searches and builds).
"""

from pathlib import Path

from senseindex.indexer.storage.folder import read_index_status
from senseindex.indexer.storage.manifest import MANIFEST_FILE, Manifest, is_sharded, read_manifest, shard_of
from senseindex.indexer.storage.merge import MERGE_SMALL_SHARDS, MERGE_VECTORS
from senseindex.indexer.storage.reader import IndexReader
from senseindex.indexer.storage.schema import (
    DATABASE_FILE,
    LOCK_FILE,
    ROW_TABLES,
    SCHEMA_VERSION,
    STATUS_BUILDING,
    STATUS_COMPLETE,
    VECTOR_TABLES,
    Row,
)
from senseindex.indexer.storage.sharded import ShardedReader
from senseindex.indexer.storage.threads import SEARCH_THREADS, current_faiss_threads, faiss_threads
from senseindex.indexer.storage.vectors import (
    AUTO_COMPRESSED_TYPE,
    AUTO_INDEX_TYPE,
    EXACT_LIMIT,
    FLAT_INDEX_TYPE,
    MIN_TRAINED_SHARD,
    SHARD_BYTES,
    Shard,
    ShardSet,
    ShardWriter,
    check_index_type,
)
from senseindex.indexer.storage.writer import IndexStore

ReadableIndex = IndexReader | ShardedReader
"""An index open for reading: one index, or the shards of a sharded one read as one."""


def open_for_reading(folder: Path) -> ReadableIndex:
    """Open an index for reading: a sharded index (a folder with a manifest) or an ordinary one.

    Raises:
        IndexNotFound: no index in the folder.
        SchemaMismatch: the index was written by another format version.
        IndexCorrupted: the database, the manifest or a shard cannot be read.
    """
    if is_sharded(folder):
        return ShardedReader.open(folder)
    return IndexReader.open(folder)


__all__ = [
    "AUTO_COMPRESSED_TYPE",
    "AUTO_INDEX_TYPE",
    "DATABASE_FILE",
    "EXACT_LIMIT",
    "FLAT_INDEX_TYPE",
    "LOCK_FILE",
    "MANIFEST_FILE",
    "MERGE_SMALL_SHARDS",
    "MERGE_VECTORS",
    "MIN_TRAINED_SHARD",
    "ROW_TABLES",
    "SCHEMA_VERSION",
    "SEARCH_THREADS",
    "SHARD_BYTES",
    "STATUS_BUILDING",
    "STATUS_COMPLETE",
    "VECTOR_TABLES",
    "IndexReader",
    "IndexStore",
    "Manifest",
    "ReadableIndex",
    "Row",
    "Shard",
    "ShardSet",
    "ShardWriter",
    "ShardedReader",
    "check_index_type",
    "current_faiss_threads",
    "faiss_threads",
    "is_sharded",
    "open_for_reading",
    "read_index_status",
    "read_manifest",
    "shard_of",
]
