"""`lbe-hf demo`: a deep vanilla FNN that does not train, and the same net with LBE that does.

Trains `FNNForImageClassification(depth=20, init="torch")` on scikit-learn's bundled digits twice with
`LBETrainer`: once with `beta=0` (the LBE term is exactly zero: a plain run) and once with LBE, prints a table
(test accuracy, last hidden layer's batch entropy on the test set) and writes into `--output_dir`: the table
(`results.md`), a JSON summary (`results.json`, settings and numbers) and a PNG of batch entropy per layer over
training (the paper's Fig. 2/6). Offline, CPU, one thread by default (`--threads`).

The defaults (depth 20, 1000 steps) were chosen for a rescue that holds across seeds and across float rounding:
`scripts/demo_seeds.py` checks seeds 0-4 with lbe_hf's entropy and with a plain-autograd one (README, Results).
At depth 30 / 500 steps the same check spread from 39% to 93%.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import torch
from transformers import PrinterCallback, TrainerCallback, TrainingArguments, set_seed

from ..collect import measure_entropies
from ..config import BatchEntropyConfig
from ..models import FNNConfig, FNNForImageClassification
from ..tasks.data import digits_split
from ..trainer import LBETrainer
from .plotting import plot_entropy_runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--depth", type=int, default=20, help="hidden layers of the vanilla FNN (with torch init, >= 20 collapses)"
    )
    parser.add_argument("--width", type=int, default=256, help="units per hidden layer")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps per run")
    parser.add_argument("--batch_size", type=int, default=512, help="training batch (batch entropy needs >= 2)")
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="Adam, constant")
    parser.add_argument(
        "--init", choices=["torch", "he"], default="torch", help="torch: PyTorch's default Linear init (the authors')"
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="initial entropy target of every layer (learned)")
    parser.add_argument("--beta", type=float, default=0.5, help="weight of the LBE term in the LBE run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the init and the batch order (both runs)")
    parser.add_argument("--output_dir", default="lbe_demo", help="folder for results.md, results.json and the PNG")
    parser.add_argument(
        "--max_grad_norm", type=float, default=1.0, help="gradient clipping (Trainer's default); 0 = off"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 1 stays fast on a busy machine (more threads thrash when other jobs share the cores)",
    )
    parser.add_argument("--no_progress", action="store_true", help="no progress lines")


class _ProgressLine(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "task_loss" in logs:
            print(
                f"  step {state.global_step:4d}/{state.max_steps}  task loss {logs['task_loss']:.3f}  "
                f"mean layer entropy {logs.get('entropy_mean', float('nan')):.3f}  "
                f"min layer entropy {logs.get('entropy_min', float('nan')):.2e}",
                flush=True,
            )


def train_run(args: argparse.Namespace, beta: float, train_ds, test_ds) -> dict:
    """One arm: trains with `beta` (0 = plain) and returns test accuracy, final test-set entropies, history."""
    with tempfile.TemporaryDirectory() as work_dir:
        return _train(args, beta, train_ds, test_ds, work_dir)


def _train(args: argparse.Namespace, beta: float, train_ds, test_ds, work_dir: str) -> dict:
    set_seed(args.seed)
    model = FNNForImageClassification(
        FNNConfig(input_dim=64, depth=args.depth, width=args.width, num_labels=10, init=args.init)
    )
    training_args = TrainingArguments(
        output_dir=work_dir,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=len(test_ds),
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=args.max_grad_norm,
        logging_steps=max(1, args.steps // 20),
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        use_cpu=True,
        disable_tqdm=True,
        dataloader_drop_last=True,
    )
    config = BatchEntropyConfig(alpha=args.alpha, beta=beta)
    # entropy_callback=False: the demo draws both runs side by side itself (plotting.plot_entropy_runs).
    trainer = LBETrainer(
        model=model, args=training_args, train_dataset=train_ds, lbe_config=config, entropy_callback=False
    )
    trainer.remove_callback(PrinterCallback)  # one short progress line per log instead of the full dicts
    if not args.no_progress:
        trainer.add_callback(_ProgressLine())
    trainer.train()
    predictions = trainer.predict(test_ds)
    accuracy = float((predictions.predictions.argmax(-1) == predictions.label_ids).mean())
    # Entropy of every regularized layer on the whole test set, through hooks of its own (the trainer's fold
    # the term into the loss).
    final = measure_entropies(
        model, trainer.lbe_module_names, lambda: model(test_ds.pixel_values), trainer.lbe_config.constant
    ).entropies
    return {"accuracy": accuracy, "final_entropies": final.tolist(), "history": trainer.entropy_history}


def describe(args: argparse.Namespace) -> str:
    return (
        f"depth-{args.depth} vanilla ReLU FNN (width {args.width}, {args.init} init), scikit-learn digits, "
        f"{args.steps} Adam steps of {args.batch_size}, lr {args.learning_rate:g}"
    )


def run(args: argparse.Namespace) -> int:
    if args.depth < 1 or args.steps < 1 or args.batch_size < 2 or args.threads < 1:
        raise SystemExit("lbe-hf demo: --depth, --steps and --threads must be >= 1 and --batch_size >= 2.")
    torch.set_num_threads(args.threads)
    train_ds, test_ds = digits_split()
    out = os.path.abspath(args.output_dir)
    os.makedirs(out, exist_ok=True)
    runs = {}
    start = time.perf_counter()
    for name, beta in (("without LBE", 0.0), ("with LBE", args.beta)):
        print(f"\n== {name}: {describe(args)} ==", flush=True)
        arm_start = time.perf_counter()
        runs[name] = train_run(args, beta, train_ds, test_ds)
        runs[name]["seconds"] = round(time.perf_counter() - arm_start, 1)
    wall = time.perf_counter() - start
    png = os.path.join(out, "entropy_per_layer.png")
    plot_entropy_runs(runs, png, title=f"Batch entropy per layer: {describe(args)}")
    rows = [
        "| run | test accuracy | last-layer batch entropy | min layer entropy |",
        "| --- | --- | --- | --- |",
    ]
    for name, r in runs.items():
        rows.append(
            f"| {name} | {r['accuracy']:.1%} | {r['final_entropies'][-1]:.4f} | {min(r['final_entropies']):.4f} |"
        )
    table = "\n".join(rows)
    print("\n" + table)
    print(
        f"\nchance level is 10%; entropies on the test set after training. {wall:.0f} s on {args.threads} thread(s)."
    )
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    summary = {
        "command": "lbe-hf demo " + " ".join(f"--{k} {v}" for k, v in sorted(vars(args).items()) if k in SETTINGS),
        "settings": {k: v for k, v in vars(args).items() if k in SETTINGS},
        "runs": {
            name: {
                "accuracy": round(r["accuracy"], 4),
                "last_layer_entropy": round(r["final_entropies"][-1], 4),
                "min_layer_entropy": round(min(r["final_entropies"]), 4),
                "seconds": r["seconds"],
            }
            for name, r in runs.items()
        },
        "wall_seconds": round(wall, 1),
        "threads": args.threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    print(f"Written to {out}: results.md, results.json, entropy_per_layer.png")
    return 0


# The flags that decide the numbers (not where they are written or how progress is shown).
SETTINGS = (
    "depth",
    "width",
    "steps",
    "batch_size",
    "learning_rate",
    "init",
    "alpha",
    "beta",
    "seed",
    "max_grad_norm",
)
