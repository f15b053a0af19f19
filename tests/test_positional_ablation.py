"""Without positional encoding the encoder is blind to order (positional-ablation.md).

Checks, in the order of the derivation: attention and blocks are permutation-equivariant, the
no-PE encoder's logits are permutation-invariant (and the with-PE ones are not), such a model
scores exactly 1/2 on paired data, a causal mask leaks position, the task generators have the
properties the argument needs, and training shows the gap.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchformer.data.synthetic import (
    TASKS,
    is_palindrome,
    is_sorted,
    make_task,
    palindrome_task,
    sorted_task,
)
from scratchformer.experiments.registry import get
from scratchformer.models.encoder import EncoderClassifier
from scratchformer.nn.attention import MultiHeadAttention
from scratchformer.nn.block import TransformerBlock

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- equivariance of the parts, invariance of the whole ---------------------------------------


def test_attention_is_permutation_equivariant():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).to(F64)
    x = torch.randn(3, 7, 16, dtype=F64, generator=_gen(1))
    perm = torch.randperm(7, generator=_gen(2))
    torch.testing.assert_close(mha(x[:, perm]), mha(x)[:, perm], atol=1e-12, rtol=0)
    # a key-padding mask that moves with its tokens keeps the property (P M P^T)
    keep = torch.rand(3, 7, generator=_gen(3)) > 0.4
    keep[:, 0] = True
    out = mha(x, attn_mask=keep[:, None, None, :])
    out_p = mha(x[:, perm], attn_mask=keep[:, perm][:, None, None, :])
    torch.testing.assert_close(out_p, out[:, perm], atol=1e-12, rtol=0)


@pytest.mark.parametrize("norm", ["layer", "rms"])
@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_blocks_are_permutation_equivariant(norm, norm_position):
    torch.manual_seed(0)
    block = TransformerBlock.build(16, 2, 24, norm=norm, norm_position=norm_position).to(F64)
    x = torch.randn(2, 9, 16, dtype=F64, generator=_gen(4))
    perm = torch.randperm(9, generator=_gen(5))
    torch.testing.assert_close(block(x[:, perm]), block(x)[:, perm], atol=1e-12, rtol=0)


def _encoder(positional: str, pooling: str = "mean", seed: int = 0) -> EncoderClassifier:
    """A random float64 encoder in eval mode, built without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EncoderClassifier(11, 2, 32, 4, 2, 12, positional=positional, pooling=pooling)
        if positional == "learned":  # make the learned table as large as the sinusoidal one
            torch.nn.init.normal_(model.positions.weight, std=1.0)
    return model.to(F64).eval()


_MODELS = {
    (pe, pool): _encoder(pe, pool)
    for pe in ("none", "sinusoidal", "learned")
    for pool in ("mean", "cls")
}


@st.composite
def _tokens_and_perm(draw):
    length = draw(st.integers(2, 12))
    tokens = draw(st.lists(st.integers(0, 10), min_size=length, max_size=length))
    perm = draw(st.permutations(range(length)))
    return torch.tensor([tokens]), torch.tensor(perm)


@settings(max_examples=40, deadline=None)
@given(_tokens_and_perm(), st.sampled_from(["mean", "cls"]))
def test_no_pe_encoder_logits_are_permutation_invariant(case, pooling):
    tokens, perm = case
    with torch.no_grad():
        logits = _MODELS[("none", pooling)](tokens)
        permuted = _MODELS[("none", pooling)](tokens[:, perm])
    assert (logits - permuted).abs().max().item() < 1e-12


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pe_encoder_logits_change_when_tokens_are_permuted(positional, pooling):
    tokens = torch.arange(10)[None]  # all distinct, so any non-identity perm changes the input
    perm = torch.roll(torch.arange(10), 3)
    with torch.no_grad():
        model = _MODELS[(positional, pooling)]
        change = (model(tokens) - model(tokens[:, perm])).abs().max().item()
        # the same check on the no-PE twin is at rounding level
        twin = _MODELS[("none", pooling)]
        twin_change = (twin(tokens) - twin(tokens[:, perm])).abs().max().item()
    assert change > 1e-3
    assert twin_change < 1e-12


@pytest.mark.parametrize("task", TASKS)
def test_invariant_model_scores_exactly_half_on_paired_data(task):
    tokens, labels = make_task(task, 600, 10, 11, generator=_gen(6))
    with torch.no_grad():
        for pooling in ("mean", "cls"):
            for seed in range(3):  # several random (untrained) invariant classifiers
                model = _encoder("none", pooling, seed)
                logits = model(tokens)
                # avoid a float tie deciding the outcome: no logit pair is near-equal
                assert (logits[:, 0] - logits[:, 1]).abs().min() > 1e-9
                acc = (logits.argmax(-1) == labels).double().mean().item()
                assert acc == 0.5


def test_causal_mask_reveals_position_without_pe():
    """Identical tokens get identical states bidirectionally, distinct ones under a causal mask."""
    torch.manual_seed(0)
    bidir = TransformerBlock.build(16, 2).to(F64)
    causal = TransformerBlock.build(16, 2, causal=True).to(F64)
    causal.load_state_dict(bidir.state_dict())
    first, rest = torch.randn(2, 16, dtype=F64, generator=_gen(7))
    x = torch.cat([first[None], rest.expand(6, 16)])[None]  # [b, a, a, a, a, a, a]
    with torch.no_grad():
        same = bidir(x)[0, 1:]
        moving = causal(x)[0, 1:]
    assert (same - same[0]).abs().max().item() < 1e-12
    gaps = torch.cdist(moving, moving) + torch.eye(len(moving), dtype=F64)
    assert gaps.min().item() > 1e-6


# --- task generators ----------------------------------------------------------------------------


def _as_bags(rows: torch.Tensor) -> list[tuple[int, ...]]:
    """Each row as its sorted multiset, the rows in sorted order: a multiset of multisets."""
    return sorted(tuple(r) for r in rows.sort(dim=-1).values.tolist())


@settings(max_examples=30, deadline=None)
@given(
    task=st.sampled_from(["sorted", "sorted-swap", "palindrome"]),
    pairs=st.integers(1, 40),
    seq_len=st.integers(3, 12),
    vocab=st.integers(2, 20),
    seed=st.integers(0, 2**31 - 1),
)
def test_task_negatives_are_rearrangements_of_positives(task, pairs, seq_len, vocab, seed):
    gen = _gen(seed)
    if task == "palindrome":
        tokens, labels = palindrome_task(2 * pairs, seq_len, vocab, generator=gen)
        rule = is_palindrome
    else:
        negatives = "swap" if task == "sorted-swap" else "shuffle"
        tokens, labels = sorted_task(2 * pairs, seq_len, vocab, generator=gen, negatives=negatives)
        rule = is_sorted
    assert tokens.shape == (2 * pairs, seq_len) and labels.shape == (2 * pairs,)
    assert tokens.dtype == labels.dtype == torch.long
    assert tokens.min() >= 0 and tokens.max() < vocab
    assert labels.sum().item() == pairs  # exactly balanced
    assert torch.equal(rule(tokens), labels.bool())  # labels follow the rule
    pos, neg = tokens[labels == 1], tokens[labels == 0]
    assert _as_bags(pos) == _as_bags(neg)  # same multisets on both sides: bags carry no signal
    if task == "sorted-swap":
        assert torch.equal(((neg != neg.sort(-1).values).sum(-1)), torch.full((pairs,), 2))


@pytest.mark.parametrize("task", TASKS)
def test_task_generators_are_reproducible_from_their_generator(task):
    torch.manual_seed(123)  # the global RNG must not matter
    a = make_task(task, 64, 9, 7, generator=_gen(5))
    torch.manual_seed(456)
    b = make_task(task, 64, 9, 7, generator=_gen(5))
    c = make_task(task, 64, 9, 7, generator=_gen(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_task_generators_reject_bad_arguments():
    with pytest.raises(ValueError, match="num_examples must be even"):
        sorted_task(5, 8, 4, generator=_gen(0))
    with pytest.raises(ValueError, match="seq_len must be >= 3"):
        palindrome_task(4, 2, 4, generator=_gen(0))
    with pytest.raises(ValueError, match="vocab_size must be >= 2"):
        sorted_task(4, 8, 1, generator=_gen(0))
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator"):
        sorted_task(4, 8, 4, generator=0)
    with pytest.raises(ValueError, match="negatives must be"):
        sorted_task(4, 8, 4, generator=_gen(0), negatives="random")
    with pytest.raises(ValueError, match="task must be one of"):
        make_task("reverse", 4, 8, 4, generator=_gen(0))


# --- the study -----------------------------------------------------------------------------------


def test_positional_encoding_closes_the_gap(tmp_path):
    study = get("positional.ablation")
    cfg = dataclasses.replace(
        study.config("quick"),
        seq_len=8,
        seeds=1,
        steps=120,
        variants=("sinusoidal", "none"),
        eval_every=40,
        n_val=128,
        n_test=600,
    )
    metrics = study.run(cfg, tmp_path)
    acc = metrics["test_accuracy"]
    assert acc["sinusoidal"]["mean"] > 0.9
    assert abs(acc["none"]["mean"] - 0.5) < 0.01  # exactly 1/2 up to float ties
    assert metrics["gap_sinusoidal"] > 0.4
    # the loss floor ln 2 of an invariant model on paired batches holds during training
    assert metrics["no_pe_min_batch_loss"] > math.log(2) - 1e-4
    assert metrics["final_train_loss"]["sinusoidal"]["mean"] < 0.4
    assert (tmp_path / "accuracy_bars.png").stat().st_size > 0
    assert (tmp_path / "training_curves.png").stat().st_size > 0
    json.dumps(metrics)  # the runner stores it as JSON


def test_study_rejects_bad_configs_when_built():
    from scratchformer.experiments.registry import StudyError

    study = get("positional.ablation")
    for bad in ({"variants": ("rope",)}, {"task": "reverse"}, {"batch_size": 33}, {"steps": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            dataclasses.replace(study.config("quick"), **bad)
    with pytest.raises(StudyError, match="batch_size must be even"):
        study.config("quick", {"batch_size": "33"})
