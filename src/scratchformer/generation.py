"""Autoregressive generation from a `GPT`: greedy decoding and temperature / top-k / top-p sampling.

One step turns the model's logits ``z`` for the next token into a choice:

* **greedy**: ``argmax z`` (also what temperature 0 means);
* **temperature** ``τ``: sample from ``softmax(z / τ)``; ``τ < 1`` sharpens, ``τ > 1`` flattens;
* **top-k**: keep exactly the ``k`` largest logits, renormalise over them;
* **top-p** (nucleus, Holtzman et al., 2020): keep the smallest set of most likely tokens whose
  total probability is ``>= p``, renormalise over it.

Filters are applied in that order (temperature, top-k, top-p), as in Hugging Face transformers.

With ``use_cache`` each step feeds only the new token through the model, reusing the keys and
values of earlier positions (`KVCache`), so a step costs one position instead of a full prefix.
`stream` yields each step's tokens as they are chosen; `generate` collects the same steps.
Arguments are checked once, before the first step: the loop itself runs no Python-side checks,
writes the tokens into a preallocated buffer and computes logits for the last position only.

**Past the context window.** The model sees at most its last ``context_len`` tokens: once the
sequence is longer, the input is cropped to that window (as nanoGPT does). Absolute positions
then shift by one at every step, so cached keys (computed at other positions) are stale; the
cache is refilled from the cropped window, and from then on each step costs a full window in
both modes. Cached and uncached decoding therefore see exactly the same inputs at every step.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from scratchformer.models.gpt import GPT
from scratchformer.validation import check_bool, check_int, check_optional_int, check_real

__all__ = [
    "check_sampling",
    "generate",
    "sample_next_token",
    "stream",
    "top_k_filter",
    "top_p_filter",
]


def _check_logits(logits: object) -> Tensor:
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.ndim < 1:
        got = f"{logits.dtype} {tuple(logits.shape)}" if isinstance(logits, Tensor) else type(
            logits
        ).__name__
        raise TypeError(f"logits must be a floating tensor (..., vocab), got {got}")
    return logits


def _check_top_p(top_p: object) -> float | None:
    """None, or a probability mass in (0, 1]."""
    if top_p is None:
        return None
    return check_real("top_p", top_p, minimum=0, maximum=1, min_inclusive=False)


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep exactly the ``k`` largest logits of each row (last axis); set the rest to -inf.

    Ties at the k-th value are broken by ``torch.topk``, so exactly ``min(k, vocab)`` survive.
    """
    logits = _check_logits(logits)
    k = check_int("k", k)
    if k >= logits.shape[-1]:
        return logits
    values, indices = logits.topk(k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, indices, values)


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Keep the smallest set of most likely tokens with total probability ``>= p``; -inf the rest.

    A token is kept iff the probability of the tokens ranked above it is ``< p``, i.e. it is still
    needed to reach ``p``. The most likely token is always kept.
    """
    logits = _check_logits(logits)
    p = check_real("p", p, minimum=0, maximum=1, min_inclusive=False)
    probs_sorted, order = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)
    cum = probs_sorted.cumsum(dim=-1)
    mass_before = torch.cat((torch.zeros_like(cum[..., :1]), cum[..., :-1]), dim=-1)
    keep_sorted = mass_before < p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def sample_next_token(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One token id per row of ``logits`` (B, vocab) -> (B,): greedy, or sampled after filters.

    ``temperature=0`` is greedy. ``generator`` makes sampling reproducible.
    """
    logits = _check_logits(logits)
    temperature = check_real("temperature", temperature, minimum=0)
    top_k, top_p = check_optional_int("top_k", top_k), _check_top_p(top_p)
    greedy = check_bool("greedy", greedy)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return _sample(logits, temperature, top_k, top_p, greedy, generator)


def _check_generate_args(model: object, idx: object, max_new_tokens: object, eos_id: object):
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a GPT, got {type(model).__name__}")
    if not isinstance(idx, Tensor) or idx.is_floating_point() or idx.dtype == torch.bool:
        got = idx.dtype if isinstance(idx, Tensor) else type(idx).__name__
        raise TypeError(f"idx must be an integer tensor of token ids, got {got}")
    if idx.ndim != 2 or idx.shape[1] == 0:
        raise ValueError(
            f"idx must have shape (batch, length >= 1) (a prompt), got {tuple(idx.shape)}"
        )
    check_int("max_new_tokens", max_new_tokens, minimum=0)
    if eos_id is not None:
        vocab = model.config.vocab_size
        eos_id = check_int("eos_id", eos_id, minimum=None)
        if not 0 <= eos_id < vocab:
            raise ValueError(f"eos_id must be in [0, vocab_size={vocab}), got {eos_id}")


def check_sampling(temperature: object, top_k: object, top_p: object, greedy: object,
                    generator: object) -> dict:
    """The sampling options of `sample_next_token`, checked once, as keyword arguments."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return {
        "temperature": check_real("temperature", temperature, minimum=0),
        "top_k": check_optional_int("top_k", top_k),
        "top_p": _check_top_p(top_p),
        "greedy": check_bool("greedy", greedy),
        "generator": generator,
    }


def _sample(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None,
            greedy: bool, generator: torch.Generator | None) -> Tensor:
    """`sample_next_token` on checked arguments (the decoding loop checks them once)."""
    if greedy or temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits.float(), dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


def _decode(model: GPT, idx: Tensor, max_new_tokens: int, sample_kw: dict, use_cache: bool,
            eos_id: int | None) -> Iterator[tuple[Tensor, Tensor]]:
    """The decoding loop on checked arguments: yields ``(tokens (B,), logits (B, vocab))`` per
    step. Gradients are off during each step only (never across a ``yield``, where the caller
    runs); the model is in eval mode until the loop ends or is closed."""
    B, T = idx.shape
    window = model.config.context_len
    cache = model.new_kv_cache() if use_cache else None
    start = 0  # with a cache: the position in seq of the cache's position 0
    seq = idx.new_empty(B, T + max_new_tokens)  # written in place, one column per step
    seq[:, :T] = idx
    finished = torch.zeros(B, dtype=torch.bool, device=idx.device) if eos_id is not None else None
    was_training = model.training
    model.eval()
    try:
        for n in range(T, T + max_new_tokens):
            with torch.no_grad():
                if cache is None:
                    hidden = model.hidden_states(seq[:, max(0, n - window) : n])
                else:
                    if n - start > window:  # slide: positions shift, refill the cache
                        start = n - window
                        cache.reset()
                    hidden = model.hidden_states(seq[:, start + cache.length : n], cache)
                logits = model.logits(hidden[:, -1])
                token = _sample(logits, **sample_kw)
                if finished is not None:
                    token = token.masked_fill(finished, eos_id)
                    finished |= token == eos_id
                seq[:, n] = token
            yield token, logits
            if finished is not None and bool(finished.all()):
                return
    finally:
        model.train(was_training)


def stream(
    model: GPT,
    idx: Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
) -> Iterator[Tensor]:
    """Yield the new tokens (B,) of each step as soon as they are chosen, for up to
    ``max_new_tokens`` steps: the tokens `generate` appends, one column at a time.

    Arguments as in `generate`, checked before the first step (so a bad one raises on this
    call, not on the first ``next``). The model is in eval mode while the iterator runs and is
    put back in its previous mode when it is exhausted or closed.
    """
    _check_generate_args(model, idx, max_new_tokens, eos_id)
    sample_kw = check_sampling(temperature, top_k, top_p, greedy, generator)
    use_cache = check_bool("use_cache", use_cache)
    steps = _decode(model, idx, max_new_tokens, sample_kw, use_cache, eos_id)
    return (token for token, _ in steps)


def generate(
    model: GPT,
    idx: Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    return_logits: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Extend the prompts ``idx`` (B, T) by up to ``max_new_tokens`` tokens -> (B, T + n).

    Sampling options as in `sample_next_token`. With ``eos_id`` a row that has produced it
    keeps producing it, and generation stops early once every row has. The model runs in eval
    mode (no dropout) and is put back in its previous mode afterwards. ``return_logits`` also
    returns the raw model logits of every step, (B, n, vocab). Longer than ``context_len``: the
    window is cropped (see the module docstring). `stream` yields the same tokens one step at
    a time.
    """
    _check_generate_args(model, idx, max_new_tokens, eos_id)
    sample_kw = check_sampling(temperature, top_k, top_p, greedy, generator)
    use_cache = check_bool("use_cache", use_cache)
    return_logits = check_bool("return_logits", return_logits)
    tokens, step_logits = [], []
    for token, logits in _decode(model, idx, max_new_tokens, sample_kw, use_cache, eos_id):
        tokens.append(token)
        if return_logits:
            step_logits.append(logits)
    new = torch.stack(tokens, dim=1).to(idx.dtype) if tokens else idx[:, :0]
    seq = torch.cat((idx, new), dim=1)
    if not return_logits:
        return seq
    vocab = model.config.vocab_size
    empty = torch.empty(idx.shape[0], 0, vocab, dtype=model.head_weight.dtype, device=idx.device)
    return seq, torch.stack(step_logits, dim=1) if step_logits else empty
