"""LayerNorm geometry (docs/derivations/layernorm-geometry.md) and the ``norm.*`` studies.

The geometric claims are checked in float64: the LN output lies in the hyperplane Σy = 0 and on
the sphere of radius √d·√(v/(v+ε)) (so within √d·ε/(2v) of √d), RMSNorm's on the sphere of radius
√d·√(m/(m+ε)), LN(αx) = LN(x) for α > 0, and LN's Jacobian annihilates 1 and x.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn
from torch.autograd.functional import jacobian

from scratchformer.analysis.gradient_flow import layer_grad_norms
from scratchformer.analysis.layer_grads import LayerGradTracker, init_grad_norms
from scratchformer.data.lm_text import TokenizedText
from scratchformer.data.shakespeare import CharTokenizer
from scratchformer.experiments.norm_geometry import geometry_errors, project_off_ones
from scratchformer.experiments.norm_placement import (
    RunResult,
    build_gpt,
    depth_slope,
    is_diverged,
    outcome_table,
    train_run,
    unigram_loss,
    xavier_blocks,
)
from scratchformer.experiments.registry import StudyError, get
from scratchformer.experiments.runner import run_study
from scratchformer.functional.normalization import layer_norm, rms_norm
from scratchformer.models.gpt import GPT, GPTConfig

EPS = (0.0, 1e-5, 1e-2)


def _rows(n: int = 64, d: int = 16, seed: int = 0) -> torch.Tensor:
    """Float64 rows with varied means and scales (some tiny, some large)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    scale = torch.logspace(-1.5, 3, n, dtype=torch.float64)[:, None]
    shift = 5 * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    return x * scale + shift


# ----------------------------------------------------------------------------- the geometry


@pytest.mark.parametrize("eps", EPS)
def test_layer_norm_output_lies_in_the_plane_orthogonal_to_ones(eps):
    x = _rows()
    y = layer_norm(x, eps=eps)
    d = x.shape[-1]
    ones = torch.ones(d, dtype=torch.float64) / math.sqrt(d)
    # the component along 1/√d is zero up to rounding of numbers of size √d
    assert (y @ ones).abs().max() < 1e-12 * math.sqrt(d)


@pytest.mark.parametrize("eps", EPS)
def test_layer_norm_output_lies_on_the_sqrt_d_sphere_up_to_eps(eps):
    x = _rows()
    d = x.shape[-1]
    y = layer_norm(x, eps=eps)
    v = (x - x.mean(-1, keepdim=True)).square().mean(-1)  # biased variance
    radius = y.norm(dim=-1)
    torch.testing.assert_close(radius, math.sqrt(d) * torch.sqrt(v / (v + eps)),
                               atol=1e-12, rtol=0)
    # the eps-dependent tolerance around √d: 0 <= √d − |y| <= √d·ε/(2v)
    gap = math.sqrt(d) - radius
    assert (gap >= -1e-12).all()
    assert (gap <= math.sqrt(d) * eps / (2 * v) + 1e-12).all()


@pytest.mark.parametrize("eps", EPS)
def test_rms_norm_output_lies_on_the_sqrt_d_sphere_without_centring(eps):
    x = _rows()
    d = x.shape[-1]
    y = rms_norm(x, eps=eps)
    m = x.square().mean(-1)
    torch.testing.assert_close(y.norm(dim=-1), math.sqrt(d) * torch.sqrt(m / (m + eps)),
                               atol=1e-12, rtol=0)
    # no hyperplane: the outputs keep the direction of x, mean included
    torch.testing.assert_close(y / y.norm(dim=-1, keepdim=True),
                               x / x.norm(dim=-1, keepdim=True), atol=1e-12, rtol=0)
    assert (y.sum(-1).abs() > 1e-3).any()


def test_layer_norm_is_the_rescaled_projection_off_the_ones_direction():
    x = _rows()
    p = project_off_ones(x)
    ones = torch.ones(x.shape[-1], dtype=torch.float64)
    torch.testing.assert_close(p @ ones, torch.zeros(len(x), dtype=torch.float64),
                               atol=1e-9, rtol=0)
    expected = math.sqrt(x.shape[-1]) * p / p.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(layer_norm(x, eps=0.0), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("alpha", [1e-4, 0.37, 1.0, 8.0, 1e5])
def test_layer_norm_is_scale_invariant(alpha):
    x = _rows()
    torch.testing.assert_close(layer_norm(alpha * x, eps=0.0), layer_norm(x, eps=0.0),
                               atol=1e-12, rtol=0)
    # a negative factor flips the output: invariance holds for α > 0 only
    torch.testing.assert_close(layer_norm(-alpha * x, eps=0.0), -layer_norm(x, eps=0.0),
                               atol=1e-12, rtol=0)


def test_layer_norm_with_eps_is_scale_invariant_up_to_eps():
    x = _rows()
    v = (x - x.mean(-1, keepdim=True)).square().mean(-1, keepdim=True)
    eps = 1e-5
    err = (layer_norm(2 * x, eps=eps) - layer_norm(x, eps=eps)).norm(dim=-1, keepdim=True)
    # both outputs are x̂₀·√(v/(v+ε)) and x̂₀·√(4v/(4v+ε)): they differ by at most √d·ε/(2v)
    assert (err <= math.sqrt(x.shape[-1]) * eps / (2 * v) + 1e-12).all()


@pytest.mark.parametrize("seed", range(4))
def test_layer_norm_jacobian_annihilates_ones_and_x(seed):
    x = _rows(n=1, d=7, seed=seed)[0]
    d = x.numel()
    ones = torch.ones(d, dtype=torch.float64)
    J = jacobian(lambda t: layer_norm(t, eps=0.0), x)
    torch.testing.assert_close(J @ ones, torch.zeros(d, dtype=torch.float64), atol=1e-12,
                               rtol=0)
    torch.testing.assert_close(J @ x, torch.zeros(d, dtype=torch.float64), atol=1e-12 * x.norm(),
                               rtol=0)
    torch.testing.assert_close(J, J.T, atol=1e-12, rtol=0)
    # so the gradient of any loss reaching x is orthogonal to x and to 1
    r = torch.randn(d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 99))
    g = J.T @ r  # r is not in span{1, x}, so g is not 0
    assert g.norm() > 1e-3 * r.norm()
    assert abs(g @ x) < 1e-12 * x.norm() * g.norm() + 1e-14
    assert abs(g @ ones) < 1e-12 * math.sqrt(d) * g.norm() + 1e-14


def test_layer_norm_jacobian_with_eps_leaves_the_derived_remainder_along_x():
    x = _rows(n=1, d=9, seed=3)[0] * 1e-3  # small variance, so ε matters
    eps = 1e-6
    J = jacobian(lambda t: layer_norm(t, eps=eps), x)
    v = (x - x.mean()).square().mean()
    x_hat = (x - x.mean()) / torch.sqrt(v + eps)
    torch.testing.assert_close(J @ torch.ones_like(x), torch.zeros_like(x), atol=1e-9, rtol=0)
    torch.testing.assert_close(J @ x, x_hat * eps / (v + eps), atol=1e-9, rtol=1e-9)
    assert (J @ x).norm() > 1e-3  # not zero: J·x = 0 needs ε = 0


def test_weight_gradient_through_layer_norm_is_orthogonal_to_the_weight():
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(30, 6, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    gamma = torch.rand(10, generator=gen, dtype=torch.float64) + 0.5
    target = torch.randn(30, 10, generator=gen, dtype=torch.float64)
    loss = (layer_norm(z @ w, gamma, None, eps=0.0) - target).square().sum()
    (grad,) = torch.autograd.grad(loss, w)
    assert grad.norm() > 1e-3
    assert abs((w.detach() * grad).sum()) < 1e-12 * w.norm() * grad.norm()
    # and the scale of w changes nothing downstream
    torch.testing.assert_close(layer_norm(z @ (7 * w.detach()), eps=0.0),
                               layer_norm(z @ w.detach(), eps=0.0), atol=1e-12, rtol=0)


def test_affine_map_sends_the_sphere_into_the_norm_bound():
    gen = torch.Generator().manual_seed(6)
    d = 10
    gamma = 3 * torch.randn(d, generator=gen, dtype=torch.float64)
    beta = torch.randn(d, generator=gen, dtype=torch.float64)
    x = 1e4 * torch.randn(500, d, generator=gen, dtype=torch.float64)
    y = layer_norm(x, gamma, beta, eps=0.0)
    assert (y.norm(dim=-1) <= math.sqrt(d) * gamma.abs().max() + beta.norm() + 1e-9).all()
    # on the ellipsoid: undoing the affine map gives back the √d sphere in the plane
    back = (y - beta) / gamma
    torch.testing.assert_close(back.norm(dim=-1), torch.full((500,), math.sqrt(d),
                                                              dtype=torch.float64),
                               atol=1e-9, rtol=0)
    torch.testing.assert_close(back.sum(-1), torch.zeros(500, dtype=torch.float64), atol=1e-9,
                               rtol=0)


def test_layer_norm_dot_product_is_d_times_the_correlation():
    x = _rows(n=20, d=9, seed=8)
    y = layer_norm(x, eps=0.0)
    corr = torch.corrcoef(x)
    torch.testing.assert_close(y @ y.T / 9, corr, atol=1e-12, rtol=0)
    # and distances follow from the angle alone: |ŷ − ŷ'|² = 2d(1 − cos θ)
    dist2 = torch.cdist(y, y).square()
    torch.testing.assert_close(dist2, 2 * 9 * (1 - corr), atol=1e-9, rtol=0)


def test_attention_logits_after_layer_norm_are_bounded_by_weight_norms():
    gen = torch.Generator().manual_seed(0)
    d = 12
    w_q = torch.randn(d, d, generator=gen, dtype=torch.float64)
    w_k = torch.randn(d, d, generator=gen, dtype=torch.float64)
    bound = torch.linalg.matrix_norm(w_q, 2) * torch.linalg.matrix_norm(w_k, 2) * d
    for scale in (1e-3, 1.0, 1e6):
        h = layer_norm(scale * torch.randn(50, d, generator=gen, dtype=torch.float64), eps=0.0)
        logits = (h @ w_q) @ (h @ w_k).T
        assert logits.abs().max() <= bound * (1 + 1e-12)
        assert logits.abs().max() > 0.05 * bound  # the bound is not vacuous at this size


def test_geometry_errors_are_within_the_eps_bounds():
    x = 2 * torch.randn(100, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    e = geometry_errors(x, 1e-5)
    assert e["ln_max_plane_deviation"] < 1e-12
    assert e["ln_max_radius_deviation"] <= e["ln_radius_bound_from_eps"] * (1 + 1e-6) + 1e-14
    assert e["rms_max_radius_deviation"] <= e["rms_radius_bound_from_eps"] * (1 + 1e-6) + 1e-14
    exact = geometry_errors(x, 0.0)
    assert exact["ln_max_radius_deviation"] < 1e-12 and exact["rms_max_radius_deviation"] < 1e-12


def test_norm_geometry_study_writes_its_figure(tmp_path):
    study = get("norm.geometry")
    record = run_study(study, study.config("quick", {"n_points": "12"}), tmp_path)
    m = record["metrics"]
    assert m["radius"] == pytest.approx(math.sqrt(3))
    assert m["ln_max_plane_deviation"] < 1e-12
    assert m["ln_max_radius_deviation"] <= m["ln_radius_bound_from_eps"] * (1 + 1e-6) + 1e-14
    assert record["figures"] == ["layernorm_3d.png"]
    with pytest.raises(ValueError, match="n_points"):
        study.run(dataclasses.replace(study.config("quick"), n_points=0), tmp_path)


# ----------------------------------------------------------------------------- the GPT switch


def test_gpt_config_norm_position_builds_post_ln_blocks():
    cfg = {"vocab_size": 11, "context_len": 8, "n_layers": 2, "n_heads": 2, "d_model": 8}
    assert [b.norm_position for b in GPT(GPTConfig(**cfg)).blocks] == ["pre", "pre"]
    post = GPT(GPTConfig(**cfg, norm_position="post"))
    assert [b.norm_position for b in post.blocks] == ["post", "post"]
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    pre = GPT(GPTConfig(**cfg))
    assert not torch.allclose(pre(idx)[0], post(idx)[0])
    with pytest.raises(ValueError, match="norm_position"):
        GPTConfig(**cfg, norm_position="middle")


# ----------------------------------------------------------------------------- study helpers


def _small_gpt(position: str = "pre", depth: int = 3) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=13, context_len=8, n_layers=depth, n_heads=2, d_model=16,
                         bias=False, norm_position=position))


def _batches(n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [(torch.randint(0, 13, (4, 8), generator=gen), torch.randint(0, 13, (4, 8),
                                                                        generator=gen))
            for _ in range(n)]


def test_init_grad_norms_are_each_batchs_per_block_norms():
    model, batches = _small_gpt(), _batches()
    got = init_grad_norms(model, model.blocks, batches)
    assert got.shape == (3, 3)
    assert all(p.grad is None for p in model.parameters())  # cleared afterwards
    for row, (x, y) in zip(got, batches, strict=True):
        model.zero_grad()
        model(x, y)[1].backward()
        torch.testing.assert_close(row, layer_grad_norms(list(model.blocks)))
    assert not torch.allclose(got[0], got[1])  # one row per batch, not one repeated
    with pytest.raises(ValueError, match="batches"):
        init_grad_norms(model, model.blocks, [])


def test_layer_grad_tracker_matches_layer_grad_norms_and_can_be_disarmed():
    model = _small_gpt("post")
    tracker = LayerGradTracker(model.blocks)
    with pytest.raises(ValueError, match="backward"):
        tracker.norms()
    (x, y), (x2, y2) = _batches(2)
    model(x, y)[1].backward()
    first = layer_grad_norms(list(model.blocks))
    torch.testing.assert_close(tracker.norms(), first)
    tracker.armed = False
    model.zero_grad()
    model(x2, y2)[1].backward()
    torch.testing.assert_close(tracker.norms(), first)  # kept the armed pass
    tracker.armed = True
    model.zero_grad()
    model(x2, y2)[1].backward()
    second = layer_grad_norms(list(model.blocks))
    assert not torch.allclose(second, first)
    torch.testing.assert_close(tracker.norms(), second)
    tracker.close()
    with pytest.raises(TypeError, match="layers"):
        LayerGradTracker(nn.Linear(2, 2))


def test_xavier_blocks_sets_glorot_scale():
    model = xavier_blocks(_small_gpt(depth=8))
    w1 = torch.cat([b.ffn.w1.flatten() for b in model.blocks])
    wq = torch.cat([b.attn.w_q.flatten() for b in model.blocks])
    assert w1.std().item() == pytest.approx(math.sqrt(2 / (16 + 64)), rel=0.05)
    assert wq.std().item() == pytest.approx(math.sqrt(2 / 32), rel=0.05)


def test_is_diverged_flags_non_finite_and_risen_losses():
    assert not is_diverged([4.0, 3.0, 2.5], 2.6, initial_loss=4.2, margin=0.5)
    assert not is_diverged([4.0], 4.6, initial_loss=4.2, margin=0.5)  # within the margin
    assert is_diverged([4.0], 4.8, initial_loss=4.2, margin=0.5)
    assert is_diverged([4.0, float("nan")], 3.0, initial_loss=4.2, margin=0.5)
    assert is_diverged([4.0, 3.0], float("inf"), initial_loss=4.2, margin=0.5)
    with pytest.raises(ValueError, match="initial_loss"):
        is_diverged([1.0], 1.0, initial_loss=float("nan"), margin=0.5)
    with pytest.raises(ValueError, match="margin"):
        is_diverged([1.0], 1.0, initial_loss=1.0, margin=-1.0)


def test_depth_slope_recovers_a_power_law():
    depths = [6, 12, 24]
    assert depth_slope(depths, [3 / math.sqrt(L) for L in depths]) == pytest.approx(-0.5)
    assert depth_slope(depths, [0.7] * 3) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="pairs"):
        depth_slope([6], [1.0])


def test_unigram_loss_is_the_cross_entropy_of_smoothed_frequencies():
    train = torch.tensor([0, 0, 0, 1])  # counts + 1: 4, 2, 1 over 7
    val = torch.tensor([0, 1, 2])
    expected = -(math.log(4 / 7) + math.log(2 / 7) + math.log(1 / 7)) / 3
    assert unigram_loss(train, val, 3) == pytest.approx(expected)
    with pytest.raises(ValueError, match="val"):
        unigram_loss(train, torch.tensor([3]), 3)


def _result(position: str, warmup: int, lr: float, diverged: bool) -> RunResult:
    return RunResult(2, position, warmup, lr, 0, 4.0, 3.0, diverged, True, 10, [], [], [], [])


def test_outcome_table_counts_per_placement_warmup_and_lr():
    runs = [_result("post", 0, 1e-3, True), _result("post", 0, 1e-3, False),
            _result("post", 5, 1e-3, False), _result("pre", 0, 1e-3, False)]
    table = outcome_table(runs, lambda r: r.diverged)
    assert table == {"post": {"warmup 0": {"0.001": "1/2"}, "warmup 5": {"0.001": "0/1"}},
                     "pre": {"warmup 0": {"0.001": "0/1"}}}


def _synthetic_data() -> TokenizedText:
    text = "the quick brown fox jumps over the lazy dog. " * 40
    tok = CharTokenizer(text)
    ids = torch.tensor(tok.encode(text))
    return TokenizedText("char", tok.encode, tok.decode, tok.vocab_size, ids[:1500], ids[1500:],
                         torch.ones(len(ids) - 1500, dtype=torch.long), list(tok.vocab))


def _tiny_cfg(settings: dict[str, object], **kw: object):
    """The norm.placement quick config at the shared tiny char-LM sizes."""
    return dataclasses.replace(get("norm.placement").config("quick"),
                               **{**settings, "record_every": 3, **kw})


def test_train_run_records_and_flags_a_blown_up_run(tiny_char_lm):
    data = _synthetic_data()
    cfg = _tiny_cfg(tiny_char_lm)
    ok = train_run(cfg, data, 2, "pre", 2, 3e-3, 0)
    assert ok.steps == [3, 6] and ok.steps_done == 6 and not ok.diverged
    assert len(ok.layer_grad_norms) == 2 and all(len(r) == 2 for r in ok.layer_grad_norms)
    assert all(v > 0 and math.isfinite(v) for r in ok.layer_grad_norms for v in r)
    assert ok.initial_val_loss == pytest.approx(math.log(data.vocab_size), rel=0.1)
    wild = train_run(cfg, data, 2, "post", 0, 30.0, 0)  # Adam at lr 30: far off the loss basin
    assert wild.diverged
    assert not (math.isfinite(wild.final_val_loss)
                and wild.final_val_loss <= wild.initial_val_loss + cfg.divergence_margin)


def test_build_gpt_rejects_an_unknown_init(tiny_char_lm):
    with pytest.raises(ValueError, match="init"):
        build_gpt(_tiny_cfg(tiny_char_lm), 10, 2, "pre", "he")


# ----------------------------------------------------------------------------- the study, tiny


def test_norm_placement_study_tiny(tmp_path, tiny_char_lm):
    study = get("norm.placement")
    cfg = _tiny_cfg(tiny_char_lm, depths=(1, 2), lrs=(1e-3, 3e-3), init_batches=2)
    record = run_study(study, cfg, tmp_path)
    out = tmp_path / "norm.placement"
    m = record["metrics"]
    warm = f"warmup {cfg.warmup_steps}"
    assert json.loads((out / "metrics.json").read_text())["metrics"]["depths"] == [1, 2]
    assert len(m["runs"]) == 2 * 2 * 2 * 2  # depths × placements × warmup arms × lrs (1 seed)
    for scheme in ("xavier", "gpt2"):
        for depth in (1, 2):
            for pos in ("pre", "post"):
                norms = m["init_grad_norms"][scheme][str(depth)][pos]
                assert len(norms) == depth and all(v > 0 and math.isfinite(v) for v in norms)
        assert m["init_summary"][scheme]["pre"]["depth_slope_last_layer"] is not None
    for pos in ("pre", "post"):
        for warmup in ("warmup 0", warm):
            row = m["divergence"][pos][warmup]
            assert set(row) == {"0.001", "0.003"}
            assert all(cell.endswith("/2") for cell in row.values())
    assert 0 < m["unigram_val_loss"] < math.log(m["vocab_size"])
    runs = json.loads((out / "runs.json").read_text())
    assert all(r["steps"] == [3, 6] or r["diverged"] for r in runs)
    assert all(len(row) == r["depth"] for r in runs for row in r["layer_grad_norms"])
    assert set(record["figures"]) == {"grad_norms_init.png", "grad_norms_training.png",
                                      "grad_norms_layers_training.png", "final_loss.png"}
    means = m["final_val_loss"]["mean"]
    assert len(means["post"][warm]["L=2"]) == 2 and m["lrs"] == [1e-3, 3e-3]
    assert all(math.isfinite(v) for v in means["pre"]["warmup 0"]["L=1"])
    assert (out / "divergence.md").read_text().count("| post-LN |") == 4


@pytest.mark.parametrize("key,value,message", [
    ("positions", "middle", r"positions\[0\] must be one of \('pre', 'post'\), got 'middle'"),
    ("warmup_steps", "40", r"warmup_steps must be < steps=40, got 40"),
    ("warmup_steps", "0", r"warmup_steps must be >= 1, got 0"),
    ("init", "he", r"init must be one of \('xavier', 'gpt2'\), got 'he'"),
    ("init_schemes", "xavier,he", r"init_schemes\[1\] must be one of"),
    ("depths", "0", r"depths\[0\] must be >= 1, got 0"),
    ("lrs", "", r"lrs must be a non-empty tuple, got \(\)"),
    ("lrs", "1e-3,-1", r"lrs\[1\] must be > 0\.0, got -1\.0"),
    ("min_lr_ratio", "1.5", r"min_lr_ratio must be <= 1\.0, got 1\.5"),
    ("grad_clip", "-1", r"grad_clip must be >= 0\.0, got -1\.0"),
    ("record_every", "0", r"record_every must be >= 1, got 0"),
])
def test_norm_placement_config_rejects_bad_settings(key, value, message):
    with pytest.raises(StudyError, match=message):
        get("norm.placement").config("quick", {key: value})


def test_norm_placement_config_is_checked_however_it_is_built():
    cfg = get("norm.placement").config("quick")
    with pytest.raises(ValueError, match=r"seeds must be a non-empty tuple, got \(\)"):
        dataclasses.replace(cfg, seeds=())
    with pytest.raises(ValueError, match=r"divergence_margin must be >= 0\.0, got -0\.5"):
        dataclasses.replace(cfg, divergence_margin=-0.5)
