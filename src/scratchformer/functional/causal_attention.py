"""Causal attention evaluated one tile of query rows at a time, with a backward written by hand.

This is the kernel behind ``scaled_dot_product_attention(..., is_causal=True)`` (without
dropout), exposed with its tuning knobs as ``causal_attention``. It evaluates the formulas of
``scratchformer.functional.attention`` (see ``docs/derivations/attention-gradient.md``)

    A = softmax(c·Q Kᵀ + M),   O = A V,
    dV = Aᵀ dO,   dA = dO Vᵀ,   dP = A ⊙ (dA − rowsum(dA ⊙ A)),   dQ = c·dP K,   dK = c·dPᵀ Q,

for the top-left aligned causal mask M, one tile of query rows at a time: a tile only meets the
keys up to its last row, which skips the keys above the diagonal (half the work) and never
holds a whole L×S matrix (see ``docs/benchmarks.md``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch.autograd.function import once_differentiable

from scratchformer.functional._checks import check_batch, check_qkv, resolve_scale
from scratchformer.validation import check_bool, check_optional_int

__all__ = ["CausalAttentionFunction", "causal_attention"]

DEFAULT_BLOCK_ROWS = 128  # on the CPU; see _default_tiling
DEFAULT_TILE_ELEMENTS = 1 << 20  # 4 MiB of float32 scores per tile, on the CPU

Tile = tuple[int, int, int, int, int]


def _default_tiling(device: torch.device, L: int, S: int, n: int) -> tuple[int, int]:
    """``(block_rows, tile_elements)`` for ``device``: cache-sized tiles on the CPU, one elsewhere.

    On the CPU small tiles keep the scores in cache. On a GPU each tile costs about ten kernel
    launches from Python, which dominate: with the CPU tiling an H100 ran 10–18× slower than
    SDPA for forward + backward (docs/benchmarks.md). There the whole problem is one tile: no
    causal skip, but a handful of launches, like the textbook masked form.
    """
    if device.type == "cpu":
        return DEFAULT_BLOCK_ROWS, DEFAULT_TILE_ELEMENTS
    return max(L, 1), max(n * L * S, 1)


@lru_cache(maxsize=16)
def _above_diagonal(rows: int, cols: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Additive (rows, cols) block: −inf where column c > row r (keys a tile hides), else 0."""
    hidden = torch.ones(rows, cols, dtype=torch.bool, device=device).triu(1)
    return torch.zeros(rows, cols, dtype=dtype, device=device).masked_fill_(hidden, -math.inf)


def _exp_floor(dtype: torch.dtype) -> float | None:
    """Lower bound for exponents: log(e · smallest normal number), or None for narrow dtypes.

    ``exp`` of an argument whose result would be subnormal or zero (below about −87.3 in
    float32, −708.4 in float64) takes a slow path in PyTorch's CPU kernels, 25–70× slower per
    element (torch 2.13), and −inf about 8×. Raising such arguments to this floor changes a
    weight of less than 3·10⁻³⁸ (float32) into 3·10⁻³⁸, invisible next to a row sum of at least
    1. Float16 (smallest normal 6·10⁻⁵) would be changed visibly, so it gets no floor.
    """
    tiny = torch.finfo(dtype).tiny
    return math.log(tiny) + 1.0 if tiny < 1e-30 else None


def _tiles(L: int, S: int, n: int, block_rows: int, tile_elements: int) -> list[Tile]:
    """Tiles ``(i0, i1, j1, b0, b1)``: queries [i0, i1) of batch rows [b0, b1) against keys [0, j1).

    Causal (top-left aligned): query i sees keys 0..i, so the keys at or beyond ``i1`` are
    hidden from the whole block and never touched. That skips about half of the L×S work.
    Batch rows are grouped so that one tile holds about ``tile_elements`` scores.
    """
    tiles = []
    for i0 in range(0, L, block_rows):
        i1 = min(i0 + block_rows, L)
        j1 = min(i1, S)
        group = max(1, tile_elements // ((i1 - i0) * j1))
        tiles += [(i0, i1, j1, b0, min(b0 + group, n)) for b0 in range(0, n, group)]
    return tiles


def _largest(tiles: list[Tile], cols: int | None = None) -> int:
    """Elements of the largest (batch, rows, keys) tile, or (batch, keys, cols) if ``cols``."""
    if cols is None:
        return max((b1 - b0) * (i1 - i0) * j1 for i0, i1, j1, b0, b1 in tiles)
    return max((b1 - b0) * j1 * cols for _, _, j1, b0, b1 in tiles)


def _view(buffer: torch.Tensor | None, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A contiguous ``shape`` view of the start of a flat reusable buffer, or a fresh tensor.

    Reusing one buffer from tile to tile avoids allocating, and page-faulting, new memory.
    """
    if buffer is None:
        return like.new_empty(shape)
    return buffer[: math.prod(shape)].view(shape)


class _TileScores:
    """Scores ``c·Q Kᵀ`` and weights of the tiles of one causal attention call."""

    def __init__(self, query: torch.Tensor, key: torch.Tensor, scale: float) -> None:
        self.query, self.key_t, self.scale = query, key.transpose(1, 2), scale
        self.floor = _exp_floor(query.dtype)  # None (no lower clamp) for float16

    def scores(self, tile: Tile, buffer: torch.Tensor | None) -> torch.Tensor:
        """``c·Q Kᵀ`` of one tile, shape (b1-b0, i1-i0, j1); the scale rides on the product."""
        i0, i1, j1, b0, b1 = tile
        out = _view(buffer, (b1 - b0, i1 - i0, j1), self.query)
        # beta=0: the buffer's old contents are ignored; alpha=c: the scale costs nothing.
        return out.baddbmm_(self.query[b0:b1, i0:i1], self.key_t[b0:b1, :, :j1], beta=0.0,
                            alpha=self.scale)  # fmt: skip

    def exp_shifted_(self, scores: torch.Tensor, shift: torch.Tensor, tile: Tile) -> torch.Tensor:
        """``exp(scores − shift)`` in place, with exact zeros above the diagonal.

        ``shift`` is at least every visible score of its row, so the visible exponents are
        <= 0 and clamping to [floor, 0] changes none of them (bar the floor, see
        ``_exp_floor``); hidden ones are clamped too, then zeroed.
        """
        scores.sub_(shift).clamp_(min=self.floor, max=0.0).exp_()
        i0, _, j1, _, _ = tile
        if j1 > i0:  # the tile straddles the diagonal: zero keys i0+c > query i0+r
            scores[:, :, i0:j1].tril_()
        return scores

    def row_max(self, scores: torch.Tensor, tile: Tile) -> torch.Tensor:
        """Row maxima over the visible keys (hidden ones pushed to −inf first); always finite."""
        i0, i1, j1, _, _ = tile
        if j1 > i0:
            corner = _above_diagonal(i1 - i0, j1 - i0, scores.device, scores.dtype)
            scores[:, :, i0:j1].add_(corner)  # an add, not masked_fill_: about 5× faster
        return scores.amax(dim=-1, keepdim=True)  # key 0 is visible to every query


def _causal_forward(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float,
    tiles: list[Tile],
    keep: str,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output of causal attention on (N, L, E) inputs, tile by tile.

    ``keep`` says what the backward pass will need: ``"weights"`` returns every tile's weights
    A; ``"lse"`` returns one (N, L, 1) tensor, the row log-sum-exp ``m + log z`` from which
    ``A = exp(c·QKᵀ − lse)`` can be rebuilt; ``"nothing"`` returns an empty list.
    """
    N, L = query.shape[0], query.shape[1]
    out = value.new_empty(N, L, value.shape[-1])
    lse = query.new_empty(N, L, 1) if keep == "lse" else None
    work = None if keep == "weights" else query.new_empty(_largest(tiles))
    tile_scores = _TileScores(query, key, scale)
    kept: list[torch.Tensor] = []
    for tile in tiles:
        i0, i1, j1, b0, b1 = tile
        scores = tile_scores.scores(tile, work)
        row_max = tile_scores.row_max(scores, tile)
        e = tile_scores.exp_shifted_(scores, row_max, tile)  # softmax numerators
        total = e.sum(dim=-1, keepdim=True)  # >= 1: the row maximum contributes exp(0)
        out_tile = out[b0:b1, i0:i1]
        if keep == "weights":
            kept.append(e.div_(total))  # the weights A, saved for the backward pass
            torch.bmm(e, value[b0:b1, :j1], out=out_tile)
        else:  # normalise the (rows × Ev) output instead of the (rows × keys) tile
            torch.bmm(e, value[b0:b1, :j1], out=out_tile)
            out_tile.div_(total)
            if lse is not None:
                lse[b0:b1, i0:i1] = row_max + total.log()
    if lse is not None:
        kept.append(lse)
    return out, kept


class CausalAttentionFunction(torch.autograd.Function):
    """Causal ``softmax(c·QKᵀ + M) V`` on (N, L, E) tensors, tile by tile, derived backward.

    Same formulas as ``AttentionFunction`` (dV = AᵀdO, dP = A ⊙ (dA − rowsum(dA ⊙ A)),
    dQ = c·dP K, dK = c·dPᵀQ), applied to one tile of query rows at a time. A tile holds
    *whole* rows of visible keys, so its softmax is exact (no online rescaling) and δ is exact.
    With ``recompute`` only the row log-sum-exp is saved and each tile's A is rebuilt in the
    backward pass (O(L) memory, one more matrix product); otherwise the tiles of A are saved
    (about L·S/2 numbers per batch row, no recomputation).
    """

    @staticmethod
    def forward(
        ctx,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        scale: float,
        recompute: bool,
        block_rows: int,
        tile_elements: int,
    ) -> torch.Tensor:
        N, L, S = query.shape[0], query.shape[1], key.shape[1]
        tiles = _tiles(L, S, N, block_rows, tile_elements)
        keep = "lse" if recompute else "weights"
        out, kept = _causal_forward(query, key, value, scale, tiles, keep)
        ctx.save_for_backward(query, key, value, *kept)
        ctx.scale, ctx.recompute, ctx.tiles = scale, recompute, tiles
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        query, key, value, *kept = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_q = torch.empty_like(query)  # every query row is written by exactly one tile
        grad_k, grad_v = torch.zeros_like(key), torch.zeros_like(value)
        value_t, tiles = value.transpose(1, 2), ctx.tiles
        tile_scores = _TileScores(query, key, ctx.scale)
        work = query.new_empty(_largest(tiles)) if ctx.recompute else None
        grad_work, prod_work = query.new_empty(_largest(tiles)), query.new_empty(_largest(tiles))
        # dK and dV tiles are computed into a contiguous buffer and then added: an in-place
        # baddbmm_ into a strided slice would run as one small matrix product per batch row.
        acc_work = query.new_empty(_largest(tiles, max(key.shape[-1], value.shape[-1])))
        for t, tile in enumerate(tiles):
            i0, i1, j1, b0, b1 = tile
            rows, batch = slice(i0, i1), slice(b0, b1)
            if ctx.recompute:  # A = exp(c·QKᵀ − lse), rebuilt tile by tile
                weights = tile_scores.scores(tile, work)
                weights = tile_scores.exp_shifted_(weights, kept[0][batch, rows], tile)
            else:
                weights = kept[t]
            d_out = grad_out[batch, rows]
            acc = _view(acc_work, (b1 - b0, j1, value.shape[-1]), value)
            grad_v[batch, :j1] += torch.bmm(weights.transpose(1, 2), d_out, out=acc)  # AᵀdO
            grad_w = _view(grad_work, weights.shape, weights)
            torch.bmm(d_out, value_t[batch, :, :j1], out=grad_w)  # dA = dO Vᵀ
            prod = _view(prod_work, weights.shape, weights)
            delta = torch.mul(grad_w, weights, out=prod).sum(dim=-1, keepdim=True)
            grad_p = grad_w.sub_(delta).mul_(weights)  # dP = A ⊙ (dA − δ), in place
            torch.bmm(grad_p, key[batch, :j1], out=grad_q[batch, rows])  # dQ / c
            acc = _view(acc_work, (b1 - b0, j1, key.shape[-1]), key)
            acc.baddbmm_(grad_p.transpose(1, 2), query[batch, rows], beta=0.0, alpha=ctx.scale)
            grad_k[batch, :j1] += acc  # dK += c·dPᵀQ
        return grad_q.mul_(ctx.scale), grad_k, grad_v, None, None, None, None

def _causal_apply(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float,
    recompute: bool = False,
    block_rows: int | None = None,
    tile_elements: int | None = None,
) -> torch.Tensor:
    """Causal attention on checked inputs: flatten the batch axes, run the tiles, reshape back.

    Also the causal path of ``functional.attention.scaled_dot_product_attention``. Broadcast
    batch axes are expanded before flattening, so autograd sums their gradients. Without
    gradients to compute, no weights or log-sum-exp are kept at all. ``None`` tiling arguments
    take the device's defaults (``_default_tiling``).
    """
    L, S, Ev = query.shape[-2], key.shape[-2], value.shape[-1]
    if L == 0 or S == 0:
        # Nothing to tile: no queries, or no keys (every row fully masked, zero weights). The
        # product through the empty axis is the answer: shape (..., L, Ev), zeros, zero grads.
        return torch.matmul(torch.matmul(query, key.transpose(-2, -1)), value)
    batch = torch.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    q, k, v = (t.expand(*batch, *t.shape[-2:]).reshape(-1, *t.shape[-2:])
               for t in (query, key, value))  # fmt: skip
    rows, elements = _default_tiling(query.device, L, S, q.shape[0])
    block_rows = rows if block_rows is None else block_rows
    tile_elements = elements if tile_elements is None else tile_elements
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        out = CausalAttentionFunction.apply(q, k, v, scale, recompute, block_rows, tile_elements)
    else:
        tiles = _tiles(L, S, q.shape[0], block_rows, tile_elements)
        out, _ = _causal_forward(q, k, v, scale, tiles, "nothing")
    return out.reshape(*batch, L, Ev)


def causal_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float | None = None,
    *,
    recompute: bool = False,
    block_rows: int | None = None,
    tile_elements: int | None = None,
) -> torch.Tensor:
    """Causal (top-left aligned) attention, tile by tile: ``scaled_dot_product_attention``'s
    ``is_causal=True`` path, exposed with its tuning knobs.

    ``block_rows`` queries form a block, which only meets the keys up to its last row; batch
    rows are grouped so a tile holds about ``tile_elements`` scores (defaults: 128 and 2**20 on
    the CPU, a single tile on other devices). ``recompute`` trades one more matrix product in
    the backward pass for O(L) instead of O(L·S) saved memory.
    """
    check_qkv(query, key, value)
    check_batch(query, key, value)
    recompute = check_bool("recompute", recompute)
    block_rows = check_optional_int("block_rows", block_rows)
    tile_elements = check_optional_int("tile_elements", tile_elements)
    scale = resolve_scale(scale, query)
    return _causal_apply(query, key, value, scale, recompute, block_rows, tile_elements)

