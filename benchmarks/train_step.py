"""Training-step time: our GPT against nanoGPT's model and Hugging Face's GPT2LMHeadModel.

One training step = forward with loss, ``zero_grad``, backward, AdamW step, in float32 at
nanoGPT's CPU "baby" shape (4 layers, 4 heads, width 128, context 64, batch 12, vocabulary 65,
dropout 0). All contenders get the same architecture (GPT-2: biases everywhere, tied
embeddings, exact GELU for ours and nanoGPT; HF's GPT-2 has its tanh "gelu_new"), the same
random batches in the same order, and the same optimizer: ``torch.optim.AdamW`` with lr 1e-3,
weight decay 0.1 on matrices only (`scratchformer.training.optim.param_groups`, the same rule
for every model), betas (0.9, 0.95), and the same implementation (``--optimizer``; default
"fused", what `build_adamw` picks on the CPU; nanoGPT's own ``configure_optimizers`` would use
the for-loop one on the CPU, which ``--optimizer forloop`` reproduces for everyone).

The contenders are timed *interleaved* (`benchmarks.common.interleaved_timings`): each round
runs one step of every model, in an order that rotates from round to round, so load from other
processes hits all of them alike. We report the median and the interquartile range of the step
time, and each model's ratio to nanoGPT as the median of the per-round ratios (paired, so a
burst of load that slows a whole round cancels).

nanoGPT's code is not part of this repository: pass its ``model.py`` (or a checkout directory)
with ``--nanogpt``; without it nanoGPT is skipped. Hugging Face is skipped when
``transformers`` is not installed. Run from the repository root::

    python -m benchmarks.train_step --nanogpt ~/src/nanoGPT              # 400 rounds
    python -m benchmarks.train_step --nanogpt ~/src/nanoGPT --rounds 50  # a quick look
    python -m benchmarks.train_step --components                         # kernels only

``--components`` times our hand-written kernels (LayerNorm, GELU, the affine map) forward +
backward at the shapes of this model against the plain autograd formula they replace and
PyTorch's built-in, to show what each contributes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.common import interleaved_timings, machine_info, summarize
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.training.optim import param_groups

NAME = "train_step"
OPTIMIZERS = ("fused", "foreach", "forloop")
LR, WEIGHT_DECAY, BETAS = 1e-3, 0.1, (0.9, 0.95)
REFERENCE = "nanogpt"


@dataclass(frozen=True)
class Shape:
    """Model and batch sizes; the defaults are nanoGPT's CPU "baby" run of shakespeare_char."""

    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 128
    context_len: int = 64
    batch_size: int = 12
    vocab_size: int = 65


LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Contender:
    """A model, the function giving its mean next-token loss on a batch, and notes for the table."""

    name: str
    model: nn.Module
    loss: LossFn
    notes: str


# --- the contenders ------------------------------------------------------------------------------


def build_ours(shape: Shape, backend: str, activation: str = "gelu") -> Contender:
    """scratchformer's GPT with attention ``backend`` ("scratch" or "sdpa")."""
    config = GPTConfig(
        vocab_size=shape.vocab_size,
        context_len=shape.context_len,
        n_layers=shape.n_layers,
        n_heads=shape.n_heads,
        d_model=shape.d_model,
        dropout=0.0,
        bias=True,
        tie_weights=True,
        attention_backend=backend,
        activation=activation,
    )
    model = GPT(config)
    return Contender(
        f"ours-{backend}",
        model,
        lambda x, y: model(x, y)[1],
        f"scratchformer GPT, activation={activation!r}, attention backend {backend!r}",
    )


def load_nanogpt(path: Path) -> ModuleType:
    """Import nanoGPT's ``model.py`` from ``path`` (the file, or a directory that holds it)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "model.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"--nanogpt must be nanoGPT's model.py or its directory, got {path}"
        )
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_nanogpt(module: ModuleType, shape: Shape) -> Contender:
    """nanoGPT's ``GPT`` at ``shape``, with biases (like GPT-2 and the other contenders)."""
    config = module.GPTConfig(
        block_size=shape.context_len,
        vocab_size=shape.vocab_size,
        n_layer=shape.n_layers,
        n_head=shape.n_heads,
        n_embd=shape.d_model,
        dropout=0.0,
        bias=True,
    )
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its parameter count
        model = module.GPT(config)
    return Contender(REFERENCE, model, lambda x, y: model(x, y)[1], "nanoGPT model.py, bias=True")


def build_hf(shape: Shape) -> Contender | None:
    """Hugging Face's ``GPT2LMHeadModel`` at ``shape``, or None when transformers is missing."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    config = GPT2Config(
        vocab_size=shape.vocab_size,
        n_positions=shape.context_len,
        n_embd=shape.d_model,
        n_layer=shape.n_layers,
        n_head=shape.n_heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        use_cache=False,  # training: no key/value cache to build
    )
    model = GPT2LMHeadModel(config)

    def loss(x: Tensor, y: Tensor) -> Tensor:
        # Our targets are already shifted; HF's ``labels=`` would shift them again.
        logits = model(input_ids=x).logits
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))

    impl = getattr(model.config, "_attn_implementation", "?")
    return Contender("hf", model, loss, f"transformers GPT2LMHeadModel, attention {impl!r}")


# --- one training step -----------------------------------------------------------------------------


def make_batches(
    shape: Shape, n: int, seed: int, device: torch.device
) -> list[tuple[Tensor, Tensor]]:
    """``n`` random (inputs, next-token targets) batches of shape (batch_size, context_len)."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        seq = torch.randint(shape.vocab_size, (shape.batch_size, shape.context_len + 1),
                            generator=gen)  # fmt: skip
        batches.append((seq[:, :-1].contiguous().to(device), seq[:, 1:].contiguous().to(device)))
    return batches


def make_optimizer(model: nn.Module, kind: str) -> torch.optim.AdamW:
    """AdamW (lr 1e-3, betas (0.9, 0.95)), decay 0.1 on matrices only, implementation ``kind``."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {kind!r}")
    flags = {"fused": {"fused": True}, "foreach": {"foreach": True}, "forloop": {"foreach": False}}
    groups = param_groups(model, WEIGHT_DECAY)
    return torch.optim.AdamW(groups, lr=LR, betas=BETAS, **flags[kind])


def train_step(
    contender: Contender, batches: list[tuple[Tensor, Tensor]], optimizer: torch.optim.Optimizer
) -> Callable[[], float]:
    """A closure doing one training step on the next batch (cycling); returns the loss."""
    counter = iter(range(sys.maxsize))

    def step() -> float:
        x, y = batches[next(counter) % len(batches)]
        loss = contender.loss(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


# --- the benchmark ---------------------------------------------------------------------------------


def build_contenders(args: argparse.Namespace, shape: Shape) -> tuple[list[Contender], list[str]]:
    """The models to time, and messages about those skipped."""
    contenders, skipped = [], []
    if args.nanogpt is None:
        skipped.append("nanogpt: skipped (pass --nanogpt PATH to nanoGPT's model.py)")
    else:
        contenders.append(build_nanogpt(load_nanogpt(args.nanogpt), shape))
    if args.hf:
        hf = build_hf(shape)
        if hf is None:
            skipped.append("hf: skipped (transformers is not installed)")
        else:
            contenders.append(hf)
    for backend in ("sdpa", "scratch"):
        contenders.append(build_ours(shape, backend, args.activation))
    return contenders, skipped


def run_benchmark(args: argparse.Namespace) -> dict:
    """Time every contender's training step, interleaved; returns the report."""
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    shape = Shape()
    contenders, skipped = build_contenders(args, shape)
    batches = make_batches(shape, args.batches, args.seed, device)
    steps: dict[str, Callable[[], object]] = {}
    first_loss: dict[str, float] = {}
    for c in contenders:
        c.model.to(device).train()
        steps[c.name] = train_step(c, batches, make_optimizer(c.model, args.optimizer))
        first_loss[c.name] = float(steps[c.name]())  # also a warm-up step
    load_before = machine_info(device)["load_average_1_5_15"]
    samples = interleaved_timings(steps, device, args.rounds, warmup=args.warmup)
    info = machine_info(device)
    info["load_average_before"] = load_before
    rows = []
    for c in contenders:
        times = samples[c.name]
        row = {
            "name": c.name,
            "notes": c.notes,
            "parameters": sum(p.numel() for p in c.model.parameters()),
            "first_loss": round(first_loss[c.name], 4),
            "ms": {k: v * 1e3 if k != "n" else v for k, v in summarize(times).as_dict().items()},
        }
        if REFERENCE in samples:
            ratios = [t / r for t, r in zip(times, samples[REFERENCE], strict=True)]
            row["ratio_to_nanogpt"] = {
                "paired_median": statistics.median(ratios),
                "of_medians": statistics.median(times) / statistics.median(samples[REFERENCE]),
                **{k: summarize(ratios).as_dict()[k] for k in ("q1", "q3")},
            }
        rows.append(row)
    return {
        "benchmark": NAME,
        "command": "python -m benchmarks.train_step " + " ".join(args.argv),
        "shape": asdict(shape),
        "optimizer": {
            "kind": args.optimizer,
            "lr": LR,
            "weight_decay": WEIGHT_DECAY,
            "betas": list(BETAS),
        },  # fmt: skip
        "rounds": args.rounds,
        "warmup": args.warmup,
        "machine": info,
        "skipped": skipped,
        "results": rows,
    }


def markdown_table(report: dict) -> str:
    """The results as a Markdown table (ms per step, and ratios to nanoGPT when it ran)."""
    lines = [
        "| model | ms/step median | IQR (ms) | × nanoGPT (paired median) | its IQR | params |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        ms = r["ms"]
        ratio = r.get("ratio_to_nanogpt")
        paired = f"{ratio['paired_median']:.3f}" if ratio else "–"
        spread = f"{ratio['q1']:.3f}–{ratio['q3']:.3f}" if ratio else "–"
        lines.append(
            f"| {r['name']} | {ms['median']:.2f} | {ms['q1']:.2f}–{ms['q3']:.2f} "
            f"({ms['iqr']:.2f}) | {paired} | {spread} | {r['parameters']:,} |"
        )
    m = report["machine"]
    lines += [
        "",
        f"{report['rounds']} interleaved rounds; {m['cpu']}, {m['logical_cores']} cores, "
        f"{m['torch_threads']} torch threads, torch {m['torch']}; load average (1, 5, 15 min) "
        f"{m['load_average_before']} before, {m['load_average_1_5_15']} after; "
        f"AdamW {report['optimizer']['kind']}.",
    ]
    lines += [f"- {s}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"


# --- kernels on their own ------------------------------------------------------------------------


def plain_layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """LayerNorm as its textbook formula, differentiated by autograd (the "before")."""
    centred = x - x.mean(dim=-1, keepdim=True)
    var = centred.square().mean(dim=-1, keepdim=True)
    return centred * torch.rsqrt(var + eps) * weight + bias


def plain_gelu(x: Tensor) -> Tensor:
    """Exact GELU x·Φ(x) with Φ from erfc, differentiated by autograd (the "before")."""
    return x * (0.5 * torch.erfc(-x * 0.7071067811865476))


def component_variants(shape: Shape) -> dict[str, dict[str, Callable[[Tensor], Tensor]]]:
    """For each kernel: {variant name: function of x}, where x has the shape the GPT feeds it."""
    from scratchformer.functional import activations, normalization

    d, h = shape.d_model, 4 * shape.d_model
    w = torch.ones(d, requires_grad=True)
    b = torch.zeros(d, requires_grad=True)
    w1 = (torch.randn(d, h) * 0.02).requires_grad_()
    b1 = torch.zeros(h, requires_grad=True)
    return {
        "layer_norm": {
            "torch": lambda x: F.layer_norm(x, (d,), w, b, 1e-5),
            "autograd formula": lambda x: plain_layer_norm(x, w, b),
            "scratchformer": lambda x: normalization.layer_norm(x, w, b, 1e-5),
        },
        "gelu": {
            "torch": F.gelu,
            "autograd formula": plain_gelu,
            "scratchformer": activations.gelu,
        },
        "affine x@w+b": {
            "matmul + add": lambda x: x @ w1 + b1,
            "addmm": lambda x: torch.addmm(b1, x.view(-1, d), w1).view(*x.shape[:-1], h),
            "F.linear": lambda x: F.linear(x, w1.T, b1),
        },
    }


def run_components(args: argparse.Namespace) -> dict:
    """Forward + backward time of each kernel variant at this model's shapes, interleaved."""
    torch.manual_seed(args.seed)
    shape = Shape()
    tokens = shape.batch_size * shape.context_len
    inputs = {"layer_norm": shape.d_model, "gelu": 4 * shape.d_model,
              "affine x@w+b": shape.d_model}  # fmt: skip
    report = {"benchmark": f"{NAME}.components", "machine": machine_info(torch.device("cpu")),
              "results": []}  # fmt: skip
    for kernel, fns in component_variants(shape).items():
        x = torch.randn(shape.batch_size, shape.context_len, inputs[kernel], requires_grad=True)
        grad = torch.randn_like(fns[next(iter(fns))](x))

        def fwd_bwd(fn: Callable[[Tensor], Tensor], x: Tensor = x, grad: Tensor = grad) -> None:
            fn(x).backward(grad)

        calls = {name: (lambda fn=fn: fwd_bwd(fn)) for name, fn in fns.items()}
        samples = interleaved_timings(calls, torch.device("cpu"), args.rounds * 5, warmup=5)
        for name, times in samples.items():
            stats = summarize(times)
            report["results"].append({
                "kernel": kernel, "variant": name, "tokens": tokens,
                "us": {"median": stats.median * 1e6, "q1": stats.q1 * 1e6, "q3": stats.q3 * 1e6},
            })  # fmt: skip
    return report


def components_table(report: dict) -> str:
    """The kernel timings as a Markdown table."""
    lines = ["| kernel (fwd + bwd) | variant | µs median | IQR (µs) |", "|---|---|---:|---:|"]
    for r in report["results"]:
        us = r["us"]
        lines.append(f"| {r['kernel']} | {r['variant']} | {us['median']:.0f} | "
                     f"{us['q1']:.0f}–{us['q3']:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


# --- command line ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nanogpt", type=Path, help="nanoGPT's model.py, or a directory holding it")
    p.add_argument("--no-hf", dest="hf", action="store_false", help="leave out Hugging Face")
    p.add_argument("--rounds", type=int, default=400, help="timed interleaved rounds")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per model first")
    p.add_argument("--batches", type=int, default=8, help="random batches, cycled through")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="fused")
    p.add_argument("--activation", default="gelu", help="our GPT's activation (nanoGPT: gelu)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--components", action="store_true", help="time the kernels on their own")
    p.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.rounds < 1 or args.warmup < 1 or args.batches < 1:
        p.error("--rounds, --warmup and --batches must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print the table and write JSON and Markdown under ``--out``."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.components:
        report, name = run_components(args), f"{NAME}_components"
        table = components_table(report)
    else:
        report, name = run_benchmark(args), NAME
        table = markdown_table(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / f"{name}.md").write_text(table)
    print(table)
    return report


if __name__ == "__main__":
    main()
