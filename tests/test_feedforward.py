"""Checks of FeedForward, the gradient-flow helpers and the feedforward.gradient_flow study."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from scratchformer.analysis.gradient_flow import (
    OutputGradRecorder,
    dead_unit_fraction,
    dead_unit_mask,
    first_to_last_ratio,
    layer_grad_norms,
    mean_and_std,
    mean_pairwise_cosine,
    meanfield_second_moments,
    relu_cosine_map,
    relu_dead_probability,
    zero_fraction,
)
from scratchformer.experiments import feedforward as study_module
from scratchformer.experiments.registry import get
from scratchformer.experiments.runner import run_study
from scratchformer.functional.activations import (
    gelu,
    gelu_derivative,
    relu,
    relu_derivative,
    standard_normal_cdf,
    standard_normal_pdf,
)
from scratchformer.nn.feedforward import FeedForward

REFERENCE_ACT = {
    "gelu": F.gelu,
    "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
    "relu": F.relu,
}

# --- FeedForward -----------------------------------------------------------------------------


@pytest.mark.parametrize("activation", sorted(REFERENCE_ACT))
def test_feedforward_equals_manual_formula(activation: str) -> None:
    torch.manual_seed(0)
    ffn = FeedForward(8, 20, activation=activation).double()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    expected = REFERENCE_ACT[activation](x @ ffn.w1 + ffn.b1) @ ffn.w2 + ffn.b2
    torch.testing.assert_close(ffn(x), expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(ffn.hidden(x), x @ ffn.w1 + ffn.b1)


def test_feedforward_shapes_and_defaults() -> None:
    ffn = FeedForward(6)
    assert ffn.d_hidden == 24 and ffn.activation == "gelu"
    shapes = {name: tuple(p.shape) for name, p in ffn.named_parameters()}
    assert shapes == {"w1": (6, 24), "b1": (24,), "w2": (24, 6), "b2": (6,)}
    assert ffn(torch.randn(2, 7, 6)).shape == (2, 7, 6)
    assert ffn(torch.randn(6)).shape == (6,)
    assert ffn(torch.randn(0, 6)).shape == (0, 6)
    assert "d_hidden=24" in repr(ffn)


def test_feedforward_without_bias() -> None:
    ffn = FeedForward(4, 9, activation="relu", bias=False)
    assert ffn.b1 is None and ffn.b2 is None
    assert sorted(n for n, _ in ffn.named_parameters()) == ["w1", "w2"]
    x = torch.randn(5, 4)
    torch.testing.assert_close(ffn(x), F.relu(x @ ffn.w1) @ ffn.w2)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    ffn = FeedForward(5, 11, activation="gelu")
    ffn(torch.randn(4, 3, 5)).pow(2).sum().backward()
    for name, p in ffn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert layer_grad_norms([ffn]).item() > 0


def test_feedforward_init_matches_nn_linear_bounds() -> None:
    torch.manual_seed(0)
    ffn = FeedForward(64, 256)
    for w, b, fan_in in ((ffn.w1, ffn.b1, 64), (ffn.w2, ffn.b2, 256)):
        bound = 1 / math.sqrt(fan_in)
        assert w.abs().max() <= bound and b.abs().max() <= bound
        # U(−k, k) has standard deviation k/√3; 16k samples pin it to about ±1 %
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    ffn = FeedForward(6, 30, dropout=0.5)
    x = torch.randn(10, 6)
    ffn.eval()
    torch.testing.assert_close(ffn(x), F.gelu(x @ ffn.w1 + ffn.b1) @ ffn.w2 + ffn.b2)
    ffn.train()
    assert not torch.allclose(ffn(x), ffn(x))  # a fresh mask each call


@settings(max_examples=40, deadline=None)
@given(
    lead=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    d_model=st.integers(1, 6),
    data=st.data(),
)
def test_property_position_wise(lead: list[int], d_model: int, data) -> None:
    """Changing one position's input changes that position's output and no other."""
    torch.manual_seed(0)
    ffn = FeedForward(d_model, activation="gelu").double()
    x = torch.randn(*lead, d_model, dtype=torch.float64)
    index = tuple(data.draw(st.integers(0, n - 1)) for n in lead)
    x2 = x.clone()
    x2[index] += 1.0
    y, y2 = ffn(x), ffn(x2)
    changed = (y - y2).abs().amax(dim=-1) > 0
    expected = torch.zeros(lead, dtype=torch.bool)
    expected[index] = True
    assert torch.equal(changed, expected)
    torch.testing.assert_close(y[index], ffn(x[index]))  # same map on a lone vector


def test_feedforward_bad_arguments() -> None:
    with pytest.raises(ValueError, match="d_model"):
        FeedForward(0)
    with pytest.raises(TypeError, match="d_model"):
        FeedForward(2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="d_model"):
        FeedForward(True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="d_hidden"):
        FeedForward(4, -1)
    with pytest.raises(ValueError, match="activation must be one of"):
        FeedForward(4, activation="swish")
    with pytest.raises(ValueError, match="dropout"):
        FeedForward(4, dropout=1.0)
    with pytest.raises(TypeError, match="dropout"):
        FeedForward(4, dropout="0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bias"):
        FeedForward(4, bias="yes")  # type: ignore[arg-type]
    ffn = FeedForward(4)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\)"):
        ffn(torch.randn(2, 5))
    with pytest.raises(ValueError, match="d_model"):
        ffn(torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        ffn([1.0, 2.0, 3.0, 4.0])


# --- dead units: the claim of docs/derivations/gelu.md §4 -------------------------------------


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_dead_relu_unit_gets_exactly_zero_gradient(activation: str) -> None:
    """A hidden unit with z ≤ 0 on every input: ReLU gives its W1 column, b1 entry and W2 row
    exactly zero gradient; GELU gives all three a non-zero one."""
    torch.manual_seed(0)
    ffn = FeedForward(4, 8, activation=activation).double()
    with torch.no_grad():
        ffn.b1[3] = -50.0 if activation == "relu" else -3.0  # push unit 3 far below zero
    x = torch.randn(32, 4, dtype=torch.float64)
    z = ffn.hidden(x)
    assert (z[:, 3] < 0).all()
    (ffn(x) - torch.randn(32, 4, dtype=torch.float64)).pow(2).mean().backward()
    grads = (ffn.w1.grad[:, 3], ffn.b1.grad[3:4], ffn.w2.grad[3, :])
    if activation == "relu":
        assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)
        assert dead_unit_mask(relu_derivative(z)).tolist()[3]
    else:
        assert all(g.abs().min() > 0 for g in grads)


# --- gradient-flow helpers ---------------------------------------------------------------------


def test_layer_grad_norms_matches_manual_norm() -> None:
    a, b = nn.Linear(3, 4), nn.Linear(4, 2)
    w = torch.randn(5, requires_grad=True)
    (b(a(torch.randn(6, 3))).sum() + (w * w).sum()).backward()
    norms = layer_grad_norms([a, b, w])
    manual_a = math.sqrt(a.weight.grad.pow(2).sum().item() + a.bias.grad.pow(2).sum().item())
    assert norms.dtype == torch.float64 and norms.shape == (3,)
    assert norms[0].item() == pytest.approx(manual_a, rel=1e-6)
    assert norms[2].item() == pytest.approx((2 * w).norm().item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"no \.grad"):
        layer_grad_norms([nn.Linear(2, 2)])
    with pytest.raises(TypeError, match="sequence"):
        layer_grad_norms(a)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        layer_grad_norms([])


def test_dead_unit_and_zero_fractions() -> None:
    g = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.0]])  # (inputs, units)
    assert dead_unit_mask(g).tolist() == [True, False, True]
    assert dead_unit_fraction(g) == pytest.approx(2 / 3)
    assert dead_unit_fraction(g.T, unit_dim=0) == pytest.approx(2 / 3)
    assert dead_unit_fraction(g.reshape(3, 1, 3)) == pytest.approx(2 / 3)  # any leading dims
    assert zero_fraction(g) == pytest.approx(7 / 9)
    with pytest.raises(ValueError, match="act_grad"):
        dead_unit_fraction(torch.tensor(0.0))
    with pytest.raises(TypeError, match="act_grad"):
        dead_unit_fraction([[0.0]])  # type: ignore[arg-type]


def test_small_statistics_helpers() -> None:
    assert first_to_last_ratio([4.0, 1.0, 2.0]) == 2.0
    with pytest.raises(ValueError, match="two entries"):
        first_to_last_ratio([1.0])
    mean, std = mean_and_std(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    assert mean.tolist() == [2.0, 4.0] and std.tolist() == pytest.approx([2**0.5, 8**0.5])
    assert mean_and_std(torch.tensor([[1.0, 2.0]]))[1].tolist() == [0.0, 0.0]
    h = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    c = 1 / math.sqrt(2)
    assert mean_pairwise_cosine(h) == pytest.approx((c + 0.0 + c) / 3)
    assert mean_pairwise_cosine(torch.ones(4, 3)) == pytest.approx(1.0)


def test_output_grad_recorder_matches_autograd() -> None:
    torch.manual_seed(0)
    layers = [nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1)]
    model = nn.Sequential(*layers)
    x = torch.randn(5, 3)
    with OutputGradRecorder([layers[0], layers[1]]) as rec:
        model(x).pow(2).sum().backward()
    h0 = layers[0](x)
    h1 = layers[1](h0)
    g0, g1 = torch.autograd.grad(model[2](h1).pow(2).sum(), [h0, h1])
    torch.testing.assert_close(rec.outputs[1], h1.detach())
    torch.testing.assert_close(rec.grads[0], g0)
    torch.testing.assert_close(rec.grads[1], g1)
    torch.testing.assert_close(rec.grad_norms(), torch.stack([g0.norm(), g1.norm()]).double())
    model(x)  # hooks are gone after the with block: nothing is overwritten
    assert rec.outputs[1] is not None and torch.equal(rec.outputs[1], h1.detach())
    assert not layers[0]._forward_hooks
    with pytest.raises(ValueError, match="no gradient"):
        OutputGradRecorder([nn.Identity()]).grad_norms()
    with pytest.raises(TypeError, match="modules"):
        OutputGradRecorder(nn.Linear(2, 2))  # type: ignore[arg-type]


def test_relu_cosine_map_against_monte_carlo() -> None:
    """κ(c) = cos(relu(u), relu(v)) for unit Gaussians (u, v) with correlation c."""
    gen = torch.Generator().manual_seed(0)
    n = 400_000
    for c in (-0.5, 0.0, 0.5, 0.9):
        e1, e2 = torch.randn(2, n, generator=gen, dtype=torch.float64)
        u, v = e1, c * e1 + math.sqrt(1 - c * c) * e2
        ru, rv = u.clamp_min(0), v.clamp_min(0)
        mc = ((ru * rv).mean() / (ru.pow(2).mean() * rv.pow(2).mean()).sqrt()).item()
        assert relu_cosine_map(torch.tensor(c, dtype=torch.float64)).item() == pytest.approx(
            mc, abs=0.01
        )
    k = relu_cosine_map(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert k.tolist() == pytest.approx([1 / math.pi, 1.0], abs=1e-12)


def test_relu_dead_probability_against_monte_carlo() -> None:
    """P(all batch pre-activations ≤ 0) for equicorrelated Gaussians with correlation c."""
    gen = torch.Generator().manual_seed(0)
    n, batch = 200_000, 16
    for c in (0.3, 0.7, 0.95):
        xi = torch.randn(n, 1, generator=gen, dtype=torch.float64)
        eps = torch.randn(n, batch, generator=gen, dtype=torch.float64)
        z = math.sqrt(c) * xi + math.sqrt(1 - c) * eps
        p_mc = (z <= 0).all(dim=1).double().mean().item()
        se = math.sqrt(p_mc * (1 - p_mc) / n)
        assert relu_dead_probability(c, batch) == pytest.approx(p_mc, abs=5 * se + 1e-4)
    assert relu_dead_probability(0.0, 10) == pytest.approx(2.0**-10, rel=1e-9)
    assert relu_dead_probability(1.0, 10) == 0.5
    assert relu_dead_probability(0.6, 1) == pytest.approx(0.5, abs=1e-9)
    assert relu_dead_probability(0.99999, 256) == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="c must be"):
        relu_dead_probability(1.5, 4)
    with pytest.raises(ValueError, match="batch"):
        relu_dead_probability(0.5, 0)


def _gauss_mean(values_of_z) -> float:
    """E[f(z)] for z ~ N(0, 1) by quadrature on a dense grid."""
    z = torch.linspace(-12, 12, 40_001, dtype=torch.float64)
    return torch.trapezoid(values_of_z(z) * standard_normal_pdf(z), z).item()


def test_gelu_shrinks_the_signal_under_he_init() -> None:
    """E[GELU(x)²] = E[ReLU(x)²] − E[x²Φ(x)Φ(−x)] < q/2 for x ~ N(0, q), so with He init
    (gain² = 2) the mean-field recursion q ↦ 2E[GELU(√q z)²] strictly shrinks q, by a factor
    → ½ as q → 0 (GELU ≈ x/2), and the backward factor 2E[GELU'(√q z)²] → ½ as well."""
    for q in (1e-4, 1e-2, 0.5, 2.0, 10.0, 100.0):
        r = math.sqrt(q)
        lhs = _gauss_mean(lambda z, r=r: gelu(r * z) ** 2)
        relu_sq = _gauss_mean(lambda z, r=r: relu(r * z) ** 2)
        corr = _gauss_mean(
            lambda z, r=r: (r * z) ** 2 * standard_normal_cdf(r * z) * standard_normal_cdf(-r * z)
        )
        assert relu_sq == pytest.approx(q / 2, rel=1e-9)
        assert lhs == pytest.approx(relu_sq - corr, rel=1e-9)
        assert 0.5 <= 2 * lhs / q < 1.0
    assert 2 * _gauss_mean(lambda z: gelu(1e-2 * z) ** 2) / 1e-4 == pytest.approx(0.5, abs=1e-3)
    back = 2 * _gauss_mean(lambda z: gelu_derivative(1e-2 * z) ** 2)
    assert back == pytest.approx(0.5, abs=1e-3)
    q_relu = meanfield_second_moments(relu, 10)
    assert q_relu == pytest.approx([2.0] * 10, rel=1e-9)
    q_gelu = meanfield_second_moments(gelu, 24)
    assert all(b < a for a, b in itertools.pairwise(q_gelu))
    assert q_gelu[15] == pytest.approx(0.0683, rel=1e-2)  # cited in docs/derivations/gelu.md
    assert q_gelu[23] == pytest.approx(3.43e-4, rel=1e-2)
    with pytest.raises(ValueError, match="depth"):
        meanfield_second_moments(gelu, 0)
    with pytest.raises(ValueError, match="q1"):
        meanfield_second_moments(gelu, 3, q1=-1.0)


# --- the study -------------------------------------------------------------------------------

TINY = {
    "depths": (6,),
    "width": 16,
    "batch": 24,
    "seeds": 2,
    "train_steps": 4,
    "train_lrs": (1e-2,),
    "train_seeds": 1,
    "log_every": 2,
    "approx_points": 2001,
}


def test_study_runs_and_writes_outputs(tmp_path) -> None:
    study = get("feedforward.gradient_flow")
    cfg = dataclasses.replace(study.config("quick"), **TINY)
    record = run_study(study, cfg, tmp_path)
    out = tmp_path / "feedforward.gradient_flow"
    assert json.loads((out / "metrics.json").read_text())["study"] == study.name
    assert set(record["figures"]) == {
        "activations.png",
        "dead_units.png",
        "grad_norms.png",
        "training.png",
    }
    table = (out / "table.md").read_text()
    assert "| plain | 6 | relu |" in table and "| residual | 6 | gelu |" in table
    m = record["metrics"]
    err, _where = study_module.tanh_approximation_error(2001)
    assert m["tanh_approx_max_abs_error"] == err and 4e-4 < err < 5e-4
    for setting in ("plain", "residual"):
        for act in ("relu", "gelu"):
            s = m["init"][setting]["depth_6"][act]
            assert len(s["grad_norm_mean"]) == 6 and all(v > 0 for v in s["grad_norm_mean"])
            assert all(0.0 <= v <= 1.0 for v in s["dead_fraction_mean"])
        assert m["init"][setting]["depth_6"]["gelu"]["dead_fraction_avg"] == 0.0
    # ReLU zeroes about half of all (input, unit) act' entries; GELU none
    assert 0.3 < sum(m["init"]["plain"]["depth_6"]["relu"]["zero_grad_fraction_mean"]) / 6 < 0.7
    assert m["training"]["lr_0.01"]["relu"]["steps"] == [0, 2, 4]
    assert m["meanfield_preact_ms"]["relu"] == pytest.approx([2.0] * 6, rel=1e-9)


def test_study_pairs_weights_across_activations() -> None:
    torch.manual_seed(3)
    a = study_module.Stack("plain", 3, 8, "relu")
    torch.manual_seed(3)
    b = study_module.Stack("plain", 3, 8, "gelu")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    with pytest.raises(ValueError, match="setting"):
        study_module.Stack("dense", 3, 8, "relu")


def assert_he_normal(weights: torch.Tensor, width: int) -> None:
    """``weights`` look like i.i.d. N(0, 2/width) draws, with tolerances sized to the sample.

    For n Gaussian draws the sample variance has relative standard deviation sqrt(2/(n-1)),
    the sample kurtosis standard deviation about sqrt(24/n) and the mean sqrt(var/n); each is
    allowed 6 of those. At n = 256² that is 3.3% on the variance (1.7% at 4·256²), so a variance
    of 1.5/width or 3/width (off by 25% and 50%) fails, and so does a uniform draw (kurtosis 1.8).
    """
    w = weights.detach().double().flatten()
    n, var = w.numel(), 2.0 / width
    assert abs(w.mean().item()) < 6 * math.sqrt(var / n)
    sample_var = w.var().item()
    assert abs(sample_var / var - 1) < 6 * math.sqrt(2 / (n - 1)), sample_var * width
    kurtosis = ((w - w.mean()) ** 4).mean().item() / sample_var**2
    assert abs(kurtosis - 3) < 6 * math.sqrt(24 / n), kurtosis


def test_plain_layers_are_he_normal() -> None:
    """W ~ N(0, 2/width), b = 0: He's gain for ReLU, as docs/derivations/gelu.md §4 assumes."""
    torch.manual_seed(5)
    width = 256
    stack = study_module.Stack("plain", 4, width, "relu")
    assert_he_normal(torch.stack([layer.w for layer in stack.layers]), width)
    for layer in stack.layers:  # each layer on its own: 65,536 draws, 3.3% on the variance
        assert_he_normal(layer.w, width)
        assert torch.equal(layer.b, torch.zeros(width))


def test_relu_theory_predicts_dead_units() -> None:
    """Measured dead fractions of the plain ReLU stack follow the infinite-width prediction."""
    depth, width, batch = 12, 128, 64
    measured, predicted = [], []
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        u = torch.randn(width, generator=gen) / math.sqrt(width)
        x, y = study_module.teacher_batch(batch, u, gen)
        torch.manual_seed(seed)
        model = study_module.Stack("plain", depth, width, "relu")
        measured.append(study_module.probe(model, x, y, "relu")["dead"])
        predicted.append(torch.tensor(study_module.relu_theory(x, depth)["dead_fraction"]))
    meas, pred = torch.stack(measured).mean(0), torch.stack(predicted).mean(0)
    assert meas[0] == 0 and pred[0] < 1e-6  # raw Gaussian inputs: nobody is dead
    assert meas[-4:].mean() > 0.1  # dead units pile up with depth ...
    assert (meas[-4:].mean() - pred[-4:].mean()).abs() < 0.05  # ... as predicted


def test_study_profiles_and_bad_config(tmp_path) -> None:
    study = get("feedforward.gradient_flow")
    full = study.config("full")
    assert full.depths == (16, 24) and full.seeds == 5
    quick = study.config("quick")
    assert quick.depths == (16,) and quick.seeds == 3 and quick.seed == 0
    for bad in (
        {"depths": (1,)},
        {"batch": 1},
        {"activations": ("swish",)},
        {"settings": ("dense",)},
        {"train_steps": -1},
    ):
        with pytest.raises(ValueError):
            study.run(dataclasses.replace(quick, **{**TINY, **bad}), tmp_path)
