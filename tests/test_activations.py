"""Checks of scratchformer.functional.activations and the claims of docs/derivations/gelu.md."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchformer.functional.activations import (
    ACTIVATIONS,
    GELU_TANH_COEFF,
    activation_derivative,
    gelu,
    gelu_derivative,
    get_activation,
    relu,
    relu_derivative,
    standard_normal_cdf,
    standard_normal_pdf,
)

APPROXIMATIONS = ("none", "tanh")
EXTREMES = [-1e30, -1e4, -100.0, -40.0, -1e-30, -1e-45, -0.0, 0.0, 1e-45, 1e-30, 40.0, 1e4, 1e30]


def grid(dtype: torch.dtype, n: int = 400_001, limit: float = 20.0) -> torch.Tensor:
    """A dense grid on [−limit, limit] plus extreme and tiny values."""
    dense = torch.linspace(-limit, limit, n, dtype=dtype)
    return torch.cat([dense, torch.tensor(EXTREMES, dtype=dtype)])


# --- agreement with PyTorch's own GELU -------------------------------------------------------


@pytest.mark.parametrize("approximate", APPROXIMATIONS)
def test_gelu_matches_torch_float32(approximate: str) -> None:
    # 2e-6 rather than 1e-6: F.gelu's own float32 error reaches 1.2e-6 near x = ±3.5 (it forms
    # 1 + erf(x/√2), which cancels); ours stays below 1e-6 (next test).
    x = grid(torch.float32)
    torch.testing.assert_close(
        gelu(x, approximate), F.gelu(x, approximate=approximate), atol=2e-6, rtol=1e-6
    )


@pytest.mark.parametrize("approximate", APPROXIMATIONS)
def test_gelu_float32_error_against_float64_reference(approximate: str) -> None:
    # F.gelu in float64 is an independent reference; our float32 values sit within 1e-6 of it
    # (plus float32 rounding of large results). Measured: ≈ 4e-7 (none), ≈ 3e-7 (tanh).
    x = grid(torch.float32)
    ref = F.gelu(x.double(), approximate=approximate)
    err = (gelu(x, approximate).double() - ref).abs()
    assert (err <= 1e-6 + 2.0**-24 * ref.abs()).all(), err.max().item()
    if approximate == "none":  # erfc keeps the left tail that 1 + erf loses
        # Compared where the claim is about, x in [-10, -3]: relative error of a tiny result.
        # (The largest absolute errors of both sit at large positive x, where each is the
        # float32 rounding of a result close to x, and their order there is no evidence.)
        # The reference there is x·erfc(−x/√2)/2 in float64 (float64 1 + erf cancels too).
        xt = x[(x >= -10) & (x <= -3)]
        xd = xt.double()
        tail_ref = 0.5 * xd * torch.special.erfc(-xd / math.sqrt(2.0))
        ours_rel = ((gelu(xt, approximate).double() - tail_ref) / tail_ref).abs().max()
        torch_rel = ((F.gelu(xt).double() - tail_ref) / tail_ref).abs().max()
        assert ours_rel < 1e-5 < torch_rel, (ours_rel.item(), torch_rel.item())


@pytest.mark.parametrize("approximate", APPROXIMATIONS)
def test_gelu_matches_torch_float64(approximate: str) -> None:
    x = grid(torch.float64)
    torch.testing.assert_close(
        gelu(x, approximate), F.gelu(x, approximate=approximate), atol=1e-12, rtol=1e-12
    )


@pytest.mark.parametrize("approximate", APPROXIMATIONS)
def test_special_values(approximate: str) -> None:
    # Limits rather than NaN at ±∞ (this torch's F.gelu returns NaN there); NaN propagates.
    x = torch.tensor([-math.inf, math.inf, math.nan, 0.0], dtype=torch.float64)
    y = gelu(x, approximate)
    assert y[0] == 0 and y[1] == math.inf and math.isnan(y[2]) and y[3] == 0
    d = gelu_derivative(x, approximate)
    assert d[0] == 0 and d[1] == 1 and math.isnan(d[2]) and d[3] == 0.5
    assert gelu(torch.tensor([-1e4]), approximate).item() == 0.0
    assert gelu(torch.tensor([1e4]), approximate).item() == 1e4


def test_gelu_half_precision_runs() -> None:
    x = torch.linspace(-4, 4, 101)
    for dtype in (torch.bfloat16, torch.float16):
        y = gelu(x.to(dtype))
        assert y.dtype == dtype
        torch.testing.assert_close(y.float(), gelu(x), atol=2e-2, rtol=1e-2)


# --- the tanh approximation ------------------------------------------------------------------


def test_tanh_approximation_max_error() -> None:
    """max |GELU_tanh(x) − GELU(x)| on a dense float64 grid (measured ≈ 4.73e-4 at |x| ≈ 2.70)."""
    x = torch.linspace(-10, 10, 2_000_001, dtype=torch.float64)
    err = (gelu(x, "tanh") - gelu(x)).abs()
    max_err, where = err.max().item(), x[err.argmax()].item()
    print(f"\nmax |GELU_tanh − GELU| = {max_err:.4e} at x = {where:.4f}")
    assert 4e-4 < max_err < 5e-4  # small, but not zero: the two forms really differ
    assert 2.6 < abs(where) < 2.8
    assert err[x.abs() > 8].max() < 1e-12  # the error dies out in both tails


def test_tanh_coefficients_from_taylor_series() -> None:
    """Matching ½(1 + tanh(c(x + a x³))) to Φ(x) through x³ gives c = √(2/π), a = 2/(3π) − 1/6."""
    x, c, a = sp.symbols("x c a", real=True)
    phi_cdf = (1 + sp.erf(x / sp.sqrt(2))) / 2
    approx = (1 + sp.tanh(c * (x + a * x**3))) / 2
    diff = sp.expand(sp.series(phi_cdf - approx, x, 0, 5).removeO())
    coeffs = [diff.coeff(x, k) for k in range(5)]  # constant, x, x², x³, x⁴
    assert all(sp.simplify(coeffs[k]) == 0 for k in (0, 2, 4))
    sols = sp.solve([coeffs[1], coeffs[3]], [c, a], dict=True)
    pos = [s for s in sols if s[c].is_positive]
    assert len(pos) == 1
    assert sp.simplify(pos[0][c] - sp.sqrt(2 / sp.pi)) == 0
    taylor_a = pos[0][a]
    assert sp.simplify(taylor_a - (sp.Rational(2, 3) / sp.pi - sp.Rational(1, 6))) == 0
    # 0.044715 is *not* the Taylor value (≈ 0.04554) ...
    assert abs(float(taylor_a) - 0.0455399) < 1e-6
    assert abs(float(taylor_a) - GELU_TANH_COEFF) > 8e-4


def _golden_section_min(f, lo: float, hi: float, iters: int = 40) -> float:
    """Minimiser of a unimodal ``f`` on [lo, hi], one new evaluation per step."""
    g = (math.sqrt(5) - 1) / 2
    m1, m2 = hi - g * (hi - lo), lo + g * (hi - lo)
    f1, f2 = f(m1), f(m2)
    for _ in range(iters):
        if f1 < f2:
            hi, m2, f2 = m2, m1, f1
            m1 = hi - g * (hi - lo)
            f1 = f(m1)
        else:
            lo, m1, f1 = m1, m2, f2
            m2 = lo + g * (hi - lo)
            f2 = f(m2)
    return (lo + hi) / 2


def test_tanh_coefficient_is_minimax_for_phi() -> None:
    """... it is, to 6 digits, the a minimising max_x |½(1 + tanh(·)) − Φ(x)| (error ≈ 1.79e-4)."""
    x = torch.linspace(-8, 8, 80_001, dtype=torch.float64)
    cdf = standard_normal_cdf(x)

    def cdf_err(a: float) -> float:
        u = math.sqrt(2 / math.pi) * (x + a * x**3)
        return (torch.sigmoid(2 * u) - cdf).abs().max().item()

    best = _golden_section_min(cdf_err, 0.040, 0.050)
    assert abs(best - GELU_TANH_COEFF) < 5e-6, best
    assert 1.7e-4 < cdf_err(GELU_TANH_COEFF) < 1.9e-4

    # and it beats the Taylor coefficient on GELU's own maximum error
    def gelu_err(a: float) -> float:
        u = math.sqrt(2 / math.pi) * (x + a * x**3)
        return (x * torch.sigmoid(2 * u) - x * cdf).abs().max().item()

    taylor_a = 2 / (3 * math.pi) - 1 / 6
    assert gelu_err(taylor_a) == pytest.approx(7.46e-4, rel=1e-2)
    assert gelu_err(GELU_TANH_COEFF) < 0.7 * gelu_err(taylor_a)


def test_sigmoid_form_equals_tanh_form() -> None:
    """½x(1 + tanh u) = x·σ(2u): the form we evaluate is the textbook formula."""
    x = torch.linspace(-6, 6, 10_001, dtype=torch.float64)
    u = math.sqrt(2 / math.pi) * (x + GELU_TANH_COEFF * x**3)
    textbook = 0.5 * x * (1 + torch.tanh(u))
    torch.testing.assert_close(gelu(x, "tanh"), textbook, atol=1e-15, rtol=1e-15)


# --- derivatives -----------------------------------------------------------------------------


@pytest.mark.parametrize("approximate", APPROXIMATIONS)
def test_derivative_matches_autograd(approximate: str) -> None:
    x = torch.linspace(-30, 30, 200_001, dtype=torch.float64).requires_grad_()
    (auto,) = torch.autograd.grad(gelu(x, approximate).sum(), x)
    closed = gelu_derivative(x.detach(), approximate)
    assert (auto - closed).abs().max().item() < 1e-12


@pytest.mark.parametrize("approximate", APPROXIMATIONS)
def test_gradcheck(approximate: str) -> None:
    gen = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(64, generator=gen, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: gelu(t, approximate), (x,))
    assert torch.autograd.gradcheck(lambda t: gelu_derivative(t, approximate), (x,))


def test_relu_and_its_derivative() -> None:
    x = torch.cat([grid(torch.float64, 10_001), torch.tensor([math.nan, -math.inf, math.inf])])
    torch.testing.assert_close(relu(x), F.relu(x), equal_nan=True)
    d = relu_derivative(x)
    assert d[x > 0].eq(1).all() and d[x <= 0].eq(0).all() and d[x.isnan()].isnan().all()
    xr = x[x.isfinite()].clone().requires_grad_()
    (auto,) = torch.autograd.grad(F.relu(xr).sum(), xr)  # PyTorch's convention: 0 at x = 0
    assert torch.equal(auto, relu_derivative(xr.detach()))


def test_normal_cdf_and_pdf() -> None:
    xs = [-37.5, -20.0, -8.0, -3.0, -0.5, 0.0, 0.7, 2.0, 6.0]
    x = torch.tensor(xs, dtype=torch.float64).requires_grad_()
    cdf = standard_normal_cdf(x)
    for xi, ci in zip(xs, cdf.tolist(), strict=True):
        ref = 0.5 * math.erfc(-xi / math.sqrt(2))
        assert ci == pytest.approx(ref, rel=1e-13)  # relative precision kept in the left tail
    (dcdf,) = torch.autograd.grad(cdf.sum(), x)
    torch.testing.assert_close(dcdf, standard_normal_pdf(x.detach()), atol=1e-15, rtol=1e-12)
    t = torch.linspace(-12, 12, 100_001, dtype=torch.float64)
    assert torch.trapezoid(standard_normal_pdf(t), t).item() == pytest.approx(1.0, abs=1e-12)


# --- the shape of GELU (docs/derivations/gelu.md §2) ------------------------------------------


def _bisect(f, lo: float, hi: float, iters: int = 200) -> float:
    flo = f(lo)
    for _ in range(iters):
        mid = (lo + hi) / 2
        if (f(mid) > 0) == (flo > 0):
            lo, flo = mid, f(mid)
        else:
            hi = mid
    return (lo + hi) / 2


def test_gelu_minimum_and_unique_critical_point() -> None:
    def d(v: float) -> float:
        return gelu_derivative(torch.tensor([v], dtype=torch.float64)).item()

    x_star = _bisect(d, -1.0, -0.5)
    value = gelu(torch.tensor([x_star], dtype=torch.float64)).item()
    assert x_star == pytest.approx(-0.751791, abs=1e-6)
    assert value == pytest.approx(-0.169971, abs=1e-6)
    x = torch.linspace(-40, 40, 800_001, dtype=torch.float64)
    y, dy = gelu(x), gelu_derivative(x)
    assert y.min().item() >= value - 1e-15  # the global minimum
    sign = torch.sign(dy[dy != 0])
    assert (sign[1:] != sign[:-1]).sum().item() == 1  # the derivative changes sign exactly once
    left, right = (x < x_star - 1e-3), (x > x_star + 1e-3)
    assert (dy[left] <= 0).all() and (dy[left & (x > -30)] < 0).all()  # 0 only by underflow
    assert (dy[right] > 0).all()


def test_derivative_range_is_attained_at_plus_minus_sqrt2() -> None:
    """GELU'' = φ(x)(2 − x²): GELU' ranges over [Φ(−√2) − √2φ(√2), Φ(√2) + √2φ(√2)]."""
    x = torch.linspace(-40, 40, 800_001, dtype=torch.float64)
    dy = gelu_derivative(x)
    r2 = torch.tensor([math.sqrt(2)], dtype=torch.float64)
    lo = (standard_normal_cdf(-r2) - r2 * standard_normal_pdf(r2)).item()
    hi = (standard_normal_cdf(r2) + r2 * standard_normal_pdf(r2)).item()
    assert lo == pytest.approx(-0.128904, abs=1e-6) and hi == pytest.approx(1.128904, abs=1e-6)
    assert lo + hi == pytest.approx(1.0, abs=1e-15)
    assert dy.min().item() >= lo - 1e-15 and dy.max().item() <= hi + 1e-15
    assert x[dy.argmin()].item() == pytest.approx(-math.sqrt(2), abs=1e-3)
    xr = x.clone().requires_grad_()
    (second,) = torch.autograd.grad(gelu_derivative(xr).sum(), xr)
    expected = standard_normal_pdf(x) * (2 - x * x)
    torch.testing.assert_close(second, expected, atol=1e-14, rtol=1e-12)


def test_gelu_is_relu_minus_a_bounded_correction() -> None:
    """GELU(x) = ReLU(x) − |x|Φ(−|x|), and the correction is at most 0.16997."""
    x = torch.linspace(-30, 30, 600_001, dtype=torch.float64)
    corr = x.abs() * standard_normal_cdf(-x.abs())
    torch.testing.assert_close(gelu(x), relu(x) - corr, atol=1e-15, rtol=1e-15)
    assert corr.max().item() == pytest.approx(0.169971, abs=1e-6)


def test_gelu_near_zero_taylor() -> None:
    """GELU(x) = x/2 + x²/√(2π) + O(x⁴): half of a linear unit plus a quadratic bump."""
    x = torch.tensor([1e-3, -1e-3, 1e-2, -1e-2], dtype=torch.float64)
    torch.testing.assert_close(gelu(x), x / 2 + x * x / math.sqrt(2 * math.pi), atol=1e-9, rtol=0)


def test_stochastic_regulariser_expectation() -> None:
    """GELU(x) = E[x·m] with m = 1[ε ≤ x], ε ~ N(0, 1), i.e. m ~ Bernoulli(Φ(x)); Monte Carlo."""
    gen = torch.Generator().manual_seed(0)
    n = 400_000
    for xv in (-2.0, -0.75, 0.0, 0.4, 1.5, 3.0):
        eps = torch.randn(n, generator=gen, dtype=torch.float64)
        samples = xv * (eps <= xv).double()
        mean, se = samples.mean().item(), samples.std().item() / math.sqrt(n)
        expected = gelu(torch.tensor([xv], dtype=torch.float64)).item()
        assert abs(mean - expected) <= 5 * se + 1e-12, (xv, mean, expected, se)


# --- properties over arbitrary inputs --------------------------------------------------------

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(v=finite)
def test_property_bounds_and_odd_part(v: float) -> None:
    x = torch.tensor([v, -v], dtype=torch.float64)
    y = gelu(x)
    # GELU(x) − GELU(−x) = x(Φ(x) + Φ(−x)) = x
    assert (y[0] - y[1]).item() == pytest.approx(v, rel=1e-12, abs=1e-15)
    assert (relu(x) - 0.16998 <= y).all() and (y <= relu(x)).all()
    assert ((gelu(x, "tanh") - y).abs() < 5e-4).all()
    d = gelu_derivative(x)
    assert (d[0] + d[1]).item() == pytest.approx(1.0, abs=1e-12)  # from the odd-part identity
    assert ((d >= -0.12891) & (d <= 1.12891)).all()


@settings(max_examples=200, deadline=None)
@given(v=st.floats(-12, 12, allow_nan=False), approximate=st.sampled_from(APPROXIMATIONS))
def test_property_derivative_matches_finite_difference(v: float, approximate: str) -> None:
    h = 1e-5
    x = torch.tensor([v - h, v, v + h], dtype=torch.float64)
    y = gelu(x, approximate)
    fd = ((y[2] - y[0]) / (2 * h)).item()
    assert gelu_derivative(x, approximate)[1].item() == pytest.approx(fd, abs=1e-8)


@settings(max_examples=50, deadline=None)
@given(
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=4),
    name=st.sampled_from(sorted(ACTIVATIONS)),
)
def test_property_shape_and_dtype_preserved(shape: list[int], name: str) -> None:
    x = torch.randn(shape, dtype=torch.float64)
    for fn in (get_activation(name), activation_derivative(name)):
        y = fn(x)
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device


# --- argument validation ---------------------------------------------------------------------


def test_bad_arguments() -> None:
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="approximate"):
        gelu(x, approximate="fast")
    with pytest.raises(ValueError, match="approximate"):
        gelu_derivative(x, approximate="erf")
    for fn in (gelu, gelu_derivative, relu, relu_derivative, standard_normal_cdf):
        with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
            fn([0.0, 1.0])
        with pytest.raises(TypeError, match="floating-point"):
            fn(torch.arange(3))
    with pytest.raises(ValueError, match="activation must be one of"):
        get_activation("swish")
    with pytest.raises(ValueError, match="activation must be one of"):
        activation_derivative(None)  # type: ignore[arg-type]


def test_activation_table_is_consistent() -> None:
    x = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    torch.testing.assert_close(get_activation("gelu")(x), F.gelu(x))
    torch.testing.assert_close(get_activation("gelu_tanh")(x), F.gelu(x, approximate="tanh"))
    torch.testing.assert_close(get_activation("relu")(x), F.relu(x))
    for name in ACTIVATIONS:
        xr = x.clone().requires_grad_()
        (auto,) = torch.autograd.grad(get_activation(name)(xr).sum(), xr)
        keep = x != 0  # ReLU has no derivative at 0
        torch.testing.assert_close(auto[keep], activation_derivative(name)(x)[keep])


def test_negative_side_gradient_is_small_but_not_zero() -> None:
    """GELU'(−2) ≈ −0.0852, GELU'(−3) ≈ −0.0120 where ReLU' = 0; exact zeros only by underflow,
    below x ≈ −14.34 in float32 (tanh form: −10.06) and −38.58 in float64 (tanh: −21.16)."""
    d = gelu_derivative(torch.tensor([-2.0, -3.0], dtype=torch.float64))
    assert d.tolist() == pytest.approx([-0.085231, -0.011945], abs=1e-6)
    for dtype, approximate, last_nonzero in (
        (torch.float32, "none", -14.3),
        (torch.float32, "tanh", -10.0),
        (torch.float64, "none", -38.5),
        (torch.float64, "tanh", -21.1),
    ):
        x = torch.linspace(last_nonzero, 0, 10_001, dtype=dtype)
        assert (gelu_derivative(x, approximate) != 0).all()
        assert gelu_derivative(torch.tensor([last_nonzero - 0.1], dtype=dtype), approximate) == 0
