"""Does LBE leak memory over a run? Resident memory after 200 training steps, plain Trainer vs LBETrainer.

    python scripts/benchmarks/rss_growth.py --steps 200

Each arm runs in a fresh process (tiny random BERT, hidden 64, 2 layers, batch 16 x 64 tokens). A callback reads the
current RSS (/proc/self/statm) after every step; the script prints, per arm, the RSS at the first sample (after the
warm-up steps) and at the last, and the growth in between. A hook that kept each step's activations alive would add
batch * seq * hidden * 4 bytes per layer and step (~0.5 MiB here, ~100 MiB over 200 steps).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# The shared data sets beside this checkout (glue/, mnist/), unless LBE_DATA_DIR says otherwise.
os.environ.setdefault("LBE_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))


WARMUP = 20


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def probe(arm: str, steps: int) -> None:
    """Child process: train `steps` steps of one arm, print the RSS after each step as JSON."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

    from lbe_hf import LBETrainer

    class Rss(TrainerCallback):
        def __init__(self):
            self.samples: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.samples.append(current_rss_mib())

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, num_labels=2
    )
    model = BertForSequenceClassification(config)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 512, (16 * steps, 64), generator=g)
    rows = [{"input_ids": ids[i], "labels": torch.tensor(i % 2)} for i in range(len(ids))]
    rss = Rss()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=16,
            max_steps=steps,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            logging_steps=50,
        )
        kwargs = dict(model=model, args=args, train_dataset=rows, callbacks=[rss])
        trainer = LBETrainer(**kwargs) if arm == "lbe" else Trainer(**kwargs)
        trainer.train()
    print(json.dumps(rss.samples))


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--probe", choices=["plain", "lbe"], default=None, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = make_parser().parse_args()
    if args.probe:
        probe(args.probe, args.steps)
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    results = {}
    for arm in ("plain", "lbe"):
        cmd = [sys.executable, __file__, "--probe", arm, "--steps", str(args.steps)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        samples = json.loads(done.stdout.strip().splitlines()[-1])
        start, end = samples[WARMUP - 1], samples[-1]
        results[arm] = {"rss_after_warmup_mib": start, "rss_at_end_mib": end, "growth_mib": end - start}
        print(
            f"{arm:5s}: RSS after step {WARMUP} {start:.1f} MiB, after step {len(samples)} {end:.1f} MiB, "
            f"growth {end - start:+.1f} MiB"
        )
    extra = results["lbe"]["growth_mib"] - results["plain"]["growth_mib"]
    print(f"LBE growth minus plain growth over steps {WARMUP}..{args.steps}: {extra:+.1f} MiB")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
