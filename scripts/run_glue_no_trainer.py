"""Fine-tune on a GLUE task with an Accelerate loop and `LBERegularizer` (transformers' run_glue_no_trainer.py flags).

    accelerate launch scripts/run_glue_no_trainer.py --model_name_or_path bert-base-uncased --task_name mrpc \
        --max_length 128 --per_device_train_batch_size 32 --learning_rate 3e-5 --num_train_epochs 5 \
        --lbe_alpha 0.5 --lbe_beta 0.01 --output_dir runs/mrpc --checkpointing_steps epoch --with_tracking

Defaults `--lbe_alpha 0.5 --lbe_beta 0.01` (the paper's transformer settings; `--lbe_beta 0` = plain fine-tuning).
Shows a progress bar on the main process and prints a loss/LBE line every `--logging_steps` steps.
The LBE term is the same building block as `LBETrainer`'s (the regularizer's forward hook folds it into
`outputs.loss`); the alphas are registered for checkpointing, so `--resume_from_checkpoint` restores them.
Writes `all_results.json` (eval metrics, `world_size`, alphas), the model (or LoRA adapter) with
`lbe_alphas.safetensors` + `lbe_config.json`, and a model card. `main()` returns the same on every process.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, HfArgumentParser, SchedulerType, default_data_collator, get_scheduler

from lbe_hf import LBERegularizer
from lbe_hf.alphas import ALPHAS_ATTRIBUTE
from lbe_hf.card import lbe_card_section
from lbe_hf.extras import MissingExtraError
from lbe_hf.tasks.glue import (
    HUB_DATASET,
    GlueLBEArguments,
    LoraArguments,
    apply_lora,
    get_task,
    load_glue_datasets,
    load_glue_metric,
    load_model_and_tokenizer,
    predictions_from_logits,
    tokenize_datasets,
    write_model_card,
)

logger = get_logger(__name__)
# What --push_to_hub leaves out of output_dir: accelerate checkpoints (step_N / epoch_N) and private files.
UPLOAD_IGNORE = ["step_*", "epoch_*", "_*"]


def make_parser() -> HfArgumentParser:
    parser = HfArgumentParser((GlueLBEArguments, LoraArguments), description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--task_name", default=None, help="GLUE task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli.")
    add("--train_file", default=None, help="Local .jsonl/.csv/.tsv training file with the task's columns.")
    add("--validation_file", default=None, help="Local .jsonl/.csv/.tsv validation file.")
    add("--max_train_samples", type=int, default=None, help="Keep the first N training rows.")
    add("--max_eval_samples", type=int, default=None, help="Keep the first N validation rows.")
    add(
        "--max_length",
        type=int,
        default=128,
        help="Longer inputs are truncated (and padded with --pad_to_max_length).",
    )
    add("--pad_to_max_length", action="store_true", help="Pad to max_length instead of per batch.")
    add("--model_name_or_path", required=True, help="Hub id or local folder of the checkpoint.")
    add("--tokenizer_name", default=None)
    add("--trust_remote_code", action="store_true")
    add("--ignore_mismatched_sizes", action="store_true")
    add("--per_device_train_batch_size", type=int, default=8)
    add("--per_device_eval_batch_size", type=int, default=8)
    add("--learning_rate", type=float, default=5e-5)
    add("--weight_decay", type=float, default=0.0)
    add("--num_train_epochs", type=int, default=3)
    add("--max_train_steps", type=int, default=None, help="Overrides num_train_epochs.")
    add("--gradient_accumulation_steps", type=int, default=1)
    add("--lr_scheduler_type", type=SchedulerType, default="linear", choices=list(SchedulerType))
    add("--num_warmup_steps", type=int, default=0)
    add(
        "--logging_steps",
        type=int,
        default=50,
        help="Every N optimizer steps: print a loss/LBE line (main process) and log to the trackers.",
    )
    add("--output_dir", default=None)
    add("--seed", type=int, default=None)
    add("--checkpointing_steps", default=None, help="Save state every N optimizer steps, or 'epoch'.")
    add("--resume_from_checkpoint", default=None, help="A folder written by --checkpointing_steps.")
    add("--with_tracking", action="store_true", help="Log to the trackers of --report_to.")
    add("--report_to", default="all", help="tensorboard, wandb, comet_ml, clearml, ... or 'all'.")
    add("--push_to_hub", action="store_true")
    add("--hub_model_id", default=None)
    add("--hub_token", default=None)
    add("--metric_source", default="auto", choices=["auto", "hub", "local"])
    return parser


def _resume_position(
    path: str, steps_per_epoch: int, accumulation: int, batches_per_epoch: int
) -> tuple[int, int, int]:
    """(epoch, batches to skip in it, completed optimizer steps) for a folder named `epoch_N` or `step_N`."""
    name = Path(path).name
    if name.startswith("epoch_"):
        epoch = int(name.removeprefix("epoch_")) + 1
        return epoch, 0, epoch * steps_per_epoch
    if name.startswith("step_"):
        batches = int(name.removeprefix("step_")) * accumulation
        return batches // batches_per_epoch, batches % batches_per_epoch, batches // accumulation
    raise ValueError(
        f"--resume_from_checkpoint {path}: expected a folder named step_N or epoch_N written by this script."
    )


def _log_line(step: int, total: int, metrics: dict[str, float]) -> str:
    """`step 50/300  loss 0.6931  task_loss 0.6912  lbe_loss 0.0028  entropy_mean 1.2345 ...`"""
    keys = ("loss", "task_loss", "lbe_loss", "entropy_mean", "entropy_min", "alpha_mean", "lbe_skipped")
    values = "  ".join(f"{k} {metrics[k]:.4g}" for k in keys if k in metrics)
    return f"step {step}/{total}  {values}"


def evaluate_model(model, dataloader, accelerator, metric, task) -> dict[str, float]:
    model.eval()
    for batch in dataloader:
        with torch.no_grad():
            logits = model(**batch).logits
        predictions, references = accelerator.gather_for_metrics((logits, batch["labels"]))
        metric.add_batch(
            predictions=predictions_from_logits(predictions.cpu().numpy(), task), references=references.cpu().numpy()
        )
    return {f"eval_{k}": float(v) for k, v in metric.compute().items()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    lbe_args, lora_args, args = make_parser().parse_args_into_dataclasses(args=sys.argv[1:] if argv is None else argv)
    task = get_task(args.task_name)
    lbe_config = lbe_args.to_config()
    if args.checkpointing_steps not in (None, "epoch") and not str(args.checkpointing_steps).isdigit():
        raise ValueError(
            f"--checkpointing_steps must be a number of steps or 'epoch', got {args.checkpointing_steps!r}."
        )
    tracking = {"log_with": args.report_to, "project_dir": args.output_dir} if args.with_tracking else {}
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps, **tracking)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    if args.seed is not None:
        set_seed(args.seed)

    # Bad input fails here, before the model is loaded.
    raw = load_glue_datasets(task, args.train_file, args.validation_file)
    for split, limit in (("train", args.max_train_samples), ("validation", args.max_eval_samples)):
        if limit is not None:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
    tokenizer, model = load_model_and_tokenizer(
        args.model_name_or_path,
        task,
        tokenizer_name=args.tokenizer_name,
        ignore_mismatched_sizes=args.ignore_mismatched_sizes,
        trust_remote_code=args.trust_remote_code,
    )
    if lora_args.use_lora:
        model = apply_lora(model, lora_args)
    # Before the optimizer: the alphas are a submodule of the model and must be among its parameters.
    regularizer = LBERegularizer(model, lbe_config)
    with accelerator.main_process_first():
        tokenized = tokenize_datasets(raw, tokenizer, task, args.max_length, args.pad_to_max_length)
    collate = default_data_collator if args.pad_to_max_length else DataCollatorWithPadding(tokenizer)
    train_dl = DataLoader(
        tokenized["train"], shuffle=True, collate_fn=collate, batch_size=args.per_device_train_batch_size
    )
    eval_dl = DataLoader(tokenized["validation"], collate_fn=collate, batch_size=args.per_device_eval_batch_size)

    # Decay would pull the alphas to 0, where they clamp to alpha_min.
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", ALPHAS_ATTRIBUTE)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in trainable if not any(k in n for k in no_decay)], "weight_decay": args.weight_decay},
        {"params": [p for n, p in trainable if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate)
    steps_per_epoch = math.ceil(len(train_dl) / args.gradient_accumulation_steps)
    from_epochs = args.max_train_steps is None
    if from_epochs:
        args.max_train_steps = args.num_train_epochs * steps_per_epoch
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=args.num_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    model, optimizer, train_dl, eval_dl, scheduler = accelerator.prepare(
        model, optimizer, train_dl, eval_dl, scheduler
    )
    accelerator.register_for_checkpointing(regularizer)  # the alphas live outside the model's state_dict
    # The prepared dataloader is sharded across processes: recount the steps of an epoch.
    steps_per_epoch = math.ceil(len(train_dl) / args.gradient_accumulation_steps)
    if from_epochs:
        args.max_train_steps = args.num_train_epochs * steps_per_epoch
    epochs = math.ceil(args.max_train_steps / steps_per_epoch)
    if args.with_tracking:
        config = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in vars(args).items()}
        config.update({f"lbe_{k}": str(v) for k, v in lbe_config.to_dict().items()})
        accelerator.init_trackers("glue_no_trainer", config)
    with accelerator.main_process_first():  # every process computes the metric on the gathered predictions
        metric = load_glue_metric(task, args.metric_source)

    completed, start_epoch, skip = 0, 0, 0
    if args.resume_from_checkpoint:
        accelerator.print(f"Resuming from {args.resume_from_checkpoint}")
        accelerator.load_state(args.resume_from_checkpoint)
        start_epoch, skip, completed = _resume_position(
            args.resume_from_checkpoint, steps_per_epoch, args.gradient_accumulation_steps, len(train_dl)
        )
    rows, world = len(tokenized["train"]), accelerator.num_processes
    logger.info(f"{rows} training rows, {args.max_train_steps} steps, world size {world}")
    logger.info(f"LBE regularizes {regularizer.num_layers} modules: {regularizer.module_names}")

    def reduce(t):
        return accelerator.reduce(t, reduction="sum")

    progress = tqdm(total=args.max_train_steps, initial=completed, disable=not accelerator.is_local_main_process)
    printed_loss, printed_batches = torch.zeros((), device=accelerator.device), 0
    eval_metrics: dict[str, float] = {}
    for epoch in range(start_epoch, epochs):
        model.train()
        total_loss = torch.zeros((), device=accelerator.device)
        batches = accelerator.skip_first_batches(train_dl, skip) if epoch == start_epoch and skip else train_dl
        for batch in batches:
            if completed >= args.max_train_steps:
                break
            with accelerator.accumulate(model):
                with regularizer.capture():
                    loss = model(**batch).loss  # already L + L * L_BE
                total_loss += loss.detach()
                printed_loss += loss.detach()
                printed_batches += 1
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            completed += 1
            progress.update(1)
            if completed % args.logging_steps == 0:
                lbe_metrics, _ = regularizer.pop_metrics(reduce)
                lbe_metrics["loss"] = accelerator.reduce(printed_loss, "mean").item() / max(1, printed_batches)
                printed_loss.zero_()
                printed_batches = 0
                if accelerator.is_local_main_process:
                    progress.write(_log_line(completed, args.max_train_steps, lbe_metrics))
                if args.with_tracking:
                    accelerator.log({f"train/{k}": v for k, v in lbe_metrics.items()}, step=completed)
            if str(args.checkpointing_steps).isdigit() and completed % int(args.checkpointing_steps) == 0:
                accelerator.save_state(os.path.join(args.output_dir or ".", f"step_{completed}"))
        eval_metrics = evaluate_model(model, eval_dl, accelerator, metric, task)
        if accelerator.is_local_main_process:
            progress.write(f"epoch {epoch}: {eval_metrics}")
        if args.with_tracking:
            lbe_metrics, _ = regularizer.pop_metrics(reduce)
            logs = {**eval_metrics, **{f"train/{k}": v for k, v in lbe_metrics.items()}}
            logs.update(train_loss=accelerator.reduce(total_loss, "mean").item() / max(1, len(train_dl)), epoch=epoch)
            accelerator.log(logs, step=completed)
        if args.checkpointing_steps == "epoch":
            accelerator.save_state(os.path.join(args.output_dir or ".", f"epoch_{epoch}"))
        if completed >= args.max_train_steps:
            break
    progress.close()
    if not eval_metrics:  # resumed at the end of training: still report the model's metrics
        eval_metrics = evaluate_model(model, eval_dl, accelerator, metric, task)
    if args.with_tracking:
        accelerator.end_training()

    alphas = regularizer.alphas.tolist()
    results = {**eval_metrics, "world_size": accelerator.num_processes, "train_steps": completed, "lbe_alphas": alphas}
    if args.output_dir is not None:
        save(args, accelerator, model, tokenizer, regularizer, task, results, lora=lora_args.use_lora)
    return results


def save(args, accelerator, model, tokenizer, regularizer, task, results, lora: bool = False) -> None:
    """Model (or adapter) + tokenizer + alphas + card + all_results.json in output_dir; pushed with --push_to_hub."""
    accelerator.wait_for_everyone()
    accelerator.unwrap_model(model).save_pretrained(
        args.output_dir, is_main_process=accelerator.is_main_process, save_function=accelerator.save
    )
    if not accelerator.is_main_process:
        return
    tokenizer.save_pretrained(args.output_dir)
    regularizer.save_pretrained(args.output_dir)
    section = lbe_card_section(regularizer.config, regularizer.module_names, results["lbe_alphas"])
    write_model_card(
        args.output_dir,
        task,
        args.model_name_or_path,
        section,
        {k: v for k, v in results.items() if k.startswith("eval_")},
        library_name="peft" if lora else "transformers",
        files={"train": args.train_file, "validation": args.validation_file},
        dataset_name=HUB_DATASET,
    )
    with open(os.path.join(args.output_dir, "all_results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    if args.push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi(token=args.hub_token)
        repo_id = api.create_repo(args.hub_model_id or Path(args.output_dir).name, exist_ok=True).repo_id
        api.upload_folder(
            repo_id=repo_id,
            folder_path=args.output_dir,
            commit_message="End of training",
            ignore_patterns=UPLOAD_IGNORE,
        )


if __name__ == "__main__":
    try:
        main()
    except (ConnectionError, MissingExtraError) as error:  # no Hub access / a missing extra: say what to do
        sys.exit(f"run_glue_no_trainer.py: {error}")
