"""Low-rank approximations of softmax attention: Linformer, Nyström and the truncated SVD.

For queries ``Q`` (..., L, d), keys ``K`` and values ``V`` (..., n, d) exact attention is
``A V`` with ``A = softmax(Q Kᵀ / √d)`` (L×n). Three ways to avoid (or judge) the L×n matrix
(derivation and costs: docs/derivations/low-rank-attention.md):

- Linformer (Wang et al. 2020): ``softmax(Q (E K)ᵀ / √d) (F V)`` with E, F of size k×n project
  the sequence axis of keys and values; cost O(L k d).
- Nyström (Xiong et al. 2021): ``F̃ Ã⁺ B̃`` with m landmark queries/keys (segment means),
  ``F̃ = softmax(Q K̃ᵀ)``, ``Ã = softmax(Q̃ K̃ᵀ)``, ``B̃ = softmax(Q̃ Kᵀ)``; cost O(n m d).
- Truncated SVD: the best rank-r approximation of a given matrix in Frobenius norm
  (Eckart–Young), the floor no rank-r method can go below.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scratchformer.functional._checks import resolve_scale
from scratchformer.functional.attention import masked_softmax
from scratchformer.validation import check_choice, check_int

__all__ = [
    "PINV_METHODS",
    "eckart_young_error",
    "linformer_attention",
    "linformer_weights",
    "newton_schulz_pinv",
    "nystrom_attention",
    "nystrom_factors",
    "nystrom_weights",
    "relative_frobenius_error",
    "segment_means",
    "segment_means_matrix",
    "truncated_svd",
]

PINV_METHODS = ("newton", "exact")


def _check_tensor(name: str, x: object, min_ndim: int = 2) -> Tensor:
    """``x`` if it is a floating tensor with at least ``min_ndim`` axes, else raise naming it."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} axes, got shape {tuple(x.shape)}")
    return x


def _check_qkv(query: Tensor, key: Tensor, value: Tensor | None = None) -> None:
    """Query (..., L, d) and key (..., n, d) share d; value (..., n, dv) shares n with key."""
    _check_tensor("query", query)
    _check_tensor("key", key)
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"query and key must share the feature size, got query {tuple(query.shape)} and "
            f"key {tuple(key.shape)}"
        )
    if value is not None:
        _check_tensor("value", value)
        if value.shape[-2] != key.shape[-2]:
            raise ValueError(
                f"value must have as many rows as key ({key.shape[-2]}), got {tuple(value.shape)}"
            )


# ----------------------------------------------------------------------------- Linformer


def _check_projection(name: str, p: object, n: int) -> Tensor:
    """A projection (..., k, n) along a sequence of length ``n``."""
    p = _check_tensor(name, p)
    if p.shape[-1] != n:
        raise ValueError(
            f"{name} must have shape (..., k, n={n}) to project {n} keys, got {tuple(p.shape)}"
        )
    if p.shape[-2] < 1:
        raise ValueError(f"{name} must project onto k >= 1 rows, got {tuple(p.shape)}")
    return p


def linformer_weights(query: Tensor, key: Tensor, E: Tensor, scale: float | None = None) -> Tensor:
    """Linformer's L×k weights ``softmax(scale · Q (E K)ᵀ)``: each row sums to 1 over k keys."""
    _check_qkv(query, key)
    E = _check_projection("E", E, key.shape[-2])
    return masked_softmax(resolve_scale(scale, query) * query @ (E @ key).transpose(-2, -1))


def linformer_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    E: Tensor,
    F: Tensor,
    scale: float | None = None,
    return_matrix: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """``softmax(scale · Q (E K)ᵀ) (F V)`` with E, F (..., k, n) projecting the sequence axis.

    ``return_matrix`` also returns the L×n matrix ``P̄ F`` that multiplies V, i.e. the attention
    matrix the method stands in for (formed only on request: it costs O(L k n)).
    """
    _check_qkv(query, key, value)
    n = key.shape[-2]
    E = _check_projection("E", E, n)
    F = _check_projection("F", F, n)
    if E.shape[-2] != F.shape[-2]:
        raise ValueError(f"E and F must project onto the same k, got {tuple(E.shape)} and "
                         f"{tuple(F.shape)}")
    weights = linformer_weights(query, key, E, scale)
    out = weights @ (F @ value)
    return (out, weights @ F) if return_matrix else out


def segment_means_matrix(n: int, m: int, dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> Tensor:
    """The m×n matrix averaging ``m`` contiguous segments of ``n`` rows (sizes differ by <= 1).

    ``segment_means_matrix(n, m) @ X`` is :func:`segment_means` of X; for m = n it is the identity.
    """
    n = check_int("n", n)
    m = check_int("num_landmarks", m, maximum=n)
    bounds = [(i * n) // m for i in range(m + 1)]  # segment i = rows [bounds[i], bounds[i+1])
    s = torch.zeros(m, n, dtype=dtype, device=device)
    for i in range(m):
        lo, hi = bounds[i], bounds[i + 1]
        s[i, lo:hi] = 1.0 / (hi - lo)
    return s


def segment_means(x: Tensor, num_landmarks: int) -> Tensor:
    """Means of ``num_landmarks`` contiguous row segments of ``x``: (..., n, d) -> (..., m, d).

    Xiong et al. use n divisible by m; here segment sizes may differ by one so any m <= n works.
    """
    x = _check_tensor("x", x)
    s = segment_means_matrix(x.shape[-2], num_landmarks, x.dtype, x.device)
    return s @ x


# ----------------------------------------------------------------------------- Nyström


def newton_schulz_pinv(a: Tensor, iters: int = 6) -> Tensor:
    """Moore–Penrose pseudo-inverse of each (..., m, m) matrix by Xiong et al.'s iteration.

    ``Z₀ = Aᵀ / (‖A‖₁ ‖A‖∞)``, ``Z ← ¼ Z (13 I − AZ (15 I − AZ (7 I − AZ)))``: third-order
    convergence to ``A⁺`` (needs only matrix products, so it runs fast on accelerators).
    """
    a = _check_tensor("a", a)
    if a.shape[-1] != a.shape[-2]:
        raise ValueError(f"a must be square (..., m, m), got {tuple(a.shape)}")
    iters = check_int("iters", iters, minimum=0)
    norm1 = a.abs().sum(dim=-2).amax(dim=-1)  # max column sum
    norm_inf = a.abs().sum(dim=-1).amax(dim=-1)  # max row sum
    # ‖A‖₂² <= ‖A‖₁ ‖A‖∞, so Z₀ = Aᵀ / (‖A‖₁ ‖A‖∞) starts inside the region of convergence.
    denom = (norm1 * norm_inf).clamp_min(torch.finfo(a.dtype).tiny)
    z = a.transpose(-2, -1) / denom[..., None, None]
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    for _ in range(iters):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def _pinv(a: Tensor, method: str, iters: int) -> Tensor:
    return torch.linalg.pinv(a) if method == "exact" else newton_schulz_pinv(a, iters)


def nystrom_factors(
    query: Tensor,
    key: Tensor,
    num_landmarks: int,
    scale: float | None = None,
    pinv: str = "exact",
    iters: int = 6,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(F̃, Ã⁺, B̃)``: the L×m, m×m and m×n factors of Nyström attention ``F̃ Ã⁺ B̃``.

    Landmarks are segment means of Q and K (``num_landmarks`` of each); ``pinv`` is "exact"
    (``torch.linalg.pinv``, the reference) or "newton" (``iters`` Newton–Schulz steps).
    """
    _check_qkv(query, key)
    m = check_int("num_landmarks", num_landmarks, maximum=min(query.shape[-2], key.shape[-2]))
    pinv = check_choice("pinv", pinv, PINV_METHODS)
    c = resolve_scale(scale, query)
    q_land, k_land = segment_means(query, m), segment_means(key, m)
    f = masked_softmax(c * query @ k_land.transpose(-2, -1))
    a = masked_softmax(c * q_land @ k_land.transpose(-2, -1))
    b = masked_softmax(c * q_land @ key.transpose(-2, -1))
    return f, _pinv(a, pinv, iters), b


def nystrom_weights(query: Tensor, key: Tensor, num_landmarks: int, scale: float | None = None,
                    pinv: str = "exact", iters: int = 6) -> Tensor:
    """The L×n matrix ``F̃ Ã⁺ B̃`` that Nyström attention applies to V (rank <= num_landmarks)."""
    f, a_pinv, b = nystrom_factors(query, key, num_landmarks, scale, pinv, iters)
    return f @ a_pinv @ b


def nystrom_attention(query: Tensor, key: Tensor, value: Tensor, num_landmarks: int,
                      scale: float | None = None, pinv: str = "newton", iters: int = 6) -> Tensor:
    """Nyström attention ``F̃ (Ã⁺ (B̃ V))``, evaluated right to left: O(n m d), no n×n matrix."""
    _check_qkv(query, key, value)
    f, a_pinv, b = nystrom_factors(query, key, num_landmarks, scale, pinv, iters)
    return f @ (a_pinv @ (b @ value))


# ----------------------------------------------------------------------------- SVD reference


def truncated_svd(a: Tensor, rank: int) -> Tensor:
    """Best rank-``rank`` approximation of each (..., m, n) matrix in ``a`` (Eckart–Young)."""
    a = _check_tensor("a", a)
    rank = check_int("rank", rank, minimum=0, maximum=min(a.shape[-2], a.shape[-1]))
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    return (u[..., :rank] * s[..., None, :rank]) @ vh[..., :rank, :]


def eckart_young_error(a: Tensor, rank: int) -> Tensor:
    """``sqrt(Σ_{i>r} σᵢ²) / ‖A‖_F`` per matrix: the relative error of the best rank-r fit."""
    a = _check_tensor("a", a)
    rank = check_int("rank", rank, minimum=0, maximum=min(a.shape[-2], a.shape[-1]))
    s = torch.linalg.svdvals(a)
    return s[..., rank:].square().sum(-1).sqrt() / s.square().sum(-1).sqrt()


def relative_frobenius_error(approx: Tensor, exact: Tensor) -> Tensor:
    """``‖approx − exact‖_F / ‖exact‖_F`` over the last two axes, one value per matrix."""
    approx = _check_tensor("approx", approx)
    exact = _check_tensor("exact", exact)
    if approx.shape != exact.shape:
        raise ValueError(f"approx must have the shape of exact {tuple(exact.shape)}, got "
                         f"{tuple(approx.shape)}")
    norm = torch.linalg.matrix_norm(exact)
    if (norm == 0).any():
        raise ValueError("exact has a zero matrix: its relative error is undefined")
    return torch.linalg.matrix_norm(approx - exact) / norm
