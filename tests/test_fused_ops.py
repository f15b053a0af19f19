"""The derived-backward kernels: LayerNormFunction, GeluFunction, the FFN's addmm, the benchmark.

Each hand-written backward pass is checked three ways: ``gradcheck`` in float64 (against finite
differences), equality with autograd through the plain formula it replaces, and the identities
its derivation predicts (docs/derivations/layernorm-gradient.md, docs/derivations/gelu.md §5).
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchformer.functional.activations import (
    GELU_TANH_COEFF,
    GeluFunction,
    gelu,
    gelu_derivative,
)
from scratchformer.functional.normalization import LayerNormFunction, layer_norm
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.nn.feedforward import FeedForward
from scratchformer.nn.norm import LayerNorm

REPO_ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64


def formula_layer_norm(x, weight=None, bias=None, eps=1e-5):
    """LayerNorm as its defining formula, for autograd to differentiate."""
    centred = x - x.mean(dim=-1, keepdim=True)
    y = centred / torch.sqrt(centred.square().mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias


def formula_gelu(x, approximate="none"):
    """GELU as its formula, for autograd: x·Φ(x) with Φ from erfc, or the tanh form written
    x·σ(2u) as `gelu` evaluates it (½(1 + tanh u) = σ(2u), docs/derivations/gelu.md §3)."""
    if approximate == "none":
        return x * 0.5 * torch.erfc(-x / math.sqrt(2.0))
    u = math.sqrt(2.0 / math.pi) * (x + GELU_TANH_COEFF * x**3)
    return x * torch.sigmoid(2.0 * u)


def _affine_params(d: int, affine: str, gen: torch.Generator):
    weight = torch.randn(d, dtype=F64, generator=gen) if "w" in affine else None
    bias = torch.randn(d, dtype=F64, generator=gen) if "b" in affine else None
    return [p.requires_grad_() if p is not None else None for p in (weight, bias)]


# --- LayerNorm ----------------------------------------------------------------------------------


@pytest.mark.parametrize("affine", ["wb", "w", "b", ""])
@pytest.mark.parametrize("shape", [(5,), (3, 7), (2, 3, 6)])
def test_layer_norm_gradcheck(shape, affine):
    gen = torch.Generator().manual_seed(0)
    x = (2 * torch.randn(shape, dtype=F64, generator=gen) + 0.5).requires_grad_()
    weight, bias = _affine_params(shape[-1], affine, gen)
    inputs = tuple(t for t in (x, weight, bias) if t is not None)

    def fn(*args):
        it = iter(args)
        return LayerNormFunction.apply(
            next(it), next(it) if weight is not None else None,
            next(it) if bias is not None else None, 1e-5,
        )  # fmt: skip

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("affine", ["wb", "w", "b", ""])
def test_layer_norm_backward_equals_autograd_of_formula(affine):
    gen = torch.Generator().manual_seed(1)
    x = (3 * torch.randn(4, 9, 32, dtype=F64, generator=gen) - 1.0).requires_grad_()
    weight, bias = _affine_params(32, affine, gen)
    upstream = torch.randn(4, 9, 32, dtype=F64, generator=gen)
    inputs = [t for t in (x, weight, bias) if t is not None]
    ours = torch.autograd.grad(layer_norm(x, weight, bias), inputs, upstream)
    ref = torch.autograd.grad(formula_layer_norm(x, weight, bias), inputs, upstream)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


@settings(max_examples=50, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=12).filter(
            lambda r: max(r) - min(r) > 1e-3  # a row that is not (nearly) constant
        ),
        min_size=1,
        max_size=4,
    ).filter(lambda rows: len({len(r) for r in rows}) == 1),
    seed=st.integers(0, 2**31 - 1),
)
def test_layer_norm_input_gradient_is_orthogonal_to_ones_and_x_hat(rows, seed):
    """LN(x + c·1) = LN(x) and LN(s·x) = LN(x) (eps = 0) make dx ⊥ 1 and dx ⊥ x̂ in every row."""
    x = torch.tensor(rows, dtype=F64).requires_grad_()
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(x.shape[-1], dtype=F64, generator=gen)
    upstream = torch.randn(x.shape, dtype=F64, generator=gen)
    (dx,) = torch.autograd.grad(layer_norm(x, weight, None, eps=0.0), x, upstream)
    x_hat = layer_norm(x.detach(), eps=0.0)
    scale = upstream.abs().max() * weight.abs().max() / x.detach().std(dim=-1, correction=0)
    tol = 1e-9 * x.shape[-1] * scale.max()
    assert dx.sum(dim=-1).abs().max() <= tol
    assert (dx * x_hat).sum(dim=-1).abs().max() <= tol


def test_layer_norm_parameter_gradients_are_row_sums():
    """dweight = Σ_rows dy·x̂ and dbias = Σ_rows dy, over every leading axis."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 8, dtype=F64, generator=gen)
    weight = torch.randn(8, dtype=F64, generator=gen).requires_grad_()
    bias = torch.randn(8, dtype=F64, generator=gen).requires_grad_()
    upstream = torch.randn(3, 5, 8, dtype=F64, generator=gen)
    dw, db = torch.autograd.grad(layer_norm(x, weight, bias), (weight, bias), upstream)
    x_hat = formula_layer_norm(x)
    torch.testing.assert_close(dw, (upstream * x_hat).sum(dim=(0, 1)), atol=1e-12, rtol=0)
    torch.testing.assert_close(db, upstream.sum(dim=(0, 1)), atol=1e-12, rtol=0)


def test_layer_norm_float32_gradients_match_torch():
    gen = torch.Generator().manual_seed(3)
    x = (4 * torch.randn(12, 64, 128, generator=gen) + 2).requires_grad_()
    weight = torch.randn(128, generator=gen).requires_grad_()
    bias = torch.randn(128, generator=gen).requires_grad_()
    upstream = torch.randn(12, 64, 128, generator=gen)
    ours = torch.autograd.grad(layer_norm(x, weight, bias), (x, weight, bias), upstream)
    ref_out = torch.nn.functional.layer_norm(x, (128,), weight, bias, 1e-5)
    ref = torch.autograd.grad(ref_out, (x, weight, bias), upstream)
    torch.testing.assert_close(ours[0], ref[0], atol=1e-5, rtol=1e-5)
    for a, b in zip(ours[1:], ref[1:], strict=True):  # sums of 768 rows: relative error
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


def test_layer_norm_saves_no_graph_and_refuses_second_derivatives():
    x = torch.randn(3, 4, dtype=F64, requires_grad=True)
    (dx,) = torch.autograd.grad(layer_norm(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=r"once_differentiable|twice"):
        dx.sum().backward()


def test_layer_norm_output_can_be_edited_in_place():
    """The output is never the saved x̂, so editing it leaves the gradient intact."""
    x = torch.randn(2, 6, dtype=F64, requires_grad=True)
    y = layer_norm(x)
    (expected,) = torch.autograd.grad(formula_layer_norm(x), x, torch.ones_like(y))
    y.mul_(1.0)
    (got,) = torch.autograd.grad(y, x, torch.ones_like(y))
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


# --- GELU ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_gradcheck(approximate):
    gen = torch.Generator().manual_seed(4)
    x = torch.cat([3 * torch.randn(40, dtype=F64, generator=gen),
                   torch.tensor([-9.0, -4.0, 0.0, 4.0, 9.0], dtype=F64)])  # fmt: skip
    assert torch.autograd.gradcheck(
        lambda t: GeluFunction.apply(t, approximate), (x.requires_grad_(),)
    )


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_backward_equals_autograd_of_formula(approximate):
    x = torch.linspace(-30, 30, 60_001, dtype=F64).requires_grad_()
    upstream = torch.randn(x.shape, dtype=F64, generator=torch.Generator().manual_seed(5))
    (ours,) = torch.autograd.grad(gelu(x, approximate), x, upstream)
    (ref,) = torch.autograd.grad(formula_gelu(x, approximate), x, upstream)
    torch.testing.assert_close(ours, ref, atol=1e-13, rtol=1e-12)
    closed = gelu_derivative(x.detach(), approximate) * upstream
    torch.testing.assert_close(ours, closed, atol=1e-13, rtol=1e-12)


@pytest.mark.parametrize(("approximate", "bound"), [("none", 2e-7), ("tanh", 3e-6)])
def test_gelu_float32_gradient_is_as_accurate_as_autograd(approximate, bound):
    """Against the float64 closed form, our float32 backward errs no more than autograd through
    the float32 formula does (measured max: 1.1e-7 vs 1.3e-7 exact form; 2.0e-6 vs 2.1e-6 tanh
    form, where 1 − s = 1 − σ(2u) loses its digits for x ≈ 5 in both)."""
    x = torch.linspace(-12, 12, 100_001, dtype=torch.float32).requires_grad_()
    ref = gelu_derivative(x.detach().double(), approximate)
    (ours,) = torch.autograd.grad(gelu(x, approximate).sum(), x)
    (auto,) = torch.autograd.grad(formula_gelu(x, approximate).sum(), x)
    err_ours = (ours.double() - ref).abs().max().item()
    err_auto = (auto.double() - ref).abs().max().item()
    assert err_ours < bound and err_ours <= 1.1 * err_auto


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_gradient_at_special_values(approximate):
    """GELU' tends to 0 at −∞ and 1 at +∞; those limits come out exactly, NaN propagates."""
    values = [-math.inf, -1e30, -200.0, 0.0, 200.0, 1e30, math.inf, math.nan]
    x = torch.tensor(values, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(gelu(x, approximate).sum(), x)
    assert grad[:3].eq(0).all() and grad[3] == 0.5 and grad[4:7].eq(1).all()
    assert math.isnan(grad[7])


def test_exp2_form_of_the_normal_density():
    """e^(−x²/2) = 2^(−x²·log₂e/2): the identity the exact-form backward relies on."""
    x = torch.linspace(-12, 12, 10_001, dtype=F64)
    via_exp2 = torch.exp2(-0.5 * x * x / math.log(2.0))
    torch.testing.assert_close(via_exp2, torch.exp(-0.5 * x * x), atol=0, rtol=1e-13)


def test_gelu_saves_input_and_gate_only():
    """Two saved tensors, the input and the gate Φ(x), whatever the forward computed."""
    x = torch.randn(5, dtype=F64, requires_grad=True)
    y = gelu(x)
    saved = y.grad_fn.saved_tensors
    assert len(saved) == 2 and torch.equal(saved[0], x)
    torch.testing.assert_close(saved[1], 0.5 * torch.erfc(-x.detach() / math.sqrt(2.0)))


# --- the FFN's affine maps and the whole model ----------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_feedforward_addmm_equals_matmul_plus_bias(bias):
    gen = torch.Generator().manual_seed(6)
    ffn = FeedForward(6, 10, activation="gelu", bias=bias).double()
    x = torch.randn(2, 3, 6, dtype=F64, generator=gen).requires_grad_()
    y = ffn(x)
    w1, b1, w2, b2 = ffn.w1, ffn.b1, ffn.w2, ffn.b2
    h = x @ w1 + (b1 if bias else 0)
    ref = formula_gelu(h) @ w2 + (b2 if bias else 0)
    torch.testing.assert_close(y, ref, atol=1e-13, rtol=0)
    params = [x, *ffn.parameters()]
    for a, b in zip(torch.autograd.grad(y.sum(), params), torch.autograd.grad(ref.sum(), params),
                    strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.fixture
def train_step_bench(monkeypatch: pytest.MonkeyPatch):
    """``benchmarks.train_step`` (the package lives at the repository root, outside ``src``)."""
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    return importlib.import_module("benchmarks.train_step")


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
def test_fast_kernels_give_the_textbook_training_step(train_step_bench, activation):
    """Our GPT with its derived-backward kernels takes the same AdamW steps as with the textbook
    formulas differentiated by autograd (what the benchmark's --ablation rows time)."""
    bench = train_step_bench
    shape = bench.Shape(n_layers=2, n_heads=2, d_model=16, context_len=8, batch_size=3)
    batches = bench.make_batches(shape, 2, seed=0, device=torch.device("cpu"))
    losses, params = [], []
    for textbook in ((), bench.FAST_KERNELS):
        torch.manual_seed(0)
        c = bench.build_ours(shape, "sdpa", activation, textbook)
        c.model.double()
        step = bench.train_step(c, batches, bench.make_optimizer(c.model, "forloop"))
        losses.append(torch.stack([step() for _ in range(3)]))
        params.append(torch.cat([p.detach().flatten() for p in c.model.parameters()]))
    torch.testing.assert_close(losses[0], losses[1], atol=1e-12, rtol=0)
    torch.testing.assert_close(params[0], params[1], atol=1e-10, rtol=0)


def _torch_layer_norm(norm: LayerNorm):
    return lambda x: torch.nn.functional.layer_norm(
        x, (norm.dim,), norm.weight, norm.bias, norm.eps
    )


def test_gpt_gradients_match_torch_builtins_in_float32():
    """Our GPT's gradients against the same model with F.layer_norm and F.gelu swapped in."""
    config = GPTConfig(vocab_size=11, context_len=8, n_layers=2, n_heads=2, d_model=16,
                       activation="gelu")  # fmt: skip
    idx = torch.randint(11, (3, 8), generator=torch.Generator().manual_seed(7))
    grads = []
    for builtin in (False, True):
        torch.manual_seed(0)
        model = GPT(config)
        if builtin:
            for module in model.modules():
                if isinstance(module, FeedForward):
                    module.act = torch.nn.functional.gelu
                if isinstance(module, LayerNorm):
                    module.forward = _torch_layer_norm(module)
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


# --- the benchmark script -------------------------------------------------------------------------


def test_load_nanogpt_imports_a_model_file_by_path(train_step_bench, tmp_path):
    """--nanogpt takes model.py or its directory; nothing is imported from the repository."""
    (tmp_path / "model.py").write_text("MARKER = 42\n")
    assert train_step_bench.load_nanogpt(tmp_path).MARKER == 42
    assert train_step_bench.load_nanogpt(tmp_path / "model.py").MARKER == 42
    with pytest.raises(FileNotFoundError, match="--nanogpt"):
        train_step_bench.load_nanogpt(tmp_path / "missing")


def test_benchmark_runs_and_reports(train_step_bench, tmp_path):
    """A two-round run without nanoGPT: it says so, and writes JSON and Markdown tables."""
    threads = torch.get_num_threads()
    args = ["--no-hf", "--rounds", "2", "--warmup", "1", "--batches", "1", "--threads", "1"]
    try:
        report = train_step_bench.main([*args, "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)  # --threads sets it for the whole process
    names = [r["name"] for r in report["results"]]
    assert names == ["ours-sdpa", "ours-scratch"]
    assert any("nanogpt: skipped" in s for s in report["skipped"])
    for r in report["results"]:
        for clock in ("wall", "cpu"):
            ms = r[clock]["ms"]
            assert ms["n"] == 2 and 0 < ms["q1"] <= ms["median"] <= ms["q3"]
        assert abs(r["first_loss"] - math.log(65)) < 0.1  # an untrained model: about ln(vocab)
    assert (tmp_path / "train_step.json").exists()
    assert "ours-scratch" in (tmp_path / "train_step.md").read_text()


def test_benchmark_rejects_unknown_kernels_and_activations(train_step_bench):
    with pytest.raises(ValueError, match="kernels must be among"):
        train_step_bench.use_textbook(torch.nn.Linear(2, 2), ("softmax",))
    with pytest.raises(SystemExit):
        train_step_bench.parse_args(["--activations", "swish"])
