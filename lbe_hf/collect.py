"""Which modules to regularize, and forward hooks that capture their outputs during the training forward."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

# Default targets, tried in order; the first that matches any module wins. Each is the output of a block's last
# feed-forward projection, the tensor the authors regularize for BERT (their forked modeling_bert.py returns each
# layer's FFN `output.dense` before dropout, residual and LayerNorm).
DEFAULT_TARGETS: tuple[tuple[str, str], ...] = (
    (r"(.*\.)?layer\.\d+\.output\.dense", "BERT, RoBERTa, ELECTRA, DeBERTa, ViT, MiniLM: FFN output.dense"),
    (r"(.*\.)?layer\.\d+\.ffn\.lin2", "DistilBERT: FFN lin2"),
    (r"(.*\.)?h\.\d+\.mlp\.c_proj", "GPT-2: MLP c_proj"),
    (r"(.*\.)?layers\.\d+\.mlp\.down_proj", "Llama, Mistral, Qwen2, Gemma: MLP down_proj"),
    (r"(.*\.)?layers\.\d+\.(mlp\.)?fc2", "OPT, Phi, CLIP: MLP fc2"),
)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's model under DDP, torch.compile and PEFT wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP, DataParallel
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif hasattr(model, "get_base_model"):  # PEFT
            model = model.get_base_model()
        else:
            return model


def _matches(name: str, pattern: list[str] | str) -> bool:
    if isinstance(pattern, str):
        return re.fullmatch(pattern, name) is not None
    return any(name == p or name.endswith("." + p) for p in pattern)


def _candidates(model: nn.Module, limit: int = 12) -> str:
    """A short list of leaf module names, to put in error messages."""
    leaves = [n for n, m in model.named_modules() if n and not list(m.children())]
    shown = ", ".join(leaves[:limit])
    return shown + (f", ... ({len(leaves)} leaf modules)" if len(leaves) > limit else "")


def resolve_target_modules(
    model: nn.Module, target_modules: list[str] | str | None = None, exclude_modules: list[str] | str | None = None
) -> list[str]:
    """Names of the modules to regularize, in `named_modules()` order.

    `target_modules`: a string is a regex that must match the full name; a list matches an exact name or a
    `.name` suffix (PEFT's convention). None: the model's own `_lbe_target_modules` if it declares one (lbe_hf's
    models do), else the first of `DEFAULT_TARGETS` that matches.

    Raises:
        ValueError: nothing matches; the message lists candidate module names.
    """
    names = [n for n, _ in model.named_modules() if n]
    if target_modules is None:
        declared = getattr(unwrap_model(model), "_lbe_target_modules", None)
        patterns = [declared] if declared else [p for p, _ in DEFAULT_TARGETS]
        for pattern in patterns:
            chosen = [n for n in names if _matches(n, pattern)]
            if chosen:
                break
        else:
            families = "; ".join(doc for _, doc in DEFAULT_TARGETS)
            raise ValueError(
                f"No default LBE target for {type(unwrap_model(model)).__name__} (defaults cover: {families}). "
                f"Set BatchEntropyConfig(target_modules=...) to a regex or a list of module names, e.g. from: "
                f"{_candidates(model)}"
            )
    else:
        chosen = [n for n in names if _matches(n, target_modules)]
        if not chosen:
            raise ValueError(
                f"target_modules={target_modules!r} matches no module of {type(unwrap_model(model)).__name__}. "
                f"A string must match the full name (regex); a list entry the exact name or a '.name' suffix. "
                f"Module names look like: {_candidates(model)}"
            )
    if exclude_modules is not None:
        chosen = [n for n in chosen if not _matches(n, exclude_modules)]
        if not chosen:
            raise ValueError(f"exclude_modules={exclude_modules!r} leaves no module to regularize.")
    return chosen


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
        self.activations.clear()
        self.applications.clear()
        self.active = True
        self._armed = True
        self._grad_enabled = torch.is_grad_enabled()
        try:
            yield
        finally:
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
