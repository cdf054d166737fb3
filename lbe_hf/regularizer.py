"""`LBERegularizer`: attaches learnable alphas and hooks to a model and folds the LBE term into its loss.

It is the one building block behind `LBETrainer` and the Accelerate scripts:

    reg = LBERegularizer(model, BatchEntropyConfig())   # before creating the optimizer
    with reg.capture():
        loss = model(**batch).loss                      # already L + L * L_BE

The LBE term is computed in a forward hook on the model itself, so that for DDP it happens inside `forward`: the
alphas are reached from the output and `find_unused_parameters` works, and a step that skips the term still
touches the alphas (with a zero gradient), so `find_unused_parameters=False` never waits for them either.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .auto_alpha import AutoAlphaInit
from .collect import ActivationCollector, resolve_target_modules
from .config import AUTO, BatchEntropyConfig
from .entropy import DeferredGradients, layer_entropies
from .loss import lbe_loss, regularized_loss

logger = logging.getLogger(__name__)

ALPHAS_NAME = "lbe_alphas.safetensors"
ALPHAS_ATTRIBUTE = "lbe_alphas"
METRIC_KEYS = ("task_loss", "lbe_loss", "entropy_mean", "entropy_min", "lbe_skipped")


class LBEAlphas(nn.Module):
    """One learnable entropy target per regularized layer.

    A submodule of the model, so the Trainer's optimizer trains it, DDP synchronizes it and PEFT leaves it
    trainable. It is kept out of the model's `state_dict()`: a saved or pushed model then loads with plain
    `transformers` without unexpected keys, and the alphas travel in their own file (`lbe_alphas.safetensors`).
    """

    def __init__(self, num_layers: int, init: float):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((num_layers,), float(init)))

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        pass

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs):
        if prefix + "alpha" in state_dict:
            super()._load_from_state_dict(
                state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs
            )


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
    """Layerwise batch-entropy regularization of `model`'s loss, driven by `config`."""

    def __init__(self, model: nn.Module, config: BatchEntropyConfig | None = None):
        self.config = config if config is not None else BatchEntropyConfig()
        self.model = model
        self.module_names = resolve_target_modules(model, self.config.target_modules, self.config.exclude_modules)
        self.collector = ActivationCollector(model, self.module_names)
        existing = getattr(model, ALPHAS_ATTRIBUTE, None)
        if isinstance(existing, LBEAlphas) and existing.alpha.numel() == len(self.module_names):
            self.alphas_module = existing
        else:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            # alpha="auto": a placeholder until the first regularized forward measures the targets (auto_alpha.py).
            init = self.config.alpha_min if self.config.alpha == AUTO else self.config.alpha
            self.alphas_module = LBEAlphas(len(self.module_names), init).to(device)
            model.add_module(ALPHAS_ATTRIBUTE, self.alphas_module)
        # Reused alphas (a second regularizer on the same model) are already initialised: nothing to measure.
        fresh = self.config.alpha == AUTO and self.alphas_module is not existing
        self.auto_alpha = AutoAlphaInit(model, self.config.constant) if fresh else None
        self._root_handle = model.register_forward_hook(self._fold_into_loss, with_kwargs=True)
        self.pending_lbe: torch.Tensor | None = None
        self._grad_hooks = DeferredGradients()
        self._warned: set[str] = set()
        self._sums: torch.Tensor | None = None
        self._layer_sums: torch.Tensor | None = None
        self._steps = 0
        self.last_entropies: torch.Tensor | None = None

    # ---- state -------------------------------------------------------------------------------------------

    @property
    def alphas(self) -> torch.Tensor:
        """The learnable entropy targets, (L,), in `module_names` order (a detached copy)."""
        return self.alphas_module.alpha.detach().clone()

    @property
    def num_layers(self) -> int:
        return len(self.module_names)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """For `accelerator.register_for_checkpointing` and our own files."""
        return {"alpha": self.alphas_module.alpha.detach().cpu().clone()}

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        alpha = state_dict["alpha"]
        if alpha.numel() != self.num_layers:
            raise ValueError(
                f"the saved LBE state has {alpha.numel()} alphas but this model regularizes {self.num_layers} "
                f"modules ({self.module_names[:3]}...). Resume with the same model and target_modules as the run "
                "that wrote the checkpoint."
            )
        with torch.no_grad():
            self.alphas_module.alpha.copy_(alpha.to(self.alphas_module.alpha))
        if self.auto_alpha is not None:  # loaded alphas replace the measurement
            self.auto_alpha.remove()
            self.auto_alpha = None

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Writes `lbe_alphas.safetensors` (alphas + module names) and `lbe_config.json` into `directory`."""
        os.makedirs(directory, exist_ok=True)
        save_file(
            self.state_dict(), os.path.join(directory, ALPHAS_NAME), metadata={"modules": ",".join(self.module_names)}
        )
        self.config.save_pretrained(directory)

    def load_pretrained(self, directory: str | os.PathLike) -> bool:
        """Loads alphas written by `save_pretrained` (safetensors: no code runs). False if the folder has none."""
        path = os.path.join(directory, ALPHAS_NAME)
        if not os.path.isfile(path):
            return False
        self.load_state_dict(load_file(path))
        return True

    # ---- the training forward ----------------------------------------------------------------------------

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Regularize the forward passes run inside this block (the training forward; never evaluation)."""
        self.pending_lbe = None
        with self.collector.capture():
            yield

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=3)

    def compute(self, activations: list[torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        """The LBE term for captured `activations` (a scalar touching every alpha), recording its statistics."""
        alpha = self.alphas_module.alpha
        samples = activations[0].shape[0] if mask is None else int(mask.sum())
        if samples < 2:
            self._warn_once(
                "batch1",
                f"LBE term skipped for a batch of {samples} sample: batch entropy needs at least 2 (a variance over "
                "the batch). This warning is shown once.",
            )
            self._record(None, None, skipped=True)
            return alpha.sum() * 0.0
        entropies = layer_entropies(activations, self.config.constant, mask, self._grad_hooks)
        lbe = lbe_loss(entropies, alpha, self.config.alpha_min, self.config.beta)
        if not torch.isfinite(lbe):
            if self.config.on_nonfinite == "raise":
                raise FloatingPointError(
                    f"LBE term is {lbe.item()} (non-finite activations in {self._nonfinite_layers(activations)}). "
                    "Lower the learning rate, or set on_nonfinite='skip' to drop the term for such steps."
                )
            self._warn_once("nonfinite", "non-finite LBE term: skipped for this step (counted in lbe_skipped).")
            self._record(None, None, skipped=True)
            return alpha.sum() * 0.0
        self._record(entropies.detach(), lbe.detach(), skipped=False)
        return lbe

    def _nonfinite_layers(self, activations: list[torch.Tensor]) -> list[str]:
        return [n for n, a in zip(self.module_names, activations) if not torch.isfinite(a).all()][:5]

    def _fold_into_loss(self, module: nn.Module, args, kwargs, output):
        if not self.collector.active:
            return None
        activations = self.collector.take()
        mask = kwargs.get("attention_mask") if self.config.entropy_mode == "token" else None
        if self.config.entropy_mode == "token" and mask is None:
            raise ValueError("entropy_mode='token' needs the model to be called with an attention_mask.")
        if self.auto_alpha is not None and self.auto_alpha.initialize(
            self.alphas_module.alpha, activations, args, kwargs, self.config.alpha_min, mask
        ):
            self.auto_alpha = None
        lbe = self.compute(activations, mask)
        task_loss = _loss_of(output)
        if task_loss is None:
            # The loss is computed outside the model (label smoother, compute_loss_func): the caller folds it.
            self.pending_lbe = lbe
            return None
        self._record_task_loss(task_loss)
        return _with_loss(output, regularized_loss(task_loss, lbe))

    def fold(self, task_loss: torch.Tensor) -> torch.Tensor:
        """For losses computed outside the model: L + L * L_BE with the term of the last captured forward."""
        if self.pending_lbe is None:
            raise RuntimeError("no LBE term pending: run the forward pass inside capture() first.")
        lbe, self.pending_lbe = self.pending_lbe, None
        self._record_task_loss(task_loss)
        return regularized_loss(task_loss, lbe)

    # ---- metrics -----------------------------------------------------------------------------------------

    def _record(self, entropies: torch.Tensor | None, lbe: torch.Tensor | None, skipped: bool) -> None:
        # Detached running sums: no host sync on the training step; read on logging steps only.
        if self._sums is None:
            self._sums = torch.zeros(len(METRIC_KEYS) + 1, device=self.alphas_module.alpha.device)
            self._layer_sums = torch.zeros(self.num_layers, device=self._sums.device)
        if skipped:
            self._sums[4] += 1
            return
        self.last_entropies = entropies
        self._sums[1] += lbe
        self._sums[2] += entropies.mean()
        self._sums[3] += entropies.min()
        self._sums[5] += 1
        self._layer_sums += entropies

    def _record_task_loss(self, task_loss: torch.Tensor) -> None:
        if self._sums is not None:
            self._sums[0] += task_loss.detach().float()

    def pop_metrics(
        self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> tuple[dict[str, float], torch.Tensor | None]:
        """Averages since the last call, optionally reduced across processes (`reduce` sums a tensor).

        Returns:
            (metrics, per-layer mean entropy (L,) or None).
        """
        if self._sums is None:
            return {}, None
        packed = torch.cat([self._sums, self._layer_sums])
        if reduce is not None:
            packed = reduce(packed)
        packed = packed.cpu()
        self._sums = None
        sums, layers = packed[: len(METRIC_KEYS) + 1], packed[len(METRIC_KEYS) + 1 :]
        counted = sums[5].item()
        steps = counted + sums[4].item()
        metrics = {"lbe_skipped": sums[4].item(), "alpha_mean": self.alphas_module.alpha.detach().abs().mean().item()}
        if steps:
            metrics["task_loss"] = sums[0].item() / steps
        if counted:
            for i, key in enumerate(METRIC_KEYS[1:4], start=1):
                metrics[key] = sums[i].item() / counted
            return metrics, layers / counted
        return metrics, None

    def remove(self) -> None:
        """Removes every hook; the alphas stay attached (they are part of the trained state)."""
        self.collector.remove()
        if self.auto_alpha is not None:
            self.auto_alpha.remove()
        if self._root_handle is not None:
            self._root_handle.remove()
            self._root_handle = None
