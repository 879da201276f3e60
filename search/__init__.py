"""senseindex query layer: open an index, search sentences and words in context, embed text."""

from senseindex.search.hits import DocumentHit, EmbeddedSentence, EmbeddedWord, LemmaHit, SentenceHit, WordHit
from senseindex.search.index import SenseIndex, WordQuery, parse_word_query
from senseindex.search.opening import index_info, open_index

__all__ = [
    "DocumentHit",
    "EmbeddedSentence",
    "EmbeddedWord",
    "LemmaHit",
    "SenseIndex",
    "SentenceHit",
    "WordHit",
    "WordQuery",
    "index_info",
    "open_index",
    "parse_word_query",
]
