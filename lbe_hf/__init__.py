"""Layerwise batch-entropy regularization (Peer et al., TMLR 2022) for Hugging Face `transformers`."""

from .alphas import LBEAlphas
from .callbacks import EntropyCallback
from .checkpoint import get_last_complete_checkpoint
from .collect import ActivationCollector
from .config import BatchEntropyConfig, LBEArguments
from .entropy import PI_E, TWO_PI_E, batch_entropy, layer_entropies
from .loss import lbe_loss, regularized_loss
from .regularizer import LBERegularizer
from .targets import TARGETS_BY_MODEL_TYPE, count_blocks, resolve_target_modules
from .trainer import LBEMixin, LBETrainer

__version__ = "0.2.0"

_LAZY = {"LBESFTTrainer": "trl_trainers", "LBEDPOTrainer": "trl_trainers"}


def __getattr__(name: str):
    # TRL is an optional extra: imported on first use of its trainers only.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ActivationCollector",
    "BatchEntropyConfig",
    "EntropyCallback",
    "LBEAlphas",
    "LBEArguments",
    "LBEDPOTrainer",
    "LBEMixin",
    "LBERegularizer",
    "LBESFTTrainer",
    "LBETrainer",
    "PI_E",
    "TARGETS_BY_MODEL_TYPE",
    "TWO_PI_E",
    "batch_entropy",
    "count_blocks",
    "get_last_complete_checkpoint",
    "layer_entropies",
    "lbe_loss",
    "regularized_loss",
    "resolve_target_modules",
]
