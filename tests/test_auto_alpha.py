"""alpha="auto": config and CLI parsing, the initialisation rule, when it runs, and resume."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import accelerate_launch
from transformers import HfArgumentParser, TrainingArguments

from lbe_hf import BatchEntropyConfig, LBEArguments, LBERegularizer, LBETrainer
from lbe_hf.auto_alpha import auto_alphas
from lbe_hf.collect import ActivationCollector
from lbe_hf.entropy import batch_entropy, layer_entropies
from lbe_hf.loss import lbe_loss
from lbe_hf.models import FNNConfig, FNNForImageClassification
from lbe_hf.tasks.data import TensorDictDataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _fnn(seed=0, depth=4, init="he"):
    torch.manual_seed(seed)
    return FNNForImageClassification(FNNConfig(input_dim=12, depth=depth, width=16, num_labels=3, init=init))


def _measure(model, names, x):
    col = ActivationCollector(model, names)
    with torch.no_grad(), col.capture():
        model(pixel_values=x)
    out = layer_entropies(col.take())
    col.remove()
    return out


def test_config_and_command_line(tmp_path):
    assert BatchEntropyConfig(alpha="auto").alpha == "auto"
    assert BatchEntropyConfig(alpha=" AUTO ").alpha == "auto"
    assert BatchEntropyConfig(alpha="0.3").alpha == 0.3
    with pytest.raises(ValueError, match="number or 'auto'"):
        BatchEntropyConfig(alpha="big")
    parser = HfArgumentParser((LBEArguments, TrainingArguments))
    lbe_args, _ = parser.parse_args_into_dataclasses(["--lbe_alpha", "auto", "--output_dir", str(tmp_path)])
    assert lbe_args.to_config().alpha == "auto"
    lbe_args, _ = parser.parse_args_into_dataclasses(["--lbe_alpha", "0.7", "--output_dir", str(tmp_path)])
    assert lbe_args.to_config().alpha == 0.7
    assert parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path)])[0].to_config().alpha == 0.5
    BatchEntropyConfig(alpha="auto").save_pretrained(tmp_path)
    assert BatchEntropyConfig.from_pretrained(tmp_path).alpha == "auto"


def test_rule():
    h = torch.tensor([0.05, 0.3, 0.9])
    assert auto_alphas(h, None, 0.2).tolist() == pytest.approx([0.2002, 0.3, 0.9])
    assert auto_alphas(h, 0.4, 0.2).tolist() == pytest.approx([0.4, 0.4, 0.9])
    # A target on the floor must stay learnable: max(alpha_min, |alpha|) passes no gradient at alpha == alpha_min.
    alpha = auto_alphas(torch.zeros(2), None, 0.2).requires_grad_()
    lbe_loss(torch.zeros(2), alpha, 0.2, 0.5).backward()
    assert torch.all(alpha.grad != 0)


def test_first_captured_forward_sets_alphas_by_the_rule():
    model = _fnn()
    reg = LBERegularizer(model, BatchEntropyConfig(alpha="auto", alpha_min=0.01))
    x, y = torch.rand(32, 12), torch.randint(0, 3, (32,))
    with torch.no_grad():  # a first layer louder than the input, so one target is above the input's entropy
        model.layers[0].linear.weight.mul_(4.0)
    # Not yet measured: a placeholder, and a forward outside capture() (evaluation) does not initialise.
    assert torch.all(reg.alphas == 0.01)
    with torch.no_grad():
        model(pixel_values=x)
    assert torch.all(reg.alphas == 0.01)
    expected_layers = _measure(model, reg.module_names, x)
    expected = torch.maximum(expected_layers, torch.tensor(max(0.01 * 1.001, float(batch_entropy(x)))))
    with reg.capture():
        loss = model(pixel_values=x, labels=y).loss
    assert torch.allclose(reg.alphas, expected, atol=1e-6)
    assert reg.alphas.unique().numel() > 1  # per layer: layers above the input's entropy keep their own level
    assert reg.auto_alpha is None
    loss.backward()
    assert model.lbe_alphas.alpha.grad is not None
    # Later batches don't re-initialise.
    before = reg.alphas
    with reg.capture():
        model(pixel_values=torch.rand(32, 12), labels=y)
    assert torch.equal(reg.alphas, before)
    reg.remove()


def test_batch_of_one_waits_for_a_real_batch():
    model = _fnn()
    reg = LBERegularizer(model, BatchEntropyConfig(alpha="auto"))
    with pytest.warns(UserWarning, match="at least 2"), reg.capture():
        model(pixel_values=torch.rand(1, 12), labels=torch.tensor([0]))
    assert reg.auto_alpha is not None
    with reg.capture():
        model(pixel_values=torch.rand(8, 12), labels=torch.randint(0, 3, (8,)))
    assert reg.auto_alpha is None
    reg.remove()


def test_token_inputs_use_the_embedding_output():
    from helpers import tiny_bert

    model = tiny_bert(
        dropout=0.1, vocab_size=50, hidden_size=16, intermediate_size=32, max_position_embeddings=16
    )  # fmt: skip
    with torch.no_grad():  # large embeddings, so the input entropy (not a layer's, not alpha_min) sets the floor
        model.bert.embeddings.word_embeddings.weight.mul_(40.0)
    reg = LBERegularizer(model, BatchEntropyConfig(alpha="auto"))
    ids = torch.randint(0, 50, (8, 10))
    with torch.no_grad():
        h_in = float(batch_entropy(model.bert.embeddings.word_embeddings(ids)))
    with reg.capture():
        model(input_ids=ids, labels=torch.randint(0, 2, (8,)))
    assert reg.alphas.min().item() == pytest.approx(h_in, rel=1e-5)
    assert h_in > 0.2
    reg.remove()
    assert not model.bert.embeddings.word_embeddings._forward_hooks


def test_trainer_measures_before_the_first_step_and_resume_keeps_saved_alphas(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = TensorDictDataset(torch.rand(16, 12, generator=g), torch.randint(0, 3, (16,), generator=g))
    model = _fnn(depth=6, init="torch")
    expected_layers = _measure(model, [f"layers.{i}.act" for i in range(6)], data.pixel_values)
    floor = max(0.2 * 1.001, float(batch_entropy(data.pixel_values)))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=16,
        learning_rate=0.0,
        report_to="none",
        save_strategy="steps",
        save_steps=1,
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = LBETrainer(model=model, args=args, train_dataset=data, lbe_config=BatchEntropyConfig(alpha="auto"))
    trainer.train()
    # lr 0: the alphas are exactly what the first batch (all 16 rows) measured, by the rule.
    assert torch.allclose(trainer.alphas, expected_layers.clamp(min=floor), atol=1e-6)
    saved = trainer.alphas
    # Resume on a fresh model: the checkpoint's alphas win over a new measurement.
    fresh = _fnn(seed=1, depth=6, init="torch")
    reg = LBERegularizer(fresh, BatchEntropyConfig(alpha="auto"))
    assert reg.load_pretrained(os.path.join(tmp_path, "checkpoint-1"))
    assert reg.auto_alpha is None
    with reg.capture():
        fresh(pixel_values=torch.rand(16, 12) * 10, labels=torch.randint(0, 3, (16,)))
    assert torch.allclose(reg.alphas, saved)


@pytest.mark.slow
def test_ddp_ranks_start_with_the_same_alphas(tmp_path):
    # Real DDP: two gloo processes (without ACCELERATE_USE_CPU=true each would run alone with world size 1).
    script = Path(__file__).parent / "scripts" / "ddp_auto_alpha.py"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = accelerate_launch()
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["rank"] for r in results] == [0, 1]
    r0, r1 = ({k: torch.tensor(v) if k in ("alphas", "local") else v for k, v in r.items()} for r in results)
    assert r0["world_size"] == r1["world_size"] == 2
    assert not torch.allclose(r0["local"], r1["local"])
    assert torch.equal(r0["alphas"], r1["alphas"])
    assert torch.allclose(r0["alphas"], (r0["local"] + r1["local"]) / 2, atol=1e-6)
