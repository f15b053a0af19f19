"""A key/value cache for autoregressive decoding, and the causal mask that decoding with it needs.

A causal decoder's keys and values at position ``s`` depend only on tokens ``<= s``, so once
computed they never change. When generating token ``t + 1`` the model therefore only has to run
the *new* position through each layer: its query attends to the cached keys ``0..t`` plus its
own. Each step then costs one position per layer instead of a full prefix.

Storage is preallocated, ``(B, H, capacity, head_dim)`` per layer, and filled in place, so
appending costs the size of the new entries only (``torch.cat`` would copy the whole prefix at
every step: quadratic work over a generation). The cache is meant for inference: filling it
in place does not record gradients through earlier entries.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from scratchformer.validation import check_int

__all__ = ["KVCache", "LayerKVCache", "decode_causal_mask"]


@lru_cache(maxsize=64)
def _decode_mask_cached(L: int, S: int, device: torch.device) -> Tensor:
    return torch.ones(L, S, dtype=torch.bool, device=device).tril(diagonal=S - L)


def decode_causal_mask(L: int, S: int, device: torch.device | str | None = None) -> Tensor:
    """Boolean ``(L, S)`` causal mask aligned to the bottom-right corner (``S >= L``).

    The ``L`` queries are the *last* ``L`` of ``S`` positions, so query ``i`` may see keys
    ``j <= S - L + i``. PyTorch's ``is_causal`` is aligned top-left instead (query 0 sees key 0
    only), which is wrong for a chunk appended to a cache. Cached and shared: treat as read-only.
    """
    L, S = check_int("L", L), check_int("S", S)
    if S < L:
        raise ValueError(f"S (keys) must be >= L (queries) for decoding, got L={L}, S={S}")
    return _decode_mask_cached(L, S, torch.device(device if device is not None else "cpu"))


class LayerKVCache:
    """Keys and values of one attention layer for the positions processed so far.

    Buffers are allocated on the first `append`, with that call's batch size, heads, dtype and
    device, and room for ``capacity`` positions.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = check_int("capacity", capacity)
        self.length = 0
        self.keys: Tensor | None = None
        self.values: Tensor | None = None

    def append(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``key``/``value`` (B, H, L, head_dim); return all keys/values (B, H, length, ·)."""
        if key.ndim != 4 or value.ndim != 4 or key.shape[:3] != value.shape[:3]:
            raise ValueError(
                f"key and value must be (batch, heads, length, head_dim) with matching first three "
                f"axes, got {tuple(key.shape)} and {tuple(value.shape)}"
            )
        B, H, L, _ = key.shape
        end = self.length + L
        if end > self.capacity:
            raise ValueError(
                f"KV cache holds {self.capacity} positions; {self.length} are used and {L} more "
                f"do not fit"
            )
        if self.keys is None or (self.length == 0 and not self._fits(key, value)):
            self.keys = key.new_empty(B, H, self.capacity, key.shape[-1])
            self.values = value.new_empty(B, H, self.capacity, value.shape[-1])
        elif not self._fits(key, value):
            raise ValueError(
                f"key {tuple(key.shape)}, {key.dtype} on {key.device} does not fit the "
                f"{self.length} cached positions (batch {self.keys.shape[0]}, heads "
                f"{self.keys.shape[1]}, {self.keys.dtype} on {self.keys.device}); reset() first"
            )
        self.keys[:, :, self.length : end] = key
        self.values[:, :, self.length : end] = value
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def _fits(self, key: Tensor, value: Tensor) -> bool:
        """Whether ``key``/``value`` have the batch, heads, sizes, dtype and device stored."""
        k, v = self.keys, self.values
        return (
            key.shape[:2] == k.shape[:2]
            and key.shape[-1] == k.shape[-1]
            and value.shape[-1] == v.shape[-1]
            and key.dtype == k.dtype == value.dtype
            and key.device == k.device == value.device
        )

    def reset(self) -> None:
        """Forget every position (the buffers are reused if the next entries fit them)."""
        self.length = 0


class KVCache:
    """One `LayerKVCache` per layer of a decoder, all holding the same positions.

    ``cache.length`` is the number of positions seen, i.e. the position of the next token.
    """

    def __init__(self, n_layers: int, capacity: int) -> None:
        n_layers = check_int("n_layers", n_layers)
        self.capacity = check_int("capacity", capacity)
        self.layers = [LayerKVCache(self.capacity) for _ in range(n_layers)]

    @property
    def length(self) -> int:
        """Positions cached so far (read from the first layer; all layers agree between calls)."""
        return self.layers[0].length

    def reset(self) -> None:
        """Forget every position in every layer."""
        for layer in self.layers:
            layer.reset()

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> LayerKVCache:
        return self.layers[i]

    def __repr__(self) -> str:
        return (
            f"KVCache(n_layers={len(self.layers)}, length={self.length}, capacity={self.capacity})"
        )
