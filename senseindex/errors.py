"""The one error hierarchy of senseindex.

Every error the library raises on purpose derives from `SenseIndexError`, so callers (the CLI,
the HTTP service, user programs) can catch one class and show its message as a one-line error.
"""

from __future__ import annotations


class SenseIndexError(Exception):
    """Base class of every error senseindex raises for bad input, a bad index or a bad model."""


class IndexNotFound(SenseIndexError):
    """The index folder does not exist or does not hold a senseindex index."""


class IndexExists(SenseIndexError):
    """The target folder already holds a finished index and overwriting was not asked for."""


class IndexBusy(SenseIndexError):
    """Another process is writing to the index (one writer at a time; readers are never blocked)."""


class IndexCorrupted(SenseIndexError):
    """The index files cannot be read, or disagree with each other."""


class StorageError(SenseIndexError):
    """The disk or the operating system refused the index's files: a full disk, no permission, I/O errors.

    Nothing says the index is damaged: its committed documents are in place, and the command can run
    again once the cause is fixed.
    """


class DiskFull(StorageError):
    """The disk holding the index is full (or the user's quota is used up)."""


class SchemaMismatch(SenseIndexError):
    """The index was written by a newer (or unknown) version of the on-disk format."""


class ModelLoadError(SenseIndexError):
    """The model folder is missing, is not a BERT-family model, or cannot be loaded."""


class ModelMismatch(SenseIndexError):
    """The model asked for is not the model the index was built with."""


class SourceError(SenseIndexError):
    """A source to index is missing, unreadable, malformed or empty."""


class DocumentNotFound(SourceError):
    """A document id asked for (to delete, say) is not in the index."""


class SettingsError(SenseIndexError):
    """An index setting (layer strategy, pooling, ...) is not valid."""


class QueryError(SenseIndexError):
    """A query is malformed: no marked target word, target not in the sentence, bad ``k``, ..."""


class WordNotFound(QueryError):
    """A word asked about (for its senses, say) does not occur in the index."""


class ServiceError(SenseIndexError):
    """The HTTP service cannot start: the address is taken, the host is unknown, the token is empty."""


class MissingExtra(SenseIndexError):
    """A feature needs an optional extra that is not installed (``pip install 'senseindex[serve]'``)."""
