"""Argument checks shared by the attention kernels (general, tiled causal, block-sparse).

Scalar arguments are checked with :mod:`scratchformer.validation`; what is here is specific to
attention: the query/key/value tensors and the softmax scale.
"""

from __future__ import annotations

import math

import torch

from scratchformer.validation import check_real

__all__ = ["check_batch", "check_qkv", "resolve_scale"]


def check_qkv(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
    """Types, ranks, dtypes and matching feature/length axes of query, key and value.

    query (..., L, E), key (..., S, E), value (..., S, Ev): tensors of one floating dtype with
    at least two axes; a non-tensor or non-floating dtype is a TypeError, a shape a ValueError.
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim < 2:
            raise ValueError(
                f"{name} must have at least 2 dimensions (..., length, features), "
                f"got shape {tuple(t.shape)}"
            )
        if not t.dtype.is_floating_point:
            raise TypeError(f"{name} must be floating point, got dtype {t.dtype}")
    if not query.dtype == key.dtype == value.dtype:
        raise TypeError(
            f"query, key and value must share a dtype, got {query.dtype}, {key.dtype}, "
            f"{value.dtype}"
        )
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"query and key must have the same last dimension E, got query {tuple(query.shape)} "
            f"and key {tuple(key.shape)}"
        )
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(
            f"key and value must have the same length S (axis -2), got key {tuple(key.shape)} "
            f"and value {tuple(value.shape)}"
        )


def check_batch(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
    """The batch axes (all but the last two) of query, key and value must broadcast."""
    try:
        torch.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"batch axes of query {tuple(query.shape)}, key {tuple(key.shape)} and value "
            f"{tuple(value.shape)} do not broadcast"
        ) from None


def resolve_scale(scale: object, query: torch.Tensor) -> float:
    """``scale`` as a finite float, defaulting (None) to 1/sqrt(E) for queries (..., L, E)."""
    if scale is None:
        return 1.0 / math.sqrt(query.shape[-1]) if query.shape[-1] > 0 else 1.0
    return check_real("scale", scale)
