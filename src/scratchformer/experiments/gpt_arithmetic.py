"""Studies ``gpt.arithmetic`` and ``gpt.hf_baseline``: a small GPT learns to add and subtract.

``gpt.arithmetic`` trains our GPT (character tokens, one problem per row, natural digit order
``123+456=579$``) with the project's `Trainer` and evaluates on problems whose unordered operand
pair never occurs in training (data/arithmetic.py):

* **answer perplexity** ``exp(mean NLL)`` over the answer characters and the end marker. The
  answer is a function of the prompt, so this can approach 1; the target is < 1.5.
* **all-token perplexity** over every predicted character. Its floor is well above 1: operands
  are uniformly random, and no model predicts them better than their entropy. By the chain rule
  the summed NLL of a problem's targets is at least ``H(op, a, b) - H(first character)``
  (``= log #ops + 2 log #operand values - H(first char)``; answers add nothing), so the
  per-token perplexity cannot go below ``exp(that / mean #targets)``, reported as
  ``token_ppl_floor``.
* **exact match** of greedy decoding with the KV cache, prompts batched by length (equal-length
  prompts need no padding, so every row of a batch decodes exactly as it would alone).

During training a `SpectrumTracker` records the rank measures of every head's ``W_Q W_Kᵀ``
and the token embedding's singular values; at the end, attention maps of test problems are
drawn and each head gets an *operand-alignment score* (experiments/gpt_analysis.py).

**The full-profile recipe** (3-digit ``+`` and ``-``, answers in natural order). On a CPU the
step time is set by the FLOPs (it grows linearly with the batch), so width is expensive: in our
trials a 4-layer width-64 GPT (0.2M parameters) got much further in the same wall time than
widths 96 or 128, and lr 3e-3 beat 1e-3 and 1e-2. Training has a long plateau (answer perplexity
≈ 3: format, sign and easy digits learned) and then a fast drop once carries and borrows are
handled. The drop starts after 2-5k steps depending on the seed, hence 20k steps. In short
trials an answer-only loss made no consistent difference and sinusoidal positions were slower.

``gpt.hf_baseline`` trains ``transformers.GPT2LMHeadModel`` of the same shape on the same
batches with the same trainer and compares it with our GPT under both attention backends.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from scratchformer.analysis.tracking import SpectrumTracker
from scratchformer.data.arithmetic import (
    IGNORE_INDEX,
    ArithmeticBatch,
    ArithmeticConfig,
    ArithmeticSplits,
    ArithmeticTokenizer,
    answer_perplexity,
    encode_problems,
    exact_match,
    make_splits,
    max_problem_length,
    operand_range,
    parse_problem,
    split_prompt,
    token_perplexity,
)
from scratchformer.experiments.gpt_analysis import (
    aligned_positions,
    alignment_scores,
    plot_embedding_spectrum,
    plot_qk_ranks,
)
from scratchformer.experiments.registry import register
from scratchformer.experiments.threads import torch_threads
from scratchformer.training import TrainConfig, Trainer
from scratchformer.viz.attention import attention_grid, stack_maps
from scratchformer.viz.figures import new_figure, save_figure

ANSWER_PPL_TARGET = 1.5
LOSS_ON = ("all", "answer")


@dataclass
class Config:
    """Quick profile: 1-2 digit addition, a 2-layer width-64 GPT, a few hundred steps."""

    # task
    max_digits: int = 2
    operators: tuple[str, ...] = ("+",)
    n_train: int | None = None  # None: every training problem (small spaces only)
    n_val: int = 300
    n_test: int = 500
    data_seed: int = 0  # fixes the split and the samples, whatever the training seed
    # model
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    context_len: int = 0  # 0: the longest problem of the task
    positional: str = "learned"  # "learned" (GPT-2) or "sinusoidal"
    attention_backend: str = "sdpa"
    # training
    steps: int = 600
    batch_size: int = 128
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    loss_on: str = "all"  # "all" tokens (a plain LM) or only the "answer" tokens
    autocast: str = "off"  # "off" or "bf16"
    # evaluation and analysis
    eval_every: int = 50
    n_eval_generate: int = 200  # validation problems decoded at each evaluation
    track_every: int = 20
    n_align: int = 500  # test problems whose attention maps give the alignment scores
    n_examples: int = 2  # attention-map figures
    seeds: int = 1  # train seeds seed, seed+1, ...; figures show the first
    threads: int = 1  # small matrices: a second thread costs more than it gains
    device: str = "auto"
    seed: int = 0


# ----------------------------------------------------------------------------- data


@dataclass
class TaskData:
    """The splits, the tokenizer and the encoded train/val/test sets of one task."""

    splits: ArithmeticSplits
    tokenizer: ArithmeticTokenizer
    seq_len: int  # input length of the encoded rows: longest problem - 1
    context_len: int  # the model's context: longest problem (room for the generated end marker)
    train: ArithmeticBatch
    train_targets: Tensor  # targets the loss sees (answer-only if loss_on == "answer")
    train_tokens: Tensor  # non-pad tokens per training row
    val: ArithmeticBatch
    test: ArithmeticBatch


def _check(cfg: Any) -> None:
    """Fail before building anything when the config cannot work."""
    positive = ("n_val", "n_test", "n_layers", "n_heads", "d_model", "steps", "batch_size",
                "eval_every", "n_eval_generate", "track_every", "n_align", "seeds", "threads")
    for name in positive:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if cfg.n_examples < 0:
        raise ValueError(f"n_examples must be >= 0, got {cfg.n_examples}")
    if cfg.loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {LOSS_ON}, got {cfg.loss_on!r}")
    if cfg.autocast not in ("off", "bf16"):
        raise ValueError(f"autocast must be 'off' or 'bf16', got {cfg.autocast!r}")
    if cfg.context_len < 0:
        raise ValueError(f"context_len must be >= 0 (0 = fit the task), got {cfg.context_len}")


def arithmetic_config(cfg: Any) -> ArithmeticConfig:
    """The `ArithmeticConfig` of a study config."""
    return ArithmeticConfig(max_digits=cfg.max_digits, operators=tuple(cfg.operators),
                            n_train=cfg.n_train, n_val=cfg.n_val, n_test=cfg.n_test)


def build_data(cfg: Any) -> TaskData:
    """Draw and encode the splits (one problem per row, padded on the right)."""
    acfg = arithmetic_config(cfg)
    splits = make_splits(acfg, seed=cfg.data_seed)
    if not splits.train:
        raise ValueError("the training split is empty; raise n_train or max_digits")
    tok = ArithmeticTokenizer(acfg.end_marker)
    longest = max_problem_length(acfg)
    context_len = cfg.context_len or longest
    if context_len < longest:
        raise ValueError(f"context_len must be >= {longest} (the longest problem), "
                         f"got {context_len}")
    seq_len = longest - 1
    train = encode_problems(splits.train, tok, seq_len)
    targets = train.targets
    if cfg.loss_on == "answer":
        targets = torch.where(train.answer_mask, targets, IGNORE_INDEX)
    return TaskData(
        splits=splits, tokenizer=tok, seq_len=seq_len, context_len=context_len,
        train=train, train_targets=targets,
        train_tokens=(train.targets != IGNORE_INDEX).sum(1),
        val=encode_problems(splits.val, tok, seq_len),
        test=encode_problems(splits.test, tok, seq_len),
    )


def batch_fn(data: TaskData, batch_size: int) -> Callable[[int, int, torch.Generator], tuple]:
    """The trainer's ``train_batches``: random training rows drawn from the trainer's generator."""
    n = data.train.inputs.shape[0]

    def batches(step: int, micro: int, generator: torch.Generator) -> tuple:
        rows = torch.randint(0, n, (batch_size,), generator=generator)
        n_tokens = int(data.train_tokens[rows].sum())
        return data.train.inputs[rows], data.train_targets[rows], n_tokens

    return batches


def token_ppl_floor(acfg: ArithmeticConfig, problems: Sequence[str]) -> float:
    """Lowest all-token perplexity any model can reach on ``problems`` (module docstring).

    Assumes operator and operands uniform and independent, as the generator draws them.
    """
    lo, hi = operand_range(acfg)
    values = hi - lo + 1
    firsts: dict[str, int] = {}
    for v in range(lo, hi + 1):
        c = str(v)[0]
        firsts[c] = firsts.get(c, 0) + 1
    p = np.array(list(firsts.values()), dtype=float) / values
    h_first = float(-(p * np.log(p)).sum())
    h_prompt = math.log(len(acfg.operators)) + 2 * math.log(values)
    mean_targets = float(np.mean([len(s) - 1 for s in problems]))
    return math.exp((h_prompt - h_first) / mean_targets)


# ----------------------------------------------------------------------------- models


@dataclass(frozen=True)
class LMAdapter:
    """How to get next-token logits and greedy continuations out of one kind of model."""

    logits: Callable[[nn.Module, Tensor], Tensor]  # (model, idx (B, T)) -> (B, T, V)
    greedy: Callable[[nn.Module, Tensor, int], Tensor]  # (model, prompts, n) -> (B, n) new ids


def _ours_logits(model: nn.Module, idx: Tensor) -> Tensor:
    return model(idx)[0]


def _ours_greedy(model: nn.Module, prompts: Tensor, n_new: int) -> Tensor:
    from scratchformer.generation import generate

    out = generate(model, prompts, n_new, greedy=True, use_cache=True)
    return out[:, prompts.shape[1]:]


OURS = LMAdapter(_ours_logits, _ours_greedy)


def build_gpt(cfg: Any, data: TaskData, backend: str | None = None) -> nn.Module:
    """Our GPT of the config's shape (dropout 0, GPT-2 defaults otherwise)."""
    from scratchformer.models.gpt import GPT, GPTConfig

    return GPT(GPTConfig(
        vocab_size=data.tokenizer.vocab_size, context_len=data.context_len,
        n_layers=cfg.n_layers, n_heads=cfg.n_heads, d_model=cfg.d_model,
        positional=cfg.positional, attention_backend=backend or cfg.attention_backend,
    ))


def _loss_ours(model: nn.Module, batch: tuple) -> tuple[Tensor, int]:
    inputs, targets, n_tokens = batch
    return model(inputs, targets)[1], n_tokens


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def greedy_completions(model: nn.Module, adapter: LMAdapter, data: TaskData,
                       problems: Sequence[str], batch_size: int = 1024) -> list[str]:
    """What greedy decoding writes after each problem's prompt (up to the longest answer + end).

    Prompts are grouped by length, so a batch needs no padding and each row decodes exactly as
    it would alone.
    """
    tok = data.tokenizer
    device = next(model.parameters()).device
    prompts = [split_prompt(p)[0] for p in problems]
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    out: list[str] = [""] * len(problems)
    for length, rows in sorted(by_len.items()):
        n_new = data.context_len - length + 1  # the last token is produced, never fed back
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            x = torch.tensor([tok.encode(prompts[i]) for i in chunk], device=device)
            new = adapter.greedy(model, x, n_new).cpu()
            for r, i in enumerate(chunk):
                out[i] = tok.decode(new[r])
    return out


@torch.no_grad()
def _teacher_forced(model: nn.Module, adapter: LMAdapter, batch: ArithmeticBatch,
                    chunk: int = 2048) -> Tensor:
    """Logits (B, T, V) of a whole encoded set, in chunks, on the model's device, as float32."""
    device = next(model.parameters()).device
    parts = [adapter.logits(model, batch.inputs[i:i + chunk].to(device)).float().cpu()
             for i in range(0, batch.inputs.shape[0], chunk)]
    return torch.cat(parts)


def evaluate_lm(model: nn.Module, adapter: LMAdapter, data: TaskData, split: str,
                n_generate: int | None = None) -> dict[str, float]:
    """Answer/token perplexity, loss and greedy exact match of ``model`` on ``split``."""
    batch: ArithmeticBatch = getattr(data, split)
    problems: list[str] = getattr(data.splits, split)
    logits = _teacher_forced(model, adapter, batch)
    loss = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(),
                           ignore_index=IGNORE_INDEX)
    chosen = problems if n_generate is None else problems[:n_generate]
    completions = greedy_completions(model, adapter, data, chosen)
    return {
        f"{split}_loss": float(loss),
        f"{split}_answer_ppl": answer_perplexity(logits, batch.targets, batch.answer_mask),
        f"{split}_token_ppl": token_perplexity(logits, batch.targets),
        f"{split}_exact_match": exact_match(completions, chosen),
    }


def error_analysis(problems: Sequence[str], completions: Sequence[str],
                   n_examples: int = 12) -> dict:
    """Exact match per operator, and the first ``n_examples`` wrong answers with the truth."""
    by_op: dict[str, list[int]] = {}
    for i, p in enumerate(problems):
        by_op.setdefault(parse_problem(p).op, []).append(i)
    wrong = [(p, c) for p, c in zip(problems, completions, strict=True)
             if exact_match([c], [p]) < 1.0]
    return {
        "exact_match_by_operator": {
            op: exact_match([completions[i] for i in rows], [problems[i] for i in rows])
            for op, rows in sorted(by_op.items())},
        "n_wrong": len(wrong),
        "wrong_examples": [{"problem": p, "generated": c} for p, c in wrong[:n_examples]],
    }


# ----------------------------------------------------------------------------- training


def train_config(cfg: Any, seed: int) -> TrainConfig:
    """The `TrainConfig` of a study config (AdamW, warmup + cosine, clipping)."""
    return TrainConfig(
        max_steps=cfg.steps, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip, eval_interval=cfg.eval_every,
        log_interval=max(1, min(cfg.eval_every, 25)), seed=seed, device=cfg.device,
        autocast=cfg.autocast, progress=True,
    )


@dataclass
class TrainedRun:
    """One trained model with everything recorded while training it."""

    model: nn.Module
    seed: int
    history: list[dict]  # trainer log records (evaluation metrics merged in)
    curve: dict[str, list[float]]  # step 0 and every evaluation: val metrics
    train_s: float  # wall time of `fit` minus the evaluations' time
    eval_s: float
    tracker: SpectrumTracker | None


def _report(trainer: Trainer, step: int, metrics: dict) -> None:
    """Print the validation metrics of an evaluation above the progress bar."""
    tqdm.write(f"step {step}: val answer ppl {metrics['val_answer_ppl']:.4f}, token ppl "
               f"{metrics['val_token_ppl']:.3f}, exact match {metrics['val_exact_match']:.3f}")


def train_lm(model: nn.Module, cfg: Any, data: TaskData, seed: int, *,
             adapter: LMAdapter = OURS,
             loss_fn: Callable[[nn.Module, tuple], tuple[Tensor, int]] = _loss_ours,
             track: bool = True, log_path: Path | None = None) -> TrainedRun:
    """Train ``model`` on ``data`` with `Trainer`, evaluating on the validation split.

    ``log_path``: where the trainer writes its JSONL log (watch a long run with ``tail -f``).
    """
    eval_time = [0.0]

    def eval_fn(m: nn.Module) -> dict[str, float]:
        start = time.perf_counter()
        metrics = evaluate_lm(m, adapter, data, "val", cfg.n_eval_generate)
        eval_time[0] += time.perf_counter() - start
        return metrics

    tracker = SpectrumTracker(cfg.track_every) if track else None
    trainer = Trainer(model, train_config(cfg, seed), train_batches=batch_fn(data, cfg.batch_size),
                      loss_fn=loss_fn, eval_fn=eval_fn, log_path=log_path,
                      on_step=[tracker] if tracker is not None else [], on_eval=[_report])
    if tracker is not None:
        tracker.record(trainer.model, 0)
    initial = trainer.evaluate()
    eval_time[0] = 0.0
    history = trainer.fit()
    evals = [initial] + [r for r in history if "val_answer_ppl" in r]
    steps = [0] + [r["step"] for r in history if "val_answer_ppl" in r]
    keys = ("val_loss", "val_answer_ppl", "val_token_ppl", "val_exact_match")
    curve = {"step": steps, **{k: [e[k] for e in evals] for k in keys}}
    return TrainedRun(trainer.model, seed, history, curve, trainer.elapsed_s - eval_time[0],
                      eval_time[0], tracker)


def step_timing(history: list[dict]) -> dict[str, float]:
    """Median ms per step and tokens/s over the log records (the first window is warm-up)."""
    recs = history[1:] if len(history) > 2 else history
    return {
        "ms_per_step": float(np.median([r["ms_per_step"] for r in recs])),
        "tokens_per_s": float(np.median([r["tokens_per_s"] for r in recs])),
    }


def summarize(values: Sequence[float]) -> dict:
    """Mean, sample std (ddof=1; 0 for one value) and the values."""
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
            "per_seed": arr.tolist()}


# ----------------------------------------------------------------------------- figures


def _plot_training(run: TrainedRun, floor: float, out: Path) -> list[Path]:
    """Training/validation loss, validation perplexities (with the token floor), exact match."""
    h = run.history
    c = run.curve
    paths = []
    fig, ax = new_figure(6.0, 3.6)
    ax.plot([r["step"] for r in h], [r["loss"] for r in h], lw=1, label="train loss (batch)")
    ax.plot(c["step"], c["val_loss"], marker="o", ms=3, label="validation loss (all tokens)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title(f"training curve (seed {run.seed})", fontsize=10)
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "training_curve.png"))

    fig, ax = new_figure(6.0, 3.6)
    ax.plot(c["step"], c["val_answer_ppl"], marker="o", ms=3, label="answer perplexity")
    ax.plot(c["step"], c["val_token_ppl"], marker="s", ms=3, label="all-token perplexity")
    ax.axhline(ANSWER_PPL_TARGET, color="red", ls="--", lw=1, label="target 1.5")
    ax.axhline(floor, color="tab:orange", ls=":", lw=1.2,
               label=f"all-token floor {floor:.2f} (random operands)")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("perplexity (validation)")
    ax.set_title("answer perplexity -> 1; all-token perplexity has a floor", fontsize=10)
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "answer_ppl_curve.png"))

    fig, ax = new_figure(6.0, 3.6)
    ax.plot(c["step"], np.asarray(c["val_exact_match"]) * 100, marker="o", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("exact match (%, greedy, validation)")
    ax.set_ylim(-2, 102)
    ax.set_title("greedy decoding with the KV cache", fontsize=10)
    paths.append(save_figure(fig, out / "exact_match_curve.png"))
    return paths


@torch.no_grad()
def _attention(model: nn.Module, data: TaskData, n: int) -> tuple[list[Tensor], list[str]]:
    """Attention maps (per layer, (n, H, T, T)) of the first ``n`` test problems."""
    device = next(model.parameters()).device
    problems = data.splits.test[:n]
    idx = data.test.inputs[: len(problems)].to(device)
    was_training = model.training
    model.eval()
    try:
        maps = [m.float().cpu() for m in model.attention_maps(idx)]
    finally:
        model.train(was_training)
    return maps, problems


def _attention_figures(maps: list[Tensor], problems: list[str], align: dict, n: int,
                       out: Path) -> list[Path]:
    """Heatmap grids of the ``n`` longest problems among those analysed, best head framed."""
    order = sorted(range(len(problems)), key=lambda i: (-len(problems[i]), i))[:n]
    paths = []
    for k, i in enumerate(order):
        marks = [(q, key) for q, keys in aligned_positions(problems[i]) for key in keys]
        fig = attention_grid(
            stack_maps(maps, i), list(problems[i][:-1]), highlight=[align["best"]], marks=marks,
            title=f"{problems[i]}  (white squares: answer-digit query x same-place operand digit;"
                  f" * best-aligned head)",
        )
        paths.append(save_figure(fig, out / f"attention_example_{k}.png"))
    return paths


# ----------------------------------------------------------------------------- gpt.arithmetic


@register(
    "gpt.arithmetic",
    Config,
    full={"max_digits": 3, "operators": ("+", "-"), "n_train": 300_000, "n_val": 1000,
          "n_test": 5000, "n_layers": 4, "n_heads": 4, "d_model": 64, "steps": 20_000,
          "batch_size": 128, "lr": 3e-3, "warmup_steps": 200, "eval_every": 1000,
          "n_eval_generate": 500, "track_every": 500, "n_align": 1000, "n_examples": 3,
          "threads": 2},
)
def run(cfg: Config, out: Path) -> dict:
    """Train a GPT on held-out arithmetic: answer perplexity, exact match, QKᵀ ranks, attention."""
    _check(cfg)
    with torch_threads(cfg.threads):
        data = build_data(cfg)
        runs = []
        for k in range(cfg.seeds):
            seed = cfg.seed + k
            torch.manual_seed(seed)
            model = build_gpt(cfg, data)
            runs.append(train_lm(model, cfg, data, seed, track=(k == 0),
                                 log_path=out / f"train_log_seed{seed}.jsonl"))
        finals = []
        for r in tqdm(runs, desc="test", leave=False):
            r.model.eval()
            finals.append(evaluate_lm(r.model, OURS, data, "test"))
        first = runs[0]
        errors = error_analysis(data.splits.test, greedy_completions(
            first.model, OURS, data, data.splits.test))
        maps, problems = _attention(first.model, data, cfg.n_align)
        align = alignment_scores(maps, problems)

    floor = token_ppl_floor(arithmetic_config(cfg), data.splits.val)
    _plot_training(first, floor, out)
    tracked = first.tracker.as_dict()
    plot_qk_ranks(tracked, out)
    plot_embedding_spectrum(tracked, out)
    _attention_figures(maps, problems, align, cfg.n_examples, out)

    acfg = arithmetic_config(cfg)
    qk = tracked["qk"]
    metrics: dict[str, Any] = {
        "task": {"max_digits": cfg.max_digits, "operators": list(cfg.operators),
                 "n_train": len(data.splits.train), "n_test": len(data.splits.test),
                 "context_len": data.context_len, "held_out": "unordered operand pairs"},
        "parameters": sum(p.numel() for p in first.model.parameters()),
        "seeds": [r.seed for r in runs],
        "answer_ppl_target": ANSWER_PPL_TARGET,
        "token_ppl_floor": token_ppl_floor(acfg, data.splits.test),
        "initial_val_answer_ppl": first.curve["val_answer_ppl"][0],
        "curve": first.curve,
        "train_wall_s": summarize([r.train_s for r in runs]),
        "eval_wall_s": summarize([r.eval_s for r in runs]),
        **step_timing(first.history),
        "qk_rank": {
            "d_head": tracked["d_head"],
            "tolerance_rule": "max(m, n) * eps(float64) * sigma_1",
            "max_relative_tolerance": float(np.max(np.asarray(qk["rank_tolerance"])
                                                   / np.asarray(qk["sigma_max"]))),
            "final_numerical": qk["numerical_rank"][-1],
            "final_effective": qk["effective_rank"][-1],
            "final_stable": qk["stable_rank"][-1],
            "max_numerical_over_training": int(np.max(qk["numerical_rank"])),
        },
        "embedding_sv": {"steps": tracked["steps"], "values": tracked["embedding_sv"]},
        "alignment": {"scores": align["scores"].tolist(), "chance": align["chance"],
                      "best_layer_head": list(align["best"]), "best_score": align["best_score"],
                      "best_over_chance": align["best_score"] / align["chance"],
                      "n_answer_digits": align["n_items"]},
    }
    for key in ("test_answer_ppl", "test_token_ppl", "test_exact_match", "test_loss"):
        metrics[key] = summarize([f[key] for f in finals])
    metrics["meets_answer_ppl_target"] = metrics["test_answer_ppl"]["mean"] < ANSWER_PPL_TARGET
    metrics["test_errors_first_seed"] = errors
    return metrics


# ----------------------------------------------------------------------------- gpt.hf_baseline


HF_MISSING = ("gpt.hf_baseline needs Hugging Face transformers; install the 'hf' extra: "
              "pip install 'scratchformer[hf]'")


def _transformers():
    """Import transformers lazily, with an error that says how to get it."""
    try:
        import transformers
    except ImportError as e:
        raise ImportError(HF_MISSING) from e
    return transformers


@dataclass
class HFConfig(Config):
    """Quick profile of ``gpt.hf_baseline``: the quick ``gpt.arithmetic`` task and model."""

    steps: int = 300
    hf_attn_implementation: str = "sdpa"  # "sdpa" or "eager"
    models: tuple[str, ...] = ("ours-scratch", "ours-sdpa", "hf-gpt2")
    pretrained: str = "gpt2"  # zero-shot bits/char of this local checkpoint, if present
    timing_rounds: int = 5  # rounds of interleaved forward+backward timing after training


def build_hf_gpt2(cfg: Any, data: TaskData) -> nn.Module:
    """A randomly initialised ``GPT2LMHeadModel`` of the study's shape, dropout 0, tied."""
    transformers = _transformers()
    hf_cfg = transformers.GPT2Config(
        vocab_size=data.tokenizer.vocab_size, n_positions=data.context_len,
        n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=None,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=1e-5, tie_word_embeddings=True,
        bos_token_id=data.tokenizer.end_id, eos_token_id=data.tokenizer.end_id,
        pad_token_id=data.tokenizer.pad_id, attn_implementation=cfg.hf_attn_implementation,
    )
    return transformers.GPT2LMHeadModel(hf_cfg)


def _hf_logits(model: nn.Module, idx: Tensor) -> Tensor:
    return model(input_ids=idx, use_cache=False).logits


def _hf_greedy(model: nn.Module, prompts: Tensor, n_new: int) -> Tensor:
    """Greedy continuation with HF's own KV cache.

    The cache is called ``cache`` in transformers >= 5.x and ``past_key_values`` before.
    """
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else (
        "past_key_values")
    out = model(input_ids=prompts, use_cache=True)
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    new = [nxt]
    for _ in range(n_new - 1):
        out = model(input_ids=nxt, use_cache=True, **{name: out[name]})
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        new.append(nxt)
    return torch.cat(new, dim=1)


HF = LMAdapter(_hf_logits, _hf_greedy)


def hf_loss(model: nn.Module, batch: tuple) -> tuple[Tensor, int]:
    """Our shifted targets scored on HF's logits (no ``labels=``: HF would shift them again)."""
    inputs, targets, n_tokens = batch
    logits = model(input_ids=inputs, use_cache=False).logits
    loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                           ignore_index=IGNORE_INDEX)
    return loss, n_tokens


@torch.no_grad()
def bits_per_char(model: nn.Module, token_ids: Sequence[Sequence[int]], n_chars: int) -> float:
    """Total NLL (bits) of each id sequence after its first token, divided by ``n_chars``."""
    if n_chars < 1:
        raise ValueError(f"n_chars must be >= 1, got {n_chars}")
    device = next(model.parameters()).device
    nats = 0.0
    for ids in token_ids:
        x = torch.tensor([list(ids)], device=device)
        logits = model(input_ids=x).logits[0, :-1].float()
        nats += float(F.cross_entropy(logits, x[0, 1:], reduction="sum"))
    return nats / math.log(2) / n_chars


def pretrained_zero_shot(name: str, problems: Sequence[str]) -> dict:
    """Zero-shot bits/char of a local pretrained GPT-2 on ``problems`` (one per line).

    Looks only at local files (``local_files_only=True``); returns ``{"available": False,
    "reason": ...}`` when the checkpoint is not on this machine.
    """
    transformers = _transformers()
    try:
        tok = transformers.AutoTokenizer.from_pretrained(name, local_files_only=True)
        model = transformers.GPT2LMHeadModel.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as e:
        return {"available": False, "name": name, "reason": str(e).splitlines()[0][:200]}
    model.eval()
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    text = [p + "\n" for p in problems]
    ids = [[bos, *tok.encode(t)] for t in text]  # BOS so the first character is scored too
    return {"available": True, "name": name,
            "bits_per_char": bits_per_char(model, ids, sum(len(t) for t in text))}


def _ours_bits_per_char(model: nn.Module, data: TaskData) -> float:
    """Bits per character of our char-level model on the test problems (first char unscored)."""
    logits = _teacher_forced(model, OURS, data.test)
    nll = F.cross_entropy(logits.flatten(0, 1), data.test.targets.flatten(),
                          ignore_index=IGNORE_INDEX, reduction="sum")
    return float(nll) / math.log(2) / sum(len(p) for p in data.splits.test)


@register(
    "gpt.hf_baseline",
    HFConfig,
    full={"max_digits": 3, "operators": ("+", "-"), "n_train": 300_000, "n_val": 1000,
          "n_test": 5000, "n_layers": 4, "n_heads": 4, "d_model": 64, "steps": 4000,
          "batch_size": 128, "lr": 3e-3, "warmup_steps": 200, "eval_every": 1000,
          "n_eval_generate": 300, "threads": 2},
)
def run_hf(cfg: HFConfig, out: Path) -> dict:
    """Our GPT (scratch and sdpa attention) vs Hugging Face GPT-2, same data and trainer."""
    _check(cfg)
    known = ("ours-scratch", "ours-sdpa", "hf-gpt2")
    if not cfg.models or any(m not in known for m in cfg.models):
        raise ValueError(f"models must be a non-empty subset of {known}, got {cfg.models}")
    if cfg.hf_attn_implementation not in ("sdpa", "eager"):
        raise ValueError("hf_attn_implementation must be 'sdpa' or 'eager', "
                         f"got {cfg.hf_attn_implementation!r}")
    if "hf-gpt2" in cfg.models:
        _transformers()
    results: dict[str, dict] = {}
    runs: dict[str, TrainedRun] = {}
    with torch_threads(cfg.threads):
        data = build_data(cfg)
        for name in cfg.models:
            torch.manual_seed(cfg.seed)
            if name == "hf-gpt2":
                model, adapter, loss_fn = build_hf_gpt2(cfg, data), HF, hf_loss
            else:
                model = build_gpt(cfg, data, backend=name.removeprefix("ours-"))
                adapter, loss_fn = OURS, _loss_ours
            run_ = train_lm(model, cfg, data, cfg.seed, adapter=adapter, loss_fn=loss_fn,
                            track=False, log_path=out / f"train_log_{name}.jsonl")
            run_.model.eval()
            final = evaluate_lm(run_.model, adapter, data, "test")
            runs[name] = run_
            results[name] = {
                "parameters": sum(p.numel() for p in run_.model.parameters()),
                "test_answer_ppl": final["test_answer_ppl"],
                "test_token_ppl": final["test_token_ppl"],
                "test_exact_match": final["test_exact_match"],
                "train_wall_s": run_.train_s,
                **step_timing(run_.history),
                "curve": run_.curve,
            }
            if name != "hf-gpt2":
                results[name]["test_bits_per_char"] = _ours_bits_per_char(run_.model, data)
        batch = batch_fn(data, cfg.batch_size)(0, 0, torch.Generator().manual_seed(cfg.seed))
        losses = {name: hf_loss if name == "hf-gpt2" else _loss_ours for name in runs}
        for name, ms in interleaved_step_ms({n: r.model for n, r in runs.items()}, losses,
                                            batch, cfg.timing_rounds).items():
            results[name]["interleaved_ms_per_fwd_bwd"] = ms
        zero_shot = pretrained_zero_shot(cfg.pretrained, data.splits.test[:500])

    _plot_comparison(runs, results, out)
    return {
        "task": {"max_digits": cfg.max_digits, "operators": list(cfg.operators),
                 "context_len": data.context_len},
        "hf_attn_implementation": cfg.hf_attn_implementation,
        "models": results,
        "pretrained_zero_shot": zero_shot,
    }


def interleaved_step_ms(models: dict[str, nn.Module],
                        loss_fns: dict[str, Callable[[nn.Module, tuple], tuple[Tensor, int]]],
                        batch: tuple, rounds: int, repeats: int = 3) -> dict[str, float]:
    """Median ms of one forward + backward per model, the models taking turns in each round.

    Taking turns spreads any slowdown of a shared machine over all models alike, unlike the
    trainer's per-run timings, which come from runs at different times.
    """
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            device = next(model.parameters()).device
            moved = tuple(t.to(device) if isinstance(t, Tensor) else t for t in batch)
            model.train()
            start = time.perf_counter()
            for _ in range(repeats):
                loss, _ = loss_fns[name](model, moved)
                loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(1000.0 * (time.perf_counter() - start) / repeats)
            model.zero_grad(set_to_none=True)
    return {name: float(np.median(t)) for name, t in times.items()}


def _plot_comparison(runs: dict[str, TrainedRun], results: dict[str, dict], out: Path) -> Path:
    """Validation answer perplexity vs step per model, and ms/step bars."""
    fig, (ax, ax_t) = new_figure(10.0, 3.6, ncols=2)
    for name, r in runs.items():
        ax.plot(r.curve["step"], r.curve["val_answer_ppl"], marker="o", ms=3, label=name)
    ax.axhline(ANSWER_PPL_TARGET, color="red", ls="--", lw=1, label="target 1.5")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("validation answer perplexity")
    ax.legend(fontsize=8)
    names = list(results)
    ax_t.bar(names, [results[n]["interleaved_ms_per_fwd_bwd"] for n in names],
             color=[f"C{i}" for i in range(len(names))])
    ax_t.set_ylabel("ms per forward + backward (median)")
    ax_t.set_title("one training batch, models timed in turns", fontsize=9)
    return save_figure(fig, out / "hf_comparison.png")


__all__ = [
    "HF_MISSING",
    "OURS",
    "Config",
    "HFConfig",
    "LMAdapter",
    "TaskData",
    "TrainedRun",
    "bits_per_char",
    "build_data",
    "build_gpt",
    "build_hf_gpt2",
    "evaluate_lm",
    "greedy_completions",
    "hf_loss",
    "pretrained_zero_shot",
    "run",
    "run_hf",
    "token_ppl_floor",
    "train_lm",
]
