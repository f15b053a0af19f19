"""Low-rank adapters (LoRA; Hu et al., 2021): fine-tune a frozen model through ΔW = (α/r)·B A.

A frozen projection ``y = x W`` gains a trainable update of rank at most ``r``:

    y = x W + (α/r) · x Aᵀ Bᵀ,    A: (r, d_in),  B: (d_out, r)

``A`` starts like an ``nn.Linear`` weight (Kaiming-uniform) and ``B`` at zero, so the adapted
model starts as the base model's exact function; only ``A`` and ``B`` are trained,
r·(d_in + d_out) numbers per projection instead of d_in·d_out. Since ΔW is one matrix, it can be
folded into the base weight for inference (`merge`) and taken out again (`unmerge`). Proofs:
docs/derivations/lora.md.

Two adapter kinds share that maths (`LoRAAdapter`):

* `LoRALinear` wraps an ``nn.Linear`` module: ``y = base(x) + dropout(x) Aᵀ Bᵀ · α/r``.
* `LoRAMatrix` adapts a weight matrix that a module applies as ``x @ w`` with ``w`` of shape
  (d_in, d_out) — the projections of this library's `MultiHeadAttention` (``w_q, w_k, w_v,
  w_o``) and `FeedForward` (``w1``, ``w2``). It is a ``torch.nn.utils.parametrize``
  parametrization: the module reads ``w + (α/r)(B A)ᵀ`` wherever it reads ``w`` (the fused QKV
  product and the KV-cache path included), so no module code changes. The update is applied to
  the weight, not to the activations, so these adapters have no input dropout.

`apply_lora` wraps the chosen projections of a model in place and freezes everything else;
`lora_state_dict` / `load_lora_state_dict` save and restore only the adapters, and
`lora_config` says how to re-apply them before loading.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from scratchformer.nn.attention import MultiHeadAttention
from scratchformer.nn.feedforward import FeedForward
from scratchformer.nn.moe import MoEFeedForward
from scratchformer.validation import check_int, check_probability, check_real

__all__ = [
    "LORA_TARGETS",
    "LoRAAdapter",
    "LoRALinear",
    "LoRAMatrix",
    "apply_lora",
    "load_lora_state_dict",
    "lora_adapters",
    "lora_config",
    "lora_parameters",
    "lora_state_dict",
    "merge_lora",
    "unmerge_lora",
]

# Projection groups `apply_lora` knows: a group, or one projection of it.
_ATTENTION = {"attention.q": "w_q", "attention.k": "w_k", "attention.v": "w_v",
              "attention.o": "w_o"}
_FEEDFORWARD = {"feedforward.up": "w1", "feedforward.down": "w2"}
LORA_TARGETS = ("attention", *_ATTENTION, "feedforward", *_FEEDFORWARD, "linear")
"""Names `apply_lora` accepts in ``targets``: "attention" (all four projections of every
`MultiHeadAttention`) or one of them ("attention.q", ...), "feedforward" (both matrices of every
dense `FeedForward`) or one of them, and "linear" (every ``nn.Linear`` module)."""


def _check_alpha(alpha: object) -> float:
    """``alpha`` as a float > 0, or an error naming it."""
    return check_real("alpha", alpha, minimum=0.0, min_inclusive=False)


class LoRAAdapter(nn.Module):
    """The trainable pair ``A`` (rank, d_in), ``B`` (d_out, rank) and the scale α/rank.

    ``delta_weight()`` is ΔW = (α/r)·B A in ``nn.Linear``'s (d_out, d_in) layout. Subclasses say
    where the base weight lives (`base_weight`) and in which layout.
    """

    def __init__(self, d_in: int, d_out: int, rank: int, alpha: float | None = None, *,
                 dtype: torch.dtype | None = None, device: torch.device | None = None) -> None:
        super().__init__()
        self.rank = check_int("rank", rank)
        self.alpha = float(rank) if alpha is None else _check_alpha(alpha)
        self.scale = self.alpha / self.rank
        self.d_in, self.d_out = d_in, d_out
        self.lora_A = nn.Parameter(torch.empty(rank, d_in, dtype=dtype, device=device))
        self.lora_B = nn.Parameter(torch.zeros(d_out, rank, dtype=dtype, device=device))
        self.merged = False
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """A as an ``nn.Linear(d_in, rank)`` weight (Kaiming-uniform), B = 0: ΔW = 0."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> Tensor:
        """ΔW = (α/r)·B A, shape (d_out, d_in); its rank is at most ``rank``."""
        return (self.lora_B @ self.lora_A) * self.scale

    def base_weight(self) -> Tensor:
        """The frozen base weight as stored (merged or not)."""
        raise NotImplementedError

    def _fold(self, sign: float) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def merge(self) -> None:
        """Add ΔW into the base weight so the forward needs no extra product (idempotent)."""
        if not self.merged:
            self._fold(1.0)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract ΔW from the base weight again: the inverse of `merge` (idempotent)."""
        if self.merged:
            self._fold(-1.0)
            self.merged = False

    def extra_repr(self) -> str:
        return (f"d_in={self.d_in}, d_out={self.d_out}, rank={self.rank}, alpha={self.alpha}, "
                f"merged={self.merged}")


class LoRALinear(LoRAAdapter):
    """An ``nn.Linear`` plus a low-rank update: ``base(x) + dropout(x) Aᵀ Bᵀ · α/r``.

    The base layer is kept as ``self.base`` (its parameters are frozen); at construction the
    output equals ``base(x)`` exactly, since B = 0.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None,
                 dropout: float = 0.0) -> None:
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        super().__init__(base.in_features, base.out_features, rank, alpha,
                         dtype=base.weight.dtype, device=base.weight.device)
        self.base = base
        self.dropout = check_probability("dropout", dropout)
        self.drop = nn.Dropout(self.dropout)
        for p in base.parameters():
            p.requires_grad_(False)

    def base_weight(self) -> Tensor:
        """``base.weight`` (d_out, d_in)."""
        return self.base.weight

    def _fold(self, sign: float) -> None:
        self.base.weight.add_(self.delta_weight(), alpha=sign)

    def forward(self, x: Tensor) -> Tensor:
        """``base(x)``, plus the adapter's update unless it is merged into the base weight."""
        y = self.base(x)
        if self.merged:
            return y
        return y + (self.drop(x) @ self.lora_A.T @ self.lora_B.T) * self.scale


class LoRAMatrix(LoRAAdapter):
    """Parametrization of a (d_in, d_out) weight ``w`` used as ``x @ w``: ``w + (α/r)(B A)ᵀ``.

    Registered on ``module`` for the parameter ``name`` by `attach`; the module then reads the
    adapted weight wherever it reads ``w``. Input dropout is impossible in this weight form.
    """

    def __init__(self, d_in: int, d_out: int, rank: int, alpha: float | None = None, *,
                 dtype: torch.dtype | None = None, device: torch.device | None = None) -> None:
        super().__init__(d_in, d_out, rank, alpha, dtype=dtype, device=device)
        self.dropout = 0.0
        self._host: tuple[nn.Module, str] | None = None  # a tuple: not registered as a child

    @classmethod
    def attach(cls, module: nn.Module, name: str, rank: int,
               alpha: float | None = None) -> LoRAMatrix:
        """Adapt ``module.<name>`` (a (d_in, d_out) parameter) in place; returns the adapter."""
        weight = getattr(module, name)
        if not isinstance(weight, nn.Parameter) or weight.ndim != 2:
            raise TypeError(f"{type(module).__name__}.{name} must be a 2-D parameter to adapt")
        adapter = cls(weight.shape[0], weight.shape[1], rank, alpha, dtype=weight.dtype,
                      device=weight.device)
        weight.requires_grad_(False)
        parametrize.register_parametrization(module, name, adapter)
        adapter._host = (module, name)
        return adapter

    def base_weight(self) -> Tensor:
        """The stored (d_in, d_out) weight under the parametrization."""
        if self._host is None:
            raise RuntimeError("this LoRAMatrix is not attached to a module (use attach)")
        module, name = self._host
        return module.parametrizations[name].original

    def _fold(self, sign: float) -> None:
        self.base_weight().add_(self.delta_weight().T, alpha=sign)

    def forward(self, w: Tensor) -> Tensor:
        """The weight the module uses: ``w``, plus ``ΔWᵀ`` unless merged into ``w``."""
        return w if self.merged else w + self.delta_weight().T


# --------------------------------------------------------------------------- model level


def lora_adapters(model: nn.Module) -> dict[str, LoRAAdapter]:
    """Every adapter in ``model`` by the name of what it adapts ("blocks.0.attn.w_q"),
    in module order."""
    found: dict[str, LoRAAdapter] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            found[name] = module
        elif isinstance(module, LoRAMatrix):
            # named "<host>.parametrizations.<param>.<index>"
            host, _, rest = name.rpartition(".parametrizations.")
            param = rest.split(".")[0]
            found[f"{host}.{param}" if host else param] = module
    return found


def _check_targets(targets: object) -> tuple[str, ...]:
    """``targets`` as a tuple of known names, or a ValueError naming what is wrong."""
    if isinstance(targets, str):
        targets = (targets,)
    if not isinstance(targets, (tuple, list)) or not targets:
        raise ValueError(f"targets must be a non-empty tuple of names from {LORA_TARGETS}, "
                         f"got {targets!r}")
    unknown = [t for t in targets if t not in LORA_TARGETS]
    if unknown:
        raise ValueError(f"targets {unknown} unknown; choose from {LORA_TARGETS}")
    if len(set(targets)) != len(targets):
        raise ValueError(f"targets has duplicates: {list(targets)}")
    return tuple(targets)


def _matrix_targets(targets: tuple[str, ...]) -> tuple[set[str], set[str]]:
    """The attention and FFN parameter names the targets select."""
    attn = set(_ATTENTION.values()) if "attention" in targets else {
        _ATTENTION[t] for t in targets if t in _ATTENTION}
    ffn = set(_FEEDFORWARD.values()) if "feedforward" in targets else {
        _FEEDFORWARD[t] for t in targets if t in _FEEDFORWARD}
    return attn, ffn


def apply_lora(model: nn.Module, rank: int, alpha: float | None = None,
               targets: tuple[str, ...] = ("attention", "feedforward"),
               dropout: float = 0.0) -> list[str]:
    """Wrap the target projections in place, freeze every other parameter (requires_grad
    False); return the wrapped names ("blocks.0.attn.w_q", "blocks.0.ffn.w1", ...).

    ``alpha`` defaults to ``rank`` (scale 1). ``dropout`` acts on the input of `LoRALinear`
    adapters ("linear" target); the attention and FFN matrices are adapted in weight form
    (`LoRAMatrix`), which has no input dropout, so they need ``dropout=0``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_int("rank", rank)
    if alpha is not None:
        _check_alpha(alpha)
    targets = _check_targets(targets)
    dropout = check_probability("dropout", dropout)
    if lora_adapters(model):
        raise ValueError("model already has LoRA adapters; apply_lora works on a model "
                         "without them (remove them by building the model afresh)")
    attn_names, ffn_names = _matrix_targets(targets)
    plan: list[tuple[str, nn.Module, str]] = []  # (qualified name, owner, attribute)
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, MultiHeadAttention):
            plan += [(prefix + p, module, p) for p in ("w_q", "w_k", "w_v", "w_o")
                     if p in attn_names]
        elif ffn_names and isinstance(module, MoEFeedForward):
            raise ValueError(f"feedforward targets adapt dense FeedForward layers; {name} is a "
                             f"{type(module).__name__}")
        elif isinstance(module, FeedForward):
            plan += [(prefix + p, module, p) for p in ("w1", "w2") if p in ffn_names]
        if "linear" in targets:
            plan += [(prefix + child, module, child) for child, sub in module.named_children()
                     if isinstance(sub, nn.Linear)]
    if not plan:
        raise ValueError(f"model {type(model).__name__} has no projections for targets "
                         f"{targets}")
    if dropout > 0 and any(not isinstance(getattr(m, a), nn.Linear) for _, m, a in plan):
        raise ValueError(f"dropout={dropout} needs adapters on nn.Linear modules; the attention "
                         "and feedforward matrices are adapted in weight form (no input "
                         "dropout): use dropout=0")
    for p in model.parameters():
        p.requires_grad_(False)
    for _, owner, attr in plan:
        target = getattr(owner, attr)
        if isinstance(target, nn.Linear):
            adapter: LoRAAdapter = LoRALinear(target, rank, alpha, dropout)
            setattr(owner, attr, adapter)
        else:
            adapter = LoRAMatrix.attach(owner, attr, rank, alpha)
        adapter.targets = targets  # recorded for lora_config
    return [name for name, _, _ in plan]


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapters' A and B matrices, in module order (what the optimiser should train)."""
    return [p for a in lora_adapters(model).values() for p in (a.lora_A, a.lora_B)]


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter's ΔW into its base weight (idempotent)."""
    for adapter in lora_adapters(model).values():
        adapter.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Take every adapter's ΔW out of its base weight again (idempotent)."""
    for adapter in lora_adapters(model).values():
        adapter.unmerge()


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The adapters only, ``{"<name>.lora_A": A, "<name>.lora_B": B}`` (detached copies)."""
    adapters = lora_adapters(model)
    if not adapters:
        raise ValueError(f"model {type(model).__name__} has no LoRA adapters")
    state: dict[str, Tensor] = {}
    for name, a in adapters.items():
        state[f"{name}.lora_A"] = a.lora_A.detach().clone().contiguous()
        state[f"{name}.lora_B"] = a.lora_B.detach().clone().contiguous()
    return state


def load_lora_state_dict(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy saved adapters into ``model``'s; strict: a missing, unexpected or mis-shaped key is
    a ValueError naming it, and nothing is changed then. Merged adapters stay merged (with the
    new ΔW)."""
    adapters = lora_adapters(model)
    if not adapters:
        raise ValueError(f"model {type(model).__name__} has no LoRA adapters; apply_lora first "
                         "(lora_config of the saved model says how)")
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict of tensors, got {type(state).__name__}")
    expected = {f"{n}.{k}": getattr(a, k) for n, a in adapters.items()
                for k in ("lora_A", "lora_B")}
    missing = [k for k in expected if k not in state]
    if missing:
        raise ValueError(f"LoRA state lacks key {missing[0]!r} ({len(missing)} missing)")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise ValueError(f"LoRA state has unexpected key {unexpected[0]!r} "
                         f"({len(unexpected)} unexpected)")
    for key, param in expected.items():
        value = state[key]
        if not isinstance(value, Tensor) or not value.dtype.is_floating_point:
            raise ValueError(f"LoRA state key {key!r} must be a floating-point tensor")
        if value.shape != param.shape:
            raise ValueError(f"LoRA state key {key!r} has shape {tuple(value.shape)}, the "
                             f"model's is {tuple(param.shape)}")
        if not torch.isfinite(value).all():
            raise ValueError(f"LoRA state key {key!r} holds non-finite values")
    with torch.no_grad():
        for name, a in adapters.items():
            was_merged = a.merged
            a.unmerge()
            a.lora_A.copy_(state[f"{name}.lora_A"])
            a.lora_B.copy_(state[f"{name}.lora_B"])
            if was_merged:
                a.merge()


def lora_config(model: nn.Module) -> dict:
    """``{"rank", "alpha", "targets", "dropout"}``: the `apply_lora` arguments that rebuild
    ``model``'s adapters (before `load_lora_state_dict`)."""
    adapters = list(lora_adapters(model).values())
    if not adapters:
        raise ValueError(f"model {type(model).__name__} has no LoRA adapters")
    first = adapters[0]
    return {"rank": first.rank, "alpha": first.alpha,
            "targets": list(getattr(first, "targets", ())), "dropout": first.dropout}
