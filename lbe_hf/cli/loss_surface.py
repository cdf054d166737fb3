"""Loss surfaces around a model (Li et al. 2018, filter-normalised random directions): the paper's Fig. 3/5.

`loss_surface(model, batch)` evaluates, on a grid of (a, b), the task loss L, the LBE term L_BE (eq. 5) and the
regularized loss L + L * L_BE (eq. 6) at weights theta + a * d1 + b * d2. Each direction d is Gaussian, rescaled
filter by filter (each output row of a weight matrix / each output channel of a convolution) to the norm of the
same filter of theta, so that the plot does not depend on the weights' scale; 1-D parameters (biases, norms) get
no direction, as in Li et al. The learnable alphas are not moved.

`lbe-hf loss-surface MODEL` is the CLI (a model spec as for `lbe-hf diagnose`, labelled data).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from torch import nn

from ..alphas import ALPHAS_ATTRIBUTE
from ..auto_alpha import auto_alphas
from ..collect import measure_entropies, resolve_target_modules
from ..config import AUTO, BatchEntropyConfig
from ..loss import lbe_loss


def _movable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if ALPHAS_ATTRIBUTE not in n.split(".")]


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    """One random direction, a tensor per movable parameter (same shapes), filter-normalised (Li et al. 2018)."""
    direction = []
    for _, p in _movable(model):
        if p.dim() <= 1:
            direction.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p)
        rows_d, rows_p = d.reshape(d.shape[0], -1), p.detach().reshape(p.shape[0], -1)
        scale = rows_p.norm(dim=1, keepdim=True) / rows_d.norm(dim=1, keepdim=True).clamp_min(1e-12)
        direction.append((rows_d * scale).reshape(p.shape))
    return direction


@torch.no_grad()
def loss_surface(
    model: nn.Module,
    batch: dict,
    steps: int = 21,
    span: float = 1.0,
    config: BatchEntropyConfig | None = None,
    seed: int = 0,
) -> dict:
    """Task, LBE and regularized loss on a steps x steps grid over [-span, span]^2. `batch` includes "labels".

    Returns:
        {"coords": (steps,), "task_loss" / "lbe_loss" / "regularized_loss": (steps, steps) nested lists,
        rows indexed by the second direction}. The model's weights are restored afterwards.
    """
    if steps < 2 or span <= 0:
        raise ValueError(f"need steps >= 2 and span > 0, got steps={steps}, span={span}.")
    if "labels" not in batch:
        raise ValueError("the loss surface needs labels in the batch (a task loss).")
    config = config or BatchEntropyConfig()
    names = resolve_target_modules(model, config.target_modules, config.exclude_modules)
    params = [p for _, p in _movable(model)]
    g = torch.Generator().manual_seed(seed)
    d1, d2 = filter_normalized_direction(model, g), filter_normalized_direction(model, g)
    origin = [p.detach().clone() for p in params]
    coords = torch.linspace(-span, span, steps).tolist()
    was_training = model.training
    model.eval()
    stored = getattr(model, ALPHAS_ATTRIBUTE, None)
    alphas = None if stored is None else stored.alpha.detach().float().cpu()
    surfaces = {"task_loss": [], "lbe_loss": [], "regularized_loss": []}
    try:
        for b in coords:
            rows = {k: [] for k in surfaces}
            for a in coords:
                for p, p0, u, v in zip(params, origin, d1, d2):
                    p.copy_(p0 + a * u + b * v)
                seen = measure_entropies(model, names, lambda: model(**batch), config.constant)
                task, entropies = seen.output.loss.float().cpu(), seen.entropies.cpu()
                if alphas is None:  # no trained alphas: the configured initial targets
                    alphas = (
                        auto_alphas(entropies, None, config.alpha_min)
                        if config.alpha == AUTO
                        else torch.full_like(entropies, float(config.alpha))
                    )
                lbe = lbe_loss(entropies, alphas, config.alpha_min, config.beta)
                rows["task_loss"].append(float(task))
                rows["lbe_loss"].append(float(lbe))
                rows["regularized_loss"].append(float(task + task * lbe))
            for k in surfaces:
                surfaces[k].append(rows[k])
    finally:
        for p, p0 in zip(params, origin):
            p.copy_(p0)
        model.train(was_training)
    return {"coords": coords, **surfaces}


def plot_loss_surface(surface: dict, path: str, title: str = "") -> str:
    """Task loss and LBE term side by side, plus the regularized loss (contours). Returns the path written."""
    from .plotting import plot_loss_surfaces

    panels = {
        "task loss L": surface["task_loss"],
        "LBE term L_BE (eq. 5)": surface["lbe_loss"],
        "L + L * L_BE (eq. 6)": surface["regularized_loss"],
    }
    return plot_loss_surfaces(surface["coords"], panels, path, title=title)


# ---- command line ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="checkpoint folder, Hub id, or an FNN spec such as 'fnn:depth=30,init=torch'")
    parser.add_argument("--data", default=None, help="labelled data, as for `lbe-hf diagnose` (not 'synthetic')")
    parser.add_argument("--batch_size", type=int, default=256, help="samples of the batch the losses are computed on")
    parser.add_argument("--seq_len", type=int, default=128, help="sequence length of text inputs")
    parser.add_argument("--steps", type=int, default=21, help="grid points per direction (steps^2 forward passes)")
    parser.add_argument("--span", type=float, default=1.0, help="grid covers [-span, span] along each direction")
    parser.add_argument("--alpha", default="0.5", help="entropy target for untrained alphas, or 'auto'")
    parser.add_argument("--beta", type=float, default=0.5, help="weight of the LBE term")
    parser.add_argument("--alpha_min", type=float, default=0.2, help="lowest entropy target")
    parser.add_argument(
        "--output", default=os.path.join("lbe_loss_surface", "loss_surface.png"), help="PNG to write (folder created)"
    )
    parser.add_argument("--json", default=None, help="also write the grids as JSON here")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random directions and the data order")


def run(args: argparse.Namespace) -> int:
    """The CLI: 0 on success, 2 on bad input."""
    from .diagnose_io import load_inputs, load_model

    try:
        config = BatchEntropyConfig(alpha=args.alpha, beta=args.beta, alpha_min=args.alpha_min)
        torch.manual_seed(args.seed)
        model = load_model(args.model, args.data)
        batch, _ = load_inputs(model, args.model, args.data, args.batch_size, args.seq_len, args.seed)
        surface = loss_surface(model, batch, args.steps, args.span, config, args.seed)
    except (ValueError, OSError, KeyError) as e:
        print(f"lbe-hf loss-surface: error: {e}", file=sys.stderr)
        return 2
    centre = len(surface["coords"]) // 2
    print(
        f"{args.steps}x{args.steps} grid over [-{args.span:g}, {args.span:g}]^2; at the centre: task loss "
        f"{surface['task_loss'][centre][centre]:.4f}, L_BE {surface['lbe_loss'][centre][centre]:.4f}"
    )
    print(f"plot: {os.path.abspath(plot_loss_surface(surface, args.output, title=args.model))}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(surface, f)
    return 0
