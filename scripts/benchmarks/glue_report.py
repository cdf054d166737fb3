"""Statistics and the markdown report of the GLUE benchmark (`scripts/benchmarks/glue.py`), from its JSON records only.

A record is one finished run (one line of `docs/results/glue_budget.jsonl`): task, arm ("baseline", "lbe", "auto"),
alpha, beta, lr, epochs (or max_steps), seed, role ("compare" or "select"), metrics (GLUE keys without the `eval_`
prefix, fractions), constant_scores (each metric of the best constant predictor on the same validation rows),
eval_curve, wall_s, median_step_s, load_start/load_end, device and the command that made it.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

# The shared data sets beside this checkout (glue/, mnist/), unless LBE_DATA_DIR says otherwise.
os.environ.setdefault("LBE_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))


# Peer et al., TMLR 2022, Table 4: LBE minus baseline, BERT-base, GLUE validation, points.
PAPER_DELTAS = {"rte": -0.08, "mrpc": 0.55, "cola": 1.07}
METRICS = {"rte": ("accuracy",), "mrpc": ("f1", "accuracy"), "cola": ("matthews_correlation",)}
MAIN_METRIC = {"rte": "accuracy", "mrpc": "accuracy", "cola": "matthews_correlation"}
ARM_ORDER = {"baseline": 0, "lbe": 1, "auto": 2}
LR_ARM_NAMES = {"baseline": "baseline", "lbe": "LBE (each lr's grid choice)", "auto": 'alpha="auto"'}
# A baseline whose main metric is not this many points above the best constant predictor has not learned the task.
LEARN_MARGIN = 1.0


def t_interval(values: list[float]) -> dict:
    """n, mean, standard error and 95% t-interval (lo, hi) of `values`; se/lo/hi are None for fewer than 2."""
    from scipy.stats import t

    a = np.asarray(values, dtype=float)
    n = len(a)
    if n == 0:
        return {"n": 0, "mean": None, "se": None, "lo": None, "hi": None}
    mean = float(a.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "se": None, "lo": None, "hi": None}
    se = float(a.std(ddof=1) / math.sqrt(n))
    half = float(t.ppf(0.975, n - 1)) * se
    return {"n": n, "mean": mean, "se": se, "lo": mean - half, "hi": mean + half}


def paired_differences(arm: dict[int, float], reference: dict[int, float]) -> tuple[list[int], list[float], dict]:
    """Seeds both arms ran, arm minus reference per seed, and `t_interval` of those differences."""
    seeds = sorted(set(arm) & set(reference))
    diffs = [arm[s] - reference[s] for s in seeds]
    return seeds, diffs, t_interval(diffs)


def points(record: dict, key: str) -> float:
    """A metric in points (fractions x 100), as GLUE reports accuracy, F1 and Matthews correlation."""
    return 100.0 * record["metrics"][key]


def learned(record: dict, margin: float = LEARN_MARGIN) -> bool:
    """Whether a run's main metric beats the best constant predictor (majority class) by more than `margin` points."""
    key = MAIN_METRIC[record["task"]]
    return points(record, key) > 100.0 * record["constant_scores"][key] + margin


def frozen_targets(record: dict) -> bool:
    """Whether an LBE run's alphas ended exactly where they started (alpha == alpha_min under the old clamp, which
    passed no gradient at the tie): its targets were fixed, not learned."""
    alphas = record.get("final_alphas")
    return record["arm"] == "lbe" and bool(alphas) and all(a == float(record["alpha"]) for a in alphas)


def _point(alpha, beta, frozen: bool) -> str:
    return f"alpha {alpha}{' fixed' if frozen else ''}, beta {beta}"


def arm_label(record: dict) -> str:
    if record["arm"] == "baseline":
        return "baseline (beta 0)"
    return f"LBE ({_point(record['alpha'], record['beta'], frozen_targets(record))})"


def setting_key(record: dict) -> tuple:
    """Runs comparable with each other: same task, budget, lr, batch and device."""
    budget = f"{record['max_steps']} steps" if record.get("max_steps") else f"{record['epochs']:g} epochs"
    rows, eval_rows = record.get("max_train_samples"), record.get("max_eval_samples")
    budget += f" on {rows} training rows" if rows else ""
    budget += f", first {eval_rows} validation rows" if eval_rows else ""
    return (
        record["task"],
        budget,
        record["lr"],
        record.get("batch_size"),
        record.get("device", "cpu"),
    )


def _fmt(x: float | None, digits: int = 1, sign: bool = False) -> str:
    if x is None:
        return "-"
    x = 0.0 if abs(x) < 0.5 * 10**-digits else x  # no "-0.0"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _interval(stats: dict, sign: bool = False) -> str:
    if stats["lo"] is None:
        return "- (1 seed)" if stats["n"] == 1 else "-"
    return f"[{_fmt(stats['lo'], sign=sign)}, {_fmt(stats['hi'], sign=sign)}]"


def conclusion(stats: dict, paper: float | None, reference_learned: bool, reference: float, constant: float) -> str:
    """One plain sentence on what a paired interval (arm minus reference, points) allows one to conclude."""
    if not reference_learned:
        return (
            f"uninformative: the reference arm ({reference:.1f}) does not beat the majority class ({constant:.1f}) by "
            f"{LEARN_MARGIN:g} point, so nothing can be concluded (in particular not 'no difference')"
        )
    if stats["lo"] is None:
        return "too few paired seeds for an interval"
    paper_text = ""
    if paper is not None:
        inside = stats["lo"] <= paper <= stats["hi"]
        paper_text = f"; the paper's {paper:+.2f} is {'inside' if inside else 'outside'} it"
    if abs(stats["lo"]) < 1e-9 and abs(stats["hi"]) < 1e-9:
        return (
            "the arm ends on the reference's value on every seed: its term barely changed training here, which shows "
            f"neither a gain nor a loss (nor that the term is inactive: see its logged loss){paper_text}"
        )
    if stats["lo"] > 0:
        return f"the arm is better, by {stats['lo']:.1f} to {stats['hi']:.1f} points (95%){paper_text}"
    if stats["hi"] < 0:
        return f"the arm is worse, by {-stats['hi']:.1f} to {-stats['lo']:.1f} points (95%){paper_text}"
    return (
        f"the interval contains 0: the difference may be anything from {stats['lo']:+.1f} to {stats['hi']:+.1f} "
        f"points; neither a gain nor a loss is shown{paper_text}"
    )


def comparisons(labels: list[str]) -> list[tuple[str, str]]:
    """(arm, reference) pairs: every LBE arm against the baseline, and alpha=auto against each numeric alpha."""
    base = "baseline (beta 0)"
    pairs = [(label, base) for label in labels if label != base and base in labels]
    autos = [label for label in labels if "alpha auto" in label]
    pairs += [(a, label) for a in autos for label in labels if label not in (base, *autos)]
    return pairs


def selection(records: list[dict]) -> dict[tuple, dict]:
    """Per setting, the grid point chosen on the validation split: the best mean main metric over the selection
    seeds (ties: the first in the order run). Returns {setting: {"alpha", "beta", "scores": {(alpha, beta): mean}}}."""
    grid: dict[tuple, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("role") == "select":
            grid[setting_key(r)][(r["alpha"], r["beta"])].append(points(r, MAIN_METRIC[r["task"]]))
    chosen = {}
    for setting, scores in grid.items():
        means = {point: float(np.mean(v)) for point, v in scores.items()}
        alpha, beta = max(means, key=means.get)  # max keeps the first of equal values
        chosen[setting] = {"alpha": alpha, "beta": beta, "scores": means}
    return chosen


def _curve_text(record: dict, key: str) -> str:
    curve = record.get("eval_curve") or []
    return ", ".join(f"{c['step']}: {100 * c[key]:.1f}" for c in curve if key in c) or "-"


def _minutes(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{np.mean(values) / 60:.1f} ({min(values) / 60:.1f}-{max(values) / 60:.1f})"


def setting_section(setting: tuple, runs: list[dict], chosen: dict | None) -> list[str]:
    """Markdown for one task at one budget: per-arm table, paired differences, timing, baseline curve."""
    task, budget, lr, batch, device = setting
    lines = [f"### {task.upper()}: {budget}, lr {lr:g}, batch {batch}, {device}", ""]
    compare = [r for r in runs if r.get("role", "compare") == "compare"]
    if chosen:
        scores = ", ".join(f"alpha {a} beta {b}: {v:.1f}" for (a, b), v in chosen["scores"].items())
        spread = max(chosen["scores"].values()) - min(chosen["scores"].values())
        spread_text = f"{spread:.1f} points"
        rows = next((r["eval_rows"] for r in runs if r.get("eval_rows")), None)
        if rows and MAIN_METRIC[task] == "accuracy":
            spread_text += f", {round(spread * rows / 100)} of the {rows} validation examples"
        lines += [
            f"Grid chosen on the validation split (selection seeds only, main metric {MAIN_METRIC[task]}): {scores}; "
            f"chosen alpha {chosen['alpha']}, beta {chosen['beta']}. The grid's best and worst points differ by "
            f"{spread_text}; compare that with the seed-to-seed spread of the arms below before reading the choice "
            "as a real preference.",
            "",
        ]
    arms: dict[str, list[dict]] = defaultdict(list)
    for arm_runs in grouped(compare, lambda r: r["arm"]).values():
        for r in arm_runs:
            arms[arm_label(r)].append(r)
    if not arms:
        return lines + ["No comparison runs finished yet.", ""]
    constant = {k: 100 * compare[0]["constant_scores"][k] for k in METRICS[task]}
    lines += [
        "| metric | arm | seeds | mean | s.e. | 95% t-interval | per seed | majority class |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in METRICS[task]:
        for label, rs in arms.items():
            rs = sorted(rs, key=lambda r: r["seed"])
            stats = t_interval([points(r, key) for r in rs])
            per_seed = ", ".join(f"{points(r, key):.1f}" + ("" if learned(r) else "*") for r in rs)
            lines.append(
                f"| {key} | {label} | {stats['n']} | {_fmt(stats['mean'])} | {_fmt(stats['se'])} | "
                f"{_interval(stats)} | {per_seed} | {constant[key]:.1f} |"
            )
    lines.append("")
    if not all(learned(r) for r in compare):
        lines += ["\\* this run does not beat the majority class by 1 point on the main metric.", ""]

    base = {r["seed"]: r for r in arms.get("baseline (beta 0)", [])}
    pairs = comparisons(list(arms))
    if pairs:
        lines += [
            "Paired by seed (same head initialisation, data order and dropout), arm minus reference, points; the "
            "step-time ratio is the median over seeds of the arm's median training-step time over the reference's; "
            "the paper's Table 4 delta (LBE minus baseline, BERT-base) stands beside the main metric"
            + (f" ({MAIN_METRIC[task]}, the metric the grid selects on)" if len(METRICS[task]) > 1 else "")
            + ":",
            "",
            "| metric | arm - reference | seeds | mean | 95% t-interval | per seed | step-time ratio (seeds) "
            "| paper | what the interval allows |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for key in METRICS[task]:
            for label, ref_label in pairs:
                p = paired(task, arms[label], arms[ref_label], key)
                ratio = f"{np.median(p['ratios']):.3f} ({len(p['ratios'])})" if p["ratios"] else "-"
                lines.append(
                    f"| {key} | {label} - {ref_label} | {len(p['seeds'])} | {_fmt(p['stats']['mean'], sign=True)} | "
                    f"{_interval(p['stats'], sign=True)} | {', '.join(f'{d:+.1f}' for d in p['diffs'])} | {ratio} | "
                    f"{_fmt(p['paper'], 2, sign=True)} | {p['said']} |"
                )
        lines.append("")

    timed = [r for r in compare if r.get("wall_s")]
    if timed:
        lines += [
            "| arm | runs | wall time per run, min (range) | median step time, s | load average at start / end |",
            "| --- | --- | --- | --- | --- |",
        ]
        for label, rs in arms.items():
            rs = [r for r in rs if r.get("wall_s")]
            if not rs:
                continue
            steps = [r["median_step_s"] for r in rs if r.get("median_step_s")]
            loads = [f"{r['load_start'][0]:.1f} / {r['load_end'][0]:.1f}" for r in rs if r.get("load_start")]
            lines.append(
                f"| {label} | {len(rs)} | {_minutes([r['wall_s'] for r in rs])} | "
                f"{_fmt(float(np.median(steps)), 3) if steps else '-'} | {', '.join(loads) or '-'} |"
            )
        lines.append("")
    curves = [r for r in sorted(base.values(), key=lambda r: r["seed"]) if r.get("eval_curve")]
    if curves:
        key = MAIN_METRIC[task]
        lines += [f"Baseline learning curve (validation {key}, points, at step):", ""]
        lines += [f"- seed {r['seed']}: {_curve_text(r, 'eval_' + key)}" for r in curves]
        lines.append("")
    return lines


def paired(task: str, arm_runs: list[dict], ref_runs: list[dict], key: str) -> dict:
    """One arm against a reference on metric `key`, paired by seed: seeds, diffs, stats (`t_interval`), the arm's
    and reference's means over those seeds, step-time ratios per seed, the paper's delta where it applies (the main
    metric against the baseline) and the sentence `conclusion` says."""
    arm = {r["seed"]: r for r in arm_runs}
    ref = {r["seed"]: r for r in ref_runs}
    seeds, diffs, stats = paired_differences(
        {s: points(r, key) for s, r in arm.items()}, {s: points(r, key) for s, r in ref.items()}
    )
    ratios = [
        arm[s]["median_step_s"] / ref[s]["median_step_s"]
        for s in seeds
        if arm[s].get("median_step_s") and ref[s].get("median_step_s")
    ]
    baseline = ref_runs[0]["arm"] == "baseline"
    paper = PAPER_DELTAS.get(task) if key == MAIN_METRIC[task] and baseline else None
    ref_mean = _mean_record([ref[s] for s in seeds]) if seeds else _mean_record(list(ref.values()))
    constant = 100 * ref_runs[0]["constant_scores"][key]
    said = conclusion(stats, paper, learned({"task": task, **ref_mean}), 100 * ref_mean["metrics"][key], constant)
    means = [float(np.mean([points(runs[s], key) for s in seeds])) if seeds else None for runs in (arm, ref)]
    return dict(seeds=seeds, diffs=diffs, stats=stats, ratios=ratios, paper=paper, said=said, means=means)


def summary_table(records: list[dict]) -> list[str]:
    """One row per task, budget and metric: the chosen LBE point and alpha="auto", each minus the baseline over the
    paired seeds, beside the paper's Table 4 delta (set beside the main metric only)."""
    rows = []
    for setting, runs in grouped(_compare_runs(records), setting_key).items():
        task, budget, lr = setting[:3]
        by_arm = grouped(runs, lambda r: r["arm"])
        if "baseline" not in by_arm or "lbe" not in by_arm:
            continue
        lbe = sorted({(r["alpha"], r["beta"], frozen_targets(r)) for r in by_arm["lbe"]}, key=str)
        for key in METRICS[task]:
            p = paired(task, by_arm["lbe"], by_arm["baseline"], key)
            auto = paired(task, by_arm["auto"], by_arm["baseline"], key) if by_arm.get("auto") else None
            auto_text = (
                f"{_fmt(auto['stats']['mean'], sign=True)} {_interval(auto['stats'], sign=True)}" if auto else "-"
            )
            point = "; ".join(_point(a, b, frozen) for a, b, frozen in lbe)
            rows.append(
                f"| {task.upper()} | {budget}, lr {lr:g} | {key} | {len(p['seeds'])} | {_fmt(p['means'][1])} | "
                f"{_fmt(p['means'][0])} ({point}) | {_fmt(p['stats']['mean'], sign=True)} "
                f"{_interval(p['stats'], sign=True)} | {auto_text} | {_fmt(p['paper'], 2, sign=True)} | {p['said']} |"
            )
    if not rows:
        return []
    return [
        "## Summary beside the paper's Table 4",
        "",
        "Per task and budget, over the seeds both arms ran: the baseline's mean, the chosen LBE point's mean, LBE "
        'minus baseline and alpha="auto" minus baseline (mean and 95% t-interval of the paired differences, '
        "points), and the paper's BERT-base delta beside the main metric. The sections below have every run. "
        '"alpha 0.2 fixed": those runs started at alpha = alpha_min = 0.2 with a version of lbe_hf whose target '
        "max(alpha_min, |alpha|) passed no gradient at that tie, so their alphas never moved (each record's "
        "final alphas equal 0.2): they measure LBE with a fixed target of 0.2, not with learned targets. lbe_hf now "
        "passes half the gradient at the tie, as `torch.maximum` in the authors' code.",
        "",
        "| task | budget | metric | seeds | baseline | LBE | LBE - baseline [95%] | auto - baseline [95%] | paper "
        "| what the LBE interval allows |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]


def lr_table(records: list[dict]) -> list[str]:
    """Where a task ran at more than one lr (same budget otherwise): per arm and metric, the mean at each lr and the
    paired difference by seed (each other lr minus the first lr in sorted order). The LBE arm at each lr is that lr's
    own grid choice, so its row compares the method as a user would tune it, not one fixed point."""
    rows = []
    # Settings without their lr (task, budget, batch, device), then the runs of each lr.
    for (task, budget, _, _), runs in grouped(_compare_runs(records), lambda r: _without(setting_key(r), 2)).items():
        by_lr = grouped(runs, lambda r: r["lr"])
        if len(by_lr) < 2:
            continue
        lrs = sorted(by_lr)
        for arm in grouped(runs, lambda r: r["arm"]):
            for key in METRICS[task]:
                runs = {lr: {r["seed"]: points(r, key) for r in by_lr[lr] if r["arm"] == arm} for lr in lrs}
                for lr in lrs[1:]:
                    seeds, diffs, stats = paired_differences(runs[lr], runs[lrs[0]])
                    if not seeds:
                        continue
                    means = [f"{x:g}: {np.mean([runs[x][s] for s in seeds]):.1f}" for x in (lrs[0], lr)]
                    rows.append(
                        f"| {task.upper()} | {budget} | {LR_ARM_NAMES.get(arm, arm)} | {key} | {len(seeds)} | "
                        f"{means[0]} | {means[1]} | "
                        f"{_fmt(stats['mean'], sign=True)} {_interval(stats, sign=True)} | "
                        f"{', '.join(f'{d:+.1f}' for d in diffs)} |"
                    )
    if not rows:
        return []
    return [
        "## Learning-rate sensitivity",
        "",
        "The same task and budget at two learning rates, each arm paired by seed across them (same head "
        "initialisation, data order and dropout); the LBE arm is each lr's own grid choice.",
        "",
        "| task | budget | arm | metric | seeds | smaller lr: mean | larger lr: mean | larger minus smaller [95%] "
        "| per seed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]


def grouped(records: list[dict], key) -> dict:
    """`records` grouped by `key(record)`, groups in task order (RTE, MRPC, CoLA) where the key starts with the task,
    arms in `ARM_ORDER` where it is an arm, else in order of first appearance."""

    def rank(k):
        head = k[0] if isinstance(k, tuple) else k
        return list(METRICS).index(head) if head in METRICS else ARM_ORDER.get(head, len(ARM_ORDER))

    groups: dict = defaultdict(list)
    for r in records:
        groups[key(r)].append(r)
    return {k: groups[k] for k in sorted(groups, key=rank)}


def _compare_runs(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("role", "compare") == "compare"]


def _without(values: tuple, index: int) -> tuple:
    return values[:index] + values[index + 1 :]


def _mean_record(records: list[dict]) -> dict:
    """A pseudo-record with the mean metrics of `records` (for the majority-class test of an arm)."""
    keys = records[0]["metrics"]
    return {
        "metrics": {k: float(np.mean([r["metrics"][k] for r in records])) for k in keys},
        "constant_scores": records[0]["constant_scores"],
    }


def commands_block(records: list[dict]) -> list[str]:
    """The distinct benchmark commands that produced `records`, in the order first used."""
    seen: list[str] = []
    for r in records:
        command = r.get("benchmark_command")
        if command and command not in seen:
            seen.append(command)
    return ["```", *seen, "```"] if seen else []


def results_sections(records: list[dict]) -> list[str]:
    """One section per task and budget (in task order RTE, MRPC, CoLA, then budget order as run)."""
    chosen = selection(records)
    lines: list[str] = []
    for setting, runs in grouped(records, setting_key).items():
        lines += setting_section(setting, runs, chosen.get(setting))
    return lines


def read_records(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_reports(
    results: str | Path,
    report_path: str | Path,
    short_budget_results: str | Path | None,
    auto_alpha_results: str | Path | None,
    auto_alpha_report: str | Path | None,
    model_name: str,
) -> None:
    """Writes `report_path` from the campaign's `results` (and the short-budget section from `short_budget_results`),
    and `auto_alpha_report` from `auto_alpha_results`; a falsy or missing path leaves that part out."""
    header = [
        "# GLUE: all-MiniLM-L6-v2 with and without LBE",
        "",
        "Generated by `python scripts/benchmarks/glue.py --report` from the JSON records in `docs/results/` (one "
        "object per finished run, each with the command that made it); the campaign's queue is "
        "`scripts/benchmarks/glue_campaign.sh`. Model: " + model_name + ", fine-tuned in full with LBETrainer "
        "(`--lbe_beta 0` is the baseline), GLUE validation split, metrics as GLUE (RTE accuracy, MRPC F1 and "
        "accuracy, CoLA Matthews correlation), in points. The paper's Table 4 (BERT-base) reports LBE minus baseline "
        "of -0.08 (RTE), +0.55 (MRPC) and +1.07 (CoLA) points, with standard errors of 0.7-1.5 points.",
        "",
    ]
    budget = read_records(results)
    header += summary_table(budget) + lr_table(budget)
    header += [
        "## The campaign's runs",
        "",
        "Each section is one task at one budget (its heading); the queue runs the full training sets for 3 epochs "
        "(more where a task's baseline needs it), batch 32, dynamic padding up to 128 tokens, lr 5e-5 (and 3e-5 on "
        "MRPC). The LBE arm is the grid point (alpha {0.2, 0.5} x beta {0.005, 0.05}) with the best validation "
        'main metric on selection seed 0, which is not among the reported seeds; alpha="auto" runs at the chosen '
        "beta. Step times are medians over a run's training steps (evaluations excluded), measured on a shared "
        "machine whose load average each run records.",
        "",
    ]
    body = (
        results_sections(budget)
        if budget
        else [
            "No run of the campaign has finished yet; it starts with "
            "`nohup setsid bash scripts/benchmarks/glue_campaign.sh >> runs/glue_campaign.log 2>&1 &`.",
            "",
        ]
    )
    commands = commands_block(budget)
    if commands:
        body += ["Commands that made these rows:", "", *commands, ""]
    lines = header + body
    if short_budget_results and Path(short_budget_results).is_file():
        short = read_records(short_budget_results)
        lines += [
            "## Short budget: 30 steps (earlier runs)",
            "",
            "30 steps of batch 16 are too few for either arm to learn: on MRPC every run predicts the majority "
            "class, and RTE stays near chance, so these rows say nothing about LBE. " + short[0].get("note", ""),
            "",
            *results_sections(short),
            "Command:",
            "",
            *commands_block(short),
            "",
        ]
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    print(f"wrote {report_path}")
    if auto_alpha_report and auto_alpha_results and Path(auto_alpha_results).is_file():
        runs = read_records(auto_alpha_results)
        text = [
            '# alpha="auto" on MiniLM/RTE (150 steps)',
            "",
            "Generated by `python scripts/benchmarks/glue.py --report` from "
            f"`docs/results/{Path(auto_alpha_results).name}`. Model: {model_name}; 150 steps of batch 16, a "
            "near-chance budget for RTE, so the comparison shows how the arms' entropy targets behave, not what they "
            'do once the model learns; the alpha="auto" arm at the real budget is in '
            "[glue_results.md](glue_results.md). " + runs[0].get("note", ""),
            "",
            *results_sections(runs),
            "Command:",
            "",
            *commands_block(runs),
        ]
        Path(auto_alpha_report).write_text("\n".join(text).rstrip() + "\n", encoding="utf-8")
        print(f"wrote {auto_alpha_report}")
