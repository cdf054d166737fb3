"""What LBE costs per training step and in peak memory: `LBETrainer` vs the plain `transformers.Trainer`.

Same model weights (same seed), data, batch and `TrainingArguments` for both arms. Step time: the two trainers run
alternating blocks of steps in one process after a warm-up block each, and the script prints the median step time
of each arm and their ratio. Peak memory: a fresh process per arm (peak RSS after a few steps), run alternately.

    python scripts/benchmarks/overhead.py --models fnn minilm
    python scripts/benchmarks/overhead.py --models fnn --blocks 10 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from bench_fnn import peak_rss_mib, reset_peak_rss, window_peak_rss_mib
from bench_timing import BENCH_MODELS, build_bench_trainer, lbe_term_ms, time_blocks

# The shared data sets beside this checkout (glue/, mnist/), unless LBE_DATA_DIR says otherwise.
os.environ.setdefault("LBE_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["fnn", "minilm"], choices=sorted(BENCH_MODELS))
    p.add_argument("--blocks", type=int, default=6, help="timed blocks per arm, alternating A/B (after warm-up)")
    p.add_argument("--block_steps", type=int, default=None, help="steps per block (default: per model)")
    p.add_argument("--memory_steps", type=int, default=None, help="steps in each memory process (default: per model)")
    p.add_argument("--memory_repeats", type=int, default=2, help="memory processes per arm, alternating")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--memory_probe", nargs=2, metavar=("MODEL", "ARM"), help=argparse.SUPPRESS)
    return p


def memory_probe(model: str, arm: str, steps: int) -> None:
    """Child process: train `steps` steps of one arm, print its peak RSS as JSON (nothing else measured)."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_bench_trainer(model, arm == "lbe", tmp, steps)
        before = peak_rss_mib()
        reset_peak_rss()
        trainer.train()
    print(
        json.dumps(
            {"peak_rss_mib": peak_rss_mib(), "before_train_mib": before, "train_peak_mib": window_peak_rss_mib()}
        )
    )


def measure_memory(model: str, steps: int, repeats: int, threads: int | None) -> dict[str, list[float]]:
    out: dict[str, list[dict]] = {"plain": [], "lbe": []}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for _ in range(repeats):
        for arm in ("plain", "lbe"):
            cmd = [sys.executable, __file__, "--memory_probe", model, arm, "--memory_steps", str(steps)]
            if threads:
                cmd += ["--threads", str(threads)]
            done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            out[arm].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        model, arm = args.memory_probe
        memory_probe(model, arm, args.memory_steps or BENCH_MODELS[model]["memory_steps"])
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs", flush=True)
    results = {}
    for model in args.models:
        spec = BENCH_MODELS[model]
        times = time_blocks(model, args.blocks, args.block_steps or spec["block_steps"])
        term = lbe_term_ms(model)
        mem = measure_memory(model, args.memory_steps or spec["memory_steps"], args.memory_repeats, args.threads)
        plain_t, lbe_t = statistics.median(times["plain"]), statistics.median(times["lbe"])
        plain_m, lbe_m = (statistics.median(r["peak_rss_mib"] for r in mem[arm]) for arm in ("plain", "lbe"))
        plain_w, lbe_w = (
            statistics.median(r["train_peak_mib"] or r["peak_rss_mib"] for r in mem[arm]) for arm in ("plain", "lbe")
        )
        results[model] = {
            "description": spec["description"],
            "steps_timed": {arm: len(times[arm]) for arm in ("plain", "lbe")},
            "median_step_ms": {"plain": 1000 * plain_t, "lbe": 1000 * lbe_t},
            "block_medians_ms": times["block_medians_ms"],
            "time_ratio": lbe_t / plain_t,
            # Each block of one arm next to the adjacent block of the other: robust to slow drifts of the machine.
            "paired_block_ratio": statistics.median(
                lb / pb for pb, lb in zip(times["block_medians_ms"]["plain"], times["block_medians_ms"]["lbe"])
            ),
            "time_target": spec["time_target"],
            "lbe_term": term,
            "term_ratio": 1 + term["lbe_term_ms"] / term["forward_backward_ms"],
            # Peak RSS while training (VmHWM reset after setup): the process peak is reached while importing and
            # loading, before training, and hides the difference.
            "train_peak_mib": {"plain": plain_w, "lbe": lbe_w, "runs": mem},
            "extra_mib": lbe_w - plain_w,
            "memory_ratio": lbe_w / plain_w,
            "process_peak_mib": {"plain": plain_m, "lbe": lbe_m},
        }
        print(json.dumps({model: results[model]}), flush=True)
    print(
        "\n| model | plain ms/step | LBE ms/step | time ratio (target) | paired-block ratio "
        "| LBE term ms / fwd+bwd ms | 1 + term share | training peak RSS "
        "plain / LBE MiB | extra MiB | memory ratio (target 1.05) | process peak RSS plain / LBE MiB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results.values():
        t, w, m = r["median_step_ms"], r["train_peak_mib"], r["process_peak_mib"]
        print(
            f"| {r['description']} | {t['plain']:.1f} | {t['lbe']:.1f} | {r['time_ratio']:.3f} ({r['time_target']}) "
            f"| {r['paired_block_ratio']:.3f} | {r['lbe_term']['lbe_term_ms']:.1f} / "
            f"{r['lbe_term']['forward_backward_ms']:.0f} | {r['term_ratio']:.3f} "
            f"| {w['plain']:.0f} / {w['lbe']:.0f} | {r['extra_mib']:+.1f} "
            f"| {r['memory_ratio']:.3f} | {m['plain']:.0f} / {m['lbe']:.0f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
