"""Multi-head attention: project, split into heads, attend, merge, project back.

The kernel that turns per-head Q, K, V into the heads' outputs is looked up by name
(``backend``) in `ATTENTION_KERNELS`; every kernel has one signature,
``kernel(module, q, k, v, *, attn_mask, dropout_p, is_causal) -> heads``, and a new one is one
`register_attention_kernel` away. Built in: ``"scratch"``, our own
`scaled_dot_product_attention` with its hand-derived backward (the default), and ``"sdpa"``,
PyTorch's fused ``torch.nn.functional.scaled_dot_product_attention``. Both compute the same
function; the second is there for speed and as a reference. A third, ``"block_sparse"``,
computes a different function: attention restricted to the module's `SparsePattern` (window +
strided, ``scratchformer.functional.sparse``), in O(L·√L) instead of O(L²).

For decoding, a `LayerKVCache` passed as ``kv_cache`` receives this call's keys and values and
supplies those of earlier positions (self-attention only; see ``scratchformer.nn.kv_cache``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from scratchformer.functional._checks import resolve_scale
from scratchformer.functional.attention import (
    attention_forward,
    attention_weights,
    scaled_dot_product_attention,
    single_query_attention,
)
from scratchformer.functional.linear import affine
from scratchformer.functional.sparse import SparsePattern, block_sparse_attention, layout_to_mask
from scratchformer.nn.kv_cache import LayerKVCache, decode_causal_mask
from scratchformer.validation import check_int, check_probability

__all__ = [
    "ATTENTION_KERNELS",
    "AttentionKernel",
    "MultiHeadAttention",
    "attention_backends",
    "check_backend",
    "register_attention_kernel",
]

AttentionKernel = Callable[..., Tensor]
"""``kernel(module, q, k, v, *, attn_mask, dropout_p, is_causal) -> heads`` on (B, H, L, E)."""

ATTENTION_KERNELS: dict[str, AttentionKernel] = {}
"""Attention kernels by name; `register_attention_kernel` adds one."""


def register_attention_kernel(name: str) -> Callable[[AttentionKernel], AttentionKernel]:
    """Decorator registering an attention kernel under ``name`` (a new ``backend`` value)."""

    def deco(kernel: AttentionKernel) -> AttentionKernel:
        if name in ATTENTION_KERNELS:
            raise ValueError(f"attention kernel {name!r} registered twice")
        ATTENTION_KERNELS[name] = kernel
        return kernel

    return deco


def attention_backends() -> tuple[str, ...]:
    """The names of the registered attention kernels."""
    return tuple(ATTENTION_KERNELS)


def check_backend(backend: object, name: str = "backend") -> str:
    """Return ``backend`` if it names a registered attention kernel, else raise (naming
    the argument ``name``)."""
    if not isinstance(backend, str) or backend not in ATTENTION_KERNELS:
        raise ValueError(f"{name} must be one of {attention_backends()}, got {backend!r}")
    return backend


@register_attention_kernel("scratch")
def _scratch_kernel(module: nn.Module, q: Tensor, k: Tensor, v: Tensor, *,
                    attn_mask: Tensor | None, dropout_p: float, is_causal: bool) -> Tensor:
    """Our kernel: `scaled_dot_product_attention` with its derived backward.

    Unmasked inference (a decoding step with a KV cache) skips autograd and the per-call
    argument checks (the module built q, k, v itself): one query per row goes to
    `single_query_attention`, more to `attention_forward`, the forward pass of the general path.
    """
    if (attn_mask is None and not is_causal and not torch.is_grad_enabled()
            and (dropout_p == 0.0 or not module.training) and k.shape[-2] > 0):
        scale = resolve_scale(None, q)
        if q.shape[-2] == 1:
            return single_query_attention(q, k, v, scale)
        return attention_forward(q, k, v, scale, None)[0]
    return scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                        is_causal=is_causal)


@register_attention_kernel("sdpa")
def _sdpa_kernel(module: nn.Module, q: Tensor, k: Tensor, v: Tensor, *,
                 attn_mask: Tensor | None, dropout_p: float, is_causal: bool) -> Tensor:
    """PyTorch's fused ``scaled_dot_product_attention`` (the same function)."""
    return nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)


@register_attention_kernel("block_sparse")
def _block_sparse_kernel(module: nn.Module, q: Tensor, k: Tensor, v: Tensor, *,
                         attn_mask: Tensor | None, dropout_p: float, is_causal: bool) -> Tensor:
    """Self-attention within ``module.sparse``'s layout, O(L·√L) (a different function)."""
    return block_sparse_attention(q, k, v, _sparse_layout(module, q, k, attn_mask, dropout_p,
                                                          is_causal))


def _sparse_layout(module: nn.Module, q: Tensor, k: Tensor, attn_mask: Tensor | None,
                   dropout_p: float, is_causal: bool) -> Tensor:
    """The block layout of ``module.sparse`` for these queries, after checking the call fits."""
    pattern = getattr(module, "sparse", None)
    if pattern is None:
        raise ValueError("backend 'block_sparse' needs a pattern: pass sparse=SparsePattern()")
    if attn_mask is not None or q.shape[-2] != k.shape[-2]:
        raise NotImplementedError(
            "backend 'block_sparse' takes no attn_mask and no context: its layout is the mask"
        )
    if dropout_p > 0:
        raise NotImplementedError("backend 'block_sparse' has no attention dropout; use 0")
    return pattern.layout(q.shape[-2], is_causal, q.device)


class MultiHeadAttention(nn.Module):
    """Multi-head (self- or cross-) attention with ``n_heads`` heads of size ``d_model // n_heads``.

    Projections are plain matrices applied as ``x @ w`` (shape ``(d_model, d_model)``), so the
    weights read the way the equations are written: ``Q = x W_q + b_q``. Weights and biases are
    initialised like ``nn.Linear``: uniform in ±1/sqrt(d_model) (fan-in = d_model).
    ``backend`` picks the attention kernel ("scratch", "sdpa" or "block_sparse"); it may be
    changed at any time. "block_sparse" attends only within ``sparse`` (a `SparsePattern`).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        backend: str = "scratch",
        sparse: SparsePattern | None = None,
    ):
        super().__init__()
        if sparse is not None and not isinstance(sparse, SparsePattern):
            raise TypeError(f"sparse must be a SparsePattern or None, got {type(sparse).__name__}")
        self.sparse = sparse
        check_int("d_model", d_model)
        check_int("n_heads", n_heads)
        if d_model % n_heads != 0:
            raise ValueError(
                f"d_model must be divisible by n_heads, got d_model={d_model} and "
                f"n_heads={n_heads} (remainder {d_model % n_heads})"
            )
        check_probability("dropout", dropout)
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = float(dropout)
        self.backend = backend
        for name in ("q", "k", "v", "o"):
            self.register_parameter(f"w_{name}", nn.Parameter(torch.empty(d_model, d_model)))
            b = nn.Parameter(torch.empty(d_model)) if bias else None
            self.register_parameter(f"b_{name}", b)
        self.reset_parameters()

    @property
    def backend(self) -> str:
        """The name of the attention kernel (see `ATTENTION_KERNELS`)."""
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        self._backend = check_backend(value)

    def reset_parameters(self) -> None:
        """Draw every weight and bias from U(-1/sqrt(d_model), 1/sqrt(d_model)), as nn.Linear."""
        bound = 1.0 / math.sqrt(self.d_model)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _split_heads(self, y: torch.Tensor) -> torch.Tensor:
        """(B, T, d_model) -> (B, H, T, head_dim), a view (no copy)."""
        B, T, _ = y.shape
        return y.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)

    def _project(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """``x @ w + b`` split into heads: (B, T, d_model) -> (B, H, T, head_dim)."""
        return self._split_heads(affine(x, w, b))

    def _project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q, K, V of self-attention from one matrix product with ``[W_q | W_k | W_v]``.

        The parameters stay separate; concatenating them (3·d_model² numbers) is cheap next to
        the product of many rows. One GEMM instead of three means fewer kernel launches on a
        GPU; on CPU the two forms measure the same. Without autograd (inference) the three
        products are taken separately instead: when decoding one position at a time the product
        is a matrix-vector one, bound by reading the weights, and the concatenation would read
        and write them once more (a third of GPT-2's decoding time; see docs/benchmarks.md).
        """
        if not torch.is_grad_enabled():
            return (self._project(x, self.w_q, self.b_q), self._project(x, self.w_k, self.b_k),
                    self._project(x, self.w_v, self.b_v))
        w = torch.cat((self.w_q, self.w_k, self.w_v), dim=1)
        b = None if self.b_q is None else torch.cat((self.b_q, self.b_k, self.b_v))
        q, k, v = affine(x, w, b).split(self.d_model, dim=-1)
        return self._split_heads(q), self._split_heads(k), self._split_heads(v)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        *,
        kv_cache: LayerKVCache | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend from ``x`` (B, L, d_model) to ``context`` (B, S, d_model; default ``x``).

        ``attn_mask`` (boolean, True = take part, or additive float) broadcasts to (B, H, L, S),
        e.g. (L, S) or a key-padding mask (B, 1, 1, S). Returns (B, L, d_model), and with
        ``need_weights`` also the pre-dropout weights (B, H, L, S), computed with plain autograd
        by the scratch kernel whatever the backend. With ``kv_cache`` the keys are the cached
        ones followed by this call's (S = cached + L), and ``is_causal`` means each query sees
        the keys up to its own position (bottom-right aligned; no mask at all when L = 1).
        """
        self._check_input("x", x)
        if is_causal and attn_mask is not None:
            raise ValueError(
                "attn_mask must be None when is_causal=True (the causal mask is built for you)"
            )
        if context is None:
            q, k, v = self._project_qkv(x)
        else:
            if kv_cache is not None:
                raise ValueError("kv_cache is for self-attention only; got a context as well")
            self._check_input("context", context)
            if context.shape[0] != x.shape[0]:
                raise ValueError(
                    f"context batch size {context.shape[0]} does not match x batch size "
                    f"{x.shape[0]}"
                )
            q = self._project(x, self.w_q, self.b_q)
            k = self._project(context, self.w_k, self.b_k)
            v = self._project(context, self.w_v, self.b_v)
        if kv_cache is not None:
            past = kv_cache.length
            k, v = kv_cache.append(k, v)
            if is_causal and past > 0:
                # The new queries are the last L of S positions: align the triangle bottom-right.
                # A single query may see every key, so it needs no mask at all.
                is_causal = False
                L = q.shape[-2]
                attn_mask = decode_causal_mask(L, k.shape[-2], q.device) if L > 1 else None
        dropout_p = self.dropout if self.training else 0.0
        if self._backend == "block_sparse" and kv_cache is not None:
            raise NotImplementedError(
                "backend 'block_sparse' does not decode with a KV cache; generate with backend "
                "'scratch' or 'sdpa' (the function differs: the sparse model sees fewer keys)"
            )
        if need_weights:  # plain autograd by the scratch maths, for inspection
            if self._backend == "block_sparse":  # dense weights under the layout's mask
                layout = _sparse_layout(self, q, k, attn_mask, dropout_p, is_causal)
                attn_mask, is_causal = layout_to_mask(layout), False
            weights = attention_weights(q, k, attn_mask=attn_mask, is_causal=is_causal)
            dropped = nn.functional.dropout(weights, p=dropout_p, training=self.training)
            heads = dropped @ v
        else:
            heads = ATTENTION_KERNELS[self._backend](
                self, q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)
        B, _, L, _ = heads.shape
        merged = heads.transpose(1, 2).reshape(B, L, self.d_model)
        out = affine(merged, self.w_o, self.b_o)
        return (out, weights) if need_weights else out

    def _check_input(self, name: str, t: torch.Tensor) -> None:
        """Raise unless ``t`` is a (B, T, d_model) tensor."""
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 3 or t.shape[-1] != self.d_model:
            raise ValueError(
                f"{name} must have shape (batch, length, d_model={self.d_model}), "
                f"got {tuple(t.shape)}"
            )

    def extra_repr(self) -> str:
        """Sizes shown by ``print(module)``."""
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, head_dim={self.head_dim}, "
            f"bias={self.b_q is not None}, dropout={self.dropout}, backend={self._backend!r}"
        )
