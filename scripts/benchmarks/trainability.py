"""Trainability of deep vanilla FNNs with and without LBE (the paper's Hypothesis 1 and Table 1, on a CPU budget).

Runs every combination of the given datasets, inits, depths, seeds and LBE settings (plain Trainer vs LBETrainer,
same seed, data and optimiser), one after the other, appending each finished run to `--results` (JSON), so an
interrupted sweep keeps what it measured and a rerun skips runs already there. With `--run_dir`, each run also
writes Trainer checkpoints into `<run_dir>/<run key>` and a restarted sweep resumes an unfinished run from its
last complete checkpoint (the folder is deleted once the run's result is written). `--report` turns the JSON files
into docs/trainability.md and the plots.

    python scripts/benchmarks/trainability.py --datasets mnist --inits torch --depths 30 50 --seeds 0
    python scripts/benchmarks/trainability.py --inits he --depths 10 30 --lbe_settings plain default
    python scripts/benchmarks/trainability.py --epochs 100 --max_grad_norm 1 --run_dir runs/trainability \
        --results docs/results/trainability_budget.json
    python scripts/benchmarks/trainability.py --report
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from bench_fnn import DATASETS, FNNRun, load_split
from bench_report import auto_alpha_table, write_trainability_report
from trainability_summary import alternatives_table, reference_table, targets_table, tried_table

from lbe_hf.models.fnn import INITS

# The shared data sets beside this checkout (glue/, mnist/), unless LBE_DATA_DIR says otherwise.
os.environ.setdefault("LBE_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))


DOCS = Path(__file__).resolve().parents[2] / "docs"
DEFAULT_RESULTS = DOCS / "results" / "trainability_results.json"  # the 600-step sweep
BUDGET_RESULTS = DOCS / "results" / "trainability_budget.json"  # the paper-budget (epochs) campaign
# LBETrainer and the plain-PyTorch loop (reference_loop.py) on the same He depth-100 nets, beside the budget file
REFERENCE_TRAINER = "trainability_reference_compare.json"
HISTORY_KEYS = ("probe_entropy", "probe_effective_rank", "probe_constant_fraction", "log_history")
REFERENCE_LOOP = "reference_loop_he100.jsonl"


def parse_setting(text: str) -> dict | None:
    """'plain' -> None; 'default' -> {} (BatchEntropyConfig defaults); 'alpha=0.5,beta=0.1' -> overrides."""
    if text == "plain":
        return None
    if text == "default":
        return {}
    out = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if not value:
            raise argparse.ArgumentTypeError(f"LBE setting {text!r}: expected plain, default or key=value,...")
        try:
            out[key] = float(value)
        except ValueError:
            out[key] = value
    return out


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["mnist"], choices=DATASETS)
    p.add_argument("--inits", nargs="+", default=["torch"], choices=INITS)
    p.add_argument("--residual", action="store_true", help="x + f(x) blocks (FNNConfig(residual=True)): the ceiling")
    p.add_argument(
        "--augment",
        action="store_true",
        help="the authors' MNIST training augmentation (random affine, brightness/contrast jitter; mnist, fashion)",
    )
    p.add_argument("--depths", nargs="+", type=int, default=[30, 50])
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-3])
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=600, help="optimizer steps (max_steps)")
    budget.add_argument("--epochs", type=int, default=None, help="epochs (num_train_epochs) instead of --steps")
    p.add_argument("--batch_size", type=int, default=512)
    p.add_argument(
        "--max_grad_norm", type=float, default=1.0, help="gradient clipping (Trainer's default 1.0); 0 = off"
    )
    p.add_argument(
        "--lr_scheduler",
        default="constant",
        help="lr_scheduler_type: 'constant' (the paper's Adam, the default here) or Trainer's own default 'linear'",
    )
    p.add_argument("--warmup_ratio", type=float, default=0.0, help="linear warm-up over this fraction of the run")
    p.add_argument(
        "--run_dir",
        type=Path,
        default=None,
        help="checkpoint each run into RUN_DIR/<run key> and resume it from there after a kill",
    )
    p.add_argument("--save_every", type=int, default=None, help="steps between checkpoints (default: 10 per run)")
    p.add_argument("--curve_every", type=int, default=None, help="steps between test-accuracy points (default: 20)")
    p.add_argument(
        "--lbe_settings",
        nargs="+",
        type=parse_setting,
        default=[None, {}],
        help="'plain' (transformers.Trainer), 'default' (BatchEntropyConfig()) or overrides like alpha=0.5,beta=0.1",
    )
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the machine is shared)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    p.add_argument(
        "--probes_dir",
        type=Path,
        default=None,
        help="write each run's per-layer probe histories and Trainer log to DIR/<run key>.json instead of --results",
    )
    p.add_argument(
        "--save_models",
        type=Path,
        default=None,
        metavar="DIR",
        help="also save each trained model in DIR/<run key, '/' -> '_'> (e.g. for `lbe-hf diagnose`)",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="only write DIR/trainability.md and plots (DIR: --results' folder, or docs/ for the default files): "
        "the --budget_results runs first, then the --results (600-step) runs",
    )
    p.add_argument("--budget_results", type=Path, default=None, help=f"with --report (default {BUDGET_RESULTS.name})")
    p.add_argument(
        "--auto_table",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="only print the alpha=auto vs grid table of these result files (for --datasets[0])",
    )
    return p


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


@contextlib.contextmanager
def results_lock(path: Path):
    """An exclusive lock on `<path>.lock` while a sweep reads, updates and replaces the results file."""
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def budget_summary(budget: dict, folder: Path) -> list[str]:
    """The report's summary sections: the targets against the best setting measured, then LBETrainer against the
    plain-PyTorch loop where both were run (their files in `folder`)."""
    if not budget:
        return []
    sections = [
        "### Targets\n",
        "Each target of the campaign against the best LBE setting measured on its net, of all settings and "
        "optimisations in the table below (picked on the test split, so optimistic), and plain `Trainer` on the "
        "same optimisation. The best setting is the one that meets most of the target (LBE's level and standard "
        "error; plain at chance, below 15 %, where the target asks for it; 3 seeds), then the highest mean over "
        "seeds: a setting under which plain training learns as well is no rescue. Residual nets are left out: they "
        "are the ceiling, not the method.\n",
        targets_table(budget) + "\n",
    ]
    sections += _section(
        "What was tried where a target is not met",
        tried_table(budget),
        "Every LBE setting measured on the net of each target not met on 3 seeds, best mean first (the "
        "levers: budget, clipping, schedule, warm-up, lr, alpha / beta, init and width), with the best point of "
        "each run's test curve and the step at which the curve first reached 50 % (per seed), and plain "
        "`Trainer` on the same optimisation where it was run.",
    )
    sections += _section(
        "The alternatives",
        alternatives_table(budget),
        "What a user would otherwise try on the same nets and optimisation: He, orthogonal (gain sqrt 2) and "
        "LSUV init, each with plain `Trainer` and with LBE (`BatchEntropyConfig()` defaults), and the same He "
        "net with residual connections (x + f(x) around every hidden block) as the architectural ceiling. Test "
        "accuracy %, mean ± s.e. over n seeds. Made by sections (g') of `scripts/benchmarks/campaign_budget.sh`.",
    )
    sections += _section(
        "LBETrainer against a plain PyTorch loop",
        reference_table(folder / REFERENCE_TRAINER, folder / REFERENCE_LOOP),
        "The same He-init nets and data, BatchEntropyConfig() defaults (alpha 0.5, beta 0.5), Adam 1e-3, no "
        "clipping, 600 steps: `LBETrainer` (its sampler: a shuffled pass per epoch) against "
        "`scripts/benchmarks/reference_loop.py`, eq. 3-6 written out in plain PyTorch with `torch.var`, either "
        "a permutation per epoch or every batch drawn with replacement. The loop's runs share each seed's "
        "initial weights with LBETrainer's, not its batch order. Made by lane 2 of "
        "`scripts/benchmarks/campaign_budget.sh`, section (h).",
    )
    return sections


def _section(heading: str, table: str, text: str) -> list[str]:
    """A report section (heading, text, markdown table), or nothing while the table has no rows below its header."""
    return [f"### {heading}\n", text + "\n", table + "\n"] if table.count("\n") > 1 else []


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    if args.report:
        budget = args.budget_results or (BUDGET_RESULTS if args.results == DEFAULT_RESULTS else None)
        folder = DOCS if args.results == DEFAULT_RESULTS else args.results.parent
        summary = budget_summary(load_results(budget), budget.parent) if budget else []
        budget = budget and load_results(budget)
        write_trainability_report(load_results(args.results), folder, budget=budget, summary=summary)
        return
    if args.auto_table:
        merged = {k: v for path in args.auto_table for k, v in load_results(path).items()}
        print(auto_alpha_table(merged, args.datasets[0]))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    for dataset in args.datasets:
        for init in args.inits:
            for depth in args.depths:
                for lr in args.lrs:
                    for seed in args.seeds:
                        for setting in args.lbe_settings:
                            run = FNNRun(
                                dataset, depth, init, seed, lr, setting, args.steps, args.batch_size,
                                epochs=args.epochs, max_grad_norm=args.max_grad_norm,
                                lr_scheduler=args.lr_scheduler, warmup_ratio=args.warmup_ratio, width=args.width,
                                residual=args.residual, augment=args.augment,
                            )  # fmt: skip
                            execute(run, args)


def execute(run: FNNRun, args: argparse.Namespace) -> None:
    """Runs one FNNRun unless --results has it, then appends its result."""
    done = load_results(args.results)
    if run.key in done:
        print(f"skip (done) {run.key}: {done[run.key]['test_accuracy']:.1f}%", flush=True)
        return
    folder = args.save_models and str(args.save_models / run.key.replace("/", "_"))
    total = run.total_steps(len(load_split(run.dataset)[0]))
    logging_steps = max(25, total // 32)  # the probe runs at each log: ~32 points keep a long run's JSON small
    if args.run_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            res = run.execute(tmp, logging_steps, save_to=folder, curve_every=args.curve_every, log=_print)
    else:
        run_dir = args.run_dir / run.key.replace("/", "_")
        save_every = args.save_every or max(logging_steps, total // 10 // logging_steps * logging_steps)
        res = run.execute(
            str(run_dir), logging_steps, save_to=folder, save_every=save_every, curve_every=args.curve_every,
            log=_print,
        )  # fmt: skip
    if args.probes_dir is not None:  # the histories are most of a deep run's record
        args.probes_dir.mkdir(parents=True, exist_ok=True)
        probes = {k: res.pop(k) for k in HISTORY_KEYS if k in res}
        (args.probes_dir / (run.key.replace("/", "_") + ".json")).write_text(json.dumps(probes))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with results_lock(args.results):  # two sweeps may share one results file
        done = load_results(args.results)  # re-read: another sweep may have appended
        done[run.key] = {**run.__dict__, "results": None, **res}
        tmp_path = args.results.with_suffix(f".json.{os.getpid()}.tmp")
        tmp_path.write_text(json.dumps(done))  # compact: per-layer histories are long
        os.replace(tmp_path, args.results)  # a kill mid-write leaves the old file whole
    if args.run_dir is not None:
        shutil.rmtree(args.run_dir / run.key.replace("/", "_"), ignore_errors=True)
    print(
        f"{run.key}: test {res['test_accuracy']:.1f}% train {res['train_accuracy']:.1f}% "
        f"({res['median_step_s'] * 1000:.0f} ms/step, {res['seconds']:.0f} s)",
        flush=True,
    )


def _print(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    main()
