"""LBE for TRL's trainers: `LBESFTTrainer` and `LBEDPOTrainer` (`pip install "lbe-hf[trl]"`).

Each is `LBEMixin` in front of TRL's class, so it takes TRL's arguments plus `lbe_config=`:

    trainer = LBESFTTrainer(model=model, args=SFTConfig(...), train_dataset=ds, lbe_config=BatchEntropyConfig())

TRL computes these losses itself (SFT from its fused LM head's log-probabilities, DPO from chosen/rejected
log-probabilities), never from `outputs.loss`; the mixin applies the LBE term to that loss. TRL's extra forwards
under `torch.no_grad()` (SFT's token-accuracy metrics, DPO's reference log-probabilities) are not regularized.
`class LBEGRPOTrainer(LBEMixin, GRPOTrainer): pass` works too (an additive term); other TRL trainers are refused
until validated (`lbe_hf.trainer_rules`).
"""

from __future__ import annotations

try:
    from trl import DPOTrainer, SFTTrainer
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        'LBESFTTrainer and LBEDPOTrainer need TRL: pip install "lbe-hf[trl]" (or pip install trl).'
    ) from err

from .trainer import LBEMixin


class LBESFTTrainer(LBEMixin, SFTTrainer):
    """TRL's `SFTTrainer` with layerwise batch-entropy regularization (see `lbe_hf.LBEMixin`)."""


class LBEDPOTrainer(LBEMixin, DPOTrainer):
    """TRL's `DPOTrainer` with layerwise batch-entropy regularization (see `lbe_hf.LBEMixin`).

    Chosen and rejected completions run as one concatenated batch, measured together; the prompt positions the two
    rows of a pair share count once.
    """
