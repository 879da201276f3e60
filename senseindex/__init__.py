"""senseindex: semantic search over contextual (BERT-style) embeddings, at word and sentence level.

This module is the stable Python API; everything a program needs is importable from here::

    import senseindex

    senseindex.build_index(["data/sample"], "sample.idx")
    with senseindex.open_index("sample.idx") as index:
        for hit in index.search_word("I sat on the [bank] of the river", k=5):
            print(hit.score, hit.doc_id, hit.context())
        for hit in index.search_sentences("a heron fishing in shallow water", k=5):
            print(hit.score, hit.text)
"""

from indexer import __version__
from indexer.encoder import DEFAULT_MODEL, EncoderSettings
from indexer.errors import (
    IndexCorrupted,
    IndexExists,
    IndexNotFound,
    ModelLoadError,
    ModelMismatch,
    QueryError,
    SchemaMismatch,
    SenseIndexError,
    SettingsError,
    SourceError,
)
from indexer.pipeline import BuildSummary, build_index
from search import (
    EmbeddedSentence,
    EmbeddedWord,
    LemmaHit,
    SenseIndex,
    SentenceHit,
    WordHit,
    index_info,
    open_index,
)

__all__ = [
    "DEFAULT_MODEL",
    "BuildSummary",
    "EmbeddedSentence",
    "EmbeddedWord",
    "EncoderSettings",
    "IndexCorrupted",
    "IndexExists",
    "IndexNotFound",
    "LemmaHit",
    "ModelLoadError",
    "ModelMismatch",
    "QueryError",
    "SchemaMismatch",
    "SenseIndex",
    "SenseIndexError",
    "SentenceHit",
    "SettingsError",
    "SourceError",
    "WordHit",
    "__version__",
    "build_index",
    "index_info",
    "open_index",
]
