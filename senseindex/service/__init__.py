"""senseindex's HTTP JSON service: ``senseindex serve`` and the application behind it."""

from __future__ import annotations

import gc
import ipaddress
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from senseindex.errors import ServiceError
from senseindex.extras import import_extra
from senseindex.search import SenseIndex, open_index
from senseindex.service.limits import API_VERSION, ServiceLimits
from senseindex.service.logs import LOG_FORMATS, logging_config

__all__ = ["API_VERSION", "ServiceError", "ServiceLimits", "create_app", "serve_index", "status_of"]


def __getattr__(name: str) -> Any:
    # the web stack loads only when asked for: other commands start faster without it
    if name in ("create_app", "status_of"):
        import_extra("fastapi", "serve")
        from senseindex.service import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def serve_index(
    index_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    limits: ServiceLimits | None = None,
    model: str | None = None,
    backend: str = "auto",
    max_query_batch: int = 64,
    access_log: bool = True,
    on_ready: Callable[[str], None] | None = None,
    threads: int | None = None,
    device: str = "auto",
    allowed_hosts: Sequence[str] = (),
    log_format: str = "text",
    cors_origins: Sequence[str] = (),
) -> None:
    """Serve an index over HTTP until interrupted (Ctrl+C or SIGTERM).

    The model and the index are loaded once, before the port opens.

    Args:
        index_dir: the index folder.
        host: the address to listen on; the default answers this machine only.
        port: the port; 0 picks a free one (``on_ready`` is told which).
        token: require ``Authorization: Bearer TOKEN`` on every endpoint but ``/health``.
        limits: what one request may ask for.
        model: a copy of the index's model to use instead of the stored folder.
        backend: what runs the model.
        max_query_batch: most query texts of concurrent requests run through the model together.
        access_log: log one line per request to standard error.
        on_ready: called with the service's base URL once it accepts connections.
        threads: CPU threads of the model (process-wide) and of FAISS's work when documents are
            added; None keeps the default. Searches run FAISS on one thread.
        device: where the model runs: ``auto``, ``cpu`` or ``cuda``.
        allowed_hosts: names the Host header may give besides ``host`` and this machine's loopback
            names (``localhost``, ``127.0.0.1``, ``::1``); ``*`` allows any. Any other is answered 400.
        log_format: ``text`` or ``json`` (one object per line).
        cors_origins: web origins whose pages may call the service (CORS; ``*``: any); none by default.

    Raises:
        ServiceError: the address cannot be listened on.
        SettingsError: a bad thread count, or a device that is not there.
        IndexNotFound, SchemaMismatch, IndexCorrupted, ModelMismatch, ModelLoadError: as
            `open_index`.
    """
    # imported here: only the serve command needs the web stack (the 'serve' extra)
    uvicorn = import_extra("uvicorn", "serve")
    import_extra("fastapi", "serve")
    from senseindex.service.app import create_app
    from senseindex.service.protocol import guarded_protocol

    if token is not None and not token.strip():
        raise ServiceError("the token is empty; give a non-empty --token or none")
    if log_format not in LOG_FORMATS:
        raise ServiceError(f"unknown log format {log_format!r}; use one of {', '.join(LOG_FORMATS)}")
    limits = limits or ServiceLimits()
    listener = _listen(host, port)
    try:
        index = open_index(
            index_dir,
            model=model,
            backend=backend,
            max_query_batch=max_query_batch,
            threads=threads,
            device=device,
        )
    except BaseException:
        listener.close()
        raise
    serving = threading.Event()  # the model's loop runs: queries are answered
    # Python hands its interpreter lock to a waiting thread only every 5 ms by default; the model's
    # thread waits for it between layers, so beside a long /embed's encoding a query took seconds
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        app = create_app(
            index,
            token=token,
            limits=limits,
            allowed_hosts=default_allowed_hosts(host, allowed_hosts),
            access_log=access_log,
            cors_origins=cors_origins,
            ready=lambda: serving.is_set() and not server.should_exit,
        )
        level = "info" if access_log else "warning"
        config = uvicorn.Config(
            app,
            http=guarded_protocol(limits.read_timeout, limits.max_connections),
            timeout_keep_alive=limits.keep_alive_timeout,
            log_config=logging_config(log_format, level),
            log_level=level,
            access_log=False,  # the service logs each request itself, with its id
            timeout_graceful_shutdown=30,
        )
        server = uvicorn.Server(config)
        bound_host, bound_port = listener.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        _run_with_model_on_this_thread(
            server,
            listener,
            index,
            lambda: on_ready and on_ready(f"http://{shown}:{bound_port}"),
            serving,
        )
    finally:
        index.close()
        listener.close()


SWITCH_INTERVAL = 0.0005
"""Seconds a thread may hold Python's interpreter lock while another waits for it, in the service."""

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_ANY_ADDRESS = ("", "0.0.0.0", "::")


def default_allowed_hosts(host: str, allowed: Sequence[str] = ()) -> list[str]:
    """The names a served Host header may give: the loopback names, the address listened on, and more.

    Listening on every address (``0.0.0.0``, ``::``), this machine's host name is allowed too; other
    names its clients use (a DNS name, a LAN address) must be given.

    Args:
        host: the address listened on.
        allowed: further names (without ports); ``*`` allows any.

    Returns:
        The names, in lower case.
    """
    names = [*LOOPBACK_NAMES, host, *allowed]
    if host in _ANY_ADDRESS:
        names += [socket.gethostname(), socket.getfqdn()]
    return sorted({name.strip().strip("[]").lower() for name in names if name.strip()})


def _run_with_model_on_this_thread(
    server: Any,
    listener: socket.socket,
    index: SenseIndex,
    announce: Callable[[], object],
    serving: threading.Event,
) -> None:
    """Run the HTTP server on a thread of its own and the model's query work on this (the main) thread.

    Runs until Ctrl+C or SIGTERM; requests in flight are answered before it returns, and a second Ctrl+C stops
    at once.

    Raises:
        ServiceError: the HTTP server failed to start or stopped with an error.
    """
    stopped = threading.Event()
    failure: list[BaseException] = []

    def run_server() -> None:
        try:
            server.run(sockets=[listener])
        except BaseException as error:  # reported on the main thread below (SystemExit included)
            failure.append(error)
        finally:
            stopped.set()

    def request_stop(*_: object) -> None:
        # the first signal lets the server finish what it has taken on; a second one does not wait
        server.force_exit = server.should_exit
        server.should_exit = True

    # Signals arrive on the main thread; handled here, they never interrupt the model mid-batch.
    previous = {number: signal.signal(number, request_stop) for number in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=run_server, name="senseindex-http", daemon=True)
    try:
        thread.start()
        while not server.started and not stopped.wait(0.05):
            pass
        if server.started:
            index.speed_up_queries()  # before the first request, which would wait for it otherwise
            # Everything loaded so far (the model, the libraries, the app) lives as long as the
            # server: kept out of the collector's full passes, which traversed it for 80-380 ms
            # with every thread held, now and then in the middle of a query
            gc.collect()
            gc.freeze()
            announce()
            serving.set()
            index.serve_model(stopped)
        thread.join(timeout=60)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if failure or not server.started:
        reason = failure[0] if failure else None
        detail = f": {type(reason).__name__}: {reason}" if reason and str(reason) else ""
        raise ServiceError(f"the HTTP server stopped with an error{detail}")


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket: bound and accepting into its backlog before the server loop starts.

    A client that connects as soon as the URL is announced waits instead of being refused.
    """
    try:
        family = (
            socket.AF_INET6
            if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
            else socket.AF_INET
        )
    except ValueError:  # a host name
        family = socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio switches Nagle's algorithm off only on sockets that say TCP, and with
    # it on, every answer after a connection's first waited 40 ms for the client's delayed ACK
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as error:
        listener.close()
        raise ServiceError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    listener.set_inheritable(True)
    return listener
