"""Checks of MoEFeedForward: dispatch against a per-token loop, gradients, balancing, GPT use."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from scratchformer.experiments import moe as moe_study
from scratchformer.experiments import registry
from scratchformer.experiments.moe import balance_metrics
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.nn.feedforward import FeedForward
from scratchformer.nn.moe import MoEFeedForward, load_balance_loss, load_stats


def naive_moe(m: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    """The layer's output computed one token and one selected expert at a time."""
    flat = x.reshape(-1, m.d_model)
    rows = []
    for t in range(flat.shape[0]):
        xt = flat[t]
        z = xt @ m.w_router
        a = torch.softmax(z, -1) if m.router == "softmax" else torch.sigmoid(z)
        bias = m.expert_bias if m.balance == "bias" else torch.zeros(m.n_experts)
        chosen = sorted(range(m.n_experts), key=lambda i: -float(a[i].detach() + bias[i]))
        chosen = chosen[:m.top_k]
        total = sum(a[i] for i in chosen) if m.normalize else 1.0
        y = torch.zeros_like(xt)
        for i in chosen:
            h = xt @ m.w1[i] + (m.b1[i] if m.b1 is not None else 0)
            h = m.act(h) @ m.w2[i] + (m.b2[i] if m.b2 is not None else 0)
            y = y + a[i] / total * h
        if m.shared is not None:
            y = y + m.shared(xt)
        rows.append(y)
    return torch.stack(rows).view(x.shape)


CASES = {
    "top1": dict(n_experts=4, top_k=1),
    "top2": dict(n_experts=4, top_k=2),
    "dense": dict(n_experts=4, top_k=4),
    "shared": dict(n_experts=4, top_k=2, n_shared=2, shared_hidden=6),
    "fine_grained": dict(n_experts=16, top_k=4, d_hidden=4, n_shared=1),
    "sigmoid": dict(n_experts=6, top_k=2, router="sigmoid"),
    "top1_normalised": dict(n_experts=4, top_k=1, normalize=True),
    "bias": dict(n_experts=4, top_k=2, balance="bias"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_batched_dispatch_matches_per_token_loop(name: str) -> None:
    kwargs = {"d_hidden": 16, **CASES[name]}
    torch.manual_seed(0)
    m = MoEFeedForward(8, **kwargs).double()
    m.expert_bias.normal_(0.0, 0.2)  # used for selection only when balance="bias"
    x = torch.randn(3, 7, 8, dtype=torch.float64)
    y = m(x)
    grads = torch.autograd.grad(y.square().sum(), list(m.parameters()))
    y_ref = naive_moe(m, x)
    grads_ref = torch.autograd.grad(y_ref.square().sum(), list(m.parameters()))
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(top_k=1), dict(top_k=2, n_shared=1),
                                    dict(top_k=2, router="sigmoid")])
def test_gradcheck_float64(kwargs: dict) -> None:
    torch.manual_seed(1)
    m = MoEFeedForward(4, 5, n_experts=3, **kwargs).double()
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    params = (m.w_router, m.w1, m.w2, m.b1, m.b2)

    def f(x, *ps):
        out = torch.func.functional_call(m, dict(zip(
            ("w_router", "w1", "w2", "b1", "b2"), ps, strict=True)), (x,))
        return out, m.aux_loss, m.z_loss

    inputs = (x, *(p.detach().clone().requires_grad_() for p in params))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


def test_closed_form_gating_gradient_matches_autograd() -> None:
    """dL/dz_i = g_i(<δ, E_i(x)> − <δ, y>) on S, 0 elsewhere; dL/dW_r = Σ_t x_t dL/dz_tᵀ."""
    torch.manual_seed(2)
    m = MoEFeedForward(6, 8, n_experts=5, top_k=3).double()
    x = torch.randn(10, 6, dtype=torch.float64)
    delta = torch.randn(10, 6, dtype=torch.float64)
    y = m(x)
    (grad_auto,) = torch.autograd.grad((delta * y).sum(), m.w_router)
    with torch.no_grad():
        idx, gates, _ = m.route(m.router_logits(x))
        dz = torch.zeros(10, 5, dtype=torch.float64)
        for t in range(10):
            outs = torch.stack([m.expert(int(i), x[t:t + 1])[0] for i in idx[t]])  # (k, d)
            ye = gates[t] @ outs
            dz[t, idx[t]] = gates[t] * (outs @ delta[t] - ye @ delta[t])
        assert (dz != 0).sum(1).le(3).all()
    torch.testing.assert_close(grad_auto, x.T @ dz, rtol=1e-10, atol=1e-12)


def test_sigmoid_gating_gradient_closed_form() -> None:
    """Sigmoid affinities, gates normalised on S: dL/dz_j = (1 − a_j) g_j (c_j − <δ, y>)."""
    torch.manual_seed(12)
    m = MoEFeedForward(6, 8, n_experts=5, top_k=2, router="sigmoid").double()
    x = torch.randn(9, 6, dtype=torch.float64)
    delta = torch.randn(9, 6, dtype=torch.float64)
    (grad_auto,) = torch.autograd.grad((delta * m(x)).sum(), m.w_router)
    with torch.no_grad():
        a = torch.sigmoid(x @ m.w_router)
        idx, gates, _ = m.route(x @ m.w_router)
        dz = torch.zeros(9, 5, dtype=torch.float64)
        for t in range(9):
            outs = torch.stack([m.expert(int(i), x[t:t + 1])[0] for i in idx[t]])
            c = outs @ delta[t]
            dz[t, idx[t]] = (1 - a[t, idx[t]]) * gates[t] * (c - gates[t] @ c)
    torch.testing.assert_close(grad_auto, x.T @ dz, rtol=1e-10, atol=1e-12)


def test_aux_loss_logit_gradient_closed_form() -> None:
    """d L_aux / d z_tj = (E/T) p_tj (f_j − <f, p_t>), non-zero for unselected experts too."""
    torch.manual_seed(13)
    m = MoEFeedForward(6, 8, n_experts=4, top_k=1).double()
    x = torch.randn(12, 6, dtype=torch.float64)
    m(x)
    (grad_auto,) = torch.autograd.grad(m.aux_loss, m.w_router)
    with torch.no_grad():
        p = torch.softmax(x @ m.w_router, -1)
        f = m.last_stats.counts.double() / 12
        dz = 4 / 12 * p * (f - (p @ f)[:, None])
    torch.testing.assert_close(grad_auto, x.T @ dz, rtol=1e-10, atol=1e-12)
    assert (dz != 0).all()


def test_unnormalised_top1_gradient_reaches_every_logit() -> None:
    """Switch top-1, g = p_i: dL/dz_j = <δ, E_i> p_i(1[i=j] − p_j), nonzero for all j."""
    torch.manual_seed(3)
    m = MoEFeedForward(4, 6, n_experts=3, top_k=1).double()
    x = torch.randn(1, 4, dtype=torch.float64)
    z = (x @ m.w_router).detach().requires_grad_()
    p = torch.softmax(z, -1)
    i = int(p.argmax())
    out_i = m.expert(i, x)[0].detach()
    delta = torch.randn(4, dtype=torch.float64)
    (gz,) = torch.autograd.grad((p[0, i] * out_i) @ delta, z)
    expected = (out_i @ delta) * p[0, i] * (torch.eye(3, dtype=torch.float64)[i] - p[0])
    torch.testing.assert_close(gz[0], expected)
    assert (gz != 0).all()


def test_experts_not_selected_get_zero_gradient() -> None:
    torch.manual_seed(4)
    m = MoEFeedForward(6, 8, n_experts=4, top_k=1)
    x = torch.randn(1, 6)
    m(x).sum().backward()
    chosen = int(m.last_stats.counts.argmax())
    for e in range(4):
        grads = [m.w1.grad[e], m.w2.grad[e], m.b1.grad[e], m.b2.grad[e]]
        if e == chosen:
            assert all(g.abs().sum() > 0 for g in grads)
        else:
            assert all((g == 0).all() for g in grads)


def test_balance_loss_extremes() -> None:
    E = 5
    uniform = load_balance_loss(torch.full((E,), 7), torch.full((E,), 1 / E))
    collapse = load_balance_loss(torch.tensor([9, 0, 0, 0, 0]), torch.eye(E)[0])
    assert float(uniform) == pytest.approx(1.0)
    assert float(collapse) == pytest.approx(E)
    with pytest.raises(ValueError, match="counts and mean_prob"):
        load_balance_loss(torch.ones(3), torch.ones(4))


def test_balance_loss_gradient_flows_only_through_mean_probability() -> None:
    """d(E Σ f_i P_i)/dP_i = E f_i: the counts act as constants."""
    counts = torch.tensor([3, 1, 0, 4])
    mean_prob = torch.tensor([0.1, 0.2, 0.3, 0.4], requires_grad=True)
    (g,) = torch.autograd.grad(load_balance_loss(counts, mean_prob), mean_prob)
    torch.testing.assert_close(g, 4 * counts.float() / counts.sum())


def test_layer_aux_loss_is_one_at_dense_uniform_and_stats_consistent() -> None:
    m = MoEFeedForward(4, 4, n_experts=4, top_k=4)
    with torch.no_grad():
        m.w_router.zero_()
    m(torch.randn(10, 4))
    assert float(m.aux_loss.detach()) == pytest.approx(1.0)
    s = m.last_stats
    assert float(s.max_over_mean) == pytest.approx(1.0)
    assert float(s.entropy) == pytest.approx(math.log(4))
    collapsed = load_stats(torch.tensor([12, 0, 0, 0]), torch.tensor(0))
    assert float(collapsed.max_over_mean) == pytest.approx(4.0)
    assert float(collapsed.entropy) == pytest.approx(0.0, abs=1e-6)


def test_z_loss_is_mean_squared_logsumexp() -> None:
    torch.manual_seed(5)
    m = MoEFeedForward(4, 4, n_experts=3, top_k=1)
    x = torch.randn(9, 4)
    m(x)
    expected = torch.logsumexp(x @ m.w_router, -1).square().mean()
    torch.testing.assert_close(m.z_loss, expected)


def test_bias_update_moves_load_toward_balance() -> None:
    m = MoEFeedForward(4, 4, n_experts=4, top_k=1, balance="bias", bias_rate=0.01)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(256, 4, generator=gen) + 2.0  # all positive inputs
    with torch.no_grad():
        m.w_router.zero_()
        m.w_router[:, 0] = 0.5  # expert 0 wins for (almost) every token
    m.train()
    m(x)
    before = float(m.last_stats.max_over_mean)
    assert before > 3.0
    m.update_bias()
    for _ in range(200):
        m(x)
        m.update_bias()
    after = float(m.last_stats.max_over_mean)
    assert after < 1.5 < before
    assert m.expert_bias[0] < 0 < m.expert_bias[1:].min()
    # the bias changes selection only: gates are still the (raw top-1) affinities
    idx, gates, probs = m.route(m.router_logits(x))
    torch.testing.assert_close(gates, probs.gather(1, idx))
    assert m.w_router.grad is None and not m.expert_bias.requires_grad


def test_bias_counts_only_training_forwards_and_update_needs_bias_mode() -> None:
    m = MoEFeedForward(4, 4, n_experts=4, top_k=2, balance="bias")
    m.eval()
    m(torch.randn(5, 4))
    assert int(m.load_counts.sum()) == 0
    m.train()
    m(torch.randn(5, 4))
    assert int(m.load_counts.sum()) == 10
    m.update_bias()
    assert int(m.load_counts.sum()) == 0
    with pytest.raises(ValueError, match="balance='bias'"):
        MoEFeedForward(4, 4, balance="aux").update_bias()


def test_capacity_drops_and_accounts() -> None:
    m = MoEFeedForward(4, 4, n_experts=4, top_k=1, capacity_factor=1.0)
    with torch.no_grad():
        m.w_router.zero_()
        m.w_router[:, 2] = 1.0
    x = torch.rand(8, 4) + 0.1  # every token prefers expert 2
    y = m(x)
    cap = m.capacity(8)
    assert cap == 2
    assert float(m.last_stats.dropped_fraction) == pytest.approx(6 / 8)
    assert int(m.last_stats.counts[2]) == 8  # counts are before the drop
    kept = (y.abs().sum(-1) > 0)
    assert kept.tolist() == [True, True] + [False] * 6  # earlier tokens first
    m.capacity_factor = None
    m(x)
    assert float(m.last_stats.dropped_fraction) == 0.0


def test_dense_equals_soft_mixture_of_feedforwards() -> None:
    torch.manual_seed(8)
    m = MoEFeedForward(5, 7, n_experts=3, top_k=3).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    ref = torch.zeros_like(x)
    p = torch.softmax(x @ m.w_router, -1)
    for e in range(3):
        ffn = FeedForward(5, 7, activation="gelu").double()
        with torch.no_grad():
            ffn.w1.copy_(m.w1[e])
            ffn.w2.copy_(m.w2[e])
            ffn.b1.copy_(m.b1[e])
            ffn.b2.copy_(m.b2[e])
        ref = ref + p[:, e:e + 1] * ffn(x)
    torch.testing.assert_close(m(x), ref)


def test_noisy_top_k_only_in_training() -> None:
    torch.manual_seed(9)
    m = MoEFeedForward(4, 4, n_experts=4, top_k=2, noisy=True)
    x = torch.randn(50, 4)
    m.eval()
    torch.testing.assert_close(m.router_logits(x), x @ m.w_router)
    m.train()
    assert not torch.allclose(m.router_logits(x), x @ m.w_router)
    m(x).sum().backward()
    assert m.w_noise.grad is not None and m.w_noise.grad.abs().sum() > 0


def test_active_parameters() -> None:
    m = MoEFeedForward(8, 16, n_experts=4, top_k=2, n_shared=1, shared_hidden=8)
    expert = 8 * 16 + 16 + 16 * 8 + 8
    shared = 8 * 8 + 8 + 8 * 8 + 8
    assert m.active_parameters() == 8 * 4 + 2 * expert + shared
    assert sum(p.numel() for p in m.parameters()) == 8 * 4 + 4 * expert + shared


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(n_experts=0), ValueError, "n_experts"),
    (dict(n_experts=2.5), TypeError, "n_experts"),
    (dict(top_k=5), ValueError, "top_k must be <= n_experts=4, got 5"),
    (dict(top_k=True), TypeError, "top_k"),
    (dict(router="relu"), ValueError, "router must be one of"),
    (dict(balance="loss"), ValueError, "balance must be one of"),
    (dict(capacity_factor=0.0), ValueError, "capacity_factor"),
    (dict(n_shared=-1), ValueError, "n_shared"),
    (dict(bias_rate=-1.0), ValueError, "bias_rate"),
    (dict(normalize="yes"), TypeError, "normalize"),
    (dict(activation="swish"), ValueError, "activation"),
    (dict(dropout=1.0), ValueError, "dropout"),
])
def test_bad_arguments(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        MoEFeedForward(4, 4, **kwargs)


def test_bad_input_shape() -> None:
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 4\)"):
        MoEFeedForward(4, 4)(torch.randn(3, 5))


# --------------------------------------------------------------------------- GPT integration


def tiny_gpt(**moe: object) -> GPT:
    torch.manual_seed(10)
    return GPT(GPTConfig(vocab_size=11, context_len=8, n_layers=2, n_heads=2, d_model=16,
                         ffn="moe", **moe))


def test_gpt_moe_loss_includes_aux_and_z_terms_only_in_training() -> None:
    model = tiny_gpt(moe_experts=4, moe_top_k=2, moe_aux_weight=0.5, moe_z_weight=0.1)
    idx = torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(0))
    tgt = torch.roll(idx, -1, 1)
    model.train()
    logits, loss = model(idx, tgt)
    ce = torch.nn.functional.cross_entropy(logits.view(-1, 11), tgt.view(-1))
    layers = model.moe_layers()
    assert len(layers) == 2 and all(isinstance(b.ffn, MoEFeedForward) for b in model.blocks)
    extra = sum(0.5 * m.aux_loss + 0.1 * m.z_loss for m in layers)
    torch.testing.assert_close(loss, ce + extra)
    assert float(extra.detach()) > 0.9  # each aux loss is >= ~1
    model.eval()
    logits, loss = model(idx, tgt)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(
        logits.view(-1, 11), tgt.view(-1)))


@pytest.mark.parametrize("moe", [dict(moe_top_k=1),
                                 dict(moe_top_k=2, moe_shared=1, moe_balance="bias",
                                      moe_router="sigmoid", moe_experts=8, moe_hidden=8)])
def test_gpt_with_moe_trains(moe: dict) -> None:
    model = tiny_gpt(**moe)
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 11, (8, 8), generator=gen)
    tgt = (idx * 3 + 1) % 11  # a learnable per-token map
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(15):
        loss = model(idx, tgt)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_moe_bias()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.1
    if moe.get("moe_balance") == "bias":
        assert any(m.expert_bias.abs().sum() > 0 for m in model.moe_layers())


def test_gpt_moe_parameter_counts() -> None:
    dense = GPT(GPTConfig(vocab_size=11, context_len=8, n_layers=2, n_heads=2, d_model=16))
    model = tiny_gpt(moe_experts=4, moe_top_k=1)
    router = 16 * 4
    expert = sum(p.numel() for p in dense.blocks[0].ffn.parameters())
    assert model.num_parameters() == dense.num_parameters() + 2 * (router + 3 * expert)
    assert model.active_parameters() == dense.num_parameters() + 2 * router
    assert dense.active_parameters() == dense.num_parameters()


@pytest.mark.parametrize("field, value, match", [
    ("ffn", "sparse", "ffn must be one of"),
    ("moe_top_k", 5, "moe_top_k must be <= moe_experts=4, got 5"),
    ("moe_experts", 0, "moe_experts"),
    ("moe_balance", "x", "moe_balance"),
    ("moe_router", "x", "moe_router"),
    ("moe_aux_weight", -1.0, "moe_aux_weight"),
    ("moe_capacity_factor", 0.0, "moe_capacity_factor"),
])
def test_gpt_config_rejects_bad_moe_fields(field: str, value: object, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        GPTConfig(vocab_size=11, context_len=8, n_layers=1, n_heads=2, d_model=16,
                  **{"ffn": "moe", field: value})


# --------------------------------------------------------------------------- the study


def test_balance_metrics_extremes() -> None:
    even = [np.full((2, 4), 0.25)] * 4
    collapsed = [np.tile(np.array([1.0, 0, 0, 0]), (2, 1))] * 4
    assert balance_metrics(even)["max_over_mean"] == pytest.approx(1.0)
    assert balance_metrics(even)["entropy_norm"] == pytest.approx(1.0)
    assert balance_metrics(collapsed)["max_over_mean"] == pytest.approx(4.0)
    assert balance_metrics(collapsed)["entropy_norm"] == pytest.approx(0.0, abs=1e-9)


def test_study_variants_have_equal_active_ffn_parameters() -> None:
    cfg = moe_study.Config(d_model=32, n_layers=1)
    counts = {}
    for name in moe_study.VARIANTS:
        gcfg = moe_study.variant_config(name, cfg, vocab_size=20)
        model = GPT(gcfg)
        routers = sum(m.w_router.numel() for m in model.moe_layers())
        counts[name] = model.active_parameters() - routers
    assert len(set(counts.values())) == 1, counts


def test_moe_study_runs_tiny(tmp_path, tiny_char_lm) -> None:
    study = registry.get("moe.shakespeare")
    settings = {**tiny_char_lm, "variants": "dense,deepseek,top1_bias", "seeds": 2,
                "n_layers": 1, "eval_every": 3, "bench_repeats": 2, "bench_steps": 1}
    cfg = dataclasses.replace(study.config("quick"), **settings)
    metrics = study.run(cfg, tmp_path)
    v = metrics["variants"]
    assert set(v) == {"dense", "deepseek", "top1_bias"}
    assert v["dense"]["balance"] == {}
    assert v["deepseek"]["parameters"] > v["deepseek"]["active_parameters"]
    assert v["dense"]["parameters"] == v["dense"]["active_parameters"]
    assert set(v["dense"]["val_loss"]) == {"mean", "std"}  # no per-seed list in this study
    b = v["top1_bias"]["balance"]
    assert 1.0 <= b["max_over_mean"]["mean"] <= 4.0
    assert 0.0 <= b["entropy_norm"]["mean"] <= 1.0
    assert math.isfinite(v["deepseek"]["val_loss"]["mean"])
    assert all(r["tokens_per_s"] > 0 for r in v.values())
    points = {p["variant"]: p for p in metrics["tradeoff"]["points"]}
    assert set(points) == set(v)
    assert points["deepseek"]["quality"] == v["deepseek"]["val_loss"]["mean"]
    for name in ("expert_load.png", "val_loss.png", "summary.md"):
        assert (tmp_path / name).is_file()


@pytest.mark.parametrize(("field", "value", "match"), [
    ("variants", "dense,huge", r"variants must be a comma-separated subset of .*'dense', "
                               r".*got 'dense,huge' \(unknown: \['huge'\]\)"),
    ("variants", " , ", "variants must be a comma-separated subset"),
    ("d_model", 40, "d_model must be a multiple of 16"),
    ("bench_steps", 0, "bench_steps must be >= 1, got 0"),
    ("bias_rate", 0.0, "bias_rate must be > 0"),
    ("aux_weight", -0.1, "aux_weight must be >= 0"),
])
def test_moe_study_config_rejects_bad_values(field: str, value: object, match: str) -> None:
    cfg = registry.get("moe.shakespeare").config("quick")
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(cfg, **{field: value})


def test_moe_study_config_override_error_is_a_study_error() -> None:
    study = registry.get("moe.shakespeare")
    with pytest.raises(registry.StudyError, match=r"variants must be .*got 'dense,huge'"):
        study.config("quick", {"variants": "dense,huge"})


def test_z_loss_logit_gradient_is_proportional_to_p_and_flattens_the_router(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """d L_z / d z_tj = (2/T) lse(z_t) p_tj (float64): proportional to p, not a common shift, so a
    descent step on the z-loss narrows every gap between a token's logits and raises the entropy
    of its router distribution (docs/derivations/moe-gating-gradient.md §5)."""
    torch.manual_seed(17)
    m = MoEFeedForward(6, 8, n_experts=5, top_k=2).double()
    with torch.no_grad():
        m.w_router.mul_(4.0)  # peaked routers, far from uniform
    x = torch.randn(11, 6, dtype=torch.float64)
    captured = []
    router_logits = m.router_logits

    def spy(tokens: torch.Tensor) -> torch.Tensor:
        """The layer's router logits, kept for the gradient."""
        captured.append(router_logits(tokens))
        return captured[-1]

    monkeypatch.setattr(m, "router_logits", spy)
    m(x)
    (z,) = captured
    (grad,) = torch.autograd.grad(m.z_loss, z)
    z, T = z.detach(), z.shape[0]
    lse, p = torch.logsumexp(z, -1, keepdim=True), torch.softmax(z, -1)
    torch.testing.assert_close(grad, 2 / T * lse * p, rtol=1e-12, atol=1e-15)
    assert (lse > 0).all()
    # Not a common shift: the part that sums to zero over experts is as large as p is uneven.
    centred = grad - grad.mean(-1, keepdim=True)
    torch.testing.assert_close(centred, 2 / T * lse * (p - 1 / 5), rtol=1e-12, atol=1e-15)
    assert (centred.abs().amax(-1) > 1e-3 * grad.abs().amax(-1)).all()
    # A small descent step narrows every gap and raises every token's router entropy.
    step = z - 1e-2 * grad

    def gaps(logits: torch.Tensor) -> torch.Tensor:
        """|z_j − z_k| for every pair of experts of every token."""
        return (logits[:, :, None] - logits[:, None, :]).abs()

    off = ~torch.eye(5, dtype=torch.bool)
    assert (gaps(step)[:, off] < gaps(z)[:, off]).all()

    def entropy(logits: torch.Tensor) -> torch.Tensor:
        """Entropy of each token's router distribution."""
        q = torch.softmax(logits, -1)
        return -(q * q.log()).sum(-1)

    assert (entropy(step) > entropy(z)).all()
    # The rate is c·Cov_p(p, z) >= 0, c = (2/T) lse.
    rate = (2 / T * lse[:, 0]) * ((p * p * (z - (p * z).sum(-1, keepdim=True))).sum(-1))
    torch.testing.assert_close((entropy(z - 1e-7 * grad) - entropy(z)) / 1e-7, rate,
                               rtol=1e-4, atol=1e-9)
    assert (rate > 0).all()


def test_moe_study_variants_beat_the_unigram_model(tiny_char_lm: dict[str, object]) -> None:
    """The study's MoE variants, trained 100 steps at toy size, end well below the validation
    loss of the training split's character frequencies (and of the uniform model, ln V)."""
    from scratchformer.data.lm_text import char_data
    from scratchformer.experiments.kit import text_split

    study = registry.get("moe.shakespeare")
    cfg = dataclasses.replace(study.config("quick"), **{
        **tiny_char_lm, "n_layers": 1, "steps": 100, "eval_every": 100, "lr": 1e-2,
        "batch_size": 8, "eval_batches": 4})
    data = char_data(*text_split(cfg))
    counts = torch.bincount(data.train, minlength=data.vocab_size).double() + 1.0  # add-one
    unigram = float(-(counts / counts.sum()).log()[data.val].mean())
    assert unigram < math.log(data.vocab_size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: a second thread only waits on a shared machine
    try:
        for name in ("top2", "deepseek", "top1_bias"):
            result, loads = moe_study.train_variant(name, cfg, data, cfg.seed)
            assert len(loads) == 100  # one routing record per step
            assert result.final() < unigram - 0.15, (name, result.final(), unigram)
    finally:
        torch.set_num_threads(threads)
