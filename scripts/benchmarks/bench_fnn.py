"""Reusable parts of the benchmark scripts (`scripts/benchmarks/`): FNN runs, entropy probes, step timing, memory.

Each FNN run trains a fresh vanilla FNN with the real `transformers.Trainer` (plain) or `LBETrainer` (LBE) from the
same seed, so the two arms start from identical weights and see the same batches.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator, set_seed

from lbe_hf.checkpoint import get_last_complete_checkpoint
from lbe_hf.collect import measure_entropies, resolve_target_modules
from lbe_hf.config import BatchEntropyConfig
from lbe_hf.entropy import effective_rank
from lbe_hf.models import FNNConfig, FNNForImageClassification
from lbe_hf.models.fnn import lsuv_init
from lbe_hf.tasks.data import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    MNIST_MEAN,
    MNIST_STD,
    TensorDictDataset,
    default_mnist_folder,
    digits_split,
    fashion_mnist_split,
    mnist_split,
)
from lbe_hf.trainer import LBETrainer

DATASETS = ("mnist", "digits", "mnist01", "digits01", "fashion")
# The data sets AugmentingCollator can augment: their standardisation (mean, std in [0, 1] pixel space).
AUGMENTED = {"mnist": (MNIST_MEAN, MNIST_STD), "fashion": (FASHION_MNIST_MEAN, FASHION_MNIST_STD)}


def load_split(name: str) -> tuple[TensorDictDataset, TensorDictDataset]:
    """'mnist' (the shared 10k MNIST images, 8000 train / 2000 test), 'digits' (scikit-learn, 80/20) or 'fashion'
    (full Fashion-MNIST, 60k / 10k, standardised; `lbe_hf.tasks.data.fashion_mnist_split` says where it is read from).

    Pixels standardised to mean 0, std 1, as the authors' MNIST experiments do (`Normalize((0.1307,), (0.3081,))`);
    'mnist01' / 'digits01' keep raw [0, 1] pixels (about 3x smaller inputs). The two give different trainability
    numbers for the collapsed nets (docs/benchmarks.md reports both), so they are separate datasets here.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}.")
    normalize = not name.endswith("01")
    if name == "fashion":
        return fashion_mnist_split(normalize=True)
    if name.startswith("mnist"):
        return mnist_split(default_mnist_folder(), normalize=normalize)
    return digits_split(normalize=normalize)


def build_fnn(
    input_dim: int, depth: int, init: str, seed: int, width: int = 256, residual: bool = False
) -> FNNForImageClassification:
    """A vanilla ReLU FNN whose weights depend only on `seed` (same start for the plain and the LBE arm).

    init="lsuv" still needs `lsuv_init(model, batch)` (`FNNRun` does it on its probe batch).
    """
    set_seed(seed)
    config = FNNConfig(input_dim=input_dim, depth=depth, width=width, init=init, residual=residual)
    return FNNForImageClassification(config)


class EntropyProbe(TrainerCallback):
    """Per-layer batch entropy (eq. 3) of the regularized layers on one fixed training batch, at logging steps.

    Measured the same way (no grad, same batch) for the plain and the LBE arm, so their curves compare; the
    paper's Fig. 2/6 plot this quantity over training. `history`: list of (step, [H_1, ..., H_L]).

    Alongside, what eq. 3 cannot see (it scores each neuron alone): `rank_history`, the effective rank of each
    layer's centred batch of activations (`effective_rank`), and `constant_history`, the fraction of its neurons
    that output the same value for every sample of the batch (a dead ReLU, say).
    """

    def __init__(self, model: torch.nn.Module, batch: torch.Tensor, constant: float):
        self.model, self.batch, self.constant = model, batch, constant
        self.names = resolve_target_modules(model)
        self.history: list[tuple[int, list[float]]] = []
        self.rank_history: list[tuple[int, list[float]]] = []
        self.constant_history: list[tuple[int, list[float]]] = []

    def probe(self, step: int) -> None:
        seen = measure_entropies(self.model, self.names, lambda: self.model(pixel_values=self.batch), self.constant)
        # Rounded (entropies to 4 significant digits, ranks to 0.01, fractions to 1e-4): enough to read and plot,
        # and the results JSON of a 500-layer run stays small.
        self.history.append((step, [float(f"{h:.4g}") for h in seen.entropies.tolist()]))
        flat = [out.float().flatten(1) for out in seen.activations]
        self.rank_history.append((step, [round(effective_rank(x), 2) for x in flat]))
        constant = [round(float((x.amax(0) == x.amin(0)).float().mean()), 4) for x in flat]
        self.constant_history.append((step, constant))

    def on_train_begin(self, args, state, control, **kwargs):
        if all(step != state.global_step for step, _ in self.history):  # a resumed run has its start already
            self.probe(state.global_step)

    def on_log(self, args, state, control, **kwargs):
        if not self.history or self.history[-1][0] != state.global_step:
            self.probe(state.global_step)


class StepTimer(TrainerCallback):
    """Wall time between consecutive optimizer steps (forward, backward, optimizer, logging, next batch)."""

    def __init__(self):
        self.times: list[float] = []
        self._last: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self._last is None:
            self._last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now


def fnn_training_args(
    output_dir: str,
    lr: float,
    steps: int,
    batch_size: int,
    seed: int,
    logging_steps: int,
    *,
    epochs: int | None = None,
    max_grad_norm: float = 0.0,
    lr_scheduler: str = "constant",
    warmup_ratio: float = 0.0,
    save_steps: int | None = None,
):
    """Adam (no weight decay) at a constant lr without clipping by default: the paper's optimisation of the vanilla
    nets. `epochs` (num_train_epochs) replaces `steps` when given; `max_grad_norm` 0 is no clipping (Trainer's own
    default is 1.0); `save_steps`: a checkpoint every so many steps, only the last one kept."""
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio is a fraction of the run in [0, 1), got {warmup_ratio}.")
    if warmup_ratio and lr_scheduler == "constant":
        lr_scheduler = "constant_with_warmup"  # transformers' "constant" schedule ignores the warm-up steps
    return TrainingArguments(
        output_dir=output_dir,
        learning_rate=lr,
        max_steps=steps if epochs is None else -1,
        num_train_epochs=epochs if epochs is not None else 3.0,
        per_device_train_batch_size=batch_size,
        lr_scheduler_type=lr_scheduler,
        warmup_steps=warmup_ratio,  # a float in [0, 1) is a fraction of the run (transformers 5: no warmup_ratio)
        weight_decay=0.0,
        max_grad_norm=max_grad_norm,
        seed=seed,
        data_seed=seed,
        logging_steps=logging_steps,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_total_limit=1,
        eval_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        logging_nan_inf_filter=False,
    )


class AugmentingCollator:
    """`default_data_collator`, then the authors' MNIST training augmentation on each image of the batch:
    `RandomAffine(degrees=20, translate=(0.1, 0.1), scale=(0.9, 1.1))` and `ColorJitter(brightness=0.2,
    contrast=0.2)`, applied in [0, 1] pixel space to standardised 28x28 images (`mean`, `std` undo and redo the
    standardisation). Vectorised (one `affine_grid` + `grid_sample` per batch); draws from torch's global RNG,
    which `Trainer` seeds and restores on resume."""

    def __init__(self, mean: float, std: float, side: int = 28):
        self.mean, self.std, self.side = mean, std, side

    def __call__(self, rows: list[dict]) -> dict:
        batch = default_data_collator(rows)
        x = batch["pixel_values"]
        n = len(x)
        img = (x.reshape(n, 1, self.side, self.side) * self.std + self.mean).clamp(0, 1)
        angle = (torch.rand(n) * 2 - 1) * math.radians(20)
        scale = 0.9 + 0.2 * torch.rand(n)
        shift = (torch.rand(n, 2) * 2 - 1) * 0.2  # 10% of the side, in grid_sample's [-1, 1] coordinates
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = torch.nn.functional.affine_grid(theta, list(img.shape), align_corners=False)
        img = torch.nn.functional.grid_sample(img, grid, padding_mode="zeros", align_corners=False)
        brightness = 0.8 + 0.4 * torch.rand(n, 1, 1, 1)
        img = (img * brightness).clamp(0, 1)
        contrast = 0.8 + 0.4 * torch.rand(n, 1, 1, 1)
        img = (contrast * img + (1 - contrast) * img.mean((1, 2, 3), keepdim=True)).clamp(0, 1)
        batch["pixel_values"] = ((img - self.mean) / self.std).reshape(x.shape)
        return batch


def make_trainer(
    model, args, train_dataset, lbe_config: BatchEntropyConfig | None, callbacks=(), data_collator=None
) -> Trainer:
    """`LBETrainer` when `lbe_config` is given, else the plain `transformers.Trainer` (same everything else)."""
    kwargs = dict(model=model, args=args, train_dataset=train_dataset, callbacks=list(callbacks))
    if data_collator is not None:
        kwargs["data_collator"] = data_collator
    if lbe_config is None:
        return Trainer(**kwargs)
    return LBETrainer(**kwargs, lbe_config=lbe_config)


@torch.no_grad()
def accuracy(model: torch.nn.Module, dataset: TensorDictDataset, batch_size: int = 1000) -> float:
    """Top-1 accuracy in percent; a non-finite logit row counts as wrong."""
    model.eval()
    correct = 0
    for i in range(0, len(dataset), batch_size):
        logits = model(pixel_values=dataset.pixel_values[i : i + batch_size]).logits
        ok = logits.argmax(-1) == dataset.labels[i : i + batch_size]
        correct += int((ok & torch.isfinite(logits).all(-1)).sum())
    return 100.0 * correct / len(dataset)


class RunRecorder(TrainerCallback):
    """Test-accuracy curve (the paper's Fig. 7) every `curve_every` steps and a progress line each time; saves the
    callbacks' histories into every checkpoint (`RECORDER_FILE`) so a resumed run continues them.

    `curve`: list of (step, test accuracy %). The probe's and timer's lists are saved and restored with it.
    """

    def __init__(self, model, test, probe, timer, curve_every: int, name: str, log: Callable[[str], None] = print):
        self.model, self.test, self.probe, self.timer = model, test, probe, timer
        self.curve_every, self.name, self.log = curve_every, name, log
        self.curve: list[tuple[int, float]] = []
        self.seconds_before = 0.0  # training time of earlier processes (a resumed run)
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.start

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.curve_every and state.global_step < state.max_steps:
            return
        was_training = self.model.training
        acc = accuracy(self.model, self.test)
        self.model.train(was_training)
        self.curve.append((state.global_step, round(acc, 2)))
        losses = [log["loss"] for log in state.log_history if "loss" in log]
        ms = statistics.median(self.timer.times[-50:]) * 1000 if self.timer.times else float("nan")
        loss = f"{losses[-1]:.3f}" if losses else "-"
        self.log(
            f"{self.name} step {state.global_step}/{state.max_steps}: test {acc:.1f}% loss {loss} "
            f"({ms:.0f} ms/step, {self.seconds():.0f} s)"
        )

    def state_dict(self) -> dict:
        return {
            "curve": self.curve,
            "seconds": self.seconds(),
            "step_times": self.timer.times,
            "probe_entropy": self.probe.history,
            "probe_effective_rank": self.probe.rank_history,
            "probe_constant_fraction": self.probe.constant_history,
        }

    def load_state_dict(self, saved: dict) -> None:
        self.curve = [tuple(c) for c in saved["curve"]]
        self.seconds_before, self.start = saved["seconds"], time.perf_counter()
        self.timer.times = list(saved["step_times"])
        self.probe.history = [tuple(h) for h in saved["probe_entropy"]]
        self.probe.rank_history = [tuple(h) for h in saved["probe_effective_rank"]]
        self.probe.constant_history = [tuple(h) for h in saved["probe_constant_fraction"]]

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        tmp = os.path.join(folder, RECORDER_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.state_dict(), f)
        os.replace(tmp, os.path.join(folder, RECORDER_FILE))


RECORDER_FILE = "benchmark_recorder.json"


@dataclass
class FNNRun:
    """One trainability run: what was trained and what came out.

    `steps` is the budget unless `epochs` is given. Runs with the settings of the first (600-step) sweep
    (`LEGACY`: width 256, no residual, steps, no clipping, constant lr, no warm-up) keep that sweep's key; any other
    run's key names every setting, so results of different settings never share a key.
    """

    dataset: str
    depth: int
    init: str
    seed: int
    lr: float
    lbe: dict | None  # BatchEntropyConfig fields, None for the plain Trainer
    steps: int = 600
    batch_size: int = 512
    results: dict = field(default_factory=dict)
    epochs: int | None = None
    max_grad_norm: float = 0.0
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    width: int = 256
    residual: bool = False
    augment: bool = False  # the authors' training augmentation (AugmentingCollator); MNIST-format data only

    LEGACY = {
        "epochs": None,
        "max_grad_norm": 0.0,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "width": 256,
        "residual": False,
        "augment": False,
    }

    @property
    def key(self) -> str:
        lbe = "plain" if self.lbe is None else "lbe(" + ",".join(f"{k}={v}" for k, v in sorted(self.lbe.items())) + ")"
        if all(getattr(self, k) == v for k, v in self.LEGACY.items()):
            return f"{self.dataset}/{self.init}/d{self.depth}/s{self.seed}/lr{self.lr:g}/n{self.steps}/{lbe}"
        arch = self.init + ("+res" if self.residual else "")
        budget = f"e{self.epochs}" if self.epochs is not None else f"n{self.steps}"
        return (
            f"{self.dataset}/{arch}/d{self.depth}/w{self.width}/s{self.seed}/lr{self.lr:g}/b{self.batch_size}/"
            f"{budget}/clip{self.max_grad_norm:g}/{self.lr_scheduler}/wu{self.warmup_ratio:g}/"
            + ("aug/" if self.augment else "")
            + lbe
        )

    def total_steps(self, n_train: int) -> int:
        return self.steps if self.epochs is None else self.epochs * math.ceil(n_train / self.batch_size)

    def execute(
        self,
        output_dir: str,
        logging_steps: int = 25,
        save_to: str | None = None,
        *,
        save_every: int | None = None,
        curve_every: int | None = None,
        callbacks=(),
        log: Callable[[str], None] = print,
    ) -> dict:
        """Trains and measures.

        Args:
            output_dir: the Trainer's folder. With `save_every`, a checkpoint every so many steps (the last one
                kept) goes there, and a run restarted on the same folder resumes from its last complete checkpoint.
            save_to: also write the trained model there (`save_model`, alphas included).
            curve_every: test accuracy every so many steps (and at the end); default: 20 points over the run.
            callbacks: more `TrainerCallback`s.
        """
        train, test = load_split(self.dataset)
        model = build_fnn(train.pixel_values.shape[1], self.depth, self.init, self.seed, self.width, self.residual)
        if self.init == "lsuv":
            lsuv_init(model, train.pixel_values[: self.batch_size])
        config = None if self.lbe is None else BatchEntropyConfig(**self.lbe)
        probe = EntropyProbe(model, train.pixel_values[: self.batch_size], (config or BatchEntropyConfig()).constant)
        timer = StepTimer()
        total = self.total_steps(len(train))
        curve_every = curve_every or max(1, total // 20)
        recorder = RunRecorder(model, test, probe, timer, curve_every, self.key, log)
        args = fnn_training_args(
            output_dir, self.lr, self.steps, self.batch_size, self.seed, logging_steps, epochs=self.epochs,
            max_grad_norm=self.max_grad_norm, lr_scheduler=self.lr_scheduler, warmup_ratio=self.warmup_ratio,
            save_steps=save_every,
        )  # fmt: skip
        collator = None
        if self.augment:
            if self.dataset not in AUGMENTED:
                raise ValueError(f"augment needs 28x28 images standardised by known statistics: {sorted(AUGMENTED)}")
            collator = AugmentingCollator(*AUGMENTED[self.dataset])
        trainer = make_trainer(
            model, args, train, config, callbacks=(probe, timer, recorder, *callbacks), data_collator=collator
        )
        resume = get_last_complete_checkpoint(output_dir) if save_every else None
        if resume is not None and not os.path.isfile(os.path.join(resume, RECORDER_FILE)):
            log(f"{self.key}: {resume} has no {RECORDER_FILE} (killed while saving?); starting over")
            resume = None
        if resume is not None:
            with open(os.path.join(resume, RECORDER_FILE), encoding="utf-8") as f:
                recorder.load_state_dict(json.load(f))
            log(f"{self.key}: resuming from {resume}")
        trainer.train(resume_from_checkpoint=resume)
        if save_to is not None:
            trainer.save_model(save_to)
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        self.results = {
            "test_accuracy": accuracy(model, test),
            "train_accuracy": accuracy(model, train),
            "final_loss": losses[-1] if losses else None,
            "seconds": recorder.seconds(),
            "total_steps": trainer.state.global_step,
            "resumed_from": None if resume is None else int(resume.rsplit("-", 1)[1]),
            "median_step_s": statistics.median(timer.times) if timer.times else None,
            "test_curve": recorder.curve,
            "probe_entropy": probe.history,
            "probe_effective_rank": probe.rank_history,
            "probe_constant_fraction": probe.constant_history,
            "alphas": trainer.alphas.tolist() if config is not None else None,
            "log_history": [{k: v for k, v in log.items() if k in LOG_KEYS} for log in trainer.state.log_history],
        }
        return self.results


LOG_KEYS = ("step", "loss", "task_loss", "lbe_loss", "entropy_mean", "entropy_min", "alpha_mean", "lbe_skipped")


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> bool:
    """Restarts the kernel's peak-RSS counter (VmHWM) so `window_peak_rss_mib` sees one phase only (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def window_peak_rss_mib() -> float | None:
    """VmHWM in MiB: peak RSS since the last `reset_peak_rss()` (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
