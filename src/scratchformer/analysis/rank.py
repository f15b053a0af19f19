"""How many directions does a weight matrix use? Three notions of rank, and per-head QK/OV forms.

For singular values ``σ_1 ≥ σ_2 ≥ ... ≥ 0`` of ``M`` (see docs/derivations/matrix-rank.md):

- numerical rank: ``#{i : σ_i > tol}``, with numpy's default ``tol = max(m, n)·eps·σ_1``
  (eps of the dtype the SVD runs in; float16/bfloat16 inputs are analysed in float32);
- effective rank (Roy & Vetterli 2007): ``exp(H(p))``, ``p_i = σ_i / Σ_j σ_j``;
- stable rank: ``‖M‖_F² / ‖M‖_2² = Σ σ_i² / σ_1²``.

They satisfy ``1 ≤ stable ≤ effective ≤ rank``. The rank functions take a stack of matrices
``(..., m, n)`` and return one value per matrix, shape ``(...)``, on the input's device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scratchformer.validation import check_int

__all__ = [
    "effective_rank",
    "numerical_rank",
    "ov_matrices",
    "qk_matrices",
    "rank_summary",
    "rank_tolerance",
    "singular_values",
    "stable_rank",
]


def _check_matrices(m: object, name: str = "m") -> Tensor:
    """Return ``m`` if it is a real floating tensor of shape (..., rows, cols), both nonzero."""
    if not isinstance(m, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(m).__name__}")
    if not m.is_floating_point():
        raise TypeError(f"{name} must have a real floating dtype, got {m.dtype}")
    if m.ndim < 2 or m.shape[-1] == 0 or m.shape[-2] == 0:
        raise ValueError(
            f"{name} must have shape (..., rows, cols) with rows, cols >= 1, got {tuple(m.shape)}"
        )
    return m


def singular_values(m: Tensor) -> Tensor:
    """Singular values of each matrix in ``m`` (..., rows, cols), largest first: (..., min).

    Half-precision inputs are decomposed in float32: their stored values are exact there, and
    LAPACK has no half-precision SVD. The result is float32 then.
    """
    return torch.linalg.svdvals(_at_least_float32(_check_matrices(m)))


def _at_least_float32(m: Tensor) -> Tensor:
    """``m`` itself, or in float32 if it is float16/bfloat16."""
    return m.float() if m.dtype in (torch.float16, torch.bfloat16) else m


def _tolerance(s: Tensor, shape: torch.Size) -> Tensor:
    """``max(rows, cols) · eps · σ_1`` per matrix, eps of the dtype the SVD ran in."""
    return max(shape[-2], shape[-1]) * torch.finfo(s.dtype).eps * s[..., 0]


def rank_tolerance(m: Tensor) -> Tensor:
    """Default threshold of :func:`numerical_rank`: ``max(rows, cols) · eps · σ_1``, shape (...).

    ``eps`` is that of the dtype the SVD runs in (2.2e-16 for float64, 1.2e-7 for float32, also
    for half-precision inputs): its rounding perturbs singular values by about this much. (With
    bfloat16's own eps, 7.8e-3, the threshold of a 64-wide matrix would be half of σ_1.)
    """
    m = _check_matrices(m)
    return _tolerance(singular_values(m), m.shape)


def numerical_rank(m: Tensor, tol: float | Tensor | None = None) -> Tensor:
    """Number of singular values above ``tol`` per matrix (int64, shape (...)).

    ``tol`` is an absolute threshold (a float, or a tensor broadcastable to (...)); ``None``
    uses :func:`rank_tolerance`, as ``numpy.linalg.matrix_rank`` does.
    """
    m = _check_matrices(m)
    s = singular_values(m)
    if tol is None:
        tol = _tolerance(s, m.shape)
    else:
        if not isinstance(tol, (Tensor, float, int)) or isinstance(tol, bool):
            raise TypeError(f"tol must be a float, a tensor or None, got {type(tol).__name__}")
        tol = torch.as_tensor(tol, dtype=s.dtype, device=s.device)
        if (tol < 0).any():
            raise ValueError(f"tol must be >= 0, got {tol}")
    return (s > tol[..., None]).sum(-1)


def _check_nonzero(s: Tensor, what: str) -> None:
    """Raise if some matrix has no nonzero singular value (its rank ratios are 0/0)."""
    if (s[..., 0] == 0).any():
        raise ValueError(f"{what} is undefined for a zero matrix; m contains one")


def _effective(s: Tensor) -> Tensor:
    """``exp(-Σ p log p)`` with ``p = s / Σ s`` along the last dim, ``0 log 0 = 0``."""
    p = s / s.sum(-1, keepdim=True)
    plogp = torch.where(p > 0, p * torch.log(p), torch.zeros_like(p))
    return torch.exp(-plogp.sum(-1))


def _stable(s: Tensor) -> Tensor:
    """``Σ s² / s_1²`` along the last dim, as ``Σ (s / s_1)²`` so that tiny s do not underflow."""
    return ((s / s[..., :1]) ** 2).sum(-1)


def effective_rank(m: Tensor) -> Tensor:
    """Roy & Vetterli's entropy rank ``exp(H(σ / Σσ))``: r for r equal nonzero singular values."""
    s = singular_values(m)
    _check_nonzero(s, "effective rank")
    return _effective(s)


def stable_rank(m: Tensor) -> Tensor:
    """``‖M‖_F² / ‖M‖_2²`` per matrix: 1 for rank one, insensitive to tiny singular values."""
    s = singular_values(m)
    _check_nonzero(s, "stable rank")
    return _stable(s)


def rank_summary(m: Tensor) -> dict[str, Tensor]:
    """All rank measures of ``m`` from one SVD, for logging during training.

    Keys: ``numerical_rank``, ``rank_tolerance``, ``effective_rank``, ``stable_rank``,
    ``sigma_max``; each value has shape (...).
    """
    m = _check_matrices(m)
    s = singular_values(m)
    _check_nonzero(s, "rank_summary")
    tol = _tolerance(s, m.shape)
    return {
        "numerical_rank": (s > tol[..., None]).sum(-1),
        "rank_tolerance": tol,
        "effective_rank": _effective(s),
        "stable_rank": _stable(s),
        "sigma_max": s[..., 0],
    }


def _split_heads(w: Tensor, n_heads: int, name: str, axis: int) -> Tensor:
    """Cut ``w`` (..., d_model, H·d_head) into (..., H, d_model, d_head) along ``axis`` (-1/-2)."""
    w = _check_matrices(w, name)
    n_heads = check_int("n_heads", n_heads)
    width = w.shape[axis]
    if width % n_heads:
        raise ValueError(
            f"{name} has {width} head dims along axis {axis}, not divisible by n_heads={n_heads}"
        )
    if axis == -2:  # rows hold the heads: work on the transpose
        w = w.transpose(-1, -2)
    heads = w.reshape(*w.shape[:-1], n_heads, width // n_heads)
    return heads.movedim(-2, -3)


def qk_matrices(w_q: Tensor, w_k: Tensor, n_heads: int) -> Tensor:
    """Per-head bilinear forms ``W_Q^h W_K^hᵀ`` (..., H, d_model, d_model), rank ≤ d_head each.

    ``w_q, w_k`` have shape (..., d_model, H·d_head) and act as ``x @ w``; head ``h`` uses
    columns ``h·d_head:(h+1)·d_head``. Its unscaled attention score is ``x_i (W_Q^h W_K^hᵀ) x_jᵀ``.
    Half-precision weights are multiplied in float32, so that rounding the product to 8 mantissa
    bits does not show up as extra rank.
    """
    if not isinstance(w_q, Tensor) or not isinstance(w_k, Tensor) or w_q.shape != w_k.shape:
        raise ValueError(
            "w_q and w_k must be tensors of the same shape (..., d_model, H·d_head), got "
            f"{getattr(w_q, 'shape', type(w_q))} and {getattr(w_k, 'shape', type(w_k))}"
        )
    q = _at_least_float32(_split_heads(w_q, n_heads, "w_q", -1))
    k = _at_least_float32(_split_heads(w_k, n_heads, "w_k", -1))
    return q @ k.transpose(-1, -2)


def ov_matrices(w_v: Tensor, w_o: Tensor, n_heads: int) -> Tensor:
    """Per-head output maps ``W_V^h W_O^h`` (..., H, d_model, d_model), rank ≤ d_head each.

    ``w_v`` (..., d_model, H·d_head) acts as ``x @ w_v`` (head h: columns
    ``h·d_head:(h+1)·d_head``); ``w_o`` (..., H·d_head, d_model) acts on the concatenated heads
    (head h: the same rows). What head h adds to the residual stream is
    ``Σ_j a_ij x_j W_V^h W_O^h``. Half-precision weights are multiplied in float32.
    """
    if (
        not isinstance(w_v, Tensor)
        or not isinstance(w_o, Tensor)
        or (w_v.shape != w_o.shape[:-2] + w_o.shape[-2:][::-1])
    ):
        raise ValueError(
            "w_v (..., d_model, H·d_head) and w_o (..., H·d_head, d_model) must be transposed "
            f"shapes, got {getattr(w_v, 'shape', type(w_v))} and {getattr(w_o, 'shape', type(w_o))}"
        )
    v = _at_least_float32(_split_heads(w_v, n_heads, "w_v", -1))  # (..., H, d_model, d_head)
    o = _at_least_float32(_split_heads(w_o, n_heads, "w_o", -2))  # (..., H, d_model, d_head)
    return v @ o.transpose(-1, -2)
