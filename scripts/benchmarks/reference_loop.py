"""A plain-PyTorch LBE training loop (eq. 3-6 written out, no Trainer, no lbe_hf regularizer) on the benchmark FNN.

The trainability benchmark's cross-check: same model and initial weights (`build_fnn`), same data (`load_split`),
same loss `L + L * L_BE` with learnable alphas, `torch.optim.Adam` at a constant lr, its own batch order (a
`torch.randperm` per epoch from a generator seeded with `--seed`, or `--batches replacement`: every batch drawn
with replacement). If `LBETrainer` and this loop disagree over many seeds, the difference is in lbe_hf; on single
runs the batch order alone moves collapsed nets by tens of points (docs/benchmarks.md). `--max_grad_norm` clips
as `Trainer` does (`torch.nn.utils.clip_grad_norm_` over all parameters, alphas included); `--epochs` replaces
`--steps`. Appends one JSON line per run to `--results`.

    python scripts/benchmarks/reference_loop.py --depth 50 --init torch --seeds 0 1 2 3 4
    python scripts/benchmarks/reference_loop.py --depth 100 --init he --seeds 0 1 2 3 4 --steps 600
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_fnn import DATASETS, accuracy, build_fnn, load_split

from lbe_hf.models.fnn import INITS, lsuv_init

# The shared data sets beside this checkout (glue/, mnist/), unless LBE_DATA_DIR says otherwise.
os.environ.setdefault("LBE_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))


def entropy(h: torch.Tensor) -> torch.Tensor:
    """Eq. 3 with the authors' constant pi*e: mean over neurons of 0.5*log(pi*e*var + 1), unbiased variance."""
    return (0.5 * torch.log(math.pi * math.e * h.float().var(0) + 1)).mean()


def run(args: argparse.Namespace, seed: int) -> dict:
    train, test = load_split(args.dataset)
    model = build_fnn(train.pixel_values.shape[1], args.depth, args.init, seed, args.width)
    if args.init == "lsuv":
        lsuv_init(model, train.pixel_values[: args.batch_size])
    alphas = torch.nn.Parameter(torch.full((args.depth,), args.alpha))
    params = list(model.parameters()) + ([] if args.plain else [alphas])
    optimizer = torch.optim.Adam(params, lr=args.lr)
    order = torch.Generator().manual_seed(seed)
    x_all, y_all = train.pixel_values, train.labels
    n = len(y_all)
    steps = args.steps if args.epochs is None else args.epochs * math.ceil(n / args.batch_size)
    step, start = 0, time.perf_counter()
    while step < steps:
        if args.batches == "replacement":
            batches = [torch.randint(n, (args.batch_size,), generator=order) for _ in range(-(-n // args.batch_size))]
        else:
            perm = torch.randperm(n, generator=order)
            batches = [perm[i : i + args.batch_size] for i in range(0, n, args.batch_size)]
        for idx in batches:
            x, acts = x_all[idx], []
            for layer in model.layers:
                x = layer(x)
                acts.append(x)
            task = F.cross_entropy(model.classifier(x), y_all[idx])
            loss = task
            if not args.plain:
                h = torch.stack([entropy(a) for a in acts])
                target = alphas.abs().clamp(min=args.alpha_min)
                loss = task + task * (args.beta / args.depth * ((h - target) ** 2).sum())
            optimizer.zero_grad()
            loss.backward()
            if args.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            optimizer.step()
            step += 1
            if step % 100 == 0:
                print(f"seed {seed} step {step}: task loss {task.item():.3f}", flush=True)
            if step >= steps:
                break
    return {
        **{k: v for k, v in vars(args).items() if k not in ("seeds", "results")},
        "seed": seed,
        "total_steps": step,
        "test_accuracy": accuracy(model, test),
        "seconds": time.perf_counter() - start,
    }


def _done(args: argparse.Namespace, seed: int) -> bool:
    """Whether --results already holds a row of these settings and seed (a restarted queue skips it)."""
    if not args.results.is_file():
        return False
    wanted = {k: v for k, v in vars(args).items() if k not in ("seeds", "results", "threads")}
    for line in args.results.read_text().splitlines():
        row = json.loads(line)
        if row.get("seed") == seed and all(row.get(k) == v for k, v in wanted.items()):
            return True
    return False


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist", choices=DATASETS)
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--init", default="torch", choices=INITS)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--lr", type=float, default=1e-3)
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=600)
    budget.add_argument("--epochs", type=int, default=None, help="epochs instead of --steps")
    p.add_argument("--batch_size", type=int, default=512)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--alpha_min", type=float, default=0.2)
    p.add_argument("--plain", action="store_true", help="no LBE term (the task loss alone)")
    p.add_argument("--max_grad_norm", type=float, default=0.0, help="clip the gradient norm (0 = off, as before)")
    p.add_argument(
        "--batches",
        default="epoch",
        choices=["epoch", "replacement"],
        help="'epoch': a permutation per epoch (last batch smaller); 'replacement': each batch drawn with replacement",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results", type=Path, default=None, help="append one JSON line per run here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.epochs is not None:
        args.steps = None  # the budget is the epochs; the row records total_steps
    for seed in args.seeds:
        if args.results is not None and _done(args, seed):
            print(f"skip (done) seed {seed}: already in {args.results}", flush=True)
            continue
        result = run(args, seed)
        print(json.dumps(result), flush=True)
        if args.results is not None:
            with args.results.open("a", encoding="utf-8") as f:
                f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
