"""Character-level Tiny Shakespeare: our GPT against nanoGPT's model, trained side by side.

nanoGPT's CPU "baby" run (4 layers, 4 heads, width 128, context 64, batch 12, 2000 iterations,
lr 1e-3 with 100 warm-up steps and cosine decay to 1e-4, AdamW betas (0.9, 0.99), weight decay
0.1 on matrices, gradient clipping at 1, no dropout, no biases) reports a validation loss of
about 1.886 nats/char. This script trains nanoGPT's ``model.py`` and our GPT under exactly those
settings on the same batches (same seed, same data, same schedule, same optimizer
implementation), one step of each model in turn with the order rotating every step, so that
load from other processes hits both alike. (That interleaving is why this script steps the
models itself rather than through the library `Trainer`, which trains one model to the end; the
data, batches and validation estimate are the library's, as in the char-LM studies.) For
each seed it reports the validation loss (mean over ``--eval-batches`` random validation
batches, nanoGPT's estimator, on the same batches for every model) and the per-step time on
the wall clock and the process CPU clock; the speed ratio is the median of the per-step
ratios to nanoGPT.

Both models use our character vocabulary (the characters of the whole text, as nanoGPT's
``prepare.py`` builds it) and the standard 90/10 split. Run from the repository root::

    python -m benchmarks.char_lm --nanogpt PATH/TO/nanoGPT --seeds 0,1 --threads 1
    python -m benchmarks.char_lm --nanogpt PATH/TO/nanoGPT --backends "" --tuned-lr 2e-3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from benchmarks.common import machine_info
from benchmarks.train_step import load_nanogpt
from scratchformer.data.lm_text import char_data, random_batch, shakespeare_split
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.training.lm_metrics import estimate_loss
from scratchformer.training.optim import param_groups

SHAPE = {"n_layers": 4, "n_heads": 4, "d_model": 128, "context_len": 64}
BATCH, STEPS, LR, MIN_LR, WARMUP, BETA2, WD, CLIP = 12, 2000, 1e-3, 1e-4, 100, 0.99, 0.1, 1.0


def lr_at(step: int, steps: int) -> float:
    """nanoGPT's schedule: linear warm-up over ``WARMUP`` steps, cosine from LR to MIN_LR."""
    if step < WARMUP:
        return LR * (step + 1) / (WARMUP + 1)
    ratio = (step - WARMUP) / max(1, steps - WARMUP)
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * min(ratio, 1.0))) * (LR - MIN_LR)


class Contiguous(nn.Module):
    """nanoGPT's model with contiguous inputs (its loss calls ``.view`` on the targets)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        return self.model(x.contiguous(), None if y is None else y.contiguous())


def build_models(nanogpt_path: Path, vocab: int, backends: list[str],
                 tuned: bool = False) -> dict[str, nn.Module]:
    """nanoGPT's GPT and ours (per attention backend, and the tuned one), freshly initialised."""
    module = load_nanogpt(nanogpt_path)
    ncfg = module.GPTConfig(block_size=SHAPE["context_len"], vocab_size=vocab,
                            n_layer=SHAPE["n_layers"], n_head=SHAPE["n_heads"],
                            n_embd=SHAPE["d_model"], dropout=0.0, bias=False)
    with contextlib.redirect_stdout(io.StringIO()):
        models: dict[str, nn.Module] = {"nanogpt": Contiguous(module.GPT(ncfg))}
    for backend in backends:
        models[f"ours-{backend}"] = GPT(GPTConfig(vocab_size=vocab, dropout=0.0, bias=False,
                                                  attention_backend=backend, **SHAPE))
    if tuned:
        models["ours-tuned"] = GPT(GPTConfig(vocab_size=vocab, dropout=0.0, bias=False,
                                             attention_backend="sdpa", kernels="torch", **SHAPE))
    return models


def make_step(model: nn.Module) -> tuple[Callable[[Tensor, Tensor, float], float],
                                          torch.optim.Optimizer]:
    """One training step of ``model`` (forward, backward, clip, AdamW) at a given lr."""
    opt = torch.optim.AdamW(param_groups(model, WD), lr=LR, betas=(0.9, BETA2), fused=True)

    def step(x: Tensor, y: Tensor, lr: float) -> float:
        for group in opt.param_groups:
            group["lr"] = lr
        loss = model(x, y)[1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        return float(loss.detach())

    return step, opt


def train_seed(nanogpt_path: Path, data, seed: int, steps: int, eval_batches: int,
               backends: list[str], tuned_lr: float | None = None) -> dict:
    """Train every model for ``steps`` steps on the same batches; losses and step times.

    With ``tuned_lr`` an extra model, "ours-tuned" (PyTorch's element-wise kernels, the same
    schedule scaled to peak ``tuned_lr``), trains alongside: our best settings at the same
    step count, hence about the same wall time as nanoGPT's run.
    """
    torch.manual_seed(seed)
    models = {}
    built = build_models(nanogpt_path, data.vocab_size, backends, tuned=tuned_lr is not None)
    for name, model in built.items():
        torch.manual_seed(seed)  # same seed for every model's initialisation
        models[name] = model
    steps_fns = {name: make_step(m)[0] for name, m in models.items()}
    names = list(models)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    gen = torch.Generator().manual_seed(seed)
    for s in range(steps):
        x, y = random_batch(data.train, BATCH, SHAPE["context_len"], gen)
        lr = lr_at(s, steps)
        shift = s % len(names)
        for name in names[shift:] + names[:shift]:
            scale = tuned_lr / LR if name == "ours-tuned" else 1.0
            w0, c0 = time.perf_counter(), time.process_time()
            steps_fns[name](x, y, lr * scale)
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    out: dict[str, dict] = {}
    for name, model in models.items():
        model.eval()
        out[name] = {
            "val_loss": estimate_loss(model, data.val, eval_batches, BATCH,
                                      SHAPE["context_len"], seed + 1),
            "wall_ms_per_step": 1e3 * statistics.median(wall[name][10:]),
            "cpu_ms_per_step": 1e3 * statistics.median(cpu[name][10:]),
            "wall_ratio_to_nanogpt": statistics.median(
                a / b for a, b in zip(wall[name][10:], wall["nanogpt"][10:], strict=True)),
            "cpu_ratio_to_nanogpt": statistics.median(
                a / b for a, b in zip(cpu[name][10:], cpu["nanogpt"][10:], strict=True)),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nanogpt", type=Path, required=True, help="nanoGPT's model.py or checkout")
    p.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--eval-batches", type=int, default=200)
    p.add_argument("--backends", default="sdpa,scratch", help="our attention backends")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    p.add_argument("--tuned-lr", type=float, default=None,
                   help="add ours-tuned: torch element-wise kernels, schedule peak at this lr")
    p.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = char_data(*shakespeare_split())
    info = machine_info(torch.device("cpu"))
    runs = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        backends = [b for b in args.backends.split(",") if b]
        runs[seed] = train_seed(args.nanogpt, data, seed, args.steps, args.eval_batches,
                                backends, args.tuned_lr)
        print(json.dumps({"seed": seed, **runs[seed]}), flush=True)
    names = list(next(iter(runs.values())))
    summary = {}
    for name in names:
        losses = [r[name]["val_loss"] for r in runs.values()]
        summary[name] = {
            "val_loss_mean": statistics.mean(losses),
            "val_loss_std": statistics.stdev(losses) if len(losses) > 1 else 0.0,
            **{k: statistics.mean(r[name][k] for r in runs.values())
               for k in ("wall_ms_per_step", "cpu_ms_per_step", "wall_ratio_to_nanogpt",
                         "cpu_ratio_to_nanogpt")},
            "parameters": runs[next(iter(runs))][name]["parameters"]}
    info["load_average_after"] = machine_info(torch.device("cpu"))["load_average_1_5_15"]
    report = {"machine": info, "steps": args.steps, "seeds": list(runs), "runs": runs,
              "summary": summary}
    args.out.mkdir(parents=True, exist_ok=True)
    name = "char_lm" if args.tuned_lr is None else "char_lm_tuned"
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1))
    lines = ["| model | params | val loss (mean ± std) | wall ms/step | × nanoGPT | CPU ms/step "
             "| × nanoGPT |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['parameters']:,} | {s['val_loss_mean']:.4f} ± "
                     f"{s['val_loss_std']:.4f} | {s['wall_ms_per_step']:.1f} | "
                     f"{s['wall_ratio_to_nanogpt']:.3f} | {s['cpu_ms_per_step']:.1f} | "
                     f"{s['cpu_ratio_to_nanogpt']:.3f} |")
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(info))


if __name__ == "__main__":
    main()
