"""senseindex's HTTP JSON service: ``senseindex serve`` and the application behind it."""

from __future__ import annotations

import ipaddress
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from indexer.errors import SenseIndexError
from search import SenseIndex, open_index
from senseindex.service.app import API_VERSION, ServiceLimits, create_app, status_of

__all__ = ["API_VERSION", "ServiceError", "ServiceLimits", "create_app", "serve_index", "status_of"]


class ServiceError(SenseIndexError):
    """The service cannot start: the address is taken, the host is unknown, ..."""


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

    Raises:
        ServiceError: the address cannot be listened on.
        IndexNotFound, SchemaMismatch, IndexCorrupted, ModelMismatch, ModelLoadError: as
            :func:`~search.open_index`.
    """
    import uvicorn  # imported here: only the serve command needs the server

    if token is not None and not token.strip():
        raise ServiceError("the token is empty; give a non-empty --token or none")
    listener = _listen(host, port)
    try:
        index = open_index(index_dir, model=model, backend=backend, max_query_batch=max_query_batch)
    except BaseException:
        listener.close()
        raise
    try:
        app = create_app(index, token=token, limits=limits)
        config = uvicorn.Config(
            app,
            log_level="info" if access_log else "warning",
            access_log=access_log,
            timeout_graceful_shutdown=30,
        )
        server = uvicorn.Server(config)
        bound_host, bound_port = listener.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        _run_with_model_on_this_thread(
            server, listener, index, lambda: on_ready and on_ready(f"http://{shown}:{bound_port}")
        )
    finally:
        index.close()
        listener.close()


def _run_with_model_on_this_thread(
    server: Any, listener: socket.socket, index: SenseIndex, announce: Callable[[], object]
) -> None:
    """Run the HTTP server on a thread of its own and the model's query work on this (the main)
    thread, until Ctrl+C or SIGTERM; in-flight requests are answered before it returns."""
    stopped = threading.Event()

    def run_server() -> None:
        try:
            server.run(sockets=[listener])
        finally:
            stopped.set()

    def request_stop(*_: object) -> None:
        server.should_exit = True

    previous = signal.signal(signal.SIGTERM, request_stop)
    thread = threading.Thread(target=run_server, name="senseindex-http", daemon=True)
    thread.start()
    announce()
    try:
        while not stopped.is_set():
            try:
                index.serve_model(stopped)
            except KeyboardInterrupt:  # the server finishes what it has taken on, then stops
                request_stop()
    finally:
        signal.signal(signal.SIGTERM, previous)
        thread.join(timeout=60)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket: bound and accepting into its backlog before the server loop starts, so a
    client that connects as soon as the URL is announced waits instead of being refused."""
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
