"""The GPT arithmetic studies and their instruments: rank tracking, alignment scores, HF baseline.

Checks the tracking callback against weights whose head ranks are known, the alignment score on
hand-made attention maps, the all-token perplexity floor against the exact Bayes-optimal
predictor, the HF loss wrapper against HF's own label shifting, and both studies end to end at
a tiny size.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import sys

import numpy as np
import pytest
import torch

from scratchformer.analysis.arithmetic_eval import error_analysis, greedy_completions
from scratchformer.analysis.tracking import QK_MEASURES, SpectrumTracker
from scratchformer.analysis.training_probes import aligned_positions, alignment_scores
from scratchformer.data.arithmetic import ArithmeticConfig, make_splits, token_ppl_floor
from scratchformer.experiments.hf_baseline import (
    HF_MISSING,
    pretrained_zero_shot,
    token_ids_bits_per_char,
)
from scratchformer.experiments.kit.arithmetic import arithmetic_gpt, arithmetic_task
from scratchformer.experiments.registry import StudyError, get
from scratchformer.experiments.runner import run_study
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.models.lm_adapter import GPT_ADAPTER, HF_ADAPTER, hf_loss
from scratchformer.training import TrainConfig, Trainer
from scratchformer.viz.attention import attention_grid, stack_maps
from scratchformer.viz.figures import save_figure

# --- alignment ---------------------------------------------------------------------------------


def test_aligned_positions_by_place_value():
    # '12+345=357$': '3' (hundreds) aligns with b's 3 only; '5' with 1 and 4; '7' with 2 and 5
    assert aligned_positions("12+345=357$") == [(6, (3,)), (7, (0, 4)), (8, (1, 5))]
    # a negative answer: the sign is not a digit; the leading carry digit of 1000 has no partner
    assert aligned_positions("3-5=-2$") == [(4, (0, 2))]
    assert aligned_positions("999+1=1000$") == [(6, (0,)), (7, (1,)), (8, (2, 4))]
    with pytest.raises(ValueError, match="answer"):
        aligned_positions("3+5=")


def test_alignment_score_on_hand_made_maps():
    problems = ["12+345=357$", "3-5=-2$"]
    T = 10
    maps = torch.zeros(1, len(problems), 3, T, T)  # (L, N, H, T, T)
    for n in range(len(problems)):
        for q in range(T):
            maps[0, n, 1, q, : q + 1] = 1.0 / (q + 1)  # head 1: uniform over visible keys
            maps[0, n, 2, q, 0] = 1.0  # head 2: always the first token
        for q, keys in aligned_positions(problems[n]):
            maps[0, n, 0, q] = 0.0
            maps[0, n, 0, q, list(keys)] = 1.0 / len(keys)  # head 0: exactly the aligned digits
    out = alignment_scores(maps, problems)
    items = [(q, k) for p in problems for q, k in aligned_positions(p)]
    chance = np.mean([len(k) / (q + 1) for q, k in items])
    first_token = np.mean([float(0 in k) for _, k in items])  # mass on key 0 when it is aligned
    assert out["n_items"] == len(items) == 4
    assert out["best"] == (0, 0)
    assert out["best_score"] == pytest.approx(1.0)
    assert out["chance"] == pytest.approx(chance)
    assert out["scores"][0, 1] == pytest.approx(chance)  # uniform attention scores chance
    assert out["scores"][0, 2] == pytest.approx(first_token)
    # the per-layer list form gives the same answer
    listed = alignment_scores([maps[0]], problems)
    np.testing.assert_allclose(listed["scores"], out["scores"])
    with pytest.raises(ValueError, match="examples"):
        alignment_scores(maps, problems[:1])


# --- rank tracking -----------------------------------------------------------------------------


def _tiny_gpt(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = {"vocab_size": 16, "context_len": 8, "n_layers": 2, "n_heads": 4, "d_model": 32}
    return GPT(GPTConfig(**{**cfg, **kw}))


def test_tracker_finds_known_head_ranks():
    model = _tiny_gpt()
    d_head = 8
    with torch.no_grad():  # layer 1, head 2: W_Q^h keeps one column -> W_Q^h W_K^hᵀ has rank 1
        model.blocks[1].attn.w_q[:, 2 * d_head + 1 : 3 * d_head] = 0.0
        model.tok_emb.weight[:, 5:] = 0.0  # embedding of rank 5
    tracker = SpectrumTracker(every=3)
    tracker.record(model, 0)
    qk = tracker.qk
    assert set(qk) == set(QK_MEASURES)
    assert qk["numerical_rank"].shape == (1, 2, 4)
    expected = np.full((2, 4), d_head)
    expected[1, 2] = 1
    np.testing.assert_array_equal(qk["numerical_rank"][0], expected)
    assert qk["effective_rank"][0, 1, 2] == pytest.approx(1.0)
    assert qk["stable_rank"][0, 1, 2] == pytest.approx(1.0)
    # 1 <= stable <= effective <= numerical <= d_head for every head
    assert (qk["stable_rank"] >= 1 - 1e-9).all()
    assert (qk["stable_rank"] <= qk["effective_rank"] + 1e-9).all()
    assert (qk["effective_rank"] <= qk["numerical_rank"] + 1e-9).all()
    sv = tracker.embedding_sv[0]
    assert sv.shape == (16,)
    assert (np.diff(sv) <= 0).all()
    assert (sv[:5] > 1e-3).all() and (sv[5:] < 1e-12).all()
    assert tracker.d_head == d_head


def test_tracker_as_trainer_hook():
    model = _tiny_gpt()
    x = torch.randint(0, 16, (4, 8), generator=torch.Generator().manual_seed(0))
    tracker = SpectrumTracker(every=4)
    cfg = TrainConfig(max_steps=10, lr=1e-2, progress=False)
    trainer = Trainer(model, cfg, train_batches=lambda s, m, g: x,
                      loss_fn=lambda m, b: m(b[:, :-1], b[:, 1:])[1], on_step=[tracker])
    tracker.record(trainer.model, 0)
    first = tracker.embedding_sv[0].copy()
    trainer.fit()
    assert tracker.steps == [0, 4, 8, 10]  # every 4th update and the last
    assert tracker.qk["effective_rank"].shape == (4, 2, 4)
    assert not np.allclose(tracker.embedding_sv[-1], first)  # it watched the weights move
    record = json.loads(json.dumps(tracker.as_dict()))
    assert record["steps"] == [0, 4, 8, 10] and record["d_head"] == 8
    tracker.record(trainer.model, 10)  # the same step again replaces the record
    assert tracker.steps == [0, 4, 8, 10]
    with pytest.raises(ValueError, match="increase"):
        tracker.record(trainer.model, 5)
    with pytest.raises(ValueError, match="every"):
        SpectrumTracker(every=0)
    with pytest.raises(ValueError, match="nothing recorded"):
        _ = SpectrumTracker(every=1).qk


# --- the token-perplexity floor ----------------------------------------------------------------


def _bayes_mean_nll(problems: list[str]) -> float:
    """Mean per-target NLL of the exact predictor of a uniform draw from ``problems``."""
    counts: dict[str, int] = {}
    for s in problems:
        for i in range(1, len(s) + 1):
            counts[s[:i]] = counts.get(s[:i], 0) + 1
    nll, n = 0.0, 0
    for s in problems:
        for i in range(1, len(s)):
            nll -= math.log(counts[s[: i + 1]] / counts[s[:i]])
            n += 1
    return nll / n


@pytest.mark.parametrize("digits, ops", [(1, ("+",)), (2, ("+", "-"))])
def test_token_ppl_floor_is_the_bayes_optimal_perplexity(digits, ops):
    acfg = ArithmeticConfig(max_digits=digits, operators=ops, n_train=None, n_val=None,
                            n_test=None)
    splits = make_splits(acfg)
    every = splits.train + splits.val + splits.test  # the uniform problem space itself
    assert token_ppl_floor(acfg, every) == pytest.approx(math.exp(_bayes_mean_nll(every)),
                                                         rel=1e-12)
    assert token_ppl_floor(acfg, every) > 1.5  # far above the answer perplexity target


def test_error_analysis_counts_per_operator():
    problems = ["1+2=3$", "5-7=-2$", "4+4=8$"]
    generated = ["3$", "2$", "8$77"]  # what follows the end marker does not count
    out = error_analysis(problems, generated)
    assert out["exact_match_by_operator"] == {"+": 1.0, "-": 0.0}
    assert out["n_wrong"] == 1
    assert out["wrong_examples"] == [{"problem": "5-7=-2$", "generated": "2$"}]


# --- plotting ----------------------------------------------------------------------------------


def test_attention_grid_figure(tmp_path):
    model = _tiny_gpt()
    maps = model.attention_maps(torch.randint(0, 16, (2, 6)))
    stacked = stack_maps(maps, 1)
    assert stacked.shape == (2, 4, 6, 6)
    np.testing.assert_allclose(stacked.sum(-1), 1.0, atol=1e-6)
    fig = attention_grid(stacked, list("12+34"), highlight=[(1, 2)], marks=[(4, 1)])
    assert save_figure(fig, tmp_path / "grid.png").stat().st_size > 0
    with pytest.raises(ValueError, match="tokens"):
        attention_grid(stacked, list("1234567"))


# --- the studies, tiny -------------------------------------------------------------------------

TINY = {"steps": "80", "warmup_steps": "10", "eval_every": "40", "n_eval_generate": "40",
        "n_val": "60", "n_test": "80", "n_align": "40", "d_model": "32", "n_heads": "2",
        "track_every": "20", "lr": "1e-2", "batch_size": "64", "n_train": "3000"}


def test_gpt_arithmetic_study_tiny(tmp_path):
    study = get("gpt.arithmetic")
    cfg = study.config("quick", TINY)
    record = run_study(study, cfg, tmp_path)
    m = record["metrics"]
    assert json.loads((tmp_path / "gpt.arithmetic" / "metrics.json").read_text())["metrics"]
    for key in ("test_answer_ppl", "test_token_ppl", "test_loss", "test_exact_match"):
        assert math.isfinite(m[key]["mean"])
    assert 0.0 <= m["test_exact_match"]["mean"] <= 1.0
    curve = m["curve"]
    assert curve["step"] == [0, 40, 80]
    assert curve["val_answer_ppl"][-1] < 0.5 * curve["val_answer_ppl"][0]  # it learned
    assert m["test_answer_ppl"]["mean"] < m["initial_val_answer_ppl"]
    # the all-token perplexity cannot beat its floor (up to the test sample's luck)
    assert m["test_token_ppl"]["mean"] > 0.9 * m["token_ppl_floor"]
    qk = m["qk_rank"]
    d_head = qk["d_head"]
    assert d_head == 16 and qk["max_numerical_over_training"] <= d_head
    tracked_steps = m["embedding_sv"]["steps"]
    assert tracked_steps == [0, 20, 40, 60, 80]
    for sv in m["embedding_sv"]["values"]:
        assert all(a >= b for a, b in itertools.pairwise(sv))
    for row in qk["final_effective"]:
        assert all(1.0 <= v <= d_head for v in row)
    errors = m["test_errors_first_seed"]
    assert set(errors["exact_match_by_operator"]) == {"+"}
    assert errors["n_wrong"] == round((1 - m["test_exact_match"]["mean"]) * 80)
    align = m["alignment"]
    assert 0.0 < align["chance"] < 1.0 and 0.0 <= align["best_score"] <= 1.0
    assert align["best_score"] == max(max(r) for r in align["scores"])
    expected = {"training_curve.png", "answer_ppl_curve.png", "exact_match_curve.png",
                "qk_rank.png", "embedding_spectrum.png", "attention_example_0.png",
                "attention_example_1.png"}
    assert expected <= set(record["figures"])


def test_gpt_arithmetic_config_rejects_bad_values():
    study = get("gpt.arithmetic")
    with pytest.raises(StudyError, match="steps"):
        study.config("quick", {"steps": "-1"})
    with pytest.raises(StudyError, match="warmup_steps"):
        study.config("quick", {"warmup_steps": "600"})
    with pytest.raises(StudyError, match="context_len"):
        study.config("quick", {"context_len": "5"})
    with pytest.raises(StudyError, match="loss_on"):
        study.config("quick", {"loss_on": "prompt"})
    with pytest.raises(StudyError, match="operators"):
        study.config("quick", {"operators": "/"})


def test_hf_baseline_config_rejects_unknown_models():
    study = get("gpt.hf_baseline")
    with pytest.raises(StudyError, match="models"):
        study.config("quick", {"models": "ours-scratch,gpt4"})
    with pytest.raises(StudyError, match="hf_attn_implementation"):
        study.config("quick", {"hf_attn_implementation": "flash"})


def test_greedy_completions_match_unbatched_decoding():
    study = get("gpt.arithmetic")
    cfg = study.config("quick", {"n_train": "200", "n_val": "30", "n_test": "30"})
    task = arithmetic_task(cfg)
    model = arithmetic_gpt(cfg, task).double().eval()  # float64: no near-ties between batches
    problems = task.splits.test[:12]
    batched = greedy_completions(model, GPT_ADAPTER, task, problems)
    single = [greedy_completions(model, GPT_ADAPTER, task, [p])[0] for p in problems]
    assert batched == single
    prompt_lens = {len(p.split("=")[0]) + 1 for p in problems}
    assert len(prompt_lens) > 1  # the batch really mixed prompt lengths


def test_hf_loss_matches_hf_label_shifting():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=16, n_positions=12, n_embd=32, n_layer=1,
                                  n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    seq = torch.randint(0, 16, (3, 10))
    labels = seq.clone()
    labels[0, 7:] = -100  # padding at the end of row 0
    ours, n = hf_loss(model, (seq[:, :-1], labels[:, 1:], 99))
    theirs = model(input_ids=seq, labels=labels).loss  # HF shifts labels by one itself
    assert n == 99
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)


def test_token_ids_bits_per_char_of_a_uniform_model():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=16, n_positions=12, n_embd=32, n_layer=1, n_head=2,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        model.transformer.wte.weight.zero_()  # tied head: every logit is 0 -> uniform
    ids = [[1, 2, 3, 4], [5, 6]]
    assert token_ids_bits_per_char(model, ids, n_chars=8) == pytest.approx((3 + 1) * 4 / 8)


def test_pretrained_zero_shot_reports_absence(tmp_path):
    pytest.importorskip("transformers")
    out = pretrained_zero_shot(str(tmp_path / "no-such-model"), ["1+2=3$"])
    assert out["available"] is False and out["reason"]


def test_hf_baseline_study_tiny(tmp_path):
    pytest.importorskip("transformers")
    study = get("gpt.hf_baseline")
    fields = {f.name for f in dataclasses.fields(study.config_cls)}
    over = {**{k: v for k, v in TINY.items() if k in fields}, "steps": "40", "eval_every": "40",
            "pretrained": str(tmp_path / "absent"), "timing_rounds": "1"}
    record = run_study(study, study.config("quick", over), tmp_path)
    m = record["metrics"]
    models = m["models"]
    assert set(models) == {"ours-scratch", "ours-sdpa", "hf-gpt2"}
    # same architecture -> the same number of parameters
    assert len({r["parameters"] for r in models.values()}) == 1
    for r in models.values():
        assert math.isfinite(r["test_answer_ppl"]) and r["ms_per_step"] > 0
        assert r["interleaved_ms_per_fwd_bwd"] > 0
        assert r["curve"]["val_answer_ppl"][-1] < r["curve"]["val_answer_ppl"][0]
    # our two backends compute the same function: same seed, same batches, ~ same result
    a, b = models["ours-scratch"]["test_answer_ppl"], models["ours-sdpa"]["test_answer_ppl"]
    assert a == pytest.approx(b, rel=1e-2)  # rounding differences grow a little in training
    assert m["pretrained_zero_shot"]["available"] is False
    assert "hf_comparison.png" in record["figures"]


def test_hf_baseline_without_transformers(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import now raises ImportError
    study = get("gpt.hf_baseline")
    cfg = dataclasses.replace(study.config("quick"), steps=2, warmup_steps=0)
    with pytest.raises(ImportError, match=r"'hf' extra"):
        study.run(cfg, tmp_path)
    assert "pip install" in HF_MISSING


def test_hf_greedy_with_cache_matches_full_recompute():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=16, n_positions=12, n_embd=32, n_layer=2, n_head=2,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).double().eval()
    seq = torch.randint(0, 16, (3, 4))
    with torch.no_grad():
        cached = HF_ADAPTER.greedy(model, seq, 5)
        for _ in range(5):  # no cache: rerun the whole prefix for every token
            nxt = model(input_ids=seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    torch.testing.assert_close(cached, seq[:, 4:])
