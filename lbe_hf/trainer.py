"""`LBEMixin`: layerwise batch-entropy regularization for any `transformers.Trainer` subclass; `LBETrainer` = mixin +
`Trainer`.

    class LBESeq2SeqTrainer(LBEMixin, Seq2SeqTrainer): ...     # the mixin goes first
"""

from __future__ import annotations

import dataclasses
import logging
import os
import weakref
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import Trainer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from .alphas import ALPHAS_ATTRIBUTE, ALPHAS_NAME
from .card import lbe_card_section
from .checkpoint import (
    get_last_complete_checkpoint,
    is_complete_checkpoint,
    is_saved_model,
    mark_complete,
    unmark,
)
from .collect import unwrap_model
from .config import BatchEntropyConfig
from .regularizer import LBERegularizer
from .trainer_rules import rule_for

logger = logging.getLogger(__name__)

TAGS = ["lbe", "lbe_hf", "batch-entropy"]


LBE_PREFIX = "lbe_"  # hyperparameter-search keys that configure LBE, as the scripts' --lbe_* flags


def _as_config(lbe_config: BatchEntropyConfig | dict | None) -> BatchEntropyConfig:
    if lbe_config is None:
        return BatchEntropyConfig()
    if isinstance(lbe_config, dict):
        return BatchEntropyConfig.from_dict(lbe_config, source="lbe_config")
    if not isinstance(lbe_config, BatchEntropyConfig):
        raise TypeError(
            f"lbe_config must be a BatchEntropyConfig or a dict of its fields, got {type(lbe_config).__name__}."
        )
    return lbe_config


def _model_scales_loss_for_ga(model: nn.Module, accepts_loss_kwargs: bool) -> bool:
    """Whether the model divides its loss by the Trainer's `num_items_in_batch` (so it is scaled for accumulation).

    transformers infers this from `forward(**kwargs)`, which BERT-style heads also have without using it: their
    loss is a per-micro-batch mean and must be divided by the accumulation steps. Causal LMs (and models that say
    so with `accepts_loss_kwargs = True`) do use it.
    """
    if not accepts_loss_kwargs:
        return False
    base = unwrap_model(model)
    if getattr(type(base), "accepts_loss_kwargs", None) is True:
        return True
    return type(base).__name__ in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()


class LBEMixin:
    """Layerwise batch-entropy regularization (Peer et al., TMLR 2022) for a `transformers.Trainer` subclass.

    Put it first: `class LBESFTTrainer(LBEMixin, SFTTrainer)`, then pass `lbe_config=BatchEntropyConfig(...)` besides
    the trainer's own arguments. The LBE term is applied to the loss the trainer really optimizes, whatever
    `super().compute_loss` returns (the model's `outputs.loss`, a label smoother's, TRL's own), as L + L * L_BE or,
    for trainers whose loss changes sign (GRPO), L + L_BE. Which trainers are accepted, and each one's loss form and
    samples, is declared in `lbe_hf.trainer_rules`; the others are refused here, before any work.

    - Only training forwards with autograd are regularized: evaluation, a trainer's metric forwards under
      `torch.no_grad()` and reference-model forwards add nothing; several gradient forwards in one `compute_loss`
      (chosen and rejected run apart) contribute the mean of their terms.
    - The alphas are a submodule of the model (`model.lbe_alphas`), trained by the trainer's optimizer and schedule
      without weight decay, and saved as `lbe_alphas.safetensors` + `lbe_config.json` in every checkpoint and
      beside the weights of `save_model`; the weights themselves load with plain `transformers`.
    - Logs `task_loss`, `lbe_loss`, `entropy_mean`, `entropy_min`, `alpha_mean`, `lbe_skipped`,
      `lbe_layers_dropped` (averaged since the last log and across processes) through `self.log`.
    - `entropy_callback=True` (default) adds `lbe_hf.callbacks.EntropyCallback` (per-layer entropy scalars for the
      `report_to` trackers) unless `callbacks=` already has one.
    - Entropies are computed per device micro-batch, as in the paper's single-device runs.

    How it differs from the trainer it is mixed into, besides the LBE term (each listed in the README, "How
    LBETrainer differs from Trainer", and tested against the plain trainer):

    - `fix_accumulation=True`: a mean-loss head that merely has `forward(**kwargs)` (BERT) is divided by the
      accumulation steps (transformers would assume it scales itself and train on GA x the gradient), and is not
      multiplied by the world size under DDP. False keeps the trainer's own rule.
    - `mark_checkpoints=True`: each checkpoint gets a completion marker once every process wrote its files, old
      ones are rotated only after that, and `train(resume_from_checkpoint=True)` takes the last complete one. False
      keeps the trainer's own checkpointing (the alphas are saved either way).
    - `lbe_config.on_nonfinite="skip"` (default): a NaN/inf task loss drops that micro-batch's gradient instead of
      turning the weights NaN; "raise" stops instead.
    - Gradient checkpointing is switched to `use_reentrant=False` (reentrant checkpointing would silently cut the
      LBE term off the weights).
    """

    def __init__(
        self,
        *args: Any,
        lbe_config: BatchEntropyConfig | None = None,
        entropy_callback: bool = True,
        fix_accumulation: bool = True,
        mark_checkpoints: bool = True,
        **kw,
    ):
        # Refused trainers fail here, before the trainer loads or wraps anything.
        self.lbe_trainer_name, self.lbe_rule = rule_for(type(self))
        self._lbe_base_config = _as_config(lbe_config)
        self.lbe_config = self._lbe_base_config
        self.fix_accumulation = fix_accumulation
        self.mark_checkpoints = mark_checkpoints
        self._lbe_nonfinite_losses = 0
        self._lbe_layer_history: list[tuple[int, list[float]]] = []
        self.lbe: LBERegularizer | None = None
        super().__init__(*args, **kw)
        if self.model is None:
            raise ValueError(f"{type(self).__name__} needs `model=` or `model_init=`: LBE is attached to the model.")
        if self.lbe is None or self.lbe.model is not self.model:
            # After the trainer's own __init__ (which may load the model from a name or wrap it with PEFT), before
            # train() builds the optimizer and wraps the model for DDP/FSDP/DeepSpeed.
            self._attach_lbe(self.model, self.lbe_config)
        if self.optimizer is not None and not any(
            p is self.lbe.alphas_module.alpha for group in self.optimizer.param_groups for p in group["params"]
        ):
            raise ValueError(
                "The optimizer passed in `optimizers=` does not hold the LBE alphas, so they would never train. Let "
                "the trainer create the optimizer, or build yours after creating the trainer from "
                "`trainer.model.parameters()` (which include `model.lbe_alphas`)."
            )
        self._check_lbe_args()
        from .callbacks import EntropyCallback

        own = next((c for c in self.callback_handler.callbacks if isinstance(c, EntropyCallback)), None)
        if own is not None or entropy_callback:
            (own or EntropyCallback()).attach(self)
        if fix_accumulation and type(self).loss_is_scaled_for_ga is None:
            self.loss_is_scaled_for_ga = (
                _model_scales_loss_for_ga(self.model, self.model_accepts_loss_kwargs)
                or self.compute_loss_func is not None
            )
        if fix_accumulation and self.model_accepts_loss_kwargs and not _model_scales_loss_for_ga(self.model, True):
            # transformers multiplies the loss by the number of processes (training and eval) for models that
            # "accept loss kwargs", assuming they divide by the global num_items_in_batch; a mean-loss head that
            # merely has **kwargs (BERT) would train on and report 2x its loss under 2-process DDP.
            self.model_accepts_loss_kwargs = False
        base = unwrap_model(self.model)
        if hasattr(base, "add_model_tags"):
            base.add_model_tags(TAGS)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            if world != self.accelerator.num_processes:
                raise RuntimeError(
                    f"torch.distributed runs {world} processes but accelerate counts "
                    f"{self.accelerator.num_processes}: every process would save checkpoints and see the same "
                    "batches. With DeepSpeed on CPU, create `accelerate.PartialState(backend='gloo')` first and pass "
                    "TrainingArguments(accelerator_config={'use_configured_state': True}) (docs/engines.md)."
                )

    def _attach_lbe(self, model: nn.Module, config: BatchEntropyConfig) -> None:
        """Hooks and alphas on `model` (the trainer's, or a fresh one from `model_init` for each run or trial)."""
        from .callbacks import EntropyCallback

        if self.lbe is not None:  # a new model from model_init: the old one's hooks and history go
            self._lbe_finalizer()
            self._lbe_layer_history = []
        self.lbe_config = config
        self.lbe = LBERegularizer(model, config, fold_into_loss=False)
        self.lbe.loss_form = self.lbe_rule.loss_form if config.loss_form == "auto" else config.loss_form
        self.lbe.shared_prefixes = self.lbe_rule.shared_prefixes
        # Hooks go when the trainer is garbage-collected (or on `remove_lbe()`), not at the end of train():
        # evaluate/predict/train() again keep working, and the hooks hold no tensor between steps.
        self._lbe_finalizer = weakref.finalize(self, self.lbe.remove)
        handler = getattr(self, "callback_handler", None)
        for callback in handler.callbacks if handler is not None else []:
            if isinstance(callback, EntropyCallback) and callback.attached:
                callback.bind(lambda: self.entropy_history, self.lbe.layer_names)

    def call_model_init(self, trial=None) -> nn.Module:
        """`Trainer.call_model_init`, then LBE attached to the fresh model, with the trial's `lbe_*` values.

        A hyperparameter search's space may hold any `BatchEntropyConfig` field prefixed `lbe_` (`lbe_alpha`,
        `lbe_beta`, `lbe_alpha_min`, ...) next to `TrainingArguments` fields; each trial trains with its own.
        """
        model = super().call_model_init(trial)
        if not hasattr(self, "_lbe_base_config"):  # Trainer.__init__ of a subclass that set no config yet
            return model
        params = self._lbe_trial_params(trial)
        self._attach_lbe(model, dataclasses.replace(self._lbe_base_config, **params))
        if params:
            logger.info(f"LBE trial settings: {params}")
        return model

    def _lbe_trial_params(self, trial) -> dict[str, Any]:
        if trial is None:
            return {}
        # Optuna gives a trial the same value each time a name is suggested again.
        space = trial if isinstance(trial, dict) else getattr(self, "_lbe_user_space", self.hp_space)(trial)
        fields = {f.name for f in dataclasses.fields(BatchEntropyConfig)}
        params = {}
        for key, value in space.items():
            if key.startswith(LBE_PREFIX):
                name = key[len(LBE_PREFIX) :]
                if name not in fields:
                    raise ValueError(
                        f"hyperparameter {key!r}: BatchEntropyConfig has no field {name!r}; searchable LBE keys "
                        f"are {sorted(LBE_PREFIX + f for f in fields)}."
                    )
                params[name] = value
        return params

    def hyperparameter_search(self, hp_space=None, *args: Any, **kwargs: Any):
        """`Trainer.hyperparameter_search` (needs `model_init`); `hp_space` may also return `lbe_alpha`, `lbe_beta`...

        The `lbe_*` keys configure each trial's LBE (see `call_model_init`) and are kept away from
        `TrainingArguments`, which has no such fields.
        """
        if hp_space is not None:
            user_space = hp_space

            def hp_space(trial):
                values = user_space(trial)
                return {key: value for key, value in values.items() if not key.startswith(LBE_PREFIX)}

            self._lbe_user_space = user_space
        return super().hyperparameter_search(hp_space, *args, **kwargs)

    def _check_lbe_args(self) -> None:
        if self.args.n_gpu > 1 and self.args.parallel_mode.value == "not_distributed":
            # nn.DataParallel runs the hooks in one thread per GPU, each on its slice, into shared state.
            raise ValueError(
                f"{self.args.n_gpu} GPUs without a launcher: Trainer would use nn.DataParallel, whose replicas run "
                "LBE's hooks in threads on slices of the batch. Launch with `accelerate launch` or `torchrun` (DDP), "
                "or limit this process to one GPU (CUDA_VISIBLE_DEVICES=0)."
            )
        packed = getattr(self.args, "packing", False) or getattr(self.args, "padding_free", False)
        collator = type(getattr(self, "data_collator", None)).__name__
        if (packed or collator == "DataCollatorWithFlattening") and self.lbe_config.entropy_mode == "flatten":
            raise ValueError(
                "packed (padding-free) batches hold one row of concatenated sequences, so flatten mode would see one "
                "sample where you configured several. Use BatchEntropyConfig(entropy_mode='token') (every packed "
                "token a sample), or turn packing off."
            )
        if self.lbe_rule.shared_prefixes and self.lbe_config.entropy_estimator == "joint":
            raise ValueError(
                f"{self.lbe_trainer_name} batches rows that share prompts, which only the 'neuron' estimator counts "
                "once: use entropy_estimator='neuron'."
            )
        if self.args.per_device_train_batch_size < 2 and self.lbe_config.entropy_mode == "flatten":
            raise ValueError(
                f"per_device_train_batch_size={self.args.per_device_train_batch_size}: batch entropy is a variance "
                "over the batch and needs at least 2 samples per device. Use a batch size >= 2 (the paper uses "
                "32-512), or entropy_mode='token' for sequence models."
            )
        if self.args.gradient_checkpointing:
            kwargs = dict(self.args.gradient_checkpointing_kwargs or {})
            if kwargs.get("use_reentrant", False):
                # Reentrant checkpointing runs the forward under no_grad: captured activations would carry no
                # gradient and the LBE term would silently stop training the weights.
                logger.warning(
                    "LBETrainer: switching gradient checkpointing to use_reentrant=False (LBE needs gradients "
                    "through the hooked activations)."
                )
            kwargs["use_reentrant"] = False
            # transformers 5.x reads activation_checkpointing_kwargs (gradient_checkpointing_* are its aliases).
            self.args.gradient_checkpointing_kwargs = kwargs
            if hasattr(self.args, "activation_checkpointing_kwargs"):
                self.args.activation_checkpointing_kwargs = kwargs

    # ---- public state -----------------------------------------------------------------------------------

    @property
    def alphas(self) -> torch.Tensor:
        """The learned entropy targets, one per regularized module, as a 1-D tensor."""
        return self.lbe.alphas

    @property
    def lbe_module_names(self) -> list[str]:
        """The regularized modules, in the order of `alphas`."""
        return list(self.lbe.module_names)

    @property
    def lbe_layer_names(self) -> list[str]:
        """The terms of L_BE seen so far (one per module application), in the order of `entropy_history`."""
        return list(self.lbe.layer_names)

    # ---- loss -------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not (model.training and torch.is_grad_enabled()):
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        with self.lbe.capture():
            result = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        loss, outputs = result if return_outputs else (result, None)
        # The logged task_loss is the per-step mean the Trainer logs as `loss`: a loss already scaled for gradient
        # accumulation (a causal LM's sum over num_items_in_batch) adds up over the micro-batches of a step.
        steps = max(1, self.args.gradient_accumulation_steps)
        scaled = self._lbe_loss_is_scaled(num_items_in_batch)
        detached = loss.detach()
        # An additive term beside a loss already divided over the accumulated batch is divided the same way.
        term_scale = 1.0 / steps if scaled else 1.0
        loss = self.lbe.fold(
            loss, log_value=detached if scaled else detached / steps, log_weight=1.0 / steps, term_scale=term_scale
        )
        if not torch.isfinite(loss.detach()).all():
            loss = self._nonfinite_task_loss(model, loss)
        return (loss, outputs) if return_outputs else loss

    def _lbe_loss_is_scaled(self, num_items_in_batch) -> bool:
        """Whether `compute_loss`'s loss is already divided over the whole accumulated batch (as Trainer decides)."""
        if getattr(type(self), "loss_is_scaled_for_ga", None) is True:  # the trainer says so for every batch (GRPO)
            return True
        if num_items_in_batch is None:
            return False
        if self.loss_is_scaled_for_ga is not None:
            return bool(self.loss_is_scaled_for_ga)
        return bool(self.model_accepts_loss_kwargs or self.compute_loss_func is not None)

    def _nonfinite_task_loss(self, model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
        """A NaN/inf loss (the LBE term is already finite or dropped): stop, or drop this micro-batch's gradient.

        `logging_nan_inf_filter` only hides such a loss from the logs; its backward would turn every weight NaN.
        With on_nonfinite='skip' the returned zero reaches every trainable parameter, so each gets a zero
        gradient and DDP's reduction completes (with or without find_unused_parameters); the optimizer step still
        runs, with this micro-batch contributing nothing (momentum and weight decay still apply).
        """
        step = self.state.global_step
        if self.lbe_config.on_nonfinite == "raise":
            raise FloatingPointError(
                f"the task loss is {loss.detach().float().item()} at step {step} (non-finite inputs, labels or "
                "activations). Lower the learning rate or check the data, or set on_nonfinite='skip' to drop such "
                "micro-batches."
            )
        self._lbe_nonfinite_losses += 1
        logger.warning(f"LBETrainer: non-finite task loss at step {step}: this micro-batch's gradient is dropped.")
        trainable = [p for p in model.parameters() if p.requires_grad]
        return torch.stack([p.reshape(-1)[:1].sum() * 0.0 for p in trainable]).sum().to(loss.dtype)

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        # Decay would pull the alphas to 0, where they clamp to alpha_min.
        return [n for n in super().get_decay_parameter_names(model) if ALPHAS_ATTRIBUTE not in n.split(".")]

    # ---- logging ----------------------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and "eval_loss" not in logs:
            reduce = None
            if self.accelerator.num_processes > 1:

                def reduce(t):
                    return self.accelerator.reduce(t.to(self.accelerator.device), reduction="sum")

            metrics, layers = self.lbe.pop_metrics(reduce)
            logs.update(metrics)
            skipped = torch.tensor(float(self._lbe_nonfinite_losses))
            self._lbe_nonfinite_losses = 0
            logs["nonfinite_loss_skipped"] = (reduce(skipped) if reduce is not None else skipped).item()
            if layers is not None:
                self._lbe_layer_history.append((self.state.global_step, layers.tolist()))
        super().log(logs, start_time)

    @property
    def entropy_history(self) -> list[tuple[int, list[float]]]:
        """(global step, per-layer mean batch entropy since the previous log) at every logging step."""
        return list(self._lbe_layer_history)

    # ---- saving and loading -----------------------------------------------------------------------------

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict=state_dict)
        # Under DeepSpeed and FSDP the Trainer calls `_save` on every process: sharded alphas are gathered on all
        # of them (a collective), and only the saving process writes.
        folder = output_dir if output_dir is not None else self.args.output_dir
        self.lbe.save_pretrained(folder, is_main_process=self.args.should_save)

    def _save_checkpoint(self, model: nn.Module, trial) -> None:
        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if not self.mark_checkpoints:
            super()._save_checkpoint(model, trial)
            if self._lbe_sharded_state_dict():
                self.lbe.save_pretrained(folder, is_main_process=self.args.should_save)
            return
        if self.args.should_save:
            unmark(folder)
        # Rotation deletes old checkpoints: run it only once the new one is marked complete.
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        # With a sharded state dict (FSDP) Trainer never calls `_save`: the alphas are written here, by a call that
        # every process makes (gathering sharded alphas is a collective).
        if self._lbe_sharded_state_dict():
            self.lbe.save_pretrained(folder, is_main_process=self.args.should_save)
        self.accelerator.wait_for_everyone()  # every process's files (RNG states, shards) are written
        if self.args.should_save:
            mark_complete(folder, self.state.global_step)
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )

    def _lbe_sharded_state_dict(self) -> bool:
        """Whether checkpoints hold a sharded FSDP state dict (then the Trainer does not call `_save`)."""
        if not getattr(self, "is_fsdp_enabled", False):
            return False
        plugin = getattr(self.accelerator.state, "fsdp_plugin", None)
        return "FULL_STATE_DICT" not in str(getattr(plugin, "state_dict_type", ""))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and self.is_deepspeed_enabled:
            # DeepSpeed resumes through its engine and the Trainer skips `_load_from_checkpoint`: load the alphas.
            self.lbe.load_pretrained(checkpoint)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        """`Trainer.train`; `resume_from_checkpoint=True` picks the last COMPLETE checkpoint of `output_dir`."""
        if not self.lbe.collector.hooked:
            raise RuntimeError("remove_lbe() was called on this LBETrainer: create a new one to train with LBE.")
        if isinstance(resume_from_checkpoint, (str, os.PathLike)) and is_saved_model(resume_from_checkpoint):
            raise ValueError(
                f"{resume_from_checkpoint} is a saved model (save_model / push_to_hub output), not a Trainer "
                "checkpoint: it has no optimizer, scheduler or trainer state to resume. To continue training from "
                f"it, load it with from_pretrained({str(resume_from_checkpoint)!r}) and pass that as model= to a new "
                "trainer (its saved LBE alphas are picked up), or resume from one of its run's checkpoint-N folders."
            )
        if not self.mark_checkpoints:
            return super().train(resume_from_checkpoint, *args, **kwargs)
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No complete checkpoint in {self.args.output_dir} to resume from.")
        elif isinstance(resume_from_checkpoint, (str, os.PathLike)) and not is_complete_checkpoint(
            resume_from_checkpoint
        ):
            raise ValueError(
                f"{resume_from_checkpoint} is not a complete checkpoint (no trainer state or completion marker: its "
                "save was cut short). Resume from lbe_hf.get_last_complete_checkpoint(output_dir) instead."
            )
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def remove_lbe(self) -> None:
        """Removes the LBE hooks from the model now (they also go when the trainer is garbage-collected).

        The alphas stay attached; evaluate/predict keep working; train() then raises.
        """
        self._lbe_finalizer()

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model=model)
        if not self.lbe.load_pretrained(resume_from_checkpoint):
            logger.warning(f"No LBE alphas in {resume_from_checkpoint}: keeping their current values.")

    def _load_best_model(self) -> None:
        super()._load_best_model()
        if self.state.best_model_checkpoint:
            self.lbe.load_pretrained(self.state.best_model_checkpoint)

    def create_model_card(self, *args: Any, tags: str | list[str] | None = None, **kwargs: Any) -> None:
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        super().create_model_card(*args, tags=sorted(set(tags) | set(TAGS)), **kwargs)
        if not self.is_world_process_zero():
            return
        # Only this process runs here: read the alphas `save_model` just wrote rather than gathering sharded ones.
        saved = os.path.join(self.args.output_dir, ALPHAS_NAME)
        alphas = load_file(saved)["alpha"] if os.path.isfile(saved) else self.alphas
        path = os.path.join(self.args.output_dir, "README.md")
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n" + lbe_card_section(self.lbe_config, self.lbe_module_names, alphas.tolist()))


class LBETrainer(LBEMixin, Trainer):
    """`transformers.Trainer` with layerwise batch-entropy regularization (Peer et al., TMLR 2022).

    Loss = L + L * L_BE, L being whatever loss the model (or `compute_loss_func`, or a label smoother) returns.
    Everything else is `Trainer`'s: pass `lbe_config=BatchEntropyConfig(...)` besides the usual arguments. See
    `LBEMixin` for what is regularized, logged and saved.
    """
