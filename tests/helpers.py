"""Tiny randomly initialised models shared by the tests and by the scripts they launch (`tests/scripts/`)."""

import torch
from transformers import BertConfig, BertForSequenceClassification


def tiny_bert(num_labels: int = 2, layers: int = 2, seed: int = 0, dropout: float = 0.0, **config):
    """A 2-layer, 32-wide BERT classifier. Dropout off by default, so runs that should match do so exactly."""
    torch.manual_seed(seed)
    settings = dict(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=32,
        num_labels=num_labels,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return BertForSequenceClassification(BertConfig(**{**settings, **config}))
