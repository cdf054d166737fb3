"""Models and batches for the command-line tools (`lbe-hf diagnose`, `lbe-hf loss-surface`).

A model is a local checkpoint folder, a Hub id, or an FNN spec `fnn:depth=50,init=torch` (fresh random init).
Data is 'mnist', 'digits', a folder of MNIST idx files, a JSON Lines text file with labels, or 'synthetic'.
Every problem is raised as ValueError/OSError before anything runs; the CLIs turn them into exit status 2.
"""

from __future__ import annotations

import json
import os

import torch
from torch import nn

from ..models import FNNConfig, FNNForImageClassification
from ..tasks.data import DATA_DIR_ENV, digits_split, local_mnist_folder, mnist_split

FNN_INT_FIELDS = ("input_dim", "depth", "width", "num_labels")
FNN_FIELDS = (*FNN_INT_FIELDS, "activation", "init")


def parse_fnn_spec(spec: str, data: str | None = None) -> FNNConfig:
    """'fnn' or 'fnn:depth=50,init=torch,width=256' -> FNNConfig (input_dim defaults to the data's: 64 for digits)."""
    values: dict = {"input_dim": 64 if data == "digits" else 784}
    body = spec.partition(":")[2]
    for item in filter(None, body.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"FNN spec {spec!r}: write key=value pairs, e.g. 'fnn:depth=50,init=torch'.")
        key = key.strip()
        if key not in FNN_FIELDS:
            raise ValueError(f"FNN spec {spec!r}: unknown key {key!r}; known: {', '.join(FNN_FIELDS)}.")
        try:
            values[key] = int(value) if key in FNN_INT_FIELDS else value.strip()
        except ValueError:
            raise ValueError(f"FNN spec {spec!r}: {key} must be an integer, got {value!r}.") from None
    return FNNConfig(**values)


def _is_text_file(data: str | None) -> bool:
    return data is not None and os.path.isfile(data) and data.endswith((".jsonl", ".json"))


def _read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows or "label" not in rows[0]:
        raise ValueError(f"{path}: expected JSON Lines rows with a 'label' and 'sentence' or 'sentence1'/'sentence2'.")
    return rows


def load_model(spec: str, data: str | None = None) -> nn.Module:
    """An FNN from a spec, else `from_pretrained(spec)`: image classifier, sequence classifier (labelled text data)
    or the bare model (synthetic text inputs)."""
    if spec == "fnn" or spec.startswith("fnn:"):
        return FNNForImageClassification(parse_fnn_spec(spec, data))
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, AutoModelForSequenceClassification

    if spec.startswith((os.sep, ".", "~")) and not os.path.isdir(os.path.expanduser(spec)):
        raise ValueError(f"model {spec!r} is not a folder; pass a checkpoint folder, a Hub id or 'fnn:depth=...'.")
    config = AutoConfig.from_pretrained(spec)
    if type(config) in AutoModelForImageClassification._model_mapping:
        return AutoModelForImageClassification.from_pretrained(spec)
    if _is_text_file(data):
        labels = {row["label"] for row in _read_jsonl(data)}
        return AutoModelForSequenceClassification.from_pretrained(spec, num_labels=len(labels))
    return AutoModel.from_pretrained(spec)


def _image_data(model: nn.Module, data: str | None, standardize: bool = False) -> tuple[dict | None, dict | None]:
    input_dim = getattr(model.config, "input_dim", None)
    if data is None:
        # Without --data: the local MNIST copy if there is one, else random inputs (the report says so).
        data = {784: "mnist", 64: "digits"}.get(input_dim, "synthetic")
        if data == "mnist" and local_mnist_folder() is None:
            data = "synthetic"
    if data == "synthetic":
        return None, None
    if data == "digits":
        train, test = digits_split(normalize=standardize)
    else:
        folder = local_mnist_folder() if data == "mnist" else data
        if folder is None:
            raise ValueError(
                f"--data mnist: no MNIST files found ({DATA_DIR_ENV} is unset or has no mnist/ folder). Pass the "
                "folder of MNIST idx files itself (--data path/to/mnist), set LBE_DATA_DIR, or use --data digits."
            )
        if not os.path.isdir(folder):
            raise ValueError(f"--data {data!r}: not 'mnist', 'digits', 'synthetic', a JSON Lines file or a folder.")
        train, test = mnist_split(folder, normalize=standardize)
    as_dict = lambda ds: {"pixel_values": ds.pixel_values, "labels": ds.labels}  # noqa: E731
    return as_dict(train), as_dict(test)


def _synthetic(model: nn.Module, batch_size: int, seq_len: int) -> dict:
    config = model.config
    main = getattr(model, "main_input_name", "input_ids")
    if main == "pixel_values":
        if hasattr(config, "input_dim"):
            return {"pixel_values": torch.rand(batch_size, config.input_dim)}
        size, channels = getattr(config, "image_size", None), getattr(config, "num_channels", 3)
        if size is None:
            raise ValueError("synthetic inputs need config.image_size; pass --data with real images instead.")
        size = size if isinstance(size, (tuple, list)) else (size, size)
        return {"pixel_values": torch.randn(batch_size, channels, *size)}
    vocab = getattr(config, "vocab_size", None)
    if vocab is None:
        raise ValueError(f"can't make synthetic inputs for {type(model).__name__}; pass --data.")
    return {
        "input_ids": torch.randint(0, vocab, (batch_size, seq_len)),
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
    }


def _text_data(spec: str, path: str, seq_len: int, seed: int) -> dict:
    from transformers import AutoTokenizer

    rows = _read_jsonl(path)
    keys = ("sentence1", "sentence2") if "sentence1" in rows[0] else ("sentence",)
    if keys[0] not in rows[0]:
        raise ValueError(f"{path}: rows need 'sentence' or 'sentence1'/'sentence2' text fields.")
    tokenizer = AutoTokenizer.from_pretrained(spec)
    texts = [[row[k] for row in rows] for k in keys]
    enc = tokenizer(*texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    labels = sorted({row["label"] for row in rows})
    enc = dict(enc, labels=torch.tensor([labels.index(row["label"]) for row in rows]))
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))
    return {k: v[order] for k, v in enc.items()}


def load_inputs(
    model: nn.Module,
    spec: str,
    data: str | None,
    batch_size: int,
    seq_len: int = 128,
    seed: int = 0,
    standardize: bool = False,
) -> tuple[dict, dict | None]:
    """(measured batch, training rows or None). The measured batch comes from held-out rows (the test split, or
    the first `batch_size` shuffled rows of a text file) and carries "labels" when the data has them.

    `standardize`: MNIST/digits pixels standardised (mean 0, std 1, as the trainability benchmark's `mnist` and
    `digits`) instead of raw [0, 1]; feed a model the inputs it was trained on."""
    main = getattr(model, "main_input_name", "input_ids")
    if data is not None and data != "synthetic" and not _is_text_file(data) and main != "pixel_values":
        raise ValueError(f"--data {data!r} is image data but {type(model).__name__} takes {main}; pass a .jsonl file.")
    if _is_text_file(data):
        if main == "pixel_values":
            raise ValueError(f"--data {data} is text but {type(model).__name__} takes pixel_values.")
        rows = _text_data(spec, data, seq_len, seed)
        batch = {k: v[:batch_size] for k, v in rows.items()}
        train = {k: v[batch_size:] for k, v in rows.items()}
    elif main == "pixel_values":
        train, test = _image_data(model, data, standardize)
        if test is None:
            batch, train = _synthetic(model, batch_size, seq_len), None
        else:
            batch = {k: v[:batch_size] for k, v in test.items()}
    else:
        batch, train = _synthetic(model, batch_size, seq_len), None
    if len(next(iter(batch.values()))) < 2:
        raise ValueError("the data has fewer than 2 samples: batch entropy is a variance over the batch.")
    if train is not None and len(train["labels"]) < 2:
        train = None
    try:
        with torch.no_grad():
            model.eval()(**{k: v[:2] for k, v in batch.items() if k != "labels"})
    except (ValueError, RuntimeError, IndexError) as e:
        raise ValueError(f"the model can't take this data ({e}); pass matching --data or model.") from e
    return batch, train
