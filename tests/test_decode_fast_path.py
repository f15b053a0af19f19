"""The inference fast paths used when decoding compute what the autograd paths compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scratchformer.functional.activations import gelu
from scratchformer.functional.attention import (
    scaled_dot_product_attention,
    single_query_attention,
)
from scratchformer.functional.normalization import layer_norm, layer_norm_inference
from scratchformer.generation import generate
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.nn.attention import MultiHeadAttention
from scratchformer.nn.kv_cache import LayerKVCache
from scratchformer.nn.norm import LayerNorm

F64 = torch.float64


def _cache_view(B: int, H: int, S: int, E: int, capacity: int = 40) -> torch.Tensor:
    """Keys as the KV cache holds them: the first S positions of a larger buffer."""
    return torch.randn(B, H, capacity, E, dtype=F64)[:, :, :S]


@pytest.mark.parametrize("S", [1, 2, 17])
def test_single_query_attention_matches_the_general_kernel_and_sdpa(S):
    torch.manual_seed(S)
    q = torch.randn(2, 3, 1, 8, dtype=F64) * 3
    k, v = _cache_view(2, 3, S, 8), _cache_view(2, 3, S, 8)
    fast = single_query_attention(q, k, v, 8**-0.5)
    general = scaled_dot_product_attention(q.requires_grad_(), k, v)  # autograd path
    torch.testing.assert_close(fast, general.detach(), rtol=0, atol=1e-13)
    torch.testing.assert_close(fast, F.scaled_dot_product_attention(q.detach(), k, v),
                               rtol=0, atol=1e-13)


def test_gelu_inference_path_equals_its_autograd_function():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 32) * 4
    with torch.no_grad():
        tanh_fast, exact_fast = gelu(x, "tanh"), gelu(x)
    xr = x.clone().requires_grad_()
    assert torch.equal(tanh_fast, gelu(xr, "tanh"))  # the same operations: the same rounding
    assert torch.equal(exact_fast, gelu(xr))


@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_layer_norm_inference_path_matches_the_autograd_path_and_torch(affine):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 32, dtype=F64) * 3 + 2
    w = torch.randn(32, dtype=F64) if affine in ("both", "weight") else None
    b = torch.randn(32, dtype=F64) if affine in ("both", "bias") else None
    slow = layer_norm(x.clone().requires_grad_(), w, b)  # LayerNormFunction
    with torch.no_grad():
        assert torch.equal(layer_norm(x, w, b), slow.detach())  # same operations, same rounding
        norm = LayerNorm(32, bias=b is not None).double()
        norm.weight.copy_(torch.ones(32) if w is None else w)
        if b is not None:
            norm.bias.copy_(b)
        fast = norm(x)  # the module's six-operation inference path
    assert slow.requires_grad and not fast.requires_grad
    torch.testing.assert_close(fast, slow.detach(), rtol=0, atol=1e-13)
    torch.testing.assert_close(fast, F.layer_norm(x, (32,), w, b), rtol=0, atol=1e-13)
    before = x.clone()
    out = layer_norm_inference(x, w, b, 1e-5)
    assert torch.equal(x, before)  # the input is not written to
    torch.testing.assert_close(out, slow.detach(), rtol=0, atol=1e-13)


@pytest.mark.parametrize("backend", ["scratch", "sdpa"])
def test_attention_module_without_grad_equals_the_training_path(backend):
    """Separate q/k/v products and the fast kernel (no grad) vs fused qkv with autograd."""
    torch.manual_seed(1)
    mha = MultiHeadAttention(16, 4, backend=backend).double().eval()
    x = torch.randn(2, 7, 16, dtype=F64)
    with torch.no_grad():
        fast = mha(x, is_causal=True)
        cache = LayerKVCache(10)
        steps = [mha(x[:, :4], is_causal=True, kv_cache=cache)]
        steps += [mha(x[:, t : t + 1], is_causal=True, kv_cache=cache) for t in range(4, 7)]
    ref = mha(x, is_causal=True)
    assert ref.requires_grad
    torch.testing.assert_close(fast, ref.detach(), rtol=0, atol=1e-13)
    torch.testing.assert_close(torch.cat(steps, dim=1), ref.detach(), rtol=0, atol=1e-13)


@pytest.mark.parametrize("backend", ["scratch", "sdpa"])
def test_cached_greedy_decoding_matches_full_forward_passes_past_the_window(backend):
    """Every step's logits equal the autograd-path forward of the (cropped) sequence so far,
    and cached and uncached greedy decoding produce the same tokens."""
    torch.manual_seed(2)
    cfg = GPTConfig(vocab_size=31, context_len=9, n_layers=2, n_heads=2, d_model=16,
                    attention_backend=backend)
    model = GPT(cfg).double().eval()
    prompt = torch.randint(0, 31, (2, 5))
    cached, logits = generate(model, prompt, 12, greedy=True, return_logits=True)
    uncached = generate(model, prompt, 12, greedy=True, use_cache=False)
    assert torch.equal(cached, uncached)
    for step in range(12):
        seq = cached[:, : 5 + step][:, -9:]
        ref = model(seq)[0][:, -1]  # grad enabled: the training code path
        torch.testing.assert_close(logits[:, step], ref.detach(), rtol=0, atol=1e-12)
