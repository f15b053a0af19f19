"""Arithmetic data: generation, leakage-free splits, tokenizer, batches and metrics."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchformer.data.arithmetic import (
    IGNORE_INDEX,
    ArithmeticConfig,
    ArithmeticTokenizer,
    answer_perplexity,
    encode_problems,
    exact_match,
    format_problem,
    make_splits,
    max_problem_length,
    operand_range,
    parse_problem,
    solve,
    split_of,
    split_prompt,
    token_perplexity,
)

SMALL = ArithmeticConfig(max_digits=2, operators="+-*", n_train=3000, n_val=300, n_test=300)
NEG = ArithmeticConfig(
    max_digits=1,
    operators="+-*",
    allow_negative_operands=True,
    n_train=None,
    n_val=None,
    n_test=None,
)
# 3 operators × 1999² operand pairs > ENUMERATE_LIMIT: exercises the rejection sampler
BIG = ArithmeticConfig(
    max_digits=3,
    operators="+-*",
    allow_negative_operands=True,
    n_train=2000,
    n_val=200,
    n_test=200,
    end_marker="\n",
)
CONFIGS = [SMALL, NEG, BIG]


def _unordered_pairs(problems: list[str]) -> set[frozenset[int]]:
    """{a, b} of every problem, as a set (so (a, b) and (b, a) coincide)."""
    out = set()
    for s in problems:
        a, _, b, _, _ = parse_problem(s)
        out.add(frozenset((a, b)))
    return out


@pytest.mark.parametrize("cfg", CONFIGS, ids=["small", "negatives", "sampled"])
def test_same_seed_same_splits_other_seed_differs(cfg: ArithmeticConfig) -> None:
    """make_splits is a function of (cfg, seed)."""
    a, b, c = make_splits(cfg, 0), make_splits(cfg, 0), make_splits(cfg, 1)
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)
    assert a.test != c.test and set(a.train) != set(c.train)


@pytest.mark.parametrize("cfg", CONFIGS, ids=["small", "negatives", "sampled"])
def test_every_answer_is_correct(cfg: ArithmeticConfig) -> None:
    """Parse each generated problem and recompute its answer; operands and ops obey cfg."""
    lo, hi = operand_range(cfg)
    splits = make_splits(cfg, 3)
    for problems in (splits.train, splits.val, splits.test):
        for s in problems:
            a, op, b, answer, end = parse_problem(s)
            assert answer == solve(a, op, b)
            assert end == cfg.end_marker
            assert op in cfg.operators
            assert lo <= a <= hi and lo <= b <= hi
            assert len(s) <= max_problem_length(cfg)


@pytest.mark.parametrize("cfg", CONFIGS, ids=["small", "negatives", "sampled"])
def test_no_unordered_pair_leaks_between_splits(cfg: ArithmeticConfig) -> None:
    """No unordered operand pair of test occurs in train or val (with any operator)."""
    splits = make_splits(cfg, 0)
    train, val, test = (_unordered_pairs(p) for p in (splits.train, splits.val, splits.test))
    assert test and val and train
    assert not test & train
    assert not test & val
    assert not val & train
    # and split_of decides membership for every pair, in both orders
    for name, problems in (
        ("train", splits.train[:200]),
        ("val", splits.val),
        ("test", splits.test),
    ):
        for s in problems:
            a, _, b, _, _ = parse_problem(s)
            assert split_of(a, b, cfg, 0) == split_of(b, a, cfg, 0) == name


def test_problems_within_a_split_are_distinct_and_counts_honoured() -> None:
    """Sampling is without replacement and returns exactly n_* problems."""
    for cfg in (SMALL, BIG):
        splits = make_splits(cfg, 0)
        for problems, n in (
            (splits.train, cfg.n_train),
            (splits.val, cfg.n_val),
            (splits.test, cfg.n_test),
        ):
            assert len(problems) == n
            assert len(set(problems)) == n


def test_none_takes_every_problem_of_the_split() -> None:
    """n_*=None enumerates the whole split: the three splits partition the problem space."""
    splits = make_splits(NEG, 0)
    lo, hi = operand_range(NEG)
    everything = {
        format_problem(a, op, b, NEG.end_marker)
        for op in NEG.operators
        for a in range(lo, hi + 1)
        for b in range(lo, hi + 1)
    }
    parts = [set(splits.train), set(splits.val), set(splits.test)]
    assert sum(len(p) for p in parts) == len(everything)
    assert set().union(*parts) == everything


def test_held_out_share_matches_the_fraction() -> None:
    """2-digit operands: 5050 unordered pairs, ~10% of them hashed to test, ~10% to val."""
    cfg = replace(SMALL, n_train=None, n_val=None, n_test=None)
    splits = make_splits(cfg, 0)
    n_pairs = 100 * 101 // 2
    sd = math.sqrt(n_pairs * 0.1 * 0.9)  # binomial spread of a 10% share
    for problems in (splits.val, splits.test):
        assert abs(len(_unordered_pairs(problems)) - 0.1 * n_pairs) < 5 * sd


def test_test_set_does_not_depend_on_train_size() -> None:
    """Each split has its own random stream: changing n_train leaves val and test alone."""
    a = make_splits(SMALL, 0)
    b = make_splits(replace(SMALL, n_train=100), 0)
    assert a.test == b.test and a.val == b.val
    assert len(b.train) == 100


def test_subtraction_keeps_operand_order_and_negative_results() -> None:
    """Without negative operands, a-b with a<b still occurs and its answer is negative."""
    cfg = replace(SMALL, operators="-")
    answers = [parse_problem(s).answer for s in make_splits(cfg, 0).train]
    assert min(answers) < 0 < max(answers)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_digits": 0}, ValueError, "max_digits must be >= 1, got 0"),
        ({"max_digits": 2.0}, TypeError, "max_digits must be an int"),
        ({"operators": ()}, ValueError, "operators must not be empty"),
        ({"operators": "+/"}, ValueError, r"unknown \['/'\]"),
        ({"operators": "++"}, ValueError, "must not repeat"),
        ({"operators": (1,)}, TypeError, "operators must be a sequence of str"),
        ({"end_marker": "="}, ValueError, "end_marker must be one character"),
        ({"end_marker": "7"}, ValueError, "end_marker must be one character"),
        ({"end_marker": "$$"}, ValueError, "end_marker must be one character"),
        ({"n_train": -1}, ValueError, "n_train must be >= 0, got -1"),
        ({"n_val": 1.5}, TypeError, "n_val must be an int, got float 1.5"),
        ({"test_fraction": 0.0}, ValueError, "test_fraction must be > 0, got 0.0"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, ValueError, "must be < 1"),
        ({"allow_negative_operands": 1}, TypeError, "allow_negative_operands must be a bool"),
    ],
)
def test_config_validation(kwargs: dict, error: type, match: str) -> None:
    """Bad settings fail at construction, naming the field, the value and what was expected."""
    with pytest.raises(error, match=match):
        ArithmeticConfig(**kwargs)


def test_impossible_requests_fail_early() -> None:
    """Asking for more problems than a split has, or for 'all' of a sampled space, raises."""
    with pytest.raises(ValueError, match=r"n_test=5000 exceeds the \d+ distinct test problems"):
        make_splits(replace(SMALL, n_test=5000), 0)
    with pytest.raises(ValueError, match="n_train=None"):
        make_splits(replace(BIG, n_train=None), 0)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        make_splits(SMALL, -1)
    with pytest.raises(TypeError, match="cfg must be an ArithmeticConfig"):
        make_splits({"max_digits": 2}, 0)  # type: ignore[arg-type]


def test_max_problem_length_is_reached() -> None:
    """The bound is attained: 1-digit '*' with negatives gives '-9*-9=81$' (9 chars), etc."""
    for cfg in (NEG, replace(NEG, allow_negative_operands=False, operators="+")):
        splits = make_splits(cfg, 0)
        longest = max(len(s) for s in splits.train + splits.val + splits.test)
        assert longest == max_problem_length(cfg)
    assert max_problem_length(replace(SMALL, operators="*")) == len("99*99=9801$")


def test_parse_and_solve() -> None:
    """Signs and operators are read unambiguously; prompts parse without an answer."""
    assert parse_problem("3--4=7$") == (3, "-", -4, 7, "$")
    assert parse_problem("-4+7=3\n") == (-4, "+", 7, 3, "\n")
    assert parse_problem("-12*-3=") == (-12, "*", -3, None, None)
    assert solve(-12, "*", -3) == 36 and solve(3, "-", 5) == -2
    assert split_prompt("10-2=8$") == ("10-2=", "8$")
    for bad in ("3+5", "3/5=1$", "3+5=8$$", "=8$", ""):
        with pytest.raises(ValueError, match="s must look like"):
            parse_problem(bad)
    with pytest.raises(ValueError, match="op must be one of"):
        solve(1, "/", 2)


alphabet = st.text(alphabet="0123456789+-*=$", max_size=40)


@given(s=alphabet)
def test_tokenizer_round_trip(s: str) -> None:
    """decode(encode(s)) == s for any string over the vocabulary; ids are within range."""
    tok = ArithmeticTokenizer("$")
    ids = tok.encode(s)
    assert tok.decode(ids) == s
    assert all(0 <= i < tok.vocab_size for i in ids) and tok.pad_id not in ids


def test_tokenizer_vocabulary_and_errors() -> None:
    """Fixed ids (digit d -> d), pads are dropped, unknown characters and ids raise."""
    tok = ArithmeticTokenizer("\n")
    assert tok.vocab_size == 16
    assert tok.encode("0129+-*=\n") == [0, 1, 2, 9, 10, 11, 12, 13, 14]
    assert tok.decode([1, tok.pad_id, 2]) == "12"
    assert tok.decode(torch.tensor([[3, 10], [4, 14]])) == "3+4\n"
    with pytest.raises(ValueError, match=r"unknown character '\$' at position 3"):
        tok.encode("1+2$")
    with pytest.raises(ValueError, match="token id 16 outside the vocabulary"):
        tok.decode([16])
    with pytest.raises(ValueError, match="end_marker"):
        ArithmeticTokenizer("+")


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 1000), pack=st.booleans(), n=st.integers(1, 12))
def test_answer_mask_covers_exactly_the_answer(seed: int, pack: bool, n: int) -> None:
    """Masked targets decode to the answers + end markers; unmasked non-pad ones to the prompts."""
    problems = make_splits(NEG, seed).train[:n]
    tok = ArithmeticTokenizer(NEG.end_marker)
    T = max_problem_length(NEG) - 1 + (7 if pack else 0)
    batch = encode_problems(problems, tok, T, pack=pack)
    assert batch.inputs.shape == batch.targets.shape == batch.answer_mask.shape
    assert batch.inputs.shape[1] == T
    if not pack:
        assert batch.inputs.shape[0] == n
    valid = batch.targets != IGNORE_INDEX
    assert not (batch.answer_mask & ~valid).any()  # pads never in the mask
    assert (batch.inputs[~valid] == tok.pad_id).all()
    # inputs and targets are the same stream shifted by one
    assert (batch.inputs[:, 1:][valid[:, 1:]] == batch.targets[:, :-1][valid[:, 1:]]).all()
    # answers in row order: mask runs are contiguous per problem
    completions = [split_prompt(s)[1] for s in problems]
    got = []
    for row_t, row_m in zip(batch.targets, batch.answer_mask, strict=True):
        chars = [tok.decode([int(t)]) if int(t) != IGNORE_INDEX else "" for t in row_t]
        run = ""
        for ch, m in zip(chars, row_m.tolist(), strict=True):
            if m:
                run += ch
                if ch == NEG.end_marker:
                    got.append(run)
                    run = ""
    assert got == completions
    # whole rows reassemble the problems (first char of each row is input only)
    rows = [
        tok.decode(batch.inputs[r, :1]) + tok.decode(batch.targets[r][valid[r]])
        for r in range(len(batch.inputs))
    ]
    assert "".join(rows) == "".join(problems)


def test_encode_problems_packing_and_errors() -> None:
    """Packing fits several whole problems per row; too-long problems and bad inputs raise."""
    tok = ArithmeticTokenizer()
    problems = ["1+1=2$", "2+2=4$", "3+3=6$"]
    packed = encode_problems(problems, tok, context_len=11, pack=True)
    assert packed.inputs.shape == (2, 11)  # 6 + 6 chars = 12 = context_len + 1 fit in one row
    assert tok.decode(packed.inputs[0]) == "1+1=2$2+2=4"
    assert packed.answer_mask[0].nonzero().flatten().tolist() == [3, 4, 9, 10]
    assert packed.answer_mask.dtype == torch.bool and packed.targets.dtype == torch.long
    with pytest.raises(ValueError, match="context_len=4 fits problems of at most 5"):
        encode_problems(problems, tok, context_len=4)
    with pytest.raises(ValueError, match=r"problems\[1\] must be a problem string"):
        encode_problems(["1+1=2$", "12"], tok, context_len=8)
    with pytest.raises(ValueError, match="problems must not be empty"):
        encode_problems([], tok, context_len=8)
    with pytest.raises(ValueError, match="context_len must be >= 1, got 0"):
        encode_problems(problems, tok, context_len=0)
    assert encode_problems(problems, tok, 8).to(torch.device("cpu")).inputs.shape == (3, 8)


def test_perplexity_of_uniform_and_perfect_logits() -> None:
    """Uniform logits over V tokens give perplexity V; confident correct logits give ~1."""
    tok = ArithmeticTokenizer()
    batch = encode_problems(["12+7=19$", "3*4=12$"], tok, 9)
    V = tok.vocab_size
    uniform = torch.zeros(*batch.targets.shape, V)
    assert token_perplexity(uniform, batch.targets) == pytest.approx(V)
    assert answer_perplexity(uniform, batch.targets, batch.answer_mask) == pytest.approx(V)
    perfect = 50.0 * F.one_hot(batch.targets.clamp_min(0), V).float()
    assert token_perplexity(perfect, batch.targets) == pytest.approx(1.0, abs=1e-12)
    assert answer_perplexity(perfect, batch.targets, batch.answer_mask) == pytest.approx(1.0)


def test_perplexity_matches_cross_entropy_and_separates_answer_from_prompt() -> None:
    """Random logits: token perplexity = exp(F.cross_entropy); answer perplexity by hand."""
    g = torch.Generator().manual_seed(0)
    tok = ArithmeticTokenizer()
    batch = encode_problems(make_splits(SMALL, 0).test[:20], tok, 10)
    logits = torch.randn(*batch.targets.shape, tok.vocab_size, generator=g, dtype=torch.float64)
    ce = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten())  # ignores -100
    assert token_perplexity(logits, batch.targets) == pytest.approx(math.exp(float(ce)))
    m = batch.answer_mask
    by_hand = -torch.log_softmax(logits, -1)[m].gather(-1, batch.targets[m][:, None]).mean()
    assert answer_perplexity(logits, batch.targets, m) == pytest.approx(math.exp(float(by_hand)))
    # a model that knows every answer but guesses operand digits uniformly: answer ppl 1, token > 1
    knows = torch.where(m[..., None], 50.0 * F.one_hot(batch.targets.clamp_min(0), 16), 0.0)
    assert answer_perplexity(knows, batch.targets, m) == pytest.approx(1.0)
    assert token_perplexity(knows, batch.targets) > 3.0


def test_perplexity_errors() -> None:
    """Shape mismatch, empty selection and out-of-vocabulary targets raise."""
    logits = torch.zeros(2, 3, 16)
    targets = torch.full((2, 3), IGNORE_INDEX)
    with pytest.raises(ValueError, match="no positions to score"):
        token_perplexity(logits, targets)
    with pytest.raises(ValueError, match="targets must have shape"):
        token_perplexity(logits, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        answer_perplexity(logits, torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"targets must be in 0\.\.15"):
        token_perplexity(logits, torch.full((2, 3), 16))


def test_exact_match() -> None:
    """A completion counts if it starts with answer + end marker; trailing text is ignored."""
    problems = ["3+5=8$", "10-12=-2$", "4*4=16$", "1+1=2$"]
    preds = ["8$77", "-2$", "16", "3$"]  # right, right, no end marker, wrong
    assert exact_match(preds, problems) == pytest.approx(0.5)
    assert exact_match(["8"], ["3+5=8"]) == 1.0  # problem without end marker: exact string
    with pytest.raises(ValueError, match="predicted_strings has 1 items but problems has 2"):
        exact_match(["8$"], problems[:2])
    with pytest.raises(ValueError, match="problems must not be empty"):
        exact_match([], [])
