"""How well a language model does arithmetic: perplexities, greedy exact match, errors, speed.

Any next-token model is scored through its `LMAdapter` on an `ArithmeticTask` split:

* **answer perplexity** ``exp(mean NLL)`` over the answer characters and the end marker,
  teacher-forced. The answer is a function of the prompt, so this can approach 1.
* **all-token perplexity** over every predicted character; its floor is well above 1
  (`token_ppl_floor`: operands are random).
* **exact match** of greedy decoding with the model's KV cache, prompts batched by length
  (equal-length prompts need no padding, so every row of a batch decodes exactly as it would
  alone).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchformer.data.arithmetic import (
    IGNORE_INDEX,
    ArithmeticBatch,
    ArithmeticTask,
    answer_perplexity,
    exact_match,
    parse_problem,
    split_prompt,
    token_perplexity,
)
from scratchformer.models.lm_adapter import LMAdapter, LossFn

__all__ = [
    "error_analysis",
    "evaluate_split",
    "greedy_completions",
    "interleaved_step_ms",
    "split_bits_per_char",
    "teacher_forced_logits",
]


@torch.no_grad()
def greedy_completions(model: nn.Module, adapter: LMAdapter, task: ArithmeticTask,
                       problems: Sequence[str], batch_size: int = 1024) -> list[str]:
    """What greedy decoding writes after each problem's prompt (up to the longest answer + end).

    Prompts are grouped by length, so a batch needs no padding and each row decodes exactly as
    it would alone.
    """
    tok = task.tokenizer
    device = next(model.parameters()).device
    prompts = [split_prompt(p)[0] for p in problems]
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    out: list[str] = [""] * len(problems)
    for length, rows in sorted(by_len.items()):
        n_new = task.context_len - length + 1  # the last token is produced, never fed back
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            x = torch.tensor([tok.encode(prompts[i]) for i in chunk], device=device)
            new = adapter.greedy(model, x, n_new).cpu()
            for r, i in enumerate(chunk):
                out[i] = tok.decode(new[r])
    return out


@torch.no_grad()
def teacher_forced_logits(model: nn.Module, adapter: LMAdapter, batch: ArithmeticBatch,
                          chunk: int = 2048) -> Tensor:
    """Logits (B, T, V) of a whole encoded set, in chunks, on the model's device, as float32."""
    device = next(model.parameters()).device
    parts = [adapter.logits(model, batch.inputs[i:i + chunk].to(device)).float().cpu()
             for i in range(0, batch.inputs.shape[0], chunk)]
    return torch.cat(parts)


def evaluate_split(model: nn.Module, adapter: LMAdapter, task: ArithmeticTask, split: str,
                   n_generate: int | None = None) -> dict[str, float]:
    """Loss, answer/token perplexity and greedy exact match of ``model`` on ``split``.

    Keys are prefixed with the split (``val_loss``, ...); exact match decodes the first
    ``n_generate`` problems (all when None), the costly part of an evaluation.
    """
    batch: ArithmeticBatch = getattr(task, split)
    problems: list[str] = getattr(task.splits, split)
    logits = teacher_forced_logits(model, adapter, batch)
    loss = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(),
                           ignore_index=IGNORE_INDEX)
    chosen = problems if n_generate is None else problems[:n_generate]
    completions = greedy_completions(model, adapter, task, chosen)
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


def split_bits_per_char(model: nn.Module, adapter: LMAdapter, task: ArithmeticTask,
                        split: str = "test") -> float:
    """Bits per character of a char-level model on ``split`` (each first character unscored),
    the unit in which char and subword models compare."""
    batch: ArithmeticBatch = getattr(task, split)
    logits = teacher_forced_logits(model, adapter, batch)
    nll = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(),
                          ignore_index=IGNORE_INDEX, reduction="sum")
    return float(nll) / math.log(2) / sum(len(p) for p in getattr(task.splits, split))


def interleaved_step_ms(models: Mapping[str, nn.Module], loss_fns: Mapping[str, LossFn],
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
