#!/usr/bin/env python
"""The paper's deep autoencoders (Peer et al., TMLR 2022, Table 3) as a resumable benchmark.

    python benchmarks/autoencoder/run.py                          # every experiment not yet in results.jsonl
    python benchmarks/autoencoder/run.py --filter dataset=mnist,depth=10|25
    python benchmarks/autoencoder/run.py --dry_run                # list what is missing, run nothing
    python benchmarks/autoencoder/run.py --report                 # regenerate README.md from results.jsonl only

Experiments are data (`experiments.json`: grids of dataset x depth x arm x optimizer x seed, in priority order),
shared settings are data (`defaults.json`), results are data (`results.jsonl`, one line per finished run, keyed by
all experiment fields). Each run trains with Trainer checkpoints under `runs/autoencoder/<run name>/` (one per
epoch, the last kept) and an interrupted run resumes from its last complete checkpoint when the command is rerun.
The plain arm is `transformers.Trainer`, the LBE arms `lbe_hf.LBETrainer`; both get the same seed, data, model
initialisation, optimizer and schedule. After every finished run the README is regenerated (`report.py`).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import argparse  # noqa: E402
import base64  # noqa: E402
import contextlib  # noqa: E402
import fcntl  # noqa: E402
import importlib  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # report.py
DEFAULT_RESULTS = HERE / "results.jsonl"
DEFAULT_RUNS_DIR = ROOT / "runs" / "autoencoder"  # /runs/ is in the repository's .gitignore
EXPERIMENT_FIELDS = ("dataset", "depth", "arm", "optimizer", "seed")
DATASETS = ("mnist", "fashion")
# Command-line overrides of defaults.json: they become fields of the experiment (and so of its key).
OVERRIDES = ("epochs", "max_train_samples", "max_eval_samples", "synthetic_data")


# ---- experiments, keys, results --------------------------------------------------------------------------------


def load_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def expand(experiments: dict) -> list[dict]:
    """The grids of experiments.json as a list of experiments, in file order; seed varies slowest in a group."""
    out, seen = [], set()
    for group in experiments["groups"]:
        lists = [group["seed"], group["dataset"], group["depth"], group["optimizer"], group["arm"]]
        for seed, dataset, depth, optimizer, arm in itertools.product(*lists):
            exp = {"dataset": dataset, "depth": depth, "arm": arm, "optimizer": optimizer, "seed": seed}
            if key_of(exp) not in seen:
                seen.add(key_of(exp))
                out.append(exp)
    return out


def key_of(experiment: dict) -> str:
    """The results key: every field of the experiment (overrides included), as canonical JSON."""
    return json.dumps(experiment, sort_keys=True, separators=(",", ":"))


def run_name(experiment: dict) -> str:
    e = experiment
    name = f"{e['dataset']}_d{e['depth']}_{e['arm']}_{e['optimizer']}_s{e['seed']}"
    extras = sorted(k for k in e if k not in EXPERIMENT_FIELDS)
    return name + "".join(f"_{k}-{str(e[k]).lower()}" for k in extras)


def read_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill while writing: ignored, the run reruns
                print(f"warning: {path}:{number} is not JSON; ignored", file=sys.stderr)
    return rows


def append_result(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def parse_filter(text: str | None) -> dict[str, set[str]]:
    """`dataset=mnist,depth=10|25` -> {"dataset": {"mnist"}, "depth": {"10", "25"}} (values compared as text)."""
    if not text:
        return {}
    selection = {}
    for part in text.split(","):
        if "=" not in part:
            raise SystemExit(f"--filter: {part!r} is not field=value (e.g. dataset=mnist,depth=10|25)")
        field, values = part.split("=", 1)
        field = field.strip()
        if field not in EXPERIMENT_FIELDS:
            raise SystemExit(f"--filter: unknown field {field!r}; fields: {', '.join(EXPERIMENT_FIELDS)}")
        selection[field] = {v.strip() for v in values.split("|")}
    return selection


def matches(experiment: dict, selection: dict[str, set[str]]) -> bool:
    return all(str(experiment[field]) in values for field, values in selection.items())


def settings_of(experiment: dict, defaults: dict) -> dict:
    """defaults.json with the experiment's overrides, and the arm's LBE settings: everything a run depends on."""
    settings = {k: v for k, v in defaults.items() if not k.startswith("_") and k not in ("arms", "optimizers")}
    settings.update({k: experiment[k] for k in OVERRIDES if k in experiment})
    if experiment["arm"] not in defaults["arms"]:
        raise SystemExit(f"unknown arm {experiment['arm']!r}; defaults.json has {sorted(defaults['arms'])}")
    if experiment["optimizer"] not in defaults["optimizers"]:
        raise SystemExit(f"unknown optimizer {experiment['optimizer']!r}; have {sorted(defaults['optimizers'])}")
    if experiment["dataset"] not in DATASETS:
        raise SystemExit(f"unknown dataset {experiment['dataset']!r}; have {DATASETS}")
    settings["lbe"] = defaults["arms"][experiment["arm"]]
    return settings


# ---- data ------------------------------------------------------------------------------------------------------


def synthetic_images(n: int, seed: int) -> np.ndarray:
    """(n, 1, 28, 28) float32 in [0, 1]: one to three Gaussian blobs per image (for tests without real data)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    images = np.zeros((n, 28, 28), dtype=np.float32)
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(6, 22, size=2)
            s = rng.uniform(1.5, 4.0)
            images[i] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return np.clip(images, 0.0, 1.0)[:, None]


def load_images(dataset: str, settings: dict):
    """Train / validation / test images as float32 tensors (N, 1, 28, 28) in [0, 1] (the BCE targets).

    mnist: `lbe_hf.tasks.data.mnist_split` ($LBE_DATA_DIR/mnist, MNIST's 10k test images: the first
    `mnist_train_images` train, the rest test). fashion: `fashion_mnist_split` (60k train, 10k test). In both,
    `val_images` of the training images (a fixed random subset, `split_seed`) validate: the validation loss drives
    the learning-rate schedule and the per-epoch curve; the test images are only used at the end.
    """
    import torch

    if settings.get("synthetic_data"):
        pool, test = synthetic_images(1000, 1), synthetic_images(200, 2)
        train_x, test_x = torch.from_numpy(pool), torch.from_numpy(test)
        n_val = min(settings["val_images"][dataset], len(train_x) // 5)
    else:
        from lbe_hf.tasks.data import default_mnist_folder, fashion_mnist_split, mnist_split

        if dataset == "mnist":
            train, test = mnist_split(default_mnist_folder(), n_train=settings["mnist_train_images"])
        else:
            train, test = fashion_mnist_split()
        train_x, test_x = train.pixel_values, test.pixel_values
        n_val = settings["val_images"][dataset]
    train_x, test_x = train_x.reshape(-1, 1, 28, 28), test_x.reshape(-1, 1, 28, 28)
    if float(train_x.min()) < 0 or float(train_x.max()) > 1:
        raise ValueError("pixels must be in [0, 1] for the BCE loss; got standardised data")
    perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(settings["split_seed"]))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    val_x, train_x = train_x[val_idx], train_x[train_idx]
    if settings.get("max_train_samples"):
        train_x = train_x[: settings["max_train_samples"]]
    if settings.get("max_eval_samples"):
        val_x, test_x = val_x[: settings["max_eval_samples"]], test_x[: settings["max_eval_samples"]]
    return train_x.contiguous(), val_x.contiguous(), test_x.contiguous()


def encode_pictures(array: np.ndarray) -> dict:
    """Images in [0, 1] -> a small JSON value (uint8, zlib, base64) for results.jsonl."""
    data = np.clip(np.round(np.asarray(array, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    return {"shape": list(data.shape), "uint8_zlib_b64": base64.b64encode(zlib.compress(data.tobytes(), 9)).decode()}


def decode_pictures(value: dict) -> np.ndarray:
    raw = zlib.decompress(base64.b64decode(value["uint8_zlib_b64"]))
    return np.frombuffer(raw, dtype=np.uint8).reshape(value["shape"]).astype(np.float32) / 255.0


# ---- one run ---------------------------------------------------------------------------------------------------


def _curve(log_history: list[dict]) -> list[dict]:
    """Per epoch: train loss (logged, with the LBE term for LBE arms), task loss, lr, validation loss and MSSIM."""
    epochs: dict[int, dict] = {}
    for entry in log_history:
        if "epoch" not in entry:
            continue
        epoch = round(entry["epoch"])
        row = epochs.setdefault(epoch, {"epoch": epoch})
        if "eval_loss" in entry:
            row["val_loss"] = entry["eval_loss"]
            row["val_mssim"] = entry.get("eval_ssim")
        elif "loss" in entry:
            row["train_loss"] = entry["loss"]
            row["lr"] = entry.get("learning_rate")
            if "task_loss" in entry:
                row["task_loss"] = entry["task_loss"]
    rounded = [{k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()} for row in epochs.values()]
    return [row for row in sorted(rounded, key=lambda row: row["epoch"]) if "val_loss" in row]


def run_one(experiment: dict, settings: dict, runs_dir: Path, keep_checkpoints: bool, command: str) -> dict:
    import torch
    import transformers
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments, set_seed
    from transformers.trainer_utils import get_last_checkpoint
    from transformers.utils import logging as hf_logging

    import lbe_hf
    from lbe_hf import BatchEntropyConfig, LBETrainer, get_last_complete_checkpoint
    from lbe_hf.models.autoencoder import (
        AutoencoderConfig,
        AutoencoderForImageReconstruction,
        reconstruction_metrics,
    )
    from lbe_hf.tasks.data import TensorDictDataset

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    name = run_name(experiment)
    run_dir = runs_dir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    # A run folder belongs to one set of settings: refuse to resume checkpoints trained under others.
    recorded = run_dir / "experiment.json"
    mine = {"key": key_of(experiment), "settings": settings}
    if recorded.is_file() and load_json(recorded) != mine:
        raise SystemExit(
            f"{run_dir} holds checkpoints of {recorded.read_text()} but this run is {json.dumps(mine)} "
            "(defaults.json changed?). Delete that folder to start the run again."
        )
    recorded.write_text(json.dumps(mine, indent=2, sort_keys=True) + "\n")

    train_x, val_x, test_x = load_images(experiment["dataset"], settings)
    seed = experiment["seed"]
    set_seed(seed)
    model = AutoencoderForImageReconstruction(
        AutoencoderConfig(
            num_channels=1,
            image_size=28,
            depth=experiment["depth"],
            width=settings["width"],
            bottleneck=settings["bottleneck"],
            init=settings["init"],
        )
    )
    n_params = sum(p.numel() for p in model.parameters())
    args = TrainingArguments(
        output_dir=str(run_dir),
        num_train_epochs=settings["epochs"],
        per_device_train_batch_size=settings["batch_size"],
        per_device_eval_batch_size=settings["eval_batch_size"],
        learning_rate=settings["learning_rate"],
        weight_decay=settings["weight_decay"],
        optim="adamw_torch",
        lr_scheduler_type="reduce_lr_on_plateau",
        lr_scheduler_kwargs={"factor": settings["plateau_factor"], "patience": settings["plateau_patience"]},
        metric_for_best_model="loss",
        greater_is_better=False,
        eval_strategy="epoch",
        logging_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        seed=seed,
        data_seed=seed,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    optimizer_kwargs = {}
    if experiment["optimizer"] == "adam_l2":
        # torch Adam adds weight_decay * w to the gradient (L2), as the authors' code; Trainer still puts biases
        # and the LBE alphas in a group without decay.
        optimizer_kwargs["optimizer_cls_and_kwargs"] = (
            torch.optim.Adam,
            {"lr": settings["learning_rate"], "weight_decay": settings["weight_decay"]},
        )

    started = time.time()
    progress_file = run_dir / "progress.json"
    seconds_at_step = load_json(progress_file) if progress_file.is_file() else {}

    class Progress(TrainerCallback):
        """Prints one line per epoch; records the run's seconds at each checkpoint (to count resumed runs)."""

        def __init__(self):
            self.before = 0.0

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if metrics and "eval_ssim" in metrics:
                print(
                    f"  [{name}] epoch {state.epoch:.0f}/{settings['epochs']} val_loss {metrics['eval_loss']:.4f} "
                    f"val_mssim {metrics['eval_ssim']:.4f} lr {trainer.optimizer.param_groups[0]['lr']:.2e} "
                    f"{self.before + time.time() - started:.0f}s",
                    flush=True,
                )

        def on_save(self, args, state, control, **kwargs):
            seconds_at_step[str(state.global_step)] = self.before + time.time() - started
            progress_file.write_text(json.dumps(seconds_at_step))

    progress = Progress()
    common = dict(
        model=model,
        args=args,
        train_dataset=TensorDictDataset(train_x, train_x),
        eval_dataset=TensorDictDataset(val_x, val_x),
        compute_metrics=reconstruction_metrics,
        callbacks=[progress],
        **optimizer_kwargs,
    )
    lbe_config = None
    if settings["lbe"] is None:
        trainer = Trainer(**common)
    else:
        lbe_config = BatchEntropyConfig(**settings["lbe"])
        trainer = LBETrainer(lbe_config=lbe_config, entropy_callback=False, **common)
    trainer.remove_callback(PrinterCallback)  # Progress prints one line per epoch instead

    checkpoint = get_last_complete_checkpoint(run_dir)
    if experiment["arm"] == "plain":
        newest = get_last_checkpoint(str(run_dir))
        if newest is not None and newest != checkpoint:
            print(f"  [{name}] {newest} is incomplete (killed while saving?); resuming from {checkpoint}", flush=True)
    resumed_from = None
    if checkpoint is not None:
        resumed_from = int(Path(checkpoint).name.split("-")[1])
        progress.before = seconds_at_step.get(str(resumed_from), 0.0)
        print(f"  [{name}] resuming from {checkpoint}", flush=True)
    trainer.train(resume_from_checkpoint=checkpoint)

    test = trainer.evaluate(TensorDictDataset(test_x, test_x), metric_key_prefix="test")
    trainer.compute_metrics = None  # the training images' BCE only (no MSSIM over all of them)
    train_eval = trainer.evaluate(TensorDictDataset(train_x, train_x), metric_key_prefix="train_eval")
    model.eval()
    n_pictures = min(settings["n_pictures"], len(test_x))
    with torch.no_grad():
        reconstructions = model(pixel_values=test_x[:n_pictures]).reconstruction.numpy()
    originals = test_x[:n_pictures].numpy()
    np.save(run_dir / "reconstructions.npy", reconstructions)
    np.save(run_dir / "originals.npy", originals)
    seconds = progress.before + time.time() - started

    curve = _curve(trainer.state.log_history)
    return {
        "key": key_of(experiment),
        "experiment": experiment,
        "run_name": name,
        "test_mssim": test["test_ssim"],
        "test_loss": test["test_loss"],
        "final_train_loss": train_eval["train_eval_loss"],
        "final_val_loss": curve[-1]["val_loss"] if curve else None,
        "final_val_mssim": curve[-1]["val_mssim"] if curve else None,
        "final_lr": trainer.optimizer.param_groups[0]["lr"],
        "curve": curve,
        "epochs_done": trainer.state.epoch,
        "global_step": trainer.state.global_step,
        "seconds": round(seconds, 1),
        "resumed_from_step": resumed_from,
        "n_train": len(train_x),
        "n_val": len(val_x),
        "n_test": len(test_x),
        "n_params": n_params,
        "lbe_config": lbe_config.to_dict() if lbe_config is not None else None,
        "alphas": trainer.alphas.tolist() if lbe_config is not None else None,
        "settings": settings,
        "pictures": {
            "test_indices": list(range(n_pictures)),
            "originals": encode_pictures(originals),
            "reconstructions": encode_pictures(reconstructions),
        },
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lbe_hf": lbe_hf.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "command": command,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# ---- main ------------------------------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--filter",
        help="select experiments: field=value[|value],... (fields: %(choices)s)".replace(
            "%(choices)s", ", ".join(EXPERIMENT_FIELDS)
        ),
    )
    p.add_argument("--dry_run", action="store_true", help="list the missing experiments and exit")
    p.add_argument("--report", action="store_true", help="only regenerate the README from the results file")
    p.add_argument("--no_report", action="store_true", help="do not regenerate the README after each run")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results file (README goes beside it)")
    p.add_argument("--runs_dir", type=Path, default=DEFAULT_RUNS_DIR, help="checkpoint folders")
    p.add_argument("--experiments", type=Path, default=HERE / "experiments.json")
    p.add_argument("--defaults", type=Path, default=HERE / "defaults.json")
    p.add_argument("--max_runs", type=int, default=None, help="stop after this many finished runs")
    p.add_argument("--keep_checkpoints", action="store_true", help="keep a finished run's checkpoints")
    g = p.add_argument_group("overrides (they become fields of the experiment key: such runs never count as full)")
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--max_train_samples", type=int, default=None)
    g.add_argument("--max_eval_samples", type=int, default=None, help="cap the validation and the test images")
    g.add_argument("--synthetic_data", action="store_true", help="random blob images instead of MNIST files")
    return p


@contextlib.contextmanager
def campaign_lock(runs_dir: Path):
    """One campaign per runs folder: a second process would train the same run folders."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"another run.py holds {runs_dir / '.lock'}; wait for it or stop it first") from None
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    command = " ".join(
        shlex.quote(a) for a in ["python", os.path.relpath(__file__, ROOT), *(sys.argv[1:] if argv is None else argv)]
    )
    import report

    if args.report:
        path = report.write_report(args.results, args.experiments, args.defaults)
        print(f"wrote {path}")
        return 0

    defaults = load_json(args.defaults)
    overrides = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k) not in (None, False)}
    selection = parse_filter(args.filter)
    planned = [{**e, **overrides} for e in expand(load_json(args.experiments)) if matches(e, selection)]
    done = {row["key"] for row in read_results(args.results)}
    missing = [e for e in planned if key_of(e) not in done]
    print(f"{len(planned)} selected, {len(planned) - len(missing)} done, {len(missing)} to run", flush=True)
    if args.dry_run:
        for e in missing:
            print(f"  {run_name(e)}")
        return 0
    if not missing:
        print("nothing to run")
        return 0

    with campaign_lock(args.runs_dir):
        finished = 0
        for i, experiment in enumerate(missing, 1):
            if key_of(experiment) in {row["key"] for row in read_results(args.results)}:
                continue  # appended meanwhile (cannot happen under the lock, but cheap to check)
            settings = settings_of(experiment, defaults)
            print(f"[{i}/{len(missing)}] {run_name(experiment)} ({datetime.now():%Y-%m-%d %H:%M:%S})", flush=True)
            row = run_one(experiment, settings, args.runs_dir, args.keep_checkpoints, command)
            append_result(args.results, row)
            print(
                f"[{i}/{len(missing)}] {run_name(experiment)}: test MSSIM {row['test_mssim']:.4f}, "
                f"{row['seconds']:.0f}s",
                flush=True,
            )
            if not args.keep_checkpoints:
                for folder in (args.runs_dir / run_name(experiment)).glob("checkpoint-*"):
                    shutil.rmtree(folder, ignore_errors=True)
            if not args.no_report:
                importlib.reload(report)  # picks up edits of report.py during a long campaign
                report.write_report(args.results, args.experiments, args.defaults)
            finished += 1
            if args.max_runs is not None and finished >= args.max_runs:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
