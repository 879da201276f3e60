"""The HTTP JSON service: a FastAPI application over one opened index.

Threads and state: the event loop only parses requests and writes answers. Every query runs in a
worker thread; the index's `QueryBatcher` merges the query texts of
concurrent requests into shared forward passes. Writes run one at a time in their own thread, with
the model's own copy of the work, so queries and ``GET /health`` keep answering during a long
``POST /documents``; queries see a write's documents only once it has completed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Match
from starlette.types import Scope

from senseindex._version import __version__
from senseindex.errors import (
    DiskFull,
    DocumentNotFound,
    IndexBusy,
    ModelLoadError,
    QueryError,
    SenseIndexError,
    SettingsError,
    SourceError,
    StorageError,
    WordNotFound,
)
from senseindex.search import SenseIndex
from senseindex.search.hits import EmbeddedSentence
from senseindex.service.bodies import (
    Change,
    Documents,
    DocumentSearch,
    Embed,
    SentenceFilters,
    SentenceSearch,
    WordSearch,
)
from senseindex.service.limits import API_VERSION, ServiceLimits
from senseindex.service.metrics import ServiceMetrics
from senseindex.service.middleware import (
    REQUEST_ID_HEADER,
    TOKEN_REQUIRED,
    BodyLimit,
    HostGuard,
    RequestContext,
    TokenGuard,
    error_response,
    same_token,
)
from senseindex.service.openapi import service_openapi

_Result = TypeVar("_Result")
OPEN_PATHS = ("/health", "/ready")
"""Paths served without the token."""
_BEARER = HTTPBearer(auto_error=False, description="The token given to senseindex serve --token.")


class Refused(Exception):
    """A request the service refuses: answered with a status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_STATUS_OF_ERROR: list[tuple[type[SenseIndexError], int]] = [
    (DocumentNotFound, 404),
    (WordNotFound, 404),
    (QueryError, 400),
    (SourceError, 400),
    (SettingsError, 400),
    (ModelLoadError, 500),
    (IndexBusy, 409),
    (DiskFull, 507),  # Insufficient Storage: the server's disk, not the request, is at fault
    (StorageError, 503),  # refused or failing storage: the request may succeed once it is fixed
]


def status_of(error: SenseIndexError) -> int:
    """The HTTP status that answers a library error (500: the index or the model is at fault)."""
    return next((status for kind, status in _STATUS_OF_ERROR if isinstance(error, kind)), 500)


def storage_message(error: StorageError, method: str, detail: str) -> str:
    """What a client is told of a storage fault: what failed, what was kept, what to do; then the cause.

    Args:
        error: the fault.
        method: the request's HTTP method (a GET only read the index).
        detail: the library's message, with the index folder's path taken out.

    Returns:
        One line.
    """
    if method in ("GET", "HEAD"):
        return f"the server cannot read the index just now; ask again once its storage is fixed ({detail})"
    fault = "the server's disk is full" if isinstance(error, DiskFull) else "the server's storage failed"
    return (
        f"{fault}, so the request was not completed; documents stored before it are kept: send it again "
        f"once that is fixed ({detail})"
    )


# ------------------------------------------------------------------------------------- the application


def create_app(
    index: SenseIndex,
    token: str | None = None,
    limits: ServiceLimits | None = None,
    allowed_hosts: Sequence[str] = ("*",),
    access_log: bool = False,
    cors_origins: Sequence[str] = (),
    ready: Callable[[], bool] | None = None,
) -> FastAPI:
    """The service for an opened index.

    Args:
        index: the index to serve (the caller opens and closes it).
        token: when set, every endpoint but ``GET /health`` requires ``Authorization: Bearer TOKEN``.
        limits: what one request may ask for.
        allowed_hosts: the names the Host header may give (without ports); ``*`` allows any.
        access_log: log one line per answered request (logger ``senseindex.service``).
        cors_origins: web origins whose pages may call the service (``*``: any); none by default.
        ready: tells whether the service can answer queries (``GET /ready``); by default it can.

    Returns:
        The ASGI application.
    """
    limits = limits or ServiceLimits()
    app = FastAPI(
        title="senseindex",
        version=__version__,
        summary="Word-sense and sentence search over contextual embeddings.",
        description=f"HTTP API version {API_VERSION}. Errors are JSON: "
        '`{"error": {"status": 400, "message": "..."}}`.',
        docs_url=None,  # the interactive page loads scripts from the internet; serve the schema only
        redoc_url=None,
        openapi_url=None,
    )
    writing = {"count": 0}
    metrics = ServiceMetrics(index.query_batching, lambda: writing["count"])
    # the last added runs first: the request id, the Host, CORS, the token, then the body size
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if token is not None:  # no body is read for a request without it
        app.add_middleware(TokenGuard, token=token, open_paths=OPEN_PATHS)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "HEAD", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER],
            max_age=600,
        )
    app.add_middleware(HostGuard, allowed=allowed_hosts)
    app.add_middleware(RequestContext, access_log=access_log, observe=metrics.observe)
    hide_path = _path_hider(index.path)
    queries = anyio.CapacityLimiter(32)
    writes = anyio.CapacityLimiter(1)

    def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        if token is None:
            return
        if credentials is None or not same_token(credentials.credentials, token):
            raise Refused(401, TOKEN_REQUIRED)

    guarded = [Depends(require_token)]

    async def run_query(function: Callable[[], _Result]) -> _Result:
        def refreshed_then_run() -> _Result:
            index.refresh_if_changed()  # another process may have added documents
            return function()

        return await anyio.to_thread.run_sync(refreshed_then_run, limiter=queries)

    def check_text(text: str, what: str = "text") -> None:
        if len(text) > limits.max_text_characters:
            raise Refused(
                413, f"the {what} has {len(text):,} characters; the limit is {limits.max_text_characters:,}"
            )

    def check_k(k: int) -> None:
        if not 1 <= k <= limits.max_k:
            raise Refused(400, f"k must be from 1 to {limits.max_k}, not {k}")

    def check_batch(count: int, what: str) -> None:
        if count > limits.max_batch:
            raise Refused(413, f"{count} {what} in one request; the limit is {limits.max_batch}")

    @app.exception_handler(Refused)
    async def _service_error(request: Request, error: Refused) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return error_response(error.status, error.message, headers)

    @app.exception_handler(SenseIndexError)
    async def _library_error(request: Request, error: SenseIndexError) -> JSONResponse:
        message = hide_path(str(error))
        if isinstance(error, StorageError):
            message = storage_message(error, request.method, message)
        return error_response(status_of(error), message)

    @app.exception_handler(RequestValidationError)
    async def _bad_body(request: Request, error: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if request.method in ("POST", "PUT") and not content_type.startswith("application/json"):
            # (not parsed without it: a browser page cannot send JSON elsewhere without asking first)
            return error_response(
                400, "send the request body as JSON, with the header 'Content-Type: application/json'"
            )
        return error_response(400, _describe_validation_error(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(error, "headers", None) or {})
        if error.status_code == 405:  # every method of the path, not only the first route's
            headers["Allow"] = ", ".join(_methods_of(app, request.scope))
        return error_response(error.status_code, str(error.detail), headers or None)

    @app.api_route("/health", methods=["GET", "HEAD"], summary="Is the service up (no token needed)")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "writing": writing["count"] > 0}

    @app.get("/ready", summary="Can it answer queries: index open, model loaded (no token needed)")
    async def is_ready() -> JSONResponse:
        if ready is not None and not ready():
            return error_response(503, "the service is not ready: starting or stopping")
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", dependencies=guarded, summary="Requests, latencies and model runs (Prometheus)")
    async def metrics_page() -> Response:
        content, media_type = metrics.exposition()
        return Response(content, media_type=media_type)

    @app.get("/info", dependencies=guarded, summary="Index settings, counts and model")
    async def info() -> dict[str, Any]:
        described = await run_query(index.info)
        if token is None:  # where the index lies is told only to those who hold the token
            described.pop("path", None)
            described = _walk_strings(described, hide_path)
        return {
            "api_version": API_VERSION,
            "senseindex_version": __version__,
            "backend": index.backend,
            "device": index.device,
            "threads": index.threads,
            "model": described["settings"].get("model"),
            "limits": asdict(limits),
            "query_batching": index.query_batching(),
            **described,
        }

    described: dict[str, Any] = {}

    @app.get("/openapi.json", dependencies=guarded, include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        if not described:
            described.update(service_openapi(app.openapi(), limits, token is not None))
        return described

    async def answer_hits(text: str, k: int, search: Callable[[], list[Any]]) -> dict[str, Any]:
        """A search's answer: the text and k checked, the search run off the event loop."""
        check_text(text)
        check_k(k)
        hits = await run_query(search)
        return {"hits": [hit.to_dict() for hit in hits]}

    @app.post("/search/sentences", dependencies=guarded, summary="Sentences similar to a text")
    async def search_sentences(body: SentenceSearch) -> dict[str, Any]:
        filters = body.filters or SentenceFilters()
        check_batch(len(filters.doc_ids or []), "document ids in the filter")
        return await answer_hits(
            body.text,
            body.k,
            lambda: index.search_sentences(body.text, body.k, filters.doc_ids, filters.metadata),
        )

    @app.post("/search/documents", dependencies=guarded, summary="Documents that match a text")
    async def search_documents(body: DocumentSearch) -> dict[str, Any]:
        return await answer_hits(
            body.text,
            body.k,
            lambda: index.search_documents(body.text, body.k, body.scoring, body.passage_weight),
        )

    @app.post("/search/words", dependencies=guarded, summary="A word's occurrences by sense, or other words")
    async def search_words(body: WordSearch) -> dict[str, Any]:
        if (body.start is None) != (body.end is None):
            raise Refused(400, "give both start and end of the target, or neither")
        if body.start is not None and "[" in body.text and "]" in body.text:
            raise Refused(400, "give the target by [brackets] in the text or by start and end, not both")
        if body.exact_form and not body.same_word:
            raise Refused(400, "exact_form applies to same-word searches only")
        span = (body.start, body.end) if body.start is not None and body.end is not None else None
        if body.same_word:
            return await answer_hits(
                body.text,
                body.k,
                lambda: index.search_word(body.text, body.target, body.k, body.exact_form, span),
            )
        return await answer_hits(
            body.text, body.k, lambda: index.search_similar_words(body.text, body.target, body.k, span)
        )

    @app.get("/senses/{word}", dependencies=guarded, summary="The senses a word is used in (induced)")
    async def senses(
        word: str,
        senses: Annotated[int | None, Query(ge=1, description="Force this many senses.")] = None,
        examples: Annotated[int, Query(ge=0, le=50, description="Typical occurrences per sense.")] = 5,
        related: Annotated[int, Query(ge=0, le=50, description="Related words per sense.")] = 8,
        assignments: bool = False,
        by: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=256,
                description="A metadata field: the share of each sense per value.",
            ),
        ] = None,
        bins: Annotated[
            int | None, Query(ge=1, le=100, description="With `by`: equal-width bins of a numeric field.")
        ] = None,
        slices: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=2000,
                description="With `by`: numeric ranges, both ends included, e.g. `1810-1860,1960-2010`.",
            ),
        ] = None,
    ) -> dict[str, Any]:
        check_text(word, "word")  # the number of senses is checked by induce_senses (400 as well)
        for name, value in (("examples", examples), ("related", related)):
            if not 0 <= value <= 50:
                raise Refused(400, f"{name} must be from 0 to 50, not {value}")
        found = await run_query(
            lambda: index.induce_senses(word, senses, examples, related, by=by, bins=bins, slices=slices)
        )
        return found.to_dict(assignments=assignments)

    @app.post("/change", dependencies=guarded, summary="Words ranked by how much their use changed")
    async def change(body: Change) -> dict[str, Any]:
        if body.words is not None:
            check_batch(len(body.words), "words")
        for word in body.words or ():
            check_text(word, "word")
        report = await run_query(
            lambda: index.change(
                body.by, body.from_, body.to, body.words, body.measure, body.top, body.min_count
            )
        )
        return report.to_dict()

    @app.post("/embed", dependencies=guarded, summary="Word and sentence vectors of texts")
    async def embed(body: Embed) -> Response:
        check_batch(len(body.texts), "texts")
        total = sum(len(text) for text in body.texts)
        if total > limits.max_text_characters:
            raise Refused(
                413,
                f"the texts to embed have {total:,} characters; the limit is {limits.max_text_characters:,}",
            )
        embedded = await run_query(lambda: index.embed_texts(body.texts))
        # ~36 MB of JSON at the limit: written off the event loop, a sentence at a time, so that
        # other requests are answered meanwhile (one call of the JSON encoder holds every thread),
        # and sent in those pieces: joining them (one copy of 36 MB) held every thread for 40-80 ms
        pieces = await anyio.to_thread.run_sync(
            _embed_json, embedded, body.granularity, index.give_way_to_queries, limiter=queries
        )
        return StreamingResponse(_sent_in_turn(pieces), media_type="application/json")

    @app.post("/documents", dependencies=guarded, summary="Add documents, or replace those with the same id")
    async def add_documents(body: Documents) -> dict[str, Any]:
        check_batch(len(body.documents), "documents")
        given = [document.model_dump() for document in body.documents]
        writing["count"] += 1
        try:
            summary = await anyio.to_thread.run_sync(index.add_documents, given, limiter=writes)
        finally:
            writing["count"] -= 1
        return summary.to_dict()

    @app.get("/documents/{doc_id:path}", dependencies=guarded, summary="A stored document")
    async def get_document(doc_id: str) -> dict[str, Any]:
        return await run_query(lambda: index.get_document(doc_id))

    @app.delete("/documents/{doc_id:path}", dependencies=guarded, summary="Delete a document")
    async def delete_document(
        doc_id: str,
        missing_ok: Annotated[
            bool,
            Query(
                description="true: a document that is not in the index is passed over (answered 200, "
                "listed under `missing`) instead of answered 404, so a retried delete succeeds."
            ),
        ] = False,
    ) -> dict[str, Any]:
        writing["count"] += 1
        try:
            summary = await anyio.to_thread.run_sync(
                index.delete_documents, [doc_id], missing_ok, limiter=writes
            )
        finally:
            writing["count"] -= 1
        return summary.to_dict()

    return app


def _embed_json(
    embedded: list[list[EmbeddedSentence]], granularity: str, give_way: Callable[[], None]
) -> list[bytes]:
    """The answer of ``/embed`` as JSON, encoded a word at a time, in pieces of about a sentence.

    The JSON encoder holds the interpreter lock for a whole call: a word's vector at a time is short
    enough that the threads answering queries take turns with it, and ``give_way`` is called after each
    sentence (queries in progress go first).

    Returns:
        Pieces whose concatenation is the JSON answer.
    """
    pieces = [b'{"granularity":' + _dumps(granularity) + b',"texts":[']
    for number, sentences in enumerate(embedded):
        opening = b'{"sentences":[' if number == 0 else b',{"sentences":['
        for position, sentence in enumerate(sentences):
            pieces.append((opening if position == 0 else b",") + _sentence_json(sentence, granularity))
            give_way()
        pieces.append(b"]}" if sentences else opening + b"]}")
    pieces.append(b"]}")
    return pieces


async def _sent_in_turn(pieces: list[bytes]) -> AsyncIterator[bytes]:
    """The pieces of an answer, one at a time (the event loop serves other requests in between)."""
    for piece in pieces:
        yield piece


def _sentence_json(sentence: EmbeddedSentence, granularity: str) -> bytes:
    fields = {"text": sentence.text, "start": sentence.start, "end": sentence.end}
    head = _dumps(fields)[:-1]  # without its closing brace: more fields follow
    if granularity != "words":
        head += b',"vector":' + _dumps(sentence.vector.tolist())
    if granularity == "sentences":
        return head + b"}"
    words = [_dumps(word.to_dict()) for word in sentence.words]
    return head + b',"words":[' + b",".join(words) + b"]}"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _describe_validation_error(error: RequestValidationError) -> str:
    """One line for a malformed request body: where and what."""
    problems = error.errors()
    if not problems:
        return "malformed request"
    first = problems[0]
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'decode error')})"
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


def _methods_of(app: FastAPI, scope: Scope) -> list[str]:
    """The methods the routes of a request's path answer."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**scope, "method": "GET"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _path_hider(folder: Path) -> Callable[[str], str]:
    """A function that takes the index folder's path out of a message (files in it keep their names)."""
    spellings = sorted({str(folder), str(folder.resolve()), str(folder.absolute())}, key=len, reverse=True)

    def hide(message: str) -> str:
        for spelling in spellings:
            message = message.replace(spelling + "/", "").replace(spelling, "the index folder")
        return message

    return hide


def _walk_strings(value: Any, change: Callable[[str], str]) -> Any:
    """A JSON-like value with ``change`` applied to every string in it."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {key: _walk_strings(item, change) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_walk_strings(item, change) for item in value]
    return value
