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

from senseindex._version import __version__
from senseindex.errors import (
    DiskFull,
    DocumentNotFound,
    IndexBusy,
    IndexCorrupted,
    IndexExists,
    IndexNotFound,
    MissingExtra,
    ModelLoadError,
    ModelMismatch,
    QueryError,
    SchemaMismatch,
    SenseIndexError,
    ServiceError,
    SettingsError,
    SourceError,
    StorageError,
    WordNotFound,
)
from senseindex.indexer.encoder import (
    BACKENDS,
    DEFAULT_MODEL,
    DEVICES,
    PIECE_POOLINGS,
    SENTENCE_POOLINGS,
    EncoderSettings,
)
from senseindex.indexer.pipeline import (
    PASSAGE_MODES,
    BuildProgress,
    BuildSummary,
    ChangePlan,
    CheckReport,
    DeleteSummary,
    add_documents,
    build_index,
    check_index,
    compact_index,
    delete_documents,
    plan_changes,
)
from senseindex.indexer.sources import Document
from senseindex.indexer.text import SENTENCE_MODES
from senseindex.plots import check_plot_path, plot_senses
from senseindex.search import (
    DocumentHit,
    EmbeddedSentence,
    EmbeddedWord,
    LemmaHit,
    SenseIndex,
    SentenceHit,
    WordHit,
    WordQuery,
    index_info,
    open_index,
    parse_word_query,
)
from senseindex.search.change import DEFAULT_MEASURE as DEFAULT_CHANGE_MEASURE
from senseindex.search.change import MEASURES as CHANGE_MEASURES
from senseindex.search.change import ChangeReport, SenseShift, WordChange
from senseindex.search.index import DEFAULT_DOCUMENT_SCORING, DOCUMENT_SCORINGS
from senseindex.search.sense_slices import SensesBy, SenseSlice
from senseindex.search.senses import InducedSense, SenseGroup, WordSenses

__all__ = [
    "BACKENDS",
    "CHANGE_MEASURES",
    "DEFAULT_CHANGE_MEASURE",
    "DEFAULT_DOCUMENT_SCORING",
    "DEFAULT_MODEL",
    "DEVICES",
    "DOCUMENT_SCORINGS",
    "PASSAGE_MODES",
    "PIECE_POOLINGS",
    "SENTENCE_MODES",
    "SENTENCE_POOLINGS",
    "BuildProgress",
    "BuildSummary",
    "ChangePlan",
    "ChangeReport",
    "CheckReport",
    "DeleteSummary",
    "DiskFull",
    "Document",
    "DocumentHit",
    "DocumentNotFound",
    "EmbeddedSentence",
    "EmbeddedWord",
    "EncoderSettings",
    "IndexBusy",
    "IndexCorrupted",
    "IndexExists",
    "IndexNotFound",
    "InducedSense",
    "LemmaHit",
    "MissingExtra",
    "ModelLoadError",
    "ModelMismatch",
    "QueryError",
    "SchemaMismatch",
    "SenseGroup",
    "SenseIndex",
    "SenseIndexError",
    "SenseShift",
    "SenseSlice",
    "SensesBy",
    "SentenceHit",
    "ServiceError",
    "SettingsError",
    "SourceError",
    "StorageError",
    "WordChange",
    "WordHit",
    "WordNotFound",
    "WordQuery",
    "WordSenses",
    "__version__",
    "add_documents",
    "build_index",
    "check_index",
    "check_plot_path",
    "compact_index",
    "delete_documents",
    "index_info",
    "open_index",
    "parse_word_query",
    "plan_changes",
    "plot_senses",
]
