"""The benchmark scripts really run (tiny settings), and the fast entropy path keeps autograd's gradients."""

import gc
import json
import mmap
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageClassification, TrainerCallback

from lbe_hf.entropy import PI_E, effective_rank, layer_entropies

# The benchmark code lives beside its scripts, not in the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "benchmarks"))
from bench_fnn import (  # noqa: E402
    AUGMENTED,
    AugmentingCollator,
    FNNRun,
    fnn_training_args,
    load_split,
    reset_peak_rss,
    window_peak_rss_mib,
)
from bench_report import budget_table, trainability_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _reference(acts):
    return torch.stack([0.5 * torch.log1p(PI_E * a.reshape(a.shape[0], -1).var(0)).mean() for a in acts])


def test_layer_entropies_match_autograd_with_shared_consumers():
    # Layers of different shapes share one scratch buffer; 2-D activations skip the reshape view; each activation
    # also feeds another op, so autograd accumulates our gradient with the other one.
    torch.manual_seed(0)
    w = torch.randn(6, requires_grad=True)
    x1, x2 = torch.randn(32, 6), torch.randn(8, 3, 6)

    def grads(entropy_fn):
        a1, a2 = torch.relu(x1 * w), torch.tanh(x2 * w)
        e = entropy_fn([a1, a2, a1[:5]])
        loss = (a1 * 3).sum() + a2.square().sum() + (e * torch.tensor([1.0, -2.0, 0.5])).sum()
        return e.detach(), torch.autograd.grad(loss, w)[0]

    e, g = grads(layer_entropies)
    e_ref, g_ref = grads(_reference)
    torch.testing.assert_close(e, e_ref)
    torch.testing.assert_close(g, g_ref)


def test_fnn_run_plain_vs_lbe_start_from_the_same_weights(tmp_path):
    plain = FNNRun("digits", depth=3, init="torch", seed=0, lr=1e-3, lbe=None, steps=4, batch_size=64)
    lbe = FNNRun("digits", depth=3, init="torch", seed=0, lr=1e-3, lbe={}, steps=4, batch_size=64)
    rp, rl = plain.execute(str(tmp_path / "p"), logging_steps=2), lbe.execute(str(tmp_path / "l"), logging_steps=2)
    # Same seed: identical probe entropies before the first step; then LBE's extra loss term changes training.
    assert rp["probe_entropy"][0] == rl["probe_entropy"][0]
    assert len(rp["probe_entropy"][0][1]) == 3 and rp["probe_entropy"][-1][0] == 4
    assert rl["alphas"] is not None and len(rl["alphas"]) == 3 and rp["alphas"] is None
    assert any("lbe_loss" in log for log in rl["log_history"])
    assert not any("lbe_loss" in log for log in rp["log_history"])
    assert 0.0 <= rp["test_accuracy"] <= 100.0
    # One effective rank and one constant-neuron fraction per layer, at the same steps as the entropies.
    for field in ("probe_effective_rank", "probe_constant_fraction"):
        assert [s for s, _ in rp[field]] == [s for s, _ in rp["probe_entropy"]]
        assert all(len(values) == 3 for _, values in rp[field])
    assert all(0.0 <= f <= 1.0 for _, values in rp["probe_constant_fraction"] for f in values)


class _KillAt(TrainerCallback):
    """Stands in for a kill: the training process dies at `step` (after the checkpoint before it was written)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"killed at step {self.step}")


def _budget_run(**kwargs):
    settings = dict(depth=3, init="torch", seed=0, lr=1e-3, lbe={}, batch_size=64, epochs=3, max_grad_norm=1.0)
    return FNNRun("digits", **{**settings, **kwargs})


def test_killed_run_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_one(tmp_path):
    common = dict(logging_steps=4, save_every=8, curve_every=4, log=lambda line: None)
    whole = _budget_run().execute(str(tmp_path / "whole"), **common)
    with pytest.raises(KeyboardInterrupt):
        _budget_run().execute(str(tmp_path / "killed"), **common, callbacks=[_KillAt(13)])
    assert sorted(p.name for p in (tmp_path / "killed").iterdir()) == ["checkpoint-8"]  # save_total_limit=1
    lines = []
    resumed = _budget_run().execute(str(tmp_path / "killed"), **{**common, "log": lines.append})
    assert resumed["resumed_from"] == 8 and whole["resumed_from"] is None
    assert any("resuming from" in line and "checkpoint-8" in line for line in lines)
    assert resumed["total_steps"] == whole["total_steps"] == 3 * 23  # 1437 digits / 64 = 23 steps per epoch
    # Same weights, alphas, losses and histories as the run that was never killed (steps 9-13 were redone).
    for field in ("test_accuracy", "train_accuracy", "final_loss", "alphas", "log_history", "test_curve"):
        assert resumed[field] == whole[field], field
    assert resumed["probe_entropy"] == whole["probe_entropy"]
    assert [s for s, _ in whole["test_curve"]] == [*range(4, 69, 4), 69]  # every 4 steps and the last one
    assert len(resumed["probe_entropy"]) == len(whole["probe_entropy"])


def test_run_keys_keep_the_600_step_sweep_and_name_every_new_setting():
    legacy = FNNRun("mnist", depth=30, init="torch", seed=1, lr=1e-3, lbe={"beta": 0.1})
    assert legacy.key == "mnist/torch/d30/s1/lr0.001/n600/lbe(beta=0.1)"  # the key the old results are stored under
    budget = FNNRun("mnist", depth=30, init="torch", seed=1, lr=1e-3, lbe=None, epochs=100, max_grad_norm=1.0)
    assert budget.key == "mnist/torch/d30/w256/s1/lr0.001/b512/e100/clip1/constant/wu0/plain"
    variants = [
        dict(max_grad_norm=0.0),
        dict(lr_scheduler="linear"),
        dict(warmup_ratio=0.1),
        dict(width=128),
        dict(residual=True),
        dict(epochs=None, steps=1600),
        dict(batch_size=256),
        dict(augment=True),
    ]
    keys = {
        FNNRun("mnist", 30, "torch", 1, 1e-3, None, **{"epochs": 100, "max_grad_norm": 1.0, **v}).key for v in variants
    }
    assert len(keys | {budget.key}) == len(variants) + 1
    assert budget.total_steps(8000) == 1600 and legacy.total_steps(8000) == 600


def test_augmenting_collator_moves_each_digit_its_own_way_within_the_pixel_range():
    train, _ = load_split("mnist")
    rows = [train[i] for i in range(64)]
    original = torch.stack([r["pixel_values"] for r in rows])
    collate = AugmentingCollator(*AUGMENTED["mnist"])
    torch.manual_seed(0)
    batch = collate(rows)
    torch.manual_seed(0)
    again = collate(rows)
    x = batch["pixel_values"]
    assert x.shape == original.shape and torch.equal(x, again["pixel_values"])  # torch's RNG: reproducible
    assert torch.equal(batch["labels"], torch.stack([r["labels"] for r in rows]))
    mean, std = AUGMENTED["mnist"]
    assert x.min() >= -mean / std - 1e-5 and x.max() <= (1 - mean) / std + 1e-5  # [0, 1] pixels, standardised
    changed = (x - original).abs().mean(1)
    assert changed.min() > 0.01  # every image moved...
    assert changed.std() > 0.01  # ...by its own transform, not one shared by the batch
    with pytest.raises(ValueError, match="augment needs"):
        FNNRun("digits", 3, "he", 0, 1e-3, None, steps=1, augment=True).execute("unused")


def test_fnn_training_args_pass_epochs_clipping_and_schedule():
    args = fnn_training_args("out", 1e-3, 600, 512, 0, 25, epochs=100, max_grad_norm=1.0, lr_scheduler="linear",
                             warmup_ratio=0.1, save_steps=150)  # fmt: skip
    assert (args.max_steps, args.num_train_epochs, args.max_grad_norm) == (-1, 100, 1.0)
    assert args.get_warmup_steps(1600) == 160 and args.lr_scheduler_type == "linear"
    assert (args.save_strategy, args.save_steps, args.save_total_limit) == ("steps", 150, 1)
    # A warm-up on the constant schedule warms up (transformers' "constant" schedule alone would ignore it).
    from torch import nn, optim
    from transformers import get_scheduler

    for schedule in ("constant", "linear"):
        warm = fnn_training_args("out", 1e-3, 600, 512, 0, 25, epochs=100, lr_scheduler=schedule, warmup_ratio=0.05)
        optimizer = optim.Adam(nn.Linear(2, 2).parameters(), lr=1e-3)
        scheduler = get_scheduler(warm.lr_scheduler_type, optimizer, warm.get_warmup_steps(1600), 1600)
        lrs = [scheduler.get_last_lr()[0]]
        for _ in range(80):
            optimizer.step()
            scheduler.step()
            lrs.append(scheduler.get_last_lr()[0])
        assert lrs[0] == 0.0 and lrs[40] == pytest.approx(5e-4) and lrs[80] == pytest.approx(1e-3), schedule
    old = fnn_training_args("out", 1e-3, 600, 512, 0, 25)  # what the 600-step sweep ran
    assert (old.max_steps, old.max_grad_norm, old.lr_scheduler_type, old.save_strategy) == (600, 0.0, "constant", "no")


def test_budget_table_gives_mean_and_standard_error_over_seeds():
    def run(seed, acc, lbe):
        return {**_budget_run(seed=seed, lbe=lbe).__dict__, "test_accuracy": acc, "median_step_s": 0.1,
                "test_curve": [[10, acc / 2], [20, acc]]}  # fmt: skip

    results = {i: run(s, a, {}) for i, (s, a) in enumerate([(0, 90.0), (1, 80.0), (2, 70.0)])}
    results["plain"] = run(0, 11.5, None)
    rows = budget_table(results).splitlines()
    assert len(rows) == 4 and "| plain | 1 | 11.5 |" in rows[2]
    # mean 80, sd 10, s.e. 10/sqrt(3) = 5.8; the last points' means 67.5 / 60 / 52.5: 60.0 ± 4.3; 50 % first
    # reached at step 20 by every seed.
    assert (
        "| LBE defaults | 3 | 80.0 ± 5.8 | 90.0 (s0) / 80.0 (s1) / 70.0 (s2) | 60.0 ± 4.3 | 90.0 / 80.0 / 70.0 "
        "| 20 (3/3) |" in rows[3]
    )
    assert "never (0/1)" in rows[2]


def test_targets_table_picks_the_best_setting_and_says_what_is_missing(tmp_path):
    from trainability_summary import reference_table, targets_table, tried_table

    def run(init, depth, seed, acc, lbe, **kw):
        settings = dict(dataset="mnist", depth=depth, init=init, seed=seed, lr=1e-3, lbe=lbe, epochs=100)
        record = FNNRun(**{**settings, **kw}).__dict__
        return {**record, "test_accuracy": acc, "test_curve": [[800, acc - 4], [1600, acc]]}

    rows = [run("torch", 30, s, a, {}) for s, a in enumerate((95.0, 91.0, 93.0))]  # mean 93, s.e. 1.2
    rows += [run("torch", 30, s, a, {"beta": 0.1}) for s, a in enumerate((99.0, 20.0, 30.0))]
    rows += [run("torch", 30, s, 11.5, None) for s in range(3)]
    rows += [run("torch", 50, s, a, {}) for s, a in enumerate((95.0, 60.0, 95.0))]  # mean 83.3, s.e. 11.7
    rows += [run("torch", 50, 0, 99.0, {}, residual=True)]  # the ceiling: not the method
    rows += [run("he", 10, s, a, lbe) for s in range(3) for a, lbe in ((96.0, None), (94.5, {}))]
    table = targets_table({str(i): r for i, r in enumerate(rows)})
    line = {row.split(" | ")[0][2:].split(":")[0]: row for row in table.splitlines()[2:]}
    d30, d50 = line["depth 30, PyTorch init"], line["depth 50, PyTorch init"]
    assert (
        "| 2 | LBE defaults (torch d30 w256; lr 0.001" in d30
        and "| 93.0 ± 1.2 | 91.0 ± 1.2 | 11.5 ± 0.0 | yes |" in d30
    )
    assert "| 1 | LBE defaults" in d50 and "| - | no (6.7 points short) |" in d50
    assert "| 0 | not run yet |" in line["He depth 100"]
    assert "| 0 | not run yet |" in line["depth 500, any init"]
    deep = targets_table({"a": run("torch", 500, 0, 48.8, {}, width=128), "b": run("he", 100, 0, 94.8, {})})
    assert "| 1 | LBE defaults (torch d500 w128; lr 0.001" in deep and "no (31.2 points short)" in deep
    assert "| yes on 1 seed (3 wanted); plain not run on this optimisation |" in deep  # He depth 100
    # Plain on the same optimisation must stay at chance: a lower lr that trains plain too is no rescue, and a
    # setting that meets the whole target wins over a higher LBE mean whose plain trains.
    low = dict(lr=1e-4)
    rows_100 = [run("he", 100, s, 93.0, {"alpha": 3.0}, **low) for s in range(3)] + [
        run("he", 100, 0, 92.0, None, **low)
    ]
    only_low = targets_table({str(i): r for i, r in enumerate(rows_100)})
    assert "| 93.0 ± 0.0 |" in only_low and "| no: plain trains too (92.0 % on the same optimisation) |" in only_low
    rows_100 += [run("he", 100, s, 88.0, {}) for s in range(3)] + [run("he", 100, 0, 11.5, None)]
    both = targets_table({str(i): r for i, r in enumerate(rows_100)})
    assert "| LBE defaults (he d100 w256; lr 0.001" in both and "| 88.0 ± 0.0 |" in both and "| 11.5 | yes |" in both
    assert "no (-1.5 points)" in line["He depth 10"]
    # What was tried: every setting on the net of each target not met on 3 seeds, best first; met targets left out.
    tried_rows = [run("torch", 500, 0, 48.8, {"alpha": 3.0}, width=128), run("he", 500, 0, 11.5, {})]
    tried_rows += [run("he", 100, s, 94.0, {}) for s in range(3)] + [run("he", 100, 0, 11.5, None)]
    tried_rows += [run("he", 200, 0, 89.0, {})]
    tried = tried_table({str(i): r for i, r in enumerate(tried_rows)}).splitlines()[2:]
    assert [row.split(" | ")[0][2:] for row in tried] == ["He depth 200: LBE >= 85 %; plain at chance"] + 2 * [
        "depth 500, any init: LBE >= 80 %"
    ]
    assert "| torch d500 w128 |" in tried[1] and "| 1 | 48.8 | 48.8 | never | - |" in tried[1]
    assert "| he d500 w256 |" in tried[2] and "| 11.5 | 11.5 | never |" in tried[2]
    assert "| 89.0 | 89.0 | 800 | - |" in tried[0]  # first reached 50 % at the curve's point of step 800
    # LBETrainer against the plain loop: seeds side by side, only on nets both were run on.
    trainer = {"a": {**run("he", 100, 0, 12.0, {}), "steps": 600}, "b": {**run("he", 100, 1, 40.0, {}), "steps": 600}}
    (tmp_path / "trainer.json").write_text(json.dumps(trainer))
    loop = dict(dataset="mnist", init="he", depth=100, lr=1e-3, steps=600, alpha=0.5, beta=0.5, plain=False)
    lines = [dict(loop, seed=s, test_accuracy=a, batches="replacement") for s, a in ((0, 42.0), (1, 30.0))]
    (tmp_path / "loop.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    compare = reference_table(tmp_path / "trainer.json", tmp_path / "loop.jsonl")
    assert "| LBETrainer | 2 | 26.0 ± 14.0 | 12.0 (s0) / 40.0 (s1) |" in compare
    assert "| loop, replacement batches | 2 | 36.0 ± 6.0 |" in compare
    assert reference_table(tmp_path / "trainer.json", tmp_path / "none.jsonl").count("\n") == 1  # header only


def test_alternatives_table_puts_inits_and_the_residual_net_side_by_side():
    from trainability_summary import alternatives_table

    def run(init, depth, seed, acc, lbe, **kw):
        settings = dict(dataset="mnist", depth=depth, init=init, seed=seed, lr=1e-3, lbe=lbe, epochs=100, **kw)
        return {**FNNRun(**settings).__dict__, "test_accuracy": acc}

    linear = dict(max_grad_norm=0.0, lr_scheduler="linear")
    rows = [run("he", 50, s, a, {}, **linear) for s, a in enumerate((90.0, 94.0))]
    rows += [run("he", 50, 0, 11.5, None, **linear), run("lsuv", 50, 0, 60.0, {}, **linear)]
    rows += [run("he", 50, 0, 97.0, None, residual=True, **linear)]
    rows += [run("he", 50, 0, 80.0, {"beta": 0.1}, **linear)]  # another LBE setting: not a column
    rows += [run("he", 100, 0, 50.0, {}), run("torch", 100, 0, 60.0, {})]  # no alternative run here: no row
    table = alternatives_table({str(i): r for i, r in enumerate(rows)}).splitlines()
    assert table[0].startswith("| data | net | optimisation | He plain | He LBE | orthogonal plain |")
    assert len(table) == 3
    cells = [c.strip() for c in table[2].split("|")[1:-1]]
    assert cells[:3] == ["mnist", "d50 w256", "lr 0.001, b 512, 100 ep, clip 0, linear"]
    assert cells[3:] == ["11.5 (n=1)", "92.0 ± 2.0 (n=2)", "-", "-", "-", "60.0 (n=1)", "97.0 (n=1)", "-"]


def test_effective_rank_counts_independent_directions_not_variance():
    g = torch.Generator().manual_seed(0)
    feature = torch.randn(512, 1, generator=g)
    copies = feature * torch.linspace(0.5, 3.0, 64)  # 64 neurons, each with its own variance, one direction
    assert effective_rank(copies) == pytest.approx(1.0, abs=1e-3)
    assert 50 < effective_rank(torch.randn(512, 64, generator=g)) <= 64  # isotropic: close to the width
    two = torch.cat([copies, torch.randn(512, 1, generator=g).expand(512, 64)], dim=1)
    assert 1.5 < effective_rank(two) < 2.5
    assert effective_rank(torch.ones(16, 8)) == 0.0  # no spread over the batch at all
    # Scale-free, down to a collapsed layer's 1e-17 deviations (a plain float32 SVD loses them).
    assert effective_rank(two * 1e-17) == pytest.approx(effective_rank(two), rel=1e-4)
    assert effective_rank(two.reshape(512, 2, 64)) == pytest.approx(effective_rank(two), rel=1e-4)


def test_trainability_script_appends_and_reports(tmp_path, capsys):
    results = tmp_path / "res.json"
    script = ROOT / "scripts/benchmarks/trainability.py"
    args = ["--datasets", "digits", "--depths", "2", "--steps", "3", "--batch_size", "32", "--results", str(results)]
    args += ["--lbe_settings", "plain", "beta=0.1", "--threads", str(torch.get_num_threads())]
    saved = tmp_path / "models"
    argv = [sys.executable, str(script), *args, "--save_models", str(saved)]
    subprocess.run(argv, check=True, capture_output=True, text=True, cwd=ROOT)
    runs = json.loads(results.read_text())
    assert sorted(r["lbe"] is None for r in runs.values()) == [False, True]
    assert any(r["lbe"] == {"beta": 0.1} for r in runs.values())
    # --save_models: each trained model in its own folder, the LBE one with its alphas, loadable as any model.
    folders = {p.name: p for p in saved.iterdir()}
    assert sorted(folders) == sorted(key.replace("/", "_") for key in runs)
    lbe_key = next(k for k, r in runs.items() if r["lbe"])
    assert (folders[lbe_key.replace("/", "_")] / "lbe_alphas.safetensors").is_file()
    reloaded = AutoModelForImageClassification.from_pretrained(folders[lbe_key.replace("/", "_")])
    assert reloaded.config.depth == 2
    main = runpy.run_path(str(script))["main"]
    main(args)
    assert capsys.readouterr().out.count("skip (done)") == 2  # reruns keep finished results
    main(["--report", "--results", str(results)])
    table = (tmp_path / "trainability.md").read_text()
    assert "LBE beta=0.1" in table and "| digits | torch | 2 |" in table
    assert (tmp_path / "accuracy_vs_depth.png").stat().st_size > 0
    assert trainability_table(runs).count("\n") == 3  # header, rule, two runs
    # An epoch budget with a checkpoint folder: the budget section comes first, with the command that reran it.
    budget = tmp_path / "budget.json"
    epochs = ["--datasets", "digits", "--depths", "2", "--epochs", "1", "--batch_size", "256", "--max_grad_norm", "0"]
    epochs += ["--lbe_settings", "plain", "--run_dir", str(tmp_path / "runs"), "--results", str(budget)]
    main(epochs)
    (key,) = json.loads(budget.read_text())
    assert key == "digits/torch/d2/w256/s0/lr0.001/b256/e1/clip0/constant/wu0/plain"
    assert list((tmp_path / "runs").iterdir()) == []  # a finished run's checkpoints are deleted
    main(["--report", "--results", str(results), "--budget_results", str(budget)])
    doc = (tmp_path / "trainability.md").read_text()
    assert doc.index("## Paper budget (epochs)") < doc.index("## Short budget (600 steps)")
    assert "| He depth 10: LBE within 1 point of plain | 0 | not run yet |" in doc  # the targets, from this file
    assert "against a plain PyTorch loop" not in doc  # no loop runs beside this file
    assert "| digits | torch d2 w256 | lr 0.001, b 256, 1 ep, clip 0, constant | plain | 1 |" in doc
    assert "--inits torch --depths 2 --width 256 --seeds 0 --lrs 0.001 --batch_size 256 --epochs 1" in doc
    assert (tmp_path / "results" / "trainability_budget_curves.png").stat().st_size > 0


def test_reference_loop_runs_both_arms_and_appends(tmp_path):
    main = runpy.run_path(str(ROOT / "scripts/benchmarks/reference_loop.py"))["main"]
    results = tmp_path / "ref.jsonl"
    common = ["--dataset", "digits", "--depth", "3", "--steps", "4", "--batch_size", "64", "--results", str(results)]
    main([*common, "--seeds", "0", "1"])
    main([*common, "--seeds", "0", "--plain"])
    main([*common, "--seeds", "0", "--batches", "replacement", "--max_grad_norm", "1"])
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["seed"], r["plain"]) for r in rows] == [(0, False), (1, False), (0, True), (0, False)]
    assert all(0.0 <= r["test_accuracy"] <= 100.0 for r in rows) and "seeds" not in rows[0]
    assert (rows[3]["batches"], rows[3]["max_grad_norm"]) == ("replacement", 1.0) and rows[0]["batches"] == "epoch"
    epochs = ["--dataset", "digits", "--depth", "2", "--epochs", "2", "--batch_size", "512", "--results", str(results)]
    main(epochs)
    last = json.loads(results.read_text().splitlines()[-1])
    assert (last["total_steps"], last["steps"]) == (6, None)  # 1437 digits: 3 batches per epoch
    main([*epochs, "--seeds", "0", "1"])  # a restarted queue: seed 0 is there, only seed 1 runs
    assert [json.loads(line)["seed"] for line in results.read_text().splitlines()][-2:] == [0, 1]
    assert len(results.read_text().splitlines()) == 6


def _current_rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def test_window_peak_rss_sees_a_new_allocation():
    gc.collect()  # objects of earlier tests freed now, not between the two readings below
    if not reset_peak_rss():
        return  # not Linux
    before = _current_rss_mib()
    # A fresh anonymous mapping, every page written: new resident memory for sure (a tensor could reuse heap
    # pages that earlier tests freed but the process still holds, and then RSS would not grow).
    block = mmap.mmap(-1, 64 * 2**20)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    assert window_peak_rss_mib() >= before + 60
    block.close()


def test_glue_benchmark_takes_auto_and_numbers_as_alpha_arms():
    parser = runpy.run_path(str(ROOT / "scripts/benchmarks/glue.py"))["make_parser"]()
    assert parser.parse_args(["--lbe_alpha", "0.5", "AUTO"]).lbe_alpha == ["0.5", "auto"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--lbe_alpha", "high"])


def test_auto_alpha_table_compares_auto_with_the_best_grid_value():
    from bench_report import auto_alpha_table

    def run(lbe, acc, seed=0):
        return {
            "dataset": "mnist",
            "lr": 1e-3,
            "init": "he",
            "depth": 30,
            "seed": seed,
            "lbe": lbe,
            "test_accuracy": acc,
        }

    results = dict(
        enumerate(
            [
                run(None, 95.0),
                run({}, 96.0),  # the defaults count as alpha 0.5
                run({"alpha": 1.0}, 97.0),
                run({"alpha": "auto"}, 96.5),
                run({"alpha": 1.0, "beta": 0.1}, 99.0),  # not an alpha-only setting: left out
                run({"alpha": 0.5}, 90.0, seed=1),  # no auto run for this seed: no row
            ]
        )
    )
    rows = auto_alpha_table(results).splitlines()
    assert len(rows) == 3
    assert rows[2] == "| he d30 | 0 | 95.0 | 96.5 | 96.0 | 97.0 | - | -0.5 (of 2) |"
    # With every alpha run for two seeds, the net's seed means decide (here seed 1 makes auto the best).
    grid = [run({"alpha": a}, acc, seed=s) for s, a, acc in [(0, 2.0, 50.0), (1, 1.0, 80.0), (1, 2.0, 70.0)]]
    results.update(enumerate([*grid, run({"alpha": "auto"}, 90.0, seed=1)], start=len(results)))
    rows = auto_alpha_table(results).splitlines()
    assert "| he d30 | mean of 2 | - | 93.2 | 93.0 | 88.5 | 60.0 | +0.2 (of 3) |" in rows
    # A grid value some seeds lack is left out of that net's means.
    del results[len(results) - 4]  # seed 0's alpha 2.0
    rows = auto_alpha_table(results).splitlines()
    assert "| he d30 | mean of 2 | - | 93.2 | 93.0 | 88.5 | - | +0.2 (of 2) |" in rows
