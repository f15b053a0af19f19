"""Study ``gpt.hf_baseline``: our GPT against Hugging Face GPT-2 on the arithmetic task.

It trains ``transformers.GPT2LMHeadModel`` of the same shape as our GPT on the same batches
with the same trainer, and compares it with our GPT under both attention backends: test
answer/token perplexity and exact match (analysis/arithmetic_eval.py), training speed, and the
forward + backward time of one batch with the models timed in turns. A local pretrained GPT-2,
if present, is scored zero-shot in bits per character.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from scratchformer.analysis.arithmetic_eval import (
    evaluate_split,
    interleaved_step_ms,
    split_bits_per_char,
)
from scratchformer.data.arithmetic import ArithmeticTask, TaskBatches
from scratchformer.experiments.kit.arithmetic import (
    ANSWER_PPL_TARGET,
    FULL_TASK,
    ArithmeticLMConfig,
    ArithmeticRun,
    arithmetic_gpt,
    arithmetic_task,
    train_arithmetic_lm,
)
from scratchformer.experiments.kit.config import Rule, choice, positive
from scratchformer.experiments.kit.threads import torch_threads
from scratchformer.experiments.registry import register
from scratchformer.models.lm_adapter import GPT_ADAPTER, HF_ADAPTER, gpt_loss, hf_loss
from scratchformer.viz.figures import new_figure, save_figure

__all__ = [
    "HF_MISSING",
    "MODELS",
    "HFConfig",
    "build_hf_gpt2",
    "pretrained_zero_shot",
    "run",
    "token_ids_bits_per_char",
]

HF_MISSING = ("gpt.hf_baseline needs Hugging Face transformers; install the 'hf' extra: "
              "pip install 'scratchformer[hf]'")
MODELS = ("ours-scratch", "ours-sdpa", "hf-gpt2")
"""The models the study can compare: our GPT with each attention backend, and HF's GPT-2."""


def _models_rule(name: str, value: Any) -> None:
    """A non-empty tuple of distinct names from `MODELS`."""
    if not isinstance(value, (tuple, list)) or not value or any(m not in MODELS for m in value):
        raise ValueError(f"{name} must be a non-empty subset of {MODELS}, got {value!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"{name} must not repeat a model, got {value!r}")


@dataclass
class HFConfig(ArithmeticLMConfig):
    """Quick profile of ``gpt.hf_baseline``: the quick ``gpt.arithmetic`` task and model."""

    steps: int = 300
    hf_attn_implementation: str = "sdpa"  # "sdpa" or "eager"
    models: tuple[str, ...] = MODELS
    pretrained: str = "gpt2"  # zero-shot bits/char of this local checkpoint, if present
    timing_rounds: int = 5  # rounds of interleaved forward+backward timing after training

    RULES: ClassVar[dict[str, Rule]] = {
        "hf_attn_implementation": choice("sdpa", "eager"), "models": _models_rule,
        "timing_rounds": positive,
    }


def _transformers() -> Any:
    """Import transformers lazily, with an error that says how to get it."""
    try:
        import transformers
    except ImportError as e:
        raise ImportError(HF_MISSING) from e
    return transformers


def build_hf_gpt2(cfg: HFConfig, task: ArithmeticTask) -> nn.Module:
    """A randomly initialised ``GPT2LMHeadModel`` of the study's shape, dropout 0, tied."""
    transformers = _transformers()
    hf_cfg = transformers.GPT2Config(
        vocab_size=task.tokenizer.vocab_size, n_positions=task.context_len,
        n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=None,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=1e-5, tie_word_embeddings=True,
        bos_token_id=task.tokenizer.end_id, eos_token_id=task.tokenizer.end_id,
        pad_token_id=task.tokenizer.pad_id, attn_implementation=cfg.hf_attn_implementation,
    )
    return transformers.GPT2LMHeadModel(hf_cfg)


@torch.no_grad()
def token_ids_bits_per_char(model: nn.Module, token_ids: Sequence[Sequence[int]],
                            n_chars: int) -> float:
    """Bits per character of an HF causal LM on subword id sequences: the total NLL of each
    sequence after its first token, over ``n_chars`` characters of text."""
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
            "bits_per_char": token_ids_bits_per_char(model, ids, sum(len(t) for t in text))}


def _plot_comparison(runs: dict[str, ArithmeticRun], results: dict[str, dict], out: Path
                     ) -> Path:
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


@register(
    "gpt.hf_baseline",
    HFConfig,
    full={**FULL_TASK, "steps": 4000, "n_eval_generate": 300},
)
def run(cfg: HFConfig, out: Path) -> dict:
    """Our GPT (scratch and sdpa attention) vs Hugging Face GPT-2, same data and trainer."""
    if "hf-gpt2" in cfg.models:
        _transformers()
    results: dict[str, dict] = {}
    runs: dict[str, ArithmeticRun] = {}
    with torch_threads(cfg.threads):
        task = arithmetic_task(cfg)
        for name in cfg.models:
            torch.manual_seed(cfg.seed)
            if name == "hf-gpt2":
                model, adapter, loss_fn = build_hf_gpt2(cfg, task), HF_ADAPTER, hf_loss
            else:
                model = arithmetic_gpt(cfg, task, backend=name.removeprefix("ours-"))
                adapter, loss_fn = GPT_ADAPTER, gpt_loss
            run_ = train_arithmetic_lm(model, cfg, task, cfg.seed, adapter=adapter,
                                       loss_fn=loss_fn, log_path=out / f"train_log_{name}.jsonl")
            final = evaluate_split(run_.model, adapter, task, "test")
            runs[name] = run_
            results[name] = {
                "parameters": sum(p.numel() for p in run_.model.parameters()),
                "test_answer_ppl": final["test_answer_ppl"],
                "test_token_ppl": final["test_token_ppl"],
                "test_exact_match": final["test_exact_match"],
                "train_wall_s": run_.result.train_s,
                "ms_per_step": run_.result.ms_per_step,
                "tokens_per_s": run_.result.tokens_per_s,
                "curve": run_.curve,
            }
            if name != "hf-gpt2":
                results[name]["test_bits_per_char"] = split_bits_per_char(
                    run_.model, GPT_ADAPTER, task, "test")
        batch = TaskBatches(task, cfg.batch_size)(0, 0, torch.Generator().manual_seed(cfg.seed))
        losses = {name: hf_loss if name == "hf-gpt2" else gpt_loss for name in runs}
        for name, ms in interleaved_step_ms({n: r.model for n, r in runs.items()}, losses,
                                            batch, cfg.timing_rounds).items():
            results[name]["interleaved_ms_per_fwd_bwd"] = ms
        zero_shot = pretrained_zero_shot(cfg.pretrained, task.splits.test[:500])

    _plot_comparison(runs, results, out)
    return {
        "task": {"max_digits": cfg.max_digits, "operators": list(cfg.operators),
                 "context_len": task.context_len},
        "hf_attn_implementation": cfg.hf_attn_implementation,
        "models": results,
        "pretrained_zero_shot": zero_shot,
    }
