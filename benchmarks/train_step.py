"""Training-step time: our GPT against nanoGPT's model and Hugging Face's GPT2LMHeadModel.

One training step = forward with loss, ``zero_grad``, backward, AdamW step, in float32 at
nanoGPT's CPU "baby" shape (4 layers, 4 heads, width 128, context 64, batch 12, vocabulary 65,
dropout 0). Every contender has GPT-2's architecture (biases everywhere, tied embeddings,
pre-LN) and gets the same random batches in the same order and the same optimizer:
``torch.optim.AdamW`` with lr 1e-3, betas (0.9, 0.95), weight decay 0.1 on matrices only
(`scratchformer.training.optim.param_groups`, one rule for every model), and one
implementation for all (``--optimizer``; default "fused", what `build_adamw` picks on the CPU.
nanoGPT's own ``configure_optimizers`` uses fused only on CUDA; ``--optimizer forloop`` gives
everyone its CPU choice). The activation differs by design: nanoGPT uses the exact GELU, HF's
GPT-2 the tanh form ("gelu_new"). Ours runs with the exact one by default (``--activations``),
so that it does the same arithmetic as nanoGPT, and can add rows with the tanh form.

The contenders are timed *interleaved* (`benchmarks.common.interleaved_timings`): each round
runs one step of every model, in an order that rotates from round to round, so load from other
processes hits all of them alike. Every step is measured on two clocks: wall time, and the
process's CPU time (user + system, so page faults count), which on a shared machine leaves out
the time spent waiting for a core (use ``--threads 1`` for it to mean much). We report the
median and the interquartile range of the step time, and each model's ratio to nanoGPT as the
median of the per-round ratios (paired, so a burst of load that slows one whole round cancels).

nanoGPT's code is not part of this repository: pass its ``model.py`` (or a checkout directory)
with ``--nanogpt``; without it nanoGPT is skipped. Hugging Face is skipped when
``transformers`` is not installed. Run from the repository root::

    python -m benchmarks.train_step --nanogpt ~/src/nanoGPT               # 400 rounds
    python -m benchmarks.train_step --nanogpt ~/src/nanoGPT --ablation    # before/after rows
    python -m benchmarks.train_step --components                          # kernels alone

``--ablation`` times our GPT with its fast kernels put back, one at a time, to the textbook
formulas differentiated by autograd (what the library did before), next to nanoGPT.
``--components`` times each kernel forward + backward alone at this model's shapes: the
textbook formula, our derived-backward version and PyTorch's fused built-in.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.common import interleaved_timings, machine_info, summarize
from scratchformer.functional import activations, normalization
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.nn.feedforward import FeedForward
from scratchformer.nn.norm import LayerNorm
from scratchformer.training.optim import param_groups

NAME = "train_step"
OPTIMIZERS = ("fused", "foreach", "forloop")
LR, WEIGHT_DECAY, BETAS = 1e-3, 0.1, (0.9, 0.95)
REFERENCE = "nanogpt"
FAST_KERNELS = ("layer_norm", "gelu", "addmm")
"""What `--ablation` switches back to the textbook version, cumulatively, in this order."""


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


# --- the textbook kernels our fast ones replaced ("before") ---------------------------------------


def textbook_layer_norm(x: Tensor, weight: Tensor, bias: Tensor | None, eps: float) -> Tensor:
    """LayerNorm as its formula, differentiated by autograd."""
    centred = x - x.mean(dim=-1, keepdim=True)
    y = centred * torch.rsqrt(centred.square().mean(dim=-1, keepdim=True) + eps) * weight
    return y if bias is None else y + bias


def textbook_gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU x·Φ(x) (Φ from erfc) or x·σ(2u) (tanh form), differentiated by autograd."""
    x = x.clamp_min(-100.0)
    if approximate == "none":
        return x * (0.5 * torch.erfc(-x * (1.0 / math.sqrt(2.0))))
    u = math.sqrt(2.0 / math.pi) * (x + activations.GELU_TANH_COEFF * x * x * x)
    return x * torch.sigmoid(2.0 * u)


def _textbook_ffn(ffn: FeedForward) -> Callable[[Tensor], Tensor]:
    """The FFN with ``x @ w + b`` as a product and a separate add (no ``addmm``)."""

    def forward(x: Tensor) -> Tensor:
        h = ffn.act(x @ ffn.w1 + ffn.b1)
        return h @ ffn.w2 + ffn.b2

    return forward


def _textbook_norm(norm: LayerNorm) -> Callable[[Tensor], Tensor]:
    """``norm``'s forward through `textbook_layer_norm`."""
    return lambda x: textbook_layer_norm(x, norm.weight, norm.bias, norm.eps)


def use_textbook(model: nn.Module, kernels: tuple[str, ...]) -> None:
    """Put the named fast kernels of ``model`` (see `FAST_KERNELS`) back to the textbook ones."""
    unknown = set(kernels) - set(FAST_KERNELS)
    if unknown:
        raise ValueError(f"kernels must be among {FAST_KERNELS}, got {sorted(unknown)}")
    for module in model.modules():
        if isinstance(module, LayerNorm) and "layer_norm" in kernels:
            module.forward = _textbook_norm(module)
        if isinstance(module, FeedForward):
            if "gelu" in kernels and module.activation in ("gelu", "gelu_tanh"):
                approximate = "none" if module.activation == "gelu" else "tanh"
                module.act = lambda x, a=approximate: textbook_gelu(x, a)
            if "addmm" in kernels:
                module.forward = _textbook_ffn(module)


# --- the contenders -------------------------------------------------------------------------------


def build_ours(
    shape: Shape, backend: str, activation: str = "gelu", textbook: tuple[str, ...] = (),
    kernels: str = "scratch",
) -> Contender:
    """scratchformer's GPT with attention ``backend``; ``textbook`` kernels put back (ablation)."""
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
        kernels=kernels,
    )
    model = GPT(config)
    use_textbook(model, textbook)
    name = f"ours-{backend}" + ("" if activation == "gelu" else f" ({activation})")
    if kernels != "scratch":
        name += f" {kernels} kernels"
    if textbook:
        name += " textbook " + "+".join(textbook)
    notes = (f"scratchformer GPT, activation={activation!r}, attention backend {backend!r}, "
             f"LayerNorm/GELU kernels {kernels!r}")
    return Contender(name, model, lambda x, y: model(x, y)[1], notes)


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
    notes = "nanoGPT model.py, bias=True, exact GELU (nn.GELU)"
    return Contender(REFERENCE, model, lambda x, y: model(x, y)[1], notes)


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
        bos_token_id=None,  # GPT-2's 50256 is outside this 65-token vocabulary
        eos_token_id=None,
    )
    model = GPT2LMHeadModel(config)

    def loss(x: Tensor, y: Tensor) -> Tensor:
        # Our targets are already shifted; HF's ``labels=`` would shift them once more.
        logits = model(input_ids=x).logits
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))

    impl = getattr(model.config, "_attn_implementation", "?")
    notes = f"transformers GPT2LMHeadModel, attention {impl!r}, GELU tanh form (gelu_new)"
    return Contender("hf", model, loss, notes)


# --- one training step ----------------------------------------------------------------------------


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
) -> Callable[[], Tensor]:
    """A closure doing one training step on the next batch (cycling); returns the loss."""
    position = 0

    def step() -> Tensor:
        nonlocal position
        x, y = batches[position % len(batches)]
        position += 1
        loss = contender.loss(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


# --- the benchmark --------------------------------------------------------------------------------


def build_contenders(args: argparse.Namespace, shape: Shape) -> tuple[list[Contender], list[str]]:
    """The models to time, and messages about those skipped."""
    contenders, skipped = [], []
    if args.nanogpt is None:
        skipped.append("nanogpt: skipped (pass --nanogpt PATH to nanoGPT's model.py)")
    else:
        contenders.append(build_nanogpt(load_nanogpt(args.nanogpt), shape))
    if args.ablation:
        for k in range(len(FAST_KERNELS), -1, -1):  # all textbook, ..., none (the library)
            contenders.append(build_ours(shape, "sdpa", "gelu", FAST_KERNELS[:k]))
        return contenders, skipped
    if args.hf:
        hf = build_hf(shape)
        if hf is None:
            skipped.append("hf: skipped (transformers is not installed)")
        else:
            contenders.append(hf)
    for activation in args.activations:
        for backend in ("sdpa", "scratch"):
            contenders.append(build_ours(shape, backend, activation))
        if args.torch_kernels:
            contenders.append(build_ours(shape, "sdpa", activation, kernels="torch"))
    return contenders, skipped


def _with_cpu_clock(fn: Callable[[], object], cpu_times: list[float]) -> Callable[[], object]:
    """``fn``, also appending the CPU time each call takes (all threads, user + system)."""

    def call() -> object:
        start = time.process_time()
        out = fn()
        cpu_times.append(time.process_time() - start)
        return out

    return call


def _summary(times: list[float], reference: list[float] | None) -> dict:
    """Median and quartiles in ms, and the paired per-round ratios to ``reference``."""
    stats = summarize(times)
    out: dict = {"ms": {k: v * 1e3 for k, v in stats.as_dict().items() if k != "n"}}
    out["ms"]["n"] = stats.n
    if reference is not None:
        paired = summarize([t / r for t, r in zip(times, reference, strict=True)])
        out["ratio_to_nanogpt"] = {
            "paired_median": paired.median,
            "q1": paired.q1,
            "q3": paired.q3,
            "of_medians": stats.median / statistics.median(reference),
        }
    return out


def run_benchmark(args: argparse.Namespace) -> dict:
    """Time every contender's training step, interleaved; returns the report.

    Each step is measured on two clocks at once: wall time, and the process's CPU time (user +
    system, so page faults count). With one torch thread the CPU time leaves out the time the
    process waits for a core, which makes it the steadier number on a shared machine.
    """
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    shape = Shape()
    contenders, skipped = build_contenders(args, shape)
    batches = make_batches(shape, args.batches, args.seed, device)
    steps: dict[str, Callable[[], object]] = {}
    cpu: dict[str, list[float]] = {}
    first_loss: dict[str, float] = {}
    for c in contenders:
        c.model.to(device).train()
        step = train_step(c, batches, make_optimizer(c.model, args.optimizer))
        first_loss[c.name] = float(step())  # ≈ ln(65) = 4.17 for every model; also a warm-up
        cpu[c.name] = []
        steps[c.name] = _with_cpu_clock(step, cpu[c.name])
    load_before = machine_info(device)["load_average_1_5_15"]
    wall = interleaved_timings(steps, device, args.rounds, warmup=args.warmup)
    cpu = {name: times[args.warmup :] for name, times in cpu.items()}  # drop the warm-up calls
    info = machine_info(device)
    info["load_average_before"] = load_before
    rows = []
    for c in contenders:
        row = {
            "name": c.name,
            "notes": c.notes,
            "parameters": sum(p.numel() for p in c.model.parameters()),
            "first_loss": round(first_loss[c.name], 4),
            "wall": _summary(wall[c.name], wall.get(REFERENCE)),
            "cpu": _summary(cpu[c.name], cpu.get(REFERENCE)),
        }
        rows.append(row)
    return {
        "benchmark": NAME + (".ablation" if args.ablation else ""),
        "command": "python -m benchmarks.train_step " + " ".join(args.argv),
        "shape": asdict(shape),
        "optimizer": {
            "kind": args.optimizer,
            "lr": LR,
            "weight_decay": WEIGHT_DECAY,
            "betas": list(BETAS),
        },
        "rounds": args.rounds,
        "warmup": args.warmup,
        "machine": info,
        "skipped": skipped,
        "results": rows,
    }


def _cells(summary: dict) -> str:
    """``median | q1–q3 | paired ratio | its IQR`` for one clock."""
    ms, ratio = summary["ms"], summary.get("ratio_to_nanogpt")
    paired = f"{ratio['paired_median']:.3f}" if ratio else "–"
    spread = f"{ratio['q1']:.3f}–{ratio['q3']:.3f}" if ratio else "–"
    return f"{ms['median']:.2f} | {ms['q1']:.2f}–{ms['q3']:.2f} | {paired} | {spread}"


def markdown_table(report: dict) -> str:
    """The results as a Markdown table: per clock, ms per step and the ratio to nanoGPT."""
    lines = [
        "| model | wall ms/step | IQR | × nanoGPT | its IQR "
        "| CPU ms/step | IQR | × nanoGPT | its IQR |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        lines.append(f"| {r['name']} | {_cells(r['wall'])} | {_cells(r['cpu'])} |")
    m = report["machine"]
    lines += [
        "",
        f"{report['rounds']} interleaved rounds; ratios are medians of per-round ratios; "
        f"{m['cpu']}, {m['logical_cores']} cores, {m['torch_threads']} torch threads, "
        f"torch {m['torch']}; load average (1, 5, 15 min) {m['load_average_before']} before, "
        f"{m['load_average_1_5_15']} after; AdamW {report['optimizer']['kind']}.",
    ]
    lines += [f"- {s}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"


# --- kernels on their own -------------------------------------------------------------------------


def component_variants(shape: Shape) -> dict[str, dict[str, Callable[[Tensor], Tensor]]]:
    """For each kernel: {variant: function of x}; x gets the shape the GPT feeds that kernel."""
    d, h = shape.d_model, 4 * shape.d_model
    w = torch.ones(d, requires_grad=True)
    b = torch.zeros(d, requires_grad=True)
    w1 = (torch.randn(d, h) * 0.02).requires_grad_()
    b1 = torch.zeros(h, requires_grad=True)
    return {
        "layer_norm": {
            "textbook (autograd)": lambda x: textbook_layer_norm(x, w, b, 1e-5),
            "LayerNormFunction": lambda x: normalization.layer_norm(x, w, b, 1e-5),
            "torch F.layer_norm": lambda x: F.layer_norm(x, (d,), w, b, 1e-5),
        },
        "gelu": {
            "textbook (autograd)": textbook_gelu,
            "GeluFunction": activations.gelu,
            "torch F.gelu": F.gelu,
        },
        "gelu_tanh": {
            "textbook (autograd)": lambda x: textbook_gelu(x, "tanh"),
            "GeluFunction": lambda x: activations.gelu(x, "tanh"),
            "torch F.gelu": lambda x: F.gelu(x, approximate="tanh"),
        },
        "x @ w1 + b1": {
            "matmul, add": lambda x: x @ w1 + b1,
            "addmm": lambda x: torch.addmm(b1, x.view(-1, d), w1).view(*x.shape[:-1], h),
        },
    }


def _input_size(kernel: str, shape: Shape) -> int:
    """The width of the tensor each kernel receives inside the GPT."""
    return 4 * shape.d_model if kernel.startswith("gelu") else shape.d_model


def _fwd_bwd(fn: Callable[[Tensor], Tensor], x: Tensor, grad: Tensor) -> Callable[[], None]:
    """A call running ``fn(x)`` forward and backward with upstream gradient ``grad``."""
    return lambda: fn(x).backward(grad)


def run_components(args: argparse.Namespace) -> dict:
    """Forward + backward time of each kernel variant at this model's shapes, interleaved."""
    torch.manual_seed(args.seed)
    shape, device = Shape(), torch.device("cpu")
    report = {"benchmark": f"{NAME}.components", "command": "python -m benchmarks.train_step "
              + " ".join(args.argv), "machine": machine_info(device), "results": []}  # fmt: skip
    for kernel, fns in component_variants(shape).items():
        x = torch.randn(shape.batch_size, shape.context_len, _input_size(kernel, shape))
        x.requires_grad_()
        grad = torch.randn_like(next(iter(fns.values()))(x))
        calls = {name: _fwd_bwd(fn, x, grad) for name, fn in fns.items()}
        samples = interleaved_timings(calls, device, args.rounds, warmup=5)
        for name, times in samples.items():
            s = summarize(times)
            report["results"].append({"kernel": kernel, "variant": name,
                                      "us": {"median": s.median * 1e6, "q1": s.q1 * 1e6,
                                             "q3": s.q3 * 1e6}})  # fmt: skip
    elementwise = {"exp": torch.exp, "exp2": torch.exp2, "erfc": torch.erfc, "erf": torch.erf,
                   "sigmoid": torch.sigmoid}  # fmt: skip
    z = -torch.rand(shape.batch_size, shape.context_len, 4 * shape.d_model) * 8
    samples = interleaved_timings({k: (lambda f=f: f(z)) for k, f in elementwise.items()},
                                  device, args.rounds, warmup=5)  # fmt: skip
    for name, times in samples.items():
        s = summarize(times)
        report["results"].append({"kernel": "one op, forward only", "variant": f"torch.{name}",
                                  "us": {"median": s.median * 1e6, "q1": s.q1 * 1e6,
                                         "q3": s.q3 * 1e6}})  # fmt: skip
    return report


def components_table(report: dict) -> str:
    """The kernel timings as a Markdown table."""
    lines = ["| kernel (forward + backward) | variant | µs median | IQR (µs) |",
             "|---|---|---:|---:|"]  # fmt: skip
    for r in report["results"]:
        us = r["us"]
        lines.append(f"| {r['kernel']} | {r['variant']} | {us['median']:.0f} | "
                     f"{us['q1']:.0f}–{us['q3']:.0f} |")  # fmt: skip
    m = report["machine"]
    lines += ["", f"{m['cpu']}, {m['torch_threads']} torch threads, load average "
              f"{m['load_average_1_5_15']}."]  # fmt: skip
    return "\n".join(lines) + "\n"


# --- command line ---------------------------------------------------------------------------------


def _activations(text: str) -> tuple[str, ...]:
    names = tuple(text.split(","))
    bad = [n for n in names if n not in activations.ACTIVATIONS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"activations must be among {sorted(activations.ACTIVATIONS)}, got {bad}"
        )
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nanogpt", type=Path, help="nanoGPT's model.py, or a directory holding it")
    p.add_argument("--no-hf", dest="hf", action="store_false", help="leave out Hugging Face")
    p.add_argument(
        "--activations",
        type=_activations,
        default=("gelu",),
        help="our GPT's activations, comma-separated (one pair of rows each)",
    )
    p.add_argument("--torch-kernels", action="store_true",
                   help="add a row: sdpa attention with PyTorch's LayerNorm and GELU kernels")
    p.add_argument("--rounds", type=int, default=400, help="timed interleaved rounds")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per model first")
    p.add_argument("--batches", type=int, default=8, help="random batches, cycled through")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="fused")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ablation", action="store_true", help="our GPT with kernels put back")
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
        report = run_benchmark(args)
        name = NAME + ("_ablation" if args.ablation else "")
        table = markdown_table(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / f"{name}.md").write_text(table)
    print(table)
    return report


if __name__ == "__main__":
    main()
