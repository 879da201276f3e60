"""Query batching: the small encode calls of concurrent queries share one forward pass.

Long work (the many sentences of ``/embed``) runs beside them in steps of a measured length, and
waiting queries go ahead of its next step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
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

    Long work (`encode_long`) runs one forward pass at a time, each cut to about ``step_seconds``
    by the time the last passes took per token. Queries that wait go ahead of its next pass (and
    are never run in the same pass as it), so they wait for one such pass at most; after a batch of
    queries, long work gets a pass before the next batch, so a steady stream of queries does not
    hold it back for good.

    Args:
        encoder: the encoder to run.
        max_texts: most texts run together; 1 runs every call on its own (no batching).
        step_seconds: the time one forward pass of long work should take.
    """

    def __init__(self, encoder: Encoder, max_texts: int = 64, step_seconds: float = 0.025) -> None:
        if max_texts < 1:
            raise SettingsError(f"max_texts must be at least 1, not {max_texts}")
        if not step_seconds > 0:
            raise SettingsError(f"step_seconds must be above 0, not {step_seconds}")
        self.encoder = encoder
        self.max_texts = max_texts
        self.step_seconds = step_seconds
        self._condition = threading.Condition()
        self._waiting: list[_PendingEncode] = []
        self._long: list[_LongEncode] = []  # round robin: the job at the front runs the next step
        self._long_turn = False  # a batch of queries ran last: long work goes next
        self._running = False
        self._served = False  # a thread is in serve(): callers leave the model to it
        self._step_size = _FIRST_STEP_TOKENS  # tokens of the next pass of long work
        self.batches_run = 0
        self.calls_run = 0
        self.steps_run = 0
        self._in_flight = 0  # queries in progress (see `querying`)
        self._in_flight_lock = threading.Lock()
        self._python_turns = _Turns()  # long Python work beside queries (`give_way`)
        self._pass_turns = _Turns()  # passes of long work beside queries in progress

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
        with self.querying(), self._condition:
            self._waiting.append(call)
            self._condition.notify_all()
            while not call.done:
                if self._running or self._served:
                    self._condition.wait()
                    continue
                self._run_next()
        if call.error is not None:
            raise call.error
        return cast(EncodedBatch, call.result)

    @contextmanager
    def querying(self) -> Iterator[None]:
        """Mark a query in progress for the block: long work on other threads gives way to it."""
        with self._in_flight_lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1

    def give_way(self) -> None:
        """A pause point for long Python work beside queries (the sentences of ``/embed`` after the model).

        The interpreter lets one thread run Python at a time, taking turns every few hundred
        microseconds, so a query beside long work runs at a fraction of its speed. Here the long
        work waits while queries are in progress, for at most `GIVE_WAY_SECONDS`, and only once it
        has worked `WORK_BEFORE_GIVING_WAY_SECONDS` since it last waited, so a steady stream of
        queries slows it down but never stops it.
        """
        if not self._python_turns.hold(self._in_flight > 0):
            time.sleep(0)  # let a waiting thread run
            return
        while self._python_turns.hold(self._in_flight > 0):
            time.sleep(0.001)

    def encode_long(
        self, texts: Sequence[str], word_spans: Sequence[Sequence[tuple[int, int]]]
    ) -> EncodedBatch:
        """`Encoder.encode` of many sentences, a forward pass at a time with queries going first.

        The sentences are tokenised and sorted by length in the calling thread, all together (so
        the passes hold as little padding as one call's), then run in passes of about
        ``step_seconds`` each.

        Args:
            texts: sentences.
            word_spans: per sentence, the character spans of its words, relative to the sentence.

        Returns:
            The vectors of the sentences and words, in input order, as `Encoder.encode` gives them.
        """
        prepared = self.encoder.prepare(texts, word_spans)
        job = _LongEncode(self.encoder.run_in_steps(prepared, self._step_tokens))
        with self._condition:
            self._long.append(job)
            self._condition.notify_all()
            while not job.done:
                if self._running or self._served:
                    self._condition.wait()
                    continue
                if self._long_work_held():
                    continue
                self._run_next()
        if job.error is not None:
            raise job.error
        return cast(EncodedBatch, job.result)

    def _step_tokens(self) -> int:
        """The tokens a pass of long work may hold (see `_step`)."""
        return int(self._step_size)

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
                self.encoder.trace_for_queries()  # a server answers many queries: pay for it up front
                while not stop.is_set():
                    if not (self._waiting or self._long) or self._running:
                        self._condition.wait(timeout=0.2)
                        continue
                    if self._long_work_held():
                        continue
                    self._run_next()
            finally:
                self._served = False
                self._condition.notify_all()

    def _long_work_held(self) -> bool:
        """Hold the next pass of long work a moment for queries in progress elsewhere (see `_Turns`).

        Called with the condition held; waits on it (about a millisecond) when it holds.
        """
        if self._waiting or not self._pass_turns.hold(self._in_flight > 0):
            return False
        self._condition.wait(timeout=0.001)  # a query elsewhere runs without the pass beside it
        return True

    def _run_next(self) -> None:
        """Run the waiting queries or a step of long work; called and returns with the condition held.

        Queries go first, but after a batch of them a step of long work that waits runs next.
        """
        long_next = bool(self._long) and (self._long_turn or not self._waiting)
        batch = [] if long_next else self._take_batch()
        job = self._long.pop(0) if long_next else None
        self._long_turn = not long_next
        self._running = True
        try:
            self._condition.release()
            try:
                if job is not None:
                    self._step(job)
                else:
                    self._run(batch)
            finally:
                self._condition.acquire()
        finally:
            if job is not None and not job.done:
                self._long.append(job)  # behind any other long work: round robin
            self._running = False
            self._condition.notify_all()

    def _step(self, job: _LongEncode) -> None:
        """One forward pass of long work, timed to size the next ones."""
        started = time.perf_counter()
        try:
            tokens = next(job.steps)
        except StopIteration as finished:
            job.result, job.done = cast(EncodedBatch, finished.value), True
            return
        except Exception as error:
            job.error, job.done = error, True
            return
        except BaseException:  # KeyboardInterrupt and the like: release the caller, then stop
            job.error, job.done = RuntimeError("the model run was interrupted"), True
            raise
        self.steps_run += 1
        seconds = time.perf_counter() - started
        # sized by the time passes take, fixed costs included: scaled towards step_seconds by at most
        # half or twice a pass (a pass slowed once by a new shape's kernels moves it a little)
        scale = min(2.0, max(0.5, (self.step_seconds / max(seconds, 1e-6)) ** 0.5))
        if tokens >= self._step_size / 2 or scale < 1:  # a short last part of a batch says little
            self._step_size = min(_MAX_STEP_TOKENS, max(_MIN_STEP_TOKENS, self._step_size * scale))

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
        if self.calls_run >= TRACE_AFTER_CALLS:
            self.encoder.trace_for_queries()  # once: a process that answered this many will answer more
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


GIVE_WAY_SECONDS = 0.03
"""The longest long work waits for queries in progress at one pause point (`QueryBatcher.give_way`)."""
WORK_BEFORE_GIVING_WAY_SECONDS = 0.01
"""Long work gives way again only after this much work: at least a quarter of the time is its own."""
TRACE_AFTER_CALLS = 50
"""Calls a process runs before its forward passes are traced (`Encoder.trace_for_queries`): tracing
costs about half a second and saves a few milliseconds per query, so a one-off command never pays."""
_FIRST_STEP_TOKENS = 512.0
_MIN_STEP_TOKENS = 128
_MAX_STEP_TOKENS = 16_384


class _Turns:
    """When long work holds back for queries in progress.

    At most `GIVE_WAY_SECONDS` at a time, and only after `WORK_BEFORE_GIVING_WAY_SECONDS` of work
    since it last held back.
    """

    def __init__(self) -> None:
        self._worked_since = time.perf_counter()
        self._held_since: float | None = None

    def hold(self, queries_in_progress: bool) -> bool:
        """Whether the long work should wait now (asked again and again while it waits)."""
        now = time.perf_counter()
        if not queries_in_progress:
            if self._held_since is not None:
                self._held_since, self._worked_since = None, now
            return False
        if self._held_since is None:
            if now - self._worked_since < WORK_BEFORE_GIVING_WAY_SECONDS:
                return False
            self._held_since = now
        if now - self._held_since < GIVE_WAY_SECONDS:
            return True
        self._held_since, self._worked_since = None, now
        return False


@dataclass
class _LongEncode:
    steps: Generator[int, None, EncodedBatch]
    result: EncodedBatch | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class _PendingEncode:
    texts: list[str]
    spans: list[list[tuple[int, int]]]
    result: EncodedBatch | None = None
    error: BaseException | None = None
    done: bool = False
