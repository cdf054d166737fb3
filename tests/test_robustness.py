"""Robustness guarantees of LBETrainer / LBERegularizer (issue 6); docs/robustness.md maps each to its test.

Tiny random models (BERT hidden 32, 2 layers; FNN width 16) keep the file fast; the kill-and-resume test runs a
real subprocess and kills it with SIGKILL. The 2-process DDP runs are in tests/test_distributed.py.
"""

from __future__ import annotations

import ast
import gc
import importlib.util
import inspect
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import helpers
import pytest
import torch
from safetensors.torch import load_file
from transformers import BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

import lbe_hf
from lbe_hf import BatchEntropyConfig, LBERegularizer, LBETrainer, batch_entropy, layer_entropies, lbe_loss
from lbe_hf.checkpoint import COMPLETE_MARKER, get_last_complete_checkpoint
from lbe_hf.models import FNNConfig, FNNForImageClassification
from lbe_hf.tasks.data import TensorDictDataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SCRIPTS = Path(__file__).parent / "scripts"
BERT_TARGET = "bert.encoder.layer.0.output.dense"
# The end-of-training entropy plot (lbe_hf.callbacks) costs seconds per run here; the memory test keeps it on.
FAST = {"entropy_callback": False} if "entropy_callback" in inspect.signature(LBETrainer.__init__).parameters else {}


# ---- tiny real models and data ----------------------------------------------------------------------------


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    return helpers.tiny_bert(seed=seed, intermediate_size=64)  # dropout off: checkpointed runs compare exactly


def token_rows(n: int = 8, seq: int = 8, labels: bool = True) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 64, (n, seq), generator=g)
    rows = [{"input_ids": ids[i], "attention_mask": torch.ones(seq, dtype=torch.long)} for i in range(n)]
    if labels:
        for i, row in enumerate(rows):
            row["labels"] = torch.tensor(i % 2)
    return rows


def tiny_fnn(seed: int = 0, depth: int = 3) -> FNNForImageClassification:
    torch.manual_seed(seed)
    return FNNForImageClassification(FNNConfig(input_dim=8, depth=depth, width=16, num_labels=3))


def fnn_data(n: int = 32) -> TensorDictDataset:
    g = torch.Generator().manual_seed(2)
    return TensorDictDataset(torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g))


def targs(tmp_path, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    values.update(overrides)
    return TrainingArguments(**values)


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def all_finite(model: torch.nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


class PoisonCollator:
    """Stacks rows; on the batches numbered in `nan_calls` puts a NaN into the first sample's input."""

    def __init__(self, nan_calls: tuple[int, ...] = ()):
        self.nan_calls = nan_calls
        self.calls = 0

    def __call__(self, rows):
        self.calls += 1
        batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
        if self.calls in self.nan_calls:
            batch["pixel_values"][0, 0] = float("nan")
        return batch


# ---- kill and resume, complete checkpoints ---------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_restores_alphas_optimizer_and_step(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, str(SCRIPTS / "train_fnn_checkpoints.py"), "--output_dir", str(out)]
    proc = subprocess.Popen(cmd + ["--step_sleep", "0.02"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        # Kill as soon as a checkpoint folder beyond the 2nd complete one appears: often while it is being written.
        while time.time() < deadline and proc.poll() is None:
            done = get_last_complete_checkpoint(out)
            folders = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])) if out.exists() else []
            if done and int(Path(done).name.split("-")[1]) >= 4 and folders and str(folders[-1]) != done:
                break
            time.sleep(0.002)
        assert proc.poll() is None, (
            "the training process ended before it could be killed: " + proc.stderr.read().decode()
        )
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    saved = Path(get_last_complete_checkpoint(out))
    newest = get_last_checkpoint(str(out))
    if newest != str(saved):  # the kill cut a save short (usual): transformers' helper would resume from it
        assert not (Path(newest) / COMPLETE_MARKER).exists()
    # A checkpoint cut short further along (higher number, no completion marker) must not be picked either.
    partial = out / "checkpoint-9999"
    partial.mkdir()
    (partial / "config.json").write_text("{")
    (partial / "lbe_alphas.safetensors").write_bytes(b"\x00" * 10)
    assert get_last_complete_checkpoint(out) == str(saved)
    step = int(saved.name.split("-")[1])
    assert (saved / COMPLETE_MARKER).is_file()

    dump = tmp_path / "restored.pt"
    spec = importlib.util.spec_from_file_location("train_fnn_checkpoints", SCRIPTS / "train_fnn_checkpoints.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--output_dir", str(out), "--resume", "--max_steps", str(step + 2), "--dump", str(dump)])
    assert json.loads((out / f"checkpoint-{step + 2}" / "trainer_state.json").read_text())["global_step"] == step + 2

    restored = torch.load(dump, weights_only=True)
    assert restored["global_step"] == step == json.loads((saved / "trainer_state.json").read_text())["global_step"]
    assert torch.equal(restored["alphas"], load_file(saved / "lbe_alphas.safetensors")["alpha"])
    assert not torch.equal(restored["alphas"], torch.full_like(restored["alphas"], 0.5)), "alphas never trained"
    weights = load_file(saved / "model.safetensors")
    assert all(torch.equal(restored["weights"][k], v) for k, v in weights.items())
    expected = torch.load(saved / "optimizer.pt", weights_only=True)
    assert restored["optimizer"]["state"].keys() == expected["state"].keys()
    for key, state in expected["state"].items():
        for name, value in state.items():
            assert torch.equal(restored["optimizer"]["state"][key][name], value), (key, name)
    # The resumed run's own checkpoint is complete (the marker is written last); the cut-short one is still skipped.
    assert get_last_complete_checkpoint(out) == str(out / f"checkpoint-{step + 2}")


def test_incomplete_checkpoints_are_skipped_and_refused(tmp_path):
    out = tmp_path / "out"
    trainer = LBETrainer(
        **FAST,
        model=tiny_fnn(),
        args=targs(tmp_path, max_steps=2, save_steps=1, save_strategy="steps"),
        train_dataset=fnn_data(),
    )
    trainer.train()
    assert get_last_complete_checkpoint(out) == str(out / "checkpoint-2")
    # A save killed before its marker: everything but the marker is there.
    (out / "checkpoint-2" / COMPLETE_MARKER).unlink()
    assert get_last_complete_checkpoint(out) == str(out / "checkpoint-1")
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    # A plain Trainer's folder (no LBE files) counts as complete once its last file, trainer_state.json, parses.
    plain = out / "checkpoint-7"
    plain.mkdir()
    (plain / "trainer_state.json").write_text('{"global_step": 7')
    assert get_last_complete_checkpoint(out) == str(out / "checkpoint-1")
    (plain / "trainer_state.json").write_text('{"global_step": 7}')
    assert get_last_complete_checkpoint(out) == str(plain)
    assert get_last_complete_checkpoint(tmp_path / "missing") is None


# ---- gradient checkpointing -------------------------------------------------------------------------------


def _one_sgd_step(tmp_path, checkpointing: dict | None, alias: str = "activation"):
    model = tiny_bert()
    calls = []
    dict(model.named_modules())[BERT_TARGET].register_forward_hook(lambda *a: calls.append(torch.is_grad_enabled()))
    extra = (
        {}
        if checkpointing is None
        else {f"{alias}_checkpointing": True, f"{alias}_checkpointing_kwargs": checkpointing}
    )
    args = targs(tmp_path, max_steps=1, optim="sgd", learning_rate=1.0, **extra)
    trainer = LBETrainer(**FAST, model=model, args=args, train_dataset=token_rows(4))
    before = params(model)  # after LBETrainer attached the alphas
    trainer.train()
    grads = {n: before[n] - p.detach() for n, p in model.named_parameters()}  # SGD, lr 1: the gradient
    log = trainer.state.log_history[0]
    return grads, log, calls, model


@pytest.fixture(scope="module")
def no_checkpointing_step(tmp_path_factory):
    return _one_sgd_step(tmp_path_factory.mktemp("ref"), None)


# "gradient" is transformers 5.x's deprecated alias of activation_checkpointing*, still used by many scripts.
@pytest.mark.parametrize(("use_reentrant", "alias"), [(False, "activation"), (True, "activation"), (True, "gradient")])
def test_gradient_checkpointing_gives_same_lbe_loss_and_gradients(
    tmp_path, no_checkpointing_step, use_reentrant, alias
):
    ref_grads, ref_log, ref_calls, _ = no_checkpointing_step
    grads, log, calls, model = _one_sgd_step(tmp_path, {"use_reentrant": use_reentrant}, alias)
    assert model.is_gradient_checkpointing
    assert len(ref_calls) == 1 and len(calls) == 2, "checkpointing should recompute the hooked module in backward"
    assert log["lbe_loss"] == pytest.approx(ref_log["lbe_loss"], rel=1e-6) and log["lbe_loss"] > 0
    assert log["loss"] == pytest.approx(ref_log["loss"], rel=1e-6)
    assert ref_grads["bert.encoder.layer.0.output.dense.weight"].abs().sum() > 0
    assert grads["lbe_alphas.alpha"].abs().sum() > 0
    for name, ref in ref_grads.items():
        torch.testing.assert_close(grads[name], ref, rtol=1e-5, atol=1e-7, msg=name)


def test_recomputation_inside_capture_stores_nothing():
    # Accelerate-script pattern: backward inside the capture block, so the recomputed modules run while capturing.
    batch = {k: torch.stack([r[k] for r in token_rows(4)]) for k in token_rows(4)[0]}
    grads = []
    for checkpointing in (False, True):
        model = tiny_bert()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        reg = LBERegularizer(model, BatchEntropyConfig())
        runs = []
        dict(model.named_modules())[BERT_TARGET].register_forward_hook(lambda *a, runs=runs: runs.append(1))
        with reg.capture():
            model(**batch).loss.backward()
            assert reg.collector.activations == {}, "recomputed activations were captured and kept"
        assert len(runs) == (2 if checkpointing else 1)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, ref in grads[0].items():
        torch.testing.assert_close(grads[1][name], ref, rtol=1e-5, atol=1e-7, msg=name)


def test_reentrant_checkpointing_outside_the_trainer_is_refused():
    model = tiny_bert()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.train()
    reg = LBERegularizer(model, BatchEntropyConfig())
    batch = {k: torch.stack([r[k] for r in token_rows(4)]) for k in token_rows(4)[0]}
    with pytest.raises(RuntimeError, match="use_reentrant"):
        with reg.capture():
            model(**batch)


# ---- mixed precision and torch.compile ---------------------------------------------------------------------


def test_bf16_autocast_entropy_in_float32_and_finite_training(tmp_path):
    model = tiny_bert()
    dtypes = []
    dict(model.named_modules())[BERT_TARGET].register_forward_hook(lambda m, a, o: dtypes.append(o.dtype))
    trainer = LBETrainer(**FAST, model=model, args=targs(tmp_path, bf16=True), train_dataset=token_rows(16))
    trainer.train()
    assert torch.bfloat16 in dtypes, "autocast did not run: the test would prove nothing"
    assert trainer.lbe.last_entropies.dtype == torch.float32
    logs = [h for h in trainer.state.log_history if "lbe_loss" in h]
    assert len(logs) == 3 and all(torch.isfinite(torch.tensor([h["loss"], h["lbe_loss"]])).all() for h in logs)
    assert all_finite(model) and not torch.equal(trainer.alphas, torch.full_like(trainer.alphas, 0.5))


def test_torch_compile_keeps_the_hooks(tmp_path):
    runs = {}
    for compiled in (False, True):
        extra = {"torch_compile": True, "torch_compile_backend": "aot_eager"} if compiled else {}
        extra["max_steps"] = 2
        trainer = LBETrainer(
            **FAST, model=tiny_fnn(), args=targs(tmp_path / str(compiled), **extra), train_dataset=fnn_data()
        )
        trainer.train()
        runs[compiled] = (trainer, [h["lbe_loss"] for h in trainer.state.log_history if "lbe_loss" in h])
    assert hasattr(runs[True][0].model_wrapped, "_orig_mod"), "the model was not compiled"
    assert len(runs[True][1]) == 2 and runs[True][1] == pytest.approx(runs[False][1], rel=1e-5)
    torch.testing.assert_close(runs[True][0].alphas, runs[False][0].alphas)


def test_hooks_on_an_already_compiled_model_are_refused():
    compiled = torch.compile(tiny_fnn(), backend="aot_eager")
    with pytest.raises(ValueError, match="uncompiled model"):
        LBERegularizer(compiled, BatchEntropyConfig())


# ---- numerical faults ------------------------------------------------------------------------------------


def test_nan_activation_is_skipped_not_spread(tmp_path):
    # Contrast: a plain Trainer turns the weights NaN on this data, whatever logging_nan_inf_filter shows.
    plain = tiny_fnn()
    Trainer(
        model=plain, args=targs(tmp_path / "plain"), train_dataset=fnn_data(), data_collator=PoisonCollator((2,))
    ).train()
    assert not all_finite(plain)

    model = tiny_fnn()
    trainer = LBETrainer(
        **FAST, model=model, args=targs(tmp_path / "lbe"), train_dataset=fnn_data(), data_collator=PoisonCollator((2,))
    )
    with pytest.warns(UserWarning, match="non-finite LBE term"):
        trainer.train()
    logs = [h for h in trainer.state.log_history if "lbe_skipped" in h]
    assert [h["lbe_skipped"] for h in logs] == [0, 1, 0]
    assert [h["nonfinite_loss_skipped"] for h in logs] == [0, 1, 0]
    assert all_finite(model) and torch.isfinite(trainer.alphas).all()


@pytest.mark.parametrize("where", ["activation", "task_loss"])
def test_nonfinite_with_on_nonfinite_raise_stops_the_run(tmp_path, where):
    model = tiny_fnn()
    kwargs = {"data_collator": PoisonCollator((2,))} if where == "activation" else {}
    if where == "task_loss":
        calls = []

        def loss_func(outputs, labels, num_items_in_batch=None):
            calls.append(1)
            loss = torch.nn.functional.cross_entropy(outputs.logits, labels)
            return loss * float("inf") if len(calls) == 2 else loss

        kwargs["compute_loss_func"] = loss_func
    config = BatchEntropyConfig(on_nonfinite="raise")
    trainer = LBETrainer(
        **FAST, model=model, args=targs(tmp_path), train_dataset=fnn_data(), lbe_config=config, **kwargs
    )
    with pytest.raises(FloatingPointError, match="LBE term" if where == "activation" else "task loss"):
        trainer.train()
    assert trainer.state.global_step == 1 and all_finite(model)


def test_nonfinite_task_loss_is_skipped(tmp_path):
    calls = []

    def loss_func(outputs, labels, num_items_in_batch=None):
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(outputs.logits, labels)
        return loss * float("inf") if len(calls) == 2 else loss

    model = tiny_fnn()
    trainer = LBETrainer(
        **FAST, model=model, args=targs(tmp_path), train_dataset=fnn_data(), compute_loss_func=loss_func
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "lbe_skipped" in h]
    assert [h["nonfinite_loss_skipped"] for h in logs] == [0, 1, 0]
    assert [h["lbe_skipped"] for h in logs] == [0, 0, 0]  # the activations were fine: the LBE term was computed
    assert all_finite(model) and torch.isfinite(trainer.alphas).all()


def test_constant_activations_give_zero_entropy_and_finite_loss():
    model = tiny_fnn()
    model.train()
    reg = LBERegularizer(model, BatchEntropyConfig())
    x = torch.randn(1, 8).expand(8, 8).contiguous()  # eight identical samples: every layer output is constant
    with reg.capture():
        loss = model(pixel_values=x, labels=torch.zeros(8, dtype=torch.long)).loss
    loss.backward()
    assert reg.last_entropies.abs().max() < 1e-6
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_near_constant_activations_get_a_finite_gradient_that_raises_entropy():
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 16)
    x = torch.randn(1, 8) + 1e-4 * torch.randn(32, 8)  # the paper's collapsed case: almost no spread over the batch
    alphas = torch.full((1,), 0.5)
    before = batch_entropy(layer(x)).item()
    loss = lbe_loss(layer_entropies([layer(x)]), alphas, alpha_min=0.2, beta=0.5)
    loss.backward()
    assert before < 1e-3 and torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0
    with torch.no_grad():
        layer.weight -= 10.0 * layer.weight.grad
    assert batch_entropy(layer(x)).item() > before


# ---- bad input: one clear error each, before any weight changes -------------------------------------------


@pytest.mark.parametrize(
    ("config", "match"),
    [({"beta": -0.1}, "beta must be >= 0"), ({"alpha_min": 0.0}, "alpha_min must be > 0"), ({"alpha_min": -1}, "> 0")],
)
def test_bad_config_values(config, match):
    with pytest.raises(ValueError, match=match):
        BatchEntropyConfig(**config)


def test_batch_size_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match="per_device_train_batch_size=1"):
        LBETrainer(
            **FAST, model=tiny_fnn(), args=targs(tmp_path, per_device_train_batch_size=1), train_dataset=fnn_data()
        )


def test_target_matching_nothing_is_refused(tmp_path):
    config = BatchEntropyConfig(target_modules=["no_such_module"])
    with pytest.raises(ValueError, match="matches no module.*layers.0.linear"):
        LBETrainer(**FAST, model=tiny_fnn(), args=targs(tmp_path), train_dataset=fnn_data(), lbe_config=config)


def test_target_with_non_tensor_output_fails_before_any_update(tmp_path):
    model = tiny_bert()
    before = params(model)
    config = BatchEntropyConfig(target_modules=["bert.encoder"])  # returns a ModelOutput, not a tensor or tuple
    trainer = LBETrainer(**FAST, model=model, args=targs(tmp_path), train_dataset=token_rows(8), lbe_config=config)
    with pytest.raises(TypeError, match="returned BaseModelOutput.*, not a tensor"):
        trainer.train()
    assert trainer.state.global_step == 0
    assert all(torch.equal(p, model.get_parameter(n)) for n, p in before.items())


def test_model_without_loss_and_no_labels_fails_before_any_update(tmp_path):
    model = tiny_bert()
    before = params(model)
    trainer = LBETrainer(**FAST, model=model, args=targs(tmp_path), train_dataset=token_rows(8, labels=False))
    with pytest.raises(ValueError, match="did not return a loss"):
        trainer.train()
    assert all(torch.equal(p, model.get_parameter(n)) for n, p in before.items())


def test_checkpoint_with_another_alpha_count_is_refused(tmp_path):
    args = targs(tmp_path, max_steps=1, save_steps=1, save_strategy="steps")
    LBETrainer(**FAST, model=tiny_fnn(), args=args, train_dataset=fnn_data()).train()
    fewer = BatchEntropyConfig(exclude_modules=["layers.2.act"])  # 2 alphas, the checkpoint has 3
    trainer = LBETrainer(
        **FAST, model=tiny_fnn(), args=targs(tmp_path, max_steps=2), train_dataset=fnn_data(), lbe_config=fewer
    )
    with pytest.raises(ValueError, match="3 alphas but this model regularizes 2"):
        trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == 0


# ---- memory ----------------------------------------------------------------------------------------------


class ReleasedEachStep(TrainerCallback):
    """Records a weakref to every captured activation; at each step end all of them must be gone (no gc run)."""

    def __init__(self, module: torch.nn.Module):
        self.refs: list[weakref.ref] = []
        self.alive_at_step_end: list[int] = []
        module.register_forward_hook(lambda m, a, o: self.refs.append(weakref.ref(o)))

    def on_step_end(self, args, state, control, **kwargs):
        self.alive_at_step_end.append(sum(r() is not None for r in self.refs))


def test_no_activation_survives_a_step_and_trainer_removal_releases_hooks(tmp_path):
    model = tiny_fnn()
    watch = ReleasedEachStep(model.layers[1].act)
    hooks_before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    trainer = LBETrainer(
        **FAST,
        model=model,
        args=targs(tmp_path),
        train_dataset=fnn_data(),
        eval_dataset=fnn_data(8),
        callbacks=[watch],
    )
    trainer.train()
    assert len(watch.refs) == 3 and watch.alive_at_step_end == [0, 0, 0]
    assert trainer.lbe.collector.activations == {} and trainer.lbe.pending == []

    # After train(): evaluate, predict and a second train() still work; eval_loss is the plain task loss.
    alphas = trainer.alphas
    eval_loss = trainer.evaluate()["eval_loss"]
    model.eval()
    data = fnn_data(8)
    with torch.no_grad():
        assert eval_loss == pytest.approx(model(data.pixel_values, data.labels).loss.item(), rel=1e-5)
    assert trainer.predict(data).predictions.shape == (8, 3)
    trainer.args.max_steps = 2
    trainer.train(resume_from_checkpoint=None)
    assert not torch.equal(trainer.alphas, alphas)

    reg = weakref.ref(trainer.lbe)
    del trainer
    gc.collect()
    assert reg() is None
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks_before
    assert isinstance(model.lbe_alphas, lbe_hf.LBEAlphas)  # the trained alphas stay with the model


def test_remove_lbe_keeps_evaluation_and_refuses_training(tmp_path):
    model = tiny_fnn()
    trainer = LBETrainer(**FAST, model=model, args=targs(tmp_path), train_dataset=fnn_data(), eval_dataset=fnn_data(8))
    trainer.remove_lbe()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert "eval_loss" in trainer.evaluate()
    with pytest.raises(RuntimeError, match="remove_lbe"):
        trainer.train()


# ---- loading files: no code execution --------------------------------------------------------------------


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('LBE_PWNED_FILE', '/nonexistent/x')}",))


def test_alpha_files_are_loaded_without_running_code(tmp_path, monkeypatch):
    pwned = tmp_path / "pwned"
    monkeypatch.setenv("LBE_PWNED_FILE", str(pwned))
    reg = LBERegularizer(tiny_fnn(), BatchEntropyConfig())
    reg.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "lbe_alphas.safetensors").write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(Exception):  # noqa: B017 - safetensors' own error type; what matters is nothing ran
        reg.load_pretrained(tmp_path / "ckpt")
    assert not pwned.exists()
    (tmp_path / "ckpt" / "lbe_config.json").write_text('{"alpha": 0.5, "__class__": "os.system"}')
    with pytest.raises(ValueError, match="unknown fields"):
        BatchEntropyConfig.from_pretrained(tmp_path / "ckpt")


def _calls(tree: ast.AST):
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def test_package_never_enables_remote_code_or_unsafe_loading():
    offenders = []
    for path in Path(lbe_hf.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("pickle", "dill", "cloudpickle") for n in names):
                    offenders.append(f"{path.name}: imports pickle")
        for call in _calls(tree):
            for kw in call.keywords:
                if kw.arg == "trust_remote_code" and not (isinstance(kw.value, ast.Constant) and not kw.value.value):
                    offenders.append(f"{path.name}:{call.lineno}: trust_remote_code={ast.unparse(kw.value)}")
            if ast.unparse(call.func).endswith("torch.load"):
                safe = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in call.keywords)
                if not safe:
                    offenders.append(f"{path.name}:{call.lineno}: torch.load without weights_only=True")
    assert offenders == []
