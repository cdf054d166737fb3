"""Markdown tables and plots of the trainability sweep (scripts/benchmarks/trainability.py --report)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

COMMAND = "python scripts/benchmarks/trainability.py --report"


def setting_name(lbe: dict | None) -> str:
    if lbe is None:
        return "plain"
    if not lbe:
        return "LBE defaults"
    return "LBE " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(lbe.items()))


def _group(results: dict) -> dict[tuple, dict[str, list[dict]]]:
    """(dataset, init, depth, lr, steps) -> setting name -> runs (one per seed)."""
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for run in results.values():
        key = (run["dataset"], run["init"], run["depth"], run["lr"], run["steps"])
        groups[key][setting_name(run["lbe"])].append(run)
    return groups


def _cell(runs: list[dict]) -> str:
    accs = [r["test_accuracy"] for r in sorted(runs, key=lambda r: r["seed"])]
    cell = " / ".join(f"{a:.1f}" for a in accs)
    return cell + (f" (mean {statistics.mean(accs):.1f})" if len(accs) > 2 else "")


def trainability_table(results: dict) -> str:
    """One row per (dataset, init, depth, lr, setting): test accuracy per seed, step time."""
    lines = [
        "| data | init | depth | lr | setting | test acc. % (seeds) | train acc. % | final entropy min / mean "
        "| ms/step |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (dataset, init, depth, lr, _steps), settings in sorted(_group(results).items()):
        for name in sorted(settings, key=lambda n: (n != "plain", n != "LBE defaults", n)):
            runs = sorted(settings[name], key=lambda r: r["seed"])
            seeds = ",".join(str(r["seed"]) for r in runs)
            train = " / ".join(f"{r['train_accuracy']:.1f}" for r in runs)
            last = runs[0]["probe_entropy"][-1][1]
            ent = f"{min(last):.2f} / {statistics.mean(last):.2f}"
            ms = statistics.median(r["median_step_s"] * 1000 for r in runs)
            lines.append(
                f"| {dataset} | {init} | {depth} | {lr:g} | {name} | {_cell(runs)} (s{seeds}) | {train} | {ent} "
                f"| {ms:.0f} |"
            )
    return "\n".join(lines)


def plot_accuracy_vs_depth(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["dataset"], r["init"], r["lr"]) for r in results.values()})
    lbe_names = sorted({setting_name(r["lbe"]) for r in results.values()} - {"plain"})
    colors = {name: f"C{i}" for i, name in enumerate(lbe_names)}
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (dataset, init, lr) in zip(axes.flat, panels):
        by_setting: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in results.values():
            if (r["dataset"], r["init"], r["lr"]) == (dataset, init, lr):
                by_setting[setting_name(r["lbe"])][r["depth"]].append(r["test_accuracy"])
        names = sorted(by_setting, key=lambda n: (n != "plain", n != "LBE defaults", n))
        all_depths = sorted({d for depths in by_setting.values() for d in depths})
        for name in names:
            depths = by_setting[name]
            xs = sorted(depths)
            style = {"color": "0.4", "linestyle": "--"} if name == "plain" else {"color": colors[name]}
            ax.plot(xs, [statistics.mean(depths[d]) for d in xs], marker="o", label=f"{name} (mean)", **style)
            for d in xs:  # every seed
                ax.scatter([d] * len(depths[d]), depths[d], s=12, color=style["color"], alpha=0.6)
        ax.set_xscale("log")
        ax.set_xticks(all_depths, [str(d) for d in all_depths])
        ax.minorticks_off()
        ax.set_xlabel("depth (hidden layers)")
        ax.set_ylabel("test accuracy %")
        ax.set_ylim(0, 100)
        ax.set_title(f"{dataset}, init={init}, lr={lr:g}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"Vanilla FNN, width 256, 600 Adam steps (made by: {COMMAND})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


PROBES = {"probe_entropy": "batch entropy (eq. 3)", "probe_effective_rank": "effective rank"}


def plot_entropy_over_training(runs: list[dict], path: Path, field: str = "probe_entropy") -> None:
    """Per-layer batch entropy (probe batch) over training, one heat map per run (the paper's Fig. 2/6).

    `field="probe_effective_rank"` draws the layers' effective rank the same way (log colour scale).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.colors
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(runs), figsize=(4.6 * len(runs), 3.6), squeeze=False)
    vmax = max(max(max(h) for _, h in r[field]) for r in runs)
    if field == "probe_effective_rank":
        norm = matplotlib.colors.LogNorm(vmin=1.0, vmax=max(vmax, 2.0))
    else:
        norm = matplotlib.colors.Normalize(vmin=0.0, vmax=vmax)
    for ax, run in zip(axes[0], runs):
        steps = [s for s, _ in run[field]]
        grid = np.array([h for _, h in run[field]]).T  # (layers, logging steps)
        im = ax.imshow(grid.clip(min=norm.vmin), aspect="auto", origin="lower", norm=norm, cmap="viridis",
                       extent=(steps[0], steps[-1], 0.5, grid.shape[0] + 0.5))  # fmt: skip
        ax.set_xlabel("training step")
        ax.set_ylabel("layer")
        ax.set_title(
            f"{run['dataset']} {run['init']} depth {run['depth']}: {setting_name(run['lbe'])}\n"
            f"test acc. {run['test_accuracy']:.1f}%",
            fontsize=8,
        )
        fig.colorbar(im, ax=ax, label=PROBES[field])
    fig.suptitle(f"made by: {COMMAND}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


BUDGET_FIELDS = (
    "width", "residual", "batch_size", "epochs", "steps", "max_grad_norm", "lr_scheduler", "warmup_ratio", "augment"
)  # fmt: skip
LEGACY = {
    "width": 256, "residual": False, "epochs": None, "max_grad_norm": 0.0, "lr_scheduler": "constant", "augment": False
}  # fmt: skip


def _budget_group(run: dict) -> tuple:
    """What a table row of the budget campaign holds fixed: data, net, optimisation (not the seed or LBE setting)."""
    fields = tuple(run.get(k, LEGACY.get(k, 0.0)) for k in BUDGET_FIELDS)
    return (run["dataset"], run["init"], run["depth"], run["lr"], *fields)


def _mean_se(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values) / len(values) ** 0.5:.1f}"


def steps_to(curve: list, level: float) -> int | None:
    """First step of a (step, test accuracy) curve at or above `level` percent, None if never."""
    return next((step for step, acc in curve if acc >= level), None)


def last_points_mean(run: dict, n: int = 5) -> float | None:
    """Mean of the last `n` points of a run's test curve: the authors' reported metric (their code logs the mean
    of the last 5 test evaluations, one every 5 epochs); None without a curve."""
    curve = run.get("test_curve") or []
    return statistics.mean(a for _, a in curve[-n:]) if curve else None


def _net_name(group: tuple) -> str:
    dataset, init, depth, lr, width, residual, batch, epochs, steps, clip, sched, warmup, augment = group
    net = f"{init}{' residual' if residual else ''} d{depth} w{width}"
    budget = f"{epochs} ep" if epochs is not None else f"{steps} steps"
    opt = f"lr {lr:g}, b {batch}, {budget}, clip {clip:g}, {sched}" + (f", warm-up {warmup:g}" if warmup else "")
    opt += ", augmented" if augment else ""
    return dataset, net, opt


def budget_table(results: dict) -> str:
    """One row per net, optimisation and LBE setting: mean ± standard error of the test accuracy over n seeds
    (as the paper's Table 1), each seed's value, the best point of the test curve, the median step at which the
    curve first reached 50 %, and the median step time."""
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for run in results.values():
        groups[_budget_group(run)][setting_name(run["lbe"])].append(run)
    lines = [
        "| data | net | optimisation | setting | n | test acc. % (mean ± s.e.) | seeds | last 5 points | "
        "best on curve | step to 50 % | ms/step |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for group, settings in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        dataset, net, opt = _net_name(group)
        for name in sorted(settings, key=lambda n: (n != "plain", n != "LBE defaults", n)):
            runs = sorted(settings[name], key=lambda r: r["seed"])
            accs = [r["test_accuracy"] for r in runs]
            seeds = " / ".join(f"{a:.1f} (s{r['seed']})" for a, r in zip(accs, runs))
            best = " / ".join(
                f"{max(a for _, a in r['test_curve']):.1f}" if r.get("test_curve") else "-" for r in runs
            )
            last = [m for m in map(last_points_mean, runs) if m is not None]
            last5 = _mean_se(last) if last else "-"
            reached = [steps_to(r.get("test_curve") or [], 50.0) for r in runs]
            hit = sorted(s for s in reached if s is not None)
            to50 = f"{statistics.median(hit):.0f} ({len(hit)}/{len(runs)})" if hit else f"never (0/{len(runs)})"
            ms = statistics.median(r["median_step_s"] * 1000 for r in runs)
            lines.append(
                f"| {dataset} | {net} | {opt} | {name} | {len(runs)} | {_mean_se(accs)} | {seeds} | {last5} | {best} "
                f"| {to50} | {ms:.0f} |"
            )
    return "\n".join(lines)


def _setting_flag(lbe: dict | None) -> str:
    if lbe is None:
        return "plain"
    if not lbe:
        return "default"
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(lbe.items()))


def budget_commands(results: dict, results_path: str = "docs/results/trainability_budget.json") -> str:
    """The trainability.py command line that reruns each row group of `budget_table` (seeds and settings joined)."""
    commands: dict[tuple, dict[str, set]] = defaultdict(lambda: {"seeds": set(), "settings": set()})
    for run in results.values():
        group = _budget_group(run)
        commands[group]["seeds"].add(run["seed"])
        commands[group]["settings"].add(_setting_flag(run["lbe"]))
    lines = []
    for group, parts in sorted(commands.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        dataset, init, depth, lr, width, residual, batch, epochs, steps, clip, sched, warmup, augment = group
        budget = f"--epochs {epochs}" if epochs is not None else f"--steps {steps}"
        settings = " ".join(sorted(parts["settings"], key=lambda n: (n != "plain", n != "default", n)))
        lines.append(
            f"python scripts/benchmarks/trainability.py --datasets {dataset} --inits {init}"
            + (" --residual" if residual else "")
            + (" --augment" if augment else "")
            + f" --depths {depth} --width {width} --seeds {' '.join(map(str, sorted(parts['seeds'])))} --lrs {lr:g}"
            f" --batch_size {batch} {budget} --max_grad_norm {clip:g} --lr_scheduler {sched}"
            f" --warmup_ratio {warmup:g} --lbe_settings {settings} --threads 1 --run_dir runs/trainability"
            f" --results {results_path}"
        )
    return "\n".join(lines)


def plot_budget_curves(results: dict, path: Path) -> None:
    """Test accuracy over training per net (the paper's Fig. 7): one panel per row group, one colour per setting,
    a thin line per seed and a thick line for the seeds' mean where they share steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for run in results.values():
        if run.get("test_curve"):
            groups[_budget_group(run)][setting_name(run["lbe"])].append(run)
    if not groups:
        return
    names = sorted({n for g in groups.values() for n in g}, key=lambda n: (n != "plain", n != "LBE defaults", n))
    colors = {n: ("0.4" if n == "plain" else f"C{i}") for i, n in enumerate(names)}
    cols = min(3, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    for ax, (group, settings) in zip(axes.flat, sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0]))):
        for name, runs in settings.items():
            for r in runs:
                ax.plot(*zip(*r["test_curve"]), color=colors[name], linewidth=0.7, alpha=0.5)
            steps = [s for s, _ in runs[0]["test_curve"]]
            if all([s for s, _ in r["test_curve"]] == steps for r in runs):
                mean = [statistics.mean(r["test_curve"][i][1] for r in runs) for i in range(len(steps))]
                ax.plot(steps, mean, color=colors[name], linewidth=2, label=f"{name} (mean of {len(runs)})")
        dataset, net, opt = _net_name(group)
        ax.set_title(f"{dataset} {net}\n{opt}", fontsize=7)
        ax.set_xlabel("training step")
        ax.set_ylabel("test accuracy %")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=6)
    fig.suptitle(f"Vanilla FNN test accuracy during training\n(made by: {COMMAND})", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.25 / rows / 3.4))  # room for the two-line title above the panels
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_trainability_report(
    results: dict, folder: Path, budget: dict | None = None, summary: list[str] = ()
) -> None:
    """folder/trainability.md: the paper-budget campaign (`budget`, if any) first, its `summary` sections (markdown)
    before its full table, then the 600-step sweep (`results`) as the short-budget section; plots beside it (budget
    curves in folder/results/)."""
    folder = Path(folder)
    if not results and not budget:
        raise ValueError("no trainability results yet: run scripts/benchmarks/trainability.py first.")
    parts = [f"<!-- made by: {COMMAND} -->\n"]
    if budget:
        (folder / "results").mkdir(parents=True, exist_ok=True)
        plot_budget_curves(budget, folder / "results" / "trainability_budget_curves.png")
        parts += [
            "## Paper budget (epochs)\n",
            "The paper's Table 1 trains 100 epochs; here the 8,000-image MNIST split (2,000 test images, pixels "
            "standardised) for 100 epochs is 1,600 steps of 512 (the paper's 100 epochs of 48k images are about "
            "9,400 steps: the rows of 600 epochs match that step count), and `fashion` is the full Fashion-MNIST "
            "(60k training images, its 10k test images). Vanilla ReLU FNNs (no skips, no normalization) "
            "trained with the real `transformers.Trainer` (plain) or `LBETrainer`: Adam, no weight decay, a constant "
            "lr (the paper's; `Trainer`'s own default is linear decay, `--lr_scheduler linear`), gradient clipping "
            "as the optimisation column says (`clip 1` is `Trainer`'s default `max_grad_norm=1.0`, `clip 0` off). "
            "Inits (`FNNConfig(init=...)`): `torch` is PyTorch's default `nn.Linear` init (the authors' code), `he` "
            "Kaiming normal, `glorot` Glorot uniform (Keras' default, the TensorFlow port's), `orthogonal` gain "
            "sqrt 2, `lsuv` orthogonal then each layer rescaled to unit output "
            "variance on the run's first 512 training images (`lbe_hf.models.fnn.lsuv_init`); `residual` nets add "
            "x + f(x) around every hidden block (`FNNConfig(residual=True)`), the architectural ceiling.\n",
            "The test accuracy is measured after the last step; mean ± standard error over the n seeds (as the "
            "paper's Table 1). 'last 5 points' is the mean ± s.e. over seeds of each run's mean of the last 5 "
            "points of its test curve (the last quarter of the run): the authors' code reports that average of "
            "its last 5 test evaluations rather than the final one. "
            "'best on curve' is the highest point of the test-accuracy curve (measured 20 times "
            "per run), 'step to 50 %' the median first step at which the curve reached 50 % (and how many seeds "
            "did). 'ms/step' is the median wall time of a step with one torch thread on a shared machine: it "
            "moved by up to 2x with the machine's other load between runs, so compare step costs only within one "
            "timing run. "
            "The rows are the finished runs of `scripts/benchmarks/campaign_budget.sh`, a queue that appends "
            "each run to `docs/results/trainability_budget.json` as it finishes.\n",
            *summary,
            "### Every run\n",
            budget_table(budget) + "\n",
            "Test accuracy during training (the paper's Fig. 7):\n",
            "![test accuracy curves](results/trainability_budget_curves.png)\n",
            "Each row group was run with (results appended to the JSON; a killed run resumes from its checkpoint):\n",
            "```bash\n" + budget_commands(budget) + "\n```\n",
        ]
    if results:
        parts += [
            "## Short budget (600 steps)\n",
            "The earlier sweep: 600 Adam steps at a constant lr, no clipping "
            "(`docs/results/trainability_results.json`).\n",
            trainability_table(results) + "\n",
        ]
    (folder / "trainability.md").write_text("\n".join(parts))
    print("\n".join(parts))
    if not results:
        return
    plot_accuracy_vs_depth(results, folder / "accuracy_vs_depth.png")
    for (dataset, init, depth, lr, _steps), settings in sorted(_group(results).items()):
        if dataset != "mnist" or "plain" not in settings or "LBE defaults" not in settings:
            continue
        if (init, depth) not in (("torch", 50), ("torch", 30), ("he", 30), ("he", 100)):
            continue
        pair = [min(settings[name], key=lambda r: r["seed"]) for name in ("plain", "LBE defaults")]
        plot_entropy_over_training(pair, folder / f"entropy_{init}_d{depth}_lr{lr:g}.png")
        ranked = [r for r in settings["LBE defaults"] if "probe_effective_rank" in r]
        if ranked:  # the worst and the best rescue side by side
            runs = sorted(ranked, key=lambda r: r["test_accuracy"])
            runs = [runs[0], runs[-1]] if len(runs) > 1 else runs
            plot_entropy_over_training(runs, folder / f"rank_{init}_d{depth}_lr{lr:g}.png", "probe_effective_rank")


def auto_alpha_table(results: dict, dataset: str = "mnist", grid: tuple[float, ...] = (0.5, 1.0, 2.0)) -> str:
    """alpha="auto" against fixed alphas, per net and seed: test accuracy and auto minus the best grid value.

    The defaults' runs (`lbe()`, alpha 0.5) count as the grid's 0.5; other settings must differ only in alpha.
    """
    cells: dict[tuple, dict[str, float]] = defaultdict(dict)
    for run in results.values():
        if run["dataset"] != dataset or run["lr"] != 1e-3:
            continue
        lbe = run["lbe"]
        if lbe is None:
            name = "plain"
        elif not lbe or set(lbe) == {"alpha"}:
            alpha = lbe.get("alpha", 0.5)
            name = "auto" if alpha == "auto" else f"{float(alpha):g}"
        else:
            continue
        cells[(run["init"], run["depth"], run["seed"])][name] = run["test_accuracy"]
    columns = ["plain", "auto", *(f"{a:g}" for a in grid)]
    lines = [
        "| net | seed | " + " | ".join("alpha=" + c if c != "plain" else c for c in columns) + " | auto - best grid |",
        "| --- | --- | " + " | ".join("---" for _ in columns) + " | --- |",
    ]
    for (init, depth, seed), row in sorted(cells.items()):
        if "auto" not in row:
            continue
        grid_values = [row[f"{a:g}"] for a in grid if f"{a:g}" in row]
        gap = f"{round(row['auto'] - max(grid_values), 1) + 0.0:+.1f} (of {len(grid_values)})" if grid_values else "-"
        shown = " | ".join(f"{row[c]:.1f}" if c in row else "-" for c in columns)
        lines.append(f"| {init} d{depth} | {seed} | {shown} | {gap} |")
    by_net: dict[tuple, list[dict]] = defaultdict(list)
    for (init, depth, _seed), row in sorted(cells.items()):
        if "auto" in row:
            by_net[(init, depth)].append(row)
    for (init, depth), rows in by_net.items():  # the target compares per net: average each net's seeds
        means = {c: statistics.mean(row[c] for row in rows) for c in columns if all(c in row for row in rows)}
        grid_means = [means[f"{a:g}"] for a in grid if f"{a:g}" in means]
        if len(rows) < 2 or not grid_means:
            continue
        shown = " | ".join(f"{means[c]:.1f}" if c in means else "-" for c in columns)
        gap = means["auto"] - max(grid_means)
        lines.append(f"| {init} d{depth} | mean of {len(rows)} | {shown} | {gap:+.1f} (of {len(grid_means)}) |")
    complete = [row for row in cells.values() if all(c in row for c in columns[1:])]
    if len(complete) > 1:  # one alpha for every net: which fixed value would have been best on average
        means = {c: statistics.mean(row[c] for row in complete) for c in columns[1:]}
        best = max(means[f"{a:g}"] for a in grid)
        shown = " | ".join(f"{means[c]:.1f}" for c in columns[1:])
        lines.append(f"| mean of {len(complete)} complete rows | | - | {shown} | {means['auto'] - best:+.1f} |")
    return "\n".join(lines)
