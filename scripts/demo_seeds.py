"""Seed x entropy-implementation check of `lbe-hf demo`'s setting: is the rescue robust?

Runs the demo's training (`lbe_hf.cli.demo.train_run`) for several seeds, each with lbe_hf's entropy (the fused
variance node) and with a plain-autograd reference (`torch.var(x, dim=0, unbiased=True)`, written out below), and
appends one JSON line per run to --out. The demo's settings are its command-line defaults; any demo flag can be
changed here the same way:

    python scripts/demo_seeds.py --seeds 0 1 2 3 4 --paths lbe_hf autograd --out demo_seeds.jsonl -- --depth 30
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import lbe_hf.regularizer
from lbe_hf.cli import demo
from lbe_hf.tasks.data import digits_split


def autograd_layer_entropies(activations, constant, mask=None, hooks=None):
    """Eq. 3 with autograd's own unbiased variance: the reference the fused node must agree with."""
    if mask is not None:
        raise ValueError("the reference handles flatten mode only")
    values = []
    for a in activations:
        x = a.reshape(a.shape[0], -1).float()
        values.append((0.5 * torch.log1p(constant * torch.var(x, dim=0, unbiased=True))).mean())
    return torch.stack(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--paths", nargs="+", choices=["lbe_hf", "autograd"], default=["lbe_hf", "autograd"])
    parser.add_argument("--betas", type=float, nargs="+", default=None, help="default: the demo's --beta only")
    parser.add_argument("--out", required=True, help="JSON Lines file, appended to")
    parser.add_argument("demo_args", nargs=argparse.REMAINDER, help="after --: flags of lbe-hf demo")
    args = parser.parse_args()
    demo_parser = argparse.ArgumentParser()
    demo.add_arguments(demo_parser)
    rest = [a for a in args.demo_args if a != "--"]
    demo_args = demo_parser.parse_args(rest + ["--no_progress"])
    torch.set_num_threads(demo_args.threads)
    train_ds, test_ds = digits_split()
    original = lbe_hf.regularizer.layer_entropies
    for beta in args.betas or [demo_args.beta]:
        for path in args.paths if beta > 0 else ["lbe_hf"]:
            lbe_hf.regularizer.layer_entropies = original if path == "lbe_hf" else autograd_layer_entropies
            for seed in args.seeds:
                demo_args.seed = seed
                start = time.perf_counter()
                result = demo.train_run(demo_args, beta, train_ds, test_ds)
                row = {
                    "demo_args": rest,
                    "settings": {k: v for k, v in vars(demo_args).items() if k in demo.SETTINGS and k != "seed"},
                    "beta": beta,
                    "path": path,
                    "seed": seed,
                    "accuracy": round(result["accuracy"], 4),
                    "last_entropy": round(result["final_entropies"][-1], 4),
                    "min_entropy": round(min(result["final_entropies"]), 4),
                    "seconds": round(time.perf_counter() - start, 1),
                }
                print(json.dumps(row), flush=True)
                with open(args.out, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
    lbe_hf.regularizer.layer_entropies = original


if __name__ == "__main__":
    main()
