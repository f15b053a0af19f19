"""Char-LM studies: the Tiny Shakespeare data of a config, its GPT, and a char model on disk."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from scratchformer.data.lm_text import TokenizedText, char_data, shakespeare_split
from scratchformer.experiments.kit.train import (
    TrainResult,
    lm_batches,
    lm_eval,
    train,
    train_config,
)
from scratchformer.models.gpt import GPT, GPTConfig

__all__ = ["char_text", "gpt_config", "load_char_model", "save_char_model", "text_split",
           "train_char_lm"]


def text_split(cfg: Any) -> tuple[str, str]:
    """The (train, val) Tiny Shakespeare text of a `CharTextConfig`."""
    return shakespeare_split(cfg.text_chars, cfg.val_chars)


def gpt_config(cfg: Any, vocab_size: int, **overrides: Any) -> GPTConfig:
    """The study GPT of a kit config: its sizes and kernel, no dropout, no biases, tied
    embeddings (nanoGPT's "baby" shape knobs); ``overrides`` replace any `GPTConfig` field."""
    fields: dict[str, Any] = dict(
        vocab_size=vocab_size, context_len=cfg.context_len, n_layers=getattr(cfg, "n_layers", 1),
        n_heads=cfg.n_heads, d_model=cfg.d_model, dropout=0.0, bias=False,
        attention_backend=getattr(cfg, "attention_backend", "scratch"),
    )
    fields.update(overrides)
    return GPTConfig(**fields)


def train_char_lm(cfg: Any, data: TokenizedText, *, seed: int | None = None,
                  model_config: GPTConfig | None = None, log_path: Path | None = None,
                  **hooks: Any) -> TrainResult:
    """Train the GPT of ``cfg`` (or ``model_config``) on ``data`` with validation by random
    windows; ``hooks`` are `train`'s keyword arguments (on_step, on_eval, ...)."""
    seed = cfg.seed if seed is None else seed
    torch.manual_seed(seed)
    model = GPT(model_config or gpt_config(cfg, data.vocab_size))
    return train(
        model, train_config(cfg, seed), lm_batches(data.train, cfg.batch_size, cfg.context_len),
        eval_fn=lm_eval(data.val, cfg.eval_batches, cfg.batch_size, cfg.context_len, seed + 1),
        log_path=log_path, **hooks,
    )


def char_text(cfg: Any) -> TokenizedText:
    """Character ids of the config's Tiny Shakespeare split."""
    return char_data(*text_split(cfg))


def save_char_model(model: GPT, vocab: str, path: Path) -> Path:
    """A char model's weights, config and vocabulary, loadable with ``weights_only=True``."""
    torch.save({"state_dict": model.state_dict(), "config": dataclasses.asdict(model.config),
                "vocab": vocab}, path)
    return path


def load_char_model(path: Path) -> tuple[GPT, str]:
    """The (model, vocabulary string) that `save_char_model` wrote."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = GPT(GPTConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    return model.eval(), blob["vocab"]
