"""Opening an index for querying (`open_index`), and describing one without its model (`index_info`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from senseindex.indexer.encoder import EncoderSettings, check_device, load_index_encoder
from senseindex.indexer.faults import storage_faults
from senseindex.indexer.storage import open_for_reading
from senseindex.search.index import SenseIndex
from senseindex.search.state import describe


@storage_faults("reading", "path")
def open_index(
    path: str | Path,
    model: str | None = None,
    backend: str = "auto",
    max_query_batch: int = 64,
    threads: int | None = None,
    device: str = "auto",
) -> SenseIndex:
    """Open an index for querying, loading the model it was built with.

    Args:
        path: the index folder: an ordinary index, or a sharded one (all its shards are opened and
            queried as one index).
        model: a model folder to use instead of the stored one (e.g. the index was moved to another
            machine); its weights must have the stored fingerprint.
        backend: what runs the model for queries: ``auto``, ``torch``, ``torch-bf16`` or ``onnx``
            (see `EncoderSettings`); any backend queries any index.
        max_query_batch: most query texts that concurrent calls run through the model together
            (1: every call on its own).
        threads: CPU threads of the model (torch's intra-op threads, process-wide, and ONNX
            Runtime's); None keeps the default (one per core). FAISS searches always run on one
            thread (see docs/design.md, "Threads").
        device: where the model runs: ``auto`` (CUDA when torch sees a GPU), ``cpu`` or ``cuda``.

    Returns:
        The opened index.

    Raises:
        SettingsError: a bad thread count, or a device that is not there (before anything is read).
        IndexNotFound: no index in ``path``.
        SchemaMismatch: the index was written by another format version.
        IndexCorrupted: a file of the index cannot be read.
        ModelMismatch: ``model`` (or the stored model folder) is not the model the index was built
            with.
        ModelLoadError: the model cannot be loaded.
    """
    EncoderSettings(backend=backend, device=device, threads=threads).validate()
    check_device(device, backend)
    store = open_for_reading(Path(path))
    try:
        store.open_vectors()
        encoder = load_index_encoder(store.settings, model, backend, device, threads)
    except BaseException:
        store.close()
        raise
    return SenseIndex(store, encoder, max_query_batch)


@storage_faults("reading", "path")
def index_info(path: str | Path) -> dict[str, Any]:
    """An index's settings and row counts, without loading its model.

    Args:
        path: the index folder.

    Returns:
        ``{"path", "settings", "counts", "vector_files"}``; each vector file is ``{"table", "file",
        "first_id", "count", "index_type", "bytes"}``.

    Raises:
        IndexNotFound, SchemaMismatch, IndexCorrupted: as `open_index`.
    """
    store = open_for_reading(Path(path))
    try:
        return describe(store)
    finally:
        store.close()
