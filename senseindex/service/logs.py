"""The service's log on standard error: lines of text, or one JSON object per line (``--log-format json``)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

LOG_FORMATS = ("text", "json")

# what RequestContext puts on its records (logging's `extra`), copied into a JSON line
_FIELDS = ("request_id", "client", "method", "path", "status", "duration_ms")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``, and a request's fields.

    A request's line adds ``request_id``, ``client``, ``method``, ``path``, ``status`` and
    ``duration_ms``; an error with a traceback adds it whole as ``exception`` (one line still).
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _FIELDS:
            if hasattr(record, field):
                line[field] = getattr(record, field)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """The `logging.config.dictConfig` of the service's loggers and uvicorn's, all to standard error.

    Args:
        log_format: ``text`` or ``json``.
        level: the lowest level logged (``info``, ``warning``...).

    Returns:
        The configuration (uvicorn applies it: ``Config(log_config=...)``).
    """
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"}
        if log_format == "json"
        else {"format": "%(levelname)s: %(message)s"}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "service", "stream": "ext://sys.stderr"}
    logger = {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"service": formatter},
        "handlers": {"stderr": handler},
        "loggers": {
            "uvicorn": logger,
            "uvicorn.error": {"level": level.upper()},
            "senseindex.service": logger,
        },
    }
