"""Per-layer gradient norms of a model: over fixed batches, or during training through hooks.

``init_grad_norms`` measures ‖∂L/∂θ_l‖ of each layer on given batches (e.g. at initialisation);
``LayerGradTracker`` keeps the latest per-layer norms inside any training loop, where the
optimizer clears the gradients before a step hook could read them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from scratchformer.analysis.gradient_flow import layer_grad_norms

__all__ = ["LayerGradTracker", "init_grad_norms"]


def init_grad_norms(model: nn.Module, layers: Sequence[nn.Module],
                    batches: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """‖∂L/∂θ_l‖ of every layer, one backward pass per (inputs, targets) batch: (batches, L).

    ``model(x, y)`` must return ``(logits, loss)``; the gradients are cleared before and after.
    """
    if not batches:
        raise ValueError("batches must hold at least one (inputs, targets) pair, got none")
    rows = []
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        model(x, y)[1].backward()
        rows.append(layer_grad_norms(list(layers)))
    model.zero_grad(set_to_none=True)
    return torch.stack(rows)


class LayerGradTracker:
    """Keeps ‖∂L/∂θ_l‖² of each layer's parameters from the latest backward pass, via hooks.

    Works inside any training loop (the hooks fire when a gradient is accumulated, before the
    optimizer clears it); `norms` reads the latest per-layer norms. Set ``armed = False`` to skip
    the work on passes nobody reads; `close` removes the hooks.
    """

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        if isinstance(layers, nn.ModuleList):
            layers = list(layers)
        if isinstance(layers, nn.Module) or not layers:
            raise TypeError(f"layers must be a non-empty sequence of modules, got {layers!r}")
        self._sq: list[dict[int, Tensor]] = [{} for _ in layers]
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.armed = True
        for i, layer in enumerate(layers):
            params = [p for p in layer.parameters() if p.requires_grad]
            if not params:
                raise ValueError(f"layers[{i}] has no trainable parameters")
            for p in params:
                self._handles.append(p.register_post_accumulate_grad_hook(self._hook(i)))
        self._n_params = [sum(1 for p in layer.parameters() if p.requires_grad)
                          for layer in layers]

    def _hook(self, index: int) -> Callable[[Tensor], None]:
        """The hook that stores a parameter's squared gradient norm under layer ``index``."""

        def hook(p: Tensor) -> None:
            if self.armed and p.grad is not None:
                self._sq[index][id(p)] = p.grad.detach().double().square().sum()

        return hook

    def norms(self) -> Tensor:
        """The per-layer gradient norms of the latest backward pass (float64, shape (L,))."""
        for i, (sq, n) in enumerate(zip(self._sq, self._n_params, strict=True)):
            if len(sq) != n:
                raise ValueError(f"layer {i} has {len(sq)} of {n} gradients; run backward first")
        return torch.stack([torch.stack(list(sq.values())).sum() for sq in self._sq]).sqrt()

    def close(self) -> None:
        """Remove the hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []
