"""Synthetic integer arithmetic (``37+52=89$``) for next-token prediction, split without leakage.

A problem is ``{a}{op}{b}={a op b}{end}``: two operands of at most ``max_digits`` digits (negative
ones too if allowed), an operator from ``+ - *`` and an end marker after the answer, so that a
model that generates the answer also learns where it stops. Results may be negative even when
operands are not (``3-5=-2$``): subtraction is not reordered, so every operand pair is a
problem for every operator and the model must learn the sign. ``-`` is both the operator and a
sign (``3--4=7$``); the grammar ``-?digits op -?digits = -?digits`` still reads unambiguously.

Train, validation and test are disjoint in *unordered operand pairs*: a keyed hash of
``{min(a, b), max(a, b)}`` puts each pair in exactly one split, for every operator at once, so a
test problem's operands never occur together (in either order, with any operator) in training.
``(a, b)`` and ``(b, a)`` count as the same pair because ``a+b`` and ``b+a`` (and ``a*b``,
``b*a``) have the same answer; holding out only the ordered pair would leak it. Membership is
decidable for any pair (:func:`split_of`) and reproducible from the seed.

Why token perplexity has a floor above 1 but answer perplexity does not: operands are drawn at
random, so no model can predict them. A uniformly random operand digit has ~10 equally likely
values, about ``log 10 ≈ 2.3`` nats of entropy, so predicting it costs ≈ log 10 nats (perplexity
≈ 10) however well the model is trained, and a mean over all tokens that includes those digits
stays bounded away from 0 nats (perplexity 1): over the whole problem the irreducible cost is the
prompt's entropy, ``log(#operators · #operand values²)`` nats. The answer and its end marker, in
contrast, are a deterministic function of the prompt: their conditional entropy is 0, so the mean
negative log-likelihood over answer tokens can approach 0 and the answer perplexity can approach
1. That is why :func:`answer_perplexity` (over ``answer_mask``) is the measure of having learned
arithmetic, and :func:`token_perplexity` mostly measures the operands' randomness.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from scratchformer.validation import (
    check_bool,
    check_choice,
    check_int,
    check_optional_int,
    check_real,
)

__all__ = [
    "IGNORE_INDEX",
    "OPERATORS",
    "ArithmeticBatch",
    "ArithmeticConfig",
    "ArithmeticSplits",
    "ArithmeticTokenizer",
    "ParsedProblem",
    "answer_perplexity",
    "encode_problems",
    "exact_match",
    "format_problem",
    "make_splits",
    "max_problem_length",
    "operand_range",
    "parse_problem",
    "solve",
    "split_of",
    "split_prompt",
    "token_perplexity",
]

OPERATORS = ("+", "-", "*")
SPLITS = ("train", "val", "test")
IGNORE_INDEX = -100  # the target id that F.cross_entropy skips by default
# Problem spaces up to this size are enumerated (exact sampling without replacement, "all"
# allowed); larger ones are sampled by rejection, which needs no memory proportional to the space.
ENUMERATE_LIMIT = 2_000_000
_RESERVED = set("0123456789+-*=")


@dataclass(frozen=True)
class ArithmeticConfig:
    """What problems exist and how many of each split to draw.

    ``n_*=None`` takes every problem of that split (only for spaces of at most ENUMERATE_LIMIT
    problems). ``test_fraction``/``val_fraction`` are the shares of unordered operand pairs held
    out for test/validation; the rest are training pairs.
    """

    max_digits: int = 2
    operators: tuple[str, ...] | str = ("+", "-")
    allow_negative_operands: bool = False
    end_marker: str = "$"
    n_train: int | None = 10_000
    n_val: int | None = 1_000
    n_test: int | None = 1_000
    val_fraction: float = 0.1
    test_fraction: float = 0.1

    def __post_init__(self) -> None:
        check_int("max_digits", self.max_digits, maximum=9)
        ops = self.operators
        if isinstance(ops, str):
            ops = tuple(ops)
        if not isinstance(ops, (tuple, list)) or not all(isinstance(o, str) for o in ops):
            raise TypeError(f"operators must be a sequence of str, got {self.operators!r}")
        ops = tuple(ops)
        if not ops:
            raise ValueError("operators must not be empty; expected a subset of ('+', '-', '*')")
        bad = [o for o in ops if o not in OPERATORS]
        if bad:
            raise ValueError(f"operators must be a subset of {OPERATORS}, got unknown {bad}")
        if len(set(ops)) != len(ops):
            raise ValueError(f"operators must not repeat, got {ops}")
        object.__setattr__(self, "operators", ops)
        check_bool("allow_negative_operands", self.allow_negative_operands)
        _check_end_marker(self.end_marker)
        for name in ("n_train", "n_val", "n_test"):
            check_optional_int(name, getattr(self, name), minimum=0)
        for name in ("val_fraction", "test_fraction"):
            check_real(name, getattr(self, name), minimum=0, maximum=1, min_inclusive=False,
                       max_inclusive=False)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                "val_fraction + test_fraction must be < 1 (training needs pairs), got "
                f"{self.val_fraction} + {self.test_fraction}"
            )


def _check_end_marker(end_marker: object) -> None:
    """Raise unless ``end_marker`` is one character that cannot be confused with the grammar."""
    if not isinstance(end_marker, str):
        raise TypeError(f"end_marker must be a str, got {type(end_marker).__name__}")
    if len(end_marker) != 1 or end_marker in _RESERVED:
        raise ValueError(
            f"end_marker must be one character other than digits, '+', '-', '*', '=', "
            f"got {end_marker!r}"
        )


def operand_range(cfg: ArithmeticConfig) -> tuple[int, int]:
    """Smallest and largest operand, inclusive: ``0..10^d-1``, or ``-(10^d-1)..10^d-1``."""
    hi = 10**cfg.max_digits - 1
    return (-hi if cfg.allow_negative_operands else 0), hi


def solve(a: int, op: str, b: int) -> int:
    """The exact integer value of ``a op b`` for ``op`` in ``+ - *``."""
    a, b = check_int("a", a, minimum=None), check_int("b", b, minimum=None)
    op = check_choice("op", op, OPERATORS)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    return a * b


def format_problem(a: int, op: str, b: int, end_marker: str = "$") -> str:
    """The full training string of one problem, e.g. ``format_problem(3, '-', -4) == '3--4=7$'``."""
    _check_end_marker(end_marker)
    return f"{a}{op}{b}={solve(a, op, b)}{end_marker}"


class ParsedProblem(NamedTuple):
    """The parts of a problem string; ``answer``/``end_marker`` are None when absent."""

    a: int
    op: str
    b: int
    answer: int | None
    end_marker: str | None


_PROBLEM_RE = re.compile(r"(-?\d+)([+\-*])(-?\d+)=(-?\d+)?([^0-9+\-*=])?", re.DOTALL)


def parse_problem(s: str) -> ParsedProblem:
    """Read ``a op b = [answer] [end]`` (e.g. ``'-4+7=3$'`` or the prompt ``'-4+7='``)."""
    if not isinstance(s, str):
        raise TypeError(f"s must be a str, got {type(s).__name__}")
    m = _PROBLEM_RE.fullmatch(s)
    if m is None:
        raise ValueError(f"s must look like 'a op b = answer end' (e.g. '3+5=8$'), got {s!r}")
    a, op, b, answer, end = m.groups()
    return ParsedProblem(int(a), op, int(b), None if answer is None else int(answer), end)


def split_prompt(problem: str) -> tuple[str, str]:
    """``'3+5=8$'`` -> ``('3+5=', '8$')``: what the model is given, and what it must generate."""
    if not isinstance(problem, str):
        raise TypeError(f"problem must be a str, got {type(problem).__name__}")
    k = problem.find("=")
    if k < 0:
        raise ValueError(f"problem must contain '=', got {problem!r}")
    return problem[: k + 1], problem[k + 1 :]


def max_problem_length(cfg: ArithmeticConfig) -> int:
    """Longest possible problem string (characters = tokens) under ``cfg``.

    A model reading whole problems needs ``context_len >= max_problem_length(cfg) - 1``.
    """
    lo, hi = operand_range(cfg)
    operand = max(len(str(lo)), len(str(hi)))
    # + - * are (bi)linear, so the extreme results over the operand box sit at its corners
    results = [solve(x, op, y) for op in cfg.operators for x in (lo, hi) for y in (lo, hi)]
    answer = max(len(str(min(results))), len(str(max(results))))
    return 2 * operand + 1 + 1 + answer + 1


# --- the held-out split: a keyed hash of the unordered operand pair ---------------------------

_M64 = 0xFFFFFFFFFFFFFFFF


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays: a bijection whose outputs look uniform."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _pair_uniform(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """A number in [0, 1) per unordered pair {a, b}, fixed by ``seed``, symmetric in a and b."""
    lo = np.minimum(a, b).astype(np.int64) + (1 << 31)
    hi = np.maximum(a, b).astype(np.int64) + (1 << 31)
    x = (lo.astype(np.uint64) << np.uint64(32)) | hi.astype(np.uint64)
    key = _mix64(np.array([seed & _M64], dtype=np.uint64))[0]
    h = _mix64(x ^ key)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _split_index(u: np.ndarray, cfg: ArithmeticConfig) -> np.ndarray:
    """0 (train), 1 (val) or 2 (test) for hash values ``u``: test takes the lowest share."""
    out = np.zeros(u.shape, dtype=np.int64)
    out[u < cfg.test_fraction + cfg.val_fraction] = 1
    out[u < cfg.test_fraction] = 2
    return out


def split_of(a: int, b: int, cfg: ArithmeticConfig, seed: int) -> str:
    """Which split ('train', 'val' or 'test') the unordered operand pair {a, b} belongs to."""
    seed = check_int("seed", seed, minimum=0)
    for name, v in (("a", a), ("b", b)):
        if not -(2**31) < check_int(name, v, minimum=None) < 2**31:
            raise ValueError(f"{name} must satisfy |{name}| < 2**31, got {v}")
    u = _pair_uniform(np.array([a]), np.array([b]), seed)
    return SPLITS[int(_split_index(u, cfg)[0])]


@dataclass
class ArithmeticSplits:
    """Problem strings (with end markers) of the three splits, disjoint in unordered pairs."""

    train: list[str]
    val: list[str]
    test: list[str]


def _enumerated(cfg: ArithmeticConfig, seed: int) -> list[list[str]]:
    """Every problem, grouped by split, then sampled without replacement (small spaces)."""
    lo, hi = operand_range(cfg)
    values = np.arange(lo, hi + 1, dtype=np.int64)
    a = np.repeat(values, values.size)
    b = np.tile(values, values.size)
    which = _split_index(_pair_uniform(a, b, seed), cfg)
    out = []
    for k, name in enumerate(SPLITS):
        pa, pb = a[which == k], b[which == k]
        available = len(cfg.operators) * pa.size
        n = getattr(cfg, f"n_{name}")
        if n is not None and n > available:
            raise ValueError(
                f"n_{name}={n} exceeds the {available} distinct {name} problems of this config; "
                f"expected at most {available} (or None for all of them)"
            )
        rng = np.random.default_rng([seed, k])
        idx = rng.permutation(available) if n is None else rng.choice(available, n, replace=False)
        ops, pairs = np.divmod(idx, max(pa.size, 1))
        out.append(
            [
                format_problem(int(pa[j]), cfg.operators[o], int(pb[j]), cfg.end_marker)
                for o, j in zip(ops.tolist(), pairs.tolist(), strict=True)
            ]
        )
    return out


def _rejection_sampled(cfg: ArithmeticConfig, seed: int, space: int) -> list[list[str]]:
    """Distinct random problems of each split, drawn uniformly and kept if in the split."""
    lo, hi = operand_range(cfg)
    shares = (1.0 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction)
    out = []
    for k, name in enumerate(SPLITS):
        n = getattr(cfg, f"n_{name}")
        expected = shares[k] * space
        if n is None or n > expected / 2:
            raise ValueError(
                f"n_{name}={n}: with {space} problems (more than {ENUMERATE_LIMIT}, so sampled), "
                f"n_{name} must be an int of at most half the ~{int(expected)} {name} problems"
            )
        rng = np.random.default_rng([seed, k])
        seen: set[tuple[int, int, int]] = set()
        problems: list[str] = []
        chunk = max(1024, int(2 * n / shares[k]))
        while len(problems) < n:
            o = rng.integers(0, len(cfg.operators), chunk)
            a = rng.integers(lo, hi + 1, chunk)
            b = rng.integers(lo, hi + 1, chunk)
            keep = _split_index(_pair_uniform(a, b, seed), cfg) == k
            for key in zip(o[keep].tolist(), a[keep].tolist(), b[keep].tolist(), strict=True):
                if key in seen:
                    continue
                seen.add(key)
                o_k, a_k, b_k = key
                problems.append(format_problem(a_k, cfg.operators[o_k], b_k, cfg.end_marker))
                if len(problems) == n:
                    break
        out.append(problems)
    return out


def make_splits(cfg: ArithmeticConfig, seed: int = 0) -> ArithmeticSplits:
    """Draw train/val/test problems; no unordered operand pair is shared between splits.

    Each split holds distinct problems in random order. Its sample depends only on ``seed``
    and that split's own settings (separate random streams), so changing ``n_train`` leaves
    the test set unchanged.
    """
    if not isinstance(cfg, ArithmeticConfig):
        raise TypeError(f"cfg must be an ArithmeticConfig, got {type(cfg).__name__}")
    seed = check_int("seed", seed, minimum=0)
    lo, hi = operand_range(cfg)
    space = len(cfg.operators) * (hi - lo + 1) ** 2
    if space <= ENUMERATE_LIMIT:
        train, val, test = _enumerated(cfg, seed)
    else:
        train, val, test = _rejection_sampled(cfg, seed, space)
    return ArithmeticSplits(train, val, test)


# --- tokenizer and batches --------------------------------------------------------------------


class ArithmeticTokenizer:
    """Character-level tokens with a fixed vocabulary: ``0-9 + - * =``, the end marker, pad.

    The vocabulary does not depend on which operators a config uses, so models trained on
    different configs share token ids. Ids: digit ``d`` -> ``d``, ``+ - * =`` -> 10..13, end
    marker -> 14, pad -> 15.
    """

    PAD = "<pad>"

    def __init__(self, end_marker: str = "$") -> None:
        _check_end_marker(end_marker)
        self.end_marker = end_marker
        self.tokens: tuple[str, ...] = (*"0123456789", "+", "-", "*", "=", end_marker, self.PAD)
        self._ids = {t: i for i, t in enumerate(self.tokens[:-1])}
        self.pad_id = len(self.tokens) - 1
        self.end_id = self._ids[end_marker]
        self.eq_id = self._ids["="]

    @property
    def vocab_size(self) -> int:
        """Number of token ids (16)."""
        return len(self.tokens)

    def encode(self, s: str) -> list[int]:
        """Token ids of the characters of ``s``; an unknown character raises ValueError."""
        if not isinstance(s, str):
            raise TypeError(f"s must be a str, got {type(s).__name__}")
        ids = []
        for i, ch in enumerate(s):
            if ch not in self._ids:
                raise ValueError(
                    f"unknown character {ch!r} at position {i} of {s!r}; expected one of "
                    f"{''.join(self.tokens[:-1])!r}"
                )
            ids.append(self._ids[ch])
        return ids

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """The string of token ids ``ids``, dropping pads; an id outside the vocabulary raises."""
        if isinstance(ids, Tensor):
            ids = ids.reshape(-1).tolist()
        chars = []
        for i in ids:
            if not 0 <= int(i) < self.vocab_size:
                raise ValueError(f"token id {i} outside the vocabulary 0..{self.vocab_size - 1}")
            if int(i) != self.pad_id:
                chars.append(self.tokens[int(i)])
        return "".join(chars)


@dataclass
class ArithmeticBatch:
    """GPT inputs/targets (B, T) and where the targets are answer tokens.

    ``targets[b, t]`` is the token after ``inputs[b, t]``, ``IGNORE_INDEX`` (-100) at padding;
    ``answer_mask`` is True exactly where the target is an answer character or end marker.
    """

    inputs: Tensor
    targets: Tensor
    answer_mask: Tensor

    def to(self, device: torch.device | str) -> ArithmeticBatch:
        """The same batch on ``device``."""
        return ArithmeticBatch(
            self.inputs.to(device), self.targets.to(device), self.answer_mask.to(device)
        )


def encode_problems(
    problems: Sequence[str],
    tokenizer: ArithmeticTokenizer,
    context_len: int,
    pack: bool = False,
    device: torch.device | str | None = None,
) -> ArithmeticBatch:
    """Turn problem strings into next-token (inputs, targets, answer_mask) of shape (B, T).

    Unpacked: one problem per row (needs ``len(problem) - 1 <= context_len``). ``pack=True``
    puts as many whole problems in a row as fit, so a row is never cut mid-problem and every
    answer is scored with its prompt in view. Rows are padded with the pad id (inputs) and
    IGNORE_INDEX (targets).
    """
    if isinstance(problems, str) or not isinstance(problems, Sequence):
        raise TypeError(f"problems must be a sequence of str, got {type(problems).__name__}")
    if len(problems) == 0:
        raise ValueError("problems must not be empty")
    if not isinstance(tokenizer, ArithmeticTokenizer):
        raise TypeError(f"tokenizer must be an ArithmeticTokenizer, got {type(tokenizer).__name__}")
    context_len = check_int("context_len", context_len)

    rows: list[tuple[list[int], list[bool]]] = []  # (ids, is-answer flag per character)
    ids_row: list[int] = []
    flags_row: list[bool] = []
    for i, s in enumerate(problems):
        if not isinstance(s, str) or "=" not in s:
            raise ValueError(f"problems[{i}] must be a problem string with '=', got {s!r}")
        ids = tokenizer.encode(s)
        if len(ids) - 1 > context_len:
            raise ValueError(
                f"problems[{i}] {s!r} has {len(ids)} tokens; context_len={context_len} fits "
                f"problems of at most {context_len + 1}"
            )
        k = s.index("=")
        flags = [j > k for j in range(len(s))]
        if pack and len(ids_row) + len(ids) - 1 > context_len:
            rows.append((ids_row, flags_row))
            ids_row, flags_row = [], []
        ids_row += ids
        flags_row += flags
        if not pack:
            rows.append((ids_row, flags_row))
            ids_row, flags_row = [], []
    if ids_row:
        rows.append((ids_row, flags_row))

    B, T = len(rows), context_len
    inputs = torch.full((B, T), tokenizer.pad_id, dtype=torch.long)
    targets = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.bool)
    for r, (ids, flags) in enumerate(rows):
        n = len(ids) - 1
        inputs[r, :n] = torch.tensor(ids[:-1])
        targets[r, :n] = torch.tensor(ids[1:])
        mask[r, :n] = torch.tensor(flags[1:])
    if device is not None:
        inputs, targets, mask = inputs.to(device), targets.to(device), mask.to(device)
    return ArithmeticBatch(inputs, targets, mask)


# --- metrics ----------------------------------------------------------------------------------


def _mean_nll(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Mean of -log softmax(logits)[target] over positions where ``mask`` is True."""
    if not isinstance(logits, Tensor) or logits.ndim < 2 or not logits.is_floating_point():
        raise ValueError("logits must be a floating tensor of shape (..., V)")
    if not isinstance(targets, Tensor) or targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"targets must have shape logits.shape[:-1] = {tuple(logits.shape[:-1])}, "
            f"got {tuple(targets.shape) if isinstance(targets, Tensor) else type(targets)}"
        )
    if mask.shape != targets.shape or mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be a bool tensor of shape {tuple(targets.shape)}, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )
    mask = mask & (targets != IGNORE_INDEX)
    if not mask.any():
        raise ValueError("no positions to score: the mask selects no (non-pad) target")
    V = logits.shape[-1]
    chosen = targets[mask]
    if (chosen < 0).any() or (chosen >= V).any():
        raise ValueError(f"targets must be in 0..{V - 1} or {IGNORE_INDEX}")
    logp = torch.log_softmax(logits[mask].float(), dim=-1)
    return -logp.gather(-1, chosen[:, None]).mean()


def token_perplexity(logits: Tensor, targets: Tensor) -> float:
    """``exp(mean NLL)`` over every non-pad target: bounded below by the operands' randomness."""
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    everywhere = torch.ones_like(targets, dtype=torch.bool)
    return math.exp(float(_mean_nll(logits, targets, everywhere)))


def answer_perplexity(logits: Tensor, targets: Tensor, answer_mask: Tensor) -> float:
    """``exp(mean NLL)`` over answer tokens (after '=', end marker included): 1 when solved."""
    if not isinstance(answer_mask, Tensor):
        raise TypeError(f"answer_mask must be a torch.Tensor, got {type(answer_mask).__name__}")
    return math.exp(float(_mean_nll(logits, targets, answer_mask)))


def exact_match(predicted_strings: Sequence[str], problems: Sequence[str]) -> float:
    """Share of problems whose generated completion starts with the whole true answer.

    ``predicted_strings[i]`` is what the model wrote after the prompt (``'3+5='``). It is right
    when it begins with the correct answer followed by the end marker (if the problem has one);
    anything generated after the end marker is ignored.
    """
    for name, seq in (("predicted_strings", predicted_strings), ("problems", problems)):
        if isinstance(seq, str) or not isinstance(seq, Sequence):
            raise TypeError(f"{name} must be a sequence of str, got {type(seq).__name__}")
    if len(predicted_strings) != len(problems):
        raise ValueError(
            f"predicted_strings has {len(predicted_strings)} items but problems has {len(problems)}"
        )
    if not problems:
        raise ValueError("problems must not be empty")
    correct = 0
    for i, (pred, problem) in enumerate(zip(predicted_strings, problems, strict=True)):
        if not isinstance(pred, str):
            raise TypeError(f"predicted_strings[{i}] must be a str, got {type(pred).__name__}")
        a, op, b, _, end = parse_problem(problem)
        truth = f"{solve(a, op, b)}{end or ''}"
        correct += pred.startswith(truth) if end else pred == truth
    return correct / len(problems)


# --- a task: splits encoded for training and evaluation -------------------------------------

LOSS_ON = ("all", "answer")
"""What a model's training loss covers: every predicted token, or only the answer tokens."""


@dataclass
class ArithmeticTask:
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


def build_task(cfg: ArithmeticConfig, *, seed: int = 0, context_len: int = 0,
               loss_on: str = "all") -> ArithmeticTask:
    """Draw the splits of ``cfg`` with ``seed`` and encode them, one problem per row.

    ``context_len`` 0 fits the longest problem; ``loss_on="answer"`` hides every training
    target but the answer's from the loss.
    """
    check_int("context_len", context_len, minimum=0)
    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {LOSS_ON}, got {loss_on!r}")
    splits = make_splits(cfg, seed=seed)
    if not splits.train:
        raise ValueError("the training split is empty; raise n_train or max_digits")
    tok = ArithmeticTokenizer(cfg.end_marker)
    longest = max_problem_length(cfg)
    context = context_len or longest
    if context < longest:
        raise ValueError(f"context_len must be >= {longest} (the longest problem), "
                         f"got {context}")
    seq_len = longest - 1
    train = encode_problems(splits.train, tok, seq_len)
    targets = train.targets
    if loss_on == "answer":
        targets = torch.where(train.answer_mask, targets, IGNORE_INDEX)
    return ArithmeticTask(
        splits=splits, tokenizer=tok, seq_len=seq_len, context_len=context,
        train=train, train_targets=targets,
        train_tokens=(train.targets != IGNORE_INDEX).sum(1),
        val=encode_problems(splits.val, tok, seq_len),
        test=encode_problems(splits.test, tok, seq_len),
    )


class TaskBatches:
    """Random training rows of a task drawn from a generator, ``(inputs, targets, n_tokens)``
    per call: the `Trainer`'s ``train_batches`` signature ``(step, micro, generator)``."""

    def __init__(self, task: ArithmeticTask, batch_size: int) -> None:
        check_int("batch_size", batch_size)
        self.task, self.batch_size = task, batch_size

    def __call__(self, step: int, micro: int, generator: torch.Generator
                 ) -> tuple[Tensor, Tensor, int]:
        task = self.task
        rows = torch.randint(0, task.train.inputs.shape[0], (self.batch_size,),
                             generator=generator)
        n_tokens = int(task.train_tokens[rows].sum())
        return task.train.inputs[rows], task.train_targets[rows], n_tokens


def token_ppl_floor(cfg: ArithmeticConfig, problems: Sequence[str]) -> float:
    """Lowest all-token perplexity any model can reach on ``problems`` of ``cfg``.

    By the chain rule the summed NLL of a problem's targets is at least the prompt's entropy
    minus the first character's, ``log #ops + 2 log #operand values - H(first char)`` (answers
    add nothing); spread over the mean number of targets, that bounds the per-token
    perplexity. Assumes operator and operands uniform and independent, as the generator draws
    them.
    """
    lo, hi = operand_range(cfg)
    values = hi - lo + 1
    firsts: dict[str, int] = {}
    for v in range(lo, hi + 1):
        c = str(v)[0]
        firsts[c] = firsts.get(c, 0) + 1
    p = np.array(list(firsts.values()), dtype=float) / values
    h_first = float(-(p * np.log(p)).sum())
    h_prompt = math.log(len(cfg.operators)) + 2 * math.log(values)
    mean_targets = float(np.mean([len(s) - 1 for s in problems]))
    return math.exp((h_prompt - h_first) / mean_targets)


__all__ += ["LOSS_ON", "ArithmeticTask", "TaskBatches", "build_task", "token_ppl_floor"]
