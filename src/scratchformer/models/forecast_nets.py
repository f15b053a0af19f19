r"""Direct multi-step forecasters of one channel: DLinear and a PatchTST-style encoder.

Both map a history ``(B, lookback)`` to a forecast ``(B, horizon)`` in one pass and are trained
with MSE; a multivariate series is forecast channel by channel with shared weights
(channel independence).

* **DLinear** (Zeng et al., 2023, "Are Transformers Effective for Time Series Forecasting?"):
  a moving average (kernel 25, ends padded by repetition) splits the history into trend and
  remainder; one linear map of each, summed.
* **PatchTST** (Nie et al., 2023, "A Time Series is Worth 64 Words"): instance normalisation
  (RevIN without affine), the history cut into overlapping patches (the end padded by
  repeating the last value ``stride`` times), a linear patch embedding with learned positions,
  the library's `TransformerBlock` encoder (bidirectional, pre-LN), and a linear head over the
  flattened patch states. No tokenization: values go in and come out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchformer.nn.block import BlockConfig, TransformerBlock, make_norm
from scratchformer.validation import check_int, check_probability

__all__ = ["DLinear", "PatchTST", "moving_average"]


def moving_average(x: Tensor, kernel: int) -> Tensor:
    """Centred moving average over the last axis of ``(B, T)``, ends padded by repetition."""
    kernel = check_int("kernel", kernel)
    front = x[:, :1].expand(-1, (kernel - 1) // 2)
    back = x[:, -1:].expand(-1, kernel // 2)
    padded = torch.cat((front, x, back), 1)
    return F.avg_pool1d(padded[:, None], kernel, stride=1)[:, 0]


class DLinear(nn.Module):
    """Trend + remainder decomposition, one linear map each: ``(B, L) -> (B, H)``."""

    def __init__(self, lookback: int, horizon: int, kernel: int = 25) -> None:
        super().__init__()
        self.lookback, self.horizon = check_int("lookback", lookback), check_int("horizon",
                                                                                 horizon)
        self.kernel = check_int("kernel", kernel)
        self.seasonal = nn.Linear(lookback, horizon)
        self.trend = nn.Linear(lookback, horizon)

    def forward(self, x: Tensor) -> Tensor:
        """The forecast of histories ``x`` (B, lookback)."""
        trend = moving_average(x, self.kernel)
        return self.seasonal(x - trend) + self.trend(trend)


class PatchTST(nn.Module):
    """Patches of the normalised history -> transformer encoder -> linear head (B, horizon)."""

    def __init__(self, lookback: int, horizon: int, *, patch_len: int = 16, stride: int = 8,
                 d_model: int = 16, n_heads: int = 4, n_layers: int = 3, d_hidden: int = 128,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.lookback = check_int("lookback", lookback)
        self.horizon = check_int("horizon", horizon)
        self.patch_len, self.stride = check_int("patch_len", patch_len), check_int("stride",
                                                                                   stride)
        check_probability("dropout", dropout)
        if patch_len > lookback + stride:
            raise ValueError(f"patch_len={patch_len} exceeds lookback + stride")
        self.n_patches = (lookback + stride - patch_len) // stride + 1
        self.embed = nn.Linear(patch_len, d_model)
        self.pos = nn.Parameter(torch.empty(self.n_patches, d_model).uniform_(-0.02, 0.02))
        self.drop = nn.Dropout(dropout)
        block = BlockConfig(d_model, n_heads, d_hidden, activation="gelu", dropout=dropout)
        self.blocks = nn.ModuleList(TransformerBlock(block) for _ in range(n_layers))
        self.norm = make_norm("layer", d_model)
        self.head = nn.Linear(self.n_patches * d_model, horizon)

    def patches(self, x: Tensor) -> Tensor:
        """Overlapping patches ``(B, n_patches, patch_len)`` of ``x`` (B, lookback)."""
        padded = torch.cat((x, x[:, -1:].expand(-1, self.stride)), 1)
        return padded.unfold(1, self.patch_len, self.stride)

    def encode(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        """Final patch states (B, n_patches, d) of normalised histories, and the attention
        maps of every layer when ``need_weights``."""
        h = self.drop(self.embed(self.patches(x)) + self.pos)
        maps: list[Tensor] = []
        for block in self.blocks:
            if need_weights:
                h, w = block(h, need_weights=True)
                maps.append(w)
            else:
                h = block(h)
        return self.norm(h), maps

    def forward(self, x: Tensor) -> Tensor:
        """The forecast of histories ``x`` (B, lookback), in their own scale."""
        mu = x.mean(1, keepdim=True)
        sd = (x.var(1, keepdim=True, unbiased=False) + 1e-5).sqrt()
        h, _ = self.encode((x - mu) / sd)
        return self.head(h.flatten(1)) * sd + mu
