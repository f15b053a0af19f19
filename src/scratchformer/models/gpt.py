"""A decoder-only transformer language model in the style of GPT-2.

    idx (B, T) -> token embedding + positions (learned or sin/cos) -> dropout
               -> n_layers causal blocks (pre- or post-LN) -> final norm -> x Wₑᵀ -> logits

Every position predicts the next token. The causal mask makes logit ``t`` a function of tokens
``0..t`` only (proof: docs/derivations/causal-mask.md), so one forward pass over a sequence of
length T trains T next-token predictions at once, and decoding can reuse the keys and values of
earlier positions (`KVCache`). With ``tie_weights`` the output projection is the token
embedding itself (Press & Wolf, 2017): the logit of token v is the dot product of the final
hidden state with v's embedding.

Initialisation follows GPT-2: every matrix and embedding ~ N(0, 0.02²), biases 0, and the two
projections that write into the residual stream (attention ``w_o``, FFN ``w2``) scaled down by
1/sqrt(2·n_layers), since the stream is a sum of 2·n_layers such branches.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from scratchformer.functional.sparse import SparsePattern
from scratchformer.nn.attention import MultiHeadAttention, check_backend
from scratchformer.nn.block import BlockConfig, TransformerBlock, make_norm
from scratchformer.nn.embeddings import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEmbedding,
    TokenEmbedding,
)
from scratchformer.nn.feedforward import FeedForward
from scratchformer.nn.kv_cache import KVCache
from scratchformer.nn.moe import MoEConfig, MoEFeedForward, moe_loss
from scratchformer.nn.norm import KERNELS, LayerNorm, check_kernels
from scratchformer.validation import check_bool, check_choice, check_int, check_optional_int

__all__ = ["FFN_KINDS", "GPT", "GPT_POSITIONALS", "IGNORE_INDEX", "GPTConfig"]

GPT_POSITIONALS = ("learned", "sinusoidal")
FFN_KINDS = ("dense", "moe")
IGNORE_INDEX = -100
"""Targets equal to this take no part in the loss (PyTorch's cross-entropy default)."""

INIT_STD = 0.02


@dataclass
class GPTConfig:
    """Sizes and switches of a `GPT`; checked on construction, handed whole to the model.

    Options are flat and routed by prefix: the block's fields build one `BlockConfig`
    (`block_config`), the ``moe_*`` fields one `MoEConfig` (`moe_config`), and each of those
    checks its own fields.

    ``d_hidden`` defaults to 4·d_model. ``bias`` puts biases in every linear map and shifts in
    the LayerNorms (GPT-2: True). ``activation`` is any name in `ACTIVATIONS` ("gelu_tanh" is
    GPT-2's "gelu_new"); ``norm`` is "layer" or "rms"; ``norm_position`` "pre" (GPT-2) or
    "post" (Vaswani et al., 2017; the final norm then follows a block that already ends in one).
    """

    vocab_size: int
    context_len: int
    n_layers: int
    n_heads: int
    d_model: int
    d_hidden: int | None = None
    dropout: float = 0.0
    bias: bool = True
    positional: str = "learned"
    tie_weights: bool = True
    attention_backend: str = "scratch"
    # kernels="torch" runs LayerNorm and the FFN activation with PyTorch's fused built-ins
    # (same functions as ours; for speed comparisons with models that use them).
    kernels: str = "scratch"
    # attention_backend="block_sparse" attends within a window + every-s-th-token layout
    # (scratchformer.functional.sparse), query blocks of sparse_block rows; sparse_window and
    # sparse_stride default to round(√T) for a sequence of T tokens.
    sparse_block: int = 64
    sparse_window: int | None = None
    sparse_stride: int | None = None
    activation: str = "gelu_tanh"
    norm: str = "layer"
    norm_eps: float = 1e-5
    norm_position: str = "pre"
    # Mixture of experts (scratchformer.nn.moe): ffn="moe" replaces every block's FFN.
    # moe_hidden is each routed expert's width (default hidden_size); while training the loss
    # gains moe_aux_weight·aux_loss (moe_balance="aux") + moe_z_weight·z_loss per layer, and
    # moe_balance="bias" needs `GPT.update_moe_bias()` after every optimiser step.
    ffn: str = "dense"
    moe_experts: int = 4
    moe_top_k: int = 2
    moe_hidden: int | None = None
    moe_shared: int = 0
    moe_shared_hidden: int | None = None
    moe_router: str = "softmax"
    moe_balance: str = "aux"
    moe_aux_weight: float = 0.01
    moe_z_weight: float = 0.0
    moe_noisy: bool = False
    moe_capacity_factor: float | None = None
    moe_bias_rate: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_len", "n_layers", "n_heads", "d_model"):
            check_int(name, getattr(self, name))
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model must be divisible by n_heads, got d_model={self.d_model} and "
                f"n_heads={self.n_heads}"
            )
        check_bool("tie_weights", self.tie_weights)
        check_choice("positional", self.positional, GPT_POSITIONALS)
        check_backend(self.attention_backend, "attention_backend")
        check_choice("kernels", self.kernels, KERNELS)
        check_choice("ffn", self.ffn, FFN_KINDS)
        check_int("sparse_block", self.sparse_block)
        check_optional_int("sparse_window", self.sparse_window)
        check_optional_int("sparse_stride", self.sparse_stride)
        self.block_config()  # checks the block's fields (and the moe_* ones)
        if self.positional == "sinusoidal" and self.d_model % 2:
            raise ValueError(
                f"positional='sinusoidal' needs an even d_model (sin/cos pairs), got {self.d_model}"
            )

    @property
    def hidden_size(self) -> int:
        """The FFN width: ``d_hidden``, or 4·d_model when that is None."""
        return 4 * self.d_model if self.d_hidden is None else self.d_hidden

    def sparse_pattern(self) -> SparsePattern:
        """The layout pattern the "block_sparse" backend uses (built for any backend)."""
        return SparsePattern(self.sparse_block, self.sparse_window, self.sparse_stride)

    def moe_config(self) -> MoEConfig:
        """The ``moe_*`` options as the MoE layer's own config (checked when built)."""
        return MoEConfig(
            experts=self.moe_experts, top_k=self.moe_top_k, hidden=self.moe_hidden,
            shared=self.moe_shared, shared_hidden=self.moe_shared_hidden,
            router=self.moe_router, balance=self.moe_balance, aux_weight=self.moe_aux_weight,
            z_weight=self.moe_z_weight, noisy=self.moe_noisy,
            capacity_factor=self.moe_capacity_factor, bias_rate=self.moe_bias_rate,
            prefix="moe_")

    def block_config(self) -> BlockConfig:
        """The config of every block: causal, the GPT's sizes, norms, kernel and FFN."""
        moe = self.moe_config()
        return BlockConfig(
            self.d_model, self.n_heads, self.hidden_size, activation=self.activation,
            dropout=self.dropout, norm=self.norm, norm_position=self.norm_position, causal=True,
            bias=self.bias, attention_backend=self.attention_backend,
            sparse=self.sparse_pattern(), norm_eps=self.norm_eps, norm_bias=self.bias,
            moe=moe if self.ffn == "moe" else None)



class GPT(nn.Module):
    """Decoder-only language model: token ids (B, T) -> next-token logits (B, T, vocab_size).

    ``forward(idx, targets)`` returns ``(logits, loss)`` (loss None without targets), so a
    trainer's loss function is ``lambda m, b: m(b.inputs, b.targets)[1]``.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = config
        d = config.d_model
        self.tok_emb = TokenEmbedding(config.vocab_size, d, init_std=INIT_STD)
        if config.positional == "learned":
            self.pos_emb: nn.Module = LearnedPositionalEmbedding(
                config.context_len, d, init_std=INIT_STD
            )
        else:
            self.pos_emb = SinusoidalPositionalEmbedding(config.context_len, d)
        self.drop = nn.Dropout(config.dropout)
        block = config.block_config()
        self.blocks = nn.ModuleList(TransformerBlock(block) for _ in range(config.n_layers))
        self.norm = make_norm(config.norm, d, config.norm_eps, config.bias)
        if config.tie_weights:
            self.register_parameter("lm_head", None)
        else:
            self.lm_head = nn.Parameter(torch.empty(config.vocab_size, d))
        self.reset_parameters()
        self.configure_kernels(config.kernels)

    # --- construction ---------------------------------------------------------------------

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, 0.02²) matrices/embeddings, zero biases, unit norm gains;
        residual-branch output projections get std 0.02/sqrt(2·n_layers)."""
        residual_std = INIT_STD / math.sqrt(2 * self.config.n_layers)
        nn.init.normal_(self.tok_emb.weight, std=INIT_STD)
        if isinstance(self.pos_emb, LearnedPositionalEmbedding):
            nn.init.normal_(self.pos_emb.weight, std=INIT_STD)
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head, std=INIT_STD)
        for block in self.blocks:
            attn, ffn = block.attn, block.ffn
            for w, std in ((attn.w_q, INIT_STD), (attn.w_k, INIT_STD), (attn.w_v, INIT_STD),
                           (attn.w_o, residual_std)):
                nn.init.normal_(w, std=std)
            for b in (attn.b_q, attn.b_k, attn.b_v, attn.b_o):
                if b is not None:
                    nn.init.zeros_(b)
            if isinstance(ffn, MoEFeedForward):
                ffn.init_gpt2(INIT_STD, residual_std)
            else:
                nn.init.normal_(ffn.w1, std=INIT_STD)
                nn.init.normal_(ffn.w2, std=residual_std)
                for b in (ffn.b1, ffn.b2):
                    if b is not None:
                        nn.init.zeros_(b)
            block.norm1.reset_parameters()
            block.norm2.reset_parameters()
        self.norm.reset_parameters()

    # --- switches and counts --------------------------------------------------------------

    @property
    def head_weight(self) -> Tensor:
        """The (vocab_size, d_model) output projection: the token embedding when tied."""
        return self.tok_emb.weight if self.lm_head is None else self.lm_head

    def configure_kernels(self, kernels: str) -> GPT:
        """Run every LayerNorm and FFN activation with ``kernels`` (see `KERNELS`); returns self."""
        kernels = check_kernels(kernels)
        for module in self.modules():
            if isinstance(module, LayerNorm):
                module.kernels = kernels
            elif isinstance(module, FeedForward):
                module.use_kernels(kernels)
        self.config = dataclasses.replace(self.config, kernels=kernels)
        return self

    def configure_backend(self, backend: str) -> GPT:
        """Switch every attention layer to the registered kernel ``backend``; returns self."""
        backend = check_backend(backend)
        for module in self.modules():
            if isinstance(module, MultiHeadAttention):
                module.backend = backend
        self.config = dataclasses.replace(self.config, attention_backend=backend)
        return self

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Trainable parameters, each shared tensor counted once.

        ``exclude_embeddings`` leaves out the token and positional tables (the "non-embedding"
        count of Kaplan et al., 2020); an untied output projection is still counted.
        """
        params = {id(p): p for p in self.parameters() if p.requires_grad}
        if exclude_embeddings:
            params.pop(id(self.tok_emb.weight), None)
            if isinstance(self.pos_emb, LearnedPositionalEmbedding):
                params.pop(id(self.pos_emb.weight), None)
        return sum(p.numel() for p in params.values())

    def moe_layers(self) -> list[MoEFeedForward]:
        """The blocks' MoE FFNs, first layer first (empty for ``ffn="dense"``)."""
        return [b.ffn for b in self.blocks if isinstance(b.ffn, MoEFeedForward)]

    def update_moe_bias(self) -> None:
        """Auxiliary-loss-free balancing step of every MoE layer; call after each optimiser
        step when ``moe_balance="bias"`` (a no-op otherwise)."""
        for layer in self.moe_layers():
            if layer.balance == "bias":
                layer.update_bias()

    def active_parameters(self) -> int:
        """Parameters one token uses: `num_parameters` less the routed experts it skips."""
        skipped = sum(sum(p.numel() for p in m.parameters()) - m.active_parameters()
                      for m in self.moe_layers())
        return self.num_parameters() - skipped

    # --- forward --------------------------------------------------------------------------

    def _check_idx(self, idx: Tensor, offset: int) -> None:
        if not isinstance(idx, Tensor):
            raise TypeError(f"idx must be a torch.Tensor of token ids, got {type(idx).__name__}")
        if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise TypeError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        if idx.ndim != 2 or idx.shape[1] == 0:
            raise ValueError(f"idx must have shape (batch, length >= 1), got {tuple(idx.shape)}")
        if offset + idx.shape[1] > self.config.context_len:
            cached = f"{offset} cached + " if offset else ""
            raise ValueError(
                f"sequence of {cached}{idx.shape[1]} tokens exceeds context_len="
                f"{self.config.context_len}; crop the input to the last "
                f"{self.config.context_len - offset} tokens"
            )

    def embed(self, idx: Tensor, offset: int = 0) -> Tensor:
        """Token embeddings plus positions ``offset .. offset + T - 1``: (B, T) -> (B, T, d)."""
        self._check_idx(idx, offset)
        x = self.pos_emb(self.tok_emb(idx), offset)
        return self.drop(x) if self.training and self.drop.p > 0 else x

    def hidden_states(self, idx: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        """The final-norm hidden states (B, T, d_model) of token ids ``idx`` (B, T).

        With ``kv_cache`` the tokens continue the cached positions: they are embedded at
        positions ``kv_cache.length ..`` and their keys/values are appended to the cache.
        """
        if kv_cache is None:
            x = self.embed(idx)
            for block in self.blocks:
                x = block(x)
        else:
            if not isinstance(kv_cache, KVCache) or len(kv_cache) != len(self.blocks):
                raise ValueError(
                    f"kv_cache must be a KVCache with {len(self.blocks)} layers, got {kv_cache!r}"
                )
            x = self.embed(idx, kv_cache.length)
            for block, layer_cache in zip(self.blocks, kv_cache.layers, strict=True):
                x = block(x, kv_cache=layer_cache)
        return self.norm(x)

    def logits(self, hidden: Tensor) -> Tensor:
        """Next-token logits ``hidden @ Wᵀ`` (…, vocab_size) from final hidden states (…, d)."""
        return hidden @ self.head_weight.T

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        *,
        kv_cache: KVCache | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Logits (B, T, vocab_size) for token ids (B, T), and the mean cross-entropy.

        ``targets`` (B, T) holds the next token of every position; entries equal to
        `IGNORE_INDEX` (-100) are left out of the mean (all ignored gives NaN, as in PyTorch).
        The loss is None without targets. ``kv_cache``: see `hidden_states`.
        """
        logits = self.logits(self.hidden_states(idx, kv_cache))
        if targets is None:
            return logits, None
        if not isinstance(targets, Tensor) or targets.shape != idx.shape:
            got = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
            raise ValueError(f"targets must have the shape of idx {tuple(idx.shape)}, got {got}")
        if targets.dtype.is_floating_point or targets.dtype == torch.bool:
            raise TypeError(f"targets must hold integer token ids, got dtype {targets.dtype}")
        loss = nn.functional.cross_entropy(
            logits.view(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=IGNORE_INDEX,
        )
        if self.training and self.config.ffn == "moe":  # balancing terms; evaluation is pure CE
            c = self.config
            loss = loss + moe_loss(self.moe_layers(), c.moe_aux_weight, c.moe_z_weight)
        return logits, loss

    @torch.no_grad()
    def attention_maps(self, idx: Tensor) -> list[Tensor]:
        """Each layer's attention weights (B, n_heads, T, T) for ``idx`` (B, T), for plotting.

        Computed by the scratch kernel whatever the backend, without gradients; rows sum to 1
        and the upper triangle is exactly 0. Embedding dropout follows the train/eval mode.
        """
        x = self.embed(idx)
        maps = []
        for block in self.blocks:
            x, weights = block(x, need_weights=True)
            maps.append(weights)
        return maps

    def new_kv_cache(self, capacity: int | None = None) -> KVCache:
        """An empty `KVCache` for this model with room for ``capacity`` (default context_len)."""
        capacity = self.config.context_len if capacity is None else capacity
        if isinstance(capacity, int) and capacity > self.config.context_len:
            raise ValueError(
                f"capacity must be <= context_len={self.config.context_len}, got {capacity}"
            )
        return KVCache(len(self.blocks), capacity)

    def extra_repr(self) -> str:
        """The configuration, shown by ``print(model)``."""
        c = self.config
        return (
            f"vocab_size={c.vocab_size}, context_len={c.context_len}, n_layers={c.n_layers}, "
            f"n_heads={c.n_heads}, d_model={c.d_model}, positional={c.positional!r}, "
            f"tie_weights={c.tie_weights}, attention_backend={c.attention_backend!r}"
        )

