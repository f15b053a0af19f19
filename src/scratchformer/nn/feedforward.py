"""The position-wise feed-forward network of a transformer block: act(x W1 + b1) W2 + b2.

"Position-wise" means the same two affine maps act on every position (every vector along the
last axis) independently, so the module works on inputs of shape (..., d_model).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from scratchformer.functional.activations import ACTIVATIONS, get_activation
from scratchformer.functional.linear import affine
from scratchformer.validation import check_bool, check_choice, check_int, check_probability

__all__ = ["TORCH_ACTIVATIONS", "FeedForward"]

TORCH_ACTIVATIONS = {
    "gelu": nn.functional.gelu,
    "gelu_tanh": functools.partial(nn.functional.gelu, approximate="tanh"),
    "relu": nn.functional.relu,
}
"""PyTorch's fused kernel for each name in `ACTIVATIONS` (``kernels="torch"``)."""


class FeedForward(nn.Module):
    """Position-wise FFN x ↦ act(x W1 + b1) W2 + b2 with W1: (d_model, d_hidden).

    ``activation`` is "gelu", "gelu_tanh" or "relu"; ``d_hidden`` defaults to 4·d_model.
    ``dropout`` acts on the hidden activations (residual dropout on the output is the block's
    job). Parameters are initialised like ``nn.Linear``: U(−1/√fan_in, 1/√fan_in).
    """

    def __init__(
        self,
        d_model: int,
        d_hidden: int | None = None,
        activation: str = "gelu",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        d_model = check_int("d_model", d_model)
        d_hidden = 4 * d_model if d_hidden is None else check_int("d_hidden", d_hidden)
        activation = check_choice("activation", activation, sorted(ACTIVATIONS))
        dropout = check_probability("dropout", dropout)
        bias = check_bool("bias", bias)

        self.d_model = d_model
        self.d_hidden = d_hidden
        self.activation = activation
        self.dropout = dropout
        self.act = get_activation(activation)
        self.kernels = "scratch"
        self.w1 = nn.Parameter(torch.empty(d_model, d_hidden))
        self.w2 = nn.Parameter(torch.empty(d_hidden, d_model))
        if bias:
            self.b1 = nn.Parameter(torch.empty(d_hidden))
            self.b2 = nn.Parameter(torch.empty(d_model))
        else:
            self.register_parameter("b1", None)
            self.register_parameter("b2", None)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Re-draw every parameter from U(−1/√fan_in, 1/√fan_in), nn.Linear's default."""
        for weight, bias in ((self.w1, self.b1), (self.w2, self.b2)):
            bound = 1.0 / math.sqrt(weight.shape[0])  # fan_in: weights are (in, out)
            weight.uniform_(-bound, bound)
            if bias is not None:
                bias.uniform_(-bound, bound)

    def use_kernels(self, kernels: str) -> None:
        """``"scratch"``: our activation; ``"torch"``: PyTorch's fused built-in of the same one."""
        self.kernels = check_choice("kernels", kernels, ("scratch", "torch"))
        self.act = (TORCH_ACTIVATIONS[self.activation] if kernels == "torch"
                    else get_activation(self.activation))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-activation x W1 + b1, shape (..., d_hidden); exposed for analysis."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"x must have shape (..., {self.d_model}) (d_model), got {tuple(x.shape)}"
            )
        return affine(x, self.w1, self.b1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the FFN to every position: (..., d_model) → (..., d_model)."""
        h = self.act(self.hidden(x))
        if self.dropout > 0.0 and self.training:
            h = nn.functional.dropout(h, p=self.dropout, training=True)
        return affine(h, self.w2, self.b2)

    def extra_repr(self) -> str:
        """Shown inside ``repr(module)``."""
        return (
            f"d_model={self.d_model}, d_hidden={self.d_hidden}, activation={self.activation!r}, "
            f"dropout={self.dropout}, bias={self.b1 is not None}"
        )
