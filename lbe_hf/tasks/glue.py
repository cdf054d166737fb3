"""GLUE fine-tuning parts shared by `scripts/run_glue.py` (Trainer) and `scripts/run_glue_no_trainer.py` (Accelerate).

Task table (columns, label names, metric), data from the Hub's `nyu-mll/glue` or local JSON Lines / CSV files with
the same columns, input validation that fails before training, tokenization, the model with a classification head,
optional LoRA, the GLUE metric (Hub or the local copy in `lbe_hf/tasks/metrics/glue_metric.py`) and a model card.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..card import TAGS, base_model_name, local_files_description
from ..config import LBEArguments
from ..extras import require

logger = logging.getLogger(__name__)

HUB_DATASET = "nyu-mll/glue"
LOCAL_METRIC = str(Path(__file__).resolve().parent / "metrics" / "glue_metric.py")


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: its text columns, label names (empty for the regression task STS-B) and metric keys."""

    name: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]
    metric_keys: tuple[str, ...]
    validation_split: str = "validation"

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def main_metric(self) -> str:
        return self.metric_keys[0]


GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask("cola", ("sentence",), ("unacceptable", "acceptable"), ("matthews_correlation",)),
        GlueTask("sst2", ("sentence",), ("negative", "positive"), ("accuracy",)),
        GlueTask("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("accuracy", "f1")),
        GlueTask("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("accuracy", "f1")),
        GlueTask("stsb", ("sentence1", "sentence2"), (), ("pearson", "spearmanr")),
        GlueTask(
            "mnli",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            "validation_matched",
        ),
        GlueTask("qnli", ("question", "sentence"), ("entailment", "not_entailment"), ("accuracy",)),
        GlueTask("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"), ("accuracy",)),
        GlueTask("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",)),
    )
}


def get_task(name: str | None) -> GlueTask:
    """The task called `name` (case-insensitive). Raises ValueError naming the known tasks."""
    key = (name or "").lower().replace("-", "")
    if key not in GLUE_TASKS:
        raise ValueError(f"Unknown GLUE task {name!r}: --task_name must be one of {', '.join(GLUE_TASKS)}.")
    return GLUE_TASKS[key]


# ---- data ---------------------------------------------------------------------------------------------------


def _local_format(path: str) -> tuple[str, dict[str, Any]]:
    suffix = Path(path).suffix.lower()
    if suffix in (".json", ".jsonl"):
        return "json", {}
    if suffix == ".csv":
        return "csv", {}
    if suffix == ".tsv":
        return "csv", {"delimiter": "\t"}
    raise ValueError(
        f"{path}: unsupported file type {suffix!r}; use .jsonl/.json, .csv or .tsv with the task's columns."
    )


def load_glue_datasets(
    task: GlueTask,
    train_file: str | None = None,
    validation_file: str | None = None,
    dataset_name: str = HUB_DATASET,
    cache_dir: str | None = None,
    need_train: bool = True,
    need_eval: bool = True,
):
    """`DatasetDict` with "train" and/or "validation" for `task`, checked by `validate_dataset`.

    Local files (`train_file`/`validation_file`) replace the Hub dataset `dataset_name`; a split without a file is
    then absent. Raises FileNotFoundError / ValueError before any training when the input is unusable, and
    ConnectionError naming `--train_file`/`--validation_file` when the Hub can't be reached.
    """
    datasets = require("datasets", "glue", "GLUE data loading")

    files = {"train": train_file, "validation": validation_file}
    if any(files.values()):
        wanted = {"train": need_train, "validation": need_eval}
        for split, path in files.items():
            if wanted[split] and not path:
                flag = "--train_file" if split == "train" else "--validation_file"
                raise ValueError(f"Local data needs a {split} file too: pass {flag} (or drop --do_{split[:5]}).")
        raw = datasets.DatasetDict()
        for split, path in files.items():
            if not path or not wanted[split]:
                continue
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{split} file {path!r} does not exist.")
            builder, kwargs = _local_format(path)
            raw[split] = datasets.load_dataset(
                builder, data_files={split: path}, split=split, cache_dir=cache_dir, **kwargs
            )
        sources = {s: p for s, p in files.items() if p}
    else:
        try:
            hub = datasets.load_dataset(dataset_name, task.name, cache_dir=cache_dir)
        except ConnectionError as error:  # no network, or HF_HUB_OFFLINE=1 without a cached copy
            raise ConnectionError(
                f"Couldn't load the Hub dataset {dataset_name!r} (config {task.name!r}): {error}. Without Hub access, "
                "pass local files with the task's columns (JSON Lines, CSV or TSV) instead: --train_file "
                f"glue/{task.name}/train.jsonl --validation_file glue/{task.name}/validation.jsonl"
            ) from error
        raw = datasets.DatasetDict({"train": hub["train"], "validation": hub[task.validation_split]})
        sources = {s: f"{dataset_name}/{task.name}:{s}" for s in raw}
    for split in list(raw):
        raw[split] = validate_dataset(raw[split], task, sources.get(split, split))
    return raw


def validate_dataset(dataset, task: GlueTask, source: str):
    """Checks the task's columns and labels; maps label names (e.g. "entailment") to ids.

    Raises:
        ValueError: a missing column or a label outside the task's label set, naming `source` and what to change.
    """
    needed = [*task.text_columns, "label"]
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{source} has no column(s) {missing} needed by GLUE task {task.name!r} (needs {needed}, found "
            f"{dataset.column_names}). Rename the columns or pick the --task_name that matches the file."
        )
    if task.is_regression:
        datasets = require("datasets", "glue", "GLUE data loading")
        return dataset.cast_column("label", datasets.Value("float32"))
    labels = dataset["label"]
    if labels and isinstance(labels[0], str):
        unknown = sorted(set(labels) - set(task.label_names))
        if unknown:
            raise ValueError(
                f"{source} has labels {unknown[:10]} outside the {task.name} label set {list(task.label_names)}."
            )
        ids = {name: i for i, name in enumerate(task.label_names)}
        return dataset.map(lambda row: {"label": ids[row["label"]]}, desc="label names to ids")
    if any(v is None for v in labels):
        raise ValueError(f"{source} has rows without a label; {task.name} needs a label in every row.")
    bad = sorted({int(v) for v in labels if not 0 <= int(v) < task.num_labels})
    if bad:
        raise ValueError(
            f"{source} has labels {bad[:10]} outside the {task.name} label set {task.id2label} (ids 0.."
            f"{task.num_labels - 1}). Test splits carry -1: train and evaluate on labelled splits only."
        )
    return dataset


def tokenize_datasets(raw, tokenizer, task: GlueTask, max_length: int, pad_to_max_length: bool, **map_kwargs):
    """Tokenized splits with `input_ids`, `attention_mask` (and `token_type_ids`) and `label` only."""

    def encode(batch):
        texts = [batch[c] for c in task.text_columns]
        return tokenizer(
            *texts, padding="max_length" if pad_to_max_length else False, max_length=max_length, truncation=True
        )

    return raw.map(
        encode,
        batched=True,
        remove_columns=[c for c in raw[next(iter(raw))].column_names if c != "label"],
        desc="Tokenizing",
        **map_kwargs,
    )


# ---- model --------------------------------------------------------------------------------------------------


def load_model_and_tokenizer(
    model_name_or_path: str,
    task: GlueTask,
    config_name: str | None = None,
    tokenizer_name: str | None = None,
    ignore_mismatched_sizes: bool = False,
    **hub_kwargs: Any,
):
    """(tokenizer, sequence-classification model) with the task's label names in `id2label`.

    `hub_kwargs` (cache_dir, revision, token, trust_remote_code) go to every `from_pretrained`.

    Raises:
        ValueError: the checkpoint's architecture has no sequence-classification head.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(
            config_name or model_name_or_path,
            num_labels=task.num_labels,
            finetuning_task=task.name,
            **hub_kwargs,
        )
    except OSError as error:
        if os.path.isdir(config_name or model_name_or_path):
            raise
        raise OSError(
            f"Couldn't load {config_name or model_name_or_path!r} from the Hub or its cache ({error}). Without Hub "
            "access, pass a local checkpoint folder (config.json, weights and tokenizer files, as written by "
            "save_pretrained) to --model_name_or_path, e.g. --model_name_or_path ./bert-base-uncased"
        ) from error
    if not task.is_regression:
        config.id2label = task.id2label
        config.label2id = {name: i for i, name in task.id2label.items()}
    remote = "AutoModelForSequenceClassification" in (getattr(config, "auto_map", None) or {})
    if config.model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES and not remote:
        raise ValueError(
            f"{model_name_or_path} is a {config.model_type!r} model, which has no sequence-classification head in "
            "transformers (AutoModelForSequenceClassification). Use a checkpoint such as BERT, RoBERTa, DeBERTa or "
            "MiniLM."
        )
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_name or model_name_or_path, **hub_kwargs)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_name_or_path, config=config, ignore_mismatched_sizes=ignore_mismatched_sizes, **hub_kwargs
    )
    return tokenizer, model


# The paper's transformer settings (Peer et al., Table 8: alpha {0.2, 0.3, 0.5, 0.8} x beta {0.005, 0.01, 0.05} for
# BERT on GLUE, as configs/glue/*.yaml): BatchEntropyConfig's beta 0.5 is the deep-FNN rescue setting, 10-100x more.
GLUE_LBE_BETA = 0.01


@dataclass
class GlueLBEArguments(LBEArguments):
    """`--lbe_*` flags with the fine-tuning default `--lbe_beta 0.01` (the paper's BERT grid) instead of 0.5."""

    lbe_beta: float = field(
        default=GLUE_LBE_BETA,
        metadata={
            "help": "Weight of the LBE term; 0 = plain fine-tuning. Default 0.01, within the paper's transformer grid "
            "(0.005-0.05); BatchEntropyConfig's own default 0.5 is for rescuing deep vanilla FNNs."
        },
    )


@dataclass
class LoraArguments:
    """PEFT LoRA flags. The LBE alphas are attached after wrapping: they train and are saved beside the adapter in
    `lbe_alphas.safetensors` (they are kept out of `adapter_model.safetensors` on purpose)."""

    use_lora: bool = field(default=False, metadata={"help": "Fine-tune LoRA adapters (PEFT) instead of all weights."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling (lora_alpha / r)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules to adapt (PEFT's target_modules); default: PEFT's for the model."}
    )


def apply_lora(model, args: LoraArguments):
    """`model` wrapped by PEFT for sequence classification (the classifier head trains in full)."""
    peft = require("peft", "glue", "--use_lora")
    LoraConfig, TaskType, get_peft_model = peft.LoraConfig, peft.TaskType, peft.get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules,
    )
    return get_peft_model(model, config)


# ---- metric -------------------------------------------------------------------------------------------------


def load_glue_metric(task: GlueTask, source: str = "auto", **kwargs: Any):
    """The GLUE metric of `task` as an `evaluate` module.

    source: "hub" -> `evaluate.load("glue", task)` (needs network); "local" -> the copy shipped in lbe_hf;
    "auto" -> the Hub unless `HF_HUB_OFFLINE` is set, falling back to the local copy when the Hub fails.
    """
    evaluate = require("evaluate", "glue", "the GLUE metric")
    from huggingface_hub import constants

    if source not in ("auto", "hub", "local"):
        raise ValueError(f"metric source must be 'auto', 'hub' or 'local', got {source!r}.")
    if source == "hub" or (source == "auto" and not constants.HF_HUB_OFFLINE):
        try:
            return evaluate.load("glue", task.name, **kwargs)
        except Exception as error:  # no network, rate limit, ...: the local copy computes the same numbers
            if source == "hub":
                raise
            logger.warning(f"evaluate.load('glue', {task.name!r}) failed ({error}); using lbe_hf's local GLUE metric.")
    return evaluate.load(LOCAL_METRIC, task.name, **kwargs)


def predictions_from_logits(logits: np.ndarray, task: GlueTask) -> np.ndarray:
    """(N, num_labels) logits -> (N,) class ids, or (N,) scores for regression."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    return np.squeeze(logits, -1) if task.is_regression else np.argmax(logits, axis=-1)


def compute_metrics_fn(task: GlueTask, metric):
    """`compute_metrics` for `Trainer`: EvalPrediction -> the GLUE metric dict."""

    def compute_metrics(eval_prediction) -> dict[str, float]:
        predictions = predictions_from_logits(eval_prediction.predictions, task)
        return {
            k: float(v)
            for k, v in metric.compute(predictions=predictions, references=eval_prediction.label_ids).items()
        }

    return compute_metrics


# ---- outputs ------------------------------------------------------------------------------------------------


def card_kwargs(
    task: GlueTask,
    model_name_or_path: str,
    files: dict[str, str | None] | None = None,
    dataset_name: str = HUB_DATASET,
) -> dict[str, Any]:
    """Keyword arguments for `Trainer.create_model_card` / `push_to_hub`: the base model and the data used.

    `files`: the local files read ({"train": path, "validation": path}), if any; then no Hub dataset is named.
    A local base model is not passed as `finetuned_from` (the card would link it as a Hub repo): follow the card
    with `lbe_hf.card.fix_from_scratch_line`.
    """
    name, is_hub = base_model_name(model_name_or_path)
    local = local_files_description(files or {})
    kwargs: dict[str, Any] = {
        "finetuned_from": name if is_hub else None,
        "tasks": "text-classification",
        "language": "en",
        "tags": ["glue", task.name],
    }
    if local:
        kwargs["dataset"] = f"GLUE {task.name.upper()} (local files; {local})"
    else:
        kwargs.update(dataset_tags=dataset_name, dataset_args=task.name, dataset=f"GLUE {task.name.upper()}")
    return kwargs


def write_model_card(
    output_dir: str,
    task: GlueTask,
    model_name_or_path: str,
    lbe_section: str,
    metrics: dict[str, float],
    library_name: str = "transformers",
    files: dict[str, str | None] | None = None,
    dataset_name: str = HUB_DATASET,
) -> str:
    """README.md for a model trained without `Trainer`: Hub metadata, base model, data, eval results, LBE section.

    `library_name="peft"` for a LoRA adapter, so the Hub loads it with PEFT. `files`: the local files read, if
    any (the card then names them, not a Hub dataset).
    """
    name, is_hub = base_model_name(model_name_or_path)
    local = local_files_description(files or {})
    tags = ["text-classification", "glue", task.name, *TAGS]
    metadata = [f"library_name: {library_name}"]
    if is_hub:
        metadata.append(f"base_model: {name}")
    if not local:
        metadata += ["datasets:", f"- {dataset_name}"]
    metadata += ["tags:", *(f"- {t}" for t in tags)]
    base = f"[{name}](https://huggingface.co/{name})" if is_hub else f"`{name}` (a local checkpoint)"
    data = f"local files ({local})" if local else f"the Hub dataset `{dataset_name}`, config `{task.name}`"
    results = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, (int, float)))
    text = (
        "---\n" + "\n".join(metadata) + "\n---\n\n"
        f"# {Path(output_dir).name}\n\n"
        f"{base} fine-tuned on GLUE {task.name.upper()}, read from {data}.\n\n"
        "## Evaluation\n\n| metric | value |\n| --- | --- |\n"
        f"{results}\n\n{lbe_section}"
    )
    path = os.path.join(output_dir, "README.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path
