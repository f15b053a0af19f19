"""Study ``attention.sdpa_match``: our attention against PyTorch's fused SDPA, case by case.

Over a grid of batch sizes, head counts, query/key lengths, head sizes and mask kinds, it runs
forward and backward through ``scratchformer.functional.scaled_dot_product_attention`` (whose
gradients are the hand-derived ones) and through ``torch.nn.functional.
scaled_dot_product_attention``, in float64 and float32. In float32 both are also compared with a
float64 reference computed from the same (rounded) inputs, so "ours differs from SDPA" can be
split into "ours is wrong" versus "both are rounding differently".

The quick profile runs a pairwise covering subset of the grid (every pair of factor values
occurs in some case, cheapest cases preferred); the full profile runs the whole cross product.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm import tqdm

from scratchformer.experiments.kit import StudyConfig
from scratchformer.experiments.registry import register
from scratchformer.functional.attention import (
    AttentionFunction,
    scaled_dot_product_attention,
)
from scratchformer.functional.masks import padding_mask
from scratchformer.viz.figures import new_figure, save_figure

MASK_KINDS = ("none", "bool_full", "bool_LS", "bool_11LS", "key_padding", "additive", "causal")
"""Mask kinds: none; boolean of shape (B, H, L, S), (L, S), (1, 1, L, S); key padding
(B, 1, 1, S); additive float (1, H, L, S) with some -inf; and ``is_causal=True``."""

TENSORS = ("out", "dq", "dk", "dv")


@dataclass
class Config(StudyConfig):
    """Quick profile: a pairwise covering subset of the grid; full: the whole grid."""

    batches: tuple[int, ...] = (1, 4)
    heads: tuple[int, ...] = (1, 8)
    lengths: tuple[int, ...] = (1, 7, 128, 512)
    head_dims: tuple[int, ...] = (16, 64)
    masks: tuple[str, ...] = MASK_KINDS
    design: Literal["pairwise", "full"] = "pairwise"
    device: str = "cpu"

    def check(self) -> None:
        super().check()
        for name in ("batches", "heads", "lengths", "head_dims", "masks"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"{name} must have at least one value, got {values!r}")
        for name in ("batches", "heads", "lengths", "head_dims"):
            if min(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be ints >= 1, got {getattr(self, name)!r}")
        unknown = set(self.masks) - set(MASK_KINDS)
        if unknown:
            raise ValueError(
                f"masks: unknown kinds {sorted(unknown)}; expected some of {MASK_KINDS}")


@dataclass(frozen=True)
class AttentionCase:
    """One comparison: shapes (batch, heads, query length, key length, head size) and a mask."""

    batch: int
    heads: int
    lq: int
    lk: int
    head_dim: int
    mask: str

    @property
    def cost(self) -> int:
        """Multiply-adds of one forward pass, to prefer cheap cases when covering."""
        return self.batch * self.heads * self.lq * self.lk * self.head_dim

    def label(self) -> str:
        """Short printable name."""
        return f"B{self.batch}H{self.heads}L{self.lq}S{self.lk}E{self.head_dim}-{self.mask}"


def pairwise_cover(
    factors: dict[str, tuple], cost: Callable[[dict], float] | None = None
) -> list[dict]:
    """Rows of the full product that together contain every pair of values of any two factors.

    Greedy: repeatedly take the row covering the most uncovered pairs, ties broken by lowest
    ``cost(row)`` (then product order). Deterministic; usually far fewer rows than the product.
    """
    names = list(factors)
    for name, values in factors.items():
        if len(values) == 0:
            raise ValueError(f"factor {name!r} has no values")
    rows = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*factors.values())]
    if len(names) < 2:
        return rows

    def pairs(row: dict) -> set:
        return {(a, row[a], b, row[b]) for a, b in itertools.combinations(names, 2)}

    row_pairs = [pairs(r) for r in rows]
    uncovered = set().union(*row_pairs)
    costs = [cost(r) if cost else 0 for r in rows]
    chosen: list[dict] = []
    while uncovered:
        best = max(
            range(len(rows)),
            key=lambda i: (len(row_pairs[i] & uncovered), -costs[i], -i),
        )
        chosen.append(rows[best])
        uncovered -= row_pairs[best]
    return chosen


def grid_cases(cfg: Config) -> list[AttentionCase]:
    """The cases of ``cfg``: the full cross product or a pairwise covering subset of it."""
    unknown = set(cfg.masks) - set(MASK_KINDS)
    if unknown:
        raise ValueError(f"masks: unknown kinds {sorted(unknown)}; expected some of {MASK_KINDS}")
    factors = {
        "batch": tuple(cfg.batches),
        "heads": tuple(cfg.heads),
        "lq": tuple(cfg.lengths),
        "lk": tuple(cfg.lengths),
        "head_dim": tuple(cfg.head_dims),
        "mask": tuple(cfg.masks),
    }
    if cfg.design == "full":
        rows = [dict(zip(factors, c, strict=True)) for c in itertools.product(*factors.values())]
    elif cfg.design == "pairwise":
        rows = pairwise_cover(factors, cost=lambda r: AttentionCase(**r).cost)
    else:
        raise ValueError(f"design must be 'pairwise' or 'full', got {cfg.design!r}")
    return [AttentionCase(**r) for r in rows]


def _bool_mask(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Random boolean mask (about 30 % masked) with at least one key kept in every row."""
    keep = torch.rand(shape, generator=g) > 0.3
    forced = torch.randint(0, shape[-1], (*shape[:-1], 1), generator=g)
    return keep.scatter(-1, forced, True)


def make_inputs(case: AttentionCase, g: torch.Generator) -> dict:
    """Float64 CPU inputs for ``case``: q, k, v, upstream gradient ``grad``, mask and is_causal.

    Masks never mask a whole row (the fully-masked policy is tested separately).
    """
    B, H, L, S, E = case.batch, case.heads, case.lq, case.lk, case.head_dim
    d = torch.float64
    inputs = {
        "q": torch.randn(B, H, L, E, generator=g, dtype=d),
        "k": torch.randn(B, H, S, E, generator=g, dtype=d),
        "v": torch.randn(B, H, S, E, generator=g, dtype=d),
        "grad": torch.randn(B, H, L, E, generator=g, dtype=d),
        "attn_mask": None,
        "is_causal": False,
    }
    kind = case.mask
    if kind == "bool_full":
        inputs["attn_mask"] = _bool_mask((B, H, L, S), g)
    elif kind == "bool_LS":
        inputs["attn_mask"] = _bool_mask((L, S), g)
    elif kind == "bool_11LS":
        inputs["attn_mask"] = _bool_mask((1, 1, L, S), g)
    elif kind == "key_padding":
        lengths = torch.randint(1, S + 1, (B,), generator=g)
        inputs["attn_mask"] = padding_mask(lengths, S)
    elif kind == "additive":
        bias = torch.randn(1, H, L, S, generator=g, dtype=d)
        inputs["attn_mask"] = bias.masked_fill(~_bool_mask((1, H, L, S), g), float("-inf"))
    elif kind == "causal":
        inputs["is_causal"] = True
    elif kind != "none":
        raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
    return inputs


def run_kernel(
    fn: Callable[..., torch.Tensor],
    inputs: dict,
    dtype: torch.dtype,
    device: str | torch.device = "cpu",
) -> dict:
    """Output and (q, k, v) gradients of attention ``fn`` on ``inputs`` cast to ``dtype``."""
    q, k, v = (
        inputs[n].to(device=device, dtype=dtype).requires_grad_(True) for n in ("q", "k", "v")
    )
    mask = inputs["attn_mask"]
    if mask is not None:
        mask = mask.to(device) if mask.dtype == torch.bool else mask.to(device, dtype)
    out = fn(q, k, v, attn_mask=mask, is_causal=inputs["is_causal"])
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), inputs["grad"].to(device, dtype))
    return {"out": out.detach(), "dq": dq, "dk": dk, "dv": dv}


def max_abs_diff(a: dict, b: dict) -> dict[str, float]:
    """Largest absolute difference per tensor (out, dq, dk, dv), compared in float64."""
    return {
        n: (a[n].double() - b[n].double()).abs().max().item() if a[n].numel() else 0.0
        for n in TENSORS
    }


def compare_case(case: AttentionCase, g: torch.Generator, device: str = "cpu") -> dict:
    """All the numbers for one case: float64 and float32 agreement and float32 errors."""
    inputs = make_inputs(case, g)
    # Round once to float32, so the float64 runs see exactly the float32 inputs.
    for n in ("q", "k", "v", "grad"):
        inputs[n] = inputs[n].float().double()
    if inputs["attn_mask"] is not None and inputs["attn_mask"].dtype != torch.bool:
        inputs["attn_mask"] = inputs["attn_mask"].float().double()
    ours64 = run_kernel(scaled_dot_product_attention, inputs, torch.float64, device)
    ref64 = run_kernel(F.scaled_dot_product_attention, inputs, torch.float64, device)
    ours32 = run_kernel(scaled_dot_product_attention, inputs, torch.float32, device)
    sdpa32 = run_kernel(F.scaled_dot_product_attention, inputs, torch.float32, device)
    return {
        "case": asdict(case),
        "f64_diff": max_abs_diff(ours64, ref64),
        "f32_diff": max_abs_diff(ours32, sdpa32),
        "f32_err_ours": max_abs_diff(ours32, ref64),
        "f32_err_sdpa": max_abs_diff(sdpa32, ref64),
    }


def gradcheck_suite(device: str | torch.device = "cpu") -> dict[str, bool]:
    """``torch.autograd.gradcheck`` of ``AttentionFunction`` on small float64 problems."""
    g = torch.Generator().manual_seed(1234)

    def t(*shape, grad=True):
        x = torch.randn(*shape, generator=g, dtype=torch.float64).to(device)
        return x.requires_grad_(grad)

    keep = _bool_mask((2, 3, 4), g).to(device)
    keep_full_row = keep.clone()
    keep_full_row[0, 1] = False  # one fully masked row: its gradients must be exactly zero
    problems = {
        "no_mask": (t(2, 3, 3), t(2, 4, 3), t(2, 4, 5), 0.7, None),
        "bool_mask": (t(2, 3, 3), t(2, 4, 3), t(2, 4, 5), 0.5, keep),
        "bool_mask_fully_masked_row": (t(2, 3, 3), t(2, 4, 3), t(2, 4, 5), 0.5, keep_full_row),
        "float_mask_with_grad": (t(2, 3, 3), t(2, 4, 3), t(2, 4, 5), 0.5, t(3, 4)),
        "broadcast_batch": (t(2, 1, 3, 3), t(1, 2, 4, 3), t(2, 2, 4, 2), 0.3, t(1, 1, 3, 4)),
    }
    return {
        name: bool(torch.autograd.gradcheck(AttentionFunction.apply, args, raise_exception=False))
        for name, args in problems.items()
    }


def fully_masked_rows_agree(device: str | torch.device = "cpu") -> dict[str, bool]:
    """Our fully-masked-row policy (zero output and gradients) and whether SDPA agrees."""
    g = torch.Generator().manual_seed(99)
    inputs = {
        "q": torch.randn(2, 2, 5, 8, generator=g, dtype=torch.float64),
        "k": torch.randn(2, 2, 6, 8, generator=g, dtype=torch.float64),
        "v": torch.randn(2, 2, 6, 4, generator=g, dtype=torch.float64),
        "grad": torch.randn(2, 2, 5, 4, generator=g, dtype=torch.float64),
        "is_causal": False,
    }
    mask = _bool_mask((2, 2, 5, 6), g)
    mask[0, 1, 3] = False
    inputs["attn_mask"] = mask
    ours = run_kernel(scaled_dot_product_attention, inputs, torch.float64, device)
    ref = run_kernel(F.scaled_dot_product_attention, inputs, torch.float64, device)
    zero = ours["out"][0, 1, 3].abs().max().item() == 0 and ours["dq"][0, 1, 3].abs().max() == 0
    agree = all(
        torch.allclose(ours[n], ref[n], atol=1e-12, rtol=0, equal_nan=False) for n in TENSORS
    )
    return {"ours_zero": bool(zero), "sdpa_agrees": bool(agree)}


def _summary(records: list[dict]) -> dict:
    """Aggregate per-case numbers into the study's metrics."""

    def worst(key: str) -> dict[str, float]:
        return {n: max(r[key][n] for r in records) for n in TENSORS}

    ours = [max(r["f32_err_ours"].values()) for r in records]
    sdpa = [max(r["f32_err_sdpa"].values()) for r in records]
    ratios = [o / s for o, s in zip(ours, sdpa, strict=True) if o > 0 and s > 0]
    f64 = worst("f64_diff")
    return {
        "n_cases": len(records),
        "float64_max_abs_diff": f64,
        "float64_max_abs_diff_all": max(f64.values()),
        "float32_max_abs_diff_between_kernels": worst("f32_diff"),
        "float32_err_vs_float64": {
            "ours_max": max(ours),
            "sdpa_max": max(sdpa),
            "ours_median": statistics.median(ours),
            "sdpa_median": statistics.median(sdpa),
            "ratio_of_max": max(ours) / max(sdpa) if max(sdpa) > 0 else None,
            "per_case_ratio_median": statistics.median(ratios) if ratios else None,
            "per_case_ratio_max": max(ratios) if ratios else None,
            "cases_with_zero_error": len(records) - len(ratios),
        },
    }


def _figure(records: list[dict], out: Path) -> None:
    """Left: float32 error of ours vs SDPA's per case. Right: float64 disagreement per case.

    Exact zeros cannot sit on a log axis: on the left such cases are left out (and counted), on
    the right they are drawn at 1e-18.
    """
    fig, (ax1, ax2) = new_figure(11.0, 4.5, ncols=2)
    tiny = 1e-18

    def err(r: dict, key: str) -> float:
        return max(r[key].values())

    plotted = [r for r in records if err(r, "f32_err_ours") > 0 and err(r, "f32_err_sdpa") > 0]
    for kind in MASK_KINDS:
        rs = [r for r in plotted if r["case"]["mask"] == kind]
        if rs:
            xs, ys = [err(r, "f32_err_sdpa") for r in rs], [err(r, "f32_err_ours") for r in rs]
            ax1.scatter(xs, ys, s=14, alpha=0.7, label=kind)
        rs = [r for r in records if r["case"]["mask"] == kind]
        if rs:
            cost = [AttentionCase(**r["case"]).cost for r in rs]
            ax2.scatter(cost, [max(err(r, "f64_diff"), tiny) for r in rs], s=14, alpha=0.7)
    values = [err(r, k) for r in plotted for k in ("f32_err_ours", "f32_err_sdpa")] or [1e-7]
    lo, hi = min(values) / 2, max(values) * 2
    ax1.plot([lo, hi], [lo, hi], "k--", lw=1, label="equal error")
    ax1.plot([lo, hi], [4 * lo, 4 * hi], "k:", lw=1, label="4× SDPA")
    ax1.set(
        xscale="log",
        yscale="log",
        xlabel="SDPA float32 max abs error",
        ylabel="ours float32 max abs error",
        title=f"float32 error vs float64 reference, max over out/dq/dk/dv\n"
        f"({len(records) - len(plotted)} of {len(records)} cases with an exact 0 not shown)",
    )
    ax1.legend(fontsize=7)
    ax2.axhline(1e-12, color="k", ls=":", lw=1)
    ax2.set(
        xscale="log",
        yscale="log",
        xlabel="case cost B·H·L·S·E",
        ylabel="max |ours − SDPA| (float64; 0 drawn at 1e-18)",
        title="float64 agreement with SDPA (dotted: 1e-12 test bound)",
    )
    save_figure(fig, out / "sdpa_match.png")


@register("attention.sdpa_match", Config, full={"design": "full"})
def run(cfg: Config, out: Path) -> dict:
    """Our attention (derived backward) vs torch SDPA: outputs, gradients, float32 error."""
    cases = grid_cases(cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    records = [
        compare_case(case, g, cfg.device)
        for case in tqdm(cases, desc="attention cases", leave=False)
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "cases.json").write_text(json.dumps(records, indent=1) + "\n")
    _figure(records, out)
    metrics = _summary(records)
    checks = gradcheck_suite(cfg.device)
    metrics["gradcheck"] = checks
    metrics["gradcheck_all_pass"] = all(checks.values())
    metrics["fully_masked_rows"] = fully_masked_rows_agree(cfg.device)
    metrics["design"] = cfg.design
    return metrics
