"""Building the shards of a sharded index on a Ray actor pool (the ``ray`` extra).

One actor per worker, each with its own loaded model and ``threads`` CPU threads (``num_cpus=threads``
for Ray's scheduler). An actor builds whole shards, one writer per shard: it reads the sources itself and
keeps its shard's documents, so the process that started the build ships no document. Actors report
their progress through a Ray queue that this process reads.

Without an address a local Ray is started, sized to ``workers * threads`` CPUs, and shut down at the
end; with one (``host:port`` of a cluster started with ``ray start --head``) the build joins it. Every
node must see the sources and the index folder at the same paths (a shared file system), and the model
(the bundled one is installed with senseindex; a model folder at the same path).

Failures: an actor whose process dies (killed, out of memory) is started again by Ray, which then
retries the shard it was building (``max_restarts`` / ``max_task_retries``): the shard resumes from its
last commit and skips the documents stored already, so none is stored twice. Errors of senseindex's own
(a bad source, a busy shard) are returned, not retried.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import socket
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from senseindex.errors import SenseIndexError
from senseindex.extras import import_extra
from senseindex.indexer.faults import as_storage_error
from senseindex.indexer.pipeline_build import SourceReading
from senseindex.indexer.pipeline_reports import BuildSummary
from senseindex.indexer.pipeline_sharded import ShardBuilder, ShardedBuild, ShardReport
from senseindex.indexer.storage.manifest import shard_folder_name

# Times Ray starts a dead actor again, and retries the shard it was building, before the build fails.
RESTARTS = 3
# An actor reports its progress at most this often (and at the end of each shard).
REPORT_SECONDS = 0.5
# How long to wait for a cluster's address to answer before calling it unreachable.
CONNECT_SECONDS = 5.0
_HOST_PORT = re.compile(r"^(?:ray://)?\[?([^\[\]/]+?)\]?:(\d+)$")


def import_ray() -> ModuleType:
    """Import Ray.

    Raises:
        MissingExtra: Ray is not installed (``pip install 'senseindex[ray]'``).
    """
    return import_extra("ray", "ray")


def default_threads(workers: int, local: bool) -> int:
    """CPU threads per actor when none are asked for: the cores shared out on a local Ray, else 1."""
    return max(1, (os.cpu_count() or 1) // workers) if local else 1


def check_reachable(address: str) -> None:
    """Fail fast on a cluster address nobody answers at (Ray itself waits minutes).

    Args:
        address: ``host:port`` or ``ray://host:port``; other forms (``auto``) are left to Ray.

    Raises:
        SenseIndexError: nothing answers at the address.
    """
    match = _HOST_PORT.match(address.strip())
    if match is None:
        return
    host, port = match.group(1), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise SenseIndexError(
            f"cannot reach the Ray cluster at {address} ({reason}); start it there with "
            "'ray start --head' or leave out --ray-address for a local Ray"
        ) from None


class ShardActor:
    """A Ray actor: one loaded model, building whole shards when asked.

    Errors of senseindex's own are returned (not raised), so that Ray does not retry them and they reach
    the user as the one-line message they are.

    Args:
        build: what was asked for.
        reading: the sources, scanned by the process that started the build.
    """

    def __init__(self, build: ShardedBuild, reading: SourceReading) -> None:
        self.builder: ShardBuilder | None = None
        self.error: SenseIndexError | None = None
        try:
            self.builder = ShardBuilder(build, reading)
        except SenseIndexError as error:
            self.error = error

    def settings(self) -> dict[str, Any] | SenseIndexError:
        """The index settings of this actor's model, or why it could not load it."""
        return self.builder.wanted if self.builder is not None else self._error()

    def pid(self) -> int:
        """The actor's process id."""
        return os.getpid()

    def build(
        self, root: str, number: int, wanted: dict[str, Any], queue: Any
    ) -> BuildSummary | SenseIndexError:
        """Build one shard, reporting to ``queue``; its summary, or the error that stopped it."""
        if self.builder is None:
            return self._error()
        last = 0.0

        def report(shard_report: ShardReport) -> None:
            nonlocal last
            now = time.monotonic()
            if shard_report.finished or now - last >= REPORT_SECONDS:
                last = now
                queue.put(shard_report)

        try:
            # a full disk or a refused file on this node: the one-line error, not a retried traceback
            with as_storage_error(Path(root), "writing"):
                return self.builder.build_shard(Path(root), number, wanted, report)
        except SenseIndexError as error:
            return error

    def _error(self) -> SenseIndexError:
        return self.error or SenseIndexError("the worker could not start")


class RayRunner:
    """The shards built by a Ray actor pool; joins or starts Ray, and shuts down what it started.

    Args:
        build: what was asked for.
        reading: the sources, scanned here.

    Raises:
        MissingExtra: Ray is not installed.
        SenseIndexError: the cluster cannot be reached.
    """

    def __init__(self, build: ShardedBuild, reading: SourceReading) -> None:
        ray = import_ray()
        self.ray = ray
        self.started_ray = False
        self.actors: list[Any] = []
        self.queue: Any = None
        try:
            self._start(build, reading)
        except BaseException:
            self.close()
            raise

    def _start(self, build: ShardedBuild, reading: SourceReading) -> None:
        ray = self.ray
        local = build.ray_address is None
        threads = build.settings.threads or default_threads(build.workers, local)
        if build.ray_address is not None:
            check_reachable(build.ray_address)
        if not ray.is_initialized():  # (a program that connected to Ray itself keeps its connection)
            quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
            if build.ray_address is not None:
                try:
                    ray.init(address=build.ray_address, **quiet)
                except (ConnectionError, RuntimeError, ValueError) as error:
                    raise SenseIndexError(
                        f"cannot join the Ray cluster at {build.ray_address}: {error}"
                    ) from None
            else:
                ray.init(num_cpus=build.workers * threads, include_dashboard=False, **quiet)
            self.started_ray = True
        from ray.util.queue import Queue

        build = dataclasses.replace(build, settings=dataclasses.replace(build.settings, threads=threads))
        self.count = build.shard_count
        remote = ray.remote(ShardActor).options(
            num_cpus=threads, max_restarts=RESTARTS, max_task_retries=RESTARTS
        )
        self.queue = Queue(actor_options={"num_cpus": 0})
        self.actors = [remote.remote(build, reading) for _ in range(min(build.workers, self.count))]

    def settings(self) -> dict[str, Any]:
        """The index settings of the first actor's model.

        Raises:
            ModelLoadError, SettingsError: the model or a setting is unusable.
        """
        result = self.ray.get(self.actors[0].settings.remote())
        if isinstance(result, SenseIndexError):
            raise result
        return dict(result)

    def run(self, root: Path, wanted: dict[str, Any], update: Any) -> list[BuildSummary]:
        """Build every shard; each actor takes the next shard when it finishes one.

        Args:
            root: the folder the shard folders go in.
            wanted: the settings every shard gets.
            update: called with each `ShardReport` the actors send.

        Returns:
            Each shard's summary, in shard order.

        Raises:
            SenseIndexError: a shard failed, or its worker died more than `RESTARTS` times.
        """
        from ray.util.queue import Empty

        todo = list(range(self.count))
        pending: dict[Any, tuple[int, int]] = {}
        results: dict[int, BuildSummary] = {}

        def submit(actor: int) -> None:
            if todo:
                number = todo.pop(0)
                ref = self.actors[actor].build.remote(str(root), number, wanted, self.queue)
                pending[ref] = (actor, number)

        for actor in range(len(self.actors)):
            submit(actor)
        while pending:
            try:
                report = self.queue.get(timeout=REPORT_SECONDS)
            except Empty:
                report = None
            if report is not None:
                update(report)
            ready, _ = self.ray.wait(list(pending), num_returns=len(pending), timeout=0)
            for ref in ready:
                actor, number = pending.pop(ref)
                results[number] = self._result(ref, number)
                submit(actor)
        for report in self.queue.get_nowait_batch(self.queue.qsize()):
            update(report)
        return [results[number] for number in range(self.count)]

    def _result(self, ref: Any, number: int) -> BuildSummary:
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as error:
            raise SenseIndexError(
                f"the worker building {shard_folder_name(number)} died {RESTARTS + 1} times "
                f"({type(error).__name__}); every committed document is kept: run the same build again "
                "to resume it"
            ) from None
        if isinstance(result, SenseIndexError):
            raise result
        return result

    def close(self) -> None:
        """Stop the actors, and Ray if this build started it.

        (Failures to stop are not reported: this runs after the build ended, well or not.)
        """
        with contextlib.suppress(Exception):
            for actor in self.actors:
                self.ray.kill(actor, no_restart=True)
            if self.queue is not None:
                self.queue.shutdown(force=True)
        if self.started_ray:
            self.ray.shutdown()
            self.started_ray = False
