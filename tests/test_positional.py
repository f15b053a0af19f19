"""Sinusoidal positional encoding: values, rotation identity, Toeplitz Gram matrix, spectrum.

Each test checks a step of docs/derivations/positional-encoding.md by computation.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchformer.analysis.spectra import (
    cumulative_energy,
    energy_rank,
    entropy_effective_rank,
    gram_eigenvalues,
    numerical_rank,
    participation_ratio,
    singular_values,
    toeplitz_deviation,
)
from scratchformer.experiments.positional import closed_form_gram, resolution_rank_estimate
from scratchformer.experiments.registry import get
from scratchformer.experiments.runner import run_study
from scratchformer.functional.positional import (
    positional_frequencies,
    rotation_matrix,
    sinusoidal_positional_encoding,
)

F64 = torch.float64


def pe64(n: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    return sinusoidal_positional_encoding(n, dim, base, dtype=F64)


# ---------------------------------------------------------------------------- the table itself


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_shape_dtype_device(dtype):
    device = torch.empty(0).device  # wherever tensors are created by default
    pe = sinusoidal_positional_encoding(13, 10, dtype=dtype, device=device)
    assert pe.shape == (13, 10)
    assert pe.dtype == dtype
    assert pe.device == device
    assert positional_frequencies(10, dtype=dtype, device=device).shape == (5,)
    assert rotation_matrix(3, 10, dtype=dtype, device=device).shape == (10, 10)


def test_default_dtype_is_float32():
    assert sinusoidal_positional_encoding(4, 8).dtype == torch.float32


@pytest.mark.parametrize(("n", "dim", "base"), [(1, 2, 10000.0), (7, 6, 10000.0), (9, 8, 2.5)])
def test_values_match_python_math(n, dim, base):
    pe = sinusoidal_positional_encoding(n, dim, base, dtype=F64)
    for p in range(n):
        for i in range(dim // 2):
            w = base ** (-2 * i / dim)
            assert pe[p, 2 * i].item() == pytest.approx(math.sin(p * w), abs=1e-14)
            assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(p * w), abs=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_is_float64_rounded_once(dtype):
    # computed in float64 and cast once: the best a dtype can hold
    assert torch.equal(
        sinusoidal_positional_encoding(300, 64, dtype=dtype), pe64(300, 64).to(dtype)
    )


def test_frequencies_are_geometric_from_one():
    dim, base = 64, 10000.0
    w = positional_frequencies(dim, base, dtype=F64)
    assert w[0].item() == 1.0
    ratios = w[1:] / w[:-1]
    assert torch.allclose(ratios, torch.full_like(ratios, base ** (-2 / dim)), rtol=1e-13)
    assert w[-1].item() == pytest.approx(base ** (-(dim - 2) / dim), rel=1e-13)


def test_norm_squared_is_half_dim():
    pe = pe64(1000, 96)
    assert ((pe**2).sum(-1) - 48).abs().max() < 1e-12


# ------------------------------------------------------------------------ PE(p+k) = R(k) PE(p)


@pytest.mark.parametrize(("dim", "base"), [(2, 10000.0), (16, 10000.0), (64, 100.0), (128, 1e4)])
def test_rotation_identity(dim, base):
    n = 600
    pe = pe64(n, dim, base)
    for k in [-599, -250, -17, -1, 0, 1, 2, 3, 64, 255, 599]:
        R = rotation_matrix(k, dim, base, dtype=F64)
        lo, hi = max(0, -k), n - max(0, k)
        err = (pe[lo + k : hi + k] - pe[lo:hi] @ R.T).abs().max().item()
        assert err < 1e-10, f"dim {dim}, k {k}: {err}"


def test_rotation_sign_convention_for_sin_cos_pairs():
    # dim 2 has one frequency, omega_0 = 1: R(k) = [[cos k, sin k], [-sin k, cos k]]
    for k in (1, 2, -3):
        expected = torch.tensor(
            [[math.cos(k), math.sin(k)], [-math.sin(k), math.cos(k)]], dtype=F64
        )
        assert torch.allclose(rotation_matrix(k, 2, dtype=F64), expected, atol=1e-15)


@pytest.mark.parametrize("k", [-40, -1, 0, 1, 5, 1000])
def test_rotation_matrix_is_block_diagonal_orthogonal(k):
    dim = 32
    R = rotation_matrix(k, dim, dtype=F64)
    eye = torch.eye(dim, dtype=F64)
    assert (R @ R.T - eye).abs().max() < 1e-14
    assert torch.linalg.det(R).item() == pytest.approx(1.0, abs=1e-12)
    mask = torch.block_diag(*[torch.ones(2, 2, dtype=torch.bool)] * (dim // 2))
    assert torch.all(R[~mask] == 0)
    assert torch.allclose(rotation_matrix(-k, dim, dtype=F64), R.T, atol=1e-15)


def test_rotations_compose_by_adding_shifts():
    R = lambda k: rotation_matrix(k, 24, dtype=F64)  # noqa: E731
    for j, k in [(1, 2), (-7, 3), (100, 23)]:
        assert (R(j) @ R(k) - R(j + k)).abs().max() < 1e-12


# -------------------------------------------------------------------- Gram matrix is Toeplitz


@pytest.mark.parametrize("dim", [16, 64, 128, 512])
@pytest.mark.parametrize("n", [50, 101, 512, 1024])
def test_gram_is_shift_invariant_toeplitz(dim, n):
    pe = pe64(n, dim)
    G = pe @ pe.T
    for k in (1, 2, 7, n // 3, n - 2):
        dev = (G[k:, k:] - G[: n - k, : n - k]).abs().max().item()  # G[p+k, q+k] - G[p, q]
        assert dev < 1e-10, f"dim {dim}, n {n}, k {k}: {dev}"
    assert toeplitz_deviation(G) < 1e-10
    assert torch.equal(G, G.T) or (G - G.T).abs().max() < 1e-12


@pytest.mark.parametrize(("n", "dim", "base"), [(40, 16, 10000.0), (65, 32, 500.0)])
def test_gram_closed_form_sum_of_cosines(n, dim, base):
    pe = pe64(n, dim, base)
    G = pe @ pe.T
    w = positional_frequencies(dim, base, dtype=F64)
    p = torch.arange(n, dtype=F64)
    direct = torch.cos((p[:, None, None] - p[None, :, None]) * w).sum(-1)  # no Toeplitz shortcut
    assert (G - direct).abs().max() < 1e-10
    assert (G - closed_form_gram(n, dim, base)).abs().max() < 1e-10
    assert torch.allclose(torch.diagonal(G), torch.full((n,), dim / 2, dtype=F64), atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 64),
    half_dim=st.integers(1, 32),
    base=st.floats(1.01, 1e6, allow_nan=False),
    k=st.integers(-70, 70),
)
def test_properties_hold_for_any_size_and_base(n, half_dim, base, k):
    dim = 2 * half_dim
    pe = pe64(n, dim, base)
    assert pe.shape == (n, dim)
    assert pe.abs().max() <= 1.0
    assert ((pe**2).sum(-1) - dim / 2).abs().max() < 1e-12
    R = rotation_matrix(k, dim, base, dtype=F64)
    assert (R @ R.T - torch.eye(dim, dtype=F64)).abs().max() < 1e-13
    lo, hi = max(0, -k), n - max(0, k)
    if lo < hi:
        assert (pe[lo + k : hi + k] - pe[lo:hi] @ R.T).abs().max() < 1e-10
    G = pe @ pe.T
    assert toeplitz_deviation(G) < 1e-10
    assert (G - closed_form_gram(n, dim, base)).abs().max() < 1e-10
    w = positional_frequencies(dim, base, dtype=F64)
    assert torch.all(w[1:] < w[:-1]) and w[0] == 1.0


# ------------------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"dim": 7}, ValueError, r"dim must be even, got 7.*\(sin, cos\) pair"),
        ({"dim": 0}, ValueError, r"dim must be >= 2, got 0"),
        ({"num_positions": 0}, ValueError, r"num_positions must be >= 1, got 0"),
        ({"base": 1.0}, ValueError, r"base must be > 1, got 1.0"),
        ({"base": 0.5}, ValueError, r"base must be > 1, got 0.5"),
        ({"base": float("inf")}, ValueError, r"base must be a finite number, got inf"),
        ({"base": float("nan")}, ValueError, r"base must be a finite number, got nan"),
        ({"base": "10000"}, TypeError, r"base must be a real number, got str"),
        ({"num_positions": 3.0}, TypeError, r"num_positions must be an int, got float"),
        ({"dim": "8"}, TypeError, r"dim must be an int, got str"),
        ({"dim": True}, TypeError, r"dim must be an int, got bool"),
        ({"dtype": torch.int64}, TypeError, r"dtype must be a floating-point dtype.*int64"),
        ({"dtype": torch.complex64}, TypeError, r"floating-point dtype.*complex64"),
        ({"dtype": "float32"}, TypeError, r"dtype must be a torch.dtype, got str"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, exc, match):
    args = {"num_positions": 4, "dim": 8, "base": 10000.0, "dtype": torch.float32} | kwargs
    with pytest.raises(exc, match=match):
        sinusoidal_positional_encoding(
            args["num_positions"], args["dim"], args["base"], dtype=args["dtype"]
        )


def test_helpers_validate_too():
    with pytest.raises(ValueError, match="dim must be even"):
        positional_frequencies(5)
    with pytest.raises(TypeError, match=r"k must be an int, got float 1.5"):
        rotation_matrix(1.5, 8)
    with pytest.raises(ValueError, match=r"base must be > 1, got -3.0"):
        rotation_matrix(1, 8, base=-3.0)
    with pytest.raises(TypeError, match="floating-point"):
        positional_frequencies(8, dtype=torch.int32)


# -------------------------------------------------------------------------- spectral helpers


def test_gram_eigenvalues_match_eigvalsh():
    x = torch.randn(30, 12, generator=torch.Generator().manual_seed(0), dtype=F64)
    eig = torch.linalg.eigvalsh(x @ x.T).flip(0)[:12]
    assert torch.allclose(gram_eigenvalues(x), eig, rtol=1e-10)
    assert torch.allclose(singular_values(x) ** 2, eig, rtol=1e-10)


def test_effective_rank_measures_on_known_spectra():
    flat = torch.ones(5, dtype=F64)
    assert energy_rank(flat, 0.99) == 5
    assert energy_rank(flat, 0.6) == 3
    assert energy_rank(flat, 1.0) == 5
    assert participation_ratio(flat) == pytest.approx(5.0)
    assert entropy_effective_rank(flat) == pytest.approx(5.0)
    spike = torch.tensor([3.0, 0.0, 0.0])
    assert energy_rank(spike) == 1
    assert participation_ratio(spike) == pytest.approx(1.0)
    assert entropy_effective_rank(spike) == pytest.approx(1.0)
    cum = cumulative_energy(torch.tensor([1.0, 3.0]))  # sorted internally, largest first
    assert torch.allclose(cum, torch.tensor([0.75, 1.0], dtype=F64))


def test_numerical_rank_and_toeplitz_deviation():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(40, 3, generator=g, dtype=F64), torch.randn(3, 20, generator=g, dtype=F64)
    assert numerical_rank(a @ b) == 3
    assert numerical_rank(torch.zeros(4, 4)) == 0
    c = torch.randn(9, generator=g, dtype=F64)
    i = torch.arange(5)
    assert toeplitz_deviation(c[i[:, None] - i[None, :] + 4]) == 0.0
    assert toeplitz_deviation(torch.randn(5, 5, generator=g)) > 0.0


@pytest.mark.parametrize(
    ("fn", "arg", "exc", "match"),
    [
        (energy_rank, torch.tensor([1.0, -1.0]), ValueError, r"eigenvalues must be >= 0"),
        (participation_ratio, torch.zeros(3), ValueError, r"all zero"),
        (entropy_effective_rank, torch.ones(2, 2), ValueError, r"1-D tensor, got shape \(2, 2\)"),
        (cumulative_energy, [1.0, 2.0], TypeError, r"must be a torch.Tensor, got list"),
        (singular_values, torch.ones(3), ValueError, r"x must be 2-D, got shape \(3,\)"),
        (toeplitz_deviation, "M", TypeError, r"matrix must be a torch.Tensor, got str"),
    ],
)
def test_spectral_helpers_reject_bad_input(fn, arg, exc, match):
    with pytest.raises(exc, match=match):
        fn(arg)


def test_energy_rank_rejects_bad_fraction():
    with pytest.raises(ValueError, match=r"fraction must be <= 1, got 1.5"):
        energy_rank(torch.ones(3), 1.5)


# ------------------------------------------------------------------- what the spectrum says


def test_gram_rank_at_most_dim_and_trace_is_n_dim_over_two():
    n, dim = 300, 64
    pe = pe64(n, dim)
    lam = gram_eigenvalues(pe)
    assert lam.numel() == dim  # G = PE PE^T is n x n but has at most dim nonzero eigenvalues
    assert lam.sum().item() == pytest.approx(n * dim / 2, rel=1e-12)
    assert numerical_rank(pe @ pe.T) <= dim


def test_effective_rank_is_well_below_dim_and_spike_is_constant_direction():
    n, dim = 256, 128
    pe = pe64(n, dim)
    lam = gram_eigenvalues(pe)
    e99 = energy_rank(lam, 0.99)
    assert e99 < dim // 3  # 38 of 128
    assert energy_rank(lam, 0.999) - e99 <= 3  # the spectrum falls off a cliff: robust count
    assert numerical_rank(pe) < dim
    # the top direction is (almost) the constant vector, fed by the slow cos columns
    u = torch.linalg.svd(pe, full_matrices=False).U[:, 0]
    assert (u @ torch.ones(n, dtype=F64)).abs() / math.sqrt(n) > 0.99
    assert lam[0] / lam.sum() > 0.4


@pytest.mark.parametrize("base", [100.0, 10000.0, 1e6])
@pytest.mark.parametrize(("n", "dim"), [(101, 16), (101, 512), (1024, 16), (1024, 128)])
def test_resolution_estimate_predicts_energy_rank(base, n, dim):
    e99 = energy_rank(gram_eigenvalues(pe64(n, dim, base)), 0.99)
    est = resolution_rank_estimate(n, dim, base)
    assert abs(est - e99) <= 0.2 * e99, f"base {base}, n {n}, dim {dim}: {est:.1f} vs {e99}"


def test_effective_rank_saturates_at_n_over_pi():
    # frequencies stop at 1 rad/position: a window of n positions holds ~ n/pi directions
    n = 101
    ranks = [energy_rank(gram_eigenvalues(pe64(n, d)), 0.99) for d in (256, 512, 1024)]
    assert all(abs(r - n / math.pi) <= 0.1 * n / math.pi for r in ranks)


# ---------------------------------------------------------------------------------- the study


def test_study_runs_and_reports_the_identities(tmp_path):
    study = get("positional.encoding")
    quick = study.config("quick")
    assert (quick.num_positions, quick.dim, quick.base, quick.seed) == (101, 128, 10000.0, 0)
    assert study.config("full").gram_positions > quick.gram_positions
    cfg = study.config(
        "quick",
        {
            "num_positions": "21",
            "dim": "32",
            "gram_positions": "64",
            "sweep_dims": "8,16",
            "sweep_positions": "40",
        },
    )
    record = run_study(study, cfg, tmp_path)
    m = record["metrics"]
    expected = {
        "pe_heatmap.png",
        "gram_heatmap.png",
        "gram_spectrum.png",
        "dot_vs_shift.png",
        "effective_rank_vs_dim.png",
    }
    assert set(record["figures"]) == expected
    for name in expected:
        assert (tmp_path / "positional.encoding" / name).stat().st_size > 0
    for key in (
        "toeplitz_max_deviation",
        "closed_form_max_error",
        "rotation_max_error",
        "dot_product_shift_max_error",
        "norm_squared_max_error",
        "rotation_orthogonality_error",
        "sweep_max_toeplitz_deviation",
    ):
        assert m[key] < 1e-10, key
    assert m["float32_max_error"] < 1e-7
    assert m["trace"] == pytest.approx(64 * 32 / 2)
    assert 1 <= m["energy_rank_99"] <= m["numerical_rank"] <= 32
    assert [(r["num_positions"], r["dim"]) for r in m["sweep"]] == [(40, 8), (40, 16)]
    stored = json.loads((tmp_path / "positional.encoding" / "metrics.json").read_text())
    assert stored["metrics"]["energy_rank_99"] == m["energy_rank_99"]


def test_study_rejects_too_short_windows():
    from scratchformer.experiments.registry import StudyError

    study = get("positional.encoding")
    with pytest.raises(StudyError, match="gram_positions must be >= 2"):
        study.config("quick", {"gram_positions": "1"})
