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

``is_causal=True`` (without dropout) takes a faster path, ``CausalAttentionFunction`` in
``scratchformer.functional.causal_attention``: the same formulas evaluated one tile of query rows
at a time, skipping the keys above the diagonal (half the work) and never holding a whole L×S
matrix (see ``docs/benchmarks.md``).

Fully masked rows: when every key of a query is masked, the softmax is 0/0. Here such a row gets
zero weights, a zero output and zero gradients. PyTorch 2.13 on CPU does the same (both its
math and its flash kernel); PyTorch releases before 2.5 returned NaN for such rows instead.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from scratchformer.functional._checks import check_batch, check_qkv, resolve_scale
from scratchformer.functional.causal_attention import _causal_apply
from scratchformer.functional.masks import causal_mask, check_mask
from scratchformer.validation import check_probability

__all__ = [
    "AttentionFunction",
    "attention_forward",
    "attention_weights",
    "attention_with_derived_backward",
    "masked_softmax",
    "scaled_dot_product_attention",
    "single_query_attention",
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


def attention_forward(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float,
    attn_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A V, A)`` with ``A = softmax(scale·QKᵀ + M)``, without autograd or argument checks.

    The forward pass of `AttentionFunction`, also the inference path (no gradient needed):
    arguments must already be valid (a float mask in the query dtype). The scores are the only
    L×S buffer; masking and the softmax are done in it, in place.
    """
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
    return torch.matmul(weights, value), weights


def single_query_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float
) -> torch.Tensor:
    """Unmasked attention of one query per row, ``(..., 1, E)`` over ``(..., S >= 1, E)``,
    for inference (no autograd, no checks): one decoding step of a KV-cached decoder.

    The same function as `attention_forward` with fewer passes: with a single query and no mask
    no row can be fully masked, so the softmax needs no guards, and the normalisation divides
    the (..., 1, Ev) output instead of the (..., 1, S) weights: softmax(s)·V = (e·V) / Σe with
    e = exp(scale·(s − max s)) (shifting by the unscaled maximum is the same, as scale > 0).
    """
    scores = torch.matmul(query, key.transpose(-2, -1))
    scores.sub_(scores.amax(dim=-1, keepdim=True)).mul_(scale).exp_()
    total = scores.sum(dim=-1, keepdim=True)
    return torch.matmul(scores, value).div_(total)


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
        out, weights = attention_forward(query, key, value, scale, attn_mask)
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
    check_qkv(query, key, value)
    check_batch(query, key, value)
    scale = resolve_scale(scale, query)
    attn_mask = _prepare_mask(attn_mask, query, key, value)
    return AttentionFunction.apply(query, key, value, scale, attn_mask)


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
    dropout_p = check_probability("dropout_p", dropout_p)
    if dropout_p == 0.0 or not training:
        if is_causal and min(query.shape[-2], key.shape[-2]) > 0:
            return _causal_apply(query, key, value, scale)
        if not (torch.is_grad_enabled() and _any_requires_grad(query, key, value, attn_mask)):
            return attention_forward(query, key, value, scale, attn_mask)[0]  # inference
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


def _any_requires_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether a gradient would flow to any of ``tensors`` (None entries ignored)."""
    return any(t is not None and t.requires_grad for t in tensors)


# --- argument checking -------------------------------------------------------------------------


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
    check_qkv(query, key, value)
    if enable_gqa:
        key, value = _repeat_kv_heads(query, key, value)
    check_batch(query, key, value)
    if is_causal:
        if attn_mask is not None:
            raise ValueError(
                "attn_mask must be None when is_causal=True (the causal mask is built for you)"
            )
        attn_mask = causal_mask(query.shape[-2], key.shape[-2], query.device)
    attn_mask = _prepare_mask(attn_mask, query, key, value)
    return query, key, value, attn_mask, resolve_scale(scale, query)


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
