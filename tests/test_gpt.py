"""The decoder-only GPT model: shapes, loss, weight tying, backends, counts, caching, training."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from scratchformer.models.gpt import GPT, IGNORE_INDEX, GPTConfig
from scratchformer.nn.embeddings import LearnedPositionalEmbedding, SinusoidalPositionalEmbedding
from scratchformer.nn.norm import LayerNorm, RMSNorm

F64 = torch.float64
BASE = {"vocab_size": 29, "context_len": 16, "n_layers": 2, "n_heads": 4, "d_model": 32}


def _model(dtype: torch.dtype = torch.float32, seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**BASE, **kw})).to(dtype).eval()


def _idx(B: int = 3, T: int = 11, seed: int = 0, vocab: int = 29) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_no_loss_without_targets():
    model = _model()
    logits, loss = model(_idx())
    assert logits.shape == (3, 11, 29) and logits.dtype == torch.float32
    assert loss is None
    assert model.hidden_states(_idx()).shape == (3, 11, 32)


def test_loss_is_mean_token_cross_entropy():
    """The loss equals -mean log softmax(logits)[target], written out by hand."""
    model = _model(F64)
    idx, targets = _idx(seed=1), _idx(seed=2)
    logits, loss = model(idx, targets)
    manual = -logits.log_softmax(-1).gather(-1, targets[..., None]).mean()
    assert abs(loss.item() - manual.item()) < 1e-12
    assert abs(loss.item() - F.cross_entropy(logits.reshape(-1, 29), targets.reshape(-1))) < 1e-12
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_ignored_targets_do_not_count():
    """Targets equal to -100 are left out of the mean, and changing their logits changes nothing."""
    model = _model(F64)
    idx, targets = _idx(seed=1), _idx(seed=2)
    targets[0, :5] = IGNORE_INDEX
    targets[2, -1] = IGNORE_INDEX
    logits, loss = model(idx, targets)
    keep = targets != IGNORE_INDEX
    manual = -logits.log_softmax(-1)[keep].gather(-1, targets[keep][:, None]).mean()
    assert abs(loss.item() - manual.item()) < 1e-12
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.count_nonzero(grad[~keep]) == 0


def test_tied_weights_share_storage_and_untied_do_not():
    tied = _model()
    assert tied.head_weight is tied.tok_emb.weight
    assert tied.head_weight.data_ptr() == tied.tok_emb.weight.data_ptr()
    assert "lm_head" not in tied.state_dict()
    idx, targets = _idx(), _idx(seed=1)
    tied(idx, targets)[1].backward()
    assert tied.tok_emb.weight.grad is not None  # gets gradient from input and output use
    untied = _model(tie_weights=False)
    assert untied.head_weight.data_ptr() != untied.tok_emb.weight.data_ptr()
    assert untied.num_parameters() == tied.num_parameters() + 29 * 32
    logits, _ = tied(idx)
    h = tied.hidden_states(idx)
    torch.testing.assert_close(logits, h @ tied.tok_emb.weight.T, rtol=0, atol=0)


def test_learned_and_sinusoidal_positions():
    """Learned: a trained (context_len, d) table in the state dict. Sinusoidal: a fixed buffer."""
    learned, sinus = _model(positional="learned"), _model(positional="sinusoidal")
    assert isinstance(learned.pos_emb, LearnedPositionalEmbedding)
    assert isinstance(sinus.pos_emb, SinusoidalPositionalEmbedding)
    assert learned.num_parameters() - sinus.num_parameters() == 16 * 32
    assert "pos_emb.weight" in learned.state_dict()
    assert not any(k.startswith("pos_emb") for k in sinus.state_dict())
    # positions matter: the same token at two positions gets two different logits
    same = torch.full((1, 6), 3)
    for model in (learned, sinus):
        logits, _ = model(same)
        assert not torch.allclose(logits[0, 0], logits[0, 5])


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (F64, 1e-12)])
@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_scratch_and_sdpa_backends_agree(dtype, tol, positional):
    model = _model(dtype, positional=positional, norm="rms")
    idx, targets = _idx(T=16), _idx(T=16, seed=1)
    assert all(b.attn.backend == "scratch" for b in model.blocks)
    ref, loss_ref = model(idx, targets)
    grads_ref = torch.autograd.grad(loss_ref, list(model.parameters()))
    model.configure_backend("sdpa")
    assert model.config.attention_backend == "sdpa"
    assert all(b.attn.backend == "sdpa" for b in model.blocks)
    out, loss = model(idx, targets)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert (out - ref).abs().max().item() < tol
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert (g - g_ref).abs().max().item() < tol * 10
    with pytest.raises(ValueError, match="backend must be one of"):
        model.configure_backend("flash")


def _expected_count(cfg: GPTConfig) -> int:
    V, C, d, L, h = cfg.vocab_size, cfg.context_len, cfg.d_model, cfg.n_layers, cfg.hidden_size
    b = int(cfg.bias)
    norm = d * (1 + b) if cfg.norm == "layer" else d  # gain (+ shift)
    attn = 4 * d * d + 4 * d * b
    ffn = 2 * d * h + (h + d) * b
    count = V * d + L * (attn + ffn + 2 * norm) + norm
    count += C * d if cfg.positional == "learned" else 0
    count += 0 if cfg.tie_weights else V * d
    return count


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"tie_weights": False},
        {"bias": False, "norm": "rms"},
        {"positional": "sinusoidal", "d_hidden": 48},
        {"bias": False, "n_layers": 3},
    ],
)
def test_parameter_count_formula(kw):
    model = _model(**kw)
    cfg = model.config
    assert model.num_parameters() == _expected_count(cfg)
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    embeddings = cfg.vocab_size * cfg.d_model
    embeddings += cfg.context_len * cfg.d_model if cfg.positional == "learned" else 0
    assert model.num_parameters(exclude_embeddings=True) == _expected_count(cfg) - embeddings
    if not cfg.bias:
        assert all(b.norm1.bias is None if isinstance(b.norm1, LayerNorm) else True
                   for b in model.blocks)


def test_gpt2_initialisation():
    """N(0, 0.02²) weights, residual projections 0.02/sqrt(2·n_layers), zero biases, unit gains."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, context_len=64, n_layers=8, n_heads=4, d_model=128))
    res = 0.02 / math.sqrt(16)
    stds = {
        "tok": model.tok_emb.weight.std().item(),
        "pos": model.pos_emb.weight.std().item(),
        "w_q": torch.stack([b.attn.w_q for b in model.blocks]).std().item(),
        "w1": torch.stack([b.ffn.w1 for b in model.blocks]).std().item(),
        "w_o": torch.stack([b.attn.w_o for b in model.blocks]).std().item(),
        "w2": torch.stack([b.ffn.w2 for b in model.blocks]).std().item(),
    }
    for name in ("tok", "pos", "w_q", "w1"):
        assert abs(stds[name] / 0.02 - 1) < 0.03, (name, stds[name])
    for name in ("w_o", "w2"):
        assert abs(stds[name] / res - 1) < 0.03, (name, stds[name])
    block = model.blocks[3]
    assert torch.count_nonzero(block.attn.b_q) == 0 and torch.count_nonzero(block.ffn.b2) == 0
    assert torch.equal(block.norm1.weight, torch.ones(128))
    # at initialisation the model predicts close to uniformly: loss ≈ ln(vocab)
    _, loss = model(_idx(4, 64, vocab=512), _idx(4, 64, seed=1, vocab=512))
    assert abs(loss.item() - math.log(512)) < 0.05


def test_context_overflow_and_bad_inputs_raise():
    model = _model()
    with pytest.raises(ValueError, match=r"17 tokens exceeds context_len=16"):
        model(_idx(T=17))
    with pytest.raises(TypeError, match="integer token ids"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"shape \(batch, length >= 1\)"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="targets must have the shape of idx"):
        model(_idx(), _idx(T=5))
    cache = model.new_kv_cache()
    model(_idx(T=10), kv_cache=cache)
    with pytest.raises(ValueError, match="10 cached \\+ 7 tokens exceeds context_len=16"):
        model(_idx(T=7), kv_cache=cache)
    with pytest.raises(ValueError, match="capacity must be <= context_len"):
        model.new_kv_cache(17)


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"d_model": 30}, ValueError, "divisible by n_heads"),
        ({"n_layers": 0}, ValueError, "n_layers must be >= 1"),
        ({"vocab_size": 2.5}, TypeError, "vocab_size must be an int"),
        ({"dropout": 1.0}, ValueError, r"dropout must be in \[0, 1\)"),
        ({"positional": "rope"}, ValueError, "positional must be one of"),
        ({"attention_backend": "flash"}, ValueError, "attention_backend must be one of"),
        ({"activation": "swish"}, ValueError, "activation must be one of"),
        ({"norm": "batch"}, ValueError, "norm must be one of"),
        ({"norm_eps": -1.0}, ValueError, "norm_eps must be >= 0"),
        ({"tie_weights": 1}, TypeError, "tie_weights must be a bool"),
        ({"d_hidden": 0}, ValueError, "d_hidden must be >= 1"),
        ({"positional": "sinusoidal", "d_model": 15, "n_heads": 3}, ValueError, "even d_model"),
    ],
)
def test_config_validation(kw, error, match):
    with pytest.raises(error, match=match):
        GPTConfig(**{**BASE, **kw})


def test_config_options_reach_the_layers():
    model = _model(norm="rms", norm_eps=1e-3, activation="relu", d_hidden=40, dropout=0.1)
    block = model.blocks[0]
    assert isinstance(block.norm1, RMSNorm) and block.norm1.eps == 1e-3
    assert isinstance(model.norm, RMSNorm) and model.norm.eps == 1e-3
    assert block.ffn.activation == "relu" and block.ffn.d_hidden == 40
    assert block.attn.dropout == 0.1 and model.drop.p == 0.1
    with pytest.raises(TypeError, match="config must be a GPTConfig"):
        GPT(BASE)


@pytest.mark.parametrize("backend", ["scratch", "sdpa"])
def test_attention_maps_are_causal_distributions(backend):
    """Rows sum to 1, the upper triangle is exactly 0; the maps reproduce the forward pass."""
    model = _model(attention_backend=backend)
    idx = _idx(T=9)
    maps = model.attention_maps(idx)
    assert len(maps) == 2
    for a in maps:
        assert a.shape == (3, 4, 9, 9)
        torch.testing.assert_close(a.sum(-1), torch.ones(3, 4, 9))
        assert torch.count_nonzero(a.triu(1)) == 0
        assert (a.diagonal(dim1=-2, dim2=-1) > 0).all()
    # the same weights drive the real forward pass: rebuild layer 0's attention output
    block = model.blocks[0]
    with torch.no_grad():
        h = block.norm1(model.embed(idx))
        v = (h @ block.attn.w_v + block.attn.b_v).view(3, 9, 4, 8).transpose(1, 2)
        merged = (maps[0] @ v).transpose(1, 2).reshape(3, 9, 32)
        expected = merged @ block.attn.w_o + block.attn.b_o
        torch.testing.assert_close(block.attn(h, is_causal=True), expected)


@pytest.mark.parametrize("backend", ["scratch", "sdpa"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_chunked_forward_with_kv_cache_matches_full_forward(backend, dtype):
    """Feeding 5, then 1, then 4 tokens through a cache gives the full pass's logits."""
    model = _model(dtype, attention_backend=backend)
    idx = _idx(T=10)
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_kv_cache()
        parts = [model(idx[:, a:b], kv_cache=cache)[0] for a, b in ((0, 5), (5, 6), (6, 10))]
    assert cache.length == 10
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert (torch.cat(parts, dim=1) - full).abs().max().item() < tol


def test_tiny_model_overfits_a_tiny_sequence():
    """Forty AdamW steps on one 16-token sequence drive the loss from ln(29) to near zero."""
    model = _model().train()
    seq = _idx(B=1, T=17, seed=5)
    inputs, targets = seq[:, :-1], seq[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(40):
        _, loss = model(inputs, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert abs(losses[0] - math.log(29)) < 0.3
    assert losses[-1] < 0.05 * losses[0], losses[::8]


def test_config_is_a_dataclass_with_defaults():
    cfg = GPTConfig(**BASE)
    assert cfg.hidden_size == 128 and cfg.activation == "gelu_tanh" and cfg.tie_weights
    assert dataclasses.replace(cfg, d_hidden=10).hidden_size == 10


def test_trains_with_the_trainer():
    """The (logits, loss) return plugs into Trainer as loss_fn = lambda m, b: m(*b)[1]."""
    from collections import namedtuple

    from scratchformer.training import TrainConfig, Trainer

    Batch = namedtuple("Batch", "inputs targets")

    def batches(step: int, micro: int, generator: torch.Generator) -> Batch:
        start = torch.randint(0, 29, (8, 1), generator=generator)
        seq = (start + torch.arange(17)) % 29  # counting mod 29: each token predicts the next
        targets = seq[:, 1:].clone()
        targets[:, -2:] = IGNORE_INDEX  # padding-style ignored targets are fine too
        return Batch(seq[:, :-1], targets)

    model = _model(n_layers=2)
    cfg = TrainConfig(max_steps=40, lr=1e-2, warmup_steps=5, log_interval=10, progress=False,
                      device="cpu")
    history = Trainer(model, cfg, train_batches=batches,
                      loss_fn=lambda m, b: m(b.inputs, b.targets)[1]).fit()
    assert history[-1]["step"] == 40
    assert history[-1]["loss"] < 0.1 * math.log(29), [r["loss"] for r in history]


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "relu"])
def test_torch_kernels_compute_the_same_function(activation):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=40, context_len=16, n_layers=2, n_heads=2, d_model=32,
                    activation=activation)
    ours = GPT(cfg).double()
    fused = GPT(dataclasses.replace(cfg, kernels="torch")).double()
    fused.load_state_dict(ours.state_dict())
    idx = torch.randint(0, 40, (3, 16))
    a, la = ours(idx, idx)
    b, lb = fused(idx, idx)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    ga = torch.autograd.grad(la, list(ours.parameters()))
    gb = torch.autograd.grad(lb, list(fused.parameters()))
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-10)
    assert fused.config.kernels == "torch" and ours.configure_kernels("torch") is ours
    assert all(m.kernels == "torch" for m in ours.modules() if hasattr(m, "kernels"))
    with pytest.raises(ValueError, match="kernels must be one of"):
        GPTConfig(vocab_size=40, context_len=16, n_layers=1, n_heads=1, d_model=8, kernels="cuda")
