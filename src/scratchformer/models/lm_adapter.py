"""One interface to next-token models of different libraries: logits, greedy continuation, loss.

Our `GPT` is called as ``model(idx, targets) -> (logits, loss)`` and decodes with our KV cache;
a Hugging Face causal LM (``GPT2LMHeadModel``) is called with ``input_ids=`` and returns an
output object whose cache argument changed name across versions. An `LMAdapter` hides that, so
one evaluation and one comparison serve both. ``transformers`` is never imported here: the HF
functions only call the model they are given.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchformer.generation import generate
from scratchformer.models.gpt import IGNORE_INDEX

__all__ = ["GPT_ADAPTER", "HF_ADAPTER", "LMAdapter", "LossFn", "gpt_loss", "hf_loss"]

LossFn = Callable[[nn.Module, tuple], tuple[Tensor, int]]
"""``(model, (inputs, targets, n_tokens)) -> (mean loss, n_tokens)``, the trainer's loss_fn."""


@dataclass(frozen=True)
class LMAdapter:
    """How to get next-token logits and greedy continuations out of one kind of model."""

    logits: Callable[[nn.Module, Tensor], Tensor]  # (model, idx (B, T)) -> (B, T, V)
    greedy: Callable[[nn.Module, Tensor, int], Tensor]  # (model, prompts, n) -> (B, n) new ids


def _gpt_logits(model: nn.Module, idx: Tensor) -> Tensor:
    """Logits of our GPT (its forward returns ``(logits, loss)``)."""
    return model(idx)[0]


def _gpt_greedy(model: nn.Module, prompts: Tensor, n_new: int) -> Tensor:
    """The ``n_new`` ids our GPT appends greedily, with its KV cache."""
    out = generate(model, prompts, n_new, greedy=True, use_cache=True)
    return out[:, prompts.shape[1]:]


GPT_ADAPTER = LMAdapter(_gpt_logits, _gpt_greedy)
"""Our `GPT`."""


def _hf_logits(model: nn.Module, idx: Tensor) -> Tensor:
    """Logits of a Hugging Face causal LM, without building a cache."""
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


HF_ADAPTER = LMAdapter(_hf_logits, _hf_greedy)
"""A Hugging Face causal LM such as ``transformers.GPT2LMHeadModel``."""


def gpt_loss(model: nn.Module, batch: tuple) -> tuple[Tensor, int]:
    """Our GPT's own next-token loss on ``(inputs, targets, n_tokens)``."""
    inputs, targets, n_tokens = batch
    return model(inputs, targets)[1], n_tokens


def hf_loss(model: nn.Module, batch: tuple) -> tuple[Tensor, int]:
    """Our shifted targets scored on HF's logits (no ``labels=``: HF would shift them again)."""
    inputs, targets, n_tokens = batch
    logits = model(input_ids=inputs, use_cache=False).logits
    loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                           ignore_index=IGNORE_INDEX)
    return loss, n_tokens
