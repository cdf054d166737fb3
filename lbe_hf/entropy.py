"""Batch entropy of a layer's activations (eq. 3 of Peer et al., 2022). Pure math: no module state."""

from __future__ import annotations

import math
import warnings

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
    def forward(ctx, x: torch.Tensor, workspace: torch.Tensor | None) -> torch.Tensor:
        # Two-pass variance by hand: on CPU `torch.var_mean(x, dim=0)` reduces over the strided dim with a slow
        # Welford kernel, 20-100x slower than these contiguous sums (measured, torch 2.14: 6 ms vs 0.1 ms for
        # 512 x 256, 90 ms for BERT's 16 x 49152). Centring first keeps the two-pass formula's accuracy.
        n = x.shape[0]
        mean = x.sum(0).div_(n)
        if workspace is not None and workspace.numel() >= x.numel() and workspace.dtype == x.dtype:
            # Reusing one cache-hot scratch buffer for all layers instead of a fresh (n, k) tensor per layer:
            # the element-wise passes over cold activations are what the regularizer costs on a CPU.
            centred = torch.sub(x, mean, out=workspace[: x.numel()].view(x.shape))
        else:
            centred = x - mean
        var = centred.mul_(centred).sum(0).div_(n - 1)
        ctx.save_for_backward(x, mean)
        return var

    @staticmethod
    def backward(ctx, grad_var: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, mean = ctx.saved_tensors
        scale = grad_var * (2.0 / (x.shape[0] - 1))
        return torch.addcmul(-mean * scale, x, scale), None


def neuron_variance(x: torch.Tensor, workspace: torch.Tensor | None = None) -> torch.Tensor:
    """Unbiased variance of every column of `x` (n, k) over its n rows, differentiable. Returns (k,).

    `workspace`: optional flat scratch tensor of at least n*k elements, same dtype, reused between calls.
    """
    return _NeuronVariance.apply(x, workspace)


def _samples(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Rows = samples, columns = neurons, in float32."""
    if mask is None:
        # A 2-D activation is used as is: a no-op reshape would add a view node whose gradient (a view of ours)
        # autograd can't accumulate in place, costing one more full-size tensor per layer in backward.
        samples = x if x.dim() == 2 else x.reshape(x.shape[0], -1)
    else:
        if x.dim() < 3 or tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(
                f"token mode needs activations of shape (batch, seq, ...) and a (batch, seq) mask; got activations "
                f"{tuple(x.shape)} and mask {tuple(mask.shape)}. Use entropy_mode='flatten', or leave this module out "
                "(exclude_modules)."
            )
        samples = x[mask.to(torch.bool)].reshape(-1, math.prod(x.shape[2:]))
    if samples.shape[0] < 2:
        raise ValueError(
            f"batch entropy needs at least 2 samples (it is a standard deviation over the batch), got "
            f"{samples.shape[0]}. Use a batch size of 2 or more."
        )
    # Statistics in float32 whatever the activation dtype: std is not autocast to fp32 under bf16/fp16.
    return samples.float()


def batch_entropy(
    x: torch.Tensor, constant: float = PI_E, mask: torch.Tensor | None = None, workspace: torch.Tensor | None = None
) -> torch.Tensor:
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
    var = neuron_variance(_samples(x, mask), workspace)
    return 0.5 * torch.log1p(constant * var).mean()


class DeferredGradients:
    """Adds a layer's variance gradient to that activation's own gradient when backward reaches the layer.

    Returning all L activation gradients from the one variance node (which runs first in backward, next to the
    loss) keeps L full-size tensors alive until backward reaches each layer: +26 MiB for a depth-50 width-256 FNN
    at batch 512. Instead, the node stores the small (k,) coefficients here and returns no gradient for the
    deferred activations; a tensor hook on each one adds `2 (x - mean) g / (n - 1)` to the gradient flowing down
    the network, so at most one such tensor exists at a time.

    A deferred activation must also reach the loss through the rest of the model (autograd lets a hook add to a
    gradient, not create one). If one does not, that step's LBE gradient for it is lost; the next call's
    `check()` notices, warns, and switches to returning the gradients directly for good (`enabled = False`).
    """

    def __init__(self) -> None:
        self.enabled = True
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = []

    def prepare(self, activations: list[torch.Tensor]) -> tuple[list[bool], list]:
        """Registers one hook per deferrable activation (float32, requires grad).

        Returns which activations are deferred, and this forward's slot list: the variance node's backward puts
        `(x, scale, bias)` for deferred layer l in slot l, and layer l's hook takes it from there. One list per
        forward, so two forwards before one backward don't mix.
        """
        self.check()
        deferred = [self.enabled and a.dtype == torch.float32 and a.requires_grad for a in activations]
        self._pending = [None] * len(activations)
        for index, (a, d) in enumerate(zip(activations, deferred)):
            if d:
                a.register_hook(self._hook(index, self._pending))
        return deferred, self._pending

    @staticmethod
    def _hook(index: int, pending: list):
        def add_variance_gradient(grad: torch.Tensor) -> torch.Tensor:
            entry = pending[index]
            # None entry: this backward did not go through the variance node (e.g. a skipped LBE term). None grad:
            # nothing else reached this activation; autograd can't take a gradient here, check() falls back.
            if entry is None or grad is None:
                return grad
            pending[index] = None  # also drops the reference to the activation (no cycle through its hook)
            x, scale, bias = entry
            return torch.addcmul(bias, x.reshape(x.shape[0], -1), scale).view(x.shape).add_(grad)

        return add_variance_gradient

    def check(self) -> None:
        """Switches deferral off, with a warning, when the last backward left a layer's gradient unapplied."""
        missed = [i for i, entry in enumerate(self._pending) if entry is not None]
        for i in missed:
            self._pending[i] = None  # in place: the hooks hold this list
        if missed and self.enabled:
            self.enabled = False
            warnings.warn(
                f"the LBE gradient of regularized layer(s) {missed} was not applied in the last backward: their "
                "outputs do not reach the loss through the rest of the model. Their gradients are now returned "
                "directly (correct, slightly more memory).",
                stacklevel=2,
            )


class _LayerVariances(torch.autograd.Function):
    """`_NeuronVariance` of L activations (each flattened to (n_l, k_l)) in one autograd node: (sum_l k_l,).

    With one node and the small (k,)-sized arithmetic done once for all layers, a 50-layer net pays ~4 dispatches
    per layer instead of ~25 (per-layer nodes cost ~0.9 ms each on a loaded CPU, measured); the full-size passes are
    the same as `_NeuronVariance`'s (two reads of x in forward, one fused `addcmul` in backward). Gradients of the
    layers flagged in `deferred` go to their slot in `pending` instead of being returned (see `DeferredGradients`).
    """

    @staticmethod
    def forward(ctx, workspace, pending, deferred, *xs: torch.Tensor) -> torch.Tensor:
        flat = [x.reshape(x.shape[0], -1) for x in xs]
        sizes = [x.shape[1] for x in flat]
        means = flat[0].new_empty(sum(sizes))
        var = flat[0].new_empty(sum(sizes))
        counts = []
        start = 0
        for x, k in zip(flat, sizes):
            n = x.shape[0]
            mean, out = means[start : start + k], var[start : start + k]
            torch.sum(x, 0, out=mean).div_(n)
            centred = torch.sub(x, mean, out=workspace[: x.numel()].view(x.shape))
            torch.sum(centred.mul_(centred), 0, out=out)
            counts.append(n)
            start += k
        ctx.sizes, ctx.pending, ctx.deferred = sizes, pending, deferred
        # dVar_j/dx_ij = 2 (x_ij - mean_j) / (n - 1): dividing once here and reusing the factor in backward.
        factor = torch.cat([means.new_full((k,), 1.0 / (n - 1)) for k, n in zip(sizes, counts)])
        var.mul_(factor)
        ctx.save_for_backward(means, factor, *xs)
        return var

    @staticmethod
    def backward(ctx, grad_var: torch.Tensor):
        means, factor, *xs = ctx.saved_tensors
        scale = grad_var * factor * 2.0
        bias = -means * scale
        grads = []
        start = 0
        for index, (x, k) in enumerate(zip(xs, ctx.sizes)):
            s, b = scale[start : start + k], bias[start : start + k]
            if ctx.deferred[index]:
                ctx.pending[index] = (x, s, b)
                grads.append(None)
            else:
                grads.append(torch.addcmul(b, x.reshape(x.shape[0], -1), s).view(x.shape))
            start += k
        return (None, None, None, *grads)


def layer_entropies(
    activations: list[torch.Tensor],
    constant: float = PI_E,
    mask: torch.Tensor | list[torch.Tensor | None] | None = None,
    hooks: DeferredGradients | None = None,
) -> torch.Tensor:
    """Batch entropy (eq. 3) of each activation in `activations`, all layers in one autograd node.

    `mask`: None (flatten mode), one (batch, seq) mask for every activation (token mode), or a list with one mask
    (or None) per activation, for models whose layers belong to sequences of different lengths (an encoder-decoder).
    `hooks`: optional `DeferredGradients` (kept across steps by the caller) that applies the activations'
    gradients as backward reaches each layer instead of all at once (less peak memory in deep nets).

    Returns:
        (L,) float32 tensor, differentiable with respect to every activation.
    """
    masks = list(mask) if isinstance(mask, (list, tuple)) else [mask] * len(activations)
    samples = [_samples(a, m) for a, m in zip(activations, masks)]
    largest = max(s.numel() for s in samples)
    workspace = torch.empty(largest, dtype=torch.float32, device=samples[0].device)
    if hooks is not None and all(m is None for m in masks) and not torch.compiler.is_compiling():
        # float32 activations go in unflattened (flattening happens inside the node, so their gradient needs no
        # view node of its own); the others (cast to float32) keep the returned-gradient path. Under
        # torch.compile the hook path gave gradients different from eager mode (tests/test_robustness.py,
        # test_torch_compile_keeps_the_hooks), so there gradients are returned too.
        deferred, pending = hooks.prepare(activations)
        inputs = [a if d else s for a, s, d in zip(activations, samples, deferred)]
    else:
        deferred, pending, inputs = [False] * len(samples), None, samples
    var = _LayerVariances.apply(workspace, pending, tuple(deferred), *inputs)
    terms = 0.5 * torch.log1p(constant * var)
    sizes = [s.shape[1] for s in samples]
    if len(set(sizes)) == 1:
        return terms.view(len(samples), sizes[0]).mean(1)
    return torch.stack([t.mean() for t in terms.split(sizes)])


@torch.no_grad()
def effective_rank(x: torch.Tensor) -> float:
    """Effective rank (Roy & Vetterli, 2007) of a batch of activations (batch, ...), centred over the batch.

    exp of the Shannon entropy of the normalised singular values of the (batch, neurons) matrix: k for k equally
    strong independent directions, 1 when every neuron is a scaled copy of one feature of the input, whatever
    each neuron's own variance. Eq. (3) scores each neuron alone, so a layer can meet its entropy target and still
    pass a single number per sample upwards; this is the measure that sees it. At most batch - 1; 0 for a batch
    without any spread. Scale-free: a collapsed layer's tiny deviations get a rank too, so read it together with
    the entropy (or `lbe_hf.diagnose.relative_spread`).
    """
    flat = x.detach().float().reshape(x.shape[0], -1)
    centred = flat - flat.mean(0)
    scale = centred.abs().max()
    if not torch.isfinite(scale) or scale <= 0:
        return 0.0
    s = torch.linalg.svdvals(centred / scale)  # rescaled first: tiny deviations would underflow inside the SVD
    p = s[s > 0] / s.sum()
    return float(torch.exp(-(p * p.log()).sum()))
