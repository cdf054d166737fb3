"""`alpha="auto"`: data-driven initial entropy targets, so that alpha needs no grid search.

The rule (per regularized layer l, all quantities batch entropies, eq. 3, measured on the first regularized
training batch, before the first optimizer step):

    alpha_l = max(alpha_min', H_in, H_l(0)),   alpha_min' = alpha_min * (1 + 1e-3)

- `H_l(0)`: the layer's own entropy at initialisation. A layer that already carries more information than the
  floor keeps its level as its target, so a healthy (e.g. pretrained) network starts with L_BE = 0 for it and the
  regularizer only acts when training lets its entropy fall.
- `H_in`: the batch entropy of the data as it enters the network (the float input tensor, e.g. `pixel_values`, or
  for token inputs the output of the input embedding module). A layer below it is asked to carry at least as
  much information as the data it is given: the paper's information-flow argument (an entropy near 0 means every
  sample looks alike above that layer).
- `alpha_min`: the configured lower bound. A target exactly at alpha_min would never learn (the clamp
  max(alpha_min, |alpha|) passes no gradient there), so the floor is placed a hair above it,
  alpha_min * (1 + 1e-3): the alphas stay learnable, as the paper intends, and can rise with their layer.

The alphas stay learnable; the rule only sets their initial values. Under DDP the measured targets are averaged
over processes so every replica starts with the same alphas. A resumed run loads its saved alphas instead.
"""

from __future__ import annotations

import torch
from torch import nn

from .collect import unwrap_model
from .entropy import batch_entropy

FLOOR_MARGIN = 1e-3


def auto_alphas(layer_entropies_init: torch.Tensor, input_entropy: float | None, alpha_min: float) -> torch.Tensor:
    """The rule above. Args: layer_entropies_init: (L,) entropies at init. Returns (L,) float32 targets."""
    floor = max(alpha_min * (1 + FLOOR_MARGIN), input_entropy or 0.0)
    return layer_entropies_init.detach().float().clamp(min=floor)


class AutoAlphaInit:
    """Measures `H_in` and `H_l(0)` on the first regularized forward and writes the alphas, then removes itself."""

    def __init__(self, model: nn.Module, constant: float):
        self.constant = constant
        base = unwrap_model(model)
        self.main_input_name = getattr(base, "main_input_name", None)
        self._embedded: torch.Tensor | None = None
        self._handle = None
        try:
            embeddings = base.get_input_embeddings()
        except (AttributeError, NotImplementedError):
            embeddings = None
        if isinstance(embeddings, nn.Module):
            self._handle = embeddings.register_forward_hook(self._keep)
        self.done = False
        self.input_entropy: float | None = None

    def _keep(self, module, args, output):
        if not self.done and isinstance(output, torch.Tensor):
            self._embedded = output

    def _input_entropy(self, args, kwargs, mask: torch.Tensor | None) -> float | None:
        x = kwargs.get(self.main_input_name) if self.main_input_name else None
        if x is None and args and isinstance(args[0], torch.Tensor):
            x = args[0]
        if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
            x = self._embedded  # token ids: their embedding is the first float representation of the data
        if x is None or x.dim() < 1 or x.shape[0] < 2:
            return None
        if mask is not None and (x.dim() < 3 or tuple(x.shape[:2]) != tuple(mask.shape)):
            mask = None
        return float(batch_entropy(x.detach(), self.constant, mask))

    @torch.no_grad()
    def initialize(
        self,
        alpha: nn.Parameter,
        entropies: torch.Tensor,
        measured: torch.Tensor,
        args,
        kwargs,
        alpha_min: float,
        mask: torch.Tensor | None = None,
    ) -> bool:
        """Sets `alpha` (L,) in place from this batch's layer `entropies` (L,), measured where `measured` (L,).

        A module that did not run (or ran on fewer than 2 samples) keeps its placeholder. Returns False (nothing
        set) when no module was measured.
        """
        if not bool(measured.any()):
            return False
        self.input_entropy = self._input_entropy(args, kwargs, mask)
        targets = auto_alphas(entropies, self.input_entropy, alpha_min).to(alpha)
        targets = torch.where(measured.to(targets.device), targets, alpha.detach())
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(targets)
            targets /= torch.distributed.get_world_size()
        alpha.copy_(targets)
        self.done = True
        self.remove()
        return True

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._embedded = None
