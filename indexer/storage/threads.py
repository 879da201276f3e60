"""FAISS's OpenMP threads: one for searches, the build's thread count for training, adding and merging.

FAISS parallelises a search over a few thousand to a million vectors with OpenMP. On a shared CPU
that costs more than it saves: OpenMP's idle workers keep spinning after each search and take the
cores from the model's next forward pass and from any other process. Beside busy processes an
in-process sentence query took 96 ms (p50) with FAISS's default threads and 45 ms with one, or
1,322 ms and 180 ms with more load, while one thread cost nothing measurable on an idle machine
(docs/benchmarks.md, "Threads under a competing load"). Searches therefore always run on one
thread; builds (training, adding and merging vectors) use the thread count the build was given.

OpenMP's thread count is a setting of the calling thread (measured with the libgomp FAISS ships: a
count set on one thread is not seen by another), so `faiss_threads` sets it around each piece of
work, on the thread doing it, and puts back what was there: a service answering queries on many
threads while a write runs on another gets one thread per search and the build's count for the
write, whatever ran on the thread before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import faiss

SEARCH_THREADS = 1
"""FAISS threads of every search (and every read of vectors by id)."""
DEFAULT_THREADS = max(1, int(faiss.omp_get_max_threads()))
"""FAISS's own default, read when this module is imported: ``OMP_NUM_THREADS`` or one per core."""


@contextlib.contextmanager
def faiss_threads(threads: int | None) -> Iterator[None]:
    """Run FAISS with this many OpenMP threads on the calling thread, then put back the previous count.

    Args:
        threads: at least 1; None for FAISS's default (`DEFAULT_THREADS`).

    Yields:
        Nothing; FAISS calls made on this thread meanwhile use ``threads``.
    """
    wanted = threads or DEFAULT_THREADS
    previous = int(faiss.omp_get_max_threads())
    if wanted == previous:
        yield
        return
    faiss.omp_set_num_threads(wanted)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def current_faiss_threads() -> int:
    """FAISS's OpenMP threads on the calling thread now."""
    return int(faiss.omp_get_max_threads())
