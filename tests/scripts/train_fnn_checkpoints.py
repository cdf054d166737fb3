"""A small LBETrainer run that checkpoints often, for the kill-and-resume test (tests/test_robustness.py).

First run: `--max_steps 400 --step_sleep 0.02` (killed with SIGKILL mid-run by the test).
Resume (the test calls `main([...])` in its own process, sparing a second start-up):
`--resume --max_steps N --dump FILE`: resumes from the last complete checkpoint of `--output_dir` and,
when training begins (everything restored, no step taken yet), writes global step, alphas, weights and optimizer
state to FILE (torch.save of tensors only, so the test loads it with weights_only=True).
"""

from __future__ import annotations

import argparse
import inspect
import time

import torch
from transformers import TrainerCallback, TrainingArguments

from lbe_hf import LBETrainer
from lbe_hf.models import FNNConfig, FNNForImageClassification
from lbe_hf.tasks.data import TensorDictDataset


class Pace(TrainerCallback):
    """Slows each step so the test can kill the process between (or during) saves."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(self.seconds)


class DumpOnBegin(TrainerCallback):
    """Writes the restored state before the first resumed step."""

    def __init__(self, path: str):
        self.path = path

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        torch.save(
            {
                "global_step": state.global_step,
                "alphas": model.lbe_alphas.alpha.detach().clone(),
                "weights": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
            },
            self.path,
        )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_steps", type=int, default=400)
    parser.add_argument("--save_steps", type=int, default=2)
    parser.add_argument("--step_sleep", type=float, default=0.0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--dump", default=None)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = TensorDictDataset(torch.randn(512, 8, generator=g), torch.randint(0, 3, (512,), generator=g))
    model = FNNForImageClassification(FNNConfig(input_dim=8, depth=4, width=16, num_labels=3))
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=8,
        max_steps=args.max_steps,
        learning_rate=1e-2,
        save_steps=args.save_steps,
        logging_steps=10,
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
    )
    callbacks = [Pace(args.step_sleep)] + ([DumpOnBegin(args.dump)] if args.dump else [])
    # No end-of-training entropy plot (lbe_hf.callbacks): it costs seconds and this run tests checkpoints.
    quiet = {"entropy_callback": False} if "entropy_callback" in inspect.signature(LBETrainer).parameters else {}
    trainer = LBETrainer(model=model, args=training_args, train_dataset=data, callbacks=callbacks, **quiet)
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    print(f"FINISHED global_step={trainer.state.global_step}", flush=True)


if __name__ == "__main__":
    main()
