"""Each trainer's declared LBE rule (`lbe_hf.trainer_rules`): loss form, samples, refusals, in the real trainers."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from helpers import tiny_bert
from helpers import tokenizer_llama as llama
from transformers import TrainerCallback, TrainingArguments

from lbe_hf import BatchEntropyConfig, LBEMixin, LBETrainer
from lbe_hf.entropy import PI_E
from lbe_hf.loss import lbe_loss
from lbe_hf.trainer_rules import RULES, rule_for

trl = pytest.importorskip("trl")
from lbe_hf import LBEDPOTrainer, LBESFTTrainer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


COMMON = dict(logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True)


class LBEGRPOTrainer(LBEMixin, trl.GRPOTrainer):
    pass


def grpo_trainer(tok, path, lbe_config, steps=3):
    args = trl.GRPOConfig(
        str(path),
        per_device_train_batch_size=4,
        num_generations=4,  # one whole group per micro-batch: its advantages sum to 0, the loss sits at ~0
        max_completion_length=6,
        max_steps=steps,
        learning_rate=1e-2,
        max_grad_norm=0.0,  # unclipped: the gradients below are compared with their closed form
        **COMMON,
    )
    prompts = Dataset.from_dict({"prompt": [f"count to {i}" for i in range(8)]})
    return LBEGRPOTrainer(
        model=llama(tok),
        reward_funcs=lambda completions, **kw: [float(len(c)) for c in completions],
        args=args,
        train_dataset=prompts,
        processing_class=tok,
        lbe_config=lbe_config,
    )


class _AlphaGradients(TrainerCallback):
    """The alphas, their gradient and the step's entropies just before each optimizer step."""

    def __init__(self, trainer):
        self.trainer, self.seen = trainer, []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        alpha = model.lbe_alphas.alpha
        self.seen.append((alpha.detach().clone(), alpha.grad.clone(), self.trainer.lbe.last_entropies.clone()))


def test_grpo_term_is_additive_and_trains_the_alphas(tmp_path, tok):
    config = BatchEntropyConfig(alpha=1.0, beta=0.5)
    trainer = grpo_trainer(tok, tmp_path, config)
    assert trainer.lbe.loss_form == "additive" and trainer.lbe.shared_prefixes
    probe = _AlphaGradients(trainer)
    trainer.add_callback(probe)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "lbe_loss" in h]
    assert len(logs) == 3 and all(abs(h["task_loss"]) < 1e-5 for h in logs)  # a policy loss at ~0 ...
    assert all(h["lbe_loss"] > 1e-3 for h in logs)  # ... does not silence the term
    for alpha, grad, entropies in probe.seen:
        # L + L_BE: the alphas' gradient is exactly dL_BE/dalpha, whatever the policy loss's sign.
        leaf = alpha.clone().requires_grad_(True)
        lbe_loss(entropies, leaf, config.alpha_min, config.beta).backward()
        torch.testing.assert_close(grad, leaf.grad, rtol=1e-5, atol=1e-8)
        assert (grad != 0).all()


def test_grpo_with_the_multiplicative_form_refuses_a_negative_loss(tmp_path, tok):
    trainer = grpo_trainer(tok, tmp_path, BatchEntropyConfig(loss_form="multiplicative"), steps=6)
    with pytest.raises(ValueError, match=r"task loss is negative .*loss_form='additive'"):
        trainer.train()


def test_negative_task_loss_under_trainer_names_the_fix(tmp_path):
    def negative(outputs, labels, num_items_in_batch=None):
        return -outputs.logits.square().mean() - 1.0

    data = Dataset.from_dict({"input_ids": [[1, 2, 3, 4]] * 8, "labels": [0, 1] * 4})
    args = TrainingArguments(str(tmp_path), max_steps=1, per_device_train_batch_size=4, **COMMON)
    trainer = LBETrainer(model=tiny_bert(), args=args, train_dataset=data, compute_loss_func=negative)
    with pytest.raises(ValueError, match="loss_form='additive'"):
        trainer.train()
    additive = LBETrainer(
        model=tiny_bert(),
        args=args,
        train_dataset=data,
        compute_loss_func=negative,
        lbe_config=BatchEntropyConfig(loss_form="additive"),
    )
    additive.train()
    log = additive.state.log_history[0]
    assert log["loss"] == pytest.approx(log["task_loss"] + log["lbe_loss"], rel=1e-5)


def _prefix_keep(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """By hand: a row's position counts unless an earlier row has the same tokens and mask up to it."""
    keep = torch.ones(ids.shape, dtype=torch.bool)
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            for other in range(b):
                if torch.equal(ids[b, : t + 1], ids[other, : t + 1]) and torch.equal(
                    mask[b, : t + 1], mask[other, : t + 1]
                ):
                    keep[b, t] = False
    return keep


def _entropy_over_kept_rows(x: torch.Tensor, keep: torch.Tensor) -> float:
    """Eq. 3 per (position, channel) neuron over the kept rows of that position, averaged over neurons with >= 2."""
    values = []
    for t in range(x.shape[1]):
        rows = x[keep[:, t], t].double()
        if rows.shape[0] >= 2:
            values.append(0.5 * torch.log1p(PI_E * rows.var(0, unbiased=True)))
    return float(torch.cat(values).mean())


def test_dpo_counts_each_shared_prompt_position_once(tmp_path, tok):
    rows = Dataset.from_dict(
        {
            "prompt": [f"a long shared question number {i} about cats and dogs:" for i in range(4)],
            "chosen": [f" yes {i}" for i in range(4)],
            "rejected": [f" no, never {i} times" for i in range(4)],
        }
    )
    args = trl.DPOConfig(str(tmp_path), per_device_train_batch_size=4, max_steps=1, max_length=32, **COMMON)
    trainer = LBEDPOTrainer(
        model=llama(tok), ref_model=llama(tok), args=args, train_dataset=rows, processing_class=tok
    )
    assert trainer.lbe.shared_prefixes and trainer.lbe.loss_form == "multiplicative"
    name = trainer.lbe_module_names[-1]
    seen = {}

    def keep_root(module, args, kwargs, output):
        if torch.is_grad_enabled():
            seen["ids"], seen["mask"] = kwargs["input_ids"].clone(), kwargs["attention_mask"].clone()

    def keep_layer(module, args, output):
        if torch.is_grad_enabled():
            seen["x"] = output.detach().clone()

    handles = [
        trainer.model.register_forward_hook(keep_root, with_kwargs=True),
        dict(trainer.model.named_modules())[name].register_forward_hook(keep_layer),
    ]
    trainer.train()
    for handle in handles:
        handle.remove()
    ids, mask, x = seen["ids"], seen["mask"], seen["x"]
    assert ids.shape[0] == 8  # [chosen; rejected]: row i and row 4 + i share prompt i
    keep = _prefix_keep(ids, mask)
    assert (~keep[4:]).sum() >= 4 * 8  # each rejected row repeats at least its 8-token prompt
    expected = _entropy_over_kept_rows(x, keep)
    assert trainer.lbe.last_entropies[-1].item() == pytest.approx(expected, rel=1e-4)
    everything = _entropy_over_kept_rows(x, torch.ones_like(keep))
    assert abs(everything - expected) > 1e-3 * abs(expected)  # counting the prompt twice would read differently


def _packed_sft(tok, path, mode):
    text = Dataset.from_dict({"text": [f"the cat number {i} sat on the mat" for i in range(24)]})
    args = trl.SFTConfig(
        str(path),
        packing=True,
        max_length=32,
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        **COMMON,
    )
    return LBESFTTrainer(
        model=llama(tok),
        args=args,
        train_dataset=text,
        processing_class=tok,
        lbe_config=BatchEntropyConfig(entropy_mode=mode),
    )


def test_packed_sft_trains_in_token_mode(tmp_path, tok):
    trainer = _packed_sft(tok, tmp_path, "token")
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3 and all(h["lbe_skipped"] == 0 and h["lbe_loss"] > 0 for h in logs)
    assert all(h["loss"] == pytest.approx(h["task_loss"] * (1 + h["lbe_loss"]), rel=1e-4) for h in logs)


def test_packed_sft_in_flatten_mode_is_refused_up_front(tmp_path, tok):
    with pytest.raises(ValueError, match="packed .*entropy_mode='token'"):
        _packed_sft(tok, tmp_path, "flatten")


def test_refused_trainers():
    from trl.experimental.online_dpo import OnlineDPOTrainer

    class LBEOnlineDPO(LBEMixin, OnlineDPOTrainer):
        pass

    with pytest.raises(ValueError, match="OnlineDPOTrainer: it overrides `training_step`"):
        LBEOnlineDPO(model=None, args=None)

    class LBERLOO(LBEMixin, trl.RLOOTrainer):
        pass

    with pytest.raises(ValueError, match="RLOOTrainer: it is not yet validated"):
        LBERLOO(model=None, args=None)

    st = pytest.importorskip("sentence_transformers")
    with pytest.raises(ValueError, match="SentenceTransformerTrainer: it is not yet validated"):
        rule_for(type("S", (LBEMixin, st.SentenceTransformerTrainer), {}))
    # A TRL trainer the table does not declare is refused too.
    from trl.experimental.gkd import GKDTrainer

    with pytest.raises(ValueError, match="GKDTrainer: it is not yet validated"):
        rule_for(type("G", (LBEMixin, GKDTrainer), {}))


def test_rules_of_supported_trainers():
    assert rule_for(LBETrainer) == ("Trainer", RULES["Trainer"])
    assert rule_for(LBEGRPOTrainer)[1].loss_form == "additive"
    assert rule_for(LBEDPOTrainer)[1].shared_prefixes and not rule_for(LBESFTTrainer)[1].shared_prefixes
    # A user's own Trainer subclass gets Trainer's rule.
    assert rule_for(type("Mine", (LBETrainer,), {}))[0] == "Trainer"
