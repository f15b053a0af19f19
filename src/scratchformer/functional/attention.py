"""Scaled dot-product attention, with a backward pass written out by hand.

For queries ``Q`` (L×E), keys ``K`` (S×E) and values ``V`` (S×Ev) the forward pass is

    P = scale · Q Kᵀ + M        (scores; M is the additive mask, -inf where a key is masked)
    A = softmax(P)              (row by row: the attention weights)
    O = A V                     (the output)

``AttentionFunction`` implements the backward pass derived in
``docs/derivations/attention-gradient.md``:

    dV = Aᵀ dO,   dA = dO Vᵀ,   dP = A ⊙ (dA − rowsum(dA ⊙ A)),
    dQ = scale · dP K,   dK = scale · dPᵀ Q,   dM = dP.

``scaled_dot_product_attention`` has the semantics of
``torch.nn.functional.scaled_dot_product_attention`` and uses ``AttentionFunction`` whenever
dropout is off, so the gradients it produces are the derived ones. With dropout on it falls back
to plain autograd through the same forward: the random mask would otherwise have to be stored
or regenerated, which would only add bookkeeping to a derivation that does not change.

``is_causal=True`` (without dropout) takes a faster path, ``CausalAttentionFunction``: the same
formulas evaluated one tile of query rows at a time, skipping the keys above the diagonal (half
the work) and never holding a whole L×S matrix (see ``docs/benchmarks.md``).

Fully masked rows: when every key of a query is masked, the softmax is 0/0. Here such a row gets
zero weights, a zero output and zero gradients. PyTorch 2.13 on CPU does the same (both its
math and its flash kernel); PyTorch releases before 2.5 returned NaN for such rows instead.
"""

from __future__ import annotations

import math
import numbers
from functools import lru_cache

import torch
from torch.autograd.function import once_differentiable

from scratchformer.functional.masks import causal_mask, check_mask

__all__ = [
    "AttentionFunction",
    "CausalAttentionFunction",
    "attention_weights",
    "attention_with_derived_backward",
    "causal_attention",
    "masked_softmax",
    "scaled_dot_product_attention",
]


def masked_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis that maps rows of all ``-inf`` to zeros instead of NaN.

    The row maximum is subtracted first (softmax is shift invariant) so ``exp`` never overflows.
    """
    if scores.shape[-1] == 0:  # no keys at all: empty rows, nothing to normalise
        return scores.clone()
    row_max = scores.amax(dim=-1, keepdim=True).detach()
    # A row of only -inf has max -inf; shifting by it would give -inf - (-inf) = NaN.
    row_max = torch.where(torch.isneginf(row_max), torch.zeros_like(row_max), row_max)
    e = torch.exp(scores - row_max)
    total = e.sum(dim=-1, keepdim=True)
    # total >= 1 whenever some key is unmasked (its shifted max contributes exp(0) = 1).
    return e / torch.where(total == 0, torch.ones_like(total), total)


def _softmax_rows_(scores: torch.Tensor) -> torch.Tensor:
    """``masked_softmax`` computed in place (no autograd): overwrites and returns ``scores``.

    Five passes over the matrix (max, subtract, exp, sum, divide) and no L×S temporaries.
    """
    if scores.shape[-1] == 0:
        return scores
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max.masked_fill_(torch.isneginf(row_max), 0.0)  # all -inf rows: see masked_softmax
    scores.sub_(row_max).exp_()
    total = scores.sum(dim=-1, keepdim=True)
    return scores.div_(total.masked_fill_(total == 0, 1.0))


def _scores(
    query: torch.Tensor, key: torch.Tensor, scale: float, attn_mask: torch.Tensor | None
) -> torch.Tensor:
    """Masked scaled scores ``scale · Q Kᵀ + M`` of shape (..., L, S)."""
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale
    if attn_mask is None:
        return scores
    if attn_mask.dtype == torch.bool:
        # torch.where (not masked_fill) so a mask with more batch axes than Q Kᵀ broadcasts.
        return torch.where(attn_mask, scores, float("-inf"))
    return scores + attn_mask


class AttentionFunction(torch.autograd.Function):
    """Attention ``softmax(scale·QKᵀ + M) V`` whose backward is the hand-derived one.

    Saves only ``Q, K, V`` and the weights ``A`` (nothing of size L×S×S); the softmax Jacobian
    is applied row by row through ``rowsum(dA ⊙ A)``. Not twice differentiable.
    """

    @staticmethod
    def forward(
        ctx,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        scale: float,
        attn_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        # Scale the L×E queries rather than the L×S scores, then mask and softmax in place.
        scores = torch.matmul(query * scale, key.transpose(-2, -1))
        if attn_mask is not None:
            in_place = torch.broadcast_shapes(attn_mask.shape, scores.shape) == scores.shape
            if attn_mask.dtype == torch.bool and in_place:
                scores.masked_fill_(~attn_mask, float("-inf"))
            elif attn_mask.dtype == torch.bool:  # v's batch axes enlarge the mask: broadcast
                scores = torch.where(attn_mask, scores, float("-inf"))
            else:
                scores = scores.add_(attn_mask) if in_place else scores + attn_mask
        weights = _softmax_rows_(scores)
        out = torch.matmul(weights, value)
        ctx.save_for_backward(query, key, value, weights)
        ctx.scale = scale
        ctx.mask_shape = None if attn_mask is None else attn_mask.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        query, key, value, weights = ctx.saved_tensors
        need_q, need_k, need_v, _, need_mask = ctx.needs_input_grad
        grad_q = grad_k = grad_v = grad_mask = None
        if need_v:
            grad_v = torch.matmul(weights.transpose(-2, -1), grad_out).sum_to_size(value.shape)
        if need_q or need_k or need_mask:
            grad_weights = torch.matmul(grad_out, value.transpose(-2, -1))  # dA = dO Vᵀ
            # (diag(a) − aaᵀ) da = a ⊙ (da − aᵀda), row by row. rowsum(dO ⊙ O) equals aᵀda too,
            # but in float32 it does not cancel exactly against dA (e.g. rows with one key).
            delta = (grad_weights * weights).sum(dim=-1, keepdim=True)
            grad_scores = grad_weights.sub_(delta).mul_(weights)  # dP in place: A ⊙ (dA − δ)
            if need_q:
                grad_q = (torch.matmul(grad_scores, key) * ctx.scale).sum_to_size(query.shape)
            if need_k:
                grad_k = torch.matmul(grad_scores.transpose(-2, -1), query) * ctx.scale
                grad_k = grad_k.sum_to_size(key.shape)
            if need_mask:
                grad_mask = grad_scores.sum_to_size(ctx.mask_shape)
        return grad_q, grad_k, grad_v, None, grad_mask


def attention_with_derived_backward(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float | None = None,
    attn_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``softmax(scale·QKᵀ + mask) V`` through ``AttentionFunction`` (the derived gradients).

    ``attn_mask`` is boolean (True = take part) or additive float, broadcastable to (..., L, S);
    a float mask that requires grad receives ``dM = dP`` summed over its broadcast axes.
    """
    _check_qkv(query, key, value)
    _check_batch(query, key, value)
    scale = _resolve_scale(scale, query)
    attn_mask = _prepare_mask(attn_mask, query, key, value)
    return AttentionFunction.apply(query, key, value, scale, attn_mask)


# --- causal attention, one tile of query rows at a time ---------------------------------------

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


def _check_positive_int(name: str, value: object) -> int:
    """``value`` as an int >= 1, else a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


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

    Broadcast batch axes are expanded before flattening, so autograd sums their gradients.
    Without gradients to compute, no weights or log-sum-exp are kept at all. ``None`` tiling
    arguments take the device's defaults (``_default_tiling``).
    """
    L, S, Ev = query.shape[-2], key.shape[-2], value.shape[-1]
    if L == 0 or S == 0:  # nothing to tile; the general path handles empty and all-masked rows
        return AttentionFunction.apply(query, key, value, scale, causal_mask(L, S, query.device))
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
    _check_qkv(query, key, value)
    _check_batch(query, key, value)
    if not isinstance(recompute, bool):
        raise TypeError(f"recompute must be a bool, got {type(recompute).__name__}")
    if block_rows is not None:
        block_rows = _check_positive_int("block_rows", block_rows)
    if tile_elements is not None:
        tile_elements = _check_positive_int("tile_elements", tile_elements)
    scale = _resolve_scale(scale, query)
    return _causal_apply(query, key, value, scale, recompute, block_rows, tile_elements)


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    *,
    enable_gqa: bool = False,
    training: bool = True,
) -> torch.Tensor:
    """Attention with the semantics of ``torch.nn.functional.scaled_dot_product_attention``.

    Shapes: query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev); batch axes
    broadcast. ``attn_mask`` (the attention mask) is boolean (True = take part) or an additive
    float bias, broadcastable to (..., L, S). ``is_causal`` applies the top-left aligned causal
    mask and cannot be combined with ``attn_mask``. ``scale`` defaults to 1/sqrt(E).
    ``dropout_p`` drops attention weights when ``training`` is True (PyTorch always drops; pass
    ``training=self.training`` from a module). ``enable_gqa`` repeats each of the Hk key/value
    heads (axis -3) Hq/Hk times. Fully masked rows give zeros (see the module docstring).
    """
    query, key, value, attn_mask, scale = _prepare(
        query, key, value, attn_mask, is_causal, scale, enable_gqa
    )
    dropout_p = _check_dropout(dropout_p)
    if dropout_p == 0.0 or not training:
        if is_causal and min(query.shape[-2], key.shape[-2]) > 0:
            return _causal_apply(query, key, value, scale)
        return AttentionFunction.apply(query, key, value, scale, attn_mask)
    weights = masked_softmax(_scores(query, key, scale, attn_mask))
    weights = torch.nn.functional.dropout(weights, p=dropout_p, training=True)
    return torch.matmul(weights, value)


def attention_weights(
    query: torch.Tensor,
    key: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    *,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """The attention weights ``softmax(scale·QKᵀ + mask)`` of shape (..., L, S), before dropout.

    Same arguments as ``scaled_dot_product_attention``; rows sum to 1 (0 for fully masked rows).
    Differentiable through plain autograd; meant for inspection and visualisation.
    """
    # The value only fixes the shapes checked; its last axis is irrelevant here.
    dummy_value = key[..., :1]
    query, key, _, attn_mask, scale = _prepare(
        query, key, dummy_value, attn_mask, is_causal, scale, enable_gqa
    )
    return masked_softmax(_scores(query, key, scale, attn_mask))


# --- argument checking -------------------------------------------------------------------------


def _check_qkv(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
    """Types, ranks, dtypes and matching feature/length axes of query, key and value."""
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


def _check_batch(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
    """The batch axes (all but the last two) of query, key and value must broadcast."""
    try:
        torch.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"batch axes of query {tuple(query.shape)}, key {tuple(key.shape)} and value "
            f"{tuple(value.shape)} do not broadcast"
        ) from None


def _resolve_scale(scale: float | None, query: torch.Tensor) -> float:
    """``scale`` as a float, defaulting to 1/sqrt(E)."""
    if scale is None:
        return 1.0 / math.sqrt(query.shape[-1]) if query.shape[-1] > 0 else 1.0
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {type(scale).__name__}")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return float(scale)


def _check_dropout(dropout_p: float) -> float:
    """``dropout_p`` as a float in [0, 1)."""
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real):
        raise TypeError(f"dropout_p must be a number, got {type(dropout_p).__name__}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    return float(dropout_p)


def _prepare_mask(
    attn_mask: torch.Tensor | None,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
) -> torch.Tensor | None:
    """Check ``attn_mask`` against the score shape; cast float masks to the query dtype."""
    if attn_mask is None:
        return None
    batch = torch.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    check_mask(attn_mask, (*batch, query.shape[-2], key.shape[-2]))
    if attn_mask.device != query.device:
        raise ValueError(f"attn_mask is on {attn_mask.device} but query is on {query.device}")
    if attn_mask.dtype != torch.bool and attn_mask.dtype != query.dtype:
        attn_mask = attn_mask.to(query.dtype)
    return attn_mask


def _prepare(query, key, value, attn_mask, is_causal, scale, enable_gqa):
    """Validate the SDPA arguments; expand GQA heads; turn ``is_causal`` into a mask."""
    _check_qkv(query, key, value)
    if enable_gqa:
        key, value = _repeat_kv_heads(query, key, value)
    _check_batch(query, key, value)
    if is_causal:
        if attn_mask is not None:
            raise ValueError(
                "attn_mask must be None when is_causal=True (the causal mask is built for you)"
            )
        attn_mask = causal_mask(query.shape[-2], key.shape[-2], query.device)
    attn_mask = _prepare_mask(attn_mask, query, key, value)
    return query, key, value, attn_mask, _resolve_scale(scale, query)


def _repeat_kv_heads(query, key, value):
    """Grouped-query attention: repeat each key/value head (axis -3) to match the query heads."""
    if min(query.ndim, key.ndim, value.ndim) < 3:
        raise ValueError(
            "enable_gqa=True needs a head axis (-3) on query, key and value, got shapes "
            f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    hq, hk, hv = query.shape[-3], key.shape[-3], value.shape[-3]
    if hk != hv or hk == 0 or hq % hk != 0:
        raise ValueError(
            f"enable_gqa=True needs key and value heads equal and dividing the query heads, "
            f"got query {hq}, key {hk}, value {hv} heads"
        )
    groups = hq // hk
    if groups == 1:
        return key, value
    return key.repeat_interleave(groups, dim=-3), value.repeat_interleave(groups, dim=-3)
