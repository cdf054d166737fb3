"""LBERegularizer in a raw FSDP2 loop: run with `torchrun --nproc_per_node 2 fsdp2_lbe.py --output_dir DIR`.

The regularizer is attached BEFORE `fully_shard` (per decoder block, then the root), so the alphas are sharded and
reduced with the other parameters; attached afterwards they would stay plain tensors that every rank updates
from its own gradient. Each rank trains a tiny Llama on its own batches (`token_batch(step, rank)`), then saves
the alphas (`save_pretrained` on every rank, written by rank 0) and reloads them into the sharded model. Every
rank writes `result_rank<N>.json` into --output_dir for tests/test_engines.py, which compares against
`train_reference`: one process replaying both ranks' batches. A second run attaches the regularizer after
`fully_shard`, to show what goes wrong then.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from lbe_hf import BatchEntropyConfig, LBERegularizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_models import tiny_llama, token_batch  # noqa: E402

STEPS = 3
LR = 1e-2


def optimizer(model: torch.nn.Module, reg: LBERegularizer) -> torch.optim.Optimizer:
    # No weight decay on the alphas: decay pulls them to 0, where they clamp to alpha_min.
    alphas = {id(p) for p in reg.alphas_module.parameters()}
    rest = [p for p in model.parameters() if id(p) not in alphas]
    groups = [{"params": rest}, {"params": list(reg.alphas_module.parameters()), "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=LR, weight_decay=0.01)


def train_reference(world_size: int = 2) -> dict:
    """One process, the same model and data: each step averages the per-rank losses, as FSDP averages gradients."""
    model = tiny_llama()
    reg = LBERegularizer(model, BatchEntropyConfig())
    opt = optimizer(model, reg)
    losses = []
    for step in range(STEPS):
        per_rank = []
        for rank in range(world_size):
            with reg.capture():
                per_rank.append(model(**token_batch(step, rank)).loss)
        (sum(per_rank) / world_size).backward()
        opt.step()
        opt.zero_grad()
        losses.append([loss.item() for loss in per_rank])
    return {"losses": losses, "alphas": reg.alphas.tolist()}


def train_sharded(rank: int, world_size: int, attach_first: bool) -> tuple[torch.nn.Module, LBERegularizer, list]:
    model = tiny_llama()
    reg = LBERegularizer(model, BatchEntropyConfig()) if attach_first else None
    mesh = init_device_mesh("cpu", (world_size,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    if reg is None:
        reg = LBERegularizer(model, BatchEntropyConfig())
    opt = optimizer(model, reg)
    losses = []
    for step in range(STEPS):
        with reg.capture():
            loss = model(**token_batch(step, rank)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return model, reg, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", required=True)
    out = Path(parser.parse_args().output_dir)
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()

    model, reg, losses = train_sharded(rank, world_size, attach_first=True)
    alphas = reg.alphas
    parts = [torch.zeros_like(alphas) for _ in range(world_size)]
    dist.all_gather(parts, alphas)
    saved = out / "alphas"
    reg.save_pretrained(saved, is_main_process=rank == 0)  # a collective: every rank calls it
    dist.barrier()
    with torch.no_grad():  # overwrite, then reload the saved values into the sharded parameter
        reg.alphas_module.alpha.fill_(0.5)
    reg.load_pretrained(saved)
    result = {
        "rank": rank,
        "world_size": world_size,
        "alpha_param_is_dtensor": isinstance(reg.alphas_module.alpha, DTensor),
        "alphas_type": type(alphas).__name__,
        "alphas": alphas.tolist(),
        "alphas_all_ranks": [p.tolist() for p in parts],
        "reloaded_alphas": reg.alphas.tolist(),
        "reloaded_is_dtensor": isinstance(reg.alphas_module.alpha, DTensor),
        "losses": losses,
    }
    # The wrong order: attached after fully_shard, the alphas would stay plain parameters nothing reduces.
    try:
        train_sharded(rank, world_size, attach_first=False)
        result["late_attach_error"] = None
    except ValueError as err:
        result["late_attach_error"] = str(err)
    with open(out / f"result_rank{rank}.json", "w", encoding="utf-8") as f:
        json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
