"""Sentence and word segmentation as the index sees it (through SenseIndex.embed)."""

from __future__ import annotations

import pytest

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


def test_sentence_modes_for_pre_split_corpora(tmp_path):
    import json

    import senseindex

    text = "First line is one sentence. It goes on\nSecond line. With dots. Inside\n\nThird paragraph"
    source = tmp_path / "s.jsonl"
    source.write_text(json.dumps({"id": "d", "text": text}) + "\n", encoding="utf-8")
    counts = {}
    for mode in ("auto", "paragraph", "line"):
        summary = senseindex.build_index([str(source)], tmp_path / mode, sentence_splitting=mode)
        counts[mode] = summary.sentences
        with senseindex.open_index(tmp_path / mode) as index:
            assert index.settings["sentence_splitting"] == mode
            # queries and embed() split the way the index was built
            assert len(index.embed(text)) == summary.sentences
    assert counts["paragraph"] == 2
    assert counts["line"] == 3
    # auto: "First … sentence." / "It goes on\nSecond line." / "With dots." / "Inside" / "Third paragraph"
    assert counts["auto"] == 5
    with pytest.raises(senseindex.SettingsError):
        senseindex.build_index([str(source)], tmp_path / "x", sentence_splitting="nltk")


def test_lower_case_continuations_are_not_sentence_starts(sample_index):
    text = "Acme Industry Co. , a subsidiary of Globex, makes parts. It was founded in M. domestica times."
    assert [s.text for s in sample_index.embed(text)] == [
        "Acme Industry Co. , a subsidiary of Globex, makes parts.",
        "It was founded in M. domestica times.",
    ]


def test_rule_splitter_handles_quoted_speech_initials_and_numbered_abbreviations(sample_index):
    text = (
        "\u201cTell him to come. I\u2019ll wait,\u201d she said. So did I. Then we left. "
        "See Fig. 2 and No. 5 on p. 7. No. It was fine. J. S. Bach wrote it. Smith et al. showed it. "
        "It ended\u2026 Then silence. Lost....\u201d And the prince came in."
    )
    assert [s.text for s in sample_index.embed(text)] == [
        "\u201cTell him to come.",
        "I\u2019ll wait,\u201d she said.",
        "So did I.",
        "Then we left.",
        "See Fig. 2 and No. 5 on p. 7.",
        "No.",
        "It was fine.",
        "J. S. Bach wrote it.",
        "Smith et al. showed it.",
        "It ended\u2026",
        "Then silence.",
        "Lost....\u201d",
        "And the prince came in.",
    ]


def test_numbers_and_domains_end_sentences_but_figure_references_do_not(sample_index):
    text = (
        "It rose to 3.5. Then it fell. The effect was small (p < 0.001). We saw more. "
        "See example.com. See also U.S. law. As in Eq. (3) we show. As in Fig. S1 we see."
    )
    assert [s.text for s in sample_index.embed(text)] == [
        "It rose to 3.5.",
        "Then it fell.",
        "The effect was small (p < 0.001).",
        "We saw more.",
        "See example.com.",
        "See also U.S. law.",
        "As in Eq. (3) we show.",
        "As in Fig. S1 we see.",
    ]
