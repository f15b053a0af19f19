"""Layer normalisation and RMS normalisation written with plain tensor operations.

LayerNorm (Ba et al., 2016) centres each feature vector and divides by its standard deviation:

    y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias,   var is the *biased* variance,

so before the affine map every output lies on the sphere of radius ``sqrt(d)`` inside the
hyperplane orthogonal to the all-ones vector. RMSNorm (Zhang & Sennrich, 2019) skips the
centring and the bias: ``y = x / sqrt(mean(x**2) + eps) * weight``, which puts the output on the
sphere of radius ``sqrt(d)`` (no hyperplane). Both act on the last dimension only, so they are
position-wise: every token is normalised on its own.

``layer_norm`` runs through `LayerNormFunction`, whose backward pass is the one derived in
docs/derivations/layernorm-gradient.md: with x̂ the standardised input, σ = sqrt(var + eps)
and g = dy·weight,

    dx = (g − mean(g) − x̂·mean(g·x̂)) / σ,   dweight = Σ_rows dy·x̂,   dbias = Σ_rows dy.

It saves only x̂ and 1/σ and takes about a dozen tensor operations each way, where autograd
through the nine-operation forward formula records every intermediate and replays each one's
backward (about twice the time at GPT sizes; see docs/benchmarks.md).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from scratchformer.validation import check_real

__all__ = ["LayerNormFunction", "layer_norm", "layer_norm_inference", "rms_norm"]


def _check_input(x: object, name: str = "x") -> Tensor:
    """Return ``x`` if it is a floating tensor with at least one dimension."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 0 or not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating tensor with >= 1 dimension, "
            f"got dtype {x.dtype} and shape {tuple(x.shape)}"
        )
    return x


def _check_affine(p: Tensor | None, name: str, dim: int) -> None:
    """Check that an optional affine parameter has shape ``(dim,)``."""
    if p is not None and tuple(p.shape) != (dim,):
        raise ValueError(f"{name} must have shape ({dim},) to match x's last dim, got "
                         f"{tuple(p.shape)}")


def layer_norm(
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise the last dim of ``x`` to zero mean and unit (biased) variance, then scale/shift.

    Same numbers as ``torch.nn.functional.layer_norm(x, x.shape[-1:], weight, bias, eps)``.
    """
    x = _check_input(x)
    eps = check_real("eps", eps, minimum=0)  # 0 is allowed for exact-arithmetic checks
    _check_affine(weight, "weight", x.shape[-1])
    _check_affine(bias, "bias", x.shape[-1])
    needs_grad = any(t is not None and t.requires_grad for t in (x, weight, bias))
    if needs_grad and torch.is_grad_enabled():
        return LayerNormFunction.apply(x, weight, bias, eps)
    return _layer_norm_forward(x, weight, bias, eps)[0]  # the same numbers, nothing saved


def layer_norm_inference(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> Tensor:
    """`layer_norm` on checked arguments for inference (``LayerNorm`` under ``no_grad``), in
    six tensor operations instead of nine.

    Nothing is kept for a backward pass, so the biased variance and the mean come from one
    reduction (``var_mean``) and x̂ is formed in a buffer that becomes the output. Equal to
    `layer_norm` to rounding only (its variance is |x − mean|²/d, summed in another order).
    """
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    x_hat = torch.sub(x, mean).mul_(var.add_(eps).rsqrt_())
    if weight is not None and bias is not None:
        return torch.addcmul(bias, x_hat, weight)
    if weight is not None:
        return x_hat.mul_(weight)
    return x_hat.add_(bias) if bias is not None else x_hat


def _sum_rows(t: Tensor) -> Tensor:
    """Sum over every axis but the last: the gradient of a parameter broadcast along rows."""
    return t.reshape(-1, t.shape[-1]).sum(dim=0)


def _layer_norm_forward(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """LayerNorm's output, x̂ and 1/σ without autograd: the forward of `LayerNormFunction`."""
    centred = x - x.mean(dim=-1, keepdim=True)
    # The biased variance |x − mean|²/d (d, not d − 1), from one reduction over the rows
    # that needs no d-wide temporary for the squares.
    var = torch.linalg.vector_norm(centred, dim=-1, keepdim=True).square_().div_(x.shape[-1])
    inv_std = var.add_(eps).rsqrt_()
    x_hat = centred.mul_(inv_std)
    if weight is not None and bias is not None:
        y = torch.addcmul(bias, x_hat, weight)  # bias + x̂·weight in one pass
    elif weight is not None:
        y = x_hat * weight
    elif bias is not None:
        y = x_hat + bias
    else:
        y = x_hat.clone()  # a fresh output, so editing it cannot corrupt the saved x̂
    return y, x_hat, inv_std


class LayerNormFunction(torch.autograd.Function):
    """LayerNorm over the last axis with the hand-derived backward pass (see the module doc).

    Saves the standardised input x̂ and 1/σ (one number per row). Not twice differentiable:
    x̂ is saved as a constant, so a second derivative would be wrong; it raises instead.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
        y, x_hat, inv_std = _layer_norm_forward(x, weight, bias, eps)
        ctx.save_for_backward(x_hat, inv_std, weight)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor):
        x_hat, inv_std, weight = ctx.saved_tensors
        need_x, need_weight, need_bias, _ = ctx.needs_input_grad
        d = x_hat.shape[-1]
        grad_x = grad_weight = grad_bias = None
        # dy·x̂ serves twice: summed over rows it is dweight, and with g = dy·weight the row
        # sums Σ g·x̂ are its rows dotted with weight (a matrix-vector product, no new matrix).
        dy_x_hat = grad_y * x_hat if need_weight or need_x else None
        if need_weight:
            grad_weight = _sum_rows(dy_x_hat)
        if need_bias:
            grad_bias = _sum_rows(grad_y)
        if need_x:
            if weight is None:
                mean_g = grad_y.mean(dim=-1, keepdim=True)
                mean_g_x_hat = dy_x_hat.mean(dim=-1, keepdim=True)
                g = grad_y - mean_g
            else:
                mean_g = (grad_y @ weight).unsqueeze_(-1).div_(d)
                mean_g_x_hat = (dy_x_hat @ weight).unsqueeze_(-1).div_(d)
                g = (grad_y * weight).sub_(mean_g)
            # dx = (g − mean(g) − x̂·mean(g·x̂)) / σ, finished in place in g's buffer.
            grad_x = g.addcmul_(x_hat, mean_g_x_hat, value=-1.0).mul_(inv_std)
        return grad_x, grad_weight, grad_bias, None


def rms_norm(x: Tensor, weight: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """Divide the last dim of ``x`` by its root mean square, then scale by ``weight``.

    Same numbers as ``torch.nn.functional.rms_norm(x, x.shape[-1:], weight, eps)``.
    """
    x = _check_input(x)
    eps = check_real("eps", eps, minimum=0)  # 0 is allowed for exact-arithmetic checks
    _check_affine(weight, "weight", x.shape[-1])
    y = x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    return y
