"""LoRA: the adapted model starts as the base, trains only A and B, merges exactly, saves apart."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from scratchformer.generation import generate
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.nn.lora import (
    LoRALinear,
    LoRAMatrix,
    apply_lora,
    load_lora_state_dict,
    lora_adapters,
    lora_config,
    lora_parameters,
    lora_state_dict,
    merge_lora,
    unmerge_lora,
)

V, T = 31, 12


def _gpt(backend: str = "scratch", seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=V, context_len=T, n_layers=2, n_heads=2, d_model=16,
                    attention_backend=backend, **kw)
    return GPT(cfg).eval()


def _ids(B: int = 3, L: int = T, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(seed))


def _randomise_b(model: nn.Module, seed: int = 2) -> None:
    """Give every B a nonzero value, so that ΔW ≠ 0 (B starts at 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in lora_adapters(model).values():
            a.lora_B.copy_(torch.randn(a.lora_B.shape, generator=g) * 0.1)


def _train(model: nn.Module, steps: int = 5, lr: float = 1e-2) -> None:
    opt = torch.optim.AdamW(lora_parameters(model), lr=lr)
    model.train()
    for s in range(steps):
        x = _ids(seed=10 + s)
        loss = model(x[:, :-1], x[:, 1:])[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.mark.parametrize("backend", ["scratch", "sdpa"])
def test_adapted_model_starts_equal_to_the_base(backend):
    base = _gpt(backend)
    model = copy.deepcopy(base)
    names = apply_lora(model, rank=4, alpha=8.0)
    assert len(names) == 2 * 6  # q, k, v, o, w1, w2 per layer
    x = _ids()
    assert torch.equal(model(x)[0], base(x)[0])  # B = 0: bit-identical, not just close


def test_gradients_reach_only_a_and_b():
    model = _gpt()
    apply_lora(model, rank=2)
    _randomise_b(model)  # with B = 0 the gradient of A is 0; make both visible
    x = _ids()
    model(x[:, :-1], x[:, 1:])[1].backward()
    trainable = {id(p) for p in lora_parameters(model)}
    for name, p in model.named_parameters():
        if id(p) in trainable:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name


def test_trainable_count_is_r_times_din_plus_dout():
    model = _gpt(d_hidden=40)
    r = 3
    apply_lora(model, rank=r)
    d, h = 16, 40
    per_layer = 4 * r * (d + d) + r * (d + h) + r * (h + d)
    assert model.num_parameters() == 2 * per_layer
    assert sum(p.numel() for p in lora_parameters(model)) == 2 * per_layer
    only_q = _gpt(d_hidden=40)
    apply_lora(only_q, rank=r, targets=("attention.q", "feedforward.down"))
    assert only_q.num_parameters() == 2 * (r * (d + d) + r * (h + d))


@pytest.mark.parametrize("backend", ["scratch", "sdpa"])
def test_merge_keeps_the_function_and_unmerge_restores_the_base(backend):
    base = _gpt(backend)
    model = copy.deepcopy(base)
    apply_lora(model, rank=4, alpha=2.0)
    _randomise_b(model)
    x = _ids()
    before = model(x)[0]
    assert not torch.allclose(before, base(x)[0], atol=1e-4)  # the adapters do something
    stored = {n: a.base_weight().clone() for n, a in lora_adapters(model).items()}
    merge_lora(model)
    merge_lora(model)  # idempotent
    torch.testing.assert_close(model(x)[0], before, atol=1e-6, rtol=0)
    for n, a in lora_adapters(model).items():
        assert not torch.allclose(a.base_weight(), stored[n])  # the weight itself changed
    unmerge_lora(model)
    unmerge_lora(model)
    for n, a in lora_adapters(model).items():
        torch.testing.assert_close(a.base_weight(), stored[n], atol=1e-7, rtol=0)
    torch.testing.assert_close(model(x)[0], before, atol=1e-6, rtol=0)


def test_merged_weight_is_base_plus_scaled_ba():
    """The folded matrix is exactly W + (α/r)(BA)ᵀ in the module's (in, out) layout."""
    model = _gpt()
    w = model.blocks[0].attn.w_v.detach().clone()
    apply_lora(model, rank=2, alpha=6.0, targets=("attention.v",))
    _randomise_b(model)
    a = lora_adapters(model)["blocks.0.attn.w_v"]
    expected = w + 3.0 * (a.lora_B @ a.lora_A).T
    torch.testing.assert_close(model.blocks[0].attn.w_v, expected, atol=1e-7, rtol=0)
    assert torch.linalg.matrix_rank(a.delta_weight().detach()) == 2  # float32 tolerance


def test_training_changes_output_and_leaves_base_weights_bit_identical():
    model = _gpt()
    apply_lora(model, rank=4)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    x = _ids()
    before = model(x)[0].detach()
    _train(model)
    assert (model(x)[0] - before).abs().max() > 1e-3
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[n]), n


def test_adapters_round_trip_through_safetensors_and_the_loader_is_strict(tmp_path):
    model = _gpt()
    apply_lora(model, rank=4, alpha=8.0, targets=("attention", "feedforward.up"))
    _train(model)
    path = tmp_path / "adapters.safetensors"
    save_file(lora_state_dict(model), str(path))
    cfg = lora_config(model)
    assert cfg == {"rank": 4, "alpha": 8.0, "targets": ["attention", "feedforward.up"],
                   "dropout": 0.0}
    fresh = _gpt()  # the same base, new adapters
    apply_lora(fresh, **{**cfg, "targets": tuple(cfg["targets"])})
    x = _ids()
    assert not torch.allclose(fresh(x)[0], model(x)[0], atol=1e-4)
    state = load_file(str(path))
    load_lora_state_dict(fresh, state)
    assert torch.equal(fresh(x)[0], model(x)[0])

    key = "blocks.0.attn.w_q.lora_A"
    renamed = {("blocks.0.attn.w_x.lora_A" if k == key else k): v for k, v in state.items()}
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.w_q\.lora_A"):
        load_lora_state_dict(fresh, renamed)
    with pytest.raises(ValueError, match=r"unexpected key 'extra'"):
        load_lora_state_dict(fresh, {**state, "extra": torch.zeros(1)})
    bad_shape = {**state, key: torch.zeros(5, 16)}
    snapshot = lora_state_dict(fresh)
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.w_q\.lora_A.*shape \(5, 16\)"):
        load_lora_state_dict(fresh, bad_shape)
    for k, v in lora_state_dict(fresh).items():  # a refused load changes nothing
        assert torch.equal(v, snapshot[k])


@pytest.mark.parametrize("backend", ["scratch", "sdpa"])
def test_merged_and_unmerged_generate_the_same_tokens_with_kv_cache(backend):
    model = _gpt(backend)
    apply_lora(model, rank=4)
    _train(model, steps=8)
    prompt = _ids(B=2, L=3, seed=5)
    unmerged = generate(model, prompt, 15, greedy=True)  # past context_len: the window slides
    uncached = generate(model, prompt, 15, greedy=True, use_cache=False)
    merge_lora(model)
    merged = generate(model, prompt, 15, greedy=True)
    assert torch.equal(unmerged, merged)
    assert torch.equal(unmerged, uncached)


def test_lora_linear_wraps_an_nn_linear_with_dropout():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = LoRALinear(copy.deepcopy(base), rank=2, alpha=4.0, dropout=0.5)
    x = torch.randn(4, 6)
    layer.eval()
    assert torch.equal(layer(x), base(x))
    with torch.no_grad():
        layer.lora_B.normal_()
    expected = base(x) + 2.0 * (x @ layer.lora_A.T @ layer.lora_B.T)
    torch.testing.assert_close(layer(x), expected)
    layer.train()  # dropout acts on the adapter's input only
    assert not torch.allclose(layer(x), expected)
    layer.eval()
    layer.merge()
    torch.testing.assert_close(layer(x), expected, atol=1e-6, rtol=0)
    layer.unmerge()
    torch.testing.assert_close(layer.base.weight, base.weight, atol=1e-7, rtol=0)


def test_linear_target_wraps_nn_linear_modules():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    names = apply_lora(model, rank=2, targets=("linear",), dropout=0.1)
    assert names == ["0", "2"]
    assert isinstance(model[0], LoRALinear) and isinstance(model[2], LoRALinear)
    assert lora_config(model)["dropout"] == 0.1
    assert set(lora_state_dict(model)) == {"0.lora_A", "0.lora_B", "2.lora_A", "2.lora_B"}


def test_gpt_adapters_are_weight_parametrizations():
    model = _gpt()
    apply_lora(model, rank=2, targets=("feedforward",))
    adapters = lora_adapters(model)
    assert list(adapters) == ["blocks.0.ffn.w1", "blocks.0.ffn.w2", "blocks.1.ffn.w1",
                              "blocks.1.ffn.w2"]
    assert all(isinstance(a, LoRAMatrix) for a in adapters.values())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rank": 0}, ValueError, "rank must be >= 1"),
        ({"rank": 2.0}, TypeError, "rank must be an int"),
        ({"rank": 2, "alpha": 0.0}, ValueError, "alpha must be > 0"),
        ({"rank": 2, "targets": ("attention", "mlp")}, ValueError, r"\['mlp'\] unknown"),
        ({"rank": 2, "targets": ()}, ValueError, "non-empty"),
        ({"rank": 2, "dropout": 1.0}, ValueError, "dropout must be in"),
        ({"rank": 2, "dropout": 0.1}, ValueError, "weight form"),
        ({"rank": 2, "targets": ("linear",)}, ValueError, "no projections"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, match):
    model = _gpt()
    with pytest.raises(error, match=match):
        apply_lora(model, **kwargs)
    assert not lora_adapters(model)
    assert all(p.requires_grad for p in model.parameters())  # refused before freezing


def test_applying_twice_is_an_error():
    model = _gpt()
    apply_lora(model, rank=2)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        apply_lora(model, rank=2)


def test_moe_feedforward_is_refused():
    model = _gpt(ffn="moe", moe_experts=2, moe_top_k=1)
    with pytest.raises(ValueError, match="MoEFeedForward"):
        apply_lora(model, rank=2)
    apply_lora(model, rank=2, targets=("attention",))  # attention alone is fine


def test_a_deep_copy_has_its_own_adapters_and_base_weights():
    model = _gpt()
    apply_lora(model, rank=2)
    _randomise_b(model)
    twin = copy.deepcopy(model)
    x = _ids()
    before = model(x)[0]
    merge_lora(twin)  # folds into the copy's weights only
    assert all(not a.merged for a in lora_adapters(model).values())
    assert torch.equal(model(x)[0], before)
    torch.testing.assert_close(twin(x)[0], before, atol=1e-6, rtol=0)
