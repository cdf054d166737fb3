"""`EntropyCallback`: watch every layer's batch entropy during training (the paper's Fig. 2/6, live).

With `LBETrainer` (on by default) it reads the per-layer entropies the regularizer already measures on every
training step, averaged since the previous log. With a plain `transformers.Trainer` it registers its own hooks
(`lbe_hf.collect.ActivationCollector`) on the same default target modules, captures only the forward of steps that
will be logged, and measures that batch.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

import torch
from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from .cli.plotting import plot_entropy_history
from .collect import ActivationCollector, resolve_target_modules, unwrap_model
from .entropy import CONSTANTS, layer_entropies

logger = logging.getLogger(__name__)

PLOT_NAME = "entropy_per_layer.png"
HISTORY_NAME = "entropy_history.json"
QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


def summarize_entropies(
    names: list[str],
    entropies: torch.Tensor | list[float],
    max_layers: int = 12,
    num_groups: int = 4,
    collapse_threshold: float = 1e-3,
    prefix: str = "entropy/",
) -> dict[str, float]:
    """Scalars for a tracker: per layer for shallow nets, a fixed-size summary for deep ones.

    Args:
        names: (L,) module names.
        entropies: (L,) batch entropies, eq. (3).
        max_layers: up to this many layers each get a scalar `entropy/<module name>`.
        num_groups: deeper nets get quantiles (`q0` = min ... `q100` = max), `mean`, `frac_collapsed` (share of
            layers below `collapse_threshold`) and the mean of `num_groups` contiguous depth groups, so 500 layers
            give 5 + 2 + num_groups scalars.
    """
    values = torch.as_tensor(entropies, dtype=torch.float64).flatten()
    if len(values) != len(names):
        raise ValueError(f"{len(values)} entropies for {len(names)} module names.")
    if len(values) <= max_layers:
        return {f"{prefix}{name}": float(v) for name, v in zip(names, values)}
    out = {f"{prefix}q{round(q * 100)}": float(torch.quantile(values, q)) for q in QUANTILES}
    out[f"{prefix}mean"] = float(values.mean())
    out[f"{prefix}frac_collapsed"] = float((values < collapse_threshold).double().mean())
    groups = torch.tensor_split(values, min(num_groups, len(values)))
    start = 0
    for group in groups:
        # Named by layer range so that the key means the same thing in every run of the same model.
        out[f"{prefix}layers_{start:03d}-{start + len(group) - 1:03d}"] = float(group.mean())
        start += len(group)
    return out


class EntropyCallback(TrainerCallback):
    """Records per-layer batch entropy (eq. 3) at logging steps and logs a bounded number of scalars to the
    Trainer's `report_to` backends (not to the console); on request, writes the entropy-per-layer plot.

    Args:
        target_modules / exclude_modules: which layers (plain Trainer only; `LBETrainer` uses its regularized
            modules). Same matching rules as `BatchEntropyConfig`.
        entropy_constant: "pi_e" or "2pi_e" (plain Trainer only).
        max_layers / num_groups: see `summarize_entropies`.
        plot: also write `entropy_per_layer.png` (x: layer, colour: step) and `entropy_history.json` into
            `args.output_dir` at train end (process 0). Off by default: `save_model()` folders stay as `Trainer`
            writes them. `callback.history` holds the same numbers either way.

    Use `callback.attach(trainer)` (LBETrainer does it for you): it puts the callback first in the Trainer's list
    so that its scalars reach the reporting callbacks (TensorBoard, W&B, ...) that run after it, and takes them
    out of the log dict again just before the console printer (`ProgressCallback` / `PrinterCallback`), so a
    printed log line carries `entropy_mean`/`entropy_min` (from LBETrainer) but not one key per layer. Passed
    through `Trainer(callbacks=[...])` it still records, but the reporters have already run when it logs.
    """

    def __init__(
        self,
        target_modules: list[str] | str | None = None,
        exclude_modules: list[str] | str | None = None,
        entropy_constant: str = "pi_e",
        max_layers: int = 12,
        num_groups: int = 4,
        plot: bool = False,
    ):
        if entropy_constant not in CONSTANTS:
            raise ValueError(f"entropy_constant must be one of {sorted(CONSTANTS)}, got {entropy_constant!r}.")
        if max_layers < 0 or num_groups < 1:
            raise ValueError(f"max_layers must be >= 0 and num_groups >= 1, got {max_layers}, {num_groups}.")
        self.target_modules = target_modules
        self.exclude_modules = exclude_modules
        self.constant = CONSTANTS[entropy_constant]
        self.max_layers = max_layers
        self.num_groups = num_groups
        self.plot = plot
        self.history: list[tuple[int, list[float]]] = []
        self.module_names: list[str] = []
        self.plot_path: str | None = None
        self._source: Callable[[], list[tuple[int, list[float]]]] | None = None
        self._collector: ActivationCollector | None = None
        self._pending: list[float] | None = None
        self._handler = None
        self._hider = _HideFromConsole()
        self.attached = False

    # ---- wiring -----------------------------------------------------------------------------------------

    def attach(self, trainer) -> EntropyCallback:
        """Registers with `trainer` ahead of the reporting callbacks; reads `LBETrainer`'s own measurements."""
        handler = trainer.callback_handler
        handler.callbacks = [c for c in handler.callbacks if c is not self]
        handler.callbacks.insert(0, self)
        self._handler = handler
        self._hider.place(handler, {})
        if hasattr(trainer, "lbe") and hasattr(trainer, "entropy_history"):
            # The live list of the term's layers (one per module application, filled in by the first forward).
            self.bind(lambda: trainer.entropy_history, trainer.lbe.layer_names)
        self.attached = True
        return self

    def bind(self, source: Callable[[], list[tuple[int, list[float]]]], module_names: list[str]) -> None:
        """Take entropies from `source()` (a growing list of (step, per-layer entropies)) instead of own hooks."""
        self._source = source
        self.module_names = module_names  # not copied: a regularizer's `layer_names` grows at its first forward

    # ---- own measurement (plain Trainer) ----------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self._source is None and self._collector is None:
            if model is None:
                raise ValueError("EntropyCallback needs the model (the Trainer passes it to callbacks).")
            base = unwrap_model(model)
            self.module_names = resolve_target_modules(base, self.target_modules, self.exclude_modules)
            self._collector = ActivationCollector(base, self.module_names)
        if not self.attached and state.is_world_process_zero:
            logger.info("EntropyCallback: not attached with .attach(trainer); scalars may miss report_to backends.")

    @staticmethod
    def _will_log(args, state, step: int) -> bool | None:
        """Whether step `step` is a logging step; None when the strategy can't tell in advance."""
        if step == 1 and args.logging_first_step:
            return True
        if args.logging_strategy == "steps":
            return step % state.logging_steps == 0
        return None

    def on_step_begin(self, args, state, control, **kwargs):
        if self._collector is None:
            return
        will_log = self._will_log(args, state, state.global_step + 1)
        # Only the forward of a logged step is kept: holding activations on every step would cost memory.
        self._collector.release()
        if will_log is not False:
            self._collector.start()

    def on_step_end(self, args, state, control, **kwargs):
        if self._collector is None or not self._collector.active:
            return
        self._collector.stop()
        acts = [self._collector.activations.get(n) for n in self.module_names]
        self._collector.release()
        if any(a is None for a in acts) or acts[0].shape[0] < 2:
            return  # a layer skipped in this forward, or a batch of 1: no batch entropy
        with torch.no_grad():
            self._pending = layer_entropies([a.detach() for a in acts], self.constant).tolist()

    # ---- logging and the plot ---------------------------------------------------------------------------

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs:
            return  # eval logs and the end-of-training summary carry no training entropies
        if self._source is not None:
            entries = self._source()
            if not entries or entries[-1][0] != state.global_step:
                return
            entropies = list(entries[-1][1])
        elif self._pending is not None:
            entropies, self._pending = self._pending, None
        else:
            return
        if self.history and self.history[-1][0] == state.global_step:
            return
        self.history.append((state.global_step, entropies))
        scalars = summarize_entropies(self.module_names, entropies, self.max_layers, self.num_groups)
        logs.update(scalars)
        if self._handler is not None:
            self._hider.place(self._handler, scalars)

    def on_train_end(self, args, state, control, **kwargs):
        if self._collector is not None:
            self._collector.remove()
            self._collector = None
        if not self.plot or not self.history or not state.is_world_process_zero:
            return
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, HISTORY_NAME), "w", encoding="utf-8") as f:
            json.dump({"modules": self.module_names, "history": self.history}, f)
        try:
            self.plot_path = plot_entropy_history(
                self.history,
                os.path.join(args.output_dir, PLOT_NAME),
                title=f"Batch entropy of {len(self.module_names)} layers during training",
            )
        except ImportError:  # matplotlib is an optional extra: the JSON history is still written
            logger.warning("EntropyCallback: matplotlib is not installed (pip install lbe-hf[demo]); no plot written.")


class _HideFromConsole(TrainerCallback):
    """Removes `EntropyCallback`'s scalars from the log dict right before the console printer sees it.

    Trackers (which run between the two) got them; the printed line and the callbacks after the printer do not.
    """

    def __init__(self) -> None:
        self.keys: tuple[str, ...] = ()

    def place(self, handler, scalars: dict[str, float]) -> None:
        self.keys = tuple(scalars)
        callbacks = [c for c in handler.callbacks if c is not self]
        printers = (ProgressCallback, PrinterCallback)
        printer = next((i for i, c in enumerate(callbacks) if isinstance(c, printers)), None)
        if printer is not None:
            callbacks.insert(printer, self)
        handler.callbacks[:] = callbacks

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in self.keys:
            if logs is not None:
                logs.pop(key, None)
