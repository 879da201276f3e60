"""The JSON bodies the HTTP service accepts: strict pydantic models, one per request kind."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from senseindex.search.change import DEFAULT_MEASURE
from senseindex.search.index import DEFAULT_DOCUMENT_SCORING


def _whole_number(value: Any) -> Any:
    """Let a JSON number with no fraction through (``3``, ``3.0``); refuse true/false and strings."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a whole number")
    return value


# JSON Schema counts 3.0 as an integer; "3" and true are not numbers at all
WholeNumber = Annotated[int, Field(strict=False), BeforeValidator(_whole_number)]


class _Body(BaseModel):
    # strict: "k": "3" and "k": true are refused, not taken for 3 and 1
    model_config = ConfigDict(extra="forbid", strict=True)


class SentenceFilters(_Body):
    """Restrict a sentence search to some documents."""

    doc_ids: list[str] | None = Field(default=None, description="Only sentences of these documents.")
    metadata: dict[str, Any] | None = Field(
        default=None,
        description="Only documents whose metadata has these values; a list means any of them: "
        '{"year": [2023, 2024]}.',
    )


class SentenceSearch(_Body):
    """``POST /search/sentences``."""

    text: str = Field(..., description="The query.", examples=["a heron standing in shallow water"])
    k: WholeNumber = Field(10, description="Number of hits.")
    filters: SentenceFilters | None = None


class DocumentSearch(_Body):
    """``POST /search/documents``."""

    text: str = Field(..., description="The query.", examples=["a family day out at the zoo"])
    k: WholeNumber = Field(10, description="Number of documents.")
    scoring: Literal["sentence", "passage", "combined"] = DEFAULT_DOCUMENT_SCORING
    passage_weight: float | None = Field(
        None, ge=0, le=1, description="Passage share of combined scoring, in [0, 1]."
    )


class WordSearch(_Body):
    """``POST /search/words``: the target marked with [brackets] in ``text``, or named by ``target``.

    Or the target is given by its character span ``start``-``end``.
    """

    text: str = Field(..., examples=["I sat on the [bank] of the river"])
    target: str | None = Field(None, description="The target word, when text has no [brackets].")
    start: WholeNumber | None = Field(None, description="Start offset of the target in text.")
    end: WholeNumber | None = Field(None, description="End offset of the target in text (exclusive).")
    k: WholeNumber = 10
    same_word: bool = Field(
        True,
        description="true: occurrences of the same word, ranked by sense; "
        "false: other words used in its sense.",
    )
    exact_form: bool = Field(False, description="Same word only: only the target's surface form.")


class Embed(_Body):
    """``POST /embed``."""

    texts: list[str] = Field(..., examples=[["The bank raised its rates. We walked along the river bank."]])
    granularity: Literal["words", "sentences", "both"] = "both"


class Change(_Body):
    """``POST /change``."""

    by: str = Field(..., min_length=1, max_length=256, description="The metadata field of the slices.")
    from_: str = Field(
        ..., alias="from", min_length=1, max_length=256, description="The earlier slice: a value or a range."
    )
    to: str = Field(..., min_length=1, max_length=256, description="The later slice: a value or a range.")
    words: list[str] | None = Field(
        None, min_length=1, examples=[["bank", "cell"]], description="None: every word (top 20 kept)."
    )
    measure: Literal["apd", "jsd", "centroid"] = DEFAULT_MEASURE
    top: Annotated[WholeNumber, Field(ge=1, le=10_000)] | None = Field(
        None, description="Keep the most changed N words."
    )
    min_count: WholeNumber = Field(5, ge=1, le=1_000_000, description="Occurrences needed in each slice.")


class DocumentIn(_Body):
    """A document to add or replace."""

    id: str = Field(..., description="Its identity: a stored document with this id is replaced.")
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class Documents(_Body):
    """``POST /documents``."""

    documents: list[DocumentIn] = Field(..., min_length=1)
