"""Which word occurrences are function words, kept as a bitmap by rowid for searches that leave them out.

`--any-word` asks for the occurrences nearest to a query word that are not function words; an index
that keeps function words (the default) holds about as many of them as of all other words, and they sit
next to the query word in its context. Leaving them out in the vector search itself (through the same
FAISS ID selector as deleted rows) keeps the hits asked for hits of content words.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from senseindex.indexer.stopwords import STOPWORDS, is_stopword
from senseindex.indexer.text import lemmatize

# The lemmas of the function-word forms: the lemma index finds their occurrences without a scan; the
# forms themselves are then checked (a lemma such as `will` has forms that are not function words).
_FUNCTION_LEMMAS = sorted({lemmatize(form) for form in STOPWORDS})


class FunctionWords:
    """The rowids of a words table's function-word occurrences, read once and extended as rows are added.

    Word rowids only grow (an index never reuses one), so rows read once stay right: a later call reads
    only the rows past the last one seen. Rows deleted since stay marked; searches skip them anyway.
    """

    def __init__(self) -> None:
        self._rows = np.zeros(0, dtype=bool)
        self._last_seen = 0

    def rows(self, connection: sqlite3.Connection) -> np.ndarray:
        """The bitmap of function-word rows under a reader's snapshot.

        Args:
            connection: the reader's connection (its snapshot).

        Returns:
            ``(last rowid + 1,)`` bool, True at a function word's rowid.
        """
        (last,) = connection.execute("select coalesce(max(id), 0) from words").fetchone()
        if last > self._last_seen:
            marks = ",".join("?" * len(_FUNCTION_LEMMAS))
            found = [
                row[0]
                for row in connection.execute(
                    f"select id, form from words where id > ? and lemma in ({marks})",
                    [self._last_seen, *_FUNCTION_LEMMAS],
                )
                if is_stopword(row[1].lower())
            ]
            grown = np.zeros(last + 1, dtype=bool)
            grown[: len(self._rows)] = self._rows
            grown[np.asarray(found, dtype=np.int64)] = True
            self._rows, self._last_seen = grown, last
        return self._rows
