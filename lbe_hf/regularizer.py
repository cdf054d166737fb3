"""`LBERegularizer`: attaches learnable alphas and hooks to a model and computes the LBE term of its training forwards.

It is the one building block behind `LBETrainer`, `LBEMixin` and the Accelerate scripts:

    reg = LBERegularizer(model, BatchEntropyConfig())   # before creating the optimizer
    with reg.capture():
        loss = model(**batch).loss                      # already L + L * L_BE

The LBE term is computed in a forward hook on the model itself, so that for DDP it happens inside `forward`: the
alphas are reached from the output and `find_unused_parameters` works, and a step that skips the term still
touches the alphas (with a zero gradient), so `find_unused_parameters=False` never waits for them either.

With `fold_into_loss=False` (what `LBEMixin` uses) the model's own `outputs.loss` is left alone and the term waits
in `pending` until `fold(loss)` applies it to whatever loss the trainer really optimizes (TRL's SFT loss is computed
from its own fused LM head, not from `outputs.loss`); a model loss in the output then gets `0 * L_BE` added, so that
DDP's `find_unused_parameters` sees the alphas used by the forward.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .alphas import ALPHAS_ATTRIBUTE, ALPHAS_NAME, LBEAlphas, copy_into, is_fully_sharded, plain_tensor
from .auto_alpha import AutoAlphaInit
from .collect import ActivationCollector, resolve_target_modules, unwrap_model
from .config import AUTO, BatchEntropyConfig
from .entropy import joint_layer_entropies, layer_entropies, masked_flatten_entropy, shared_prefix_duplicates
from .loss import lbe_loss, regularized_loss

logger = logging.getLogger(__name__)

# Running sums behind the logged metrics (see `pop_metrics`).
_SUM_KEYS = ("task_loss", "task_weight", "lbe_loss", "entropy_mean", "entropy_min", "counted", "skipped", "dropped")


def _decoder_modules(model: nn.Module, names: list[str]) -> set[str]:
    """The names in `names` that sit in the decoder of an encoder-decoder model (their tokens are the decoder's)."""
    base = unwrap_model(model)
    if not getattr(getattr(base, "config", None), "is_encoder_decoder", False):
        return set()
    try:
        decoder = base.get_decoder()
    except (AttributeError, NotImplementedError):
        return set()
    inside = {id(m) for m in decoder.modules()} if isinstance(decoder, nn.Module) else set()
    modules = dict(model.named_modules())
    return {n for n in names if id(modules[n]) in inside}


def read_alphas(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors and module names of an `lbe_alphas.safetensors` file; a damaged file is an error naming it."""
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(
            f"{path} could not be read ({err}): the file is damaged or was cut short. Restore it, or delete it to "
            "start from fresh alphas (a Trainer checkpoint: resume from an earlier complete one)."
        ) from err
    if "alpha" not in state:
        raise ValueError(f"{path} holds no 'alpha' tensor (keys: {sorted(state)}); it was not written by lbe_hf.")
    names = metadata.get("modules", "")
    return state, names.split(",") if names else []


def _saved_alphas_file(name_or_path: str) -> str | None:
    """`lbe_alphas.safetensors` beside a model's weights: a local folder, or a Hub repo (None when it has none)."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, ALPHAS_NAME)
        return path if os.path.isfile(path) else None
    from transformers.utils import cached_file

    try:
        return cached_file(
            name_or_path,
            ALPHAS_NAME,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            _raise_exceptions_for_gated_repo=False,
        )
    except (OSError, ValueError):  # not a repo id, or offline without a cached copy
        return None


def _loss_of(output):
    if isinstance(output, dict):
        return output.get("loss")
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor) and output[0].dim() == 0:
        return output[0]
    return None


def _with_loss(output, loss: torch.Tensor):
    if isinstance(output, dict):
        output["loss"] = loss
        return output
    return type(output)((loss, *output[1:]))


class LBERegularizer:
    """Layerwise batch-entropy regularization of `model`'s training forwards, driven by `config`.

    Args:
        model: the model to regularize (before DDP/FSDP/DeepSpeed wrapping; PEFT-wrapped is fine).
        config: `BatchEntropyConfig()` by default.
        fold_into_loss: True (raw loops): a forward whose output has a `loss` returns `L + L * L_BE` as its loss.
            False (`LBEMixin`): outputs are left alone and `fold(loss)` applies the pending terms.

    Every application of a regularized module in a training forward is one term of `L_BE` (ALBERT's shared layer
    run 12 times is 12 layers of information flow); all applications of a module share that module's alpha, so
    `alphas` has one entry per module (`module_names`) and the logged per-layer entropies one per application
    (`layer_names`: the module name, with `#k` for its k-th application when it runs several times). An
    application with fewer than 2 samples (a mixture-of-experts expert routed 0 or 1 tokens), or a module that did
    not run, drops out of that forward's term on its own and is counted in `lbe_layers_dropped`.
    """

    def __init__(self, model: nn.Module, config: BatchEntropyConfig | None = None, fold_into_loss: bool = True):
        self.config = config if config is not None else BatchEntropyConfig()
        if is_fully_sharded(model):
            raise ValueError(
                "LBERegularizer was given a model already sharded with fully_shard: its alphas would be plain "
                "parameters that FSDP never reduces, and they would drift apart across ranks. Create the "
                "LBERegularizer before fully_shard (docs/engines.md)."
            )
        self.model = model
        self.fold_into_loss = fold_into_loss
        self.module_names = resolve_target_modules(model, self.config.target_modules, self.config.exclude_modules)
        self._module_index = {name: i for i, name in enumerate(self.module_names)}
        self._decoder_names = _decoder_modules(model, self.module_names)
        self.collector = ActivationCollector(model, self.module_names, grad_forwards_only=True)
        existing = getattr(model, ALPHAS_ATTRIBUTE, None)
        if isinstance(existing, LBEAlphas) and existing.alpha.numel() == len(self.module_names):
            self.alphas_module = existing
        else:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            # alpha="auto": a placeholder until the first regularized forward measures the targets (auto_alpha.py).
            init = self.config.alpha_min if self.config.alpha == AUTO else self.config.alpha
            self.alphas_module = LBEAlphas(len(self.module_names), init).to(device)
            model.add_module(ALPHAS_ATTRIBUTE, self.alphas_module)
        fresh = self.alphas_module is not existing
        # Reused alphas (a second regularizer on the same model) are already initialised: nothing to measure.
        self.auto_alpha = AutoAlphaInit(model, self.config.constant) if fresh and self.config.alpha == AUTO else None
        if fresh:
            self._continue_from_saved(model)
        # "auto" is the paper's eq. 6 outside a trainer; LBEMixin sets the trainer's form (lbe_hf.trainer_rules).
        self.loss_form = "multiplicative" if self.config.loss_form == "auto" else self.config.loss_form
        # Rows that repeat a prompt (preference pairs, completion groups): count each shared position once.
        self.shared_prefixes = False
        self._root_handle = model.register_forward_hook(self._on_forward, with_kwargs=True)
        self.pending: list[torch.Tensor] = []
        self.layer_names: list[str] = []
        self._layer_slot: dict[str, int] = {}
        self._warned: set[str] = set()
        self._sums: dict[str, torch.Tensor] | None = None
        self._layer_sums: torch.Tensor | None = None
        self._layer_counts: torch.Tensor | None = None
        self.last_entropies: torch.Tensor | None = None

    # ---- state -------------------------------------------------------------------------------------------

    @property
    def alphas(self) -> torch.Tensor:
        """The learnable entropy targets, (L,), in `module_names` order: a detached plain-tensor copy.

        Under FSDP2 (and ZeRO-3 with `stage3_param_persistence_threshold` below their number) the alphas are sharded
        and this gathers them: call it on every process, not on rank 0 only.
        """
        return plain_tensor(self.alphas_module.alpha).clone()

    @property
    def num_layers(self) -> int:
        return len(self.module_names)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """For `accelerator.register_for_checkpointing` and our own files: plain CPU tensors (gathered if sharded)."""
        return {"alpha": plain_tensor(self.alphas_module.alpha).cpu().clone()}

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        alpha = state_dict["alpha"]
        if alpha.numel() != self.num_layers:
            raise ValueError(
                f"the saved LBE state has {alpha.numel()} alphas but this model regularizes {self.num_layers} "
                f"modules ({self.module_names[:3]}...). Resume with the same model and target_modules as the run "
                "that wrote the checkpoint."
            )
        copy_into(self.alphas_module.alpha, alpha)
        if self.auto_alpha is not None:  # loaded alphas replace the measurement
            self.auto_alpha.remove()
            self.auto_alpha = None

    def save_pretrained(self, directory: str | os.PathLike, is_main_process: bool = True) -> None:
        """Writes `lbe_alphas.safetensors` (alphas + module names) and `lbe_config.json` into `directory`.

        With sharded alphas (FSDP2) call it on every process (they are gathered first), `is_main_process` True on one.
        """
        state = self.state_dict()
        if not is_main_process:
            return
        os.makedirs(directory, exist_ok=True)
        save_file(state, os.path.join(directory, ALPHAS_NAME), metadata={"modules": ",".join(self.module_names)})
        self.config.save_pretrained(directory)

    def load_pretrained(self, directory: str | os.PathLike) -> bool:
        """Loads alphas written by `save_pretrained` (safetensors: no code runs). False if the folder has none."""
        path = os.path.join(directory, ALPHAS_NAME)
        if not os.path.isfile(path):
            return False
        self.load_state_dict(read_alphas(path)[0])
        return True

    def _continue_from_saved(self, model: nn.Module) -> None:
        """Fresh alphas of a model loaded with `from_pretrained(folder)`: take the ones `save_pretrained` left there.

        A model saved by `LBETrainer.save_model` (or pushed) carries its learned alphas beside the weights; without
        this, continuing from disk would restart them from `config.alpha` while continuing in memory keeps them.
        """
        source = getattr(getattr(unwrap_model(model), "config", None), "_name_or_path", None)
        path = _saved_alphas_file(source) if source else None
        if path is None:
            return
        state, saved_names = read_alphas(path)
        if saved_names != self.module_names:
            missing = [n for n in self.module_names if n not in saved_names][:3]
            extra = [n for n in saved_names if n not in self.module_names][:3]
            logger.warning(
                f"{path} holds alphas for {len(saved_names)} modules that differ from the {self.num_layers} this run "
                f"regularizes (not saved: {missing}, saved but not regularized now: {extra}): the alphas start "
                f"from alpha={self.config.alpha} instead. Pass the saved run's target_modules to continue with them."
            )
            return
        self.load_state_dict(state)
        logger.info(f"LBE: continuing with the {self.num_layers} alphas saved in {path}.")

    # ---- the training forward ----------------------------------------------------------------------------

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Regularize the forward passes with autograd run inside this block (never evaluation).

        Root forwards run under `torch.no_grad()` (a trainer's metric or reference forward) are not regularized.
        """
        self.pending = []
        with self.collector.capture():
            yield

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=3)

    def compute(
        self, activations: list[torch.Tensor], mask: torch.Tensor | list[torch.Tensor | None] | None = None
    ) -> torch.Tensor:
        """The LBE term of one forward, from one activation per module in `module_names` order.

        `mask`: None (flatten mode), one (batch, seq) token mask for all, or one mask (or None) per activation.
        """
        masks = list(mask) if isinstance(mask, (list, tuple)) else [mask] * len(activations)
        return self._term(list(zip(self.module_names, activations)), masks)

    def _term(self, applications, masks=None, args=(), kwargs=None, keep=None) -> torch.Tensor:
        """The LBE term (a scalar touching every alpha) of captured (module name, output) pairs, recorded."""
        alpha = self.alphas_module.alpha
        if masks is None:
            masks = [None] * len(applications)
        kept, kept_masks, index, labels = [], [], [], []
        seen: dict[str, int] = {}
        totals = {name: 0 for name, _ in applications}
        for name, _ in applications:
            totals[name] += 1
        dropped = sum(1 for name in self.module_names if name not in totals)
        for name in self.module_names:
            if name not in totals:
                self._warn_once(
                    f"missing:{name}",
                    f"LBE target {name!r} did not run in a training forward: it drops out of that forward's term "
                    "(counted in lbe_layers_dropped). Shown once per module.",
                )
        fewest = None
        for (name, x), m in zip(applications, masks):
            k = seen.get(name, 0)
            seen[name] = k + 1
            samples = x.shape[0] if m is None else int(m.sum())
            if samples < 2:
                dropped += 1
                fewest = samples if fewest is None else min(fewest, samples)
                continue
            kept.append(x)
            kept_masks.append(m)
            index.append(self._module_index[name])
            labels.append(name if totals[name] == 1 else f"{name}#{k}")
        if not kept:
            if fewest is None:  # nothing ran at all; the missing modules were warned about above
                self._warn_once("none_ran", "LBE term skipped: no regularized module ran in this training forward.")
            else:
                self._warn_once(
                    "batch1",
                    f"LBE term skipped for a batch of {fewest} sample: batch entropy needs at least 2 (a variance "
                    "over the batch). This warning is shown once.",
                )
            self._record(None, None, None, dropped=0, skipped=True)
            return alpha.sum() * 0.0
        if keep is not None:  # flatten mode over rows that share prompts: each shared position once
            c = self.config.constant
            entropies = torch.stack([masked_flatten_entropy(x, keep, c) for x in kept])
        else:
            estimate = joint_layer_entropies if self.config.entropy_estimator == "joint" else layer_entropies
            entropies = estimate(kept, self.config.constant, kept_masks)
        index_t = torch.tensor(index, device=alpha.device)
        if self.auto_alpha is not None:
            per_module = torch.zeros_like(alpha).index_add_(0, index_t, entropies.detach().to(alpha))
            counts = torch.zeros_like(alpha).index_add_(0, index_t, torch.ones_like(entropies).to(alpha))
            input_mask = (kwargs or {}).get("attention_mask") if self.config.entropy_mode == "token" else None
            if self.auto_alpha.initialize(
                alpha,
                per_module / counts.clamp(min=1),
                counts > 0,
                args,
                kwargs or {},
                self.config.alpha_min,
                input_mask,
            ):
                self.auto_alpha = None
        # Touching every alpha (zero for a module that dropped out) keeps DDP's reduction complete.
        lbe = lbe_loss(entropies, alpha.index_select(0, index_t), self.config.alpha_min, self.config.beta)
        lbe = lbe + alpha.sum() * 0.0
        if not torch.isfinite(lbe):
            bad = [name for name, x in zip(labels, kept) if not torch.isfinite(x).all()][:5]
            if self.config.on_nonfinite == "raise":
                raise FloatingPointError(
                    f"LBE term is {lbe.item()} (non-finite activations in {bad}). "
                    "Lower the learning rate, or set on_nonfinite='skip' to drop the term for such steps."
                )
            self._warn_once("nonfinite", "non-finite LBE term: skipped for this step (counted in lbe_skipped).")
            self._record(None, None, None, dropped=0, skipped=True)
            return alpha.sum() * 0.0
        self._record(entropies.detach(), labels, lbe.detach(), dropped=dropped, skipped=False)
        return lbe

    def _token_masks(self, applications, kwargs) -> list[torch.Tensor | None]:
        """Token mode: each module's samples are the real tokens of the sequence it belongs to.

        The encoder (or a decoder-only model) uses `attention_mask`; a decoder of an encoder-decoder model uses
        `decoder_attention_mask`, or all positions when it is absent; without a mask (vision, audio) every position
        of a (batch, seq, channels) output is a sample, and other outputs count each batch entry as one sample.
        """
        masks = []
        for name, x in applications:
            mask = kwargs.get("decoder_attention_mask" if name in self._decoder_names else "attention_mask")
            if mask is None and x.dim() == 3:
                mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
            masks.append(mask)
        return masks

    def _shared_prefix_keep(self, kwargs) -> torch.Tensor | None:
        """(batch, seq) bool of the positions that count, when rows repeat prompts (see `shared_prefixes`)."""
        ids = kwargs.get("input_ids")
        if not self.shared_prefixes or ids is None or ids.dim() != 2 or self._decoder_names:
            return None
        return ~shared_prefix_duplicates(ids, kwargs.get("attention_mask"))

    def _check_packed(self, kwargs) -> None:
        """Padding-free packing gives one row of concatenated sequences: flatten mode would see one sample."""
        if self.config.entropy_mode != "flatten":
            return
        ids = kwargs.get("input_ids")
        positions = kwargs.get("position_ids")
        restarts = (
            positions is not None
            and positions.dim() == 2
            and positions.shape[0] == 1
            and positions.shape[1] > 1
            and bool((positions[0, 1:] == 0).any())
        )
        if restarts or any(k.startswith("cu_seq_lens") for k in kwargs if kwargs[k] is not None):
            rows = ids.shape[0] if isinstance(ids, torch.Tensor) else 1
            raise ValueError(
                f"this batch is packed (padding-free): {rows} row(s) of concatenated sequences with restarting "
                "position_ids, so flatten mode would see 1 sample where you configured several. Use "
                "BatchEntropyConfig(entropy_mode='token'), where every packed token is a sample, or turn packing "
                "off (SFTConfig(packing=False), or a padding collator instead of DataCollatorWithFlattening)."
            )

    def _on_forward(self, module: nn.Module, args, kwargs, output):
        if not self.collector.root_forward_trains():
            return None
        self._check_packed(kwargs)
        applications = self.collector.take_applications()
        token = self.config.entropy_mode == "token"
        masks = self._token_masks(applications, kwargs) if token else None
        keep = self._shared_prefix_keep(kwargs)
        if keep is not None and token:
            masks = [keep if m is None else m.bool() & keep for m in masks]
            keep = None
        lbe = self._term(applications, masks, args, kwargs, keep=keep)
        task_loss = _loss_of(output) if self.fold_into_loss else None
        if task_loss is not None:
            self.record_task_loss(task_loss)
            return _with_loss(output, regularized_loss(task_loss, lbe, self.loss_form))
        # The loss is computed elsewhere (a trainer's own loss, a label smoother): `fold` applies the term.
        self.pending.append(lbe)
        own_loss = _loss_of(output)
        if own_loss is not None:
            # Same value, but the alphas are now reached from the output, which is where DDP's
            # find_unused_parameters looks for the parameters a forward used.
            return _with_loss(output, own_loss + (lbe * 0.0).to(own_loss.dtype))
        return None

    def fold(
        self,
        task_loss: torch.Tensor,
        log_value: torch.Tensor | None = None,
        log_weight: float = 1.0,
        term_scale: float = 1.0,
    ):
        """L + L * L_BE (or L + term_scale * L_BE under `loss_form="additive"`) for a loss computed outside the
        model, with the terms of the forwards captured since.

        Several training forwards before one loss (chosen and rejected run apart, say) contribute the mean of their
        terms. `log_value` / `log_weight`: what `task_loss` adds to the logged `task_loss` average (default: the
        loss itself, weight 1). `term_scale`: for an additive term beside a loss already divided over an
        accumulated batch.

        Raises:
            RuntimeError: no training forward of the regularized model ran inside `capture()`.
        """
        if not self.pending:
            raise RuntimeError(
                "no LBE term pending: no forward of the regularized model with autograd ran inside capture(). "
                "LBE regularizes the model it was attached to; a loss computed from another model (or only under "
                "torch.no_grad) cannot carry the term."
            )
        terms, self.pending = self.pending, []
        lbe = terms[0] if len(terms) == 1 else torch.stack(terms).mean()
        self.record_task_loss(task_loss if log_value is None else log_value, log_weight)
        return regularized_loss(task_loss, lbe, self.loss_form, term_scale)

    # ---- metrics -----------------------------------------------------------------------------------------

    def _record(self, entropies, labels, lbe, dropped: int, skipped: bool) -> None:
        # Detached running sums: no host sync on the training step; read on logging steps only.
        device = self.alphas_module.alpha.device
        if self._sums is None:
            self._sums = {key: torch.zeros((), device=device) for key in _SUM_KEYS}
            self._layer_sums = torch.zeros(len(self.layer_names), device=device)
            self._layer_counts = torch.zeros(len(self.layer_names), device=device)
        if skipped:
            self._sums["skipped"] += 1
            return
        for label in labels:
            if label not in self._layer_slot:
                self._layer_slot[label] = len(self.layer_names)
                self.layer_names.append(label)
        grow = len(self.layer_names) - self._layer_sums.numel()
        if grow:
            self._layer_sums = torch.cat([self._layer_sums, self._layer_sums.new_zeros(grow)])
            self._layer_counts = torch.cat([self._layer_counts, self._layer_counts.new_zeros(grow)])
        slots = torch.tensor([self._layer_slot[label] for label in labels], device=device)
        self.last_entropies = entropies
        self._sums["lbe_loss"] += lbe
        self._sums["entropy_mean"] += entropies.mean()
        self._sums["entropy_min"] += entropies.min()
        self._sums["counted"] += 1
        self._sums["dropped"] += dropped
        self._layer_sums.index_add_(0, slots, entropies.to(self._layer_sums))
        self._layer_counts.index_add_(0, slots, torch.ones_like(self._layer_counts[slots]))

    def record_task_loss(self, value: torch.Tensor, weight: float = 1.0) -> None:
        """Adds `value` (weighing `weight` in the average) to the logged `task_loss`."""
        if self._sums is not None:
            self._sums["task_loss"] += value.detach().float().reshape(()).to(self._sums["task_loss"].device)
            self._sums["task_weight"] += weight

    def pop_metrics(
        self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> tuple[dict[str, float], torch.Tensor | None]:
        """Averages since the last call, optionally reduced across processes (`reduce` sums a tensor).

        Returns:
            (metrics, per-layer mean entropy in `layer_names` order, or None when no term was computed).
        """
        if self._sums is None:
            return {}, None
        n = len(self.layer_names)
        if self._layer_sums.numel() < n:  # layers first seen after the sums were created
            grow = n - self._layer_sums.numel()
            self._layer_sums = torch.cat([self._layer_sums, self._layer_sums.new_zeros(grow)])
            self._layer_counts = torch.cat([self._layer_counts, self._layer_counts.new_zeros(grow)])
        packed = torch.cat([torch.stack([self._sums[k] for k in _SUM_KEYS]), self._layer_sums, self._layer_counts])
        if reduce is not None:
            packed = reduce(packed)
        packed = packed.cpu()
        self._sums = None
        sums = dict(zip(_SUM_KEYS, packed[: len(_SUM_KEYS)].tolist()))
        layer_sums, layer_counts = packed[len(_SUM_KEYS) :].view(2, n)  # n == 0: every term was skipped
        metrics = {
            "lbe_skipped": sums["skipped"],
            "lbe_layers_dropped": sums["dropped"],
            "alpha_mean": self.alphas.abs().mean().item(),
        }
        if sums["task_weight"]:
            metrics["task_loss"] = sums["task_loss"] / sums["task_weight"]
        counted = sums["counted"]
        if not counted:
            return metrics, None
        for key in ("lbe_loss", "entropy_mean", "entropy_min"):
            metrics[key] = sums[key] / counted
        return metrics, layer_sums / layer_counts.clamp(min=1)

    def remove(self) -> None:
        """Removes every hook; the alphas stay attached (they are part of the trained state)."""
        self.collector.remove()
        if self.auto_alpha is not None:
            self.auto_alpha.remove()
        if self._root_handle is not None:
            self._root_handle.remove()
            self._root_handle = None
