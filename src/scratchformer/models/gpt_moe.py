"""The mixture-of-experts side of `GPT`: config checks, building and initialising MoE FFNs, and
the auxiliary losses, kept apart so gpt.py stays about the dense model."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from scratchformer.nn.moe import MOE_BALANCE, MOE_ROUTERS, MoEFeedForward

if TYPE_CHECKING:
    from scratchformer.models.gpt import GPTConfig

__all__ = ["FFN_KINDS", "check_moe_config", "init_moe_gpt2", "make_moe_ffn", "moe_loss"]

FFN_KINDS = ("dense", "moe")


def _int(cfg: GPTConfig, name: str, low: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {low}, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value}")


def _weight(cfg: GPTConfig, name: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite real number >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def check_moe_config(cfg: GPTConfig) -> None:
    """Fail early on a bad ``ffn`` or ``moe_*`` field of a `GPTConfig`."""
    if not isinstance(cfg.ffn, str) or cfg.ffn not in FFN_KINDS:
        raise ValueError(f"ffn must be one of {FFN_KINDS}, got {cfg.ffn!r}")
    _int(cfg, "moe_experts", 1)
    _int(cfg, "moe_top_k", 1)
    _int(cfg, "moe_shared", 0)
    if cfg.moe_top_k > cfg.moe_experts:
        raise ValueError(
            f"moe_top_k must be <= moe_experts={cfg.moe_experts}, got {cfg.moe_top_k}"
        )
    for name in ("moe_hidden", "moe_shared_hidden"):
        if getattr(cfg, name) is not None:
            _int(cfg, name, 1)
    if cfg.moe_router not in MOE_ROUTERS:
        raise ValueError(f"moe_router must be one of {MOE_ROUTERS}, got {cfg.moe_router!r}")
    if cfg.moe_balance not in MOE_BALANCE:
        raise ValueError(f"moe_balance must be one of {MOE_BALANCE}, got {cfg.moe_balance!r}")
    for name in ("moe_aux_weight", "moe_z_weight"):
        _weight(cfg, name)
    if not isinstance(cfg.moe_noisy, bool):
        raise TypeError(f"moe_noisy must be a bool, got {cfg.moe_noisy!r}")
    factor = cfg.moe_capacity_factor
    if factor is not None and (isinstance(factor, bool) or not isinstance(factor, numbers.Real)
                               or not math.isfinite(factor) or factor <= 0):
        raise ValueError(f"moe_capacity_factor must be None or a float > 0, got {factor!r}")
    rate = cfg.moe_bias_rate
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not rate > 0:
        raise ValueError(f"moe_bias_rate must be a float > 0, got {rate!r}")


def make_moe_ffn(cfg: GPTConfig) -> MoEFeedForward | None:
    """The MoE FFN one block of ``cfg`` uses, or None for ``ffn="dense"``."""
    if cfg.ffn != "moe":
        return None
    return MoEFeedForward(
        cfg.d_model, cfg.moe_hidden or cfg.hidden_size, cfg.moe_experts, cfg.moe_top_k,
        n_shared=cfg.moe_shared, shared_hidden=cfg.moe_shared_hidden,
        activation=cfg.activation, dropout=cfg.dropout, bias=cfg.bias, router=cfg.moe_router,
        noisy=cfg.moe_noisy, balance=cfg.moe_balance,
        capacity_factor=cfg.moe_capacity_factor, bias_rate=cfg.moe_bias_rate,
    )


@torch.no_grad()
def init_moe_gpt2(ffn: nn.Module, std: float, residual_std: float) -> None:
    """GPT-2 initialisation of what a MoE FFN has beyond ``w1, w2, b1, b2``: the router
    N(0, std²), zero noise weights and bias, and the shared experts like a dense FFN."""
    if not isinstance(ffn, MoEFeedForward):
        return
    nn.init.normal_(ffn.w_router, std=std)
    if ffn.w_noise is not None:
        nn.init.zeros_(ffn.w_noise)
    ffn.expert_bias.zero_()
    if ffn.shared is not None:
        nn.init.normal_(ffn.shared.w1, std=std)
        nn.init.normal_(ffn.shared.w2, std=residual_std)
        for b in (ffn.shared.b1, ffn.shared.b2):
            if b is not None:
                nn.init.zeros_(b)


def moe_loss(layers: Iterable[MoEFeedForward], aux_weight: float, z_weight: float) -> Tensor:
    """Σ over layers of aux_weight·aux_loss (balance="aux" only) + z_weight·z_loss, from each
    layer's last forward."""
    total = torch.zeros(())
    for layer in layers:
        if layer.aux_loss is None or layer.z_loss is None:
            raise RuntimeError("moe_loss needs a forward pass through every MoE layer first")
        if layer.balance == "aux" and aux_weight:
            total = total + aux_weight * layer.aux_loss
        if z_weight:
            total = total + z_weight * layer.z_loss
    return total
