"""Causal attention: scratchformer's from-scratch kernel against PyTorch's fused SDPA.

Times ``scratchformer.functional.attention.scaled_dot_product_attention(..., is_causal=True)``
("scratch") against ``torch.nn.functional.scaled_dot_product_attention(..., is_causal=True)``
("sdpa"), forward only (inference, under ``torch.no_grad``) and forward + backward (training),
in float32, at batch 8, 8 heads and head size 64 by default. For context, by default: a
textbook masked implementation ("naive") and, with ``--before-module``, an older copy of
``functional/attention.py`` ("before"); with ``--variants all`` also the ablations: query blocks
differentiated by autograd ("chunked_autograd"), scratchformer's general path given the causal
mask explicitly ("scratch_masked"), and its tiled kernel with recomputation
("scratch_recompute"). The headline is the ratio scratch / sdpa, computed per
interleaved round (all variants alternate within a round) and then the median taken, so load
from other processes cancels as far as possible.

Writes ``causal_attention.json`` (everything), ``causal_attention.md`` (tables) and
``causal_attention.png`` (log-log times and the ratios) under ``--out``. From the repository
root::

    python -m benchmarks.causal_attention               # all lengths (~10 min on 2 cores)
    python -m benchmarks.causal_attention --quick       # lengths 128-512, 3 rounds
    git show 3582f91:src/scratchformer/functional/attention.py > /tmp/attention_before.py
    python -m benchmarks.causal_attention --before-module /tmp/attention_before.py
    python -m benchmarks.causal_attention --variants all --lengths 256,1024,2048 --no-memory
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F

from benchmarks.common import (
    interleaved_timings,
    machine_info,
    peak_cuda_bytes,
    positive_ints,
    rss_rise_bytes,
    run_json_subprocess,
    summarize,
)
from scratchformer.functional import attention as scratch_attention
from scratchformer.functional.causal_attention import causal_attention
from scratchformer.functional.masks import causal_mask

REPO_ROOT = Path(__file__).resolve().parents[1]
FULL_LENGTHS = (128, 256, 512, 1024, 2048, 4096)
QUICK_LENGTHS = (128, 256, 512)
MODES = ("fwd", "fwd+bwd")
NAME = "causal_attention"
DEFAULT_VARIANTS = ("scratch", "naive")
ABLATION_VARIANTS = ("chunked_autograd", "scratch_masked", "scratch_recompute")

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# --- the implementations -----------------------------------------------------------------------


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PyTorch's fused kernel (flash attention on CPU and recent GPUs)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def scratch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """scratchformer's ``scaled_dot_product_attention``: whatever path it takes for is_causal."""
    return scratch_attention.scaled_dot_product_attention(q, k, v, is_causal=True)


def scratch_masked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """scratchformer's general path: the causal mask passed explicitly as a boolean mask."""
    mask = causal_mask(q.shape[-2], k.shape[-2], q.device)
    return scratch_attention.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def scratch_recompute(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """scratchformer's tiled causal kernel, rebuilding the weights in the backward pass."""
    return causal_attention(q, k, v, recompute=True)


def naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The textbook version: build the mask, mask the scaled scores, softmax, autograd backward."""
    L, S = q.shape[-2], k.shape[-2]
    keep = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
    scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(q.shape[-1]))
    scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def chunked_autograd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Blocks of 128 queries against their visible keys only, differentiated by autograd."""
    L, block, scale = q.shape[-2], 128, 1.0 / math.sqrt(q.shape[-1])
    outs = []
    for i0 in range(0, L, block):
        i1 = min(i0 + block, L)
        scores = (q[..., i0:i1, :] * scale) @ k[..., :i1, :].transpose(-2, -1)
        hidden = torch.ones(i1 - i0, i1, dtype=torch.bool, device=q.device).triu(i0 + 1)
        scores = scores.masked_fill(hidden, float("-inf"))
        outs.append(torch.softmax(scores, dim=-1) @ v[..., :i1, :])
    return torch.cat(outs, dim=-2)


def load_module(path: Path) -> ModuleType:
    """Import a Python file (e.g. an older ``functional/attention.py``) under its own name."""
    spec = importlib.util.spec_from_file_location("scratchformer_attention_before", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"--before-module: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Variant:
    """One implementation under test; ``full_scores`` if it holds whole L×S score matrices."""

    fn: Attention
    full_scores: bool
    doc: str


def variants(before_module: Path | None = None) -> dict[str, Variant]:
    """All implementations this benchmark knows, by name (``sdpa`` is the reference)."""
    table = {
        "sdpa": Variant(sdpa, False, "torch.nn.functional.scaled_dot_product_attention"),
        "scratch": Variant(scratch, False, "scratchformer, is_causal=True (tiled kernel)"),
        "naive": Variant(naive, True, "mask + masked_fill + torch.softmax + autograd"),
        # Autograd keeps each block's scores and weights: about L·L numbers per head in all.
        "chunked_autograd": Variant(
            chunked_autograd, True, "128-query blocks, causal skip, torch.softmax, autograd"
        ),
        "scratch_masked": Variant(
            scratch_masked, True, "scratchformer general path, explicit boolean causal mask"
        ),
        "scratch_recompute": Variant(
            scratch_recompute, False, "scratchformer tiled kernel, weights rebuilt in backward"
        ),
    }
    if before_module is not None:
        old = load_module(before_module)

        def before(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return old.scaled_dot_product_attention(q, k, v, is_causal=True)

        table["before"] = Variant(before, True, f"scaled_dot_product_attention of {before_module}")
    return table


# --- one measurement ---------------------------------------------------------------------------


def make_inputs(
    batch: int, heads: int, length: int, head_dim: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    """Seeded q, k, v (requiring grad) and an upstream gradient, each (batch, heads, L, E)."""
    g = torch.Generator().manual_seed(length)
    shape = (batch, heads, length, head_dim)
    q, k, v, grad_out = (torch.randn(shape, generator=g, dtype=dtype) for _ in range(4))
    q, k, v = (t.to(device).requires_grad_(True) for t in (q, k, v))
    return q, k, v, grad_out.to(device)


def step(fn: Attention, mode: str, q, k, v, grad_out) -> Callable[[], object]:
    """The call to time: inference forward under no_grad, or forward plus backward."""
    if mode == "fwd":

        def forward() -> object:
            with torch.no_grad():
                return fn(q, k, v)

        return forward
    if mode == "fwd+bwd":

        def forward_backward() -> object:
            out = fn(q, k, v)
            return torch.autograd.grad(out, (q, k, v), grad_out)

        return forward_backward
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def score_bytes(args: argparse.Namespace, length: int) -> int:
    """Bytes of one full (batch, heads, L, L) float32 score matrix."""
    return args.batch * args.heads * length * length * 4


def skipped(variant: Variant, args: argparse.Namespace, length: int) -> bool:
    """Whether ``variant`` is left out at ``length`` because its L×L scores exceed the budget."""
    return variant.full_scores and score_bytes(args, length) > args.max_score_gib * 2**30


def memory_probe(args: argparse.Namespace) -> dict:
    """Peak extra memory (bytes) of one call of one variant: the ``--memory-probe`` entry point."""
    name, mode, length = args.memory_probe[0], args.memory_probe[1], int(args.memory_probe[2])
    device = torch.device(args.device)
    fn = variants(args.before_module)[name].fn
    # One tiny call first, so one-off costs (thread pools, libraries, the CUDA context) are paid
    # outside the measurement.
    step(fn, mode, *make_inputs(1, 1, 8, args.head_dim, device, torch.float32))()
    q, k, v, grad_out = make_inputs(
        args.batch, args.heads, length, args.head_dim, device, torch.float32
    )
    call = step(fn, mode, q, k, v, grad_out)
    if device.type == "cuda":
        return {"bytes": peak_cuda_bytes(call, device), "method": "cuda.max_memory_allocated"}
    return {"bytes": rss_rise_bytes(call), "method": "peak RSS (VmHWM) rise in a fresh process"}


def measure_memory(args: argparse.Namespace, name: str, mode: str, length: int) -> dict:
    """Run :func:`memory_probe` in a fresh interpreter (a clean peak, no allocator cache)."""
    probe = [
        "-m", f"benchmarks.{NAME}", "--memory-probe", name, mode, str(length),
        "--device", args.device, "--batch", str(args.batch), "--heads", str(args.heads),
        "--head-dim", str(args.head_dim), "--threads", str(torch.get_num_threads()),
    ]  # fmt: skip
    if args.before_module is not None:
        probe += ["--before-module", str(args.before_module.resolve())]
    return run_json_subprocess(probe, cwd=REPO_ROOT)


# --- the sweep ---------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace) -> dict:
    """Time (and optionally measure the memory of) every selected variant at every length."""
    device = torch.device(args.device)
    machine = machine_info(device)  # the load average at the start
    # Micro-benchmarks first, while the process is fresh: how much a fresh allocation costs
    # depends on the allocator's history (seen from ~10× down to ~1× late in a long run).
    micro = micro_benchmarks(device, args.clock) if args.micro else []
    table = variants(args.before_module)
    names = ["sdpa", *[n for n in args.variants if n != "sdpa"]]
    if args.before_module is not None and "before" not in names:
        names.insert(1, "before")
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"--variants: unknown {unknown}; known: {sorted(table)}")
    results: list[dict] = []
    for length in args.lengths:
        q, k, v, grad_out = make_inputs(
            args.batch, args.heads, length, args.head_dim, device, torch.float32
        )
        active = [n for n in names if not skipped(table[n], args, length)]
        for mode in MODES:
            fns = {n: step(table[n].fn, mode, q, k, v, grad_out) for n in active}

            def rounds(warm_total: float) -> int:
                fit = int(args.budget_s / max(warm_total, 1e-9))
                return max(args.min_repeats, min(args.repeats, fit))

            start = time.perf_counter()
            samples = interleaved_timings(fns, device, rounds, clock=args.clock)
            took = time.perf_counter() - start
            for n in names:
                entry: dict = {"variant": n, "mode": mode, "length": length}
                if n not in samples:
                    gib = score_bytes(args, length) / 2**30
                    entry["skipped"] = (
                        f"one L×L score matrix is {gib:.1f} GiB > --max-score-gib "
                        f"{args.max_score_gib}; this path holds several at once"
                    )
                    results.append(entry)
                    continue
                ms = [s * 1e3 for s in samples[n]]
                ratios = [a / b for a, b in zip(samples[n], samples["sdpa"], strict=True)]
                entry["ms"] = summarize(ms).as_dict()
                entry["ratio_to_sdpa"] = summarize(ratios).as_dict()
                entry["samples_ms"] = [round(x, 3) for x in ms]
                if args.memory:
                    entry["memory"] = measure_memory(args, n, mode, length)
                results.append(entry)
            line = "  ".join(f"{n} {summarize(samples[n]).median * 1e3:.1f}" for n in samples)
            print(f"L={length} {mode} ({len(samples['sdpa'])} rounds, {took:.0f} s): {line} ms")
            sys.stdout.flush()
        del q, k, v, grad_out
    return {
        "benchmark": NAME,
        "command": " ".join(["python -m benchmarks.causal_attention", *sys.argv[1:]]),
        "machine": machine,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "config": {
            "batch": args.batch,
            "heads": args.heads,
            "head_dim": args.head_dim,
            "dtype": "float32",
            "clock": args.clock,
            "lengths": list(args.lengths),
            "variants": names,
            "repeats": args.repeats,
            "min_repeats": args.min_repeats,
            "budget_s": args.budget_s,
            "max_score_gib": args.max_score_gib,
        },
        "variant_docs": {n: table[n].doc for n in names},
        "results": results,
        "micro": micro,
    }


def micro_benchmarks(
    device: torch.device, clock: str = "wall", n: int = 1 << 20, big: int = 1 << 26
) -> list[dict]:
    """Costs behind the design choices: ``exp`` by argument, fresh memory, per-op thread cost.

    ``exp`` of ``n`` float32 values, all equal to one argument: ordinary ones, ones whose result
    is subnormal or zero, and −inf (what masked scores become). Writing ``big`` floats (256 MiB)
    into a fresh tensor against writing them into one that already exists. And (CPU) 100 small
    in-place additions with one thread and with one per core: under load from other processes
    every multi-threaded op waits for all its threads to be scheduled.
    """
    out = torch.empty(n, device=device)
    fns: dict[str, Callable[[], object]] = {}
    for label, arg in [("exp(0)", 0.0), ("exp(-80)", -80.0), ("exp(-88): subnormal", -88.0),
                       ("exp(-200): zero", -200.0), ("exp(-inf)", -math.inf)]:  # fmt: skip
        x = torch.full((n,), arg, device=device)
        fns[label] = lambda x=x: torch.exp(x, out=out)
    reused = torch.empty(big, device=device)
    mib = big * 4 // 2**20
    fns[f"fill {mib} MiB, reused"] = lambda: reused.fill_(1.0)
    fns[f"fill {mib} MiB, fresh"] = lambda: torch.empty(big, device=device).fill_(1.0)
    if device.type == "cpu":  # what one small op costs with 1 and with all threads, now
        x = torch.zeros(n)

        def adds(threads: int) -> None:
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            for _ in range(100):
                x.add_(1.0)
            torch.set_num_threads(before)

        for threads in sorted({1, os.cpu_count() or 1}):
            fns[f"100 × add_ on {n} floats, {threads} thread(s)"] = lambda t=threads: adds(t)
    samples = interleaved_timings(fns, device, rounds=7, clock=clock)
    return [
        {"case": k, "ms": summarize([t * 1e3 for t in v]).as_dict()} for k, v in samples.items()
    ]


# --- reporting ---------------------------------------------------------------------------------


def _lookup(report: dict, variant: str, mode: str, length: int) -> dict | None:
    """The result entry of ``variant`` in ``mode`` at ``length``, if it was measured."""
    for r in report["results"]:
        if (r["variant"], r["mode"], r["length"]) == (variant, mode, length) and "ms" in r:
            return r
    return None


def _ms(entry: dict | None) -> str:
    return "—" if entry is None else f"{entry['ms']['median']:.1f}"


def _ratio(entry: dict | None, spread: bool = False) -> str:
    if entry is None:
        return "—"
    r = entry["ratio_to_sdpa"]
    text = f"{r['median']:.2f}×"
    return f"{text} ({r['q1']:.2f}–{r['q3']:.2f})" if spread and r["n"] > 1 else text


def _mib(entry: dict | None) -> str:
    if entry is None or "memory" not in entry:
        return "—"
    return f"{entry['memory']['bytes'] / 2**20:.0f}"


def markdown_tables(report: dict) -> str:
    """Time table (sdpa, before, scratch), other variants' ratios, memory, and what was skipped."""
    lengths, names = report["config"]["lengths"], report["config"]["variants"]
    m = report["machine"]
    lines = [
        f"Measured on {m['cpu']} ({m['logical_cores']} logical cores, {m['torch_threads']} torch "
        f"threads), torch {m['torch']}, device {m['device']}; load average (1/5/15 min) "
        f"{m['load_average_1_5_15']} at the start, {report.get('load_average_at_end')} at the "
        f"end. Times: median ms of {report['config'].get('clock', 'wall')}-clock time over "
        "interleaved rounds. Ratios: median of the per-round ratios to sdpa (in parentheses: "
        "their quartiles).",
        "",
        "| L | fwd sdpa | fwd before | fwd scratch | before / sdpa | **scratch / sdpa** "
        "| fwd+bwd sdpa | fwd+bwd before | fwd+bwd scratch | before / sdpa | **scratch / sdpa** |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for L in lengths:
        cells = [str(L)]
        for mode in MODES:
            s, b, ours = (_lookup(report, n, mode, L) for n in ("sdpa", "before", "scratch"))
            cells += [_ms(s), _ms(b), _ms(ours), _ratio(b), f"**{_ratio(ours, spread=True)}**"]
        lines.append("| " + " | ".join(cells) + " |")
    others = [n for n in names if n not in ("sdpa", "scratch", "before")]
    if others:
        lines += [
            "",
            "Other implementations, time / sdpa time (fwd; fwd+bwd):",
            "",
            "| L | " + " | ".join(others) + " |",
            "|---:|" + "---:|" * len(others),
        ]
        for L in lengths:
            cells = [str(L)]
            for n in others:
                f, fb = (_lookup(report, n, mode, L) for mode in MODES)
                cells.append(f"{_ratio(f)}; {_ratio(fb)}")
            lines.append("| " + " | ".join(cells) + " |")
    if any("memory" in r for r in report["results"]):
        method = next(r["memory"]["method"] for r in report["results"] if "memory" in r)
        lines += [
            "",
            f"Peak extra memory of one call in MiB ({method}), fwd; fwd+bwd:",
            "",
            "| L | " + " | ".join(names) + " |",
            "|---:|" + "---:|" * len(names),
        ]
        for L in lengths:
            cells = [str(L)]
            for n in names:
                f, fb = (_lookup(report, n, mode, L) for mode in MODES)
                cells.append(f"{_mib(f)}; {_mib(fb)}")
            lines.append("| " + " | ".join(cells) + " |")
    if report.get("micro"):
        lines += ["", "Micro-benchmarks (median ms of 7):", "", "| case | ms |", "|---|---:|"]
        lines += [f"| {r['case']} | {r['ms']['median']:.2f} |" for r in report["micro"]]
    skips = sorted({(r["variant"], r["length"]) for r in report["results"] if "skipped" in r})
    if skips:
        gib = report["config"]["max_score_gib"]
        lines += [
            "",
            f"Not run (one L×L fp32 score matrix would exceed {gib} GiB, and these paths hold "
            "several): " + ", ".join(f"{n} at L={L}" for n, L in skips) + ".",
        ]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    """Log-log time against length per variant and mode, and each variant's ratio to sdpa."""
    from scratchformer.viz.figures import new_figure, save_figure

    fig, (ax_t, ax_r) = new_figure(width=10.0, height=4.2, ncols=2)
    lengths, names = report["config"]["lengths"], report["config"]["variants"]
    main = {"sdpa": "black", "scratch": "tab:blue", "before": "tab:orange", "naive": "tab:red"}
    for i, n in enumerate(names):
        color = main.get(n, f"C{4 + i}")
        for mode, style in (("fwd", "--"), ("fwd+bwd", "-")):
            pts = [(L, e) for L in lengths if (e := _lookup(report, n, mode, L)) is not None]
            if not pts:
                continue
            xs = [L for L, _ in pts]
            kw = {"marker": "o", "ms": 3, "color": color, "label": f"{n} {mode}",
                  "alpha": 1.0 if n in main else 0.5}  # fmt: skip
            if n in main:
                ax_t.plot(xs, [e["ms"]["median"] for _, e in pts], style, **kw)
            if n != "sdpa":
                ax_r.plot(xs, [e["ratio_to_sdpa"]["median"] for _, e in pts], style, **kw)
    ax_t.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel="time (ms)",
             title="causal attention, fp32, B=8, H=8, E=64")  # fmt: skip
    ax_r.axhline(1.0, color="black", lw=0.8)
    ax_r.axhline(1.5, color="black", lw=0.8, ls=":", label="1.5× target")
    ax_r.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel="time / sdpa time",
             title="ratio to PyTorch SDPA (dashed fwd, solid fwd+bwd)")  # fmt: skip
    for ax in (ax_t, ax_r):
        ax.set_xticks(lengths, [str(L) for L in lengths])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, path)


# --- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=positive_ints, default=FULL_LENGTHS)
    p.add_argument("--repeats", type=int, default=7, help="most timed rounds per length and mode")
    p.add_argument("--min-repeats", type=int, default=3, help="fewest rounds, however slow")
    p.add_argument("--budget-s", type=float, default=20.0,
                   help="seconds of timed rounds to aim for per length and mode")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, ...")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall, or process CPU time (CPU only; robust to other load)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="lengths 128-512 and 3 rounds")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--variants", type=lambda s: s.split(","), default=list(DEFAULT_VARIANTS),
                   help="comma-separated, besides sdpa (always run), or 'all'")  # fmt: skip
    p.add_argument("--before-module", type=Path,
                   help="an older functional/attention.py to time as 'before'")  # fmt: skip
    p.add_argument("--max-score-gib", type=float, default=2.0,
                   help="skip full-score paths when one L×L fp32 matrix exceeds this")  # fmt: skip
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument("--micro", action="store_true", help="also time exp ranges and fresh memory")
    p.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    p.add_argument("--render", type=Path, help="only redraw the table and plot of this JSON")
    p.add_argument("--memory-probe", nargs=3, metavar=("VARIANT", "MODE", "L"), help="internal")
    args = p.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            p.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.variants == ["all"]:
        args.variants = [*DEFAULT_VARIANTS, *ABLATION_VARIANTS]
    if args.quick:
        args.lengths, args.repeats, args.min_repeats = QUICK_LENGTHS, 3, 3
    if args.min_repeats < 1 or args.repeats < args.min_repeats:
        p.error(f"need 1 <= --min-repeats <= --repeats, got {args.min_repeats}, {args.repeats}")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and write JSON, Markdown and PNG under ``--out``; returns the report."""
    args = parse_args(argv)
    if args.memory_probe:
        result = memory_probe(args)
        print(json.dumps(result))
        return result
    args.out.mkdir(parents=True, exist_ok=True)
    if args.render:
        report = json.loads(args.render.read_text())
    else:
        report = run_benchmark(args)
        (args.out / f"{NAME}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / f"{NAME}.md").write_text(markdown_tables(report))
    plot(report, args.out / f"{NAME}.png")
    print(markdown_tables(report))
    return report


if __name__ == "__main__":
    main()
