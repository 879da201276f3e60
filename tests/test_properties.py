"""Property-based: arbitrary Unicode through add and query never raises, and every stored span slices
its document to the stored text (checked by `check`, which compares every sentence and word)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import senseindex

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"

# Pieces that stress segmentation and offsets: combining marks, right-to-left scripts, emoji with
# joiners and skin tones, control and format characters, and very long words.
_AWKWARD = st.sampled_from(
    [
        "e\u0301",  # e + combining acute
        "\u05e9\u05c1\u05dc\u05d5\u05b9\u05dd",  # Hebrew with points
        "\u0645\u0631\u062d\u0628\u0627",  # Arabic
        "\u200f",  # right-to-left mark
        "\U0001f469\u200d\U0001f52c",  # woman scientist (ZWJ sequence)
        "\U0001f44d\U0001f3fd",  # thumbs up, skin tone
        "\x00",
        "\x07",
        "\u2028",
        "\ufeff",
        "\r\n",
        "\t",
        "...",
        "Dr.",
        "U.S.",
        "3.5",
        "\u0915\u094d\u0937",  # Devanagari conjunct
        "\u65e5\u672c\u8a9e",  # Japanese
        "x" * 150,  # longer than WordPiece takes (one [UNK])
        "\u00e9" * 40,
    ]
)
_WORDS = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12),
    st.sampled_from(["bank", "river", "the", "heron", "crane", "sat", "on"]),
    _AWKWARD,
)
_TEXTS = st.lists(
    st.tuples(_WORDS, st.sampled_from([" ", " ", " ", "\n\n", ". ", "! ", "", "\n", "? "])),
    min_size=0,
    max_size=60,
).map(lambda pairs: "".join(word + gap for word, gap in pairs))


@pytest.fixture(scope="module")
def live_index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("props")
    senseindex.build_index(
        [str(SAMPLE / "river_walk.md")], folder / "idx", senseindex.EncoderSettings(backend="torch")
    )
    return folder


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=_TEXTS, number=st.integers(0, 3))
def test_any_text_is_stored_with_exact_spans_and_queried_without_error(live_index, text, number):
    """Four document ids in turn: most examples replace an earlier document, some add one."""
    source = live_index / "doc.jsonl"
    source.write_text(
        json.dumps({"id": f"doc{number}", "text": text, "note": text[:20]}) + "\n", encoding="utf-8"
    )
    summary = senseindex.add_documents([str(source)], live_index / "idx", backend="torch")
    assert summary.documents + summary.unchanged + summary.empty_documents == 1
    report = senseindex.check_index(live_index / "idx")
    assert report.ok, report.problems
    with senseindex.open_index(live_index / "idx", backend="torch") as index:
        query = text if text.strip() else "empty"  # a blank query is a QueryError by design
        index.search_sentences(query, k=3)
        index.search_documents(query, k=2)
        for sentence in index.embed(text)[:2]:
            assert text[sentence.start : sentence.end] == sentence.text
            for word in sentence.words[:2]:
                assert text[word.start : word.end] == word.form
                if sentence.text.casefold().count(word.form.casefold()) > 1:
                    continue  # a target names its first occurrence, which may be another word
                if not word.pieces:  # the tokenizer dropped it (control characters): not indexed
                    with pytest.raises(senseindex.QueryError, match="gives no token"):
                        index.search_word(sentence.text, target=word.form, k=3)
                    continue
                hits = index.search_word(sentence.text, target=word.form, k=3)
                for hit in hits:
                    assert (
                        hit.sentence[hit.start - hit.sentence_start : hit.end - hit.sentence_start]
                        == hit.form
                    )
                index.search_similar_words(sentence.text, target=word.form, k=3)
