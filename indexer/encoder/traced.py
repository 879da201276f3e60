"""A traced copy of the model's forward pass, for the short forward passes of queries.

A one-sentence query runs a forward pass of a few dozen tokens, where Python's cost of calling each
module (and the model library's wrappers around them) weighs as much as the arithmetic. A TorchScript
trace of the pass, frozen, runs the same operations without that cost: a query's forward pass of the
default model took 6–8 ms traced against 9–10 ms in eager mode on a 2-core Xeon.

A trace records the operations one example took, so a model whose pass branches on its input could
record the wrong branch: the trace is made on a padded batch and is kept only if it gives the eager
pass's vectors on another batch of other lengths. Otherwise (or if tracing fails at all) the eager
pass stays.

Imports torch at module level; only `core` imports this module, once a model is loaded.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from senseindex.indexer.encoder.core import Encoder

TRACE_TOLERANCE = 1e-5
"""Largest difference from the eager pass, in any output value, at which a trace is kept."""

TracedPass = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class _WordLayerPass(torch.nn.Module):
    """The encoder's forward pass (word layer and last hidden state) as one module to trace."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.model = encoder.model

    def forward(self, input_ids: torch.Tensor, attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder.forward(self.model, input_ids, attention, False)


def _probe_batch(encoder: Encoder, lengths: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of windows of the given lengths (``[CLS]``, ordinary tokens, ``[SEP]``)."""
    width = max(lengths)
    input_ids = torch.full((len(lengths), width), encoder.pad_id, dtype=torch.long)
    attention = torch.zeros((len(lengths), width), dtype=torch.long)
    vocabulary = int(getattr(encoder.model.config, "vocab_size", 1000) or 1000)
    special = {encoder.cls_id, encoder.sep_id, encoder.pad_id}
    ordinary = [i for i in range(1000, min(vocabulary, 1000 + 4 * width)) if i not in special] or [
        encoder.cls_id
    ]
    for row, length in enumerate(lengths):
        input_ids[row, 0] = encoder.cls_id
        for column in range(1, length - 1):
            input_ids[row, column] = ordinary[(row * 7 + column) % len(ordinary)]
        input_ids[row, length - 1] = encoder.sep_id
        attention[row, :length] = 1
    return input_ids.to(encoder.device), attention.to(encoder.device)


def trace_forward(encoder: Encoder) -> TracedPass | None:
    """Trace and freeze the encoder's forward pass, or None where the trace is not the same pass.

    Args:
        encoder: a loaded encoder with a torch backend.

    Returns:
        A function of ``(input_ids, attention)`` (``(batch, length)`` int64 each) returning ``(word
        layer, last hidden state)`` as `Encoder.forward` does; None when tracing fails or the traced
        pass gives other vectors than the eager one.
    """
    module = _WordLayerPass(encoder).eval()
    example = _probe_batch(encoder, (12, 7))
    check = _probe_batch(encoder, (5, 19, 19, 2))
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on branches it recorded: checked below
            traced = torch.jit.freeze(torch.jit.trace(module, example, check_trace=False))
            expected = module(*check)
            got = traced(*check)
    except Exception:  # any failure to trace leaves the eager pass: a speed-up, never a requirement
        return None
    for want, have in zip(expected, got, strict=True):
        if want.shape != have.shape or float((want.float() - have.float()).abs().max()) > TRACE_TOLERANCE:
            return None

    def run(input_ids: torch.Tensor, attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        word_layer, last_hidden = traced(input_ids, attention)
        return word_layer, last_hidden

    return run
