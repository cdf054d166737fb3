"""`lbe-hf demo`: a deep vanilla FNN that does not train, and the same net with LBE that does.

Trains `FNNForImageClassification(depth=30, init="torch")` on scikit-learn's bundled digits twice with
`LBETrainer`: once with `beta=0` (the LBE term is exactly zero: a plain run) and once with LBE, prints a table
(test accuracy, last hidden layer's batch entropy) and writes a PNG of batch entropy per layer over training
(the paper's Fig. 2/6). Offline, CPU, about two minutes.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
from transformers import PrinterCallback, TrainerCallback, TrainingArguments, set_seed

from .collect import ActivationCollector
from .config import BatchEntropyConfig
from .data import digits_split
from .entropy import layer_entropies
from .models import FNNConfig, FNNForImageClassification
from .trainer import LBETrainer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--depth", type=int, default=30, help="hidden layers of the vanilla FNN (>= 30 collapses)")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps per run")
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--init", choices=["torch", "he"], default="torch")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="lbe_demo", help="where the PNG and the table go")
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
        logging_steps=max(1, args.steps // 20),
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        use_cpu=True,
        disable_tqdm=True,
        dataloader_drop_last=True,
    )
    config = BatchEntropyConfig(alpha=args.alpha, beta=beta)
    # entropy_callback=False: the demo draws both runs side by side itself (plot_entropy_history below).
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
    model.eval()
    collector = ActivationCollector(model, trainer.lbe_module_names)
    with torch.no_grad(), collector.capture():
        model(test_ds.pixel_values)
    final = layer_entropies(collector.take(), trainer.lbe_config.constant)
    collector.remove()
    return {"accuracy": accuracy, "final_entropies": final.tolist(), "history": trainer.entropy_history}


def plot_entropy_history(runs: dict[str, dict], path: str) -> None:
    """Batch entropy per layer (x) at each logging step (colour), one panel per run: the paper's Fig. 2/6."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4), sharey=True, squeeze=False)
    for ax, (name, run) in zip(axes[0], runs.items()):
        history = run["history"]
        cmap = plt.get_cmap("viridis")
        last_step = max(step for step, _ in history) if history else 1
        for step, layers in history:
            ax.plot(range(1, len(layers) + 1), layers, color=cmap(step / last_step), lw=1)
        ax.set_title(f"{name}: test accuracy {run['accuracy']:.1%}")
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, last_step))
        fig.colorbar(sm, ax=ax, label="training step")
    axes[0][0].set_ylabel("batch entropy (nats)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    if args.depth < 1 or args.steps < 1 or args.batch_size < 2:
        raise SystemExit("lbe-hf demo: --depth and --steps must be >= 1 and --batch_size >= 2.")
    train_ds, test_ds = digits_split()
    os.makedirs(args.output_dir, exist_ok=True)
    runs = {}
    with tempfile.TemporaryDirectory() as work_dir:
        for name, beta in (("without LBE", 0.0), ("with LBE", args.beta)):
            print(f"\n== {name}: depth-{args.depth} vanilla FNN (init={args.init}), digits, {args.steps} steps ==")
            runs[name] = _train(args, beta, train_ds, test_ds, work_dir)
    png = os.path.join(args.output_dir, "entropy_per_layer.png")
    plot_entropy_history(runs, png)
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
    print(f"\nchance level is 10%. Entropy per layer over training: {png}")
    with open(os.path.join(args.output_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    return 0
