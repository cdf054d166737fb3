"""LBE in TRL's trainers (`LBESFTTrainer`, `LBEDPOTrainer`) and in `Seq2SeqTrainer` through `LBEMixin`."""

from __future__ import annotations

import math
import os

import pytest
import torch
from datasets import Dataset
from helpers import tokenizer_llama as llama
from transformers import (
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    T5Config,
    T5ForConditionalGeneration,
    TrainerCallback,
)

from lbe_hf import BatchEntropyConfig, LBEMixin
from lbe_hf.alphas import ALPHAS_NAME

trl = pytest.importorskip("trl")
from lbe_hf import LBEDPOTrainer, LBESFTTrainer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def sft_rows(n=16):
    return Dataset.from_dict({"text": [f"the cat number {i} sat on the mat and saw {i + 1} dogs" for i in range(n)]})


# What every TRL run here shares: a few CPU steps, a logged loss at each, nothing saved unless a test asks.
TRL_SETTINGS = dict(
    per_device_train_batch_size=4,
    learning_rate=1e-2,
    logging_steps=1,
    report_to="none",
    save_strategy="no",
    use_cpu=True,
    seed=0,
    max_length=32,
    disable_tqdm=True,
)


def sft_args(path, **kw):
    return trl.SFTConfig(str(path), **{**TRL_SETTINGS, "max_steps": 3, **kw})


def test_sft_loss_is_the_sft_loss_times_one_plus_lbe_and_alphas_move(tmp_path, tok):
    plain = trl.SFTTrainer(
        model=llama(tok), args=sft_args(tmp_path / "p"), train_dataset=sft_rows(), processing_class=tok
    )
    plain.train()
    model = llama(tok)
    lbe = LBESFTTrainer(
        model=model,
        args=sft_args(tmp_path / "l"),
        train_dataset=sft_rows(),
        processing_class=tok,
        lbe_config=BatchEntropyConfig(beta=0.5),
    )
    assert lbe.args.gradient_checkpointing  # SFTConfig's default: the term must survive it
    lbe.train()
    first_plain = plain.state.log_history[0]
    first = lbe.state.log_history[0]
    # Step 1 starts from the same weights: the task loss is SFT's own, and the optimized loss is L * (1 + L_BE).
    assert first["task_loss"] == pytest.approx(first_plain["loss"], rel=1e-5)
    assert first["lbe_loss"] > 0.01
    assert first["loss"] == pytest.approx(first["task_loss"] * (1 + first["lbe_loss"]), rel=1e-5)
    assert "mean_token_accuracy" in first  # TRL's own metrics are still logged
    assert len(lbe.alphas) == 2 and (lbe.alphas - 0.5).abs().min() > 1e-4
    assert lbe.lbe_module_names == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]


def test_sft_checkpoint_has_the_alphas_and_resume_restores_them(tmp_path, tok):
    args = sft_args(tmp_path, save_strategy="steps", save_steps=2, max_steps=2, lr_scheduler_type="constant")
    first = LBESFTTrainer(model=llama(tok), args=args, train_dataset=sft_rows(), processing_class=tok)
    first.train()
    folder = tmp_path / "checkpoint-2"
    assert (folder / ALPHAS_NAME).is_file() and (folder / "lbe_config.json").is_file()
    saved = first.alphas
    args = sft_args(tmp_path, save_strategy="steps", save_steps=2, max_steps=3, lr_scheduler_type="constant")
    resumed = LBESFTTrainer(model=llama(tok, seed=1), args=args, train_dataset=sft_rows(), processing_class=tok)
    restored = []
    resumed.add_callback(_AlphasAtTrainBegin(resumed, restored))
    resumed.train(resume_from_checkpoint=str(folder))
    assert torch.equal(restored[0], saved)
    assert resumed.state.global_step == 3 and not torch.equal(resumed.alphas, saved)


class _AlphasAtTrainBegin(TrainerCallback):
    def __init__(self, trainer, out):
        self.trainer, self.out = trainer, out

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.out:
            self.out.append(self.trainer.alphas)


def dpo_rows(n=8):
    return Dataset.from_dict(
        {
            "prompt": [f"question {i}:" for i in range(n)],
            "chosen": [f" the answer is {i} cats" for i in range(n)],
            "rejected": [f" no idea about {i + 3} dogs at all" for i in range(n)],
        }
    )


def dpo_args(path, **kw):
    return trl.DPOConfig(str(path), **{**TRL_SETTINGS, "max_steps": 2, **kw})


def test_dpo_regularizes_the_policy_forward_only(tmp_path, tok):
    # The reference is a separate frozen copy (TRL would reload it by name): its forwards carry no LBE hooks.
    plain = trl.DPOTrainer(
        model=llama(tok),
        ref_model=llama(tok),
        args=dpo_args(tmp_path / "p"),
        train_dataset=dpo_rows(),
        processing_class=tok,
    )
    plain.train()
    lbe = LBEDPOTrainer(
        model=llama(tok),
        ref_model=llama(tok),
        args=dpo_args(tmp_path / "l"),
        train_dataset=dpo_rows(),
        processing_class=tok,
        lbe_config=BatchEntropyConfig(beta=0.5),
    )
    lbe.train()
    first_plain, first = plain.state.log_history[0], lbe.state.log_history[0]
    assert first["task_loss"] == pytest.approx(first_plain["loss"], rel=1e-5)
    assert first["loss"] == pytest.approx(first["task_loss"] * (1 + first["lbe_loss"]), rel=1e-5)
    assert first["lbe_loss"] > 0.01 and first["lbe_skipped"] == 0
    assert (lbe.alphas - 0.5).abs().min() > 1e-4


class LBESeq2SeqTrainer(LBEMixin, Seq2SeqTrainer):
    pass


def test_seq2seq_trainer_through_the_mixin_logs_and_saves(tmp_path):
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=64,
        d_model=32,
        d_kv=8,
        d_ff=48,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        decoder_start_token_id=0,
        pad_token_id=0,
    )
    model = T5ForConditionalGeneration(config)
    g = torch.Generator().manual_seed(0)
    rows = Dataset.from_dict(
        {
            "input_ids": torch.randint(1, 64, (8, 10), generator=g).tolist(),
            "attention_mask": [[1] * 10] * 8,
            "labels": torch.randint(1, 64, (8, 6), generator=g).tolist(),
        }
    )
    args = Seq2SeqTrainingArguments(
        str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="steps",
        save_steps=2,
        learning_rate=1e-2,
        disable_tqdm=True,
    )
    targets = r".*block\.\d+\.layer\.\d+\.DenseReluDense\.wo"
    trainer = LBESeq2SeqTrainer(
        model=model, args=args, train_dataset=rows, lbe_config=BatchEntropyConfig(target_modules=targets)
    )
    trainer.train()
    assert len(trainer.lbe_module_names) == 4  # two encoder and two decoder blocks
    log = trainer.state.log_history[0]
    assert math.isfinite(log["lbe_loss"]) and log["loss"] == pytest.approx(log["task_loss"] * (1 + log["lbe_loss"]))
    assert os.path.isfile(tmp_path / "checkpoint-2" / ALPHAS_NAME)
    assert (trainer.alphas - 0.5).abs().min() > 1e-4


def test_dpo_with_lora_ignores_the_no_grad_reference_forward_of_the_same_model(tmp_path, tok):
    from peft import LoraConfig

    peft_config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = LBEDPOTrainer(
        model=llama(tok),
        args=dpo_args(tmp_path),
        train_dataset=dpo_rows(),
        processing_class=tok,
        peft_config=peft_config,
        lbe_config=BatchEntropyConfig(beta=0.5),
    )
    forwards = []
    hook = trainer.model.register_forward_hook(lambda m, a, o: forwards.append(torch.is_grad_enabled()))
    trainer.train()
    hook.remove()
    # Each step: one policy forward with autograd, one reference forward (adapter disabled) under no_grad.
    assert forwards == [True, False, True, False]
    first = trainer.state.log_history[0]
    assert first["loss"] == pytest.approx(first["task_loss"] * (1 + first["lbe_loss"]), rel=1e-5)
    assert trainer.lbe_module_names[0].endswith("model.layers.0.mlp.down_proj")
    assert (trainer.alphas - 0.5).abs().min() > 1e-4


def test_sft_model_card_has_the_lbe_section_and_tags(tmp_path, tok):
    trainer = LBESFTTrainer(
        model=llama(tok), args=sft_args(tmp_path, max_steps=1), train_dataset=sft_rows(), processing_class=tok
    )
    trainer.train()
    trainer.create_model_card()
    card = (tmp_path / "README.md").read_text()
    assert "lbe_hf" in card and "Layerwise batch-entropy" in card
    assert "model.layers.1.mlp.down_proj" in card
