"""The paper-budget campaign's summary tables: each target of the campaign against the best setting measured, the
alternatives to LBE (other inits, residual connections) beside it on the same nets and optimisation, and LBETrainer
against the plain-PyTorch loop of eq. 3-6 on the same nets (`trainability.py --report` prints all three)."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bench_report import _budget_group, _mean_se, _net_name, last_points_mean, setting_name, steps_to

# Plain training counts as "at chance" below this test accuracy (%): the 10-class MNIST split's majority class is
# 11.5 %, and a net that learned anything is far above it.
CHANCE_BELOW = 15.0


@dataclass(frozen=True)
class Target:
    """LBE's mean test accuracy on `dataset` nets of `init` (None: any init) and `depth` should reach `level` %
    (with a standard error of at most `max_se` points where given) while plain `Trainer` on the same optimisation
    stays at chance where `plain_at_chance`, or come within `within` points of plain's on the same net."""

    name: str
    init: str | None
    depth: int
    level: float | None = None
    max_se: float | None = None
    within: float | None = None
    plain_at_chance: bool = False
    dataset: str = "mnist"


TARGETS = (
    Target("depth 30, PyTorch init: LBE >= 90 %, s.e. <= 2; plain at chance", "torch", 30, level=90.0, max_se=2.0,
           plain_at_chance=True),
    Target("depth 50, PyTorch init: LBE >= 90 %, s.e. <= 2; plain at chance", "torch", 50, level=90.0, max_se=2.0,
           plain_at_chance=True),
    Target("He depth 100: LBE >= 85 %; plain at chance", "he", 100, level=85.0, plain_at_chance=True),
    Target("He depth 200: LBE >= 85 %; plain at chance", "he", 200, level=85.0, plain_at_chance=True),
    Target("depth 500, any init: LBE >= 80 %", None, 500, level=80.0),
    Target("He depth 10: LBE within 1 point of plain", "he", 10, within=1.0),
    Target("He depth 20: LBE within 1 point of plain", "he", 20, within=1.0),
)  # fmt: skip


def _cells(budget: dict, target: Target) -> list[tuple[tuple, str, list[dict], list[float]]]:
    """(row group, setting, LBE runs, plain accuracies of the same group) for every LBE setting measured on the
    target's net (no residual nets: they are the ceiling, not the method)."""
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for run in budget.values():
        group = _budget_group(run)
        dataset, init, depth, _lr, _width, residual = group[:6]
        if (dataset, depth, residual) == (target.dataset, target.depth, False) and target.init in (None, init):
            groups[group][setting_name(run["lbe"])].append(run)
    return [
        (group, name, runs, [r["test_accuracy"] for r in settings.get("plain", [])])
        for group, settings in groups.items()
        for name, runs in settings.items()
        if name != "plain"
    ]


def _accs(runs: list[dict]) -> list[float]:
    return [r["test_accuracy"] for r in runs]


def _se(values: list[float]) -> float:
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")


def _judge(target: Target, cell: tuple) -> tuple[int, str]:
    """How far one cell meets a level target (3: fully, on 3 seeds with plain measured at chance; 2: but on fewer
    seeds or without plain measured; 1: LBE reaches the level but plain trains too; 0: LBE misses) and the verdict
    as the table says it."""
    _group, _name, runs, plain = cell
    accs = _accs(runs)
    short = target.level - statistics.mean(accs)
    if short > 0:
        return 0, f"no ({short:.1f} points short)"
    if target.max_se is not None and not (len(accs) > 1 and _se(accs) <= target.max_se):
        return 0, f"mean yes, s.e. {_se(accs):.1f} > {target.max_se:g}" if len(accs) > 1 else "mean yes on 1 seed"
    if target.plain_at_chance and plain and statistics.mean(plain) >= CHANCE_BELOW:
        return 1, f"no: plain trains too ({statistics.mean(plain):.1f} % on the same optimisation)"
    verdict = "yes" if len(accs) >= 3 else f"yes on {len(accs)} seed{'s' * (len(accs) > 1)} (3 wanted)"
    if target.plain_at_chance and not plain:
        verdict += "; plain not run on this optimisation"
    return (3 if verdict == "yes" else 2), verdict


def _verdict(target: Target, cells: list) -> tuple[tuple, bool, str]:
    """The best cell for `target`, whether the target is fully met, and the verdict as the table says it. A level
    target takes the cell that meets most of it (`_judge`), then the highest LBE mean; a `within` target a cell
    with plain beside it and 3 seeds first, then the highest LBE mean."""
    if target.within is not None:
        cells = [c for c in cells if c[3]] or cells  # a comparison needs plain on the same row group
        best = max(cells, key=lambda c: (len(c[2]) >= 3, statistics.mean(_accs(c[2]))))
        _group, _name, runs, plain = best
        gap = statistics.mean(_accs(runs)) - statistics.mean(plain) if plain else float("nan")
        met = abs(gap) <= target.within
        return best, met, f"yes ({gap:+.1f})" if met else f"no ({gap:+.1f} points)"
    judged = [(_judge(target, c), c) for c in cells]
    (score, verdict), best = max(judged, key=lambda j: (j[0][0], statistics.mean(_accs(j[1][2])), len(j[1][2])))
    return best, score == 3, verdict


def targets_table(budget: dict) -> str:
    """One row per target: how many LBE settings were tried on its net, the best of them (highest mean over
    seeds; chosen on the test split, so optimistic), plain on the same row group, and whether the target is met."""
    lines = [
        "| target | settings tried | best setting (net; optimisation) | n | LBE % | LBE, last 5 points | plain % "
        "| met? |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for target in TARGETS:
        cells = _cells(budget, target)
        if not cells:
            lines.append(f"| {target.name} | 0 | not run yet | | | | | |")
            continue
        (group, name, runs, plain), _met, verdict = _verdict(target, cells)
        accs = _accs(runs)
        last = [m for m in map(last_points_mean, runs) if m is not None]
        _, net, opt = _net_name(group)
        plain_cell = _mean_se(plain) if plain else "-"
        lines.append(
            f"| {target.name} | {len(cells)} | {name} ({net}; {opt}) | {len(accs)} | {_mean_se(accs)} "
            f"| {_mean_se(last) if last else '-'} | {plain_cell} "
            f"| {verdict} |"
        )
    return "\n".join(lines)


def tried_table(budget: dict) -> str:
    """Every LBE setting tried on the net of each target not yet fully met, best mean first: the table of what was
    tried, with the best point of each run's test curve and the step at which it first reached 50 %."""
    lines = [
        "| target | net | optimisation | setting | n | LBE % | best on curve | step to 50 % | plain % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for target in TARGETS:
        cells = _cells(budget, target)
        if not cells or _verdict(target, cells)[1]:
            continue
        for group, name, runs, plain in sorted(cells, key=lambda c: -statistics.mean(_accs(c[2]))):
            _, net, opt = _net_name(group)
            curves = [r.get("test_curve") or [] for r in runs]
            best = " / ".join(f"{max(a for _, a in c):.1f}" if c else "-" for c in curves)
            reached = [steps_to(c, 50.0) for c in curves]
            to50 = " / ".join("never" if s is None else str(s) for s in reached)
            lines.append(
                f"| {target.name} | {net} | {opt} | {name} | {len(runs)} | {_mean_se(_accs(runs))} | {best} "
                f"| {to50} | {_mean_se(plain) if plain else '-'} |"
            )
    return "\n".join(lines)


ALTERNATIVES = (
    ("he", False, "He"),
    ("orthogonal", False, "orthogonal"),
    ("lsuv", False, "LSUV"),
    ("he", True, "residual"),
)


def alternatives_table(budget: dict) -> str:
    """One row per net and optimisation on which any alternative to LBE was run: test accuracy (mean ± s.e., n)
    of plain `Trainer` and of LBE defaults for He, orthogonal and LSUV init and for the residual He net."""
    rows: dict[tuple, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in budget.values():
        dataset, init, depth, lr, width, residual, *rest = _budget_group(run)
        arm = setting_name(run["lbe"])
        if arm in ("plain", "LBE defaults"):  # the row group with init and residual left open
            rows[(dataset, "", depth, lr, width, False, *rest)][(init, residual, arm)].append(run["test_accuracy"])
    header = "| data | net | optimisation | " + " | ".join(
        f"{label} {arm}" for _, _, label in ALTERNATIVES for arm in ("plain", "LBE")
    )
    lines = [header + " |", "| --- | --- | --- |" + " --- |" * 2 * len(ALTERNATIVES)]
    others = {(init, residual) for init, residual, _ in ALTERNATIVES[1:]}  # everything but the He baseline
    for group, arms in sorted(rows.items(), key=lambda kv: str(kv[0])):
        if not others & {(init, residual) for init, residual, _ in arms}:
            continue
        dataset, _, depth, _, width, *_ = group
        _, _, opt = _net_name(group)
        cells = []
        for init, residual, _ in ALTERNATIVES:
            for arm in ("plain", "LBE defaults"):
                accs = arms.get((init, residual, arm))
                cells.append(f"{_mean_se(accs)} (n={len(accs)})" if accs else "-")
        lines.append(f"| {dataset} | d{depth} w{width} | {opt} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reference_table(trainer_results: Path, loop_results: Path) -> str:
    """Per seed: LBETrainer's test accuracy and the plain-PyTorch loop's with each batch order, on the nets the
    loop was run on (same init, depth, lr, steps, alpha/beta defaults, no clipping)."""
    trainer = json.loads(trainer_results.read_text()) if trainer_results.is_file() else {}
    rows = [json.loads(line) for line in loop_results.read_text().splitlines()] if loop_results.is_file() else []
    nets: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for run in trainer.values():
        if run["lbe"] == {}:
            nets[(run["dataset"], run["init"], run["depth"], run["lr"], run["steps"])]["LBETrainer"][run["seed"]] = (
                run["test_accuracy"]
            )
    for row in rows:
        if not row["plain"] and (row["alpha"], row["beta"], row.get("max_grad_norm", 0.0)) == (0.5, 0.5, 0.0):
            key = (row["dataset"], row["init"], row["depth"], row["lr"], row["steps"])
            nets[key][f"loop, {row.get('batches', 'epoch')} batches"][row["seed"]] = row["test_accuracy"]
    lines = ["| net | training | n | test acc. % (mean ± s.e.) | per seed |", "| --- | --- | --- | --- | --- |"]
    for (dataset, init, depth, lr, steps), arms in sorted(nets.items(), key=lambda kv: str(kv[0])):
        if len(arms) < 2:
            continue
        for arm, by_seed in sorted(arms.items(), key=lambda kv: kv[0] != "LBETrainer"):
            accs = [by_seed[s] for s in sorted(by_seed)]
            seeds = " / ".join(f"{by_seed[s]:.1f} (s{s})" for s in sorted(by_seed))
            lines.append(
                f"| {dataset} {init} d{depth}, lr {lr:g}, {steps} steps | {arm} | {len(accs)} | {_mean_se(accs)} "
                f"| {seeds} |"
            )
    return "\n".join(lines)
