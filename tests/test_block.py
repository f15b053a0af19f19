"""TransformerBlock (pre/post-LN, causal), the embedding layers, and the EncoderClassifier."""

from __future__ import annotations

import itertools

import pytest
import torch

from scratchformer.functional.normalization import layer_norm
from scratchformer.functional.positional import sinusoidal_positional_encoding
from scratchformer.models.encoder import EncoderClassifier
from scratchformer.nn.block import TransformerBlock
from scratchformer.nn.embeddings import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEmbedding,
    TokenEmbedding,
)
from scratchformer.nn.norm import LayerNorm, RMSNorm

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _block(**kw) -> TransformerBlock:
    torch.manual_seed(0)
    return TransformerBlock.build(16, 4, **kw).to(F64).eval()


# --- TransformerBlock ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("norm", "norm_position", "causal"),
    list(itertools.product(["layer", "rms"], ["pre", "post"], [False, True])),
)
def test_block_keeps_shape_and_builds_the_requested_norm(norm, norm_position, causal):
    block = TransformerBlock.build(16, 4, 40, norm=norm, norm_position=norm_position, causal=causal)
    x = torch.randn(3, 5, 16, generator=_gen(0))
    y = block(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert isinstance(block.norm1, LayerNorm if norm == "layer" else RMSNorm)
    y.sum().backward()
    assert all(p.grad is not None for p in block.parameters())


def _silence_sublayers(block: TransformerBlock) -> None:
    """Zero every attention and FFN parameter, so both sub-layers output exactly zero."""
    with torch.no_grad():
        for p in itertools.chain(block.attn.parameters(), block.ffn.parameters()):
            p.zero_()


def test_pre_ln_block_with_silent_sublayers_is_the_identity():
    """Pre-LN leaves the residual stream un-normalised: x + 0 + 0 = x."""
    block = _block(norm_position="pre")
    _silence_sublayers(block)
    x = 5.0 * torch.randn(2, 6, 16, dtype=F64, generator=_gen(1)) + 3.0
    torch.testing.assert_close(block(x), x, atol=0, rtol=0)


def test_post_ln_block_with_silent_sublayers_normalises_the_stream():
    """Post-LN normalises after each residual sum: N2(N1(x + 0) + 0)."""
    block = _block(norm_position="post")
    _silence_sublayers(block)
    x = 5.0 * torch.randn(2, 6, 16, dtype=F64, generator=_gen(1)) + 3.0
    expected = layer_norm(layer_norm(x))
    torch.testing.assert_close(block(x), expected, atol=1e-12, rtol=0)
    assert not torch.allclose(block(x), x)


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_block_matches_its_defining_equations(norm_position):
    block = _block(norm_position=norm_position)
    x = torch.randn(2, 6, 16, dtype=F64, generator=_gen(2))
    a, f, n1, n2 = block.attn, block.ffn, block.norm1, block.norm2
    if norm_position == "pre":
        h = x + a(n1(x))
        expected = h + f(n2(h))
    else:
        h = n1(x + a(x))
        expected = n2(h + f(h))
    torch.testing.assert_close(block(x), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_causal_block_ignores_the_future(norm_position):
    block = _block(norm_position=norm_position, causal=True)
    x = torch.randn(2, 8, 16, dtype=F64, generator=_gen(3))
    x2 = x.clone()
    x2[:, 5:] += torch.randn(2, 3, 16, dtype=F64, generator=_gen(4))  # perturb positions 5..7
    y, y2 = block(x), block(x2)
    torch.testing.assert_close(y2[:, :5], y[:, :5], atol=1e-12, rtol=0)
    assert (y2[:, 5:] - y[:, 5:]).abs().max() > 1e-3
    # without the causal flag the same perturbation reaches every position
    bidir = _block(norm_position=norm_position)
    assert (bidir(x2)[:, :5] - bidir(x)[:, :5]).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_causal_flag_combines_with_a_padding_mask(kind):
    """causal + padding mask == non-causal block given (padding AND lower triangle)."""
    causal = _block(causal=True)
    plain = _block()
    x = torch.randn(2, 7, 16, dtype=F64, generator=_gen(5))
    keep = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])[:, None, None, :]
    tril = torch.ones(7, 7, dtype=torch.bool).tril()
    if kind == "bool":
        mask, both = keep, keep & tril
    else:
        zero = torch.zeros((), dtype=F64)
        mask = zero.masked_fill(~keep, float("-inf"))
        both = zero.masked_fill(~(keep & tril), float("-inf"))
    torch.testing.assert_close(causal(x, attn_mask=mask), plain(x, attn_mask=both), atol=1e-12,
                               rtol=0)


def test_block_dropout_is_random_in_training_and_off_in_eval():
    torch.manual_seed(0)
    block = TransformerBlock.build(16, 4, dropout=0.5).to(F64)
    x = torch.randn(2, 5, 16, dtype=F64, generator=_gen(6))
    assert not torch.equal(block(x), block(x))
    block.eval()
    assert torch.equal(block(x), block(x))


def test_block_rejects_bad_arguments():
    with pytest.raises(ValueError, match="norm must be one of"):
        TransformerBlock.build(16, 4, norm="batch")
    with pytest.raises(ValueError, match="norm_position must be one of"):
        TransformerBlock.build(16, 4, norm_position="sandwich")
    with pytest.raises(TypeError, match="causal must be a bool"):
        TransformerBlock.build(16, 4, causal=1)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        TransformerBlock.build(16, 4, dropout=1.0)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, length, 16\)"):
        TransformerBlock.build(16, 4)(torch.zeros(2, 5, 8))


# --- embeddings ---------------------------------------------------------------------------------


def test_token_embedding_looks_up_rows_and_trains_only_those_rows():
    emb = TokenEmbedding(10, 4)
    ids = torch.tensor([[1, 3, 3], [0, 1, 9]])
    out = emb(ids)
    assert out.shape == (2, 3, 4)
    torch.testing.assert_close(out[1, 2], emb.weight[9])
    out.sum().backward()
    counts = torch.bincount(ids.flatten(), minlength=10).float()
    torch.testing.assert_close(emb.weight.grad, counts[:, None].expand(10, 4))
    with pytest.raises(TypeError, match="integer tensor of ids"):
        emb(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="vocab_size must be >= 1"):
        TokenEmbedding(0, 4)


def test_sinusoidal_embedding_adds_the_table_with_offset():
    pe = SinusoidalPositionalEmbedding(20, 8)
    x = torch.randn(2, 5, 8, generator=_gen(7))
    table = sinusoidal_positional_encoding(20, 8)
    torch.testing.assert_close(pe(x) - x, table[:5].expand(2, 5, 8))
    torch.testing.assert_close(pe(x, offset=15) - x, table[15:20].expand(2, 5, 8))
    assert list(pe.parameters()) == [] and "pe" not in pe.state_dict()  # derived, not stored
    assert pe.to(F64)(x.to(F64)).dtype == F64
    with pytest.raises(ValueError, match="holds 20 positions"):
        pe(x, offset=16)
    with pytest.raises(ValueError, match=r"expects x of shape \(\.\.\., L, 8\)"):
        pe(torch.zeros(2, 5, 6))


def test_learned_embedding_is_a_trained_table():
    pe = LearnedPositionalEmbedding(6, 4)
    x = torch.zeros(1, 3, 4)
    torch.testing.assert_close(pe(x, offset=2)[0], pe.weight[2:5])
    pe(x).sum().backward()
    assert torch.equal(pe.weight.grad[:3], torch.ones(3, 4))
    assert torch.equal(pe.weight.grad[3:], torch.zeros(3, 4))
    with pytest.raises(ValueError, match="offset must be >= 0, got -1"):
        pe(x, offset=-1)


# --- EncoderClassifier --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("positional", "pooling"),
    list(itertools.product(["sinusoidal", "learned", "none"], ["mean", "cls"])),
)
def test_encoder_shapes(positional, pooling):
    model = EncoderClassifier(13, 5, 16, 2, 2, 9, positional=positional, pooling=pooling)
    tokens = torch.randint(0, 13, (4, 9), generator=_gen(8))
    assert model(tokens).shape == (4, 5)
    extra = 1 if pooling == "cls" else 0
    assert model.encode(tokens[:, :6]).shape == (4, 6 + extra, 16)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_encoder_ignores_padded_tokens(pooling):
    torch.manual_seed(0)
    model = EncoderClassifier(13, 3, 16, 2, 2, 8, pooling=pooling).to(F64).eval()
    tokens = torch.randint(0, 13, (2, 8), generator=_gen(9))
    keep = torch.tensor([[True] * 8, [True] * 5 + [False] * 3])
    other = tokens.clone()
    other[1, 5:] = (other[1, 5:] + 1) % 13  # change only padded slots
    torch.testing.assert_close(model(tokens, keep), model(other, keep), atol=1e-12, rtol=0)
    # and the unpadded row is unaffected by the other row's padding
    torch.testing.assert_close(model(tokens, keep)[0], model(tokens[:1])[0], atol=1e-12, rtol=0)


def test_encoder_final_norm_only_with_pre_ln():
    assert isinstance(EncoderClassifier(5, 2, 8, 2, 1, 4).norm, LayerNorm)
    post = EncoderClassifier(5, 2, 8, 2, 1, 4, norm_position="post", norm="rms")
    assert isinstance(post.norm, torch.nn.Identity)
    assert isinstance(post.blocks[0].norm2, RMSNorm)


def test_encoder_rejects_bad_arguments():
    with pytest.raises(ValueError, match="positional must be one of"):
        EncoderClassifier(5, 2, 8, 2, 1, 4, positional="rope")
    with pytest.raises(ValueError, match="pooling must be one of"):
        EncoderClassifier(5, 2, 8, 2, 1, 4, pooling="max")
    with pytest.raises(TypeError, match="n_layers must be an int"):
        EncoderClassifier(5, 2, 8, 2, 1.5, 4)
    model = EncoderClassifier(5, 2, 8, 2, 1, 4)
    with pytest.raises(ValueError, match=r"sequence length must be in \[1, max_len=4\], got 5"):
        model(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"tokens must have shape \(batch, length\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor of ids"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="padding_mask must have the tokens' shape"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one real token"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.bool))
