"""The ``torch-bf16`` backend: linear layers whose matrix products run in bfloat16.

Imports torch at module level; only `core` imports this module, when such an encoder is loaded.
"""

from __future__ import annotations

import torch


class BFloat16Linear(torch.nn.Module):
    """A linear layer whose weights are kept in bfloat16 and whose product runs in bfloat16.

    The product accumulates in float32; input and output stay float32, so layer norms, softmax, GELU and
    residual sums are computed as in float32.

    The weights are converted once: ``torch.autocast`` would convert them on every forward pass, which
    costs more than a one-sentence query's whole forward pass saves.

    Args:
        linear: the float32 layer to replace.
    """

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
        self.bias = (
            None
            if linear.bias is None
            else torch.nn.Parameter(linear.bias.detach().to(torch.bfloat16), requires_grad=False)
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Apply the layer.

        Args:
            hidden: ``(..., in_features)`` float32.

        Returns:
            ``(..., out_features)`` float32.
        """
        product = torch.nn.functional.linear(hidden.to(torch.bfloat16), self.weight, self.bias)
        return product.to(hidden.dtype)


def use_bfloat16_linear_layers(module: torch.nn.Module) -> None:
    """Replace, in place, every ``torch.nn.Linear`` inside a module by a `BFloat16Linear`.

    Args:
        module: the model (or any submodule).
    """
    for name, child in module.named_children():
        if isinstance(child, torch.nn.Linear):
            setattr(module, name, BFloat16Linear(child))
        else:
            use_bfloat16_linear_layers(child)
