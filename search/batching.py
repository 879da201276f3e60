"""Query batching: the small encode calls of concurrent queries share one forward pass."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from senseindex.errors import SettingsError
from senseindex.indexer.encoder import EncodedBatch, Encoder, slice_batch


class QueryBatcher:
    """Runs the small encode calls of many threads together: one forward pass for all waiting calls.

    A call that finds the model idle runs at once, alone, so a lone query waits for nothing. Calls
    that arrive while the model is busy queue up, and when it frees, one of them runs every queued
    call (up to ``max_texts`` texts) as one batch. Under load, concurrent queries thus share forward
    passes, which costs little more than one of them.

    A program may instead give the model a thread of its own with `serve`: while it runs, every
    call waits for that thread to run it.

    Args:
        encoder: the encoder to run.
        max_texts: most texts run together; 1 runs every call on its own (no batching).
    """

    def __init__(self, encoder: Encoder, max_texts: int = 64) -> None:
        if max_texts < 1:
            raise SettingsError(f"max_texts must be at least 1, not {max_texts}")
        self.encoder = encoder
        self.max_texts = max_texts
        self._condition = threading.Condition()
        self._waiting: list[_PendingEncode] = []
        self._running = False
        self._served = False  # a thread is in serve(): callers leave the model to it
        self.batches_run = 0
        self.calls_run = 0

    def encode(self, texts: Sequence[str], word_spans: Sequence[Sequence[tuple[int, int]]]) -> EncodedBatch:
        """`Encoder.encode`, run together with the calls other threads make meanwhile.

        Args:
            texts: sentences.
            word_spans: per sentence, the character spans of its words, relative to the sentence.

        Returns:
            The vectors of this call's sentences and words, in input order.
        """
        if len(texts) != len(word_spans):
            raise ValueError("texts and word_spans differ in length")
        call = _PendingEncode(list(texts), [list(spans) for spans in word_spans])
        with self._condition:
            self._waiting.append(call)
            self._condition.notify_all()
            while not call.done:
                if self._running or self._served:
                    self._condition.wait()
                    continue
                self._run_waiting_batch()
        if call.error is not None:
            raise call.error
        return cast(EncodedBatch, call.result)

    def serve(self, stop: threading.Event) -> None:
        """Run every call in this thread, batched as above, until ``stop`` is set.

        For a server whose requests arrive on other threads: on the machine measured (AMX), bfloat16
        kernels ran at half speed in any thread but the main one (a query 12.1 ms instead of
        5.2 ms), so ``senseindex serve`` keeps the model on its main thread with this.

        Args:
            stop: ends the loop once set (checked at least every 0.2 s).
        """
        with self._condition:
            self._served = True
            try:
                while not stop.is_set():
                    if not self._waiting or self._running:
                        self._condition.wait(timeout=0.2)
                        continue
                    self._run_waiting_batch()
            finally:
                self._served = False
                self._condition.notify_all()

    def _run_waiting_batch(self) -> None:
        """Run the oldest waiting calls; called and returns with the condition held."""
        batch = self._take_batch()
        self._running = True
        try:
            self._condition.release()
            try:
                self._run(batch)
            finally:
                self._condition.acquire()
        finally:
            self._running = False
            self._condition.notify_all()

    def _take_batch(self) -> list[_PendingEncode]:
        """The oldest waiting calls that fit in ``max_texts`` texts (at least one call)."""
        batch: list[_PendingEncode] = []
        texts = 0
        while self._waiting and (not batch or texts + len(self._waiting[0].texts) <= self.max_texts):
            call = self._waiting.pop(0)
            batch.append(call)
            texts += len(call.texts)
        return batch

    def _run(self, batch: list[_PendingEncode]) -> None:
        try:
            encoded = self.encoder.encode(
                [text for call in batch for text in call.texts],
                [spans for call in batch for spans in call.spans],
            )
        except Exception as error:
            # each caller raises the error of its own call (the running thread may not be one of them)
            for call in batch:
                call.error, call.done = error, True
            return
        except BaseException:  # KeyboardInterrupt and the like: release the callers, then stop
            for call in batch:
                call.error, call.done = RuntimeError("the model run was interrupted"), True
            raise
        self.batches_run += 1
        self.calls_run += len(batch)
        sentence, word = 0, 0
        for call in batch:
            n_words = sum(len(spans) for spans in call.spans)
            call.result = slice_batch(encoded, sentence, sentence + len(call.texts), word, word + n_words)
            call.done = True
            sentence += len(call.texts)
            word += n_words


@dataclass
class _PendingEncode:
    texts: list[str]
    spans: list[list[tuple[int, int]]]
    result: EncodedBatch | None = None
    error: BaseException | None = None
    done: bool = False
