"""The service's HTTP/1.1 connections: uvicorn's h11 protocol with timeouts and a connection limit.

uvicorn closes a keep-alive connection that stays idle after an answer, but it waits forever for a
connection that never sends a request, for the rest of a request's headers and for the rest of its
body, and it takes every connection offered. This protocol adds what a service facing clients it does
not control needs:

- a connection that sends nothing is closed after the keep-alive timeout, as one idle after an answer;
- a request (headers and body) must arrive whole within the read timeout of its first byte, or it is
  answered 408 and the connection closed;
- beyond the connection limit, a new connection is answered 503 and closed at once.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def raw_error(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer with the service's JSON error body that closes the connection.

    Args:
        status: the status code.
        reason: its reason phrase.
        message: the one-line message.

    Returns:
        The bytes to write to the connection.
    """
    body = json.dumps({"error": {"status": status, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a read timeout, an idle timeout from the start and a connection limit.

    Made with its settings by `guarded_protocol`; uvicorn builds one per connection.
    """

    read_timeout: float = 60.0
    max_connections: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """See the base class."""
        super().connection_made(transport)  # type: ignore[arg-type]
        if len(self.connections) > self.max_connections:
            message = f"the service has its limit of {self.max_connections} connections open; try again soon"
            self.transport.write(raw_error(503, "Service Unavailable", message))
            self.transport.close()
            return
        # idle from the start: closed unless a request begins within the keep-alive timeout
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def data_received(self, data: bytes) -> None:
        """See the base class."""
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)
        super().data_received(data)
        if not self._reading_a_request():
            self._cancel_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        """See the base class."""
        self._cancel_read_deadline()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        """See the base class."""
        super().on_response_complete()
        if not self._reading_a_request():
            self._cancel_read_deadline()

    def _reading_a_request(self) -> bool:
        """Whether part of a request has arrived and the rest has not."""
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            return True
        if state is h11.IDLE:  # the start of a request may wait in h11's buffer
            return bool(self.conn.trailing_data[0])
        return False

    def _cancel_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            message = f"the request did not arrive whole within {self.read_timeout:g} s"
            self.transport.write(raw_error(408, "Request Timeout", message))
        if cycle is not None and not cycle.response_complete:
            # the application sees the client gone: its reads end, its answer is dropped
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


def guarded_protocol(read_timeout: float, max_connections: int) -> type[GuardedH11Protocol]:
    """The protocol class to give uvicorn (``Config(http=...)``) with these settings.

    Args:
        read_timeout: seconds a request may take to arrive whole, from its first byte.
        max_connections: most connections open at once.

    Returns:
        A subclass of `GuardedH11Protocol`.
    """
    return type(
        "SenseIndexH11Protocol",
        (GuardedH11Protocol,),
        {"read_timeout": read_timeout, "max_connections": max_connections},
    )
