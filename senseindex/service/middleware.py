"""What every request passes before an endpoint: its id and log line, the Host, the token, the body size.

Each is plain ASGI middleware, so it answers before anything reads or parses the request body.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOG = logging.getLogger("senseindex.service")

REQUEST_ID_HEADER = "X-Request-Id"
_GIVEN_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
TOKEN_REQUIRED = "a valid 'Authorization: Bearer <token>' header is required"


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The service's answer to a refused or failed request: ``{"error": {"status", "message"}}``."""
    body = {"error": {"status": status, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def request_id_of(scope: Scope) -> str:
    """The id given to a request by `RequestContext` (``-`` outside one)."""
    return str(scope.get("state", {}).get("request_id", "-"))


class RequestContext:
    """The outermost layer: a request id, one log line per answer, metrics, and 500s that keep the connection.

    The id is the client's ``X-Request-Id`` when it is a short token of safe characters, else a new
    one; every answer carries it in ``X-Request-Id`` and the log line names it. An error no endpoint
    expected is logged with its traceback and answered 500 in the user's terms (no internal detail),
    and the connection stays open for the client's next request.

    Args:
        app: the application.
        access_log: log one line per answered request.
        observe: called with ``(method, route, status, seconds)`` once a request is answered.
    """

    def __init__(
        self,
        app: ASGIApp,
        access_log: bool = True,
        observe: Callable[[str, str, int, float], None] | None = None,
    ) -> None:
        self.app = app
        self.access_log = access_log
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one connection scope (ASGI)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _GIVEN_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = {"code": 0}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            status["code"] = status["code"] or 499  # the client left (or was cut off) mid-request
        except Exception:
            LOG.exception("request %s failed", request_id, extra={"request_id": request_id})
            if status["code"]:
                raise  # the answer had begun: the connection cannot carry on
            message = (
                "the service failed to answer this request; the server's log has the details "
                f"(request id {request_id})"
            )
            await error_response(500, message)(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            if self.observe is not None:
                self.observe(scope["method"], route_path, status["code"], seconds)
            if self.access_log:
                client = scope.get("client")
                LOG.info(
                    '%s "%s %s" %d %.1f ms id=%s',
                    f"{client[0]}:{client[1]}" if client else "-",
                    scope["method"],
                    scope["path"],
                    status["code"],
                    seconds * 1000,
                    request_id,
                    extra={
                        "request_id": request_id,
                        "client": f"{client[0]}:{client[1]}" if client else None,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status["code"],
                        "duration_ms": round(seconds * 1000, 2),
                    },
                )


def host_name(header: str) -> str:
    """The host of a Host header, without its port or an IPv6 address's brackets, in lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    if header.count(":") == 1:
        return header.partition(":")[0]
    return header


class HostGuard:
    """Answers 400 to a request whose Host header is not an allowed name.

    A web page can otherwise reach a service on this machine through a name it controls that it points
    at 127.0.0.1 (DNS rebinding): the browser sends that name as the Host. A request without a Host
    header (HTTP/1.0) is let through: browsers always send one.

    Args:
        app: the application.
        allowed: host names and addresses (without ports); ``*`` allows any.
    """

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = {host_name(name) for name in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one connection scope (ASGI)."""
        if scope["type"] == "http" and "*" not in self.allowed:
            header = dict(scope.get("headers") or []).get(b"host")
            if header is not None:
                host = host_name(header.decode("latin-1"))
                if host not in self.allowed:
                    shown = host if len(host) <= 100 else host[:100] + "…"
                    message = (
                        f"the Host header names {shown!r}, which this service does not answer to; "
                        "its operator can allow it with --allowed-host"
                    )
                    await error_response(400, message)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def same_token(given: str, token: str) -> bool:
    """Whether a given token is the service's, compared in constant time."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


class TokenGuard:
    """Refuses a request without the bearer token (401) before anything reads its body.

    The endpoints check it again, which also puts the scheme in the OpenAPI description.

    Args:
        app: the application.
        token: the token.
        open_paths: paths served without it.
    """

    def __init__(self, app: ASGIApp, token: str, open_paths: tuple[str, ...]) -> None:
        self.app = app
        self.token = token
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one connection scope (ASGI)."""
        if scope["type"] == "http" and scope["path"] not in self.open_paths and scope["method"] != "OPTIONS":
            header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not same_token(given.strip(), self.token):
                response = error_response(401, TOKEN_REQUIRED, {"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _BodyTooLarge(StarletteHTTPException):
    """Raised while the body streams in; an HTTP exception, so the body parser passes it on."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is over the limit of {max_bytes:,} bytes")


class BodyLimit:
    """Refuses request bodies over a size with 413 before anything parses them.

    The size is judged by their Content-Length or while they stream in.

    Args:
        app: the application.
        max_bytes: the largest body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one connection scope (ASGI)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, f"the request body is over the limit of {self.max_bytes:,} bytes")
        await response(scope, receive, send)
