"""Batch entropy of a layer's activations (eq. 3 of Peer et al., 2022). Pure math: no module state."""

from __future__ import annotations

import math

import torch

PI_E = math.pi * math.e
TWO_PI_E = 2.0 * math.pi * math.e
# The paper's eq. (3) writes 2*pi*e; the authors' code uses pi*e and their published alpha/beta grids were tuned
# with it, so pi*e is the default. The two differ by a shift of ~0.5*log(2) for large variances.
CONSTANTS = {"pi_e": PI_E, "2pi_e": TWO_PI_E}


class _NeuronVariance(torch.autograd.Function):
    """Unbiased variance over dim 0 of an (n, k) matrix, with a closed-form backward.

    Autograd's own `var` saves intermediates and runs several element-wise kernels per layer; here backward is
    one fused expression `2 (x - mean) g / (n - 1)` and only `x` (already kept alive by the graph) and the
    (k,) mean are saved, so the regularizer adds almost no memory.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=0, correction=1)
        ctx.save_for_backward(x, mean)
        return var

    @staticmethod
    def backward(ctx, grad_var: torch.Tensor) -> torch.Tensor:
        x, mean = ctx.saved_tensors
        scale = grad_var * (2.0 / (x.shape[0] - 1))
        return torch.addcmul(-mean * scale, x, scale)


def neuron_variance(x: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of every column of `x` (n, k) over its n rows, differentiable. Returns (k,)."""
    return _NeuronVariance.apply(x)


def _samples(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Rows = samples, columns = neurons, in float32."""
    if mask is None:
        samples = x.reshape(x.shape[0], -1)
    else:
        if x.dim() < 3 or tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(
                f"token mode needs activations of shape (batch, seq, ...) and a (batch, seq) mask; got activations "
                f"{tuple(x.shape)} and mask {tuple(mask.shape)}. Use entropy_mode='flatten' for this module."
            )
        samples = x[mask.to(torch.bool)].reshape(-1, math.prod(x.shape[2:]))
    if samples.shape[0] < 2:
        raise ValueError(
            f"batch entropy needs at least 2 samples (it is a standard deviation over the batch), got "
            f"{samples.shape[0]}. Use a batch size of 2 or more."
        )
    # Statistics in float32 whatever the activation dtype: std is not autocast to fp32 under bf16/fp16.
    return samples.float()


def batch_entropy(x: torch.Tensor, constant: float = PI_E, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Batch entropy of one layer, eq. (3): mean over neurons of `0.5 * log(c * var + 1)`.

    Args:
        x: (batch, ...) activations. Default ("flatten", the paper's choice): every non-batch position is a
            neuron, so a (B, T, H) sequence output has T*H neurons, padding positions included.
        constant: c; `PI_E` (authors' code, default) or `TWO_PI_E` (paper text).
        mask: optional (batch, seq) attention mask, selecting "token" mode: every real token (mask != 0) of the
            batch is a sample and every channel a neuron. Entropies are then over B*T_real samples, so they read
            higher and less noisy than flatten mode's for the same layer; targets tuned in one mode don't transfer.

    Returns:
        Scalar float32 tensor, differentiable with respect to `x`.

    Raises:
        ValueError: fewer than 2 samples (the variance over one sample is undefined).
    """
    var = neuron_variance(_samples(x, mask))
    return 0.5 * torch.log1p(constant * var).mean()


def layer_entropies(
    activations: list[torch.Tensor], constant: float = PI_E, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Batch entropy of each activation in `activations`. Returns an (L,) float32 tensor."""
    return torch.stack([batch_entropy(a, constant, mask) for a in activations])
