"""LayerNorm / RMSNorm from tensor ops: same values and gradients as torch, and the geometry."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchformer.functional.normalization import layer_norm, rms_norm
from scratchformer.nn.norm import LayerNorm, RMSNorm, build_norm


def _randomise(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Move affine parameters away from (1, 0) so that their gradients are tested too."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))


def _values_and_grads(module: torch.nn.Module, x: torch.Tensor, upstream: torch.Tensor):
    x = x.clone().requires_grad_(True)
    y = module(x)
    y.backward(upstream)
    return y.detach(), x.grad, [p.grad for p in module.parameters()]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(7, 16), (2, 5, 64), (3,)])
def test_layer_norm_matches_torch_values_and_grads(shape, bias):
    gen = torch.Generator().manual_seed(0)
    dim = shape[-1]
    ours, ref = LayerNorm(dim, bias=bias), torch.nn.LayerNorm(dim, bias=bias)
    _randomise(ref, gen)
    ours.load_state_dict(ref.state_dict())  # same parameter names as torch.nn.LayerNorm
    x = 3.0 * torch.randn(shape, generator=gen) + 1.5
    upstream = torch.randn(shape, generator=gen)
    y1, gx1, gp1 = _values_and_grads(ours, x, upstream)
    y2, gx2, gp2 = _values_and_grads(ref, x, upstream)
    torch.testing.assert_close(y1, y2, atol=1e-6, rtol=0)
    torch.testing.assert_close(gx1, gx2, atol=1e-6, rtol=0)
    assert len(gp1) == len(gp2) == (2 if bias else 1)
    # Parameter gradients sum over all rows, so their rounding grows with their size: relative.
    for a, b in zip(gp1, gp2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_layer_norm_without_affine_has_no_parameters_and_matches_torch():
    x = torch.randn(4, 10, generator=torch.Generator().manual_seed(1))
    ours = LayerNorm(10, elementwise_affine=False)
    assert list(ours.parameters()) == []
    ref = torch.nn.functional.layer_norm(x, (10,))
    torch.testing.assert_close(ours(x), ref, atol=1e-6, rtol=0)


@pytest.mark.skipif(not hasattr(torch.nn, "RMSNorm"), reason="torch.nn.RMSNorm needs torch>=2.4")
@pytest.mark.parametrize("shape", [(7, 16), (2, 5, 64)])
def test_rms_norm_matches_torch_values_and_grads(shape):
    gen = torch.Generator().manual_seed(2)
    dim = shape[-1]
    ours, ref = RMSNorm(dim, eps=1e-6), torch.nn.RMSNorm(dim, eps=1e-6)
    _randomise(ref, gen)
    ours.load_state_dict(ref.state_dict())
    x = 2.0 * torch.randn(shape, generator=gen) - 0.5
    upstream = torch.randn(shape, generator=gen)
    y1, gx1, gp1 = _values_and_grads(ours, x, upstream)
    y2, gx2, gp2 = _values_and_grads(ref, x, upstream)
    torch.testing.assert_close(y1, y2, atol=1e-6, rtol=0)
    torch.testing.assert_close(gx1, gx2, atol=1e-6, rtol=0)
    torch.testing.assert_close(gp1[0], gp2[0], atol=1e-6, rtol=1e-6)


def test_rms_norm_functional_matches_definition_in_float64():
    x = torch.randn(3, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    w = torch.linspace(0.5, 2.0, 9, dtype=torch.float64)
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6) * w
    torch.testing.assert_close(rms_norm(x, w, eps=1e-6), expected, atol=1e-14, rtol=0)


# Vectors whose spread is far from zero, so that eps = 0 is safe in float64.
_rows = st.lists(
    st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False), min_size=2, max_size=48
).filter(lambda v: max(v) - min(v) > 1e-3)


@settings(max_examples=200, deadline=None)
@given(_rows)
def test_layer_norm_output_is_centred_sphere_of_radius_sqrt_d(values):
    """Before the affine map: sum(y) = 0 (orthogonal to all-ones) and |y| = sqrt(d)."""
    x = torch.tensor(values, dtype=torch.float64)
    d = x.numel()
    y = layer_norm(x, eps=0.0)
    scale = math.sqrt(d)
    assert abs(y.sum().item()) <= 1e-9 * scale
    assert abs(torch.linalg.vector_norm(y).item() - scale) <= 1e-9 * scale
    # and it is the same point as the standardised x (direction is preserved)
    z = (x - x.mean()) / (x - x.mean()).norm()
    torch.testing.assert_close(y / scale, z, atol=1e-12, rtol=0)


@settings(max_examples=200, deadline=None)
@given(_rows.filter(lambda v: max(abs(t) for t in v) > 1e-3))
def test_rms_norm_output_is_sphere_of_radius_sqrt_d(values):
    """Before the gain: |y| = sqrt(d), with y a positive multiple of x (no centring)."""
    x = torch.tensor(values, dtype=torch.float64)
    d = x.numel()
    y = rms_norm(x, eps=0.0)
    assert abs(torch.linalg.vector_norm(y).item() - math.sqrt(d)) <= 1e-9 * math.sqrt(d)
    torch.testing.assert_close(y / y.norm(), x / x.norm(), atol=1e-12, rtol=0)


def test_layer_norm_is_invariant_to_shift_and_positive_scale_of_each_row():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, 12, dtype=torch.float64, generator=gen)
    shift = torch.randn(5, 1, dtype=torch.float64, generator=gen)
    scale = torch.rand(5, 1, dtype=torch.float64, generator=gen) + 0.1
    torch.testing.assert_close(
        layer_norm(scale * x + shift, eps=0.0), layer_norm(x, eps=0.0), atol=1e-12, rtol=0
    )


def test_build_norm_picks_the_named_kind():
    assert isinstance(build_norm("layer", 8), LayerNorm)
    assert isinstance(build_norm("rms", 8), RMSNorm)
    with pytest.raises(ValueError, match="norm must be one of"):
        build_norm("batch", 8)


@pytest.mark.parametrize("cls", [LayerNorm, RMSNorm])
def test_norm_modules_reject_bad_arguments(cls):
    with pytest.raises(TypeError, match="dim must be an int"):
        cls(4.0)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        cls(0)
    with pytest.raises(ValueError, match=r"eps must be >= 0, got -1.0"):
        cls(4, eps=-1.0)
    with pytest.raises(ValueError, match=r"expects x.shape\[-1\] == 4, got \(2, 5\)"):
        cls(4)(torch.zeros(2, 5))


def test_functional_norms_reject_bad_inputs():
    with pytest.raises(TypeError, match="floating tensor"):
        layer_norm(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor"):
        rms_norm([1.0, 2.0])
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        layer_norm(torch.ones(3, 4), weight=torch.ones(5))
