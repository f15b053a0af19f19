"""Token embeddings and the two classic ways to tell a transformer where each token sits.

Attention treats its input as a *set*: without positional information the encoder cannot tell
``[1, 2, 3]`` from ``[3, 2, 1]`` (proof: docs/derivations/positional-ablation.md). Both
positional modules here add a ``(L, dim)`` table to the token embeddings:

* :class:`SinusoidalPositionalEmbedding` - the fixed sin/cos table of Vaswani et al. (2017);
* :class:`LearnedPositionalEmbedding` - one trained vector per position (BERT, GPT-2).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from scratchformer.functional.positional import sinusoidal_positional_encoding
from scratchformer.validation import check_int, check_real

__all__ = ["LearnedPositionalEmbedding", "SinusoidalPositionalEmbedding", "TokenEmbedding"]


class TokenEmbedding(nn.Module):
    """A ``(vocab_size, dim)`` lookup table: token id ``t`` becomes row ``weight[t]``.

    Initialised ``N(0, init_std**2)``; the default 1 gives entries the same scale as the
    sin/cos positional table, so neither signal drowns the other at the start of training.
    """

    def __init__(self, vocab_size: int, dim: int, *, init_std: float = 1.0) -> None:
        super().__init__()
        self.vocab_size = check_int("vocab_size", vocab_size)
        self.dim = check_int("dim", dim)
        self.init_std = check_real("init_std", init_std, minimum=0, min_inclusive=False)
        self.weight = nn.Parameter(torch.empty(self.vocab_size, self.dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Redraw the table from ``N(0, init_std**2)``."""
        nn.init.normal_(self.weight, std=self.init_std)

    def forward(self, tokens: Tensor) -> Tensor:
        """``(...,)`` integer ids -> ``(..., dim)`` rows of ``weight`` (gradients flow to them)."""
        if not isinstance(tokens, Tensor) or tokens.is_floating_point() or tokens.is_complex():
            got = tokens.dtype if isinstance(tokens, Tensor) else type(tokens).__name__
            raise TypeError(f"tokens must be an integer tensor of ids, got {got}")
        if tokens.dtype == torch.bool:
            raise TypeError("tokens must be an integer tensor of ids, got torch.bool")
        return self.weight[tokens]

    def extra_repr(self) -> str:
        return f"{self.vocab_size}, {self.dim}"


class _AddPositions(nn.Module):
    """Shared checks for modules that add a ``(max_len, dim)`` table to ``(B, L, dim)`` inputs."""

    max_len: int
    dim: int

    def _table(self) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """``x + P[offset : offset + L]`` for ``x`` of shape ``(..., L, dim)``.

        ``offset`` is the position of ``x``'s first token (non-zero when decoding step by step).
        """
        name = type(self).__name__
        if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} expects x of shape (..., L, {self.dim}), got {shape}")
        offset = check_int("offset", offset, minimum=0)
        length = x.shape[-2]
        if offset + length > self.max_len:
            raise ValueError(
                f"{name} holds {self.max_len} positions but got offset {offset} + length "
                f"{length} = {offset + length}; build it with a larger max_len"
            )
        return x + self._table()[offset : offset + length].to(x.dtype)

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, dim={self.dim}"


class SinusoidalPositionalEmbedding(_AddPositions):
    """Adds the fixed sin/cos table ``PE[p]`` of Vaswani et al. (2017); nothing is trained.

    The table is a non-persistent buffer: it follows ``.to(device)`` but stays out of the
    state dict, since it is a pure function of ``(max_len, dim, base)``.
    """

    def __init__(self, max_len: int, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        self.max_len = check_int("max_len", max_len)
        self.dim = check_int("dim", dim)
        self.register_buffer(
            "pe", sinusoidal_positional_encoding(self.max_len, self.dim, base), persistent=False
        )

    def _table(self) -> Tensor:
        return self.pe


class LearnedPositionalEmbedding(_AddPositions):
    """Adds a trained vector ``weight[p]`` per position ``p < max_len`` (BERT, GPT-2).

    Initialised ``N(0, init_std**2)``; it cannot handle sequences longer than ``max_len``.
    """

    def __init__(self, max_len: int, dim: int, *, init_std: float = 0.02) -> None:
        super().__init__()
        self.max_len = check_int("max_len", max_len)
        self.dim = check_int("dim", dim)
        self.init_std = check_real("init_std", init_std, minimum=0, min_inclusive=False)
        self.weight = nn.Parameter(torch.empty(self.max_len, self.dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Redraw the table from ``N(0, init_std**2)``."""
        nn.init.normal_(self.weight, std=self.init_std)

    def _table(self) -> Tensor:
        return self.weight
