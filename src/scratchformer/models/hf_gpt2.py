"""Loading Hugging Face GPT-2 checkpoints into our `GPT`.

GPT-2's linear maps are ``Conv1D`` modules whose weight is stored (in, out) and applied as
``y = x @ W + b``: exactly our ``x @ w`` convention, so no weight is transposed. (``nn.Linear``
stores (out, in) and computes ``x @ Wᵀ``; that is where the usual transposes come from.) The
correspondence, per layer ``i``:

    h.i.ln_1, h.i.ln_2               -> blocks.i.norm1, blocks.i.norm2
    h.i.attn.c_attn   (d, 3d), (3d,) -> [w_q | w_k | w_v], [b_q | b_k | b_v]  (split on out axis)
    h.i.attn.c_proj   (d, d)         -> blocks.i.attn.w_o, b_o
    h.i.mlp.c_fc      (d, 4d)        -> blocks.i.ffn.w1, b1
    h.i.mlp.c_proj    (4d, d)        -> blocks.i.ffn.w2, b2
    wte (V, d), wpe (n_positions, d) -> tok_emb, pos_emb (learned);  ln_f -> norm
    lm_head (V, d)                   -> tied to wte (or our lm_head when untied)

GPT-2's "gelu_new" is the tanh approximation of GELU (our "gelu_tanh"), its attention scale is
1/sqrt(head_dim), and its blocks are pre-LN with a final LayerNorm: the same model as ours.
``transformers`` is an optional dependency (extra "hf") and is only imported when needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scratchformer.models.gpt import GPT, GPTConfig

__all__ = [
    "HF_ACTIVATIONS",
    "convert_hf_gpt2_state",
    "gpt_config_from_hf",
    "load_hf_gpt2_state",
    "load_pretrained_hf",
]

HF_ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",  # the same tanh formula, written as x·√(2/π)·(1 + a·x²)
    "gelu": "gelu",
    "relu": "relu",
}
"""Hugging Face ``activation_function`` names -> our activation names."""

# Buffers older checkpoints carry (the causal mask); nothing to load.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def _get(hf_config: Any, name: str, default: Any = None) -> Any:
    if isinstance(hf_config, Mapping):
        return hf_config.get(name, default)
    return getattr(hf_config, name, default)


def gpt_config_from_hf(hf_config: Any, **overrides: Any) -> GPTConfig:
    """The `GPTConfig` of a Hugging Face ``GPT2Config`` (object or dict); ``overrides`` win.

    Dropout is 0 (inference); pass ``dropout=...`` to fine-tune. Variants this model does not
    implement (unscaled or layer-scaled attention, cross-attention) raise ValueError.
    """
    model_type = _get(hf_config, "model_type", "gpt2")
    if model_type != "gpt2":
        raise ValueError(f"hf_config must describe a GPT-2 model, got model_type={model_type!r}")
    act = _get(hf_config, "activation_function", "gelu_new")
    if act not in HF_ACTIVATIONS:
        raise ValueError(
            f"activation_function {act!r} is not supported; expected one of "
            f"{sorted(HF_ACTIVATIONS)}"
        )
    for name, expected in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False),
    ):
        value = _get(hf_config, name, expected)
        if bool(value) != expected:
            raise ValueError(f"GPT-2 variants with {name}={value} are not supported")
    fields = {
        "vocab_size": _get(hf_config, "vocab_size"),
        "context_len": _get(hf_config, "n_positions"),
        "n_layers": _get(hf_config, "n_layer"),
        "n_heads": _get(hf_config, "n_head"),
        "d_model": _get(hf_config, "n_embd"),
        "d_hidden": _get(hf_config, "n_inner"),
        "dropout": 0.0,
        "bias": True,
        "positional": "learned",
        "tie_weights": bool(_get(hf_config, "tie_word_embeddings", True)),
        "activation": HF_ACTIVATIONS[act],
        "norm": "layer",
        "norm_eps": float(_get(hf_config, "layer_norm_epsilon", 1e-5)),
    }
    fields.update(overrides)
    return GPTConfig(**fields)


def convert_hf_gpt2_state(hf_state: Mapping[str, Tensor], n_layers: int) -> dict[str, Tensor]:
    """Rename and split a GPT-2 state dict into our `GPT`'s key names (see module docstring).

    Accepts ``GPT2LMHeadModel`` keys (``transformer.*``, ``lm_head.weight``) or bare
    ``GPT2Model`` keys. Unknown keys raise ValueError; ``lm_head.weight`` is returned as
    ``lm_head`` and the caller decides whether it is tied.
    """
    state = {}
    for key, value in hf_state.items():
        key = key.removeprefix("transformer.")
        if key.endswith(_IGNORED_SUFFIXES):
            continue
        state[key] = value
    out: dict[str, Tensor] = {}

    def take(src: str, dst: str) -> None:
        if src not in state:
            raise ValueError(f"GPT-2 state dict is missing {src!r}")
        out[dst] = state.pop(src)

    take("wte.weight", "tok_emb.weight")
    take("wpe.weight", "pos_emb.weight")
    for i in range(n_layers):
        h, b = f"h.{i}.", f"blocks.{i}."
        for hf_ln, ours in (("ln_1", "norm1"), ("ln_2", "norm2")):
            take(h + hf_ln + ".weight", b + ours + ".weight")
            take(h + hf_ln + ".bias", b + ours + ".bias")
        take(h + "attn.c_attn.weight", "_qkv_w")
        take(h + "attn.c_attn.bias", "_qkv_b")
        w, bias = out.pop("_qkv_w"), out.pop("_qkv_b")
        d = w.shape[0]
        if w.shape != (d, 3 * d) or bias.shape != (3 * d,):
            raise ValueError(
                f"{h}attn.c_attn must be (d, 3d) with bias (3d,), got {tuple(w.shape)} and "
                f"{tuple(bias.shape)}"
            )
        for name, wi, bi in zip("qkv", w.split(d, dim=1), bias.split(d), strict=True):
            out[f"{b}attn.w_{name}"] = wi
            out[f"{b}attn.b_{name}"] = bi
        take(h + "attn.c_proj.weight", b + "attn.w_o")
        take(h + "attn.c_proj.bias", b + "attn.b_o")
        take(h + "mlp.c_fc.weight", b + "ffn.w1")
        take(h + "mlp.c_fc.bias", b + "ffn.b1")
        take(h + "mlp.c_proj.weight", b + "ffn.w2")
        take(h + "mlp.c_proj.bias", b + "ffn.b2")
    take("ln_f.weight", "norm.weight")
    take("ln_f.bias", "norm.bias")
    if "lm_head.weight" in state:
        out["lm_head"] = state.pop("lm_head.weight")
    if state:
        raise ValueError(
            f"GPT-2 state dict has keys this {n_layers}-layer model does not use: "
            f"{sorted(state)[:10]}"
        )
    return out


@torch.no_grad()
def load_hf_gpt2_state(model: GPT, hf_state: Mapping[str, Tensor]) -> GPT:
    """Copy a Hugging Face GPT-2 state dict into ``model`` (in place); returns ``model``.

    ``model`` must have learned positions and matching sizes. With tied weights a given
    ``lm_head.weight`` must equal ``wte.weight``; untied models require it.
    """
    if model.config.positional != "learned":
        raise ValueError("GPT-2 weights need positional='learned' (they include wpe)")
    ours = convert_hf_gpt2_state(hf_state, model.config.n_layers)
    head = ours.pop("lm_head", None)
    if model.config.tie_weights:
        if head is not None and not torch.equal(head, ours["tok_emb.weight"]):
            raise ValueError("model ties its weights but lm_head.weight differs from wte.weight")
    else:
        if head is None:
            raise ValueError("model has an untied lm_head but the state dict has no lm_head.weight")
        ours["lm_head"] = head
    expected = model.state_dict()
    for key, value in ours.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"shape mismatch for {key}: checkpoint {tuple(value.shape)}, model "
                f"{tuple(expected[key].shape)}"
            )
    model.load_state_dict(ours, strict=True)
    return model


def load_pretrained_hf(
    path_or_name: str | Path,
    *,
    local_files_only: bool = True,
    **overrides: Any,
) -> GPT:
    """Our `GPT` holding the weights of a Hugging Face GPT-2 checkpoint.

    ``path_or_name`` is a directory written by ``save_pretrained`` or a model name already in
    the local HF cache; nothing is downloaded unless ``local_files_only=False``. ``overrides``
    replace `GPTConfig` fields (e.g. ``attention_backend="sdpa"``). Returns the model in eval
    mode; raises FileNotFoundError when nothing is found locally.
    """
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "loading Hugging Face checkpoints needs transformers: pip install 'scratchformer[hf]'"
        ) from err
    if not isinstance(path_or_name, (str, Path)):
        raise TypeError(f"path_or_name must be a str or Path, got {type(path_or_name).__name__}")
    name = os.path.expanduser(str(path_or_name))
    meant_as_path = isinstance(path_or_name, Path) or os.path.isabs(name) or name.startswith(".")
    if meant_as_path and not os.path.isdir(name):
        raise FileNotFoundError(f"no GPT-2 checkpoint directory at {name!r}")
    try:
        hf_model = transformers.GPT2LMHeadModel.from_pretrained(
            name, local_files_only=local_files_only
        )
    except (OSError, ValueError) as err:
        where = " from local files (a directory or the Hugging Face cache)"
        raise FileNotFoundError(
            f"could not load a GPT-2 checkpoint {name!r}{where if local_files_only else ''}: "
            f"{err}"
        ) from err
    model = GPT(gpt_config_from_hf(hf_model.config, **overrides))
    load_hf_gpt2_state(model, hf_model.state_dict())
    return model.eval()
