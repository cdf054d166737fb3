"""The tiny Llama and token data shared by the sharded-engine scripts (fsdp2_lbe.py, deepspeed_lbe.py)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

VOCAB = 64


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer, 32-wide Llama; the same weights on every process for the same seed."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    return LlamaForCausalLM(config)


def token_batch(step: int, rank: int, batch_size: int = 4, seq: int = 8) -> dict[str, torch.Tensor]:
    """A causal-LM batch that depends only on (step, rank): a single process can replay any rank's data."""
    ids = torch.randint(0, VOCAB, (batch_size, seq), generator=torch.Generator().manual_seed(1000 * step + rank))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


class TokenRows(torch.utils.data.Dataset):
    """`n` random token rows as a Trainer dataset (labels = input ids)."""

    def __init__(self, n: int = 64, seq: int = 8):
        self.ids = torch.randint(0, VOCAB, (n, seq), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
