"""The fast paths of scratch attention against PyTorch's SDPA, and the benchmark's helpers.

``causal_attention`` (the tiled causal kernel behind ``is_causal=True``) must equal
``torch.nn.functional.scaled_dot_product_attention`` in values and gradients, in both of its
backward modes, whatever the tile shapes; the in-place general path must still broadcast masks.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchformer.functional.attention import AttentionFunction, scaled_dot_product_attention
from scratchformer.functional.causal_attention import (
    CausalAttentionFunction,
    _default_tiling,
    _exp_floor,
    _tiles,
    causal_attention,
)

F64_TOL = 1e-12
REPO_ROOT = Path(__file__).resolve().parents[1]


def _grads(fn, q, k, v, grad_out, **kwargs):
    """Output and (dq, dk, dv) of ``fn`` on fresh leaf copies of q, k, v."""
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v, **kwargs)
    return (out, *torch.autograd.grad(out, (q, k, v), grad_out))


def _sdpa_causal(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _random_qkv(shapes, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]


# --- the tiled causal kernel -------------------------------------------------------------------

SHAPES = {  # (q, k, v) shapes: equal lengths, more queries, more keys, broadcast batch axes
    "square": ((2, 3, 37, 8), (2, 3, 37, 8), (2, 3, 37, 5)),
    "more_queries": ((2, 2, 45, 4), (2, 2, 20, 4), (2, 2, 20, 6)),
    "more_keys": ((2, 2, 20, 4), (2, 2, 45, 4), (2, 2, 45, 3)),
    "broadcast": ((1, 3, 30, 4), (2, 1, 30, 4), (2, 3, 30, 2)),
    "unbatched": ((33, 4), (33, 4), (33, 4)),
}
TILINGS = {  # (block_rows, tile_elements): one tile, row blocks only, tiny tiles across the batch
    "one_tile": (256, 1 << 20),
    "row_blocks": (16, 1 << 20),
    "tiny_tiles": (7, 40),
}


@pytest.mark.parametrize("recompute", [False, True], ids=["saved_weights", "recompute"])
@pytest.mark.parametrize("tiling", list(TILINGS))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_causal_attention_matches_sdpa_float64(shape: str, tiling: str, recompute: bool) -> None:
    """Output and q/k/v gradients equal SDPA's (is_causal=True) to 1e-12 in float64."""
    q, k, v = _random_qkv(SHAPES[shape], seed=len(shape))
    L, Ev = q.shape[-2], v.shape[-1]
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    grad_out = torch.randn(*batch, L, Ev, dtype=torch.float64)
    rows, elements = TILINGS[tiling]
    ours = _grads(causal_attention, q, k, v, grad_out, recompute=recompute, block_rows=rows,
                  tile_elements=elements)  # fmt: skip
    ref = _grads(_sdpa_causal, q, k, v, grad_out)
    for name, a, b in zip(("out", "dq", "dk", "dv"), ours, ref, strict=True):
        assert a.shape == b.shape, name
        assert (a - b).abs().max().item() < F64_TOL, name
    with torch.no_grad():  # the inference path keeps nothing for a backward pass
        plain = causal_attention(q, k, v, block_rows=rows, tile_elements=elements)
    assert plain.grad_fn is None
    assert (plain - ref[0]).abs().max().item() < F64_TOL


@settings(max_examples=40, deadline=None)
@given(
    L=st.integers(1, 24),
    S=st.integers(1, 24),
    E=st.integers(1, 5),
    batch=st.integers(1, 3),
    block_rows=st.integers(1, 9),
    tile_elements=st.integers(1, 200),
    recompute=st.booleans(),
    scale=st.one_of(st.none(), st.floats(0.1, 2.0)),
    seed=st.integers(0, 2**16),
)
def test_causal_attention_random_tilings(
    L, S, E, batch, block_rows, tile_elements, recompute, scale, seed
) -> None:
    """Any lengths, tile shapes and scale: values and gradients match SDPA in float64."""
    q, k, v, grad_out = _random_qkv(
        [(batch, L, E), (batch, S, E), (batch, S, E), (batch, L, E)], seed
    )
    kwargs = {"recompute": recompute, "block_rows": block_rows, "tile_elements": tile_elements}
    ours = _grads(causal_attention, q, k, v, grad_out, scale=scale, **kwargs)
    ref = _grads(F.scaled_dot_product_attention, q, k, v, grad_out, is_causal=True, scale=scale)
    for a, b in zip(ours, ref, strict=True):
        assert (a - b).abs().max().item() < F64_TOL


@pytest.mark.parametrize("recompute", [False, True], ids=["saved_weights", "recompute"])
def test_causal_attention_float32_error_no_worse_than_sdpa(recompute: bool) -> None:
    """float32 at (2, 8, 300, 64): our error vs float64 is within 2× (+1e-7) of SDPA's own."""
    q, k, v, grad_out = _random_qkv([(2, 8, 300, 64)] * 4, seed=3)
    exact = _grads(_sdpa_causal, q, k, v, grad_out)
    f32 = [t.float() for t in (q, k, v, grad_out)]
    ours = _grads(causal_attention, *f32, recompute=recompute, block_rows=64, tile_elements=4096)
    sdpa = _grads(_sdpa_causal, *f32)
    for name, o, s, e in zip(("out", "dq", "dk", "dv"), ours, sdpa, exact, strict=True):
        err_ours = (o.double() - e).abs().max().item()
        err_sdpa = (s.double() - e).abs().max().item()
        assert err_ours <= 2 * err_sdpa + 1e-7, f"{name}: ours {err_ours:.2e}, sdpa {err_sdpa:.2e}"


@pytest.mark.parametrize("recompute", [False, True], ids=["saved_weights", "recompute"])
def test_first_query_gets_exactly_zero_gradient_in_float32(recompute: bool) -> None:
    """Query 0 sees key 0 only: A is one-hot there, δ = dA exactly, so dQ[0] is exactly 0."""
    q, k, v, grad_out = _random_qkv([(3, 4, 50, 16)] * 4, seed=4, dtype=torch.float32)
    _, dq, _, _ = _grads(causal_attention, q, k, v, grad_out, recompute=recompute, block_rows=8)
    assert torch.equal(dq[..., 0, :], torch.zeros_like(dq[..., 0, :]))
    assert dq[..., 1:, :].abs().min() >= 0 and dq[..., 1:, :].abs().max() > 0


@pytest.mark.parametrize("recompute", [False, True], ids=["saved_weights", "recompute"])
def test_future_keys_get_exactly_zero_gradient(recompute: bool) -> None:
    """Hidden weights are exact zeros: the last key, seen only by the last query, gets dK = dV = 0
    exactly when that query's upstream gradient is 0 (float32, tiles across the diagonal)."""
    q, k, v, grad_out = _random_qkv([(2, 3, 50, 8)] * 4, seed=7, dtype=torch.float32)
    grad_out[..., -1, :] = 0.0
    _, _, dk, dv = _grads(causal_attention, q, k, v, grad_out, recompute=recompute, block_rows=16)
    assert torch.equal(dk[..., -1, :], torch.zeros_like(dk[..., -1, :]))
    assert torch.equal(dv[..., -1, :], torch.zeros_like(dv[..., -1, :]))
    assert dk[..., -2, :].abs().max() > 0


def test_exp_floor_is_a_normal_number_and_absent_for_float16() -> None:
    """The clamp floor keeps exp() normal (its fast path) and is far below float rounding."""
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        floor = _exp_floor(dtype)
        tiny = torch.finfo(dtype).tiny
        assert floor is not None and tiny < math.exp(floor) < 3 * tiny
    assert _exp_floor(torch.float16) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("recompute", [False, True], ids=["saved_weights", "recompute"])
def test_sharp_attention_below_the_exp_floor(dtype: torch.dtype, recompute: bool) -> None:
    """Scores spread far beyond the floor (weights < 1e-38): still SDPA's answer to rounding."""
    q, k, v, grad_out = _random_qkv([(2, 2, 70, 16)] * 4, seed=8)
    scale = 400.0 if dtype == torch.float64 else 60.0
    spread = (q @ k.transpose(-2, -1)).tril().std().item() * scale
    assert spread > -(_exp_floor(dtype) or 0)  # most rows have exponents below the floor
    exact = _grads(F.scaled_dot_product_attention, q, k, v, grad_out, is_causal=True, scale=scale)
    xs = [t.to(dtype) for t in (q, k, v, grad_out)]
    ours = _grads(causal_attention, *xs, scale=scale, recompute=recompute, block_rows=16)
    sdpa = _grads(F.scaled_dot_product_attention, *xs, is_causal=True, scale=scale)
    for name, o, s, e in zip(("out", "dq", "dk", "dv"), ours, sdpa, exact, strict=True):
        err_ours = (o.double() - e).abs().max().item()
        err_sdpa = (s.double() - e).abs().max().item()
        # float64: rounding only, relative to gradients of size ~scale; float32: as SDPA's.
        tol = 1e-12 * e.abs().max().item() if dtype == torch.float64 else 2 * err_sdpa + 1e-6
        assert err_ours <= tol, f"{name}: ours {err_ours:.2e}, sdpa {err_sdpa:.2e}"


def test_tiles_cover_the_causal_triangle_once_and_skip_the_rest() -> None:
    """Each (batch row, query) lies in one tile that reaches exactly its last visible key."""
    L, S, N, rows = 100, 90, 5, 16
    tiles = list(_tiles(L, S, N, rows, 3000))
    seen = torch.zeros(N, L, dtype=torch.long)
    touched = 0
    for i0, i1, j1, b0, b1 in tiles:
        seen[b0:b1, i0:i1] += 1
        assert j1 == min(i1, S)  # every query in the block sees key i1-1 (or all S keys)
        assert (b1 - b0) * (i1 - i0) * j1 <= max(3000, (i1 - i0) * j1)
        touched += (b1 - b0) * (i1 - i0) * j1
    assert torch.equal(seen, torch.ones(N, L, dtype=torch.long))
    visible = sum(min(i + 1, S) for i in range(L)) * N
    assert visible <= touched <= visible + N * L * rows  # only the diagonal blocks overlap
    assert touched < 0.65 * N * L * S  # about half of the full L×S work is skipped


def test_default_tiling_is_cache_sized_on_cpu_and_one_tile_elsewhere() -> None:
    """CPU: blocks of 128 queries, ~2**20 scores per tile; a GPU gets one tile per call."""
    L, S, N = 1000, 1000, 64
    cpu = _tiles(L, S, N, *_default_tiling(torch.device("cpu"), L, S, N))
    assert len(cpu) > 8 and max((b1 - b0) * (i1 - i0) * j1 for i0, i1, j1, b0, b1 in cpu) <= 2**20
    for device in ("cuda", "mps"):  # only the device type is inspected: no GPU needed
        assert _tiles(L, S, N, *_default_tiling(torch.device(device), L, S, N)) == [(0, L, S, 0, N)]


def test_saved_memory_weights_versus_recompute() -> None:
    """Saved weights: about half of L×S per batch row; recompute: O(L) (log-sum-exp) only."""
    N, L, E = 4, 256, 8
    q, k, v = (torch.randn(N, L, E, requires_grad=True) for _ in range(3))
    saved = {}
    for recompute in (False, True):
        out = CausalAttentionFunction.apply(q, k, v, 0.5, recompute, 32, 1 << 16)
        saved[recompute] = sum(t.numel() for t in out.grad_fn.saved_tensors) - 3 * N * L * E
    assert saved[True] == N * L  # one log-sum-exp per query
    triangle = N * sum(min(i1, L) * 32 for i1 in range(32, L + 1, 32))
    assert saved[False] == triangle < 0.6 * N * L * L


def test_is_causal_dispatches_to_the_tiled_kernel() -> None:
    """scaled_dot_product_attention(is_causal=True) runs CausalAttentionFunction when training."""
    q, k, v = (torch.randn(2, 2, 9, 4, requires_grad=True) for _ in range(3))

    def graph_names(t: torch.Tensor) -> set[str]:
        names, stack = set(), [t.grad_fn]
        while stack:
            node = stack.pop()
            if node is not None:
                names.add(node.name())
                stack.extend(fn for fn, _ in node.next_functions)
        return names

    causal = graph_names(scaled_dot_product_attention(q, k, v, is_causal=True))
    assert any("CausalAttentionFunction" in n for n in causal)
    mask = torch.ones(9, 9, dtype=torch.bool).tril()
    general = graph_names(scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert not any("CausalAttentionFunction" in n for n in general)


@pytest.mark.parametrize("is_causal", [True, False])
def test_empty_lengths_like_sdpa(is_causal: bool) -> None:
    """No queries gives an empty output; no keys gives zeros (every query fully masked)."""
    for L, S in [(0, 3), (4, 0), (0, 0)]:
        q, k, v = torch.randn(2, L, 4), torch.randn(2, S, 4), torch.randn(2, S, 5)
        ours = scaled_dot_product_attention(q, k, v, is_causal=is_causal)
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
        assert ours.shape == ref.shape == (2, L, 5)
        assert torch.equal(ours, ref) and torch.equal(ours, torch.zeros(2, L, 5))
    assert torch.equal(causal_attention(q, k, v), torch.zeros(2, 0, 5))


def test_causal_attention_empty_lengths_give_zero_gradients() -> None:
    """No queries or no keys: zeros out and zero gradients of the inputs' shapes (broadcast)."""
    for L, S in [(0, 3), (4, 0)]:
        q = torch.randn(2, 1, L, 4, requires_grad=True)
        k = torch.randn(1, 3, S, 4, requires_grad=True)
        v = torch.randn(2, 3, S, 5, requires_grad=True)
        out = causal_attention(q, k, v)
        assert torch.equal(out, torch.zeros(2, 3, L, 5))
        out.sum().backward()
        for t in (q, k, v):
            assert torch.equal(t.grad, torch.zeros_like(t))


def test_causal_attention_bad_arguments() -> None:
    """Knobs are checked and named; shape errors are the general ones."""
    q = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match="block_rows must be >= 1, got 0"):
        causal_attention(q, q, q, block_rows=0)
    with pytest.raises(TypeError, match="tile_elements must be an int, got float"):
        causal_attention(q, q, q, tile_elements=1e6)
    with pytest.raises(TypeError, match="recompute must be a bool"):
        causal_attention(q, q, q, recompute="yes")
    with pytest.raises(ValueError, match="same last dimension E"):
        causal_attention(q, torch.randn(2, 5, 3), q)


# --- the in-place general path -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_general_path_masks_larger_than_the_scores(kind: str) -> None:
    """Value batch axes may enlarge the mask beyond Q Kᵀ: the out-of-place branch handles it."""
    g = torch.Generator().manual_seed(5)
    q = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(3, 7, 2, generator=g, dtype=torch.float64, requires_grad=True)
    if kind == "bool":
        mask = torch.rand(3, 6, 7, generator=g) > 0.3
        mask[..., 0] = True
    else:
        mask = torch.randn(3, 6, 7, generator=g, dtype=torch.float64)
    grad_out = torch.randn(3, 6, 2, generator=g, dtype=torch.float64)
    ours = _grads(scaled_dot_product_attention, q, k, v, grad_out, attn_mask=mask)

    def expanded_sdpa(q, k, v, attn_mask):  # PyTorch refuses such masks: expand q and k first
        return F.scaled_dot_product_attention(
            q.expand(3, 6, 4), k.expand(3, 7, 4), v, attn_mask=attn_mask
        )

    ref = _grads(expanded_sdpa, q, k, v, grad_out, attn_mask=mask)
    for a, b in zip(ours, ref, strict=True):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() < F64_TOL


def test_general_path_does_not_modify_its_inputs_or_mask() -> None:
    """In-place masking and softmax work on fresh score tensors, never on q, k, v or the mask."""
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(2, 5, 3, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.randn(2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    copies = [t.detach().clone() for t in (q, k, v, mask)]
    out = AttentionFunction.apply(q, k, v, 0.5, mask)
    (dm,) = torch.autograd.grad(out.sum(), mask)
    for t, c in zip((q, k, v, mask), copies, strict=True):
        assert torch.equal(t.detach(), c)
    assert torch.isfinite(dm).all() and dm.abs().max() > 0


# --- the benchmark -----------------------------------------------------------------------------


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):
    """The ``benchmarks`` package (it lives at the repository root, outside ``src``)."""
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    return importlib.import_module("benchmarks.causal_attention")


def test_summarize_and_interleaving(bench) -> None:
    """Median/quartiles as numpy computes them; every round runs each function, rotating order."""
    import numpy as np

    from benchmarks.common import interleaved_timings, summarize

    xs = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    st_ = summarize(xs)
    assert st_.median == np.median(xs) and st_.n == 6
    assert (st_.q1, st_.q3) == tuple(np.percentile(xs, [25, 75]))
    assert summarize([2.0]).iqr == 0.0
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    samples = interleaved_timings(fns, torch.device("cpu"), rounds=lambda warm: 3)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    assert all(len(s) == 3 for s in samples.values())


def test_benchmark_runs_and_writes_json_table_and_plot(bench, tmp_path: Path) -> None:
    """A tiny sweep of every variant against sdpa, an older module included; outputs written."""
    module = REPO_ROOT / "src" / "scratchformer" / "functional" / "attention.py"
    budget = 2 * 40 * 40 * 4 / 2**30 * 0.9  # full-score paths fit at L=16, not at L=40
    argv = ["--lengths", "16,40", "--batch", "1", "--heads", "2", "--head-dim", "8",
            "--repeats", "2", "--min-repeats", "2", "--no-memory", "--out", str(tmp_path),
            "--before-module", str(module), "--max-score-gib", str(budget), "--variants", "all",
            "--clock", "cpu", "--threads", "1"]  # fmt: skip
    bench.main(argv)
    saved = json.loads((tmp_path / "causal_attention.json").read_text())
    assert saved["config"]["lengths"] == [16, 40]
    assert saved["config"]["variants"][:2] == ["sdpa", "before"]
    measured = [r for r in saved["results"] if "ms" in r]
    skipped = {(r["variant"], r["length"]) for r in saved["results"] if "skipped" in r}
    full_scores = {"before", "naive", "chunked_autograd", "scratch_masked"}
    assert skipped == {(n, 40) for n in full_scores}
    assert len(measured) == 2 * (7 + 3)  # two modes; 7 variants at L=16, 3 at L=40
    assert all(r["ms"]["median"] > 0 and r["ratio_to_sdpa"]["median"] > 0 for r in measured)
    table = (tmp_path / "causal_attention.md").read_text()
    assert table.count("\n| 16 |") == 2 and "naive at L=40" in table
    assert (tmp_path / "causal_attention.png").stat().st_size > 0
    assert saved["micro"] == []  # only with --micro
    redrawn = bench.main(["--render", str(tmp_path / "causal_attention.json"),
                          "--out", str(tmp_path / "again")])  # fmt: skip
    assert redrawn == saved and (tmp_path / "again" / "causal_attention.md").read_text() == table
    micro = bench.micro_benchmarks(torch.device("cpu"), n=1024, big=1 << 16)
    assert [r["case"] for r in micro][:2] == ["exp(0)", "exp(-80)"] and len(micro) >= 8
    assert all(r["ms"]["median"] >= 0 and r["ms"]["n"] == 7 for r in micro)


def test_benchmark_memory_probe_reports_bytes(bench, capsys) -> None:
    """The memory probe (run in-process here) returns a byte count and says how it measured."""
    result = bench.main(["--memory-probe", "scratch", "fwd+bwd", "32", "--batch", "1",
                         "--heads", "1", "--head-dim", "8", "--device", "cpu"])  # fmt: skip
    assert isinstance(result["bytes"], int) and result["bytes"] >= 0
    assert "VmHWM" in result["method"]
    assert json.loads(capsys.readouterr().out.strip()) == result
