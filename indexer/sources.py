"""Reading documents from sources: files, folders of files, JSONL files and standard input."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from indexer.errors import SourceError

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
        source: where it was read from.
        metadata: other JSONL fields.
        size: bytes of the source it took, for progress reporting.
    """

    doc_id: str
    text: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
    size: int = 0

    @property
    def content_hash(self) -> str:
        """SHA-256 of the text and metadata, to tell a changed document from an unchanged one."""
        digest = hashlib.sha256(self.text.encode("utf-8"))
        digest.update(json.dumps(self.metadata, sort_keys=True).encode("utf-8"))
        return digest.hexdigest()


@dataclass
class SourceScan:
    """What a scan of the sources found besides documents."""

    skipped_files: list[str] = field(default_factory=list)
    total_bytes: int = 0


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


def scan_sources(sources: Sequence[str]) -> tuple[list[tuple[Path, str]], SourceScan]:
    """List the files the sources stand for, without reading them.

    Args:
        sources: file paths, folder paths, or ``-`` for standard input.

    Returns:
        ``(files, scan)``: the files to read with their document ids, and what was skipped.

    Raises:
        SourceError: a source does not exist, or no source was given.
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
    return files, scan


def _decode(data: bytes, where: str) -> str:
    if b"\x00" in data[:8192]:
        raise SourceError(f"{where} looks like a binary file, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SourceError(f"{where} is not UTF-8 text (byte {error.start})") from error


def _read_jsonl(file: Path) -> Iterator[Document]:
    with file.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            where = f"{file}:{line_number}"
            line = _decode(raw, where).strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                raise SourceError(f"{where}: not valid JSON ({error.msg})") from error
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise SourceError(f"{where}: each line must be a JSON object with a 'text' string")
            doc_id = str(record["id"]) if record.get("id") is not None else f"{file.name}:{line_number}"
            metadata = {k: v for k, v in record.items() if k not in ("id", "text")}
            yield Document(doc_id, record["text"], str(file), metadata, len(raw))


def read_documents(
    files: Sequence[tuple[Path, str]], read_stdin: bool, stdin: TextIO | None = None
) -> Iterator[Document]:
    """Read documents one at a time (a JSONL file is streamed line by line).

    Args:
        files: files and their document ids, from :func:`scan_sources`.
        read_stdin: also read standard input as one plain-text document with id ``stdin``.
        stdin: the stream to read instead of ``sys.stdin``.

    Yields:
        Documents, in source order.

    Raises:
        SourceError: an unreadable, binary, non-UTF-8 or malformed source, or a document id seen twice.
    """
    seen: set[str] = set()

    def unique(document: Document) -> Document:
        if document.doc_id in seen:
            raise SourceError(
                f"document id {document.doc_id!r} occurs twice ({document.source}); ids must be unique"
            )
        seen.add(document.doc_id)
        return document

    if read_stdin:
        stream = stdin or sys.stdin
        binary = getattr(stream, "buffer", None)
        data = binary.read() if binary is not None else stream.read().encode("utf-8", "surrogateescape")
        yield unique(Document("stdin", _decode(data, "standard input"), STDIN, {}, len(data)))
    for file, doc_id in files:
        if file.suffix.lower() in JSONL_SUFFIXES:
            for document in _read_jsonl(file):
                yield unique(document)
            continue
        try:
            data = file.read_bytes()
        except OSError as error:
            raise SourceError(f"cannot read {file}: {error.strerror}") from error
        yield unique(Document(doc_id, _decode(data, str(file)), str(file), {}, len(data)))
