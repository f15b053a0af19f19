"""Attention as tensor contractions: each step as an ``einsum`` beside its matmul form.

Index names: b batch, h head, q query position, k key position, l position, d model or head
feature, e head feature. Multi-head attention is four contractions

    Q = 'bld,dhe->bhle'(x, W_Q)        (and K, V likewise; W viewed as d × h × e)
    S = 'bhqe,bhke->bhqk'(Q, K) · c    (scores)
    O = 'bhqk,bhke->bhqe'(softmax(S), V)
    Y = 'bhle,hed->bld'(O, W_O)        (merge heads and project; W_O viewed as h × e × d)

and :func:`einsum_flops` counts the multiply-adds of any such contraction.
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor

from scratchformer.functional._checks import resolve_scale
from scratchformer.functional.attention import masked_softmax
from scratchformer.functional.masks import causal_mask
from scratchformer.validation import check_int

__all__ = [
    "attention_einsum",
    "attention_flops",
    "attention_matmul",
    "einsum_flops",
    "merge_heads_einsum",
    "merge_heads_matmul",
    "multi_head_attention_einsum",
    "qk_flops",
    "scores_einsum",
    "scores_matmul",
    "split_heads_einsum",
    "split_heads_matmul",
    "weighted_sum_einsum",
    "weighted_sum_matmul",
]


def _check_4d(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (batch, heads, length, features), "
                         f"got {tuple(x.shape)}")
    return x


def scores_einsum(query: Tensor, key: Tensor, scale: float | None = None) -> Tensor:
    """``c · Q Kᵀ`` as 'bhqd,bhkd->bhqk' (the default c is 1/√d)."""
    _check_4d("query", query)
    _check_4d("key", key)
    return torch.einsum("bhqd,bhkd->bhqk", query, key) * resolve_scale(scale, query)


def scores_matmul(query: Tensor, key: Tensor, scale: float | None = None) -> Tensor:
    """``c · Q Kᵀ`` as a batched matmul."""
    _check_4d("query", query)
    _check_4d("key", key)
    return query @ key.transpose(-2, -1) * resolve_scale(scale, query)


def weighted_sum_einsum(weights: Tensor, value: Tensor) -> Tensor:
    """``A V`` as 'bhqk,bhkd->bhqd'."""
    _check_4d("weights", weights)
    _check_4d("value", value)
    return torch.einsum("bhqk,bhkd->bhqd", weights, value)


def weighted_sum_matmul(weights: Tensor, value: Tensor) -> Tensor:
    """``A V`` as a batched matmul."""
    _check_4d("weights", weights)
    _check_4d("value", value)
    return weights @ value


def _attention(scores: Tensor, causal: bool) -> Tensor:
    if causal:
        allowed = causal_mask(scores.shape[-2], scores.shape[-1], scores.device)
        scores = scores.masked_fill(~allowed, float("-inf"))
    return masked_softmax(scores)


def attention_einsum(query: Tensor, key: Tensor, value: Tensor, scale: float | None = None,
                     is_causal: bool = False) -> Tensor:
    """``softmax(c · Q Kᵀ [+ causal mask]) V`` from the two einsum contractions."""
    return weighted_sum_einsum(_attention(scores_einsum(query, key, scale), is_causal), value)


def attention_matmul(query: Tensor, key: Tensor, value: Tensor, scale: float | None = None,
                     is_causal: bool = False) -> Tensor:
    """The same attention from two batched matmuls."""
    return weighted_sum_matmul(_attention(scores_matmul(query, key, scale), is_causal), value)


def _check_projection(x: Tensor, w: Tensor, n_heads: int) -> None:
    if not isinstance(x, Tensor) or x.ndim != 3:
        raise ValueError(f"x must be a (batch, length, d_model) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if not isinstance(w, Tensor) or w.ndim != 2 or w.shape[0] != x.shape[-1]:
        raise ValueError(f"w must have shape (d_model={x.shape[-1]}, h·e), got "
                         f"{tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__}")
    n_heads = check_int("n_heads", n_heads)
    if w.shape[1] % n_heads:
        raise ValueError(f"w's output size {w.shape[1]} must be divisible by n_heads={n_heads}")


def split_heads_einsum(x: Tensor, w: Tensor, n_heads: int) -> Tensor:
    """Per-head projections ``x W`` as 'bld,dhe->bhle' with W (d, h·e) viewed as (d, h, e)."""
    _check_projection(x, w, n_heads)
    return torch.einsum("bld,dhe->bhle", x, w.view(w.shape[0], n_heads, -1))


def split_heads_matmul(x: Tensor, w: Tensor, n_heads: int) -> Tensor:
    """``x W`` then a reshape into heads: (B, L, d) -> (B, h, L, e)."""
    _check_projection(x, w, n_heads)
    y = x @ w
    return y.view(*x.shape[:2], n_heads, -1).transpose(1, 2)


def merge_heads_einsum(heads: Tensor, w_o: Tensor) -> Tensor:
    """Merge and project ``concat_h(O_h) W_O`` as 'bhle,hed->bld', W_O (h·e, d) as (h, e, d)."""
    _check_4d("heads", heads)
    h, e = heads.shape[1], heads.shape[3]
    if not isinstance(w_o, Tensor) or w_o.ndim != 2 or w_o.shape[0] != h * e:
        raise ValueError(f"w_o must have shape (h·e={h * e}, d), got "
                         f"{tuple(w_o.shape) if isinstance(w_o, Tensor) else type(w_o).__name__}")
    return torch.einsum("bhle,hed->bld", heads, w_o.view(h, e, -1))


def merge_heads_matmul(heads: Tensor, w_o: Tensor) -> Tensor:
    """Transpose and reshape the heads to (B, L, h·e), then one matmul with W_O."""
    _check_4d("heads", heads)
    B, h, L, e = heads.shape
    return heads.transpose(1, 2).reshape(B, L, h * e) @ w_o


def multi_head_attention_einsum(
    x: Tensor,
    w_q: Tensor,
    w_k: Tensor,
    w_v: Tensor,
    w_o: Tensor,
    n_heads: int,
    biases: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
    is_causal: bool = False,
) -> Tensor:
    """Self-attention of ``x`` (B, L, d) written entirely as einsum contractions.

    ``biases`` = (b_q, b_k, b_v, b_o) or None; weights as in `MultiHeadAttention` (``x @ w``).
    """
    bq, bk, bv, bo = biases if biases is not None else (None,) * 4

    def project(w: Tensor, b: Tensor | None) -> Tensor:
        y = split_heads_einsum(x, w, n_heads)
        return y if b is None else y + b.view(1, n_heads, 1, -1)

    out = attention_einsum(project(w_q, bq), project(w_k, bk), project(w_v, bv),
                           is_causal=is_causal)
    y = merge_heads_einsum(out, w_o)
    return y if bo is None else y + bo


# ----------------------------------------------------------------------------- FLOPs

_TERM = re.compile(r"^[a-zA-Z]+$")


def einsum_flops(equation: str, *shapes: tuple[int, ...]) -> int:
    """Floating-point operations of a dense contraction: 2 · ∏(size of every distinct index).

    Each output element sums over the contracted indices: one multiply and one add per term
    (the usual 2·m·n·k of a matmul). With nothing contracted (an outer or element-wise
    product) it counts the multiplies only: (operands − 1) · ∏ sizes.
    """
    if not isinstance(equation, str) or "->" not in equation:
        raise ValueError(f"equation must be an explicit einsum like 'ij,jk->ik', got {equation!r}")
    lhs, rhs = equation.replace(" ", "").split("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"equation has {len(terms)} operands but {len(shapes)} shapes were given")
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes, strict=True):
        if not _TERM.match(term) or len(term) != len(shape):
            raise ValueError(f"operand {term!r} does not match shape {tuple(shape)}")
        for index, size in zip(term, shape, strict=True):
            if sizes.setdefault(index, int(size)) != size:
                raise ValueError(f"index {index!r} has sizes {sizes[index]} and {size}")
    if rhs and (not _TERM.match(rhs) or set(rhs) - set(sizes)):
        raise ValueError(f"output {rhs!r} uses an index that no operand has")
    total = math.prod(sizes.values())
    contracted = set(sizes) - set(rhs)
    return 2 * total if contracted else total * (len(terms) - 1)


def qk_flops(batch: int, heads: int, len_q: int, len_k: int, head_dim: int) -> int:
    """FLOPs of ``Q Kᵀ`` as a batched matmul: 2 · B · H · Lq · Lk · d."""
    sizes = {"batch": batch, "heads": heads, "len_q": len_q, "len_k": len_k, "head_dim": head_dim}
    b, h, lq, lk, d = (check_int(name, v, minimum=0) for name, v in sizes.items())
    return 2 * b * h * lq * lk * d


def attention_flops(batch: int, heads: int, len_q: int, len_k: int, head_dim: int,
                    value_dim: int | None = None) -> int:
    """FLOPs of the two matmuls of attention, ``Q Kᵀ`` and ``A V`` (softmax not counted)."""
    dv = head_dim if value_dim is None else check_int("value_dim", value_dim, minimum=0)
    return qk_flops(batch, heads, len_q, len_k, head_dim) + qk_flops(batch, heads, len_q,
                                                                        len_k, dv)
