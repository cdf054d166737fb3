"""EntropyCallback: per-layer entropies at logging steps, bounded tracker scalars, the end-of-training plot."""

from __future__ import annotations

import json
import os

import pytest
import torch
from transformers import Trainer, TrainingArguments

from lbe_hf import BatchEntropyConfig, LBETrainer
from lbe_hf.callbacks import HISTORY_NAME, PLOT_NAME, EntropyCallback, summarize_entropies
from lbe_hf.models import FNNConfig, FNNForImageClassification
from lbe_hf.tasks.data import TensorDictDataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _data(n=64, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDictDataset(torch.rand(n, dim, generator=g), torch.randint(0, 3, (n,), generator=g))


def _model(depth=3, seed=0):
    torch.manual_seed(seed)
    return FNNForImageClassification(FNNConfig(input_dim=16, depth=depth, width=8, num_labels=3))


def _args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path),
        max_steps=6,
        per_device_train_batch_size=16,
        logging_steps=2,
        report_to="tensorboard",
        save_strategy="no",
        use_cpu=True,
        learning_rate=1e-2,
        disable_tqdm=True,
    )
    base.update(kw)
    return TrainingArguments(**base)


def _tb_tags(folder) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for root, _, files in os.walk(folder):
        if any(f.startswith("events.out") for f in files):
            acc = EventAccumulator(root)
            acc.Reload()
            tags |= set(acc.Tags()["scalars"])
    return tags


def test_summary_is_bounded_for_deep_nets():
    names = [f"layers.{i}.act" for i in range(500)]
    values = torch.linspace(0.0, 1.0, 500)
    out = summarize_entropies(names, values, max_layers=12, num_groups=4)
    assert len(out) == 5 + 2 + 4
    assert out["entropy/q0"] == 0.0 and out["entropy/q100"] == 1.0
    assert out["entropy/layers_000-124"] < out["entropy/layers_375-499"]
    assert out["entropy/frac_collapsed"] == pytest.approx(1 / 500)
    shallow = summarize_entropies(names[:3], [0.1, 0.2, 0.3])
    assert list(shallow) == ["entropy/layers.0.act", "entropy/layers.1.act", "entropy/layers.2.act"]


@pytest.mark.parametrize("disable_tqdm", [True, False], ids=["PrinterCallback", "ProgressCallback"])
def test_lbe_trainer_logs_entropies_to_trackers_not_to_the_console_and_writes_no_files(tmp_path, capsys, disable_tqdm):
    args = _args(tmp_path, disable_tqdm=disable_tqdm)
    trainer = LBETrainer(model=_model(), args=args, train_dataset=_data(), lbe_config=BatchEntropyConfig())
    callbacks = [c for c in trainer.callback_handler.callbacks if isinstance(c, EntropyCallback)]
    assert len(callbacks) == 1 and trainer.callback_handler.callbacks[0] is callbacks[0]
    trainer.train()
    trainer.save_model()
    cb = callbacks[0]
    # Same numbers as the trainer's own record: one implementation of the measurement.
    assert [s for s, _ in cb.history] == [2, 4, 6]
    assert cb.history == trainer.entropy_history
    # The scalars reached the report_to backend (TensorBoard), one per layer for this 3-layer net ...
    assert {"train/entropy/layers.0.act", "train/entropy/layers.2.act"} <= _tb_tags(tmp_path)
    # ... but not the printed log lines (PrinterCallback or the tqdm bar's), which keep LBETrainer's summary keys.
    printed = [line for line in capsys.readouterr().out.splitlines() if "'task_loss'" in line]
    assert len(printed) == 3 and all("'entropy_min'" in line and "entropy/" not in line for line in printed)
    # No files beyond what Trainer writes unless asked (plot=True).
    assert not os.path.exists(os.path.join(tmp_path, PLOT_NAME))
    assert not os.path.exists(os.path.join(tmp_path, HISTORY_NAME))


def test_plot_true_writes_the_plot_and_history(tmp_path):
    cb = EntropyCallback(plot=True)
    trainer = LBETrainer(model=_model(), args=_args(tmp_path, report_to="none"), train_dataset=_data(), callbacks=[cb])
    trainer.train()
    assert trainer.callback_handler.callbacks[0] is cb
    assert os.path.getsize(os.path.join(tmp_path, PLOT_NAME)) > 5000
    saved = json.load(open(os.path.join(tmp_path, HISTORY_NAME)))
    assert saved["modules"] == ["layers.0.act", "layers.1.act", "layers.2.act"]
    assert [step for step, _ in saved["history"]] == [2, 4, 6]


def test_lbe_trainer_opt_out(tmp_path):
    trainer = LBETrainer(
        model=_model(), args=_args(tmp_path, report_to="none"), train_dataset=_data(), entropy_callback=False
    )
    assert not any(isinstance(c, EntropyCallback) for c in trainer.callback_handler.callbacks)


def test_plain_trainer_measures_with_own_hooks(tmp_path):
    model = _model(depth=14)
    cb = EntropyCallback(max_layers=4, num_groups=3, plot=True)
    trainer = Trainer(model=model, args=_args(tmp_path), train_dataset=_data())
    cb.attach(trainer)
    trainer.train()
    assert [s for s, _ in cb.history] == [2, 4, 6]
    assert all(len(v) == 14 for _, v in cb.history)
    # Hooks are gone after training and measured the model that trained: entropies changed between logs.
    assert not any(m._forward_hooks for m in model.modules())
    assert cb.history[0][1] != cb.history[-1][1]
    tags = _tb_tags(tmp_path)
    entropy_tags = {t for t in tags if "entropy/" in t}
    assert len(entropy_tags) == 5 + 2 + 3 and "train/entropy/q50" in entropy_tags
    assert os.path.isfile(os.path.join(tmp_path, PLOT_NAME))


def test_plain_trainer_entropies_match_a_direct_measurement(tmp_path):
    # One batch of 16 (batch entropy ignores sample order, so shuffling can't change it), lr 0: the logged
    # entropies must equal a direct measurement of that batch.
    data = _data(n=16)
    model = _model()
    from lbe_hf.collect import ActivationCollector, resolve_target_modules
    from lbe_hf.entropy import layer_entropies

    names = resolve_target_modules(model)
    col = ActivationCollector(model, names)
    batch = torch.stack([data[i]["pixel_values"] for i in range(16)])
    with torch.no_grad(), col.capture():
        model(pixel_values=batch)
    expected = layer_entropies(col.take())
    col.remove()
    cb = EntropyCallback()
    trainer = Trainer(
        model=model,
        args=_args(tmp_path, max_steps=1, logging_steps=1, learning_rate=0.0, report_to="none"),
        train_dataset=data,
        callbacks=[cb],
    )
    trainer.train()
    assert torch.allclose(torch.tensor(cb.history[0][1]), expected, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="entropy_constant"):
        EntropyCallback(entropy_constant="e")
    with pytest.raises(ValueError, match="entropies for"):
        summarize_entropies(["a", "b"], [0.1])
