"""What an index accepts, checked at the door the same way for every caller.

The command line (files, JSONL, standard input), the Python API and the HTTP service all store
documents and ask queries through the checks here, so a value that cannot be stored, read back or
filtered on is refused before anything is written, with a one-line error. Reading is the other way
round: `decode_stored_metadata` reads what earlier versions stored without these rules (deeper
nesting, ``NaN``) as well as it can, so a search never fails on it.

The limits are documented in docs/design.md ("Limits").
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

from senseindex.errors import QueryError, SourceError

# A document id: at most this many characters (a file path relative to its source folder, or a JSONL id).
MAX_DOCUMENT_ID_CHARACTERS: Final = 1024
# Metadata: a JSON object nested at most this deep (the object itself is level 1) ...
MAX_METADATA_DEPTH: Final = 32
# ... taking at most this many bytes as compact UTF-8 JSON.
MAX_METADATA_BYTES: Final = 64 * 1024
# A metadata filter: at most this many fields.
MAX_FILTER_FIELDS: Final = 64
# Integers SQLite stores and compares exactly (metadata values and filter values).
INTEGER_RANGE: Final = range(-(2**63), 2**63)

_SCALARS = (str, int, float, bool, type(None))


def unicode_problem(text: str) -> str | None:
    r"""Why a string is not valid Unicode text (it cannot be written as UTF-8), or None.

    A Python string may hold a lone UTF-16 surrogate (``"\ud800"``: from a JSON escape, or a file
    name or command-line argument that is not UTF-8); no file, database or HTTP answer can hold it.

    Args:
        text: the string.

    Returns:
        ``"a lone surrogate U+D800 at character 5"``, or None for valid text.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"a lone surrogate U+{ord(text[error.start]):04X} at character {error.start}"
    return None


def text_problem(text: Any, what: str) -> str | None:
    """Why a value is not usable as text (not a string, or not valid Unicode), or None.

    Args:
        text: the value.
        what: what it is, for the message (``the text of document 'a'``).

    Returns:
        A message for the caller's error, or None.
    """
    if not isinstance(text, str):
        return f"{what} must be a string, not {type(text).__name__}"
    problem = unicode_problem(text)
    if problem:
        return f"{what} is not valid Unicode text ({problem}); send UTF-8 text"
    return None


def check_query_text(text: Any, what: str = "the query text") -> None:
    """Refuse a query text that is not a string of valid Unicode.

    Args:
        text: the value.
        what: what it is, for the message.

    Raises:
        QueryError: not a string, or not valid Unicode (a lone surrogate).
    """
    problem = text_problem(text, what)
    if problem:
        raise QueryError(problem)


def document_id_problem(doc_id: Any) -> str | None:
    """Why a value cannot be a document id, or None.

    An id is a non-empty string of valid Unicode of at most `MAX_DOCUMENT_ID_CHARACTERS` characters.

    Args:
        doc_id: the value.

    Returns:
        A message for the caller's error, or None.
    """
    if not isinstance(doc_id, str) or not doc_id.strip():
        return f"a document id must be a non-empty string, not {shown_value(doc_id)}"
    if len(doc_id) > MAX_DOCUMENT_ID_CHARACTERS:
        return (
            f"the document id {shown_value(doc_id)} has {len(doc_id):,} characters; "
            f"at most {MAX_DOCUMENT_ID_CHARACTERS:,} are allowed"
        )
    problem = unicode_problem(doc_id)
    if problem:
        return f"the document id {shown_value(doc_id)} is not valid Unicode text ({problem}); use UTF-8 ids"
    return None


def checked_delete_ids(doc_ids: Any) -> list[str]:
    """The ids of a delete, each once, in order; refused when no document can have one of them.

    No length limit here: an id stored before the limit can still be deleted.

    Args:
        doc_ids: a sequence of document ids.

    Returns:
        The distinct ids.

    Raises:
        SourceError: no ids, one string instead of a list, or an id that is not a string of valid
            Unicode.
    """
    if isinstance(doc_ids, str):
        raise SourceError(f"give a list of document ids, not one string ({shown_value(doc_ids)})")
    if not doc_ids:
        raise SourceError("no document id given")
    for doc_id in doc_ids:
        if not isinstance(doc_id, str):
            raise SourceError(f"a document id must be a string, not {shown_value(doc_id)}")
        problem = unicode_problem(doc_id)
        if problem:
            raise SourceError(
                f"the document id {shown_value(doc_id)} is not valid Unicode text ({problem}), so no "
                "document has it; nothing was deleted"
            )
    return list(dict.fromkeys(doc_ids))


def not_found_message(unknown: list[str], index_dir: Any) -> str:
    """The message of a delete refused because ids are not in the index."""
    more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
    return (
        f"no document {shown_value(unknown[0])}{more} in {index_dir}; nothing was deleted "
        "(--missing-ok passes over ids that are not there)"
    )


def metadata_problem(metadata: Any) -> str | None:
    """Why a value cannot be stored as a document's metadata, or None.

    Metadata is a JSON object that reads back as it was given: string keys; values that are
    strings (valid Unicode), finite numbers (integers within 64 bits), booleans, null, lists and
    objects; at most `MAX_METADATA_DEPTH` levels deep and `MAX_METADATA_BYTES` bytes as compact
    UTF-8 JSON. Checked without recursion, so any depth is refused, never a crash.

    Args:
        metadata: the value.

    Returns:
        A message (naming the place of the first problem, such as ``$.tags[3]``), or None.
    """
    if not isinstance(metadata, Mapping):
        return f"metadata must be a JSON object (a mapping), not {type(metadata).__name__}"
    pending: list[tuple[Any, str, int]] = [(metadata, "$", 1)]
    while pending:
        value, where, depth = pending.pop()
        if isinstance(value, Mapping):
            children: Iterable[tuple[Any, str]] = []
            for key in value:
                if not isinstance(key, str):
                    return f"metadata field names must be strings, not {shown_value(key)} (at {where})"
                problem = unicode_problem(key)
                if problem:
                    return f"the metadata field name {shown_value(key)} is not valid Unicode text ({problem})"
            children = [(item, f"{where}.{key}") for key, item in value.items()]
        elif isinstance(value, list):
            children = [(item, f"{where}[{number}]") for number, item in enumerate(value)]
        else:
            problem = _scalar_problem(value)
            if problem:
                return f"the metadata value at {where} {problem}"
            continue
        if depth > MAX_METADATA_DEPTH:
            return f"metadata is nested more than {MAX_METADATA_DEPTH} levels deep (at {_cut(where, 40)})"
        pending.extend((item, place, depth + 1) for item, place in children)
    size = len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        return f"metadata takes {size:,} bytes as JSON; at most {MAX_METADATA_BYTES:,} are allowed"
    return None


def _scalar_problem(value: Any) -> str | None:
    if not isinstance(value, _SCALARS):
        return (
            f"is not JSON: a {type(value).__name__} (JSON holds strings, numbers, booleans, null, lists "
            "and objects)"
        )
    if isinstance(value, float) and not math.isfinite(value):
        return f"is {value}: only finite numbers are allowed (JSON has no NaN or Infinity)"
    if isinstance(value, int) and not isinstance(value, bool) and value not in INTEGER_RANGE:
        return "is an integer beyond 64 bits (SQLite compares no larger ones)"
    if isinstance(value, str):
        problem = unicode_problem(value)
        if problem:
            return f"is not valid Unicode text ({problem})"
    return None


def filter_value_problem(value: Any) -> str | None:
    """Why a metadata filter value cannot match a stored value, or None.

    Args:
        value: one value a filter accepts: a string, a number, a boolean or None.

    Returns:
        A message, or None.
    """
    if not isinstance(value, _SCALARS):
        return f"{shown_value(value)} is not a string, number, boolean or null"
    return _scalar_problem(value)


def decode_stored_metadata(text: str | bytes | None) -> dict[str, Any]:
    """A document's metadata as stored, read whatever earlier versions let in.

    Values nested deeper than `MAX_METADATA_DEPTH` come back as their JSON text (a string); ``NaN``
    and infinities (stored before they were refused) as None; a stored value that is not an object
    under ``"value"``. Decoding never recurses past that depth, however deep the text.

    Args:
        text: the stored JSON text (None or empty: no metadata).

    Returns:
        The metadata.

    Raises:
        ValueError: the text is not JSON at all (the index is damaged).
    """
    if not text:
        return {}
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    try:
        value = _loads(text)
    except RecursionError:
        value = None
    if value is None or not _within_depth(value, MAX_METADATA_DEPTH):
        value = _loads(_flatten_deep(text, MAX_METADATA_DEPTH))
    if isinstance(value, dict):
        return value
    return {} if value is None else {"value": value}


def _loads(text: str) -> Any:
    # NaN, Infinity and numbers too large for a float (1e400) read as None
    return json.loads(text, parse_constant=lambda _: None, parse_float=_finite_or_none)


def _finite_or_none(literal: str) -> float | None:
    number = float(literal)
    return number if math.isfinite(number) else None


def _within_depth(value: Any, limit: int) -> bool:
    """Whether no list or object in ``value`` lies deeper than ``limit`` levels (without recursion)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return False
        pending.extend((child, depth + 1) for child in children)
    return True


def _flatten_deep(text: str, limit: int) -> str:
    """JSON text with every list or object deeper than ``limit`` levels replaced by its text, as a string.

    One pass over the characters, with no recursion, so any depth reads.
    """
    parts: list[str] = []
    depth, kept_from, deep_from = 0, 0, -1
    in_string = escaped = False
    for position, character in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == '"':
                in_string = False
        elif character == '"':
            in_string = True
        elif character in "[{":
            depth += 1
            if depth == limit + 1:
                deep_from = position
        elif character in "]}":
            if depth == limit + 1 and deep_from >= 0:
                parts += [text[kept_from:deep_from], json.dumps(text[deep_from : position + 1])]
                kept_from, deep_from = position + 1, -1
            depth -= 1
    parts.append(text[kept_from:])
    return "".join(parts)


def shown_value(value: Any) -> str:
    """A value in a message: its repr (lone surrogates escaped), cut to a readable length."""
    return _cut(repr(value))


def _cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
