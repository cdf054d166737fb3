"""Small in-memory datasets for the FNN experiments: MNIST-format idx files and scikit-learn's digits."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

IDX_MAGIC = {2049: 1, 2051: 3}  # labels: 1 dim, images: 3 dims


class TensorDictDataset(Dataset):
    """`{"pixel_values": x[i], "labels": y[i]}` rows over two tensors; works with `default_data_collator`."""

    def __init__(self, pixel_values: torch.Tensor, labels: torch.Tensor):
        if len(pixel_values) != len(labels):
            raise ValueError(f"{len(pixel_values)} inputs but {len(labels)} labels.")
        self.pixel_values = pixel_values
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixel_values[i], "labels": self.labels[i]}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (optionally gzipped), e.g. MNIST's `t10k-images-idx3-ubyte.gz`."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic not in IDX_MAGIC:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {magic}, expected 2049 or 2051).")
    ndim = IDX_MAGIC[magic]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    array = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {array.size} values.")
    return array.reshape(shape)


def load_mnist_idx(folder: str | os.PathLike, prefix: str = "t10k") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-format images (N, 1, 28, 28) in [0, 1] float32 and labels (N,) int64 from a folder of idx files."""
    folder = Path(folder)

    def find(kind: str) -> Path:
        for name in (f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte", f"{prefix}-{kind}.idx"):
            for candidate in (folder / (name + ".gz"), folder / name):
                if candidate.is_file():
                    return candidate
        raise FileNotFoundError(
            f"no {prefix} {kind} idx file in {folder} (expected e.g. {prefix}-{kind}-idx*-ubyte.gz)."
        )

    images = read_idx(find("images"))
    labels = read_idx(find("labels"))
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels in {folder}.")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


# Mean and std of MNIST's 60k training pixels (in [0, 1]): the usual `transforms.Normalize((0.1307,), (0.3081,))`,
# which the authors' FNN experiments apply.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def mnist_split(
    folder: str | os.PathLike, n_train: int = 8000, normalize: bool = False
) -> tuple[TensorDictDataset, TensorDictDataset]:
    """The benchmark split of MNIST's 10k test set: images [0, n_train) train, the rest test, flattened to 784.

    Pixels are in [0, 1]; `normalize=True` standardises them with MNIST's mean and std instead.
    """
    x, y = load_mnist_idx(folder)
    x = x.reshape(len(x), -1)
    if normalize:
        x = (x - MNIST_MEAN) / MNIST_STD
    return TensorDictDataset(x[:n_train], y[:n_train]), TensorDictDataset(x[n_train:], y[n_train:])


# Mean and std of Fashion-MNIST's 60k training pixels (in [0, 1]).
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
FASHION_MNIST_DIR_ENV = "LBE_FASHION_MNIST_DIR"
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # `apt-get install dataset-fashion-mnist`


def fashion_mnist_split(
    folder: str | os.PathLike | None = None, normalize: bool = False
) -> tuple[TensorDictDataset, TensorDictDataset]:
    """Full Fashion-MNIST: the 60k `train-*` images to train on, the 10k `t10k-*` images to test, flattened to 784.

    `folder` defaults to `$LBE_FASHION_MNIST_DIR`, else Debian's `dataset-fashion-mnist` package folder. Pixels are
    in [0, 1]; `normalize=True` standardises them with Fashion-MNIST's training mean and std instead.
    """
    folder = Path(folder or os.environ.get(FASHION_MNIST_DIR_ENV) or DEBIAN_FASHION_MNIST_DIR)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no Fashion-MNIST folder at {folder}: install Debian's dataset-fashion-mnist package or set "
            f"{FASHION_MNIST_DIR_ENV} to a folder holding train-*-idx*-ubyte.gz and t10k-*-idx*-ubyte.gz."
        )
    splits = []
    for prefix in ("train", "t10k"):
        x, y = load_mnist_idx(folder, prefix)
        x = x.reshape(len(x), -1)
        if normalize:
            x = (x - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
        splits.append(TensorDictDataset(x, y))
    return splits[0], splits[1]


def digits_split(
    test_fraction: float = 0.2, seed: int = 0, normalize: bool = False
) -> tuple[TensorDictDataset, TensorDictDataset]:
    """scikit-learn's bundled 8x8 digits (1797 images, 64 features in [0, 1]), a fixed stratified split.

    `normalize=True` standardises the pixels with the training split's mean and std (one scalar each, as MNIST's).
    """
    from ..extras import require

    require("sklearn", "demo", "scikit-learn's digits")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x / 16.0, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    if normalize:
        mean, std = x_train.mean(), x_train.std()
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

    def to_ds(a, b):
        return TensorDictDataset(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.int64))

    return to_ds(x_train, y_train), to_ds(x_test, y_test)


DATA_DIR_ENV = "LBE_DATA_DIR"


def shared_data_dir() -> Path:
    """`$LBE_DATA_DIR`: a folder of local data sets (`glue/<task>/{train,validation}.jsonl`, `mnist/*-idx*-ubyte`).

    Point it at your copy, or pass the files to each tool directly (its error says by which flag).

    Raises:
        FileNotFoundError: the variable is not set.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if not env:
        raise FileNotFoundError(
            f"no local data folder: {DATA_DIR_ENV} is not set (a folder holding glue/<task>/*.jsonl and "
            "mnist/*-ubyte files)."
        )
    return Path(env)


def local_mnist_folder() -> Path | None:
    """`$LBE_DATA_DIR/mnist` when the variable is set and the folder exists, else None."""
    try:
        folder = default_mnist_folder()
    except FileNotFoundError:
        return None
    return folder if folder.is_dir() else None


def default_mnist_folder() -> Path:
    return shared_data_dir() / "mnist"
