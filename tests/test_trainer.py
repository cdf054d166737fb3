import json
import logging
import os

import pytest
import torch
from conftest import make_token_dataset
from datasets import Dataset
from helpers import tiny_bert
from safetensors.torch import load_file
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainingArguments,
)

from lbe_hf import BatchEntropyConfig, LBERegularizer, LBETrainer
from lbe_hf.models import FNNConfig, FNNForImageClassification
from lbe_hf.tasks.data import TensorDictDataset

LOG_KEYS = {"task_loss", "lbe_loss", "entropy_mean", "entropy_min", "alpha_mean", "lbe_skipped"}


def training_args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        seed=0,
        disable_tqdm=True,
    )
    values.update(overrides)
    return TrainingArguments(**values)


def fnn_data(n=16, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDictDataset(torch.randn(n, dim, generator=g), torch.randint(0, 3, (n,), generator=g))


def make_fnn(seed=0, depth=4):
    torch.manual_seed(seed)
    return FNNForImageClassification(FNNConfig(input_dim=6, depth=depth, width=16, num_labels=3))


def test_tiny_bert_trains_weights_and_alphas_move_and_logs(tmp_path):
    model = tiny_bert()
    before = model.bert.encoder.layer[1].output.dense.weight.detach().clone()
    trainer = LBETrainer(
        model=model,
        args=training_args(tmp_path),
        train_dataset=make_token_dataset(),
        lbe_config=BatchEntropyConfig(alpha=1.5, beta=1.0),
    )
    assert trainer.lbe_module_names == ["bert.encoder.layer.0.output.dense", "bert.encoder.layer.1.output.dense"]
    initial = trainer.alphas
    assert initial.tolist() == [1.5, 1.5]
    trainer.train()
    assert not torch.equal(trainer.alphas, initial)
    assert not torch.equal(model.bert.encoder.layer[1].output.dense.weight, before)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3 and all(LOG_KEYS <= set(h) for h in logs)
    # loss = L + L * L_BE with L_BE >= 0: the logged loss is at least the task loss
    assert all(h["loss"] >= h["task_loss"] - 1e-6 and h["lbe_loss"] > 0 for h in logs)
    assert [len(layers) for _, layers in trainer.entropy_history] == [2, 2, 2]
    # alphas are trained without weight decay and are part of the optimizer
    groups = trainer.optimizer.param_groups
    alpha_param = model.lbe_alphas.alpha
    assert any(alpha_param is p for g in groups if g["weight_decay"] == 0.0 for p in g["params"])


def test_eval_loss_is_the_model_loss_and_predictions_hold_only_logits(tmp_path):
    model = tiny_bert()
    data = make_token_dataset(n=8)
    trainer = LBETrainer(model=model, args=training_args(tmp_path, per_device_eval_batch_size=8), train_dataset=data)
    trainer.train()
    metrics = trainer.evaluate(data)
    model.eval()
    batch = {k: torch.tensor(data[k]) for k in ("input_ids", "attention_mask", "labels")}
    with torch.no_grad():
        plain = model(**batch).loss.item()
    assert metrics["eval_loss"] == pytest.approx(plain, rel=1e-5)
    predictions = trainer.predict(data)
    assert predictions.predictions.shape == (8, 2)  # logits only: no activations leak into predictions


def _one_sgd_step(tmp_path, model, data, batch, accumulation, beta=0.0):
    trainer = LBETrainer(
        model=model,
        args=training_args(
            tmp_path,
            max_steps=1,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            optim="sgd",
            learning_rate=0.5,
            lr_scheduler_type="constant",
            weight_decay=0.0,
        ),
        train_dataset=data,
        lbe_config=BatchEntropyConfig(beta=beta),
    )
    trainer.train()
    _one_sgd_step.logs = trainer.state.log_history[0]
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_gradient_accumulation_scales_classification_loss(tmp_path):
    # BERT heads take **kwargs but return a per-batch mean: 2 x 4 accumulated must equal one batch of 8.
    data = make_token_dataset(n=8)
    full = _one_sgd_step(tmp_path / "a", tiny_bert(), data, batch=8, accumulation=1)
    accumulated = _one_sgd_step(tmp_path / "b", tiny_bert(), data, batch=4, accumulation=2)
    initial = dict(tiny_bert().named_parameters())
    name = "bert.encoder.layer.0.output.dense.weight"
    assert not torch.allclose(full[name], initial[name])
    for n in full:
        assert torch.allclose(full[n], accumulated[n], atol=1e-6), n


def test_logged_task_loss_under_accumulation_is_the_batch_mean(tmp_path):
    # The logged task_loss is the per-step mean of the task loss, whatever the accumulation, for a mean-loss head
    # and for a causal LM (whose loss inside the forward is a share of the accumulated batch's token sum).
    for name, build, data, small in (
        ("bert", tiny_bert, make_token_dataset(n=8), 4),
        ("llama", _tiny_llama, _causal_lm_data(), 2),
    ):
        _one_sgd_step(tmp_path / f"{name}a", build(), data, batch=2 * small, accumulation=1)
        full = _one_sgd_step.logs
        _one_sgd_step(tmp_path / f"{name}b", build(), data, batch=small, accumulation=2)
        accumulated = _one_sgd_step.logs
        plain = Trainer(
            model=build(), args=training_args(tmp_path / f"{name}c", per_device_train_batch_size=2 * small)
        )
        reference = plain.compute_loss(plain.model.train(), plain.data_collator([data[i] for i in range(2 * small)]))
        assert full["task_loss"] == pytest.approx(reference.item(), rel=1e-5), name
        assert accumulated["task_loss"] == pytest.approx(reference.item(), rel=1e-5), name


def _causal_lm_data(n=4, seq=10):
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, 64, (n, seq), generator=g)
    lengths = torch.tensor([10, 3, 9, 4])[:n]  # unequal token counts per micro-batch
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    labels = torch.where(mask.bool(), input_ids, torch.full_like(input_ids, -100))
    return Dataset.from_dict(
        {"input_ids": input_ids.tolist(), "attention_mask": mask.tolist(), "labels": labels.tolist()}
    )


def _tiny_llama():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=16,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def test_gradient_accumulation_keeps_causal_lm_token_average(tmp_path):
    # Causal LMs divide by num_items_in_batch over the whole accumulated batch: no second division.
    data = _causal_lm_data()
    full = _one_sgd_step(tmp_path / "a", _tiny_llama(), data, batch=4, accumulation=1)
    accumulated = _one_sgd_step(tmp_path / "b", _tiny_llama(), data, batch=2, accumulation=2)
    for n in full:
        assert torch.allclose(full[n], accumulated[n], atol=1e-6), n


def test_checkpoint_resume_restores_alphas_exactly(tmp_path):
    data = fnn_data()
    config = BatchEntropyConfig(alpha=1.0, beta=1.0)
    args = dict(max_steps=6, save_strategy="steps", save_steps=3)
    straight = LBETrainer(
        model=make_fnn(), args=training_args(tmp_path / "a", **args), train_dataset=data, lbe_config=config
    )
    straight.train()
    checkpoint = tmp_path / "a" / "checkpoint-3"
    weights = load_file(checkpoint / "model.safetensors")
    assert not any("lbe_alphas" in k for k in weights)  # the weights file stays plain transformers
    saved = load_file(checkpoint / "lbe_alphas.safetensors")["alpha"]
    assert saved.shape == (4,) and not torch.equal(saved, torch.ones(4))

    resumed = LBETrainer(
        model=make_fnn(), args=training_args(tmp_path / "b", **args), train_dataset=data, lbe_config=config
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 6
    assert torch.allclose(resumed.alphas, straight.alphas, atol=1e-6)
    for (n, p), q in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6), n


def test_last_batch_of_one_is_skipped_with_one_warning(tmp_path):
    trainer = LBETrainer(
        model=make_fnn(),
        args=training_args(tmp_path, max_steps=3, per_device_train_batch_size=2),
        train_dataset=fnn_data(n=5),  # batches of 2, 2, 1
    )
    with pytest.warns(UserWarning, match="LBE term skipped for a batch of 1") as record:
        trainer.train()
    assert sum("LBE term skipped" in str(w.message) for w in record) == 1
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["lbe_skipped"] for h in logs] == [0.0, 0.0, 1.0]


def test_batch_size_one_configured_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 2 samples per device"):
        LBETrainer(model=make_fnn(), args=training_args(tmp_path, per_device_train_batch_size=1))


def test_peft_lora_trains_and_saves_alphas_with_adapter(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    model = get_peft_model(tiny_bert(), LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS"))
    lora_b = model.base_model.model.bert.encoder.layer[0].attention.self.query.lora_B.default.weight
    before = lora_b.detach().clone()
    trainer = LBETrainer(
        model=model,
        args=training_args(tmp_path),
        train_dataset=make_token_dataset(),
        lbe_config=BatchEntropyConfig(alpha=1.5),
    )
    assert len(trainer.lbe_module_names) == 2
    trainer.train()
    assert not torch.equal(lora_b, before)
    assert not torch.equal(trainer.alphas, torch.full((2,), 1.5))
    trainer.save_model(str(tmp_path / "adapter"))
    files = set(os.listdir(tmp_path / "adapter"))
    assert {"adapter_model.safetensors", "lbe_alphas.safetensors", "lbe_config.json"} <= files

    reloaded = PeftModel.from_pretrained(tiny_bert(), str(tmp_path / "adapter"))
    regularizer = LBERegularizer(reloaded, BatchEntropyConfig.from_pretrained(tmp_path / "adapter"))
    assert regularizer.load_pretrained(tmp_path / "adapter")
    assert torch.equal(regularizer.alphas, trainer.alphas)


def test_saved_model_loads_with_plain_transformers_and_card_says_lbe(tmp_path, caplog):
    model = tiny_bert()
    trainer = LBETrainer(model=model, args=training_args(tmp_path / "run"), train_dataset=make_token_dataset())
    trainer.train()
    out = tmp_path / "model"
    trainer.save_model(str(out))
    with caplog.at_level(logging.WARNING):
        loaded, info = AutoModelForSequenceClassification.from_pretrained(str(out), output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"]
    assert not any("lbe_alphas" in r.getMessage() for r in caplog.records)
    assert not any(n.startswith("lbe_alphas") for n in loaded.state_dict())
    ids = torch.tensor(make_token_dataset(n=2)["input_ids"])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-6)
    assert json.loads((out / "lbe_config.json").read_text())["beta"] == 0.5
    assert torch.equal(load_file(out / "lbe_alphas.safetensors")["alpha"], trainer.alphas)

    trainer.create_model_card(model_name="tiny-lbe")
    card = (tmp_path / "run" / "README.md").read_text()
    assert "- lbe" in card and "Layerwise batch-entropy regularization" in card
    assert "`bert.encoder.layer.1.output.dense`" in card and f"{trainer.alphas[1].item():.4f}" in card
    assert "lbe" in model.model_tags


def test_real_minilm_trains_on_rte_rows(tmp_path, minilm_path, data_dir):
    rows = [json.loads(line) for line in (data_dir / "glue" / "rte" / "train.jsonl").open()][:16]
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    encoded = tokenizer(
        [r["sentence1"] for r in rows],
        [r["sentence2"] for r in rows],
        truncation=True,
        max_length=64,
        padding="max_length",
    )
    data = Dataset.from_dict({**encoded, "labels": [r["label"] for r in rows]})
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
    ffn = model.bert.encoder.layer[5].output.dense.weight
    before = ffn.detach().clone()
    trainer = LBETrainer(
        model=model,
        args=training_args(tmp_path, per_device_train_batch_size=8, learning_rate=5e-5, max_steps=2),
        train_dataset=data,
        lbe_config=BatchEntropyConfig(alpha=0.8, beta=0.05),
    )
    assert trainer.lbe_module_names == [f"bert.encoder.layer.{i}.output.dense" for i in range(6)]
    trainer.train()
    assert not torch.equal(ffn, before)
    assert not torch.equal(trainer.alphas, torch.full((6,), 0.8))
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert all(LOG_KEYS <= set(h) for h in logs) and all(0 < h["entropy_mean"] for h in logs)


def _two_steps(tmp_path, trainer_class, **kwargs):
    model = tiny_bert()
    args = training_args(
        tmp_path, max_steps=2, per_device_train_batch_size=4, gradient_accumulation_steps=2, save_strategy="steps",
        save_steps=2, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant",
    )  # fmt: skip
    trainer = trainer_class(model=model, args=args, train_dataset=make_token_dataset(n=16), **kwargs)
    trainer.train()
    return trainer, {n: p.detach().clone() for n, p in model.named_parameters() if "lbe_alphas" not in n}


def test_beta_zero_with_the_fixes_off_is_a_plain_trainer_run(tmp_path):
    plain, expected = _two_steps(tmp_path / "plain", Trainer)
    same, got = _two_steps(
        tmp_path / "lbe", LBETrainer, lbe_config=BatchEntropyConfig(beta=0.0), fix_accumulation=False,
        mark_checkpoints=False,
    )  # fmt: skip
    assert all(torch.equal(expected[n], got[n]) for n in expected)
    assert [h["loss"] for h in plain.state.log_history[:-1]] == [h["loss"] for h in same.state.log_history[:-1]]
    written = set(os.listdir(tmp_path / "lbe" / "checkpoint-2"))
    assert written - set(os.listdir(tmp_path / "plain" / "checkpoint-2")) == {
        "lbe_alphas.safetensors",
        "lbe_config.json",
    }
    # The defaults differ from Trainer on purpose: BERT's mean loss is divided over the 2 accumulated micro-batches.
    _, fixed = _two_steps(tmp_path / "fixed", LBETrainer, lbe_config=BatchEntropyConfig(beta=0.0))
    assert not all(torch.equal(expected[n], fixed[n]) for n in expected)
    assert (tmp_path / "fixed" / "checkpoint-2" / "lbe_checkpoint_complete.json").is_file()


def test_joint_entropy_estimator_trains_through_lbetrainer(tmp_path):
    model = make_fnn()
    trainer = LBETrainer(
        model=model,
        args=training_args(tmp_path),
        train_dataset=fnn_data(),
        lbe_config=BatchEntropyConfig(entropy_estimator="joint", alpha=1.5),
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "lbe_loss" in h]
    assert len(logs) == 3 and all(h["lbe_loss"] > 0 for h in logs)
    assert (trainer.alphas - 1.5).abs().min() > 1e-4


def test_continuing_from_a_saved_model_keeps_its_learned_alphas(tmp_path):
    trainer = LBETrainer(model=tiny_bert(), args=training_args(tmp_path / "run"), train_dataset=make_token_dataset())
    trainer.train()
    learned = trainer.alphas
    assert not torch.equal(learned, torch.full_like(learned, 0.5))
    trainer.save_model(str(tmp_path / "model"))

    loaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "model"))
    again = LBETrainer(model=loaded, args=training_args(tmp_path / "run2"), train_dataset=make_token_dataset())
    assert torch.equal(again.alphas, learned)
    with pytest.raises(ValueError, match="is a saved model .* not a Trainer checkpoint: .* pass that as model="):
        again.train(resume_from_checkpoint=str(tmp_path / "model"))


def test_lbe_config_as_dict_or_wrong_type():
    trainer = LBETrainer(model=tiny_bert(), args=training_args("unused"), lbe_config={"beta": 0.1})
    assert trainer.lbe_config == BatchEntropyConfig(beta=0.1) and trainer.lbe.config.beta == 0.1
    with pytest.raises(ValueError, match=r"lbe_config has unknown fields \['betta'\]"):
        LBETrainer(model=tiny_bert(), args=training_args("unused"), lbe_config={"betta": 0.1})
    with pytest.raises(TypeError, match="lbe_config must be a BatchEntropyConfig or a dict"):
        LBETrainer(model=tiny_bert(), args=training_args("unused"), lbe_config=0.1)


def test_hyperparameter_search_trains_each_trial_with_its_own_alpha_and_beta(tmp_path):
    optuna = pytest.importorskip("optuna")
    from transformers import TrainerCallback

    seen = []

    class Record(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen.append({"start": model.lbe_alphas.alpha.tolist(), "lr": args.learning_rate})

        def on_train_end(self, args, state, control, model=None, **kwargs):
            seen[-1].update(config=trainer.lbe.config, end=model.lbe_alphas.alpha.tolist(), logs=state.log_history)

    def hp_space(trial):
        alpha = trial.suggest_categorical("lbe_alpha", [0.3, 0.9])
        return {"lbe_alpha": alpha, "lbe_beta": 0.0 if alpha == 0.3 else 2.0, "learning_rate": 5e-3}

    trainer = LBETrainer(
        model_init=lambda: tiny_bert(),
        args=training_args(tmp_path),
        train_dataset=make_token_dataset(),
        eval_dataset=make_token_dataset(n=8, seed=1),
        callbacks=[Record()],
    )
    best = trainer.hyperparameter_search(
        hp_space=hp_space,
        backend="optuna",
        n_trials=2,
        sampler=optuna.samplers.GridSampler({"lbe_alpha": [0.3, 0.9]}),
    )
    assert best is not None
    assert sorted((t["config"].alpha, t["config"].beta) for t in seen) == [(0.3, 0.0), (0.9, 2.0)]
    for trial in seen:
        alpha, beta = trial["config"].alpha, trial["config"].beta
        assert trial["start"] == pytest.approx([alpha, alpha]) and trial["lr"] == 5e-3
        logged = [h["lbe_loss"] for h in trial["logs"] if "lbe_loss" in h]
        assert logged and (all(v == 0 for v in logged) if beta == 0 else all(v > 0 for v in logged))
        # beta 0: the alphas get no gradient; beta 2: they train.
        assert (trial["end"] == trial["start"]) == (beta == 0)
