"""Sinusoidal positional encoding, and the rotation that shifts it by ``k`` positions.

Position ``p`` is written as ``dim / 2`` points on the unit circle, one per frequency

    omega_i = base ** (-2 i / dim),   i = 0 .. dim/2 - 1,

laid out as interleaved pairs ``PE[p, 2i] = sin(p omega_i)``, ``PE[p, 2i+1] = cos(p omega_i)``.
Moving from ``p`` to ``p + k`` turns every circle by ``k omega_i``, so ``PE(p + k) = R(k) PE(p)``
with ``R(k)`` block-diagonal and orthogonal (proof: docs/derivations/positional-encoding.md).
Everything is computed in float64 and cast at the end, so float32 outputs are correctly rounded
up to the accuracy of ``sin``/``cos`` themselves.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scratchformer.validation import check_int, check_real

__all__ = [
    "positional_frequencies",
    "rotation_matrix",
    "sinusoidal_positional_encoding",
]


def _check_dim(dim: object) -> int:
    """Return ``dim`` as a positive even int: sin and cos fill the dimensions two at a time."""
    dim = check_int("dim", dim, 2)
    if dim % 2:
        raise ValueError(
            f"dim must be even, got {dim}: the encoding stores one (sin, cos) pair per "
            f"frequency, so it fills dimensions two at a time"
        )
    return dim


def _check_base(base: object) -> float:
    """Return ``base`` as a finite float > 1, so that the frequencies strictly decrease."""
    return check_real("base", base, minimum=1, min_inclusive=False)


def _check_dtype(dtype: object) -> torch.dtype:
    """Return ``dtype`` if it is a real floating torch dtype (sines need a fractional type)."""
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__} {dtype!r}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype such as torch.float32, got {dtype}")
    return dtype


def _frequencies64(dim: int, base: float, device: torch.device | str | None) -> Tensor:
    """The ``dim / 2`` frequencies ``base ** (-2i / dim)`` in float64 (already validated)."""
    exponents = torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim
    return torch.pow(torch.tensor(base, dtype=torch.float64, device=device), -exponents)


def positional_frequencies(
    dim: int,
    base: float = 10000.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The angular frequencies ``omega_i = base ** (-2 i / dim)``, shape ``(dim // 2,)``.

    ``omega_0 = 1`` (period 2*pi positions); they fall geometrically to ``base ** (-1 + 2/dim)``.
    """
    dim = _check_dim(dim)
    base = _check_base(base)
    dtype = _check_dtype(dtype)
    return _frequencies64(dim, base, device).to(dtype)


def sinusoidal_positional_encoding(
    num_positions: int,
    dim: int,
    base: float = 10000.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The ``(num_positions, dim)`` table of positions ``0 .. num_positions - 1``.

    Interleaved layout: ``PE[p, 2i] = sin(p * omega_i)``, ``PE[p, 2i+1] = cos(p * omega_i)``,
    ``omega_i = base ** (-2i / dim)``; computed in float64, then cast to ``dtype``.
    """
    num_positions = check_int("num_positions", num_positions, 1)
    dim = _check_dim(dim)
    base = _check_base(base)
    dtype = _check_dtype(dtype)
    omega = _frequencies64(dim, base, device)
    positions = torch.arange(num_positions, dtype=torch.float64, device=device)
    angles = positions[:, None] * omega[None, :]  # (num_positions, dim // 2)
    # stack on a new last axis and flatten: [sin_0, cos_0, sin_1, cos_1, ...]
    pe = torch.stack((torch.sin(angles), torch.cos(angles)), dim=-1).reshape(num_positions, dim)
    return pe.to(dtype)


def rotation_matrix(
    k: int,
    dim: int,
    base: float = 10000.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The ``(dim, dim)`` orthogonal matrix ``R(k)`` with ``PE(p + k) = R(k) @ PE(p)`` for all p.

    Block ``i`` acts on the pair ``(sin, cos)`` as ``[[cos k w, sin k w], [-sin k w, cos k w]]``
    (``w = omega_i``): a clockwise turn by ``k w`` because sin comes before cos. ``k`` may be < 0.
    """
    k = check_int("k", k, minimum=None)  # a shift in positions, of either sign
    dim = _check_dim(dim)
    base = _check_base(base)
    dtype = _check_dtype(dtype)
    angle = k * _frequencies64(dim, base, device)
    c, s = torch.cos(angle), torch.sin(angle)
    sin_row = torch.arange(0, dim, 2, device=angle.device)  # row/column of each sin entry
    cos_row = sin_row + 1
    R = torch.zeros(dim, dim, dtype=torch.float64, device=angle.device)
    R[sin_row, sin_row] = c  # sin(a + b) = sin a cos b + cos a sin b
    R[sin_row, cos_row] = s
    R[cos_row, sin_row] = -s  # cos(a + b) = cos a cos b - sin a sin b
    R[cos_row, cos_row] = c
    return R.to(dtype)
