"""Encoder backends: ONNX Runtime gives torch's vectors, bfloat16 nearly the same; without its
packages ONNX is a clear error."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_found

import senseindex
from senseindex.cli import main
from senseindex.indexer.encoder import (
    Encoder,
    EncoderSettings,
    has_bfloat16_matrix_instructions,
    load_encoder,
    resolve_backend,
)

# ONNX export and quantisation, builds on every backend: the slow tier
pytestmark = pytest.mark.slow

SAMPLE = str(Path(__file__).resolve().parent.parent / "data" / "sample")
TEXTS = [
    "The bank raised its interest rates again.",
    "I sat on the bank of the river and watched the water flow by for a long time.",
    "Crane",
    "Unbelievably, the heron's nest survived the storm.",
]


def _spans(text: str) -> list[tuple[int, int]]:
    spans, position = [], 0
    for word in text.split():
        start = text.index(word, position)
        spans.append((start, start + len(word)))
        position = start + len(word)
    return spans


@pytest.mark.parametrize("layers", ["last", "mean-last-4"])
def test_onnx_vectors_equal_torch_vectors(layers):
    pytest.importorskip("onnxruntime")
    spans = [_spans(t) for t in TEXTS]
    # batch size 2 puts sentences of different lengths in one padded batch
    onnx = load_encoder(EncoderSettings(layers=layers, backend="onnx", batch_size=2))
    torch = load_encoder(EncoderSettings(layers=layers, backend="torch", batch_size=2))
    assert (onnx.backend, torch.backend) == ("onnx", "torch")
    a, b = onnx.encode(TEXTS, spans), torch.encode(TEXTS, spans)
    np.testing.assert_allclose(a.sentence_vectors, b.sentence_vectors, atol=1e-5)
    np.testing.assert_allclose(a.word_vectors, b.word_vectors, atol=1e-5)


@pytest.fixture(scope="module")
def float32_index_dir(tmp_path_factory) -> Path:
    """The sample corpus indexed in float32 by torch (the default backend may be bfloat16)."""
    folder = tmp_path_factory.mktemp("float32") / "torch.idx"
    senseindex.build_index([SAMPLE], folder, senseindex.EncoderSettings(backend="torch"))
    return folder


@contextmanager
def _built_beside_float32(
    folder: Path, build_backend: str, query_backend: str, float32_index_dir: Path
) -> Iterator[tuple[senseindex.SenseIndex, senseindex.SenseIndex]]:
    """The sample corpus built with one backend and opened with another, beside the float32 index;
    both hold the same rows."""
    senseindex.build_index([SAMPLE], folder, senseindex.EncoderSettings(backend=build_backend))
    with (
        senseindex.open_index(folder, backend=query_backend) as index,
        senseindex.open_index(float32_index_dir, backend="torch") as float32,
    ):
        assert index.info()["counts"] == float32.info()["counts"]
        yield index, float32


def test_an_index_built_with_one_backend_answers_the_same_with_the_other(tmp_path, float32_index_dir):
    pytest.importorskip("onnxruntime")
    with _built_beside_float32(tmp_path / "onnx", "onnx", "torch", float32_index_dir) as (index, float32):
        for query in ("I sat on the [bank] of the river", "The [crane] lifted steel beams"):
            hits = index.search_word(query, k=10)
            expected = float32.search_word(query, k=10)
            assert_found(hits, expected)
            assert [(h.doc_id, h.start) for h in hits] == [(h.doc_id, h.start) for h in expected]
            assert [h.score for h in hits] == pytest.approx([h.score for h in expected], abs=1e-4)


def test_the_onnx_backend_without_onnxruntime_is_a_one_line_error(monkeypatch, runner, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(senseindex.ModelLoadError, match="needs the onnxruntime and onnx packages"):
        Encoder(EncoderSettings(backend="onnx"))
    assert Encoder(EncoderSettings()).backend in ("torch", "torch-bf16")  # the default needs neither
    folder = str(tmp_path / "x")
    # a batch size of its own: the encoder cache must not hand back an ONNX encoder loaded earlier
    result = runner.invoke(
        main, ["build-index", SAMPLE, "--index", folder, "--backend", "onnx", "--batch-size", "7", "-q"]
    )
    assert result.exit_code == 1
    assert result.output.startswith("Error: the onnx backend needs the onnxruntime and onnx packages")
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_an_unknown_backend_is_a_settings_error():
    with pytest.raises(senseindex.SettingsError, match="unknown backend"):
        EncoderSettings(backend="tensorrt").validate()


@pytest.mark.parametrize("layers", ["last", "concat-last-4"])
def test_bfloat16_vectors_point_where_float32_vectors_point(layers):
    spans = [_spans(t) for t in TEXTS]
    bf16 = load_encoder(EncoderSettings(layers=layers, backend="torch-bf16", batch_size=2))
    float32 = load_encoder(EncoderSettings(layers=layers, backend="torch", batch_size=2))
    assert (bf16.backend, float32.backend) == ("torch-bf16", "torch")
    a, b = bf16.encode(TEXTS, spans), float32.encode(TEXTS, spans)
    assert not np.array_equal(a.word_vectors, b.word_vectors)  # the products really ran in bfloat16
    # measured on 30,000 sentences of a novel: mean cosine 0.99998, lowest 0.9999
    assert np.einsum("ij,ij->i", a.sentence_vectors, b.sentence_vectors).min() > 0.9995
    assert np.einsum("ij,ij->i", a.word_vectors, b.word_vectors).min() > 0.9995
    np.testing.assert_array_equal(a.word_aligned, b.word_aligned)
    np.testing.assert_array_equal(a.piece_counts, b.piece_counts)


def test_a_bfloat16_built_index_ranks_like_a_float32_one(tmp_path, float32_index_dir):
    with _built_beside_float32(tmp_path / "bf16", "torch-bf16", "torch-bf16", float32_index_dir) as (
        bf16,
        float32,
    ):
        for query in ("I sat on the [bank] of the river", "The [crane] lifted steel beams"):
            hits, expected = bf16.search_word(query, k=5), float32.search_word(query, k=5)
            assert_found(hits, expected)
            assert [(h.doc_id, h.start) for h in hits] == [(h.doc_id, h.start) for h in expected]
            assert [h.score for h in hits] == pytest.approx([h.score for h in expected], abs=2e-3)
        hits, expected = (
            bf16.search_sentences("money in a bank", k=5),
            float32.search_sentences("money in a bank", k=5),
        )
        assert_found(hits, expected)
        assert [h.sentence_id for h in hits] == [h.sentence_id for h in expected]


def test_auto_picks_bfloat16_only_where_the_cpu_multiplies_it_in_hardware():
    expected = "torch-bf16" if has_bfloat16_matrix_instructions() else "torch"
    assert resolve_backend("auto") == expected
    assert load_encoder(EncoderSettings(backend="auto")).backend == expected
    assert resolve_backend("onnx") == "onnx"


def test_the_int8_onnx_backend_keeps_the_ranking_close_to_float32(tmp_path, float32_index_dir):
    pytest.importorskip("onnxruntime")
    spans = [_spans(t) for t in TEXTS]
    int8 = load_encoder(EncoderSettings(backend="onnx-int8", batch_size=2))
    float32 = load_encoder(EncoderSettings(backend="torch", batch_size=2))
    a, b = int8.encode(TEXTS, spans), float32.encode(TEXTS, spans)
    assert not np.allclose(a.sentence_vectors, b.sentence_vectors, atol=1e-3)  # really quantised
    # measured on 3,000 sentences of a novel: mean sentence cosine 0.991, lowest 0.960
    assert np.einsum("ij,ij->i", a.sentence_vectors, b.sentence_vectors).min() > 0.95
    with _built_beside_float32(tmp_path / "int8", "onnx-int8", "onnx-int8", float32_index_dir) as (
        index,
        exact,
    ):
        hits = index.search_word("I sat on the [bank] of the river", k=5)
        expected = exact.search_word("I sat on the [bank] of the river", k=5)
        assert len({(h.doc_id, h.start) for h in hits} & {(h.doc_id, h.start) for h in expected}) >= 4
