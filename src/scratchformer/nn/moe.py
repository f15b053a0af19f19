r"""Mixture-of-experts feed-forward layer: a router sends each token to ``top_k`` of ``n_experts``
FFNs and mixes their outputs, so parameters grow with ``n_experts`` while compute per token grows
only with ``top_k``.

For a token $x$ the router computes logits $z = x W_r$ (``W_r``: (d_model, n_experts)) and an
affinity $a$: ``router="softmax"`` gives $a = \mathrm{softmax}(z)$ (Shazeer et al., 2017; Switch),
``router="sigmoid"`` gives $a_i = \sigma(z_i)$ (DeepSeek-V3). The selected set
$S = \operatorname{top\text{-}k}(a + b)$ uses a per-expert bias $b$ that is zero unless
``balance="bias"``; the gates use $a$ alone:

    normalised (default for top_k > 1):  g_i = a_i / Σ_{j∈S} a_j   (softmax: softmax of z over S)
    raw (Switch top-1, normalize=False):  g_i = a_i

and $y = \sum_{i\in S} g_i E_i(x) + \mathrm{Shared}(x)$. ``top_k == n_experts`` is dense soft
mixing. Gradients of $g$ w.r.t. $z$ and of the balancing losses:
docs/derivations/moe-gating-gradient.md.

Dispatch is by sorting: the (token, expert) assignments are ordered by expert with a stable
argsort, cut into one contiguous group per expert by the counts, each group goes through its
expert as one matrix product (stacked weights ``w1``: (E, d, h), ``w2``: (E, h, d)), and the
weighted results are summed back per token with ``index_add_``. The only Python loop is over
experts. With ``capacity_factor=None`` the layer is *dropless*: every assignment is computed.
With a capacity factor $c$, each expert takes at most $\lceil c\,N k / E\rceil$ assignments of a
batch of $N$ tokens, earlier tokens first; the rest are dropped (they add nothing, so in a
residual block the token passes through unchanged) and ``last_stats.dropped_fraction`` says how
many.

Balancing (``balance``):

- ``"aux"``: ``aux_loss`` $= E \sum_i f_i P_i$ (Switch), $f_i$ the fraction of assignments routed to
  expert $i$, $P_i$ the mean normalised affinity; 1 at perfect balance, $E$ at full collapse.
  The caller adds ``aux_weight · aux_loss`` to its loss (`GPT` does).
- ``"bias"``: auxiliary-loss-free balancing (DeepSeek-V3). Training forwards accumulate the
  per-expert counts; the training loop calls `update_bias` after each optimiser step, which does
  $b_i \mathrel{+}= \gamma\,\mathrm{sign}(\bar n - n_i)$ and resets the counts. $b$ is a buffer: it
  changes selection only, never the gates, and receives no gradient.
- ``"none"``: nothing.

``z_loss`` $= \mathrm{mean}_t(\log\sum_i e^{z_{t,i}})^2$ (ST-MoE) is always computed; its weight is
the caller's. Fine-grained experts (DeepSeekMoE) are a choice of sizes: $mE$ experts of width
$h/m$ with ``top_k`` $= mk$ keep the active parameters of $E$ experts of width $h$ at top-$k$.
``n_shared`` shared experts of width ``shared_hidden`` see every token with gate 1; a sum of FFNs
on the same input is one FFN with the hidden units concatenated, so they are one `FeedForward`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchformer.functional.activations import ACTIVATIONS, get_activation
from scratchformer.nn.feedforward import FeedForward
from scratchformer.validation import (
    check_bool,
    check_choice,
    check_int,
    check_optional_int,
    check_probability,
    check_real,
)

__all__ = [
    "MOE_BALANCE",
    "MOE_ROUTERS",
    "MoEConfig",
    "MoEFeedForward",
    "MoEStats",
    "load_balance_loss",
    "moe_loss",
]

MOE_ROUTERS = ("softmax", "sigmoid")
MOE_BALANCE = ("aux", "bias", "none")


def _positive_real(value: object, name: str) -> float:
    """``value`` as a finite float > 0."""
    return check_real(name, value, minimum=0.0, min_inclusive=False)


@dataclass(frozen=True)
class MoEConfig:
    """The options of a `MoEFeedForward` in a model, checked when built.

    ``hidden`` is each routed expert's width (None: the model's FFN width); a model adds
    ``aux_weight``·aux_loss (``balance="aux"``) + ``z_weight``·z_loss per layer to its training
    loss (`moe_loss`). ``prefix`` names the fields in messages (a `GPTConfig` routes its flat
    ``moe_*`` options here, so errors say ``moe_top_k``).
    """

    experts: int = 4
    top_k: int = 2
    hidden: int | None = None
    shared: int = 0
    shared_hidden: int | None = None
    router: str = "softmax"
    balance: str = "aux"
    aux_weight: float = 0.01
    z_weight: float = 0.0
    noisy: bool = False
    capacity_factor: float | None = None
    bias_rate: float = 1e-3
    prefix: str = ""

    def __post_init__(self) -> None:
        p = self.prefix
        check_int(f"{p}experts", self.experts)
        check_int(f"{p}top_k", self.top_k)
        if self.top_k > self.experts:
            raise ValueError(f"{p}top_k must be <= {p}experts={self.experts}, got {self.top_k}")
        check_int(f"{p}shared", self.shared, 0)
        check_optional_int(f"{p}hidden", self.hidden)
        check_optional_int(f"{p}shared_hidden", self.shared_hidden)
        check_choice(f"{p}router", self.router, MOE_ROUTERS)
        check_choice(f"{p}balance", self.balance, MOE_BALANCE)
        for name in ("aux_weight", "z_weight"):
            check_real(f"{p}{name}", getattr(self, name), minimum=0.0)
        check_bool(f"{p}noisy", self.noisy)
        if self.capacity_factor is not None:
            _positive_real(self.capacity_factor, f"{p}capacity_factor")
        _positive_real(self.bias_rate, f"{p}bias_rate")


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


def load_balance_loss(counts: Tensor, mean_prob: Tensor) -> Tensor:
    """Switch load-balancing loss ``E · Σ_i f_i P_i`` with ``f = counts / counts.sum()``.

    ``counts`` (E,) are assignments per expert (no gradient: they come from an argmax);
    ``mean_prob`` (E,) is the mean normalised router probability, through which the gradient flows.
    """
    if counts.shape != mean_prob.shape or counts.ndim != 1:
        raise ValueError(
            f"counts and mean_prob must both have shape (n_experts,), got "
            f"{tuple(counts.shape)} and {tuple(mean_prob.shape)}"
        )
    f = counts.to(mean_prob.dtype) / counts.sum().clamp_min(1)
    return counts.numel() * (f * mean_prob).sum()


@dataclass
class MoEStats:
    """Routing statistics of one forward pass (detached tensors, no host sync).

    ``counts`` (E,) assignments per expert before any capacity drop; ``load`` = counts / total;
    ``max_over_mean`` = max load / mean load (1 is perfect balance, E full collapse);
    ``entropy`` of ``load`` in nats (log E at perfect balance); ``dropped_fraction`` of the
    assignments over capacity.
    """

    counts: Tensor
    load: Tensor
    max_over_mean: Tensor
    entropy: Tensor
    dropped_fraction: Tensor

    def as_floats(self) -> dict[str, float | list[float]]:
        """The statistics as Python numbers, for logs."""
        return {
            "load": self.load.tolist(),
            "max_over_mean": float(self.max_over_mean),
            "entropy": float(self.entropy),
            "dropped_fraction": float(self.dropped_fraction),
        }


def load_stats(counts: Tensor, dropped: Tensor) -> MoEStats:
    """`MoEStats` from per-expert assignment counts (E,) and the number dropped."""
    counts = counts.detach()
    total = counts.sum().clamp_min(1).to(torch.float32)
    load = counts.to(torch.float32) / total
    entropy = -(load * torch.log(load.clamp_min(1e-12))).sum()
    return MoEStats(counts, load, load.max() * counts.numel(), entropy,
                    dropped.to(torch.float32) / total)


class MoEFeedForward(nn.Module):
    """Mixture-of-experts FFN ``(..., d_model) -> (..., d_model)``, a drop-in for `FeedForward`.

    ``n_experts`` routed experts of width ``d_hidden`` (default 4·d_model), ``top_k`` of them per
    token (``top_k == n_experts`` mixes all, densely). See the module docstring for ``router``,
    ``balance``, ``capacity_factor`` (None = dropless), ``n_shared``/``shared_hidden`` and
    ``normalize`` (None: renormalise gates over the selected experts iff top_k > 1).
    ``noisy`` adds Shazeer's tunable Gaussian noise ε·softplus(x W_noise) to the logits in
    training. ``bias_rate`` is γ of `update_bias`. After each forward ``aux_loss``, ``z_loss``
    (tensors with gradients) and ``last_stats`` (`MoEStats`) hold that pass's values.
    """

    def __init__(
        self,
        d_model: int,
        d_hidden: int | None = None,
        n_experts: int = 4,
        top_k: int = 2,
        *,
        n_shared: int = 0,
        shared_hidden: int | None = None,
        activation: str = "gelu",
        dropout: float = 0.0,
        bias: bool = True,
        router: str = "softmax",
        normalize: bool | None = None,
        noisy: bool = False,
        balance: str = "aux",
        capacity_factor: float | None = None,
        bias_rate: float = 1e-3,
    ) -> None:
        super().__init__()
        d_model = check_int("d_model", d_model)
        d_hidden = 4 * d_model if d_hidden is None else check_int("d_hidden", d_hidden)
        n_experts = check_int("n_experts", n_experts)
        top_k = check_int("top_k", top_k)
        if top_k > n_experts:
            raise ValueError(f"top_k must be <= n_experts={n_experts}, got {top_k}")
        n_shared = check_int("n_shared", n_shared, 0)
        shared_hidden = d_hidden if shared_hidden is None else check_int(
            "shared_hidden", shared_hidden)
        check_choice("activation", activation, sorted(ACTIVATIONS))
        dropout = check_probability("dropout", dropout)
        check_bool("bias", bias)
        check_bool("noisy", noisy)
        if normalize is not None:
            check_bool("normalize", normalize)
        check_choice("router", router, MOE_ROUTERS)
        check_choice("balance", balance, MOE_BALANCE)
        if capacity_factor is not None:
            capacity_factor = _positive_real(capacity_factor, "capacity_factor")
        bias_rate = _positive_real(bias_rate, "bias_rate")

        self.d_model, self.d_hidden = d_model, d_hidden
        self.n_experts, self.top_k = n_experts, top_k
        self.activation, self.dropout = activation, float(dropout)
        self.router, self.balance, self.noisy = router, balance, noisy
        self.normalize = top_k > 1 if normalize is None else normalize
        self.capacity_factor, self.bias_rate = capacity_factor, bias_rate
        self.act = get_activation(activation)
        self.w_router = nn.Parameter(torch.empty(d_model, n_experts))
        if noisy:
            self.w_noise = nn.Parameter(torch.zeros(d_model, n_experts))
        else:
            self.register_parameter("w_noise", None)
        self.w1 = nn.Parameter(torch.empty(n_experts, d_model, d_hidden))
        self.w2 = nn.Parameter(torch.empty(n_experts, d_hidden, d_model))
        if bias:
            self.b1 = nn.Parameter(torch.empty(n_experts, d_hidden))
            self.b2 = nn.Parameter(torch.empty(n_experts, d_model))
        else:
            self.register_parameter("b1", None)
            self.register_parameter("b2", None)
        self.shared = (FeedForward(d_model, n_shared * shared_hidden, activation, dropout, bias)
                       if n_shared else None)
        self.n_shared, self.shared_hidden = n_shared, shared_hidden
        self.register_buffer("expert_bias", torch.zeros(n_experts))
        self.register_buffer("load_counts", torch.zeros(n_experts, dtype=torch.long),
                             persistent=False)
        self.aux_loss: Tensor | None = None
        self.z_loss: Tensor | None = None
        self.last_stats: MoEStats | None = None
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: MoEConfig, d_model: int, d_hidden: int, *,
                    activation: str = "gelu", dropout: float = 0.0, bias: bool = True
                    ) -> MoEFeedForward:
        """The layer a model block builds from its `MoEConfig` (``d_hidden``: the model's FFN
        width, used when ``config.hidden`` is None)."""
        return cls(d_model, config.hidden or d_hidden, config.experts, config.top_k,
                   n_shared=config.shared, shared_hidden=config.shared_hidden,
                   activation=activation, dropout=dropout, bias=bias, router=config.router,
                   noisy=config.noisy, balance=config.balance,
                   capacity_factor=config.capacity_factor, bias_rate=config.bias_rate)

    @torch.no_grad()
    def init_gpt2(self, std: float, residual_std: float) -> None:
        """GPT-2 initialisation: experts and router N(0, std²) (``w2`` and the shared experts'
        output ``residual_std``), zero biases, noise weights and selection bias."""
        nn.init.normal_(self.w1, std=std)
        nn.init.normal_(self.w2, std=residual_std)
        nn.init.normal_(self.w_router, std=std)
        for b in (self.b1, self.b2):
            if b is not None:
                nn.init.zeros_(b)
        if self.w_noise is not None:
            nn.init.zeros_(self.w_noise)
        self.expert_bias.zero_()
        if self.shared is not None:
            nn.init.normal_(self.shared.w1, std=std)
            nn.init.normal_(self.shared.w2, std=residual_std)
            for b in (self.shared.b1, self.shared.b2):
                if b is not None:
                    nn.init.zeros_(b)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """nn.Linear's U(−1/√fan_in, 1/√fan_in) for router and experts; zero noise weights."""
        for weight, b, fan_in in ((self.w1, self.b1, self.d_model),
                                  (self.w2, self.b2, self.d_hidden)):
            bound = 1.0 / math.sqrt(fan_in)
            weight.uniform_(-bound, bound)
            if b is not None:
                b.uniform_(-bound, bound)
        self.w_router.uniform_(-1.0 / math.sqrt(self.d_model), 1.0 / math.sqrt(self.d_model))
        if self.w_noise is not None:
            self.w_noise.zero_()
        if self.shared is not None:
            self.shared.reset_parameters()
        self.expert_bias.zero_()
        self.load_counts.zero_()

    # --- routing --------------------------------------------------------------------------

    def router_logits(self, x: Tensor) -> Tensor:
        """Router logits z = x W_r (N, E) for tokens x (N, d), with Shazeer's noise if enabled."""
        z = x @ self.w_router
        if self.w_noise is not None and self.training:
            z = z + torch.randn_like(z) * F.softplus(x @ self.w_noise)
        return z

    def route(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Selected experts (N, k), their gates (N, k) and the normalised affinities (N, E)."""
        if self.router == "softmax":
            affinity = torch.softmax(z, dim=-1)
            probs = affinity
        else:
            affinity = torch.sigmoid(z)
            probs = affinity / affinity.sum(-1, keepdim=True)
        scores = affinity.detach()
        if self.balance == "bias":
            scores = scores + self.expert_bias.to(scores.dtype)
        idx = torch.topk(scores, self.top_k, dim=-1, sorted=False).indices
        gates = affinity.gather(-1, idx)
        if self.normalize:
            gates = gates / gates.sum(-1, keepdim=True)
        return idx, gates, probs

    def expert(self, e: int, x: Tensor) -> Tensor:
        """Expert ``e``'s FFN on tokens x (n, d): act(x W1[e] + b1[e]) W2[e] + b2[e]."""
        h = x @ self.w1[e]
        if self.b1 is not None:
            h = h + self.b1[e]
        h = self.act(h)
        if self.dropout > 0.0 and self.training:
            h = F.dropout(h, p=self.dropout, training=True)
        h = h @ self.w2[e]
        return h if self.b2 is None else h + self.b2[e]

    def capacity(self, n_tokens: int) -> int | None:
        """Assignments one expert may take from ``n_tokens`` tokens, None when dropless."""
        if self.capacity_factor is None:
            return None
        return math.ceil(self.capacity_factor * n_tokens * self.top_k / self.n_experts)

    # --- forward --------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """Route every position of ``x`` (..., d_model) to its experts and mix their outputs."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"x must have shape (..., {self.d_model}) (d_model), got {tuple(x.shape)}"
            )
        flat = x.reshape(-1, self.d_model)
        n = flat.shape[0]
        z = self.router_logits(flat)
        idx, gates, probs = self.route(z)

        expert_ids = idx.reshape(-1)  # assignment a = t·k + j
        order = torch.argsort(expert_ids, stable=True)  # grouped by expert, tokens in order
        counts = torch.bincount(expert_ids, minlength=self.n_experts)
        token_ids = order // self.top_k
        sorted_gates = gates.reshape(-1)[order]
        cap = self.capacity(n)
        dropped = counts.new_zeros(())
        if cap is not None:
            starts = torch.cumsum(counts, 0) - counts
            rank = torch.arange(order.numel(), device=x.device) - starts[expert_ids[order]]
            keep = rank < cap
            dropped = (~keep).sum()
            kept_counts = counts.clamp(max=cap)
            token_ids, sorted_gates = token_ids[keep], sorted_gates[keep]
        else:
            kept_counts = counts

        out = flat.new_zeros(n, self.d_model)
        if token_ids.numel():
            xs = flat[token_ids]
            pieces = [self.expert(e, chunk) if chunk.shape[0] else chunk
                      for e, chunk in enumerate(torch.split(xs, kept_counts.tolist()))]
            ys = torch.cat(pieces) * sorted_gates[:, None]
            out = out.index_add(0, token_ids, ys.to(out.dtype))  # autocast may give bf16
        if self.shared is not None:
            out = out + self.shared(flat)

        self.aux_loss = load_balance_loss(counts, probs.mean(0))
        self.z_loss = torch.logsumexp(z, dim=-1).square().mean()
        self.last_stats = load_stats(counts, dropped)
        if self.training and self.balance == "bias":
            self.load_counts += counts.detach()
        return out.view(x.shape)

    @torch.no_grad()
    def update_bias(self) -> Tensor:
        """Auxiliary-loss-free step b_i += γ·sign(mean load − load_i) over the counts gathered
        since the last call (training forwards only); resets them and returns the new bias."""
        if self.balance != "bias":
            raise ValueError(f"update_bias needs balance='bias', got balance={self.balance!r}")
        load = self.load_counts.to(self.expert_bias.dtype)
        if load.sum() > 0:
            self.expert_bias += self.bias_rate * torch.sign(load.mean() - load)
        self.load_counts.zero_()
        return self.expert_bias

    def active_parameters(self) -> int:
        """Parameters one token uses: router (+ noise), top_k routed experts, shared experts."""
        per_expert = sum(p[0].numel() for p in (self.w1, self.w2, self.b1, self.b2)
                         if p is not None)
        router = sum(p.numel() for p in (self.w_router, self.w_noise) if p is not None)
        shared = sum(p.numel() for p in self.shared.parameters()) if self.shared else 0
        return router + self.top_k * per_expert + shared

    def extra_repr(self) -> str:
        """Shown inside ``repr(module)``."""
        return (
            f"d_model={self.d_model}, d_hidden={self.d_hidden}, n_experts={self.n_experts}, "
            f"top_k={self.top_k}, n_shared={self.n_shared}, router={self.router!r}, "
            f"balance={self.balance!r}, capacity_factor={self.capacity_factor}"
        )
