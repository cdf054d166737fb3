"""Fine-tune a sequence-classification checkpoint on a GLUE task with `LBETrainer` (transformers' run_glue.py flags).

    python scripts/run_glue.py --model_name_or_path bert-base-uncased --task_name rte --do_train --do_eval \
        --max_seq_length 128 --per_device_train_batch_size 32 --learning_rate 3e-5 --num_train_epochs 5 \
        --lbe_alpha 0.5 --lbe_beta 0.01 --output_dir runs/rte

Every `TrainingArguments` flag works, plus `--lbe_*` (every `BatchEntropyConfig` field; defaults `--lbe_alpha 0.5
--lbe_beta 0.01`, the paper's transformer settings; `--lbe_beta 0` is the plain baseline: the loss is exactly the task
loss), `--use_lora --lora_r ...`, and local data with `--train_file/--validation_file` (.jsonl/.csv/.tsv with the
task's columns; needed without Hub access). Writes train/eval/all_results.json
(with `world_size`), the model (or adapter) with `lbe_alphas.safetensors` + `lbe_config.json`, and a model card.
`main()` returns the metrics and the final alphas (`lbe_alphas`) on every process.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

import transformers
from transformers import DataCollatorWithPadding, HfArgumentParser, TrainingArguments, default_data_collator, set_seed

from lbe_hf import LBETrainer
from lbe_hf.card import name_base_model_in_cards
from lbe_hf.checkpoint import get_last_complete_checkpoint
from lbe_hf.extras import MissingExtraError
from lbe_hf.tasks.glue import (
    HUB_DATASET,
    GlueLBEArguments,
    LoraArguments,
    apply_lora,
    card_kwargs,
    compute_metrics_fn,
    get_task,
    load_glue_datasets,
    load_glue_metric,
    load_model_and_tokenizer,
    tokenize_datasets,
)

logger = logging.getLogger(__name__)


@dataclass
class DataTrainingArguments:
    task_name: str | None = field(
        default=None, metadata={"help": "GLUE task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli."}
    )
    dataset_name: str = field(default=HUB_DATASET, metadata={"help": "Hub dataset with one config per GLUE task."})
    train_file: str | None = field(
        default=None, metadata={"help": "Local .jsonl/.csv/.tsv training file (task columns + label)."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Local .jsonl/.csv/.tsv validation file."})
    max_seq_length: int = field(default=128, metadata={"help": "Longer inputs are truncated, shorter ones padded."})
    pad_to_max_length: bool = field(default=True, metadata={"help": "Pad to max_seq_length (False: pad per batch)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N validation rows."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Recompute the tokenized datasets."})
    metric_source: str = field(
        default="auto",
        metadata={
            "help": "GLUE metric: 'hub', 'local' (shipped copy) or 'auto'.",
            "choices": ["auto", "hub", "local"],
        },
    )


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "Hub id or local folder of the checkpoint."})
    config_name: str | None = field(default=None, metadata={"help": "Config, if not the model's."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where Hub downloads are stored."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the checkpoint."})
    token: str | None = field(default=None, metadata={"help": "Hub token (else the stored login)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow code from the checkpoint's repo."})
    ignore_mismatched_sizes: bool = field(default=False, metadata={"help": "Re-initialise a head of another size."})


def make_parser() -> HfArgumentParser:
    return HfArgumentParser(
        (ModelArguments, DataTrainingArguments, TrainingArguments, GlueLBEArguments, LoraArguments)
    )


def main(argv: list[str] | None = None) -> dict:
    parser = make_parser()
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        load = parser.parse_json_file if argv[0].endswith(".json") else parser.parse_yaml_file
        model_args, data_args, training_args, lbe_args, lora_args = load(os.path.abspath(argv[0]))
    else:
        model_args, data_args, training_args, lbe_args, lora_args = parser.parse_args_into_dataclasses(args=argv)

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", handlers=[logging.StreamHandler()]
    )
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    logger.setLevel(training_args.get_process_log_level())

    # Everything that can be wrong with the input is checked here, before a model is loaded or a step is taken.
    task = get_task(data_args.task_name)
    lbe_config = lbe_args.to_config()
    raw = load_glue_datasets(
        task,
        data_args.train_file,
        data_args.validation_file,
        data_args.dataset_name,
        model_args.cache_dir,
        need_train=training_args.do_train,
        need_eval=training_args.do_eval,
    )
    last_checkpoint = None
    if training_args.do_train and os.path.isdir(training_args.output_dir):
        last_checkpoint = get_last_complete_checkpoint(training_args.output_dir)  # skips half-written folders
        if last_checkpoint is not None and training_args.resume_from_checkpoint is None:
            logger.info(f"Resuming from {last_checkpoint} (pass another --output_dir to start afresh).")

    set_seed(training_args.seed)
    hub_kwargs = {
        "cache_dir": model_args.cache_dir,
        "revision": model_args.model_revision,
        "token": model_args.token,
        "trust_remote_code": model_args.trust_remote_code,
    }
    tokenizer, model = load_model_and_tokenizer(
        model_args.model_name_or_path,
        task,
        model_args.config_name,
        model_args.tokenizer_name,
        model_args.ignore_mismatched_sizes,
        **hub_kwargs,
    )
    if lora_args.use_lora:
        model = apply_lora(model, lora_args)

    # Subsets are taken before tokenizing (cheaper); labels were validated on the whole split.
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples}
    for split, limit in limits.items():
        if split in raw and limit is not None:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
    with training_args.main_process_first(desc="tokenizing"):
        tokenized = tokenize_datasets(
            raw,
            tokenizer,
            task,
            data_args.max_seq_length,
            data_args.pad_to_max_length,
            load_from_cache_file=not data_args.overwrite_cache,
        )
    train_dataset = tokenized["train"] if training_args.do_train else None
    eval_dataset = tokenized["validation"] if training_args.do_eval else None

    collator = default_data_collator if data_args.pad_to_max_length else DataCollatorWithPadding(tokenizer)
    trainer = LBETrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=compute_metrics_fn(task, load_glue_metric(task, data_args.metric_source)),
        lbe_config=lbe_config,
    )
    logger.info(f"LBE regularizes {len(trainer.lbe_module_names)} modules: {trainer.lbe_module_names}")

    results: dict[str, float] = {}
    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint or last_checkpoint
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()  # also writes lbe_alphas.safetensors + lbe_config.json
        metrics = dict(train_result.metrics, train_samples=len(train_dataset), world_size=training_args.world_size)
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)
    if training_args.do_eval:
        metrics = dict(trainer.evaluate(), eval_samples=len(eval_dataset), world_size=training_args.world_size)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    results["lbe_alphas"] = trainer.alphas.tolist()  # every process: a collective under sharded engines

    files = {"train": data_args.train_file, "validation": data_args.validation_file}
    kwargs = card_kwargs(task, model_args.model_name_or_path, files, data_args.dataset_name)
    name_base_model_in_cards(trainer, model_args.model_name_or_path)  # a local base is no "trained from scratch"
    if training_args.push_to_hub:
        trainer.push_to_hub(**kwargs)  # saves, writes the card (with the LBE section) and uploads output_dir
    else:
        trainer.create_model_card(**kwargs)
    return results


if __name__ == "__main__":
    try:
        main()
    except (ConnectionError, MissingExtraError) as error:  # no Hub access / a missing extra: say what to do
        sys.exit(f"run_glue.py: {error}")
