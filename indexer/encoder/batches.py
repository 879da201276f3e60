"""The encoder's batches and the numpy work around a forward pass.

Windows into batches, pieces to words, layer strategies and normalisation. Imports neither torch nor
transformers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from senseindex.errors import SettingsError
from senseindex.indexer.encoder.settings import LAYER_PATTERN

# How length-sorted windows are cut into batches (see length_batches).
_PADDING_SLACK = 1.05
_PADDING_TOKENS = 3
_TOKENS_PER_ROW = 128


@dataclass(frozen=True)
class EncodedBatch:
    """Vectors of a list of sentences, in input order.

    Attributes:
        sentence_vectors: ``(n_sentences, sentence_dimension)`` float32, L2-normalised.
        word_vectors: ``(n_words_total, word_dimension)`` float32, L2-normalised; the words of
            sentence 0 first, then those of sentence 1, and so on, as given to ``Encoder.encode``.
        word_aligned: ``(n_words_total,)`` bool; False for a word that no WordPiece covered (its vector
            is all zeros and must not be stored).
        piece_counts: ``(n_sentences,)`` int64, WordPiece tokens per sentence (specials excluded).
        sentence_weights: ``(n_sentences,)`` float32: for mean pooling the norm of the sentence's
            summed token vectors, so that ``normalise(sum(w_i * v_i))`` over consecutive sentences is
            the mean of all their tokens (a passage vector pooled from its sentences); 1 otherwise.
    """

    sentence_vectors: np.ndarray
    word_vectors: np.ndarray
    word_aligned: np.ndarray
    piece_counts: np.ndarray
    sentence_weights: np.ndarray


@dataclass(frozen=True)
class PreparedBatch:
    """Sentences tokenised and cut into length-sorted windows, ready for ``Encoder.run``.

    Preparing is the CPU work before the model; keeping it apart lets a caller time or schedule it.

    Attributes:
        n_sentences: number of sentences.
        word_base: ``(n_sentences + 1,)`` int64, index of each sentence's first word in the flat word
            list.
        piece_ids: per sentence, its WordPiece ids.
        piece_word: per sentence, ``(n_pieces,)`` int64, the word each piece pools into (-1: none).
        windows: ``(length, sentence, start, end, owned start, owned end)`` per window, shortest first.
        all_layers: keep every layer's word vectors (see ``Encoder.encode_word_layers``).
    """

    n_sentences: int
    word_base: np.ndarray
    piece_ids: list[list[int]]
    piece_word: list[np.ndarray]
    windows: list[tuple[int, int, int, int, int, int]]
    all_layers: bool = False


def slice_batch(
    encoded: EncodedBatch, first: int, stop: int, first_word: int, stop_word: int
) -> EncodedBatch:
    """The part of a batch's vectors that belongs to some consecutive sentences and their words.

    Args:
        encoded: the vectors of a whole batch.
        first: the first sentence to keep.
        stop: one past the last sentence to keep.
        first_word: the first word of sentence ``first`` in the flat word list.
        stop_word: one past the last word of sentence ``stop - 1``.

    Returns:
        Views of the rows of those sentences and words.
    """
    return EncodedBatch(
        sentence_vectors=encoded.sentence_vectors[first:stop],
        word_vectors=encoded.word_vectors[first_word:stop_word],
        word_aligned=encoded.word_aligned[first_word:stop_word],
        piece_counts=encoded.piece_counts[first:stop],
        sentence_weights=encoded.sentence_weights[first:stop],
    )


def length_batches(
    windows: list[tuple[int, int, int, int, int, int]], batch_size: int
) -> Iterator[list[tuple[int, int, int, int, int, int]]]:
    """Cut length-sorted windows (length first) into batches.

    A batch ends at ``batch_size`` windows, or before a window that would make it

    - mostly padding: longer than ``1.05 x`` the batch's shortest window plus 3 tokens. In the long tail
      of a chunk's sentences, fixed batches of 64 padded 8 % of all tokens; this keeps it under 4 %
      (short sentences differ by a token or two);
    - too big: over ``batch_size x 128`` tokens with padding. A batch of long windows has fewer rows,
      so one forward pass holds bounded memory (64 windows of 256 tokens would hold 100 MB of
      activations per layer) at the same work per token.

    Args:
        windows: as `PreparedBatch.windows`, shortest first.
        batch_size: most windows per batch.

    Returns:
        The batches, in order.
    """
    batch: list[tuple[int, int, int, int, int, int]] = []
    budget = batch_size * _TOKENS_PER_ROW
    for window in windows:
        if batch and (
            len(batch) >= batch_size
            or window[0] > batch[0][0] * _PADDING_SLACK + _PADDING_TOKENS
            or (len(batch) + 1) * window[0] > budget
        ):
            yield batch
            batch = []
        batch.append(window)
    if batch:
        yield batch


def cut_to_tokens(
    batches: Iterator[list[tuple[int, int, int, int, int, int]]], step_tokens: Callable[[], int] | None
) -> Iterator[list[tuple[int, int, int, int, int, int]]]:
    """Batches of windows cut so that each holds at most ``step_tokens()`` tokens, padding included.

    A part has a power of two of windows (or the rest of its batch): the model builds its kernels
    once per shape, and a few row counts keep the shapes few.

    Args:
        batches: from `length_batches`.
        step_tokens: asked before each part is cut; None leaves the batches whole.

    Returns:
        The parts, in order, each at least one window.
    """
    for batch in batches:
        if step_tokens is None:
            yield batch
            continue
        while batch:
            fit = max(1, step_tokens() // batch[-1][0])
            rows = 1 << (fit.bit_length() - 1)
            yield batch[:rows]
            batch = batch[rows:]


def keep_one_piece(piece_word: np.ndarray, pooling: str) -> np.ndarray:
    """For first/last piece pooling: keep only each word's first (or last) piece.

    Args:
        piece_word: ``(n_pieces,)`` int64, the word each piece pools into (-1: none).
        pooling: ``first`` keeps each word's first piece; anything else its last.

    Returns:
        ``(n_pieces,)`` int64: ``piece_word`` with every other piece of a word set to -1.
    """
    kept = np.full_like(piece_word, -1)
    positions = np.flatnonzero(piece_word >= 0)
    if not len(positions):
        return kept
    words = piece_word[positions]
    if pooling == "first":
        _, chosen = np.unique(words, return_index=True)
    else:
        _, reversed_index = np.unique(words[::-1], return_index=True)
        chosen = len(words) - 1 - reversed_index
    kept[positions[chosen]] = words[chosen]
    return kept


def word_of_each_piece(word_spans: Sequence[tuple[int, int]], offsets: np.ndarray) -> np.ndarray:
    """For each piece, the index of the word it belongs to, or -1 (punctuation, symbols).

    A piece belongs to the word that holds its last character: a piece that starts on a symbol the
    word pattern leaves out (``°F`` is one piece for the word ``F``) still reaches its word.

    Args:
        word_spans: ``(start, end)`` of each word, in order, not overlapping.
        offsets: ``(n_pieces, 2)`` int64 piece offsets.

    Returns:
        ``(n_pieces,)`` int64.
    """
    if not len(word_spans) or not len(offsets):
        return np.full(len(offsets), -1, dtype=np.int64)
    spans = np.asarray(word_spans, dtype=np.int64).reshape(-1, 2)
    last_character = offsets[:, 1] - 1
    index = np.searchsorted(spans[:, 0], last_character, side="right") - 1
    safe = np.maximum(index, 0)
    inside = (index >= 0) & (last_character < spans[safe, 1]) & (offsets[:, 1] > offsets[:, 0])
    return np.where(inside, index, -1)


def combine_layers(word_layers: np.ndarray, layers: str) -> np.ndarray:
    """Word vectors of one layer strategy from the per-layer vectors of ``Encoder.encode_word_layers``.

    Pooling over pieces and averaging over layers commute, so this equals what an encoder built with
    that strategy gives.

    Args:
        word_layers: ``(n_words, num_layers + 1, hidden_size)`` float32, not normalised.
        layers: a layer strategy (``last``, ``mean-last-4``, ``concat-last-4``, ``mean-all``,
            ``layer-N``).

    Returns:
        ``(n_words, dimension)`` float32, L2-normalised.

    Raises:
        SettingsError: the strategy is unknown or names a layer the model does not have.
    """
    last = word_layers.shape[1] - 1
    if layers == "last":
        selected = word_layers[:, last]
    elif layers == "mean-last-4":
        selected = word_layers[:, last - 3 :].mean(axis=1)
    elif layers == "concat-last-4":
        selected = word_layers[:, last - 3 :].reshape(len(word_layers), -1)
    elif layers == "mean-all":
        selected = word_layers[:, 1:].mean(axis=1)
    elif LAYER_PATTERN.match(layers) and layers.startswith("layer-") and int(layers[6:]) <= last:
        selected = word_layers[:, int(layers[6:])]
    else:
        raise SettingsError(f"unknown layer strategy {layers!r}")
    return normalise(selected)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; a zero row stays zero, a row with inf or nan becomes zero.

    Args:
        vectors: ``(n, dimension)``, any float dtype.

    Returns:
        ``(n, dimension)`` float32, C-contiguous (a copy unless the input already was float32 and
        contiguous, in which case it is normalised in place).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    # einsum makes one pass over the rows; np.linalg.norm makes several (it showed in build profiles)
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None]
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    broken = ~np.isfinite(norms[:, 0])  # a row with inf or nan has no direction: all zeros
    if broken.any():
        vectors[broken] = 0.0
    return vectors
