"""`lbe-hf diagnose MODEL`: does information flow through this network before any training?

Two stages (validated in `scripts/benchmarks/diagnose_validation.py`, results in docs/tools.md):

1. Forward pass on one batch. Per regularizable layer: the batch entropy H_l (eq. 3) and a scale-free
   **relative spread** s_l = sqrt(sum_k Var_batch(x_k) / sum_k E_batch(x_k^2)), the share of a layer's signal
   that differs between samples. Eq. (3) alone can't separate "small but informative" from "erased": H_l falls
   with the activations' scale, and Adam is blind to that scale (PyTorch-init depth 10 reads H = 2e-9 at its
   last layer yet trains). s_l ignores scale; a layer is **collapsed** when s_l < `spread_threshold` (1e-5,
   ~100 float32 ulps of relative difference: the samples are numerically the same point above it).
2. Probe (needs labels): `probe_steps` Adam steps on training batches. It *learns* when the task loss on the
   held-out batch gets 1% below the entropy of that batch's labels, the lowest loss any input-independent
   predictor can reach. A probe that doesn't learn fails only if the steps also destroy information (the smallest
   relative spread falls below the threshold or by 10x): He-init depth 100 reads s_l >= 0.2 at init, and its first
   Adam steps collapse it (s_l 0.0007, last-layer entropy 1e-9). Otherwise (a pretrained model on a hard task
   learns slowly) the probe is reported as inconclusive and does not change the exit status.

Also printed, not part of the verdict: each layer's effective rank (`lbe_hf.entropy.effective_rank`), with a note
when layers carry about one direction (< 1.5). That is what LBE-rescued deep vanilla nets end up with (every
neuron a scaled copy of one feature: eq. 3 is satisfied, yet one number per sample goes up); such nets still
learn at depth 30, so it is a hint, not a collapse. It is scale-free, so at initialisation a collapsed net's
tiny deviations read high ranks: the relative spread decides there.

The command line (`lbe-hf diagnose`, exit status 0 healthy, 1 collapsed, 2 bad input) is `lbe_hf.cli.diagnose_cli`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..collect import measure_entropies, resolve_target_modules
from ..entropy import CONSTANTS, effective_rank

SPREAD_THRESHOLD = 1e-5
# A probe that doesn't learn counts as failed only if it also shrinks the smallest spread by this factor.
SPREAD_DROP = 10.0
# Layers reading below this effective rank pass about one direction (noted, not a collapse: such nets can learn).
LOW_RANK = 1.5
# ... judged only on batches this large (a batch of n samples has rank <= n - 1).
LOW_RANK_MIN_BATCH = 16


@dataclass
class Diagnosis:
    """Per-layer measurements (lists in layer order) and the verdict."""

    names: list[str]
    entropy: list[float]
    spread: list[float]
    collapsed_layers: list[str]
    probe: dict | None = None
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    effective_rank: list[float] = field(default_factory=list)

    @property
    def collapsed(self) -> bool:
        return bool(self.reasons)


def relative_spread(x: torch.Tensor) -> float:
    """sqrt(sum_k Var(x_k) / sum_k E[x_k^2]) over the batch (dim 0) of (batch, ...) activations, in float64.

    0 when every sample gives the same output (or the layer outputs 0), 1 for zero-mean outputs.
    """
    flat = x.detach().reshape(x.shape[0], -1).double()
    second_moment = flat.square().mean(0).sum()
    if second_moment <= 0:
        return 0.0
    return math.sqrt(float(flat.var(0, correction=1).sum() / second_moment))


@torch.no_grad()
def measure_layers(model: nn.Module, inputs: dict, names: list[str], constant: float) -> tuple[list, list, list]:
    """Batch entropy (eq. 3), relative spread and effective rank of each module in `names` on one batch.

    Returns three (L,) lists.
    """
    seen = measure_entropies(model, names, lambda: model(**inputs), constant)
    return (
        seen.entropies.tolist(),
        [relative_spread(a) for a in seen.activations],
        [effective_rank(a) for a in seen.activations],
    )


def label_entropy(labels: torch.Tensor) -> float:
    """Empirical entropy (nats) of integer labels: the smallest cross-entropy of a predictor that ignores inputs."""
    counts = torch.bincount(labels.flatten()).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def probe_training(
    model: nn.Module,
    train: dict,
    heldout: dict,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int = 0,
    margin: float = 0.01,
) -> dict:
    """`steps` Adam steps on random batches of `train`; does the held-out loss beat the label entropy by `margin`?

    Args:
        train / heldout: dicts of (N, ...) tensors including "labels"; the model returns `.loss` given labels.
    Returns:
        dict with loss_before, loss_after (held-out), label_entropy and `learned` (bool).
    """

    def heldout_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(model(**heldout).loss)

    before = heldout_loss()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    n = len(train["labels"])
    model.train()
    train_losses = []
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=g)
        loss = model(**{k: v[idx] for k, v in train.items()}).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        train_losses.append(float(loss.detach()))
    after = heldout_loss()
    floor = label_entropy(heldout["labels"])
    learned = math.isfinite(after) and after < (1 - margin) * floor
    return {
        "steps": steps,
        "lr": lr,
        "loss_before": before,
        "loss_after": after,
        "label_entropy": floor,
        "margin": margin,
        "train_loss_first": train_losses[0] if train_losses else None,
        "train_loss_last": train_losses[-1] if train_losses else None,
        "learned": learned,
    }


def diagnose(
    model: nn.Module,
    inputs: dict,
    names: list[str] | None = None,
    constant: float = CONSTANTS["pi_e"],
    spread_threshold: float = SPREAD_THRESHOLD,
    train: dict | None = None,
    probe_steps: int = 0,
    probe_lr: float = 1e-3,
    probe_batch_size: int = 128,
    seed: int = 0,
) -> Diagnosis:
    """Both stages. `inputs` is one batch (model kwargs, "labels" optional); probing needs `train` and labels.

    The probe trains `model` in place: pass a copy if you want to keep it.
    """
    names = names or resolve_target_modules(model)
    forward_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    entropy, spread, rank = measure_layers(model, forward_inputs, names, constant)
    collapsed = [n for n, s in zip(names, spread) if not s >= spread_threshold]
    result = Diagnosis(names, entropy, spread, collapsed, effective_rank=rank)
    batch = next((v.shape[0] for v in forward_inputs.values() if isinstance(v, torch.Tensor)), 0)
    low = [n for n, r in zip(names, rank) if r < LOW_RANK and n not in collapsed]
    if low and batch >= LOW_RANK_MIN_BATCH:
        result.notes.append(
            f"note: {len(low)} of {len(names)} layers carry about one direction (effective rank < {LOW_RANK:g}), "
            f"first: {low[0]}. Batch entropy cannot see this (it scores each neuron alone). Deep vanilla nets "
            "rescued by LBE end up so (docs/benchmarks.md); the exit status does not count it."
        )
    if collapsed:
        result.reasons.append(
            f"{len(collapsed)} of {len(names)} layers pass no information (relative spread < {spread_threshold:g}: "
            f"every sample gives the same output), first: {collapsed[0]}"
        )
    if probe_steps > 0 and train is not None and "labels" in inputs:
        result.probe = probe_training(model, train, inputs, probe_steps, probe_lr, probe_batch_size, seed)
        p = result.probe
        p["entropy_after"], p["spread_after"], p["effective_rank_after"] = measure_layers(
            model, forward_inputs, names, constant
        )
        before, after = min(spread), min(p["spread_after"])
        p["loses_information"] = not (after >= spread_threshold and after * SPREAD_DROP >= before)
        needed = (1 - p["margin"]) * p["label_entropy"]
        not_learned = (
            f"after {probe_steps} Adam steps (lr {probe_lr:g}) the held-out loss {p['loss_after']:.4f} is not "
            f"{p['margin']:.0%} below the label entropy {p['label_entropy']:.4f} (the probe learns below {needed:.4f})"
        )
        if not p["learned"] and p["loses_information"]:
            result.reasons.append(
                f"{not_learned}, and training destroys information: the smallest relative spread fell from "
                f"{before:.2g} to {after:.2g}"
            )
        elif not p["learned"]:
            result.notes.append(f"inconclusive probe: {not_learned}, but information still flows (try more steps)")
    return result
