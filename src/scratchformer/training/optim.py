"""AdamW with the usual two parameter groups: weight decay on weight matrices only.

Decoupled weight decay (Loshchilov & Hutter) shrinks every decayed parameter towards zero by
``lr * weight_decay * p`` each step. That is a sensible prior for the weight matrices of linear
maps, but not for the parameters whose scale *means* something:

* 1-D parameters — biases and the gains of LayerNorm/RMSNorm — would be pulled towards 0, i.e.
  towards switching the normalised signal off;
* embedding tables — each row is only updated when its token occurs, so decay would shrink
  rare tokens' vectors for no reason other than their rarity.

The rule (`no_decay_reason`), checked in this order for each parameter:

1. ``p.ndim < 2``                                             -> no decay (bias, norm gain)
2. the parameter has an attribute ``no_weight_decay = True``  -> no decay
3. it is owned by an ``nn.Embedding``/``nn.EmbeddingBag``, a ``torch.nn`` normalisation layer,
   a module whose class name contains "Embedding" (our own ``TokenEmbedding``,
   ``LearnedPositionalEmbedding``), or any module with a class/instance attribute
   ``no_weight_decay = True``                                  -> no decay
4. a component of its dotted name contains ``"emb"`` (``tok_emb.weight``, ``pos_embedding``;
   beware that ``member`` matches too)                         -> no decay
5. otherwise                                                   -> decay

A parameter shared by several modules (tied input/output embeddings) is decayed only if no
owner exempts it, so tying an ``nn.Embedding`` to an output projection leaves it undecayed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

# Norm layers whose gain can be 2-D (LayerNorm over several trailing dims); BatchNorm-style
# layers only have 1-D parameters, which rule 1 already exempts.
_EXEMPT_MODULES: tuple[type[nn.Module], ...] = (
    nn.Embedding,
    nn.EmbeddingBag,
    nn.LayerNorm,
    nn.GroupNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def no_decay_reason(name: str, param: nn.Parameter, owner: nn.Module) -> str | None:
    """Why ``param`` (called ``name``, held by ``owner``) must not be decayed, or None if it may."""
    if param.ndim < 2:
        return f"{param.ndim}-D"
    if getattr(param, "no_weight_decay", False):
        return "parameter flagged no_weight_decay"
    if isinstance(owner, _EXEMPT_MODULES):
        return type(owner).__name__
    if "embedding" in type(owner).__name__.lower():
        return f"owned by {type(owner).__name__}"
    if getattr(owner, "no_weight_decay", False):
        return f"{type(owner).__name__} flagged no_weight_decay"
    if any("emb" in part.lower() for part in name.split(".")):
        return "name contains 'emb'"
    return None


def decay_split(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the trainable parameters to decay and not to decay, in ``parameters()`` order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    exempt: set[int] = set()
    for module_name, module in model.named_modules(remove_duplicate=False):
        for pname, p in module.named_parameters(recurse=False):
            full = f"{module_name}.{pname}" if module_name else pname
            if no_decay_reason(full, p, module) is not None:
                exempt.add(id(p))
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # shared parameters appear once, first name wins
        if p.requires_grad:
            (no_decay if id(p) in exempt else decay).append(name)
    return decay, no_decay


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Optimizer groups ``[decay (weight_decay), no_decay (0.0)]`` by the rule in the module doc."""
    if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay)) or (
        weight_decay < 0
    ):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    decay, no_decay = decay_split(model)
    params = dict(model.named_parameters())
    groups = [
        {"params": [params[n] for n in decay], "weight_decay": float(weight_decay),
         "name": "decay"},
        {"params": [params[n] for n in no_decay], "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def build_adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.1,
    betas: Sequence[float] = (0.9, 0.95),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over `param_groups`; fused kernel on CPU/CUDA, foreach elsewhere."""
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    groups = param_groups(model, weight_decay)
    if not groups:
        raise ValueError("model has no trainable parameters (all have requires_grad=False)")
    devices = {p.device.type for g in groups for p in g["params"]}
    # The fused kernel is one pass over all tensors (about 2x the foreach speed on CPU).
    fast = {"fused": True} if devices <= {"cpu", "cuda"} else {"foreach": True}
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, **fast)
