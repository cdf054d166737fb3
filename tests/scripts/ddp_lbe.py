"""LBETrainer under real DDP: run with `ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2`.

Trains a tiny FNN under each `ddp_find_unused_parameters` setting (None is the Trainer's default) and a tiny BERT
with the default, through batches that make the LBE term skip on one rank (a batch of 1) or on both, and one
with a NaN input on rank 0; each run saves a checkpoint at its last step into `--output_dir` (shared by the ranks).
Every rank writes one `result_<run>_rank<N>.json` per run into --output_dir for tests/test_distributed.py
(files, not stdout: two ranks printing at once can interleave their lines).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import TrainingArguments

from lbe_hf import BatchEntropyConfig, LBETrainer, get_last_complete_checkpoint
from lbe_hf.models import FNNConfig, FNNForImageClassification
from lbe_hf.tasks.data import TensorDictDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for helpers
from helpers import tiny_bert, tiny_llama  # noqa: E402

# Collator call (= batch) numbers: rank 0 gets one sample on batch 2, every rank on batch 3, rank 0 a NaN on 4.
ONE_SAMPLE = {0: (2, 3), 1: (3,)}
NAN_BATCH = {0: (4,), 1: ()}


class FaultyCollator:
    """Stacks rows like `default_data_collator`, then shrinks or poisons chosen batches of this rank."""

    def __init__(self, rank: int):
        self.rank = rank
        self.calls = 0

    def __call__(self, rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        self.calls += 1
        batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
        if self.calls in ONE_SAMPLE[self.rank]:
            batch = {k: v[:1] for k, v in batch.items()}
        if self.calls in NAN_BATCH[self.rank] and "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].clone()
            batch["pixel_values"][0, 0] = float("nan")
        return batch


class TokenRows(torch.utils.data.Dataset):
    def __init__(self, n: int, seq: int, vocab: int):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, vocab, (n, seq), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


class CausalRows(torch.utils.data.Dataset):
    """Token rows of unequal real lengths (labels -100 on padding), so ranks hold different token counts."""

    def __init__(self, n: int, seq: int, vocab: int):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, vocab, (n, seq), generator=g)
        lengths = torch.randint(2, seq + 1, (n,), generator=g)
        self.mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        labels = torch.where(self.mask[i].bool(), self.ids[i], torch.full_like(self.ids[i], -100))
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": labels}


def build(kind: str):
    torch.manual_seed(0)
    if kind == "llama":
        return tiny_llama(), CausalRows(64, 10, 64)
    if kind == "bert":
        return tiny_bert(dropout=0.1, intermediate_size=64), TokenRows(64, 8, 64)
    model = FNNForImageClassification(FNNConfig(input_dim=8, depth=3, width=16, num_labels=3))
    g = torch.Generator().manual_seed(0)
    return model, TensorDictDataset(torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g))


def run(kind: str, find_unused: bool | None, output_dir: str) -> dict:
    model, data = build(kind)
    rank = int(os.environ.get("RANK", "0"))
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=4,
        max_steps=5,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="steps",
        save_steps=5,
        report_to=[],
        ddp_find_unused_parameters=find_unused,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    # The causal LM runs with beta=0 on clean batches: its logged task_loss must then equal the Trainer's own loss.
    collator = None if kind == "llama" else FaultyCollator(rank)
    config = BatchEntropyConfig(beta=0.0) if kind == "llama" else BatchEntropyConfig()
    trainer = LBETrainer(model=model, args=args, train_dataset=data, data_collator=collator, lbe_config=config)
    trainer.train()
    wrapped = type(trainer.model_wrapped).__name__
    ddp = trainer.model_wrapped
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    logs = [h for h in trainer.state.log_history if "lbe_skipped" in h]
    return {
        "kind": kind,
        "find_unused": find_unused,
        "ddp_find_unused_effective": getattr(ddp, "find_unused_parameters", None),
        "rank": rank,
        "world_size": dist.get_world_size(),
        "num_processes": trainer.accelerator.num_processes,
        "wrapped": wrapped,
        "alphas": trainer.alphas.tolist(),
        "params_finite": bool(torch.isfinite(flat).all()),
        "params_equal_across_ranks": all(torch.equal(gathered[0], g) for g in gathered),
        "skipped_per_step": [h["lbe_skipped"] for h in logs],
        "loss_per_step": [h["loss"] for h in logs],
        "task_loss_per_step": [h["task_loss"] for h in logs],
        "nonfinite_per_step": [h["nonfinite_loss_skipped"] for h in logs],
        "global_step": trainer.state.global_step,
        "last_complete_checkpoint": os.path.basename(get_last_complete_checkpoint(output_dir) or ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--runs", nargs="+", default=["fnn:false", "fnn:true", "bert:none"])
    args = parser.parse_args()
    settings = {"none": None, "false": False, "true": True}
    for spec in args.runs:
        kind, setting = spec.split(":")
        result = run(kind, settings[setting], os.path.join(args.output_dir, spec.replace(":", "_")))
        name = f"result_{spec.replace(':', '_')}_rank{os.environ.get('RANK', '0')}.json"
        with open(os.path.join(args.output_dir, name), "w", encoding="utf-8") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
