"""LBETrainer under DeepSpeed ZeRO on CPU: run with `torchrun --nproc_per_node 2 deepspeed_lbe.py --stage 2`.

DeepSpeed's CPU accelerator runs the 2 processes over gloo. No `use_cpu` (it would replace DeepSpeed by DDP), no
`train_batch_size` in the JSON config, and the Trainer's torch AdamW rather than DeepSpeed's own optimizer.
Without a GPU, accelerate 1.15 finds no backend for DeepSpeed and counts ONE process on every rank (each rank then
trains on all the data and every rank writes every checkpoint file); `configured_state` creates accelerate's
state with the gloo backend first, and the Trainer reuses it (`use_configured_state`).

One launch trains a tiny Llama 4 steps with a checkpoint every 2 steps, then builds a fresh model and trainer and
resumes from `checkpoint-2` to step 4. Every rank writes `result_rank<N>.json` into `--output_dir` for
tests/test_engines.py (files, not stdout: two ranks printing at once can interleave their lines).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import PartialState
from accelerate.state import AcceleratorState
from safetensors.torch import load_file
from transformers import TrainerCallback, TrainingArguments

from lbe_hf import BatchEntropyConfig, LBETrainer, get_last_complete_checkpoint

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from engine_models import TokenRows, tiny_llama  # noqa: E402


def configured_state() -> PartialState:
    """accelerate's process state for DeepSpeed over gloo: 2 processes, rank 0 the main one."""
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # what TrainingArguments sets while it creates the state
    try:
        return PartialState(backend="gloo")
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]


class AlphasAtTrainBegin(TrainerCallback):
    """The alphas once the Trainer has loaded the checkpoint (after the engine is built), before the first step."""

    def __init__(self):
        self.trainer = None
        self.alphas: list[float] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.alphas = self.trainer.alphas.tolist()


def make_trainer(stage: int, output_dir: str) -> tuple[LBETrainer, AlphasAtTrainBegin]:
    args = TrainingArguments(
        output_dir=output_dir,
        deepspeed=str(HERE / f"ds_zero{stage}.json"),
        per_device_train_batch_size=4,
        max_steps=4,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="steps",
        save_steps=2,
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
        accelerator_config={"use_configured_state": True},
    )
    probe = AlphasAtTrainBegin()
    trainer = LBETrainer(
        model=tiny_llama(),
        args=args,
        train_dataset=TokenRows(),
        lbe_config=BatchEntropyConfig(),
        callbacks=[probe],
    )
    probe.trainer = trainer
    return trainer, probe


def gathered_alphas(alphas: torch.Tensor) -> list[list[float]]:
    parts = [torch.zeros_like(alphas) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, alphas.contiguous())
    return [p.tolist() for p in parts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", type=int, choices=[2, 3], required=True)
    parser.add_argument("--output_dir", required=True)
    cli = parser.parse_args()
    out = Path(cli.output_dir)
    configured_state()

    trainer, _ = make_trainer(cli.stage, str(out / "run"))
    trainer.train()
    first = trainer.alphas
    result = {
        "rank": dist.get_rank(),
        "world_size": dist.get_world_size(),
        "accelerate_num_processes": trainer.accelerator.num_processes,
        "should_save": trainer.args.should_save,
        "batches_per_epoch": len(trainer.get_train_dataloader()),
        "deepspeed": trainer.is_deepspeed_enabled,
        "engine": type(trainer.model_wrapped).__name__,
        "zero_stage": trainer.model_wrapped.zero_optimization_stage(),
        "alphas_type": type(first).__name__,
        "alphas": first.tolist(),
        "alphas_all_ranks": gathered_alphas(first),
        "global_step": trainer.state.global_step,
        "last_complete_checkpoint": os.path.basename(get_last_complete_checkpoint(out / "run") or ""),
        "checkpoint_2_alphas": load_file(out / "run" / "checkpoint-2" / "lbe_alphas.safetensors")["alpha"].tolist(),
        "checkpoint_4_alphas": load_file(out / "run" / "checkpoint-4" / "lbe_alphas.safetensors")["alpha"].tolist(),
        "leftover_tmp": sorted(p.name for p in (out / "run").rglob("*.tmp")),
    }
    del trainer
    # A second Trainer in this process: its Accelerator needs a fresh accelerator state (the process state stays).
    AcceleratorState._reset_state()

    resumed, probe = make_trainer(cli.stage, str(out / "run"))
    resumed.train(resume_from_checkpoint=str(out / "run" / "checkpoint-2"))
    result["resumed_alphas_at_start"] = probe.alphas
    result["resumed_alphas"] = resumed.alphas.tolist()
    result["resumed_global_step"] = resumed.state.global_step
    with open(out / f"result_rank{dist.get_rank()}.json", "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
