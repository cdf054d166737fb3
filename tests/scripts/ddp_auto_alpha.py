"""alpha="auto" under real DDP: each rank measures its own batch; the initial alphas must be the ranks' average.

Launched by tests/test_auto_alpha.py with `ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2`.
Writes `rank{N}.json` per rank into the folder given as the first argument.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import PartialState

from lbe_hf import BatchEntropyConfig, LBERegularizer
from lbe_hf.auto_alpha import auto_alphas
from lbe_hf.collect import ActivationCollector
from lbe_hf.entropy import batch_entropy, layer_entropies
from lbe_hf.models import FNNConfig, FNNForImageClassification


def main() -> None:
    state = PartialState(cpu=True)  # gloo process group from the launcher's environment (world size 2)
    rank = state.process_index
    torch.manual_seed(0)
    model = FNNForImageClassification(FNNConfig(input_dim=12, depth=4, width=16, num_labels=3, init="he"))
    reg = LBERegularizer(model, BatchEntropyConfig(alpha="auto", alpha_min=0.01))
    # Each rank sees different data (as under a DistributedSampler): its own measurement would differ.
    g = torch.Generator().manual_seed(rank)
    x = torch.rand(16, 12, generator=g) * (1 + 3 * rank)
    probe = ActivationCollector(model, reg.module_names)
    with torch.no_grad(), probe.capture():
        model(pixel_values=x)
    local = auto_alphas(layer_entropies(probe.take()), float(batch_entropy(x)), 0.01)
    probe.remove()
    with reg.capture():
        model(pixel_values=x, labels=torch.zeros(16, dtype=torch.long))
    result = {
        "rank": rank,
        "world_size": dist.get_world_size(),
        "alphas": reg.alphas.tolist(),
        "local": local.tolist(),
    }
    (Path(sys.argv[1]) / f"rank{rank}.json").write_text(json.dumps(result))
    state.wait_for_everyone()


if __name__ == "__main__":
    main()
