"""Encoder backends: ONNX Runtime gives torch's vectors; without its packages it is a clear error."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import senseindex
from cli import main
from indexer.encoder import Encoder, EncoderSettings, load_encoder

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


def test_an_index_built_with_one_backend_answers_the_same_with_the_other(tmp_path, sample_index):
    pytest.importorskip("onnxruntime")
    summary = senseindex.build_index([SAMPLE], tmp_path / "onnx", senseindex.EncoderSettings(backend="onnx"))
    assert summary.words == sample_index.info()["counts"]["words"]
    with senseindex.open_index(tmp_path / "onnx", backend="torch") as index:
        for query in ("I sat on the [bank] of the river", "The [crane] lifted steel beams"):
            hits = index.search_word(query, k=10)
            expected = sample_index.search_word(query, k=10)
            assert [(h.doc_id, h.start) for h in hits] == [(h.doc_id, h.start) for h in expected]
            assert [h.score for h in hits] == pytest.approx([h.score for h in expected], abs=1e-4)


def test_the_onnx_backend_without_onnxruntime_is_a_one_line_error(monkeypatch, runner, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(senseindex.ModelLoadError, match="needs the onnxruntime and onnx packages"):
        Encoder(EncoderSettings(backend="onnx"))
    assert Encoder(EncoderSettings()).backend == "torch"  # the default needs neither
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
