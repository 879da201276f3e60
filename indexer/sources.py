"""Reading documents from sources: files, folders of files, JSONL files and standard input."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from senseindex.errors import SourceError
from senseindex.indexer.validation import document_id_problem, metadata_problem, text_problem

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl",)
STDIN = "-"


@dataclass(frozen=True)
class Document:
    """A document to index.

    Attributes:
        doc_id: its identity in the index: the JSONL ``id`` field, else the file's path relative to
            the folder given as source (its name for a file given directly), ``FILE:LINE`` for a
            JSONL line without ``id``, ``stdin`` for standard input.
        text: the full text.
        source: where it was read from (empty for a document handed over in memory).
        metadata: other JSONL fields.
        size: bytes of the source it took, for progress reporting.
        replaces: it replaces a stored document with the same id (set when adding to an index).
    """

    doc_id: str
    text: str
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    size: int = 0
    replaces: bool = False

    @property
    def content_hash(self) -> str:
        """SHA-256 of the text and metadata, to tell a changed document from an unchanged one."""
        digest = hashlib.sha256(self.text.encode("utf-8"))
        digest.update(json.dumps(self.metadata, sort_keys=True).encode("utf-8"))
        return digest.hexdigest()


@dataclass
class SourceScan:
    """What a scan of the sources found besides documents.

    Attributes:
        skipped_files: files in source folders that are not ``.txt``, ``.md`` or ``.jsonl``.
        total_bytes: bytes of all files to read.
        warnings: problems found while reading: bytes that are not UTF-8 (replaced), and with
            ``skip_bad`` binary files, malformed JSONL lines and repeated ids (skipped).
    """

    skipped_files: list[str] = field(default_factory=list)
    total_bytes: int = 0
    warnings: list[str] = field(default_factory=list)


def _files_of(source: str, scan: SourceScan) -> list[tuple[Path, str]]:
    path = Path(source)
    if path.is_dir():
        found = []
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            relative = file.relative_to(path).as_posix()
            if any(part.startswith(".") for part in file.relative_to(path).parts):
                continue  # hidden files and folders (.git, editor backups) are not documents
            if file.suffix.lower() in TEXT_SUFFIXES + JSONL_SUFFIXES:
                found.append((file, relative))
            else:
                scan.skipped_files.append(str(file))
        return found
    if path.is_file():
        return [(path, path.name)]
    raise SourceError(f"source {source!r} does not exist")


def scan_sources(sources: Sequence[str], skip_bad: bool = False) -> tuple[list[tuple[Path, str]], SourceScan]:
    """List the files the sources stand for and check that they read as documents.

    Every file is read once here, so a malformed line stops the work before the model is loaded.

    Args:
        sources: file paths, folder paths, or ``-`` for standard input.
        skip_bad: skip binary files, malformed JSONL lines and repeated ids (each with a warning in
            the scan) instead of raising.

    Returns:
        ``(files, scan)``: the files to read with their document ids, and what was skipped.

    Raises:
        SourceError: a source does not exist, no source was given, or (without ``skip_bad``) a file
            is binary, a JSONL line is malformed or a document id occurs twice.
    """
    if not sources:
        raise SourceError("no source given; pass files, folders or - for standard input")
    scan = SourceScan()
    files: list[tuple[Path, str]] = []
    for source in sources:
        if source == STDIN:
            continue
        for file, doc_id in _files_of(source, scan):
            files.append((file, doc_id))
            scan.total_bytes += file.stat().st_size
    for _ in read_documents(files, False, skip_bad=skip_bad, warnings=[]):
        pass  # reading raises the first problem; the warnings come again when the build reads
    return files, scan


def _decode(data: bytes, where: str, warnings: list[str]) -> str:
    """Text of a file or line: UTF-8, with a byte-order mark dropped.

    Bytes that are not UTF-8 are replaced with U+FFFD and a warning says where.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        warnings.append(
            f"{where} is not valid UTF-8 (first bad byte at {error.start}); "
            "bad bytes were replaced with U+FFFD"
        )
        return data.decode("utf-8-sig", errors="replace")


def _looks_binary(data: bytes) -> bool:
    return b"\x00" in data[:8192]


class _Skip(Exception):
    """A source item to skip under ``skip_bad`` (the message is the warning)."""


def _read_jsonl(file: Path, skip_bad: bool, warnings: list[str]) -> Iterator[Document]:
    try:
        handle = file.open("rb")
    except OSError as error:
        raise SourceError(f"cannot read {_shown_path(file)}: {error.strerror}") from error
    with handle:
        for line_number, raw in enumerate(handle, start=1):
            where = f"{_shown_path(file)}:{line_number}"
            try:
                yield _parse_jsonl_line(raw, file, line_number, where, warnings)
            except _Skip as problem:
                if not skip_bad:
                    raise SourceError(f"{problem} (--skip-bad skips such lines)") from None
                warnings.append(f"skipped {problem}")
            except _Blank:
                continue


class _Blank(Exception):
    """An empty JSONL line."""


def _parse_jsonl_line(raw: bytes, file: Path, line_number: int, where: str, warnings: list[str]) -> Document:
    if b"\x00" in raw:
        raise _Skip(f"{where}: a NUL byte; not a JSON line")
    line = _decode(raw, where, warnings).strip()
    if not line:
        raise _Blank
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise _Skip(f"{where}: not valid JSON ({error.msg})") from None
    except ValueError as error:
        # valid JSON Python will not read, e.g. an integer longer than sys.get_int_max_str_digits()
        raise _Skip(f"{where}: unreadable JSON ({_first_line(str(error))})") from None
    except RecursionError:
        raise _Skip(f"{where}: unreadable JSON (nested too deeply)") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise _Skip(f"{where}: each line must be a JSON object with a 'text' string")
    given_id = record.get("id")
    if given_id is not None and (isinstance(given_id, bool) or not isinstance(given_id, (str, int))):
        raise _Skip(f"{where}: the 'id' must be a string or an integer")
    doc_id = str(given_id) if given_id is not None else f"{_shown_path(file.name)}:{line_number}"
    metadata = {k: v for k, v in record.items() if k not in ("id", "text")}
    problem = (
        document_id_problem(doc_id)
        or text_problem(record["text"], "the 'text'")
        or metadata_problem(metadata)
    )
    if problem:
        raise _Skip(f"{where}: {problem}")
    return Document(doc_id, record["text"], _shown_path(file), metadata, len(raw))


def _shown_path(path: Path | str) -> str:
    """A path in a message: a name that is not UTF-8 shows its bad bytes escaped, never a lone surrogate."""
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


def _first_line(message: str) -> str:
    """The first line of an error message, so a warning or an error stays one line."""
    return message.splitlines()[0] if message else "no detail"


def read_documents(
    files: Sequence[tuple[Path, str]],
    read_stdin: bool,
    stdin: TextIO | None = None,
    skip_bad: bool = False,
    warnings: list[str] | None = None,
) -> Iterator[Document]:
    """Read documents one at a time (a JSONL file is streamed line by line).

    Args:
        files: files and their document ids, from `scan_sources`.
        read_stdin: also read standard input as one plain-text document with id ``stdin``.
        stdin: the stream to read instead of ``sys.stdin``.
        skip_bad: skip binary files, malformed JSONL lines and repeated ids instead of raising.
        warnings: a list that receives one line per problem skipped or repaired.

    Yields:
        Documents, in source order.

    Raises:
        SourceError: an unreadable source; without ``skip_bad`` also a binary file, a malformed JSONL
            line or a document id seen twice.
    """
    warnings = warnings if warnings is not None else []
    seen: set[str] = set()

    def fresh(document: Document) -> bool:
        if document.doc_id in seen:
            problem = f"document id {document.doc_id!r} occurs twice ({document.source})"
            if not skip_bad:
                raise SourceError(f"{problem}; ids must be unique (--skip-bad keeps the first)")
            warnings.append(f"skipped {problem}: kept the first")
            return False
        seen.add(document.doc_id)
        return True

    def binary(where: str) -> bool:
        if not skip_bad:
            raise SourceError(f"{where} looks like a binary file, not text (--skip-bad skips it)")
        warnings.append(f"skipped {where}: a binary file, not text")
        return True

    if read_stdin:
        stream = stdin or sys.stdin
        raw = getattr(stream, "buffer", None)
        data = raw.read() if raw is not None else stream.read().encode("utf-8", "surrogateescape")
        if not (_looks_binary(data) and binary("standard input")):
            document = Document("stdin", _decode(data, "standard input", warnings), STDIN, {}, len(data))
            if fresh(document):
                yield document
    for file, doc_id in files:
        if file.suffix.lower() in JSONL_SUFFIXES:
            for document in _read_jsonl(file, skip_bad, warnings):
                if fresh(document):
                    yield document
            continue
        shown = _shown_path(file)
        try:
            data = file.read_bytes()
        except OSError as error:
            raise SourceError(f"cannot read {shown}: {error.strerror}") from error
        if _looks_binary(data) and binary(shown):
            continue
        problem = document_id_problem(doc_id)
        if problem:
            if not skip_bad:
                raise SourceError(f"{shown}: {problem} (--skip-bad skips such files)")
            warnings.append(f"skipped {shown}: {problem}")
            continue
        document = Document(doc_id, _decode(data, shown, warnings), shown, {}, len(data))
        if fresh(document):
            yield document
