"""Pooling a forward pass's token vectors into word and sentence sums."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


def accumulate(
    hidden: torch.Tensor,
    rows: Sequence[Any],
    cols: Sequence[Any],
    targets: Sequence[Any],
    total: torch.Tensor,
    hits: torch.Tensor,
    mode: str,
) -> None:
    """Add (or, for ``max``, fold in) the vectors at ``hidden[rows, cols]`` into ``total[targets]``.

    Args:
        hidden: ``(batch, length, width)`` float32 (or bfloat16) hidden states, on any device.
        rows: int arrays of batch rows, concatenated.
        cols: int arrays of token positions, concatenated.
        targets: int arrays of the word (or sentence) each vector pools into, concatenated.
        total: ``(n_targets, width)`` float32 running sums (or maxima) on the CPU, updated in
            place.
        hits: ``(n_targets,)`` float32 vectors pooled per target, updated in place.
        mode: ``max`` for max pooling; anything else sums.
    """
    import torch  # loaded with the model already: this only binds the name

    if not rows:
        return
    row_index = torch.from_numpy(np.concatenate(rows).astype(np.int64))
    if not len(row_index):
        return
    col_index = torch.from_numpy(np.concatenate(cols).astype(np.int64))
    target_index = torch.from_numpy(np.concatenate(targets).astype(np.int64))
    if hidden.device.type != "cpu":  # gather on the device, bring back only the vectors pooled
        vectors = hidden[row_index.to(hidden.device), col_index.to(hidden.device)].float().cpu()
    else:
        vectors = hidden[row_index, col_index].float()
    if mode == "max":
        total.index_reduce_(0, target_index, vectors, "amax")
    else:
        total.index_add_(0, target_index, vectors)
    hits.index_add_(0, target_index, torch.ones(len(target_index)))
