"""Validate `lbe-hf diagnose`'s criterion on the trainability benchmark's vanilla FNNs (MNIST, width 256).

For each (init, depth, seed) the diagnosis runs on a fresh net exactly as the CLI does (forward stage on 512
held-out MNIST images, then the training probe), and its verdict is compared with whether that net trains: plain
Adam (lr 1e-3, batch 512, 600 steps) reaching more than 20% test accuracy. That ground truth comes from
`--results` (the trainability benchmark's JSON files, plain runs) where they have the run, else from earlier
reference measurements of the same configurations (marked "ref").

    python scripts/benchmarks/diagnose_validation.py --nets torch:10 torch:30 torch:50 he:10 he:30 he:50 he:100
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from bench_fnn import FNNRun

from lbe_hf.cli.diagnose import diagnose
from lbe_hf.models import FNNConfig, FNNForImageClassification
from lbe_hf.tasks.data import default_mnist_folder, mnist_split

# The shared data sets beside this checkout (glue/, mnist/), unless LBE_DATA_DIR says otherwise.
os.environ.setdefault("LBE_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))


ROOT = Path(__file__).resolve().parents[2]
# Plain-run test accuracy (%) after 600 Adam steps at lr 1e-3 reported in MEASURED.md (minimal implementation) and
# in the issue (torch-init depth 10 "trains to ~88%"); used only where --results has no such run.
REFERENCE_ACCURACY = {
    ("torch", 10): 88.0,
    ("torch", 30): 11.5,
    ("torch", 50): 11.5,
    ("he", 30): 91.7,
    ("he", 50): 70.7,
    ("he", 100): 11.5,
}
TRAINS_ABOVE = 20.0


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--nets", nargs="+", default=["torch:10", "torch:30", "torch:50", "he:10", "he:30", "he:50", "he:100"]
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--probe_steps", type=int, default=30)
    p.add_argument("--probe_batch_size", type=int, default=128)
    p.add_argument(
        "--results",
        type=Path,
        nargs="+",
        default=[ROOT / "docs" / "results" / "trainability_results.json"],
        help="trainability benchmark JSON files with plain runs (ground truth)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "diagnose_validation.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train_missing", action="store_true", help="train the plain run where no accuracy is known")
    return p


def ground_truth(results: dict, init: str, depth: int, seed: int) -> tuple[float | None, str]:
    run = results.get(f"mnist01/{init}/d{depth}/s{seed}/lr0.001/n600/plain")
    if run is not None:
        return run["test_accuracy"], "run"
    return REFERENCE_ACCURACY.get((init, depth)), "ref"


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    train, test = mnist_split(default_mnist_folder())
    batch = {"pixel_values": test.pixel_values[:512], "labels": test.labels[:512]}
    train_rows = {"pixel_values": train.pixel_values, "labels": train.labels}
    results = {}
    for path in args.results:
        results.update(json.loads(path.read_text()) if path.is_file() else {})
    rows = []
    print(
        "| init | depth | seed | min rel. spread | collapsed layers | probe: held-out loss (label entropy) | "
        "min spread after probe | diagnosis | plain acc. % (source) | hit |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for net in args.nets:
        init, depth = net.split(":")[0], int(net.split(":")[1])
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = FNNForImageClassification(FNNConfig(depth=depth, init=init))
            start = time.perf_counter()
            d = diagnose(
                model,
                batch,
                train=train_rows,
                probe_steps=args.probe_steps,
                probe_batch_size=args.probe_batch_size,
                seed=seed,
            )
            seconds = time.perf_counter() - start
            acc, source = ground_truth(results, init, depth, seed)
            if acc is None and args.train_missing:
                with tempfile.TemporaryDirectory() as tmp:
                    acc, source = FNNRun("mnist01", depth, init, seed, 1e-3, None).execute(tmp)["test_accuracy"], "run"
            trains = None if acc is None else acc > TRAINS_ABOVE
            hit = None if trains is None else trains == (not d.collapsed)
            p = d.probe
            stage = "stage 1" if d.collapsed_layers else "probe"
            verdict = f"collapsed ({stage})" if d.collapsed else "healthy"
            rows.append(
                {
                    "init": init,
                    "depth": depth,
                    "seed": seed,
                    "min_spread": min(d.spread),
                    "collapsed_layers": len(d.collapsed_layers),
                    "probe": p,
                    "collapsed": d.collapsed,
                    "plain_accuracy": acc,
                    "source": source,
                    "hit": hit,
                    "seconds": seconds,
                    "entropy": d.entropy,
                    "spread": d.spread,
                }
            )
            print(
                f"| {init} | {depth} | {seed} | {min(d.spread):.2g} | {len(d.collapsed_layers)}/{depth} | "
                f"{p['loss_before']:.3f} -> {p['loss_after']:.3f} ({p['label_entropy']:.3f}) | "
                f"{min(p['spread_after']):.2g} | {verdict} | {'?' if acc is None else f'{acc:.1f}'} ({source}) | "
                f"{'-' if hit is None else ('hit' if hit else 'MISS')} |",
                flush=True,
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(rows, indent=1))  # after every net: an interrupted run keeps its rows
    scored = [r for r in rows if r["hit"] is not None]
    print(f"\n{sum(r['hit'] for r in scored)}/{len(scored)} hits; details in {args.out}")


if __name__ == "__main__":
    main()
