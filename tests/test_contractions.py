"""Attention as einsum contractions equals the matmul forms, the library's attention and MHA."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchformer.functional.attention import scaled_dot_product_attention
from scratchformer.functional.contractions import (
    attention_einsum,
    attention_flops,
    attention_matmul,
    einsum_flops,
    merge_heads_einsum,
    merge_heads_matmul,
    multi_head_attention_einsum,
    qk_flops,
    scores_einsum,
    scores_matmul,
    split_heads_einsum,
    split_heads_matmul,
    weighted_sum_einsum,
    weighted_sum_matmul,
)
from scratchformer.nn.attention import MultiHeadAttention

F64 = torch.float64


def _qkv(B: int, H: int, L: int, S: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, n, d, generator=g, dtype=F64) for n in (L, S, S))


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 3), H=st.integers(1, 3), L=st.integers(1, 9), S=st.integers(1, 9),
       d=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_scores_and_weighted_sum_einsum_equal_matmul(B, H, L, S, d, seed):
    q, k, v = _qkv(B, H, L, S, d, seed)
    s_e, s_m = scores_einsum(q, k), scores_matmul(q, k)
    assert s_e.shape == (B, H, L, S)
    torch.testing.assert_close(s_e, s_m, rtol=1e-12, atol=1e-12)
    a = torch.softmax(s_m, -1)
    torch.testing.assert_close(weighted_sum_einsum(a, v), weighted_sum_matmul(a, v),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("L,S", [(5, 5), (3, 7), (8, 8)])
def test_attention_einsum_equals_library_and_torch_sdpa(causal, L, S):
    q, k, v = _qkv(2, 3, L, S, 4, seed=L * S)
    ours = scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch_ = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    for out in (attention_einsum(q, k, v, is_causal=causal),
                attention_matmul(q, k, v, is_causal=causal)):
        torch.testing.assert_close(out, ours, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(out, torch_, rtol=1e-10, atol=1e-12)


def test_explicit_scale_is_used():
    q, k, _ = _qkv(1, 1, 3, 4, 5)
    torch.testing.assert_close(scores_einsum(q, k, scale=2.0), 2.0 * q @ k.transpose(-2, -1))


def test_head_projections_einsum_equal_matmul():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 12, generator=g, dtype=F64)
    w = torch.randn(12, 12, generator=g, dtype=F64)
    split = split_heads_einsum(x, w, 3)
    assert split.shape == (2, 3, 6, 4)
    torch.testing.assert_close(split, split_heads_matmul(x, w, 3), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(merge_heads_einsum(split, w), merge_heads_matmul(split, w),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_all_einsum_multi_head_attention_equals_module(bias, causal):
    torch.manual_seed(0)
    mha = MultiHeadAttention(12, 3, bias=bias).double()
    x = torch.randn(2, 7, 12, dtype=F64)
    biases = (mha.b_q, mha.b_k, mha.b_v, mha.b_o) if bias else None
    with torch.no_grad():
        ours = multi_head_attention_einsum(x, mha.w_q, mha.w_k, mha.w_v, mha.w_o, 3, biases,
                                           is_causal=causal)
        ref = mha(x, is_causal=causal)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_flops_of_qk_match_the_einsum_count():
    B, H, L, S, d = 2, 4, 16, 24, 8
    assert qk_flops(B, H, L, S, d) == 2 * B * H * L * S * d
    assert einsum_flops("bhqd,bhkd->bhqk", (B, H, L, d), (B, H, S, d)) == qk_flops(B, H, L, S, d)
    assert einsum_flops("ij,jk->ik", (3, 5), (5, 7)) == 2 * 3 * 5 * 7
    assert einsum_flops("i,j->ij", (3,), (4,)) == 12  # nothing summed: multiplies only
    assert attention_flops(B, H, L, S, d, 5) == 2 * B * H * L * S * (d + 5)


def test_flops_count_matches_measured_multiply_adds():
    """Counting multiply-adds by hand on a tiny case: every output entry is a d-term dot."""
    q, k, _ = _qkv(1, 2, 3, 4, 5)
    n_outputs = scores_matmul(q, k).numel()
    assert qk_flops(1, 2, 3, 4, 5) == n_outputs * 2 * q.shape[-1]


def test_bad_inputs_name_the_argument():
    q, k, _ = _qkv(1, 1, 3, 3, 2)
    with pytest.raises(ValueError, match="query"):
        scores_einsum(q[0], k)
    with pytest.raises(TypeError, match="key"):
        scores_matmul(q, "k")
    with pytest.raises(ValueError, match="n_heads"):
        split_heads_einsum(torch.randn(1, 2, 6), torch.randn(6, 6), 4)
    with pytest.raises(ValueError, match="w must"):
        split_heads_matmul(torch.randn(1, 2, 6), torch.randn(5, 6), 2)
    with pytest.raises(ValueError, match="w_o"):
        merge_heads_einsum(torch.randn(1, 2, 3, 4), torch.randn(7, 8))
    with pytest.raises(ValueError, match="index 'j'"):
        einsum_flops("ij,jk->ik", (3, 5), (4, 7))
    with pytest.raises(ValueError, match="operands"):
        einsum_flops("ij,jk->ik", (3, 5))
    with pytest.raises(ValueError, match="equation"):
        einsum_flops("ij,jk", (3, 5), (5, 7))
    with pytest.raises(ValueError, match="head_dim"):
        qk_flops(1, 1, 2, 2, -1)
