"""Block-sparse attention: layouts as data and a kernel that only touches the listed keys.

A `SparseLayout` splits the L queries into blocks of ``block`` rows. Query block ``q`` lists the
key positions it gathers, ``key_index[q]`` (m slots, padded), and a boolean ``mask[q]`` of shape
(block, m) saying which of its rows sees which slot. Keys are listed by position, not by key
block, so a strided pattern costs its n/s positions rather than n/s whole blocks; contiguous
windows are simply runs of positions. Padded slots and padded query rows are all-False.

Patterns (top-left aligned like ``is_causal``; ``causal=False`` drops the ``j <= i`` condition):

    local(w):            query i sees key j when 0 <= i - j < w      (bidirectional: |i - j| < w)
    strided(s, width):   query i sees key j when j mod s >= s - width (the last ``width`` of
                         every span of s; width 1 is "every s-th token", width = block a block)
    union:               either

`block_sparse_attention` computes ``softmax(scale·q kᵀ + M) v`` for that mask M with O(L·m)
scores instead of L²; the cost analysis is in docs/derivations/sparse-attention-complexity.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch

from scratchformer.functional._checks import check_qkv, resolve_scale
from scratchformer.functional.attention import masked_softmax
from scratchformer.validation import check_bool, check_int

__all__ = [
    "SparseLayout",
    "SparsePattern",
    "block_sparse_attention",
    "block_sparse_scores",
    "layout_to_mask",
    "local_layout",
    "strided_layout",
    "union_layout",
    "window_strided_layout",
]

Predicate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True, eq=False)
class SparseLayout:
    """Which keys each block of ``block`` queries sees, for sequences of ``length`` tokens.

    ``key_index`` (n_blocks, m) int64: key positions gathered for each query block (padding 0).
    ``mask`` (n_blocks, block, m) bool: row r of query block q sees slot c. ``causal`` records
    that no row sees a later key (set by the constructors; checked on construction).
    """

    length: int
    block: int
    causal: bool
    key_index: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        check_int("length", self.length)
        check_int("block", self.block)
        nb = self.n_blocks
        if self.key_index.dtype != torch.int64 or self.key_index.ndim != 2:
            raise ValueError(
                f"key_index must be a 2-D int64 tensor (n_blocks, slots), got dtype "
                f"{self.key_index.dtype} and shape {tuple(self.key_index.shape)}"
            )
        m = self.key_index.shape[1]
        if self.key_index.shape[0] != nb:
            raise ValueError(
                f"key_index must have n_blocks={nb} rows, got {self.key_index.shape[0]}"
            )
        if self.mask.dtype != torch.bool or tuple(self.mask.shape) != (nb, self.block, m):
            raise ValueError(
                f"mask must be bool of shape {(nb, self.block, m)}, got dtype {self.mask.dtype} "
                f"and shape {tuple(self.mask.shape)}"
            )
        if m and (self.key_index.min() < 0 or self.key_index.max() >= self.length):
            raise ValueError(f"key_index entries must lie in [0, length={self.length})")
        if self.causal:
            rows = torch.arange(nb * self.block, device=self.mask.device).view(nb, -1, 1)
            if bool((self.mask & (self.key_index[:, None, :] > rows)).any()):
                raise ValueError("causal=True but the mask lets a query see a later key")

    @property
    def n_blocks(self) -> int:
        """Number of query blocks, ceil(length / block); the last one may be partly padding."""
        return -(-self.length // self.block)

    @property
    def slots(self) -> int:
        """Key slots gathered per query block (the padded maximum m)."""
        return self.key_index.shape[1]

    @property
    def entries(self) -> int:
        """Query-key pairs that take part: the number of True entries of the dense mask."""
        return int(self.mask.sum())

    @property
    def gathered_entries(self) -> int:
        """Scores the kernel computes per head: n_blocks · block · m (padding included)."""
        return self.n_blocks * self.block * self.slots

    def to(self, device: torch.device | str) -> SparseLayout:
        """The same layout with its tensors on ``device``."""
        return SparseLayout(
            self.length, self.block, self.causal, self.key_index.to(device), self.mask.to(device)
        )


# --- constructors ------------------------------------------------------------------------------


def _from_predicate(
    length: int,
    block: int,
    causal: bool,
    candidates: Callable[[int, int], torch.Tensor],
    allowed: Predicate,
) -> SparseLayout:
    """Layout from per-block candidate key positions and a token predicate ``allowed(i, j)``.

    ``candidates(first, last)`` returns the key positions that queries first..last may see (a
    superset is fine: slots no row uses are dropped). The work is O(n_blocks · m · block).
    """
    nb = -(-length // block)
    rows = torch.arange(block)
    keys, masks = [], []
    for q in range(nb):
        first, last = q * block, min(q * block + block, length) - 1
        cand = candidates(first, last)
        qpos = first + rows[:, None]
        seen = allowed(qpos, cand[None, :]) & (qpos < length)
        if causal:
            seen &= cand[None, :] <= qpos
        used = seen.any(dim=0)
        keys.append(cand[used])
        masks.append(seen[:, used])
    m = max(k.numel() for k in keys)
    key_index = torch.zeros(nb, m, dtype=torch.int64)
    mask = torch.zeros(nb, block, m, dtype=torch.bool)
    for q, (k, s) in enumerate(zip(keys, masks, strict=True)):
        key_index[q, : k.numel()] = k
        mask[q, :, : k.numel()] = s
    return SparseLayout(length, block, causal, key_index, mask)


def _window_candidates(length: int, window: int, causal: bool) -> Callable[..., torch.Tensor]:
    def candidates(first: int, last: int) -> torch.Tensor:
        stop = last + 1 if causal else min(last + window, length)
        return torch.arange(max(0, first - window + 1), stop)

    return candidates


def _window_allowed(window: int, causal: bool) -> Predicate:
    if causal:
        return lambda i, j: (i - j >= 0) & (i - j < window)
    return lambda i, j: (i - j).abs() < window


def _stride_allowed(stride: int, width: int) -> Predicate:
    return lambda i, j: (j % stride) >= stride - width


def _stride_candidates(length: int, stride: int, width: int, causal: bool):
    positions = torch.arange(length)
    summary = positions[(positions % stride) >= stride - width]

    def candidates(first: int, last: int) -> torch.Tensor:
        return summary[summary <= last] if causal else summary

    return candidates


def local_layout(length: int, block: int, window: int, *, causal: bool = True) -> SparseLayout:
    """Sliding window: query i sees keys i-window+1..i (causal) or |i - j| < window (not causal)."""
    length, block = check_int("length", length), check_int("block", block)
    window, causal = check_int("window", window), check_bool("causal", causal)
    return _from_predicate(
        length, block, causal, _window_candidates(length, window, causal),
        _window_allowed(window, causal),
    )  # fmt: skip


def _check_stride(stride: object, width: object) -> tuple[int, int]:
    stride, width = check_int("stride", stride), check_int("width", width)
    if width > stride:
        raise ValueError(f"width must be <= stride={stride}, got {width}")
    return stride, width


def strided_layout(
    length: int, block: int, stride: int, *, width: int = 1, causal: bool = True
) -> SparseLayout:
    """Every query sees the last ``width`` positions of each span of ``stride``: j mod s >= s-width.

    width=1 is "every s-th token" (positions s-1, 2s-1, ...); width=block with block | stride
    makes the summary positions whole blocks. Causal layouts keep only j <= i.
    """
    length, block = check_int("length", length), check_int("block", block)
    stride, width = _check_stride(stride, width)
    causal = check_bool("causal", causal)
    return _from_predicate(
        length, block, causal, _stride_candidates(length, stride, width, causal),
        _stride_allowed(stride, width),
    )  # fmt: skip


def window_strided_layout(
    length: int, block: int, window: int, stride: int, *, width: int = 1, causal: bool = True
) -> SparseLayout:
    """Union of `local_layout` (window) and `strided_layout` (stride, width), built in one pass."""
    length, block = check_int("length", length), check_int("block", block)
    window, causal = check_int("window", window), check_bool("causal", causal)
    stride, width = _check_stride(stride, width)
    win_c = _window_candidates(length, window, causal)
    str_c = _stride_candidates(length, stride, width, causal)
    win_a, str_a = _window_allowed(window, causal), _stride_allowed(stride, width)
    return _from_predicate(
        length, block, causal, lambda a, b: torch.cat((win_c(a, b), str_c(a, b))).unique(),
        lambda i, j: win_a(i, j) | str_a(i, j),
    )  # fmt: skip


def union_layout(*layouts: SparseLayout) -> SparseLayout:
    """The layout whose mask is the OR of the given layouts' masks (same length and block)."""
    if not layouts:
        raise ValueError("union_layout needs at least one layout, got none")
    for i, lay in enumerate(layouts):
        if not isinstance(lay, SparseLayout):
            raise TypeError(f"layouts[{i}] must be a SparseLayout, got {type(lay).__name__}")
    first = layouts[0]
    for i, lay in enumerate(layouts[1:], start=1):
        if (lay.length, lay.block) != (first.length, first.block):
            raise ValueError(
                f"layouts must share length and block, got (length, block) = "
                f"{(first.length, first.block)} for layouts[0] and {(lay.length, lay.block)} "
                f"for layouts[{i}]"
            )
    keys, masks = [], []
    for q in range(first.n_blocks):
        valid = [(lay.key_index[q][lay.mask[q].any(0)], lay.mask[q][:, lay.mask[q].any(0)])
                 for lay in layouts]  # fmt: skip
        merged, inverse = torch.cat([k for k, _ in valid]).unique(return_inverse=True)
        seen = torch.zeros(first.block, merged.numel(), dtype=torch.bool)
        start = 0
        for k, s in valid:
            cols = inverse[start : start + k.numel()]
            seen[:, cols] |= s
            start += k.numel()
        keys.append(merged)
        masks.append(seen)
    m = max(k.numel() for k in keys)
    key_index = torch.zeros(first.n_blocks, m, dtype=torch.int64)
    mask = torch.zeros(first.n_blocks, first.block, m, dtype=torch.bool)
    for q, (k, s) in enumerate(zip(keys, masks, strict=True)):
        key_index[q, : k.numel()] = k
        mask[q, :, : k.numel()] = s
    causal = all(lay.causal for lay in layouts)
    return SparseLayout(first.length, first.block, causal, key_index, mask)


@dataclass(frozen=True)
class SparsePattern:
    """Window + strided pattern independent of length: builds (and caches) a layout per length.

    ``window`` and ``stride`` default to round(√L) for each length L (the least-cost two-hop
    connected choice); ``width`` is `strided_layout`'s. Used by the "block_sparse" backend.
    """

    block: int = 64
    window: int | None = None
    stride: int | None = None
    width: int = 1

    def __post_init__(self) -> None:
        check_int("block", self.block)
        for name in ("window", "stride"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))
        if self.stride is not None:
            _check_stride(self.stride, self.width)

    def layout(self, length: int, causal: bool, device: torch.device | str = "cpu") -> SparseLayout:
        """The layout for sequences of ``length`` tokens on ``device`` (cached)."""
        return _cached_layout(self, length, causal, torch.device(device))


@lru_cache(maxsize=64)
def _cached_layout(
    pattern: SparsePattern, length: int, causal: bool, device: torch.device
) -> SparseLayout:
    root = max(1, round(math.sqrt(length)))
    window = root if pattern.window is None else pattern.window
    stride = root if pattern.stride is None else pattern.stride
    width = min(pattern.width, stride)
    layout = window_strided_layout(length, pattern.block, window, stride, width=width,
                                   causal=causal)  # fmt: skip
    return layout.to(device)


def layout_to_mask(layout: SparseLayout) -> torch.Tensor:
    """The layout as a dense boolean (L, L) mask, True where query i sees key j (O(L²) memory)."""
    if not isinstance(layout, SparseLayout):
        raise TypeError(f"layout must be a SparseLayout, got {type(layout).__name__}")
    L, b = layout.length, layout.block
    dense = torch.zeros(layout.n_blocks * b, L, dtype=torch.bool, device=layout.mask.device)
    rows = torch.arange(layout.n_blocks * b, device=dense.device).view(layout.n_blocks, b, 1)
    cols = layout.key_index[:, None, :].expand(-1, b, -1)
    hit = layout.mask
    dense[rows.expand_as(cols)[hit], cols[hit]] = True
    return dense[:L]


# --- the kernel --------------------------------------------------------------------------------


def _check_inputs(query, key, value, layout) -> None:
    """The shared query/key/value checks (`check_qkv`), plus one length L == layout.length."""
    if not isinstance(layout, SparseLayout):
        raise TypeError(f"layout must be a SparseLayout, got {type(layout).__name__}")
    check_qkv(query, key, value)
    for name, t in (("query", query), ("key", key)):  # value's length is key's (check_qkv)
        if t.shape[-2] != layout.length:
            raise ValueError(
                f"{name} length (axis -2) must equal layout.length={layout.length}, got "
                f"{t.shape[-2]} (self-attention: queries and keys share one sequence)"
            )
    if layout.key_index.device != query.device:
        raise ValueError(
            f"layout is on {layout.key_index.device} but query is on {query.device}; "
            "use layout.to(device)"
        )


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """Zero-pad axis -2 of ``t`` to ``rows``."""
    extra = rows - t.shape[-2]
    return t if extra == 0 else torch.nn.functional.pad(t, (0, 0, 0, extra))


def _gather(t: torch.Tensor, layout: SparseLayout) -> torch.Tensor:
    """(..., L, E) -> (..., n_blocks, m, E): each query block's key slots, one index_select."""
    flat = t.index_select(-2, layout.key_index.reshape(-1))
    return flat.unflatten(-2, tuple(layout.key_index.shape))


def block_sparse_scores(
    query: torch.Tensor, key: torch.Tensor, layout: SparseLayout, scale: float | None = None
) -> torch.Tensor:
    """Masked scores ``scale·q kᵀ`` of the gathered slots, (..., n_blocks, block, m), −inf off-mask.

    This is the only score tensor the kernel builds: n_blocks·block·m ≈ L·m entries, never L².
    """
    _check_inputs(query, key, key, layout)
    scale = resolve_scale(scale, query)
    b, nb = layout.block, layout.n_blocks
    q = _pad_rows(query, nb * b).unflatten(-2, (nb, b))  # (..., nb, b, E)
    k = _gather(key, layout)  # (..., nb, m, E)
    scores = torch.matmul(q * scale, k.transpose(-2, -1))
    return scores.masked_fill(~layout.mask, float("-inf"))


def block_sparse_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    layout: SparseLayout,
    scale: float | None = None,
) -> torch.Tensor:
    """``softmax(scale·q kᵀ + M) v`` for the layout's mask M, from gathered key/value slots.

    Shapes: query, key (..., L, E), value (..., L, Ev) -> (..., L, Ev), L = layout.length.
    Work and memory O(L·m·E) with m the layout's slots per block; gradients by autograd through
    the gather (index_select, whose backward is a scatter-add). Rows seeing no key give zeros.
    """
    _check_inputs(query, key, value, layout)
    scores = block_sparse_scores(query, key, layout, scale)
    # The fused softmax when every row sees a key; otherwise zeros, not NaN, for empty rows
    # (padding rows of the last block, or queries before the first strided position).
    every_row_sees = bool(layout.mask.any(dim=-1).all())
    weights = torch.softmax(scores, dim=-1) if every_row_sees else masked_softmax(scores)
    out = torch.matmul(weights, _gather(value, layout))  # (..., nb, b, Ev)
    return out.flatten(-3, -2)[..., : layout.length, :]
