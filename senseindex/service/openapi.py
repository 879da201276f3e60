"""The service's OpenAPI document: the generated one, with this server's bounds and its real error answers.

FastAPI describes request bodies from their models, but not the limits a server was started with, and it
declares a 422 answer the service never gives (it answers 400). This puts in the bounds of this server
(``k``, text lengths, list sizes), the statuses each operation can answer with the one error schema, and
takes the 422 out.
"""

from __future__ import annotations

from typing import Any

from senseindex.service.limits import ServiceLimits

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "message"],
            "properties": {
                "status": {"type": "integer", "description": "The HTTP status, again."},
                "message": {"type": "string", "description": "What went wrong, in one line."},
            },
        }
    },
}

_MEANING = {
    "400": "Malformed request, or one the index cannot answer (the message says why)",
    "401": "No valid 'Authorization: Bearer <token>' header",
    "404": "No such document or word",
    "408": "The request did not arrive in time",
    "409": "Another process is writing to the index",
    "413": "Over one of the server's limits (text length, list size, body size)",
    "500": "The index or the model failed (the message says what to do)",
    "503": "Starting or stopping, too many connections, or the index's storage failed (read-only, no "
    "permission, an I/O error): ask again later",
    "507": "The server's disk is full: the write was not completed; send it again later",
}


def _statuses(path: str, method: str, token: bool) -> list[str]:
    """The error statuses an operation can answer with."""
    statuses = {"400", "500", "503"}  # 503: any request that reads the index may meet a storage fault
    if token and path not in ("/health", "/ready"):
        statuses.add("401")
    if method in ("post", "put"):
        statuses |= {"408", "413"}
    if path.startswith(("/documents/", "/senses/", "/search/words", "/change")):
        statuses.add("404")
    if path.startswith("/senses/"):
        statuses.add("413")
    if path.startswith("/documents") and method in ("post", "delete"):
        statuses |= {"409", "507"}
    if path == "/ready":
        statuses.add("503")
    return sorted(statuses)


def _bound(schema: dict[str, Any], limits: ServiceLimits) -> None:
    """Put this server's limits into the request models' properties (in place)."""
    properties = schema.get("properties", {})
    if "k" in properties:
        properties["k"].update(minimum=1, maximum=limits.max_k)
    text = properties.get("text")
    if text is not None and text.get("type") == "string":
        # not empty, and not blank either: the service refuses a text of spaces
        text.update(minLength=1, maxLength=limits.max_text_characters, pattern=r"\S")
    if schema.get("title") == "DocumentIn":
        properties["id"].update(minLength=1, pattern=r"\S")
        for bound in ("minLength", "maxLength", "pattern"):  # bounded by the body size; blank ones are stored
            text.pop(bound, None)
    for name in ("texts", "documents", "doc_ids", "words"):
        listed = properties.get(name)
        if listed is None:
            continue
        target = next(
            (option for option in listed.get("anyOf", [listed]) if option.get("type") == "array"), None
        )
        if target is not None:
            target["maxItems"] = limits.max_batch
    if schema.get("title") == "Embed":
        properties["texts"]["items"].update(maxLength=limits.max_text_characters)
    if schema.get("title") == "Change":
        listed = properties["words"]
        for option in listed.get("anyOf", [listed]):
            if option.get("type") == "array":
                option["items"].update(minLength=1, maxLength=limits.max_text_characters)


def service_openapi(generated: dict[str, Any], limits: ServiceLimits, token: bool) -> dict[str, Any]:
    """The OpenAPI document of a server, from the one FastAPI generated.

    Args:
        generated: ``app.openapi()``; changed in place.
        limits: the server's limits.
        token: whether the server requires a token.

    Returns:
        The document.
    """
    components = generated.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Error"] = ERROR_SCHEMA
    for schema in components.values():
        _bound(schema, limits)
    metrics = generated.get("paths", {}).get("/metrics", {}).get("get")
    if metrics is not None:
        text = {"text/plain": {"schema": {"type": "string"}}}
        metrics["responses"]["200"] = {"description": "Prometheus text format", "content": text}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in generated.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in _statuses(path, method, token):
                responses[status] = {"description": _MEANING[status], "content": error}
    return generated
