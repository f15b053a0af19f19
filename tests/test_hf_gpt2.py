"""Loading Hugging Face GPT-2 weights reproduces the Hugging Face model's logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from scratchformer.generation import generate  # noqa: E402
from scratchformer.models.gpt import GPT  # noqa: E402
from scratchformer.models.hf_gpt2 import (  # noqa: E402
    convert_hf_gpt2_state,
    gpt_config_from_hf,
    load_hf_gpt2_state,
    load_pretrained_hf,
)

SIZES = {"n_layer": 2, "n_head": 4, "n_embd": 64, "n_positions": 32, "vocab_size": 100}


def _hf_config(**kw):
    return transformers.GPT2Config(
        **SIZES, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0, **kw,
    )


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A small random GPT-2 saved with save_pretrained, and the model itself."""
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(_hf_config()).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a mix-up would show
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(std=0.1)
    model.config._attn_implementation = "eager"
    path = tmp_path_factory.mktemp("hf_gpt2")
    model.save_pretrained(path)
    return path, model


@pytest.mark.parametrize("backend", ["scratch", "sdpa"])
def test_loaded_model_matches_hf_logits(hf_dir, backend):
    path, hf = hf_dir
    ours = load_pretrained_hf(path, attention_backend=backend)
    assert not ours.training and ours.config.attention_backend == backend
    assert ours.config.activation == "gelu_tanh" and ours.config.context_len == 32
    idx = torch.randint(0, 100, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx).logits
        logits, _ = ours(idx)
    assert (logits - expected).abs().max().item() < 1e-4
    assert ours.head_weight.data_ptr() == ours.tok_emb.weight.data_ptr()


def test_greedy_generation_matches_hf_generate(hf_dir):
    path, hf = hf_dir
    ours = load_pretrained_hf(str(path))
    prompt = torch.randint(1, 100, (1, 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        theirs = hf.generate(
            prompt, max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None,
            attention_mask=torch.ones_like(prompt),
        )
    assert torch.equal(generate(ours, prompt, 12, greedy=True), theirs)


def test_conv1d_layout_maps_without_transposes(hf_dir):
    """c_attn (d, 3d) splits along the output axis into w_q, w_k, w_v used as x @ w."""
    _, hf = hf_dir
    state = convert_hf_gpt2_state(hf.state_dict(), 2)
    c_attn = hf.transformer.h[1].attn.c_attn
    assert torch.equal(state["blocks.1.attn.w_k"], c_attn.weight[:, 64:128])
    assert torch.equal(state["blocks.1.attn.b_v"], c_attn.bias[128:])
    x = torch.randn(5, 64)
    q_hf = c_attn(x)[:, :64]
    torch.testing.assert_close(x @ state["blocks.1.attn.w_q"] + state["blocks.1.attn.b_q"], q_hf)


def test_config_conversion_and_unsupported_variants():
    cfg = gpt_config_from_hf(_hf_config(n_inner=96, activation_function="relu"))
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_hidden) == (2, 4, 64, 96)
    assert cfg.activation == "relu" and cfg.norm_eps == 1e-5 and cfg.dropout == 0.0
    assert gpt_config_from_hf(_hf_config().to_dict(), dropout=0.1).dropout == 0.1
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx"):
        gpt_config_from_hf(_hf_config(scale_attn_by_inverse_layer_idx=True))
    with pytest.raises(ValueError, match="activation_function 'silu' is not supported"):
        gpt_config_from_hf(_hf_config(activation_function="silu"))
    with pytest.raises(ValueError, match="model_type"):
        gpt_config_from_hf({"model_type": "llama"})


def test_mismatched_state_dicts_raise(hf_dir):
    _, hf = hf_dir
    state = hf.state_dict()
    small = GPT(gpt_config_from_hf(hf.config, n_layers=1))
    with pytest.raises(ValueError, match="does not use"):
        load_hf_gpt2_state(small, state)
    missing = {k: v for k, v in state.items() if "mlp.c_fc.bias" not in k}
    with pytest.raises(ValueError, match=r"missing 'h\.0\.mlp\.c_fc\.bias'"):
        load_hf_gpt2_state(GPT(gpt_config_from_hf(hf.config)), missing)
    with pytest.raises(ValueError, match="positional='learned'"):
        load_hf_gpt2_state(GPT(gpt_config_from_hf(hf.config, positional="sinusoidal")), state)
    wide = GPT(gpt_config_from_hf(hf.config, d_hidden=128))
    with pytest.raises(ValueError, match=r"shape mismatch for blocks\.0\.ffn\.w1"):
        load_hf_gpt2_state(wide, state)


def test_missing_checkpoint_errors_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no GPT-2 checkpoint directory"):
        load_pretrained_hf(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no GPT-2 checkpoint directory"):
        load_pretrained_hf(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="from local files"):
        load_pretrained_hf(tmp_path)  # exists, but holds no checkpoint
    with pytest.raises(FileNotFoundError, match="could not load a GPT-2 checkpoint"):
        load_pretrained_hf("scratchformer-no-such-model")
