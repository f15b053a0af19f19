"""Attention masks: which keys each query may look at.

Two encodings are used, both following ``torch.nn.functional.scaled_dot_product_attention``:

* **boolean** masks, where ``True`` means "this key takes part" and ``False`` means "masked out";
* **additive** float masks (biases), added to the scores before the softmax; ``-inf`` masks
  a key out and finite values bias it (ALiBi-style biases are additive masks).

Masks are broadcast against the score matrix of shape ``(..., L, S)`` (``L`` queries, ``S`` keys).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from scratchformer.validation import check_int

__all__ = [
    "as_additive_mask",
    "bool_to_additive",
    "causal_mask",
    "check_mask",
    "padding_mask",
]


@lru_cache(maxsize=64)
def _causal_mask_cached(L: int, S: int, device: torch.device) -> torch.Tensor:
    return torch.ones(L, S, dtype=torch.bool, device=device).tril()


def causal_mask(
    L: int, S: int | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Boolean ``(L, S)`` mask letting query ``i`` see keys ``j <= i`` (top-left aligned).

    This is PyTorch's ``is_causal`` convention: when ``L != S`` the triangle starts in the top-left
    corner, so query 0 always sees key 0. Results are cached per ``(L, S, device)`` and shared,
    so treat the returned tensor as read-only.
    """
    L = check_int("L", L, minimum=0)
    S = L if S is None else check_int("S", S, minimum=0)
    return _causal_mask_cached(L, S, torch.device(device if device is not None else "cpu"))


def padding_mask(lengths: torch.Tensor, S: int) -> torch.Tensor:
    """Key-padding mask ``(B, 1, 1, S)``: ``True`` for the first ``lengths[b]`` keys of item ``b``.

    The singleton head and query axes let it broadcast against ``(B, H, L, S)`` scores.
    """
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(f"lengths must be a tensor, got {type(lengths).__name__}")
    if lengths.ndim != 1 or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(
            f"lengths must be a 1-D integer tensor, got shape {tuple(lengths.shape)} "
            f"and dtype {lengths.dtype}"
        )
    S = check_int("S", S, minimum=0)
    if lengths.numel() and (lengths.min() < 0 or lengths.max() > S):
        raise ValueError(f"lengths must lie in [0, S={S}], got {lengths.tolist()}")
    positions = torch.arange(S, device=lengths.device)
    return (positions < lengths[:, None])[:, None, None, :]


def bool_to_additive(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Convert a boolean mask (``True`` = take part) into an additive one: 0 or ``-inf``."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"mask must be a boolean tensor, got {got}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    zeros = torch.zeros((), dtype=dtype, device=mask.device)
    return zeros.masked_fill(~mask, float("-inf"))


def as_additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Any supported mask (None, boolean, additive float) as an additive float mask of ``dtype``."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"attn_mask must be a tensor or None, got {type(mask).__name__}")
    if mask.dtype == torch.bool:
        return bool_to_additive(mask, dtype)
    if mask.dtype.is_floating_point:
        return mask.to(dtype)
    raise TypeError(f"attn_mask must be boolean or floating point, got dtype {mask.dtype}")


def check_mask(mask: torch.Tensor, score_shape: torch.Size | tuple[int, ...]) -> None:
    """Raise unless ``mask`` is a bool/float tensor broadcastable to ``score_shape`` (..., L, S).

    Broadcasting must not enlarge the scores: a mask with extra batch axes is an error, as in
    PyTorch.
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"attn_mask must be a tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.dtype.is_floating_point:
        raise TypeError(f"attn_mask must be boolean or floating point, got dtype {mask.dtype}")
    target = torch.Size(score_shape)
    try:
        ok = torch.broadcast_shapes(mask.shape, target) == target
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"attn_mask of shape {tuple(mask.shape)} is not broadcastable to the attention "
            f"scores of shape {tuple(target)} (..., L, S)"
        )
