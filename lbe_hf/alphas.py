"""The learnable entropy targets: a small submodule of the model, and reading and writing it under every engine.

Sharded engines keep the alphas in pieces: FSDP2 (`fully_shard`) as DTensors, DeepSpeed ZeRO-3 as partitioned
parameters (when there are more of them than `stage3_param_persistence_threshold`). `plain_tensor` and `copy_into`
gather and scatter them; both are collectives there, so every process must make the same call.
"""

from __future__ import annotations

import torch
from torch import nn

ALPHAS_NAME = "lbe_alphas.safetensors"
ALPHAS_ATTRIBUTE = "lbe_alphas"


class LBEAlphas(nn.Module):
    """One learnable entropy target per regularized layer.

    A submodule of the model, so the Trainer's optimizer trains it, DDP synchronizes it and PEFT leaves it
    trainable. It is kept out of the model's `state_dict()`: a saved or pushed model then loads with plain
    `transformers` without unexpected keys, and the alphas travel in their own file (`lbe_alphas.safetensors`).
    """

    def __init__(self, num_layers: int, init: float):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((num_layers,), float(init)))

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        pass

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs):
        if prefix + "alpha" in state_dict:
            super()._load_from_state_dict(
                state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs
            )


def plain_tensor(param: torch.Tensor) -> torch.Tensor:
    """The whole value of `param`, detached, as a plain tensor (gathered when sharded: a collective)."""
    if _is_dtensor(param):
        return param.detach().full_tensor()
    if _zero3_partitioned(param):
        import deepspeed

        with deepspeed.zero.GatheredParameters([param]):
            return param.detach().clone()
    return param.detach()


def copy_into(param: torch.Tensor, value: torch.Tensor) -> None:
    """Sets `param` to the whole tensor `value`, which every process holds (scattered when sharded)."""
    value = value.to(device=param.device, dtype=param.dtype)
    if _zero3_partitioned(param):  # a collective: rank 0's copy is partitioned onto every process
        import deepspeed

        with deepspeed.zero.GatheredParameters([param], modifier_rank=0), torch.no_grad():
            param.copy_(value)
        return
    if _is_dtensor(param):
        from torch.distributed.tensor import distribute_tensor

        # Every process holds the whole saved tensor: each keeps its own shard, without communication.
        value = distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)
    with torch.no_grad():
        param.copy_(value)


def is_fully_sharded(model: nn.Module) -> bool:
    """Whether `model` was already wrapped by FSDP2's `fully_shard` (too late to attach alphas FSDP would reduce)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch without FSDP2
        return False
    return isinstance(model, FSDPModule)


def _is_dtensor(tensor: torch.Tensor) -> bool:
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def _zero3_partitioned(param: torch.Tensor) -> bool:
    # DeepSpeed ZeRO-3 leaves an empty `data` on a partitioned parameter (one below
    # `stage3_param_persistence_threshold` elements stays whole on every process and reads as usual).
    status = getattr(param, "ds_status", None)
    return hasattr(param, "ds_id") and getattr(status, "name", None) == "NOT_AVAILABLE"
