"""Study ``gpt.arithmetic``: a small GPT learns to add and subtract.

It trains our GPT (character tokens, one problem per row, natural digit order ``123+456=579$``)
with the kit's `train` and evaluates on problems whose unordered operand pair never occurs in
training (data/arithmetic.py), by the measures of analysis/arithmetic_eval.py:

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
drawn and each head gets an *operand-alignment score* (analysis/training_probes.py).

**The full-profile recipe** (3-digit ``+`` and ``-``, answers in natural order). On a CPU the
step time is set by the FLOPs (it grows linearly with the batch), so width is expensive: in our
trials a 4-layer width-64 GPT (0.2M parameters) got much further in the same wall time than
widths 96 or 128, and lr 3e-3 beat 1e-3 and 1e-2. Training has a long plateau (answer perplexity
≈ 3: format, sign and easy digits learned) and then a fast drop once carries and borrows are
handled. The drop starts after 2-5k steps depending on the seed, hence 20k steps. In short
trials an answer-only loss made no consistent difference and sinusoidal positions were slower.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from scratchformer.analysis.arithmetic_eval import (
    error_analysis,
    evaluate_split,
    greedy_completions,
)
from scratchformer.analysis.tracking import SpectrumTracker
from scratchformer.analysis.training_probes import (
    aligned_positions,
    alignment_scores,
    plot_embedding_spectrum,
    plot_qk_ranks,
)
from scratchformer.data.arithmetic import ArithmeticTask, token_ppl_floor
from scratchformer.experiments.kit.arithmetic import (
    ANSWER_PPL_TARGET,
    FULL_TASK,
    ArithmeticLMConfig,
    ArithmeticRun,
    arithmetic_config,
    arithmetic_gpt,
    arithmetic_task,
    train_arithmetic_lm,
)
from scratchformer.experiments.kit.config import Rule, positive
from scratchformer.experiments.kit.stats import mean_std
from scratchformer.experiments.kit.threads import torch_threads
from scratchformer.experiments.registry import register
from scratchformer.models.lm_adapter import GPT_ADAPTER
from scratchformer.viz.attention import attention_grid, stack_maps
from scratchformer.viz.figures import new_figure, save_figure

__all__ = ["Config", "run"]


@dataclass
class Config(ArithmeticLMConfig):
    """Quick profile: 1-2 digit addition, a 2-layer width-64 GPT, a few hundred steps."""

    track_every: int = 20  # steps between QKᵀ rank and embedding-spectrum records
    n_align: int = 500  # test problems whose attention maps give the alignment scores
    n_examples: int = 2  # attention-map figures
    seeds: int = 1  # train seeds seed, seed+1, ...; figures show the first

    RULES: ClassVar[dict[str, Rule]] = {"track_every": positive, "n_align": positive,
                                        "seeds": positive}


# ----------------------------------------------------------------------------- figures


def _plot_training(run: ArithmeticRun, floor: float, out: Path) -> list[Path]:
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
def _attention(model: nn.Module, task: ArithmeticTask, n: int
               ) -> tuple[list[Tensor], list[str]]:
    """Attention maps (per layer, (n, H, T, T)) of the first ``n`` test problems."""
    device = next(model.parameters()).device
    problems = task.splits.test[:n]
    idx = task.test.inputs[: len(problems)].to(device)
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


# ----------------------------------------------------------------------------- the study


@register(
    "gpt.arithmetic",
    Config,
    full={**FULL_TASK, "steps": 20_000, "n_eval_generate": 500, "track_every": 500,
          "n_align": 1000, "n_examples": 3},
)
def run(cfg: Config, out: Path) -> dict:
    """Train a GPT on held-out arithmetic: answer perplexity, exact match, QKᵀ ranks, attention."""
    with torch_threads(cfg.threads):
        task = arithmetic_task(cfg)
        runs: list[ArithmeticRun] = []
        tracker = SpectrumTracker(cfg.track_every)
        for k in range(cfg.seeds):
            seed = cfg.seed + k
            torch.manual_seed(seed)
            model = arithmetic_gpt(cfg, task)
            runs.append(train_arithmetic_lm(model, cfg, task, seed,
                                            tracker=tracker if k == 0 else None,
                                            log_path=out / f"train_log_seed{seed}.jsonl"))
        finals = []
        for r in tqdm(runs, desc="test", leave=False):
            r.model.eval()
            finals.append(evaluate_split(r.model, GPT_ADAPTER, task, "test"))
        first = runs[0]
        errors = error_analysis(task.splits.test, greedy_completions(
            first.model, GPT_ADAPTER, task, task.splits.test))
        maps, problems = _attention(first.model, task, cfg.n_align)
        align = alignment_scores(maps, problems)

    floor = token_ppl_floor(arithmetic_config(cfg), task.splits.val)
    _plot_training(first, floor, out)
    tracked = tracker.as_dict()
    plot_qk_ranks(tracked, out)
    plot_embedding_spectrum(tracked, out)
    _attention_figures(maps, problems, align, cfg.n_examples, out)

    qk = tracked["qk"]
    metrics: dict[str, Any] = {
        "task": {"max_digits": cfg.max_digits, "operators": list(cfg.operators),
                 "n_train": len(task.splits.train), "n_test": len(task.splits.test),
                 "context_len": task.context_len, "held_out": "unordered operand pairs"},
        "parameters": sum(p.numel() for p in first.model.parameters()),
        "seeds": [r.seed for r in runs],
        "answer_ppl_target": ANSWER_PPL_TARGET,
        "token_ppl_floor": token_ppl_floor(arithmetic_config(cfg), task.splits.test),
        "initial_val_answer_ppl": first.curve["val_answer_ppl"][0],
        "curve": first.curve,
        "train_wall_s": mean_std([r.result.train_s for r in runs], values_key="per_seed"),
        "eval_wall_s": mean_std([r.eval_s for r in runs], values_key="per_seed"),
        "ms_per_step": first.result.ms_per_step,
        "tokens_per_s": first.result.tokens_per_s,
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
        metrics[key] = mean_std([f[key] for f in finals], values_key="per_seed")
    metrics["meets_answer_ppl_target"] = metrics["test_answer_ppl"]["mean"] < ANSWER_PPL_TARGET
    metrics["test_errors_first_seed"] = errors
    return metrics
