"""What one request to the service may ask for (kept apart from the web stack, which loads slowly)."""

from __future__ import annotations

from dataclasses import dataclass

API_VERSION = "1"
"""Version of the HTTP API: it changes only with a change that breaks clients."""


@dataclass(frozen=True)
class ServiceLimits:
    """What one request may ask for; larger requests are refused (413 or 400), never attempted.

    Attributes:
        max_text_characters: longest query text, and most characters of all texts of one ``/embed``
            (its answer holds a 384-d vector per word: about 150 MB of JSON at 20,000 characters).
        max_k: largest ``k`` a search may ask for.
        max_batch: most texts per ``/embed``, documents per ``POST /documents`` and ids per filter.
        max_body_bytes: largest request body (this bounds the documents of one ``POST /documents``).
        read_timeout: seconds a request (headers and body) may take to arrive, from its first byte;
            later, it is answered 408 and its connection closed.
        keep_alive_timeout: seconds a connection may stay idle (before its first request or between
            requests) before it is closed.
        max_connections: most connections open at once; beyond it a new one is answered 503 and closed.
    """

    max_text_characters: int = 20_000
    max_k: int = 1_000
    max_batch: int = 256
    max_body_bytes: int = 16 * 1024 * 1024
    read_timeout: float = 60.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 1000
