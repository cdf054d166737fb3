"""Every figure the tools draw (matplotlib, headless Agg backend): entropy per layer over training, per-layer
profiles, loss surfaces."""

from __future__ import annotations

import os
from collections.abc import Sequence


def _pyplot():
    """pyplot on the Agg backend: the tools run on servers and in CI without a display."""
    from ..extras import require

    matplotlib = require("matplotlib", "demo", "Plotting")
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_entropy_history(
    history: Sequence[tuple[int, Sequence[float]]],
    path: str | os.PathLike,
    title: str = "Batch entropy per layer during training",
    log_scale: bool = False,
) -> str:
    """The paper's Fig. 2/6: batch entropy (eq. 3) of every regularized layer, one line per logging step.

    Args:
        history: (global step, per-layer entropies (L,)) pairs, e.g. `LBETrainer.entropy_history`.
        path: PNG file to write (its folder is created).
        log_scale: symlog y axis, so that collapsed layers (entropy ~1e-9) stay distinguishable from 0.

    Returns:
        The path written.
    """
    if not history:
        raise ValueError("no entropy history to plot: log at least one training step (logging_steps).")
    plt = _pyplot()
    from matplotlib import cm
    from matplotlib.colors import Normalize

    steps = [s for s, _ in history]
    norm = Normalize(vmin=min(steps), vmax=max(max(steps), min(steps) + 1))
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for step, values in history:
        layers = list(range(1, len(values) + 1))
        ax.plot(layers, list(values), color=cmap(norm(step)), linewidth=1.2, marker="." if len(values) < 40 else None)
    sm = cm.ScalarMappable(norm=norm, cmap=cmap)
    sm.set_array([])
    fig.colorbar(sm, ax=ax, label="training step")
    ax.set_xlabel("layer")
    ax.set_ylabel("batch entropy")
    if log_scale:
        ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_entropy_runs(runs: dict[str, dict], path: str | os.PathLike, title: str = "") -> str:
    """Batch entropy per layer (x) at each logging step (colour), one panel per run: the paper's Fig. 2/6.

    `runs`: name -> {"history": [(step, per-layer entropies)], "final_entropies": [...], "accuracy": float}, as
    `lbe-hf demo` collects them. Log y axis: a collapsed layer's entropy is ~1e-10, not 0, and how far below the
    line at 1e-3 it sits shows how much of the signal is left. The lines during training are the training batches'
    (mean since the previous log); the black line is the end of training on the test set, the numbers of the
    printed table.
    """
    plt = _pyplot()
    floor = 1e-12  # below float32 resolution of what a layer passes; plotted at the axis bottom
    fig, axes = plt.subplots(1, len(runs), figsize=(5.8 * len(runs), 4.4), sharey=True, squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, (name, run) in zip(axes[0], runs.items()):
        history = run["history"]
        last_step = max(step for step, _ in history) if history else 1
        for step, layers in history:
            values = [max(v, floor) for v in layers]
            ax.plot(range(1, len(values) + 1), values, color=cmap(step / last_step), lw=1)
        final = [max(v, floor) for v in run["final_entropies"]]
        ax.plot(range(1, len(final) + 1), final, color="black", lw=2, label="end of training, test set")
        ax.axhline(1e-3, color="tab:red", ls="--", lw=1, label="1e-3: below, a layer passes ~no information")
        ax.set_yscale("log")
        ax.set_ylim(floor / 2, 10)
        ax.set_title(f"{name}: test accuracy {run['accuracy']:.1%}")
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
        ax.legend(loc="center right", fontsize=8)
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, last_step))
        fig.colorbar(sm, ax=ax, label="training step (training batches)")
    axes[0][0].set_ylabel("batch entropy (nats, log scale)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_layer_profile(
    names: Sequence[str],
    entropies: Sequence[float],
    path: str | os.PathLike,
    flagged: Sequence[bool] | None = None,
    spread: Sequence[float] | None = None,
    title: str = "Batch entropy per layer",
    threshold: float | None = None,
) -> str:
    """One forward pass: batch entropy per layer, collapsed layers in red; optional relative spread on a log axis.

    Args:
        names: (L,) module names, in layer order (the x axis counts them from 1).
        entropies: (L,) batch entropies, eq. (3).
        flagged: (L,) True for layers judged collapsed (drawn red).
        spread: (L,) scale-free relative spread of the layer's outputs (see `lbe_hf.cli.diagnose`), log axis.
        threshold: spread below which a layer counts as collapsed (dashed line).
    """
    if len(names) != len(entropies):
        raise ValueError(f"{len(names)} layer names for {len(entropies)} entropies.")
    plt = _pyplot()
    ncols = 2 if spread is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 3.8), dpi=110, squeeze=False)
    layers = list(range(1, len(entropies) + 1))
    colors = ["tab:red" if f else "tab:blue" for f in (flagged or [False] * len(layers))]
    ax = axes[0][0]
    ax.plot(layers, list(entropies), color="0.6", linewidth=0.8)
    ax.scatter(layers, list(entropies), c=colors, s=14, zorder=3)
    ax.set_xlabel("layer (# in the diagnose table)")
    ax.set_ylabel("batch entropy (eq. 3)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if spread is not None:
        ax = axes[0][1]
        ax.plot(layers, [max(s, 1e-30) for s in spread], color="0.6", linewidth=0.8)
        ax.scatter(layers, [max(s, 1e-30) for s in spread], c=colors, s=14, zorder=3)
        ax.set_yscale("log")
        if threshold is not None:
            ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=0.8, label="collapse threshold")
            ax.legend(fontsize=8)
        ax.set_xlabel("layer (# in the diagnose table)")
        ax.set_ylabel("std over batch / RMS")
        ax.set_title("relative spread (scale-free)", fontsize=10)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_loss_surfaces(
    coords: Sequence[float],
    surfaces: dict[str, Sequence[Sequence[float]]],
    path: str | os.PathLike,
    title: str = "",
) -> str:
    """Contour plots side by side (the paper's Fig. 3/5), one per surface, on a shared (alpha, beta) grid.

    Args:
        coords: (n,) step sizes along each of the two directions.
        surfaces: name -> (n, n) values, rows indexed by the second direction.
    """
    plt = _pyplot()
    import numpy as np

    grid = np.asarray(coords, dtype=float)
    fig, axes = plt.subplots(1, len(surfaces), figsize=(4.6 * len(surfaces), 4.0), dpi=110, squeeze=False)
    for ax, (name, values) in zip(axes[0], surfaces.items()):
        z = np.asarray(values, dtype=float)
        z = np.where(np.isfinite(z), z, np.nan)
        contour = ax.contourf(grid, grid, z, levels=30, cmap="viridis")
        ax.contour(grid, grid, z, levels=15, colors="k", linewidths=0.3)
        fig.colorbar(contour, ax=ax)
        ax.plot([0], [0], marker="*", color="white", markersize=10)
        ax.set_title(name)
        ax.set_xlabel("direction 1")
        ax.set_ylabel("direction 2")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _save(fig, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
