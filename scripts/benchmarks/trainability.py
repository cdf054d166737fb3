"""Trainability of deep vanilla FNNs with and without LBE (the paper's Hypothesis 1 and Table 1, on a CPU budget).

Runs every combination of the given datasets, inits, depths, seeds and LBE settings (plain Trainer vs LBETrainer,
same seed, data and optimiser), one after the other, appending each finished run to `--results` (JSON), so an
interrupted sweep keeps what it measured and a rerun skips runs already there. `--report` turns the JSON into the
markdown table and plots in docs/.

    python scripts/benchmarks/trainability.py --datasets mnist --inits torch --depths 30 50 --seeds 0
    python scripts/benchmarks/trainability.py --inits he --depths 10 30 --lbe_settings plain default
    python scripts/benchmarks/trainability.py --report
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch

from lbe_hf.benchmark import DATASETS, FNNRun
from lbe_hf.benchmark_report import auto_alpha_table, write_trainability_report

DEFAULT_RESULTS = Path(__file__).resolve().parents[2] / "docs" / "trainability_results.json"


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
    p.add_argument("--inits", nargs="+", default=["torch"], choices=["torch", "he"])
    p.add_argument("--depths", nargs="+", type=int, default=[30, 50])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-3])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch_size", type=int, default=512)
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
        "--save_models",
        type=Path,
        default=None,
        metavar="DIR",
        help="also save each trained model in DIR/<run key, '/' -> '_'> (e.g. for `lbe-hf diagnose`)",
    )
    p.add_argument("--report", action="store_true", help="only write docs/ tables and plots from --results")
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


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    if args.report:
        write_trainability_report(load_results(args.results), args.results.parent)
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
                            run = FNNRun(dataset, depth, init, seed, lr, setting, args.steps, args.batch_size)
                            done = load_results(args.results)
                            if run.key in done:
                                print(f"skip (done) {run.key}: {done[run.key]['test_accuracy']:.1f}%", flush=True)
                                continue
                            with tempfile.TemporaryDirectory() as tmp:
                                folder = args.save_models and str(args.save_models / run.key.replace("/", "_"))
                                res = run.execute(tmp, save_to=folder)
                            done = load_results(args.results)  # re-read: another sweep may have appended
                            done[run.key] = {**run.__dict__, "results": None, **res}
                            args.results.parent.mkdir(parents=True, exist_ok=True)
                            args.results.write_text(json.dumps(done))  # compact: per-layer histories are long
                            print(
                                f"{run.key}: test {res['test_accuracy']:.1f}% train {res['train_accuracy']:.1f}% "
                                f"({res['median_step_s'] * 1000:.0f} ms/step, {res['seconds']:.0f} s)",
                                flush=True,
                            )


if __name__ == "__main__":
    main()
