"""Forward hooks that capture the regularized modules' outputs during the training forward."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .entropy import PI_E, layer_entropies
from .targets import resolve_target_modules, unwrap_model

# Which modules to regularize lives in targets.py; re-exported here, where it used to be defined.
__all__ = ["ActivationCollector", "Measurement", "measure_entropies", "resolve_target_modules", "unwrap_model"]


class ActivationCollector:
    """Forward hooks, registered once, that keep a reference to each target module's output.

    Hooks only store while `capture()` is active (the training forward) and never compute: under gradient
    checkpointing the recomputation in backward runs after the root forward returned and stores nothing, and under
    `torch.compile` the hooks exist before compilation. Every application of a module counts: a module run k times
    in one forward (ALBERT's shared layer, a recurrent or weight-tied block) leaves k entries in `applications`,
    in call order. `activations` keeps the last output per module name. A module whose output is a tuple (many
    transformers layers return `(hidden_states, ...)`) contributes its first element. Call `remove()` when done.

    `grad_forwards_only=True` (the regularizer's setting) ignores root forwards run without autograd (a trainer's
    metric or reference forward under `torch.no_grad()`), so only forwards that train are captured.
    """

    def __init__(self, model: nn.Module, names: list[str], grad_forwards_only: bool = False):
        if hasattr(model, "_orig_mod"):
            # Dynamo does not guard on hooks added after compilation: they would be silently dropped.
            raise ValueError(
                "LBE needs the uncompiled model: hooks added to a torch.compile'd module are ignored. Pass the model "
                "before torch.compile (LBETrainer: set TrainingArguments(torch_compile=True) instead), or compile "
                "after creating the LBERegularizer."
            )
        modules = dict(model.named_modules())
        self.names = list(names)
        self.grad_forwards_only = grad_forwards_only
        self.activations: dict[str, torch.Tensor] = {}
        self.applications: list[tuple[str, torch.Tensor]] = []
        self.active = False
        # Armed from the root's forward start until `take()`: modules re-run later (gradient checkpointing's
        # recomputation in backward) store nothing, even inside `capture()`.
        self._armed = False
        self._grad_enabled = True
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in self.names]
        self._handles.append(model.register_forward_pre_hook(self._arm))

    def _arm(self, module: nn.Module, args) -> None:
        if not self.active:
            return
        self.activations.clear()
        self.applications.clear()
        # A root forward without autograd (a metric forward inside compute_loss) trains nothing: skip it.
        self._armed = torch.is_grad_enabled() or not self.grad_forwards_only
        self._grad_enabled = torch.is_grad_enabled()

    def root_forward_trains(self) -> bool:
        """Whether the root forward now ending was captured (`grad_forwards_only` skips no-grad forwards)."""
        return self.active and self._armed

    def _hook(self, name: str):
        def hook(module: nn.Module, args, output):
            if not (self.active and self._armed):
                return
            if self._grad_enabled and not torch.is_grad_enabled():
                # Reentrant checkpointing (use_reentrant=True) runs the forward under no_grad: the LBE term would
                # carry no gradient to the weights and silently stop regularizing them.
                raise RuntimeError(
                    f"LBE target module {name!r} ran without autograd inside the training forward (reentrant "
                    "gradient checkpointing, or a torch.no_grad block in the model): the LBE term would not train "
                    "its weights. Use gradient_checkpointing_kwargs={'use_reentrant': False} (LBETrainer switches "
                    "to it) or regularize modules that run with gradients."
                )
            if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
                output = output[0]
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"LBE target module {name!r} ({type(module).__name__}) returned {type(output).__name__}, not a "
                    "tensor. Target one of its submodules whose output is a tensor (see target_modules)."
                )
            self.activations[name] = output
            self.applications.append((name, output))

        return hook

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Capture the forwards run inside this block."""
        self.start()
        try:
            yield
        finally:
            self.stop()

    def start(self) -> None:
        """Capture from now on (what entering `capture()` does), dropping anything captured before."""
        self.release()
        self.active = True
        self._armed = True
        self._grad_enabled = torch.is_grad_enabled()

    def stop(self) -> None:
        """Stop capturing; what was captured stays until `take()` / `release()`."""
        self.active = False
        self._armed = False

    def take(self) -> list[torch.Tensor]:
        """The last captured output of each module in `names` order, released from the collector.

        Raises:
            RuntimeError: a module did not run.
        """
        missing = [n for n in self.names if n not in self.activations]
        if missing:
            raise RuntimeError(
                f"LBE target modules {missing[:5]} did not run in this forward pass; regularize modules that every "
                "forward uses (see target_modules / exclude_modules)."
            )
        taken = [self.activations[n] for n in self.names]
        self.release()
        return taken

    def take_applications(self) -> list[tuple[str, torch.Tensor]]:
        """Every captured (module name, output), in call order, released from the collector."""
        taken = list(self.applications)
        self.release()
        return taken

    def release(self) -> None:
        self.activations.clear()
        self.applications.clear()
        self._armed = False

    @property
    def hooked(self) -> bool:
        return bool(self._handles)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.release()


@dataclass
class Measurement:
    """What `measure_entropies` saw: one entry per module application, in call order."""

    names: list[str]  # the module name, `name#k` for the k-th application of a module run several times
    entropies: torch.Tensor  # (L,) batch entropy (eq. 3) of each
    activations: list[torch.Tensor]  # the detached outputs
    output: Any  # what `forward()` returned


@torch.no_grad()
def measure_entropies(
    model: nn.Module, names: list[str], forward: Callable[[], Any], constant: float = PI_E
) -> Measurement:
    """Batch entropy of the modules `names` of `model` in one forward, `forward()`, run in eval mode without grad.

    The hooks are temporary (removed afterwards) and the model's train/eval mode is restored: the one way the tools
    (`lbe-hf diagnose`, the demo, loss surfaces) measure a batch.
    """
    collector = ActivationCollector(model, names)
    was_training = model.training
    model.eval()
    try:
        with collector.capture():
            output = forward()
        applications = collector.take_applications()
    finally:
        collector.remove()
        model.train(was_training)
    missing = [n for n in names if n not in {name for name, _ in applications}]
    if missing:
        raise RuntimeError(f"modules {missing[:5]} did not run in the measured forward; measure modules that do.")
    counts: dict[str, int] = {}
    for name, _ in applications:
        counts[name] = counts.get(name, 0) + 1
    seen: dict[str, int] = {}
    labels = []
    for name, _ in applications:
        k = seen.get(name, 0)
        seen[name] = k + 1
        labels.append(name if counts[name] == 1 else f"{name}#{k}")
    activations = [a.detach() for _, a in applications]
    return Measurement(labels, layer_entropies(activations, constant), activations, output)
