"""Batch entropy of a layer's activations (eq. 3 of Peer et al., 2022). Pure math: no module state."""

from __future__ import annotations

import math

import torch

PI_E = math.pi * math.e
TWO_PI_E = 2.0 * math.pi * math.e
# The paper's eq. (3) writes 2*pi*e; the authors' code uses pi*e and their published alpha/beta grids were tuned
# with it, so pi*e is the default. The two differ by a shift of ~0.5*log(2) for large variances.
CONSTANTS = {"pi_e": PI_E, "2pi_e": TWO_PI_E}


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
        Scalar float32 tensor, differentiable with respect to `x` (`layer_entropies` of one layer).

    Raises:
        ValueError: fewer than 2 samples (the variance over one sample is undefined).
    """
    return layer_entropies([x], constant, mask)[0]


class _LayerVariances(torch.autograd.Function):
    """Unbiased variance over dim 0 of L (n_l, k_l) matrices in one autograd node: (sum_l k_l,), closed-form backward.

    Autograd's own `var` saves intermediates and runs several element-wise kernels per layer. Here each layer costs
    two reads of x in forward and one fused `addcmul` (`2 (x - mean) g / (n - 1)`) in backward, and only x (kept
    alive by the graph anyway) and the (k,) means are saved. With one node and the small (k,)-sized arithmetic
    done once for all layers, a 50-layer net pays ~4 dispatches per layer instead of ~25 (per-layer nodes cost
    ~0.9 ms each on a loaded CPU, measured).

    Backward returns all L activation gradients at once, and this node runs early in backward (it is created after
    the model's forward), so they stay alive until backward reaches each layer: up to one float32 activation per
    regularized layer of extra peak memory. Adding each one only when backward reaches its layer (tensor hooks)
    was measured (docs/results/deferral_memory.md, 1 thread, CPU, no optimizer state) to save 28 MiB of a
    1385 MiB BERT-base step (2.1% of tensor memory, 1.3% of the process), to add 16 MiB to a 1734 MiB
    Llama-style step, and to change nothing under bf16 autocast, so it is not done.
    """

    @staticmethod
    def forward(ctx, workspace: torch.Tensor, *xs: torch.Tensor) -> torch.Tensor:
        # Two-pass variance by hand: on CPU `torch.var_mean(x, dim=0)` reduces over the strided dim with a slow
        # Welford kernel, 20-100x slower than these contiguous sums (measured, torch 2.14: 6 ms vs 0.1 ms for
        # 512 x 256, 90 ms for BERT's 16 x 49152). Centring first keeps the two-pass formula's accuracy; the centred
        # copy goes into one cache-hot scratch buffer shared by all layers instead of a fresh (n, k) tensor each.
        sizes = [x.shape[1] for x in xs]
        means = xs[0].new_empty(sum(sizes))
        var = xs[0].new_empty(sum(sizes))
        start = 0
        for x, k in zip(xs, sizes):
            mean, out = means[start : start + k], var[start : start + k]
            torch.sum(x, 0, out=mean).div_(x.shape[0])
            centred = torch.sub(x, mean, out=workspace[: x.numel()].view(x.shape))
            torch.sum(centred.mul_(centred), 0, out=out)
            start += k
        ctx.sizes = sizes
        # dVar_j/dx_ij = 2 (x_ij - mean_j) / (n - 1): dividing once here and reusing the factor in backward.
        factor = torch.cat([means.new_full((k,), 1.0 / (x.shape[0] - 1)) for k, x in zip(sizes, xs)])
        var.mul_(factor)
        ctx.save_for_backward(means, factor, *xs)
        return var

    @staticmethod
    def backward(ctx, grad_var: torch.Tensor):
        means, factor, *xs = ctx.saved_tensors
        scale = grad_var * factor * 2.0
        bias = -means * scale
        grads = [torch.addcmul(b, x, s) for x, s, b in zip(xs, scale.split(ctx.sizes), bias.split(ctx.sizes))]
        return (None, *grads)


def layer_entropies(
    activations: list[torch.Tensor],
    constant: float = PI_E,
    mask: torch.Tensor | list[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Batch entropy (eq. 3) of each activation in `activations`, all layers in one autograd node.

    Args:
        activations: L tensors (batch_l, ...), any float dtype; statistics are computed in float32.
        constant: c; `PI_E` (authors' code, default) or `TWO_PI_E` (paper text).
        mask: None (flatten mode), one (batch, seq) mask for every activation (token mode), or a list with one
            mask (or None) per activation, for models whose layers belong to sequences of different lengths (an
            encoder-decoder). See `batch_entropy`.

    Returns:
        (L,) float32 tensor, differentiable with respect to every activation.
    """
    masks = list(mask) if isinstance(mask, (list, tuple)) else [mask] * len(activations)
    samples = [_samples(a, m) for a, m in zip(activations, masks)]
    workspace = torch.empty(max(s.numel() for s in samples), dtype=torch.float32, device=samples[0].device)
    var = _LayerVariances.apply(workspace, *samples)
    terms = 0.5 * torch.log1p(constant * var)
    sizes = [s.shape[1] for s in samples]
    if len(set(sizes)) == 1:
        return terms.view(len(samples), sizes[0]).mean(1)
    return torch.stack([t.mean() for t in terms.split(sizes)])


def joint_layer_entropies(
    activations: list[torch.Tensor],
    constant: float = PI_E,
    mask: torch.Tensor | list[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """A Gaussian *joint* batch entropy per layer: `0.5 / k * logdet(I + c * Cov)` over the layer's k neurons.

    Not the paper's eq. (3) but a variant of it that also sees correlated neurons: with a diagonal covariance it is
    exactly eq. (3) (`0.5 / k * sum_j log(1 + c var_j)`), and it is never above eq. (3) (Hadamard's inequality), far
    below it for a layer whose neurons are scaled copies of one feature (rank 1). It is bounded below by 0, and
    `I + c Cov` has every eigenvalue >= 1, so the log-determinant is well conditioned; it is computed in float64 on
    the smaller of the (k, k) covariance and the (n, n) Gram matrix of the n samples (equal determinants), at
    O(n k min(n, k)) per layer.

    Args and returns as `layer_entropies`.
    """
    masks = list(mask) if isinstance(mask, (list, tuple)) else [mask] * len(activations)
    out = []
    for a, m in zip(activations, masks):
        x = _samples(a, m).double()
        n, k = x.shape
        centred = x - x.mean(0, keepdim=True)
        gram = centred.T @ centred if k <= n else centred @ centred.T
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        chol = torch.linalg.cholesky(eye + (constant / (n - 1)) * gram)
        out.append(chol.diagonal().log().sum() / k)  # 0.5 * logdet = sum(log(diag(L)))
    return torch.stack(out).float()


@torch.no_grad()
def shared_prefix_duplicates(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, seq) bool: True where a row repeats an earlier row's whole prefix up to and including that position.

    In a causal model such positions hold bit-identical activations (same tokens, mask and positions before them):
    the prompt shared by a preference pair's chosen and rejected rows, or by a group of completions. Counting them
    once keeps a repeated prompt from counting as several samples. O(batch^2 * seq).
    """
    same = input_ids[:, None, :] == input_ids[None, :, :]  # (B, B, T)
    if attention_mask is not None:
        same &= attention_mask[:, None, :] == attention_mask[None, :, :]
    prefix = same.to(torch.int8).cumprod(-1).bool()  # row b matches row b' on positions 0..t
    earlier = torch.ones(prefix.shape[:2], dtype=torch.bool, device=prefix.device).tril(-1)  # b' < b
    return (prefix & earlier[:, :, None]).any(1)


def masked_flatten_entropy(x: torch.Tensor, keep: torch.Tensor, constant: float = PI_E) -> torch.Tensor:
    """Flatten-mode batch entropy (eq. 3) where each position counts only the rows `keep` selects.

    Args:
        x: (batch, seq, ...) activations; each (position, channel) is a neuron, as in flatten mode.
        keep: (batch, seq) bool: the rows that are samples of that position's neurons (a duplicated prefix
            position of a row is left out, see `shared_prefix_duplicates`). Neurons with fewer than 2 samples
            drop out of the mean.

    Returns:
        Scalar float32 tensor, differentiable with respect to `x`.
    """
    flat = x.reshape(x.shape[0], x.shape[1], -1).float()
    weight = keep.to(flat.dtype).unsqueeze(-1)  # (B, T, 1)
    count = weight.sum(0)  # (T, 1)
    mean = (flat * weight).sum(0) / count.clamp(min=1)
    var = ((flat - mean).square() * weight).sum(0) / (count - 1).clamp(min=1)
    terms = 0.5 * torch.log1p(constant * var)  # (T, H)
    valid = (count >= 2).expand_as(terms)
    return terms[valid].mean()


@torch.no_grad()
def effective_rank(x: torch.Tensor) -> float:
    """Effective rank (Roy & Vetterli, 2007) of a batch of activations (batch, ...), centred over the batch.

    exp of the Shannon entropy of the normalised singular values of the (batch, neurons) matrix: k for k equally
    strong independent directions, 1 when every neuron is a scaled copy of one feature of the input, whatever
    each neuron's own variance. Eq. (3) scores each neuron alone, so a layer can meet its entropy target and still
    pass a single number per sample upwards; this is the measure that sees it. At most batch - 1; 0 for a batch
    without any spread. Scale-free: a collapsed layer's tiny deviations get a rank too, so read it together with
    the entropy (or `lbe_hf.cli.diagnose.relative_spread`).
    """
    flat = x.detach().float().reshape(x.shape[0], -1)
    centred = flat - flat.mean(0)
    scale = centred.abs().max()
    if not torch.isfinite(scale) or scale <= 0:
        return 0.0
    s = torch.linalg.svdvals(centred / scale)  # rescaled first: tiny deviations would underflow inside the SVD
    p = s[s > 0] / s.sum()
    return float(torch.exp(-(p * p.log()).sum()))
