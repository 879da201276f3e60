"""A feature whose optional extra is missing raises `senseindex.MissingExtra`, as documented."""

from __future__ import annotations

import sys

import pytest

import senseindex
from senseindex.indexer.encoder import Encoder, EncoderSettings


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_an_onnx_backend_without_onnxruntime_raises_missing_extra(monkeypatch, backend):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(senseindex.MissingExtra, match=r"pip install 'senseindex\[onnx\]'") as caught:
        Encoder(EncoderSettings(backend=backend))
    # still the error this raised before, for callers that catch that one
    assert isinstance(caught.value, senseindex.ModelLoadError)
    assert len(str(caught.value).splitlines()) == 1
