"""The EntropyCallback pictures of docs/tools.md: a collapsed vanilla FNN trained with a plain Trainer + the callback,
and the same net with LBETrainer (callback on by default, alpha="auto"). Digits, CPU, a few minutes.

    python scripts/benchmarks/tools_figures.py --steps 250 --out docs
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import torch
from bench_fnn import accuracy
from transformers import Trainer, TrainingArguments, set_seed

from lbe_hf import BatchEntropyConfig, LBETrainer
from lbe_hf.callbacks import PLOT_NAME, EntropyCallback
from lbe_hf.models import FNNConfig, FNNForImageClassification
from lbe_hf.tasks.data import digits_split

# The shared data sets beside this checkout (glue/, mnist/), unless LBE_DATA_DIR says otherwise.
os.environ.setdefault("LBE_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=30)
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "docs")
    p.add_argument("--threads", type=int, default=1)
    return p


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    train, test = digits_split()
    for arm in ("plain", "lbe"):
        set_seed(0)
        model = FNNForImageClassification(FNNConfig(input_dim=64, depth=args.depth, init="torch"))
        with tempfile.TemporaryDirectory() as tmp:
            targs = TrainingArguments(
                output_dir=tmp,
                max_steps=args.steps,
                per_device_train_batch_size=args.batch_size,
                learning_rate=args.lr,
                lr_scheduler_type="constant",
                weight_decay=0.0,
                logging_steps=max(1, args.steps // 10),
                save_strategy="no",
                report_to="none",
                use_cpu=True,
                disable_tqdm=True,
                seed=0,
            )
            if arm == "plain":
                trainer = Trainer(model=model, args=targs, train_dataset=train)
                EntropyCallback(plot=True).attach(trainer)
            else:
                trainer = LBETrainer(
                    model=model,
                    args=targs,
                    train_dataset=train,
                    lbe_config=BatchEntropyConfig(alpha="auto"),
                    callbacks=[EntropyCallback(plot=True)],
                )
            trainer.train()
            target = args.out / f"entropy_callback_{arm}_torch_d{args.depth}.png"
            shutil.copy(os.path.join(tmp, PLOT_NAME), target)
        print(f"{arm}: test accuracy {accuracy(model, test):.1f}% -> {target}", flush=True)


if __name__ == "__main__":
    main()
