"""Peak memory and step time of LBE training steps on realistic models: plain, LBE, and LBE with deferred gradients.

Each arm runs in its own process (single thread), builds a randomly initialised model from its config class, runs
one warm-up step, then `--steps` measured steps (forward through `LBERegularizer` with the default targets,
backward, gradients set to None), and one more step under `torch.profiler` for its tensor memory. Models:

- `bert`: `BertConfig()` defaults (12 layers, hidden 768, intermediate 3072), sequence classification,
  batch 8, sequence 128;
- `llama`: `LlamaConfig` with 8 layers, hidden 1024, intermediate 2816, vocabulary 32000, causal LM,
  batch 4, sequence 256;
- `fnn`: for comparison, the vanilla ReLU FNN of the overhead benchmark (depth 50, width 256, PyTorch's default
  init), batch 512 of 784 random inputs (not in the default `--models`);

each in float32 and under `torch.autocast("cpu", dtype=torch.bfloat16)`. Arms: `plain` (no LBE), `lbe` (the LBE
gradients returned by the variance node) and `deferred` (gradients added by tensor hooks as backward reaches each
layer; it needs an lbe_hf whose `lbe_hf.entropy` still provides `DeferredGradients`, dropped for the results in
docs/results/deferral_memory.md). Two memory figures per step:

- `tensor_peak_mib`: parameters and buffers plus the highest sum of live tensor allocations during the step, from
  the profiler's allocation events (exact, independent of the allocator);
- `rss_peak_mib`: the process's peak resident set size over the step (median over the steps), with glibc's mmap
  threshold fixed at 64 KiB so that freed tensors leave the RSS at once; `rss_step_start_mib` is the RSS before it.

    python scripts/benchmarks/deferral_memory.py --out docs/results/deferral_memory.json
    python scripts/benchmarks/deferral_memory.py --run bert fp32 lbe   # one arm, printed as JSON
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

# The shared data sets beside this checkout (glue/, mnist/), unless LBE_DATA_DIR says otherwise.
os.environ.setdefault("LBE_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))


MODELS = ("bert", "llama", "fnn")
DTYPES = ("fp32", "bf16")
ARMS = ("plain", "lbe", "deferred")


def build(name: str, seed: int = 0):
    """The model and one fixed batch (random tokens, labels)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if name == "fnn":
        from lbe_hf.models import FNNConfig, FNNForImageClassification

        model = FNNForImageClassification(FNNConfig(input_dim=784, depth=50, width=256, init="torch"))
        return model.train(), {"pixel_values": torch.randn(512, 784), "labels": torch.randint(0, 10, (512,))}
    if name == "bert":
        model = BertForSequenceClassification(BertConfig())
        batch, seq = 8, 128
        labels = torch.randint(0, 2, (batch,))
    else:
        config = LlamaConfig(
            num_hidden_layers=8,
            hidden_size=1024,
            intermediate_size=2816,
            num_attention_heads=16,
            num_key_value_heads=16,
            vocab_size=32000,
            max_position_embeddings=256,
        )
        model = LlamaForCausalLM(config)
        batch, seq = 4, 256
        labels = None
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids if labels is None else labels}
    return model.train(), inputs


def tensor_peak_bytes(step) -> int:
    """Highest sum of live tensor bytes allocated during `step()` (above what was live before it)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def rss_mib(field: str = "VmRSS") -> float:
    """Current resident set size (VmRSS), or its peak since `reset_peak_rss` (VmHWM), in MiB (Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(field + ":"))


def reset_peak_rss() -> None:
    """Restarts the kernel's peak-RSS counter (VmHWM), so that it covers one step only."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def run_arm(model_name: str, dtype: str, arm: str, steps: int) -> dict:
    import torch

    import lbe_hf.entropy
    from lbe_hf import BatchEntropyConfig
    from lbe_hf.regularizer import LBERegularizer

    torch.set_num_threads(1)
    model, inputs = build(model_name)
    reg, deferred_layers = None, []
    if arm != "plain":
        reg = LBERegularizer(model, BatchEntropyConfig())
        hooks = getattr(reg, "_grad_hooks", None)
        if arm == "deferred" and not hasattr(lbe_hf.entropy, "DeferredGradients"):
            raise SystemExit("this lbe_hf has no DeferredGradients: the deferred arm can't run")
        if hooks is not None:
            hooks.enabled = arm == "deferred"
            prepare = hooks.prepare

            def counting_prepare(activations):  # records how many layers this forward really defers
                deferred, pending = prepare(activations)
                deferred_layers.append(sum(deferred))
                return deferred, pending

            hooks.prepare = counting_prepare
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()

    def step():
        with reg.capture() if reg is not None else contextlib.nullcontext(), autocast:
            loss = model(**inputs).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss

    step()  # warm-up: allocator, lazy inits, the alphas' first gradient
    times, rss, rss_start = [], [], []
    for _ in range(steps):
        rss_start.append(rss_mib())
        reset_peak_rss()
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        rss.append(rss_mib("VmHWM"))
    held = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    peak = tensor_peak_bytes(step)
    result = {
        "model": model_name,
        "dtype": dtype,
        "arm": arm,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "regularized_layers": reg.num_layers if reg is not None else 0,
        "deferred_layers_per_step": deferred_layers[-1] if deferred_layers else 0,
        "params_buffers_mib": round(held / 2**20, 1),
        "tensor_peak_mib": round((held + peak) / 2**20, 1),
        "rss_peak_mib": round(statistics.median(rss), 1),
        "rss_peak_mib_steps": rss,
        "rss_step_start_mib": round(statistics.median(rss_start), 1),
        "step_s_median": round(statistics.median(times), 2),
        "step_s": [round(t, 2) for t in times],
    }
    if reg is not None and getattr(reg, "_grad_hooks", None) is not None:
        result["deferral_enabled_at_end"] = reg._grad_hooks.enabled
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", nargs=3, metavar=("MODEL", "DTYPE", "ARM"), help="one arm in this process")
    parser.add_argument("--models", nargs="+", default=["bert", "llama"], choices=MODELS)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--arms", nargs="+", default=None, choices=ARMS, help="default: all this lbe_hf can run")
    parser.add_argument("--steps", type=int, default=2, help="measured steps per arm (after one warm-up)")
    parser.add_argument("--out", help="JSON file for all arms")
    args = parser.parse_args(argv)
    if args.run:
        print(json.dumps(run_arm(*args.run, steps=args.steps)))
        return
    if args.arms is None:
        import lbe_hf.entropy

        args.arms = [a for a in ARMS if a != "deferred" or hasattr(lbe_hf.entropy, "DeferredGradients")]

    import torch
    import transformers

    # Fixed mmap threshold: every tensor above 64 KiB is its own mapping, returned to the system when freed, so the
    # RSS peak follows the live tensors instead of glibc's (adaptive) heap.
    env = dict(os.environ, OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="65536", HF_HUB_OFFLINE="1")
    results = []
    for model_name in args.models:
        for dtype in args.dtypes:
            for arm in args.arms:
                command = [sys.executable, __file__, "--run", model_name, dtype, arm, "--steps", str(args.steps)]
                done = subprocess.run(command, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    print(done.stderr[-2000:], file=sys.stderr)
                    raise SystemExit(f"arm {model_name} {dtype} {arm} failed")
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(results[-1]), flush=True)
    summary = {
        "command": "python scripts/benchmarks/deferral_memory.py " + " ".join(argv or sys.argv[1:]),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, 1 thread per arm",
        "arms": results,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
