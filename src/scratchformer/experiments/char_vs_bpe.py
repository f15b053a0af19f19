r"""Study ``shakespeare.char_vs_bpe``: characters vs byte-level BPE tokens on Tiny Shakespeare.

``shakespeare.char_vs_bpe`` trains the same GPT twice with the same budget — same steps, batch
size, **context length in tokens** (so the same compute per step; the BPE model therefore sees
about twice as many characters per row) and optimiser — once on characters and once on byte-level
BPE tokens learned from the training split only. Losses in nats per *token* are not comparable
across tokenizers, so both are scored in **bits per character** on the whole validation text:

$$\text{bpc} = \frac{\sum_t -\log_2 p(x_t \mid x_{<t})}{\sum_t \#\text{chars}(x_t)},$$

summing over every predicted token and the characters those tokens cover (for the character
model the denominator is the number of predicted characters). The char model's full profile is
nanoGPT's CPU "baby" run (4 layers, 4 heads, width 128, context 64, batch 12, 2000 iterations,
lr 1e-3 cosine to 1e-4, warmup 100, β₂ = 0.99, no dropout, no biases), whose reference is a
validation loss of 1.886 nats/char at 25 ms/iteration; it is estimated here the same way (mean
loss over random validation batches) next to the exact full-text number.

The char model is saved (`char_model.pt`) for ``shakespeare.embedding_pca``, which reads it
when it exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from scratchformer.data.lm_text import TokenizedText, bpe_data, char_data
from scratchformer.experiments.kit import (
    CharGPTConfig,
    TrainResult,
    at_least,
    positive,
    positive_real,
    save_char_model,
    text_split,
    torch_threads,
    train_char_lm,
)
from scratchformer.experiments.kit.config import Rule
from scratchformer.experiments.registry import register
from scratchformer.generation import generate
from scratchformer.models.gpt import GPT
from scratchformer.training.lm_metrics import text_bits_per_char
from scratchformer.viz.figures import new_figure, save_figure

NANOGPT_VAL_LOSS = 1.886  # nats/char, nanoGPT CPU baby run on this machine
NANOGPT_MS_PER_ITER = 25.0
CHECKPOINT = "char_model.pt"


@dataclass
class Config(CharGPTConfig):
    """Quick profile: a 2-layer width-64 GPT, 100 steps on a 200k-character slice."""

    bpe_vocab: int = 320  # 256 bytes + merges (full: 512)
    sample_chars: int = 300  # roughly, per sample
    n_samples: int = 2
    top_k: int = 20
    temperature: float = 0.8

    RULES: ClassVar[dict[str, Rule]] = {"bpe_vocab": at_least(257), "n_samples": positive,
                                        "top_k": positive, "temperature": positive_real}


FULL = {"text_chars": 0, "bpe_vocab": 512, "n_layers": 4, "n_heads": 4, "d_model": 128,
        "steps": 2000, "warmup_steps": 100, "eval_every": 250, "eval_batches": 200,
        "val_chars": 0, "sample_chars": 600, "n_samples": 3, "threads": 0}


def sample_text(model: GPT, data: TokenizedText, prompt: str, n_chars: int, cfg: Config,
                seed: int) -> str:
    """A sample continuing ``prompt``: temperature ``cfg.temperature``, top-k ``cfg.top_k``."""
    device = next(model.parameters()).device
    ids = torch.tensor([data.encode(prompt)], device=device)
    chars_per_token = float(data.val_chars.float().mean())
    n_new = max(1, round(n_chars / chars_per_token))
    gen = torch.Generator(device=device).manual_seed(seed)
    out = generate(model, ids, n_new, temperature=cfg.temperature,
                   top_k=min(cfg.top_k, data.vocab_size), generator=gen)
    return data.decode(out[0].tolist())


@register("shakespeare.char_vs_bpe", Config, full=FULL)
def run(cfg: Config, out: Path) -> dict:
    """Char vs BPE GPT on Tiny Shakespeare at the same budget, in bits/char; nanoGPT baseline."""
    train, val = text_split(cfg)
    datasets = {"char": char_data(train, val), "bpe": bpe_data(train, val, cfg.bpe_vocab)}
    runs: dict[str, TrainResult] = {}
    results: dict[str, dict] = {}
    samples = ["# Samples", "",
               f"Temperature {cfg.temperature}, top-k {cfg.top_k}, prompt a newline; "
               f"{cfg.steps} steps of a {cfg.n_layers}-layer width-{cfg.d_model} GPT.", ""]
    with torch_threads(cfg.threads):
        for kind, data in datasets.items():
            r = train_char_lm(cfg, data, log_path=out / f"train_log_{kind}.jsonl")
            runs[kind] = r
            val_loss = r.final("val_loss")
            chars_per_token = float(data.val_chars.float().mean())
            results[kind] = {
                "vocab_size": data.vocab_size,
                "parameters": r.model.num_parameters(),
                "train_tokens": data.train.numel(),
                "chars_per_token": chars_per_token,
                "context_chars": cfg.context_len * chars_per_token,
                "val_loss_nats_per_token": val_loss,
                "val_bits_per_char_estimate": val_loss / math.log(2) / chars_per_token,
                "val_bits_per_char": text_bits_per_char(r.model, data, cfg.context_len),
                "ms_per_iter": r.ms_per_step,
                "train_s": r.train_s,
                "curve": {"step": r.curve["step"], "val_loss": r.curve["val_loss"]},
            }
            samples += [f"## {kind} model", ""]
            for i in range(cfg.n_samples):
                text = sample_text(r.model, data, "\n", cfg.sample_chars, cfg, cfg.seed + i)
                samples += ["```text", text.strip("\n"), "```", ""]
    (out / "samples.md").write_text("\n".join(samples), encoding="utf-8")
    save_char_model(runs["char"].model, "".join(datasets["char"].token_text), out / CHECKPOINT)
    _plot_curves(runs, datasets, results, out)
    char = results["char"]
    return {
        "context": f"{cfg.context_len} tokens for both models (same compute per step)",
        "models": results,
        "bpe_minus_char_bits_per_char": (results["bpe"]["val_bits_per_char"]
                                         - char["val_bits_per_char"]),
        "nanogpt": {"val_loss": NANOGPT_VAL_LOSS, "ms_per_iter": NANOGPT_MS_PER_ITER,
                    "our_val_loss": char["val_loss_nats_per_token"],
                    "our_ms_per_iter": char["ms_per_iter"],
                    "speed_ratio": char["ms_per_iter"] / NANOGPT_MS_PER_ITER,
                    "threads": torch.get_num_threads() if not cfg.threads else cfg.threads},
    }


def _plot_curves(runs: dict[str, TrainResult], datasets: dict[str, TokenizedText],
                 results: dict[str, dict], out: Path) -> Path:
    """Validation loss vs step in bits/char (left) and in nats/token (right)."""
    fig, (ax, ax_tok) = new_figure(10.0, 3.8, ncols=2)
    for kind, r in runs.items():
        cpt = results[kind]["chars_per_token"]
        bpc = [v / math.log(2) / cpt for v in r.curve["val_loss"]]
        ax.plot(r.curve["step"], bpc, marker="o", ms=3, label=f"{kind} (val, random batches)")
        ax_tok.plot(r.curve["step"], r.curve["val_loss"], marker="o", ms=3, label=f"{kind} val")
        ax_tok.plot([h["step"] for h in r.history], [h["loss"] for h in r.history], lw=0.8,
                    alpha=0.6, label=f"{kind} train (batch)")
    ax.axhline(NANOGPT_VAL_LOSS / math.log(2), color="red", ls="--", lw=1,
               label="nanoGPT baby char run")
    ax.set_xlabel("step")
    ax.set_ylabel("validation bits per character")
    ax.set_title("same steps, batch and token context", fontsize=9)
    ax.legend(fontsize=8)
    ax_tok.set_xlabel("step")
    ax_tok.set_ylabel("loss (nats per token)")
    ax_tok.legend(fontsize=8)
    return save_figure(fig, out / "curves.png")
