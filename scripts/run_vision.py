#!/usr/bin/env python
"""Train a vision model with layerwise batch-entropy regularization (Peer et al., TMLR 2022) and `LBETrainer`.

    python scripts/run_vision.py --dataset_name mnist --model resnet18 --output_dir out --do_train --do_eval
    python scripts/run_vision.py configs/vision/fnn_mnist.yaml [--max_steps 10 ...]   # YAML + overrides
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 scripts/run_vision.py ...   # DDP

Data: `--dataset_name` mnist / fashion_mnist / cifar10 / cifar100 from the Hugging Face Hub, or `--data_dir`: a
folder of MNIST-style idx files (train-* and t10k-*; with only t10k-* the first `--idx_train_samples` images train
and the rest evaluate), or an image folder with `train/` and `test/` (or `validation/`) class subfolders. Images are
scaled to [0, 1]. Model: `--model fnn`, `--model autoencoder` (evaluated by mean SSIM), any torchvision
classification architecture (`resnet18`, `wide_resnet50_2`, ...), or `--model_name_or_path` of a saved model.
Every `BatchEntropyConfig` field is a `--lbe_*` flag. Resumes from the last checkpoint in `--output_dir`.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import Dataset
from transformers import AutoConfig, AutoModel, HfArgumentParser, TrainingArguments, set_seed

from lbe_hf import LBEArguments, LBETrainer, get_last_complete_checkpoint
from lbe_hf.extras import MissingExtraError, require
from lbe_hf.models import (
    AutoencoderConfig,
    AutoencoderForImageReconstruction,
    FNNConfig,
    FNNForImageClassification,
    TorchvisionConfig,
    TorchvisionForImageClassification,
    reconstruction_metrics,
)
from lbe_hf.models.torchvision_wrapper import available_architectures
from lbe_hf.tasks.data import load_mnist_idx

logger = logging.getLogger(__name__)

# Hub id, image column, label column, number of classes.
HUB_DATASETS = {
    "mnist": ("ylecun/mnist", "image", "label", 10),
    "fashion_mnist": ("zalando-datasets/fashion_mnist", "image", "label", 10),
    "cifar10": ("uoft-cs/cifar10", "img", "label", 10),
    "cifar100": ("uoft-cs/cifar100", "img", "fine_label", 100),
}


@dataclass
class VisionArguments:
    model: str = field(default="fnn", metadata={"help": "'fnn', 'autoencoder' or a torchvision architecture name."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "A saved lbe_hf model (not --model)."})
    dataset_name: str = field(default="mnist", metadata={"help": "Hub dataset.", "choices": sorted(HUB_DATASETS)})
    data_dir: str | None = field(default=None, metadata={"help": "Local idx files or image folder (no Hub access)."})
    idx_train_samples: int = field(default=8000, metadata={"help": "Split of a lone t10k idx file: train images."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the evaluation set."})
    depth: int = field(default=10, metadata={"help": "fnn: hidden layers; autoencoder: per encoder and decoder."})
    width: int = field(default=256, metadata={"help": "fnn / autoencoder hidden units."})
    bottleneck: int = field(default=10, metadata={"help": "autoencoder latent size."})
    init: str | None = field(default=None, metadata={"help": "fnn/autoencoder init: 'he' or 'torch' (model default)."})
    small_input: bool = field(default=False, metadata={"help": "ResNets: CIFAR stem (3x3 conv, no max-pool)."})
    torchvision_weights: str | None = field(
        default=None, metadata={"help": "torchvision pretrained weights: a local file or a cached weights name."}
    )

    def __post_init__(self) -> None:
        # Checked at parse time, before any data is downloaded or read.
        if not self.model_name_or_path and self.model not in ("fnn", "autoencoder"):
            if self.model not in available_architectures():
                raise ValueError(
                    f"--model {self.model!r} is unknown: use 'fnn', 'autoencoder' or a torchvision classification "
                    f"architecture ({', '.join(available_architectures()[:6])}, ...)."
                )
        if self.init not in (None, "he", "torch"):
            raise ValueError(f"--init must be 'he' or 'torch', got {self.init!r}.")


class ImageDataset(Dataset):
    """uint8 images (N, C, H, W) -> {"pixel_values": float in [0, 1], "labels": class id, or the image itself}."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, reconstruct: bool = False):
        self.images, self.labels, self.reconstruct = images, labels, reconstruct

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.images[i].float() / 255.0
        return {"pixel_values": x, "labels": x if self.reconstruct else self.labels[i]}


def _stack(images) -> torch.Tensor:
    """PIL images / arrays -> uint8 (N, C, H, W)."""
    arrays = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
    if arrays.ndim == 3:
        arrays = arrays[:, None]
    else:
        arrays = arrays.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(arrays))


def _open_image(path: str):
    from PIL import Image

    image = Image.open(path)
    image.load()  # reads the pixels and closes the file (single-frame formats)
    return image


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().to(torch.uint8)


def _head(pair: tuple[torch.Tensor, torch.Tensor], n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    return (pair[0][:n], pair[1][:n]) if n else pair


def from_hf_split(split, image_col: str, label_col: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A `datasets.Dataset` split of PIL images -> uint8 images (N, C, H, W) and int64 labels (N,)."""
    return _stack(split[image_col]), torch.tensor(list(split[label_col]), dtype=torch.int64)


def load_hub(name: str) -> tuple[tuple, tuple, int]:
    load_dataset = require("datasets", "vision", f"--dataset_name {name} (Hub data)").load_dataset

    repo, image_col, label_col, num_labels = HUB_DATASETS[name]
    try:
        ds = load_dataset(repo)
    except ConnectionError as error:  # no network, or HF_HUB_OFFLINE=1 without a cached copy
        raise ConnectionError(
            f"Couldn't load the Hub dataset {repo!r} for --dataset_name {name}: {error}. Without Hub access, pass "
            "local files with --data_dir: a folder of MNIST-style idx files (train-*/t10k-*, or t10k-* alone, split "
            "at --idx_train_samples) or an image folder with train/ and test/ class subfolders, e.g. "
            "python scripts/run_vision.py configs/vision/fnn_mnist.yaml --data_dir path/to/mnist"
        ) from error
    train, test = (from_hf_split(ds[split], image_col, label_col) for split in ("train", "test"))
    return train, test, num_labels


def load_local(folder: Path, idx_train_samples: int) -> tuple[tuple, tuple, int]:
    if not folder.is_dir():
        raise FileNotFoundError(f"--data_dir {folder} is not a folder.")
    if list(folder.glob("*idx3*")) or list(folder.glob("*images.idx")):
        test_x, test_y = load_mnist_idx(folder, prefix="t10k")
        try:
            train_x, train_y = load_mnist_idx(folder, prefix="train")
        except FileNotFoundError:
            logger.warning(f"{folder}: no train-* idx files; splitting t10k at {idx_train_samples}.")
            train_x, train_y = test_x[:idx_train_samples], test_y[:idx_train_samples]
            test_x, test_y = test_x[idx_train_samples:], test_y[idx_train_samples:]
        num_labels = int(max(train_y.max(), test_y.max())) + 1
        return (_to_uint8(train_x), train_y), (_to_uint8(test_x), test_y), num_labels
    from torchvision.datasets import ImageFolder

    eval_dir = next((folder / n for n in ("test", "validation", "val") if (folder / n).is_dir()), None)
    if not (folder / "train").is_dir() or eval_dir is None:
        raise ValueError(
            f"--data_dir {folder} holds neither MNIST idx files nor train/ and test/ (or validation/) subfolders "
            "with one folder of images per class."
        )
    # torchvision's default loader converts everything to RGB; keep grayscale images single-channel.
    train, test = ImageFolder(folder / "train", loader=_open_image), ImageFolder(eval_dir, loader=_open_image)
    unknown = sorted(set(test.classes) - set(train.classes))
    if unknown:
        raise ValueError(f"{eval_dir} has class folders {unknown} that {folder / 'train'} lacks.")
    mode = "L" if train[0][0].mode in ("L", "1", "I", "I;16") else "RGB"

    def read(ds):
        # Label ids follow train's class folders, also for an eval set that lacks some classes.
        labels = [train.class_to_idx[ds.classes[t]] for t in ds.targets]
        return _stack([img.convert(mode) for img, _ in ds]), torch.tensor(labels, dtype=torch.int64)

    return read(train), read(test), len(train.classes)


def build_model(args: VisionArguments, channels: int, size: int, num_labels: int):
    """The model named by --model (or loaded from --model_name_or_path), checked against the data's shape."""
    if args.model_name_or_path:
        config = AutoConfig.from_pretrained(args.model_name_or_path)
        wanted = {"lbe_torchvision": ("in_channels", channels), "lbe_autoencoder": ("num_channels", channels)}
        wanted["lbe_fnn"] = ("input_dim", channels * size * size)
        key, value = wanted.get(config.model_type, (None, None))
        if key and getattr(config, key) != value:
            raise ValueError(
                f"{args.model_name_or_path} expects {key}={getattr(config, key)} but the data gives {value} "
                f"({channels} channel(s) of {size}x{size}). Use a model trained on this kind of image."
            )
        if config.model_type != "lbe_autoencoder" and config.num_labels != num_labels:
            raise ValueError(
                f"{args.model_name_or_path} classifies {config.num_labels} classes but the data has {num_labels}. "
                "Use a model trained on these classes, or --model to start a new one."
            )
        return AutoModel.from_pretrained(args.model_name_or_path)
    init = {"init": args.init} if args.init else {}
    if args.model == "fnn":
        cfg = FNNConfig(channels * size * size, args.depth, args.width, num_labels, **init)
        return FNNForImageClassification(cfg)
    if args.model == "autoencoder":
        cfg = AutoencoderConfig(channels, size, args.depth, args.width, args.bottleneck, **init)
        return AutoencoderForImageReconstruction(cfg)
    kwargs = dict(in_channels=channels, num_labels=num_labels, small_input=args.small_input)
    if args.torchvision_weights:
        return TorchvisionForImageClassification.from_torchvision(args.model, args.torchvision_weights, **kwargs)
    return TorchvisionForImageClassification(TorchvisionConfig(architecture=args.model, **kwargs))


def accuracy(eval_pred) -> dict[str, float]:
    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    return {"accuracy": float((np.argmax(logits, axis=-1) == eval_pred.label_ids).mean())}


def make_parser() -> HfArgumentParser:
    return HfArgumentParser((VisionArguments, TrainingArguments, LBEArguments))


def parse(argv: list[str]):
    """Flags, or a YAML file (keys = flag names) followed by flags that override it."""
    if argv and argv[0].endswith((".yaml", ".yml")):
        with open(argv[0], encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
        flags = []
        for key, value in values.items():
            items = value if isinstance(value, list) else [value]
            flags += [f"--{key}", *(str(v) for v in items)]
        argv = flags + argv[1:]
    return make_parser().parse_args_into_dataclasses(args=argv)


def main(argv: list[str] | None = None) -> dict:
    vision_args, training_args, lbe_args = parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    lbe_config = lbe_args.to_config()
    set_seed(training_args.seed)

    if vision_args.data_dir:
        train, test, num_labels = load_local(Path(vision_args.data_dir), vision_args.idx_train_samples)
    else:
        train, test, num_labels = load_hub(vision_args.dataset_name)
    channels, height, width = train[0].shape[1:]
    if height != width:
        raise ValueError(f"images are {height}x{width}; the fnn/autoencoder/torchvision models here expect squares.")
    model = build_model(vision_args, channels, height, num_labels)
    reconstruct = isinstance(model, AutoencoderForImageReconstruction)
    if training_args.push_to_hub:
        # The pushed repo then also loads without lbe_hf, via trust_remote_code (the model files import no lbe_hf).
        model.config.register_for_auto_class()
        type(model).register_for_auto_class("AutoModel" if reconstruct else "AutoModelForImageClassification")
    train_ds = ImageDataset(*_head(train, vision_args.max_train_samples), reconstruct=reconstruct)
    eval_ds = ImageDataset(*_head(test, vision_args.max_eval_samples), reconstruct=reconstruct)

    trainer = LBETrainer(
        model=model,
        args=training_args,
        lbe_config=lbe_config,
        train_dataset=train_ds if training_args.do_train else None,
        eval_dataset=eval_ds if training_args.do_eval or training_args.eval_strategy != "no" else None,
        compute_metrics=reconstruction_metrics if reconstruct else accuracy,
    )
    logger.info(
        f"LBE regularizes {len(trainer.lbe_module_names)} modules: {trainer.lbe_module_names[:4]} ...; "
        f"world size {training_args.world_size}"
    )
    metrics: dict = {}
    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint
        if checkpoint is None and os.path.isdir(training_args.output_dir):
            checkpoint = get_last_complete_checkpoint(training_args.output_dir)
        result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        trainer.save_state()
        metrics.update(result.metrics)
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
    if training_args.do_eval:
        eval_metrics = trainer.evaluate()
        metrics.update(eval_metrics)
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
    if training_args.push_to_hub:
        # The data actually used: the Hub id, or the local folder's name (never an absolute local path).
        dataset = Path(vision_args.data_dir).resolve().name if vision_args.data_dir else None
        hub = {} if dataset else {"dataset_tags": HUB_DATASETS[vision_args.dataset_name][0]}
        trainer.push_to_hub(
            dataset=dataset or HUB_DATASETS[vision_args.dataset_name][0],
            tags=["image-classification" if not reconstruct else "autoencoder"],
            **hub,
        )
    metrics["alphas"] = trainer.alphas.tolist()
    metrics["world_size"] = training_args.world_size
    return metrics


if __name__ == "__main__":
    try:
        main()
    except (ConnectionError, MissingExtraError) as error:  # no Hub access / a missing extra: say what to do
        sys.exit(f"run_vision.py: {error}")
