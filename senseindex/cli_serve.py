"""The serve command: an index over HTTP.

CLI-only: the library never imports it.
"""

from __future__ import annotations

import os

import click

from senseindex.cli_options import (
    BACKEND_OPTION,
    DEVICE_OPTION,
    INDEX_OPTION,
    MODEL_OPTION,
    THREADS_OPTION,
    one_line_errors,
)
from senseindex.service import ServiceLimits, serve_index

_DEFAULT_LIMITS = ServiceLimits()


@click.command("serve")
@INDEX_OPTION
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (this machine only)."
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port."
)
@click.option(
    "--token",
    envvar="SENSEINDEX_TOKEN",
    default=None,
    help="Require 'Authorization: Bearer TOKEN' on every endpoint but /health "
    "[env: SENSEINDEX_TOKEN; prefer it, a command line is visible to other users].",
)
@click.option(
    "--max-text-chars",
    type=click.IntRange(1),
    default=_DEFAULT_LIMITS.max_text_characters,
    show_default=True,
    help="Longest query text, and most characters of all texts of one /embed (more: 413).",
)
@click.option(
    "--max-k",
    type=click.IntRange(1, 10_000),
    default=_DEFAULT_LIMITS.max_k,
    show_default=True,
    help="Largest k a search may ask for (larger: 400).",
)
@click.option(
    "--max-batch",
    type=click.IntRange(1),
    default=_DEFAULT_LIMITS.max_batch,
    show_default=True,
    help="Most texts per /embed, documents per POST /documents and ids per filter (more: 413).",
)
@click.option(
    "--max-body-mb",
    type=click.FloatRange(0.001),
    default=_DEFAULT_LIMITS.max_body_bytes / 2**20,
    show_default=True,
    help="Largest request body in MiB, which bounds the documents of one POST /documents (larger: 413).",
)
@click.option(
    "--max-query-batch",
    type=click.IntRange(1, 4096),
    default=64,
    show_default=True,
    help="Most query texts of concurrent requests run through the model together (1: no batching).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="A name clients reach the service by (the Host header, without the port), besides localhost, "
    "127.0.0.1, ::1 and --host; repeatable; '*' allows any. Other Host headers are answered 400, "
    "which keeps web pages from reaching the service through DNS rebinding.",
)
@click.option(
    "--read-timeout",
    type=click.FloatRange(0.01),
    default=_DEFAULT_LIMITS.read_timeout,
    show_default=True,
    help="Seconds a request (headers and body) may take to arrive; later: 408 and the connection closed.",
)
@click.option(
    "--keep-alive-timeout",
    type=click.FloatRange(0.01),
    default=_DEFAULT_LIMITS.keep_alive_timeout,
    show_default=True,
    help="Seconds a connection may stay idle, before its first request or between requests.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    default=_DEFAULT_LIMITS.max_connections,
    show_default=True,
    help="Most connections open at once; beyond it a new one is answered 503 and closed.",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="A web origin (https://app.example) whose pages may call the service from a browser; "
    "repeatable; '*' allows any. None by default.",
)
@MODEL_OPTION
@BACKEND_OPTION
@DEVICE_OPTION
@THREADS_OPTION
@click.option("--quiet", "-q", is_flag=True, help="No access log (one line per request on stderr).")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="The log on stderr: lines of text, or one JSON object per line.",
)
@one_line_errors
def serve_command(
    index_dir: str,
    host: str,
    port: int,
    token: str | None,
    max_text_chars: int,
    max_k: int,
    max_batch: int,
    max_body_mb: float,
    max_query_batch: int,
    allowed_hosts: tuple[str, ...],
    read_timeout: float,
    keep_alive_timeout: float,
    max_connections: int,
    cors_origins: tuple[str, ...],
    model: str | None,
    backend: str,
    device: str,
    threads: int | None,
    quiet: bool,
    log_format: str,
) -> None:
    """Serve an index over HTTP: JSON search, embedding and document endpoints.

    Loads the model and the index once, then answers until Ctrl+C. Endpoints: POST /search/sentences,
    /search/words, /search/documents, /embed, /documents; GET and DELETE /documents/ID; GET
    /senses/WORD, /health, /ready, /info, /metrics, /openapi.json. Errors are JSON with a status and
    a message; every answer carries an X-Request-Id.

    \b
    Example:
      senseindex serve --index sample.idx --port 8000
      curl -s localhost:8000/search/sentences -H 'Content-Type: application/json' \\
           -d '{"text": "a heron in shallow water", "k": 3}'
    """
    limits = ServiceLimits(
        max_text_characters=max_text_chars,
        max_k=max_k,
        max_batch=max_batch,
        max_body_bytes=int(max_body_mb * 2**20),
        read_timeout=read_timeout,
        keep_alive_timeout=keep_alive_timeout,
        max_connections=max_connections,
    )
    if token is None and os.environ.get("SENSEINDEX_TOKEN") is not None:
        # click takes an empty variable for an absent one: a secret that failed to load would serve openly
        raise click.ClickException(
            "SENSEINDEX_TOKEN is set but empty; set it to the token, or unset it to serve without one"
        )
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"Warning: serving on {host} without --token: anyone who can reach it can change the index",
            err=True,
        )

    def announce(url: str) -> None:
        auth = "token required" if token else "no token"
        click.echo(f"Serving {index_dir} at {url} ({auth}); Ctrl+C stops", err=True)

    serve_index(
        index_dir,
        host=host,
        port=port,
        token=token,
        limits=limits,
        model=model,
        backend=backend,
        max_query_batch=max_query_batch,
        access_log=not quiet,
        on_ready=announce,
        threads=threads,
        device=device,
        allowed_hosts=allowed_hosts,
        log_format=log_format,
        cors_origins=cors_origins,
    )
