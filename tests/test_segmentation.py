"""Sentence and word segmentation as the index sees it (through SenseIndex.embed)."""

from __future__ import annotations

TEXT = (
    'Dr. Lee paid 3.5 million U.S. dollars for the farm. "Look at the crane," she said. '
    "Mr. Park didn\u2019t answer!\n\n  A second paragraph, e.g. this one, has one sentence.\n"
)


def test_sentences_respect_abbreviations_decimals_and_quotes(sample_index):
    sentences = sample_index.embed(TEXT)
    assert [s.text for s in sentences] == [
        "Dr. Lee paid 3.5 million U.S. dollars for the farm.",
        '"Look at the crane," she said.',
        "Mr. Park didn\u2019t answer!",
        "A second paragraph, e.g. this one, has one sentence.",
    ]
    for sentence in sentences:
        assert TEXT[sentence.start : sentence.end] == sentence.text


def test_words_have_offsets_lemmas_and_no_punctuation(sample_index):
    sentences = sample_index.embed(TEXT)
    words = [w for s in sentences for w in s.words]
    for word in words:
        assert TEXT[word.start : word.end] == word.form
        assert any(ch.isalnum() for ch in word.form)
    forms = [w.form for w in words]
    assert "3.5" in forms
    assert "didn\u2019t" in forms
    assert '"' not in "".join(forms)
    lemmas = {w.form: w.lemma for w in words}
    assert lemmas["paid"] == "pay"
    assert lemmas["dollars"] == "dollar"
    assert lemmas["Lee"] == "lee"


def test_skip_stopwords_leaves_function_words_out(tmp_path):
    import senseindex

    source = tmp_path / "a.txt"
    source.write_text("The crane and the heron stood in the marsh.", encoding="utf-8")
    full = senseindex.build_index([str(source)], tmp_path / "full")
    lean = senseindex.build_index([str(source)], tmp_path / "lean", skip_stopwords=True)
    assert (full.words, lean.words) == (9, 4)  # crane, heron, stood, marsh
    with senseindex.open_index(tmp_path / "lean") as index:
        assert index.search_word("the [the] word", k=5) == []
        assert [h.form for h in index.search_word("a [crane] flew", k=5)] == ["crane"]
