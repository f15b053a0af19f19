"""Block-sparse attention: how time and memory scale with length, against dense kernels.

Times, forward only (under ``torch.no_grad``) and forward + backward, in float32 at batch 1,
8 heads and head size 64 by default:

* ``sparse``: ``scratchformer.functional.sparse.block_sparse_attention`` with the causal
  window + every-s-th-token layout, ``w = s = round(√L)`` (the cost-minimising choice of
  docs/derivations/sparse-attention-complexity.md), query blocks of ``--block`` rows;
* ``dense_masked``: scratchformer's dense ``scaled_dot_product_attention`` given the same
  layout as an (L, L) boolean mask (the reference implementation);
* ``sdpa_masked``: PyTorch's ``F.scaled_dot_product_attention`` with the same boolean mask;
* ``sdpa_causal``: PyTorch's SDPA with ``is_causal=True`` (full causal attention, for context).

Variants are timed interleaved (see ``benchmarks/common.py``); a dense path is skipped at a
length where its L×L scores exceed ``--max-score-gib`` (``dense_masked``) or the length exceeds
``--max-dense-length`` (SDPA paths, to bound the run time). Peak memory of one forward +
backward call comes from a fresh process. A least-squares slope of log time against log L is
fitted over ``--fit-range``. From the repository root::

    python -m benchmarks.sparse_attention --threads 1       # 256-16384, about 10 min on 2 cores
    python -m benchmarks.sparse_attention --quick           # 256-1024, no memory probes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import (
    interleaved_timings,
    machine_info,
    positive_ints,
    rss_rise_bytes,
    run_json_subprocess,
    summarize,
)
from scratchformer.functional import attention as scratch_attention
from scratchformer.functional.sparse import (
    SparseLayout,
    block_sparse_attention,
    layout_to_mask,
    window_strided_layout,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
NAME = "sparse_attention"
FULL_LENGTHS = (256, 512, 1024, 2048, 4096, 8192, 16384)
QUICK_LENGTHS = (256, 512, 1024)
MODES = ("fwd", "fwd+bwd")
VARIANTS = ("sparse", "sdpa_masked", "sdpa_causal", "dense_masked")
CONFIG_KEYS = ("batch", "heads", "head_dim", "block", "lengths", "repeats", "min_repeats",
               "budget_s", "max_score_gib", "max_dense_length", "fit_range")  # fmt: skip
FIGURE = REPO_ROOT / "docs" / "benchmarks" / f"{NAME}.png"

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def window_stride(length: int) -> int:
    """``w = s = round(√L)``: the two-hop-connected choice of least cost."""
    return max(1, round(math.sqrt(length)))


def make_layout(length: int, block: int) -> SparseLayout:
    """Causal window + every-s-th-token layout with ``w = s = round(√L)``."""
    w = window_stride(length)
    return window_strided_layout(length, block, w, w, causal=True)


def implementations(layout: SparseLayout, mask: torch.Tensor | None) -> dict[str, Attention]:
    """The timed functions; the dense ones read the layout's (L, L) mask."""
    return {
        "sparse": lambda q, k, v: block_sparse_attention(q, k, v, layout),
        "sdpa_masked": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        "sdpa_causal": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        "dense_masked": lambda q, k, v: scratch_attention.scaled_dot_product_attention(
            q, k, v, attn_mask=mask
        ),
    }


def make_inputs(args: argparse.Namespace, length: int) -> tuple[torch.Tensor, ...]:
    """Seeded q, k, v (requiring grad) and an upstream gradient, each (batch, heads, L, E)."""
    g = torch.Generator().manual_seed(length)
    shape = (args.batch, args.heads, length, args.head_dim)
    q, k, v, grad_out = (torch.randn(shape, generator=g) for _ in range(4))
    return q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), grad_out


def step(fn: Attention, mode: str, q, k, v, grad_out) -> Callable[[], object]:
    """The call to time: inference forward under no_grad, or forward plus backward."""
    if mode == "fwd":

        def forward() -> object:
            with torch.no_grad():
                return fn(q, k, v)

        return forward

    def forward_backward() -> object:
        return torch.autograd.grad(fn(q, k, v), (q, k, v), grad_out)

    return forward_backward


def skip_reason(name: str, args: argparse.Namespace, length: int) -> str | None:
    """Why ``name`` is left out at ``length``, or None."""
    if name == "dense_masked":
        gib = args.batch * args.heads * length * length * 4 / 2**30
        if gib > args.max_score_gib:
            return f"L×L fp32 scores {gib:.1f} GiB > --max-score-gib {args.max_score_gib}"
    elif name.startswith("sdpa") and length > args.max_dense_length:
        return f"L > --max-dense-length {args.max_dense_length} (Θ(L²) time)"
    return None


def memory_probe(args: argparse.Namespace) -> dict:
    """Peak extra memory (bytes) of one call in this fresh process: ``--memory-probe``."""
    name, mode, length = args.memory_probe[0], args.memory_probe[1], int(args.memory_probe[2])
    small = make_layout(16, args.block)
    tiny = argparse.Namespace(**{**vars(args), "batch": 1, "heads": 1})
    step(implementations(small, layout_to_mask(small))[name], mode, *make_inputs(tiny, 16))()
    layout = make_layout(length, args.block)
    mask = layout_to_mask(layout) if name in ("sdpa_masked", "dense_masked") else None
    call = step(implementations(layout, mask)[name], mode, *make_inputs(args, length))
    return {"bytes": rss_rise_bytes(call), "method": "peak RSS (VmHWM) rise in a fresh process"}


def measure_memory(args: argparse.Namespace, name: str, mode: str, length: int) -> dict:
    """Run :func:`memory_probe` in a fresh interpreter."""
    probe = [
        "-m", f"benchmarks.{NAME}", "--memory-probe", name, mode, str(length),
        "--batch", str(args.batch), "--heads", str(args.heads), "--head-dim", str(args.head_dim),
        "--block", str(args.block), "--threads", str(torch.get_num_threads()),
    ]  # fmt: skip
    return run_json_subprocess(probe, cwd=REPO_ROOT)


def run_benchmark(args: argparse.Namespace) -> dict:
    """Time every variant at every length (and probe memory); returns the report."""
    device = torch.device("cpu")
    machine = machine_info(device)
    results: list[dict] = []
    for length in args.lengths:
        start = time.perf_counter()
        layout = make_layout(length, args.block)
        build_s = time.perf_counter() - start
        active = [n for n in VARIANTS if skip_reason(n, args, length) is None]
        needs_mask = {"sdpa_masked", "dense_masked"} & set(active)
        mask = layout_to_mask(layout) if needs_mask else None
        fns = implementations(layout, mask)
        q, k, v, grad_out = make_inputs(args, length)
        for mode in MODES:
            calls = {n: step(fns[n], mode, q, k, v, grad_out) for n in active}

            def rounds(warm_total: float) -> int:
                return max(args.min_repeats, min(args.repeats, int(args.budget_s / warm_total)))

            samples = interleaved_timings(calls, device, rounds)
            for n in VARIANTS:
                entry: dict = {"variant": n, "mode": mode, "length": length}
                reason = skip_reason(n, args, length)
                if reason is not None:
                    results.append({**entry, "skipped": reason})
                    continue
                entry["ms"] = summarize([s * 1e3 for s in samples[n]]).as_dict()
                if args.memory and mode == "fwd+bwd":
                    entry["memory"] = measure_memory(args, n, mode, length)
                if n == "sparse":
                    entry["layout"] = {"window": window_stride(length), "stride":
                                       window_stride(length), "block": args.block,
                                       "slots": layout.slots, "entries": layout.entries,
                                       "gathered_entries": layout.gathered_entries,
                                       "build_s": round(build_s, 4)}  # fmt: skip
                results.append(entry)
            line = "  ".join(f"{n} {summarize(s).median * 1e3:.1f}" for n, s in samples.items())
            print(f"L={length} {mode} ({len(samples['sparse'])} rounds): {line} ms", flush=True)
        del q, k, v, grad_out, mask, fns
    report = {
        "benchmark": NAME,
        "command": " ".join(["python -m benchmarks.sparse_attention", *sys.argv[1:]]),
        "machine": machine,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
                   if k in CONFIG_KEYS},
        "results": results,
    }
    report["analysis"] = analyse(report)
    return report


# --- analysis and output -----------------------------------------------------------------------


def _series(report: dict, name: str, mode: str) -> dict[int, dict]:
    return {e["length"]: e for e in report["results"]
            if e["variant"] == name and e["mode"] == mode and "ms" in e}  # fmt: skip


def loglog_slope(points: dict[int, float]) -> float | None:
    """Least-squares slope of log(time) against log(length); None with fewer than 2 points."""
    if len(points) < 2:
        return None
    xs = [math.log(x) for x in points]
    ys = [math.log(y) for y in points.values()]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def analyse(report: dict) -> dict:
    """Fitted slopes over the fit range; crossover and speed-up of sparse against each SDPA."""
    lo, hi = report["config"]["fit_range"]
    out: dict = {"slopes": {}, "against": {}}
    for mode in MODES:
        for name in VARIANTS:
            pts = {L: e["ms"]["median"] for L, e in _series(report, name, mode).items()
                   if lo <= L <= hi}  # fmt: skip
            out["slopes"][f"{name} {mode}"] = loglog_slope(pts)
        sparse = _series(report, "sparse", mode)
        for ref in ("sdpa_masked", "sdpa_causal"):
            other = _series(report, ref, mode)
            common = sorted(set(sparse) & set(other))
            speed = {L: other[L]["ms"]["median"] / sparse[L]["ms"]["median"] for L in common}
            # crossover: the smallest length from which sparse is faster at every measured length
            cross = next((L for L in common if all(speed[M] > 1 for M in common if M >= L)), None)
            out["against"][f"{ref} {mode}"] = {
                "speedup": {str(L): round(s, 3) for L, s in speed.items()},
                "crossover_length": cross,
                "largest_length": common[-1] if common else None,
            }
    return out


def _ms(entry: dict | None) -> str:
    if entry is None:
        return "—"
    if "skipped" in entry:
        return "skip"
    return f"{entry['ms']['median']:.1f}"


def _mib(entry: dict | None) -> str:
    if entry is None or "memory" not in entry:
        return "—"
    return f"{entry['memory']['bytes'] / 2**20:.0f}"


def markdown(report: dict) -> str:
    """Time (ms, median) and peak extra memory (MiB) per length, then slopes and crossovers."""
    lines = []
    lengths = report["config"]["lengths"]
    for mode in MODES:
        lines += [f"**{mode}** — median ms (memory: peak RSS rise, MiB, fwd+bwd)", "",
                  "| L | w = s | slots | " + " | ".join(VARIANTS) + " |",
                  "|---:|---:|---:|" + "---:|" * len(VARIANTS)]  # fmt: skip
        for L in lengths:
            row = {e["variant"]: e for e in report["results"]
                   if e["length"] == L and e["mode"] == mode}  # fmt: skip
            lay = row["sparse"]["layout"] if "sparse" in row and "layout" in row["sparse"] else {}
            cells = []
            for n in VARIANTS:
                cell = _ms(row.get(n))
                if mode == "fwd+bwd" and _mib(row.get(n)) != "—":
                    cell += f" ({_mib(row.get(n))} MiB)"
                cells.append(cell)
            lines.append(f"| {L} | {lay.get('window', '—')} | {lay.get('slots', '—')} | "
                         + " | ".join(cells) + " |")  # fmt: skip
        lines.append("")
    lo, hi = report["config"]["fit_range"]
    lines += [f"Fitted log-log time slopes over L = {lo}–{hi}:", ""]
    for key, slope in report["analysis"]["slopes"].items():
        if slope is not None:
            lines.append(f"- {key}: {slope:.2f}")
    lines += ["", "Block-sparse against SDPA (speed-up = SDPA time / sparse time):", ""]
    for key, a in report["analysis"]["against"].items():
        big = a["largest_length"]
        if big is None:
            continue
        lines.append(f"- vs {key}: faster from L = {a['crossover_length']} on; "
                     f"{a['speedup'][str(big)]:.2f}× at L = {big}")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    """Log-log time against length (fwd dashed, fwd+bwd solid) and fwd+bwd peak memory."""
    from scratchformer.viz.figures import new_figure, save_figure

    fig, (ax_t, ax_m) = new_figure(width=10.0, height=4.2, ncols=2)
    colors = {"sparse": "tab:blue", "sdpa_masked": "tab:orange", "sdpa_causal": "black",
              "dense_masked": "tab:red"}  # fmt: skip
    for n in VARIANTS:
        for mode, style in (("fwd", "--"), ("fwd+bwd", "-")):
            s = _series(report, n, mode)
            if s:
                ax_t.plot(list(s), [e["ms"]["median"] for e in s.values()], style, marker="o",
                          ms=3, color=colors[n], label=f"{n} {mode}")  # fmt: skip
            mem = {L: e["memory"]["bytes"] / 2**20 for L, e in s.items() if "memory" in e}
            if mem and mode == "fwd+bwd":
                ax_m.plot(list(mem), list(mem.values()), "-", marker="o", ms=3,
                          color=colors[n], label=n)  # fmt: skip
    lengths = report["config"]["lengths"]
    ax_t.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel="time (ms)",
             title="causal attention, fp32, B=1, H=8, E=64; sparse: w = s = √L")  # fmt: skip
    ax_m.set(xscale="log", yscale="log", xlabel="sequence length L",
             ylabel="peak extra memory, fwd+bwd (MiB)", title="memory")  # fmt: skip
    for ax in (ax_t, ax_m):
        ax.set_xticks(lengths, [str(L) for L in lengths])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=positive_ints, default=FULL_LENGTHS)
    p.add_argument("--repeats", type=int, default=5, help="most timed rounds per length and mode")
    p.add_argument("--min-repeats", type=int, default=1, help="fewest rounds, however slow")
    p.add_argument("--budget-s", type=float, default=8.0,
                   help="seconds of timed rounds to aim for per length and mode")  # fmt: skip
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="lengths 256-1024, no memory probes")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--block", type=int, default=64, help="query rows per block of the layout")
    p.add_argument("--max-score-gib", type=float, default=1.0,
                   help="skip dense_masked when its L×L fp32 scores exceed this")  # fmt: skip
    p.add_argument("--max-dense-length", type=int, default=8192,
                   help="skip the SDPA paths above this length")  # fmt: skip
    p.add_argument("--fit-range", type=positive_ints, default=(1024, 16384),
                   help="LO,HI of the fit")
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    p.add_argument("--figure", type=Path, default=FIGURE, help="where the log-log plot goes")
    p.add_argument("--render", type=Path, help="only redraw the table and plot of this JSON")
    p.add_argument("--memory-probe", nargs=3, metavar=("VARIANT", "MODE", "L"), help="internal")
    args = p.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            p.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if len(args.fit_range) != 2:
        p.error(f"--fit-range must be LO,HI, got {args.fit_range}")
    if args.quick:
        args.lengths, args.repeats, args.memory = QUICK_LENGTHS, 3, False
    if args.min_repeats < 1 or args.repeats < args.min_repeats:
        p.error(f"need 1 <= --min-repeats <= --repeats, got {args.min_repeats}, {args.repeats}")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; write JSON and Markdown under ``--out`` and the plot to ``--figure``."""
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
    text = markdown(report)
    (args.out / f"{NAME}.md").write_text(text)
    plot(report, args.figure)
    print(text)
    return report


if __name__ == "__main__":
    main()
