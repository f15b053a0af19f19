"""Generation: KV-cached decoding equals uncached decoding; greedy, top-k, top-p, temperature."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchformer.generation import generate, sample_next_token, top_k_filter, top_p_filter
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.nn.kv_cache import KVCache, LayerKVCache

F64 = torch.float64


def _model(dtype: torch.dtype = torch.float32, backend: str = "scratch", **kw) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=23, context_len=12, n_layers=2, n_heads=2, d_model=16,
        attention_backend=backend, **kw,
    )
    return GPT(cfg).to(dtype).eval()


def _prompt(B: int = 2, T: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 23, (B, T), generator=torch.Generator().manual_seed(seed))


# --- the KV cache -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["scratch", "sdpa"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (F64, 1e-12)])
@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_cached_and_uncached_decoding_give_the_same_logits(backend, dtype, tol, positional):
    """Every step's logits agree, also after the window slides past context_len (12)."""
    model = _model(dtype, backend, positional=positional)
    prompt = _prompt()
    kw = {"greedy": True, "return_logits": True}
    cached, logits_cached = generate(model, prompt, 14, use_cache=True, **kw)
    plain, logits_plain = generate(model, prompt, 14, use_cache=False, **kw)
    assert cached.shape == (2, 18) and logits_cached.shape == (2, 14, 23)
    assert torch.equal(cached, plain)
    assert torch.equal(cached[:, :4], prompt)
    assert (logits_cached - logits_plain).abs().max().item() < tol
    # the uncached logits are the model's last-position logits on the cropped window
    window = cached[:, 17 - 12 : 17]
    torch.testing.assert_close(logits_plain[:, -1], model(window)[0][:, -1], rtol=0, atol=tol)


def test_sampled_decoding_with_and_without_cache_agrees_and_is_reproducible():
    model = _model()
    kw = {"temperature": 0.8, "top_k": 10, "top_p": 0.9}
    a = generate(model, _prompt(), 10, generator=torch.Generator().manual_seed(7), **kw)
    b = generate(model, _prompt(), 10, generator=torch.Generator().manual_seed(7), **kw)
    c = generate(model, _prompt(), 10, use_cache=False,
                 generator=torch.Generator().manual_seed(7), **kw)
    d = generate(model, _prompt(), 10, generator=torch.Generator().manual_seed(8), **kw)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(a, d)


def test_prompt_longer_than_the_window_is_cropped():
    model = _model()
    prompt = _prompt(T=20)
    out, logits = generate(model, prompt, 3, greedy=True, return_logits=True)
    assert out.shape == (2, 23) and torch.equal(out[:, :20], prompt)
    torch.testing.assert_close(logits[:, 0], model(prompt[:, -12:])[0][:, -1])


def test_kv_cache_bookkeeping_and_errors():
    layer = LayerKVCache(4)
    k = torch.randn(2, 3, 3, 5)
    keys, values = layer.append(k, k + 1)
    assert keys.shape == (2, 3, 3, 5) and layer.length == 3 and torch.equal(values, k + 1)
    with pytest.raises(ValueError, match="holds 4 positions; 3 are used and 2 more do not fit"):
        layer.append(k[:, :, :2], k[:, :, :2])
    with pytest.raises(ValueError, match="does not fit the 3 cached positions"):
        layer.append(torch.randn(1, 3, 1, 5), torch.randn(1, 3, 1, 5))
    layer.reset()
    keys, _ = layer.append(torch.ones(1, 3, 1, 5), torch.ones(1, 3, 1, 5))  # new shape after reset
    assert keys.shape == (1, 3, 1, 5)
    with pytest.raises(ValueError, match=r"\(batch, heads, length, head_dim\)"):
        layer.append(torch.ones(3, 1, 5), torch.ones(3, 1, 5))
    cache = KVCache(3, 8)
    assert len(cache) == 3 and cache.length == 0 and "capacity=8" in repr(cache)
    with pytest.raises(ValueError, match="n_layers must be >= 1"):
        KVCache(0, 8)
    model = _model()
    with pytest.raises(ValueError, match="kv_cache must be a KVCache with 2 layers"):
        model(_prompt(), kv_cache=KVCache(3, 12))


# --- sampling rules ---------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(k=st.integers(1, 12), seed=st.integers(0, 2**31 - 1), ties=st.booleans())
def test_top_k_keeps_exactly_k_candidates(k, seed, ties):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 10, generator=g)
    if ties:
        logits = logits.round()  # many equal values, also at the k-th place
    kept = top_k_filter(logits, k)
    finite = torch.isfinite(kept)
    assert (finite.sum(-1) == min(k, 10)).all()
    assert torch.equal(kept[finite], logits[finite])
    # every kept logit is >= every dropped one
    for row, keep in zip(logits, finite, strict=True):
        if (~keep).any():
            assert row[keep].min() >= row[~keep].max()


@settings(max_examples=80, deadline=None)
@given(p=st.floats(0.01, 1.0), seed=st.integers(0, 2**31 - 1), vocab=st.integers(1, 9))
def test_top_p_keeps_the_smallest_set_reaching_p(p, seed, vocab):
    """Brute force: the kept set is the shortest prefix of the sorted tokens with mass >= p."""
    logits = torch.randn(3, vocab, generator=torch.Generator().manual_seed(seed), dtype=F64)
    kept = torch.isfinite(top_p_filter(logits, p))
    probs = logits.softmax(-1)
    for row_probs, row_keep in zip(probs, kept, strict=True):
        order = row_probs.argsort(descending=True)
        sorted_p = row_probs[order]
        m = 1
        while m < vocab and sorted_p[:m].sum() < p:
            m += 1
        assert row_keep.sum().item() == m
        assert row_keep[order[:m]].all()
        assert row_probs[row_keep].sum() >= p - 1e-12
        if m > 1:  # one fewer would not reach p: the set is the smallest
            assert row_probs[order[: m - 1]].sum() < p


def test_top_p_one_keeps_everything_and_tiny_p_keeps_the_argmax():
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0]])
    assert torch.isfinite(top_p_filter(logits, 1.0)).all()
    assert torch.isfinite(top_p_filter(logits, 1e-6)).tolist() == [[False, True, False, False]]


def test_greedy_and_temperature_zero_pick_the_argmax():
    logits = torch.randn(64, 23, generator=torch.Generator().manual_seed(0))
    best = logits.argmax(-1)
    assert torch.equal(sample_next_token(logits, greedy=True), best)
    assert torch.equal(sample_next_token(logits, temperature=0.0), best)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(sample_next_token(logits, temperature=1e-4, generator=g), best)
    # at temperature 1 sampling does not always pick the argmax
    assert not torch.equal(sample_next_token(logits, generator=g), best)


def test_small_temperature_generation_equals_greedy():
    model = _model()
    greedy = generate(model, _prompt(), 8, greedy=True)
    cold = generate(model, _prompt(), 8, temperature=1e-4,
                    generator=torch.Generator().manual_seed(3))
    assert torch.equal(greedy, cold)


def test_sampling_frequencies_follow_the_filtered_distribution():
    """With top_k=2 only the two best tokens appear, in proportion softmax over those two."""
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0]]).expand(4000, 4)
    tokens = sample_next_token(logits, top_k=2, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(tokens, minlength=4)
    assert counts[2] == 0 and counts[3] == 0
    expected = torch.tensor([2.0, 1.0]).softmax(0)[0].item()  # 0.731
    assert abs(counts[0].item() / 4000 - expected) < 0.03


def test_eos_stops_generation_and_pads_finished_rows():
    model = _model()
    prompt = _prompt()
    free = generate(model, prompt, 6, greedy=True)
    eos = int(free[0, 5])  # the second token row 0 generates
    first = int((free[0, 4:] == eos).nonzero()[0])  # its first appearance (step 0 or 1)
    out = generate(model, prompt, 6, greedy=True, eos_id=eos)
    assert torch.equal(out[0, : 5 + first], free[0, : 5 + first])
    assert (out[0, 4 + first :] == eos).all()  # finished rows keep emitting eos
    hits = (free[1, 4:] == eos).nonzero()
    if len(hits):  # row 1 unchanged up to its own eos
        assert torch.equal(out[1, : 5 + int(hits[0])], free[1, : 5 + int(hits[0])])
    else:
        assert torch.equal(out[1], free[1])
    alone = generate(model, prompt[:1], 6, greedy=True, eos_id=eos)
    assert alone.shape == (1, 5 + first)  # a batch whose rows have all finished stops early


def test_generate_restores_training_mode_and_handles_zero_tokens():
    model = _model(dropout=0.2).train()
    prompt = _prompt()
    a = generate(model, prompt, 5, greedy=True)
    b = generate(model, prompt, 5, greedy=True)
    assert torch.equal(a, b)  # dropout was off during generation
    assert model.training
    out, logits = generate(model, prompt, 0, return_logits=True)
    assert torch.equal(out, prompt) and logits.shape == (2, 0, 23)


def test_bad_arguments_raise():
    model = _model()
    prompt = _prompt()
    cases = [
        ({"model": torch.nn.Linear(2, 2)}, TypeError, "model must be a GPT"),
        ({"idx": prompt.float()}, TypeError, "idx must be an integer tensor"),
        ({"idx": prompt[0]}, ValueError, r"shape \(batch, length >= 1\)"),
        ({"max_new_tokens": -1}, ValueError, "max_new_tokens must be >= 0"),
        ({"temperature": -0.5}, ValueError, "temperature must be >= 0, got -0.5"),
        ({"top_k": 0}, ValueError, "top_k must be >= 1"),
        ({"top_k": 2.5}, TypeError, "top_k must be an int"),
        ({"top_p": 0.0}, ValueError, r"top_p must be > 0, got 0.0"),
        ({"top_p": 1.5}, ValueError, r"top_p must be <= 1, got 1.5"),
        ({"eos_id": 23}, ValueError, r"eos_id must be in \[0, vocab_size=23\)"),
        ({"greedy": 1}, TypeError, "greedy must be a bool, got int 1"),
        ({"generator": 3}, TypeError, "generator must be a torch.Generator"),
    ]
    for override, error, match in cases:
        args = {"model": model, "idx": prompt, "max_new_tokens": 2, **override}
        with pytest.raises(error, match=match):
            generate(args.pop("model"), args.pop("idx"), args.pop("max_new_tokens"), **args)
    with pytest.raises(TypeError, match="logits must be a floating tensor"):
        sample_next_token(torch.ones(2, 3, dtype=torch.long))
