"""scripts/benchmarks/glue.py: statistics, grid selection, resume, report and argument checks (in-process, hand-made
JSON records), and one tiny real run through the script."""

import json
import math
import os
import runpy
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLUE = runpy.run_path(str(ROOT / "scripts/benchmarks/glue.py"))
REPORT = GLUE["glue_report"]
DATA = GLUE["shared_glue_root"]()
T_975_2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2)


def _args(tmp_path: Path, *words: str):
    args = GLUE["parse_args"](["--results", str(tmp_path / "runs.jsonl"), "--run_dir", str(tmp_path / "runs"), *words])
    args.argv, args.model_path, args.model_label = list(words), "unused", GLUE["MODEL_NAME"]
    return args


def _record(args, task, arm, alpha, beta, seed, role, main, step_s=1.0, **metrics):
    constants = GLUE["constant_scores"](DATA / "glue" / task / "validation.jsonl")
    key = REPORT.MAIN_METRIC[task]
    spec = GLUE["run_spec"](args, task, arm, alpha, beta, seed, role)
    return dict(
        spec,
        metrics={key: main / 100, **metrics},
        constant_scores=constants,
        eval_curve=[{"step": 10, f"eval_{key}": main / 200}, {"step": 20, f"eval_{key}": main / 100}],
        wall_s=120.0,
        median_step_s=step_s,
        load_start=[1.0, 1.0, 1.0],
        load_end=[2.0, 1.0, 1.0],
        device="cpu",
        benchmark_command="HF_HUB_OFFLINE=1 python scripts/benchmarks/glue.py --tasks rte mrpc",
    )


def _write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_t_interval_and_paired_differences():
    stats = REPORT.t_interval([1.0, 2.0, 3.0])
    se = 1 / math.sqrt(3)
    assert stats["n"] == 3 and stats["mean"] == pytest.approx(2.0) and stats["se"] == pytest.approx(se)
    assert (stats["lo"], stats["hi"]) == pytest.approx((2 - T_975_2 * se, 2 + T_975_2 * se))
    assert REPORT.t_interval([5.0])["lo"] is None  # one seed: no interval
    # Only seeds both arms ran are paired; differences are arm minus reference.
    seeds, diffs, paired = REPORT.paired_differences({1: 60.0, 2: 62.0, 3: 65.0, 4: 70.0}, {1: 59.0, 2: 60.0, 3: 62.0})
    assert seeds == [1, 2, 3] and diffs == [1.0, 2.0, 3.0] and paired["lo"] == pytest.approx(stats["lo"])


def test_constant_scores_are_the_majority_class_of_the_validation_rows():
    rte = GLUE["constant_scores"](DATA / "glue/rte/validation.jsonl")
    mrpc = GLUE["constant_scores"](DATA / "glue/mrpc/validation.jsonl")
    assert rte["accuracy"] == pytest.approx(146 / 277) and mrpc["accuracy"] == pytest.approx(279 / 408)
    assert mrpc["f1"] == pytest.approx(2 * 279 / (2 * 279 + 129)) and rte["matthews_correlation"] == 0.0


def test_report_pairs_by_seed_flags_the_majority_class_and_names_the_choice(tmp_path):
    args = _args(tmp_path, "--tasks", "rte", "mrpc")
    records = []
    # Selection on seed 0: alpha 0.5, beta 0.005 wins RTE.
    for (alpha, beta), acc in {(0.2, 0.005): 60.0, (0.2, 0.05): 61.0, (0.5, 0.005): 63.0, (0.5, 0.05): 58.0}.items():
        records.append(_record(args, "rte", "lbe", alpha, beta, 0, "select", acc))
    for seed, base, lbe in ((1, 60.0, 61.0), (2, 62.0, 64.0), (3, 65.0, 68.0)):
        records.append(_record(args, "rte", "baseline", None, 0.0, seed, "compare", base, step_s=2.0))
        records.append(_record(args, "rte", "lbe", 0.5, 0.005, seed, "compare", lbe, step_s=2.0 * (1 + seed / 100)))
        # MRPC: both arms at the majority class (68.4% accuracy).
        for arm, alpha, beta in (("baseline", None, 0.0), ("lbe", 0.5, 0.005)):
            records.append(_record(args, "mrpc", arm, alpha, beta, seed, "compare", 100 * 279 / 408, f1=0.812))
    for r in records:
        r["eval_rows"] = 277 if r["task"] == "rte" else 408
    _write(tmp_path / "runs.jsonl", records)
    report = tmp_path / "glue_results.md"
    main = GLUE["main"]
    assert main(["--report", "--results", str(tmp_path / "runs.jsonl"), "--report_path", str(report),
                 "--short_budget_results", "", "--auto_alpha_report", ""]) == 0  # fmt: skip
    text = report.read_text()
    rte = text[text.index("### RTE") : text.index("### MRPC")]
    mrpc = text[text.index("### MRPC") :]
    assert "chosen alpha 0.5, beta 0.005" in rte
    assert "differ by 5.0 points, 14 of the 277 validation examples" in rte  # 63.0 - 58.0: 13.85 rows
    # Paired differences +1, +2, +3: mean +2.0, 95% t-interval 2 -/+ 4.303 / sqrt(3) = [-0.5, +4.5].
    row = next(line for line in rte.splitlines() if line.startswith("| accuracy | LBE (alpha 0.5, beta 0.005) - "))
    assert "| 3 | +2.0 | [-0.5, +4.5] | +1.0, +2.0, +3.0 |" in row
    assert "| 1.020 (3) |" in row  # median over seeds of 1.01, 1.02, 1.03
    assert "| -0.08 |" in row and "the interval contains 0" in row and "inside" in row
    assert "| accuracy | baseline (beta 0) | 3 | 62.3 |" in rte and "- seed 1: 10: 30.0, 20: 60.0" in rte
    assert "uninformative" in mrpc and "not 'no difference'" in mrpc and "contains 0" not in mrpc
    # The paper's one MRPC delta is set beside accuracy, and the report says so; RTE has one metric to set it by.
    assert "beside the main metric (accuracy, the metric the grid selects on):" in mrpc
    assert "beside the main metric:" in rte
    f1_row = next(line for line in mrpc.splitlines() if line.startswith("| f1 | LBE (alpha 0.5, beta 0.005) - "))
    assert "| 0.55 |" not in f1_row and "| +0.55 |" not in f1_row
    # The majority-class footnote only where a run is starred: MRPC's, not RTE's (all its runs learn).
    footnote = "does not beat the majority class by 1 point"
    assert footnote in mrpc and "68.4*" in mrpc and footnote not in rte and "| 60.0, 62.0, 65.0 |" in rte
    # The summary at the top: one row per task and metric, the same paired numbers, the paper beside the main one.
    summary = text[text.index("## Summary beside the paper's Table 4") : text.index("## The campaign's runs")]
    rte_row = next(line for line in summary.splitlines() if line.startswith("| RTE |"))
    assert "| accuracy | 3 | 62.3 | 64.3 (alpha 0.5, beta 0.005) | +2.0 [-0.5, +4.5] | - | -0.08 |" in rte_row
    mrpc_rows = [line for line in summary.splitlines() if line.startswith("| MRPC |")]
    assert [row.split(" | ")[2] for row in mrpc_rows] == ["f1", "accuracy"]
    assert all("uninformative" in row for row in mrpc_rows) and "| +0.55 |" in mrpc_rows[1]
    assert "HF_HUB_OFFLINE=1 python scripts/benchmarks/glue.py --tasks rte mrpc" in text
    assert not any(p in text for p in ("/work/", "/root/", "/tmp/", str(tmp_path)))


def test_conclusion_says_better_or_worse_when_the_interval_excludes_zero():
    better = REPORT.conclusion({"lo": 0.4, "hi": 2.0, "n": 3}, 1.07, True, 50.0, 0.0)
    worse = REPORT.conclusion({"lo": -3.0, "hi": -1.0, "n": 3}, 0.55, True, 75.0, 68.4)
    same = REPORT.conclusion({"lo": 0.0, "hi": 0.0, "n": 3}, -0.08, True, 56.4, 52.7)
    assert "on every seed" in same and "outside" in same and "contains 0" not in same
    assert better.startswith("the arm is better, by 0.4 to 2.0") and "inside" in better
    assert worse.startswith("the arm is worse, by 1.0 to 3.0") and "outside" in worse


def test_campaign_skips_finished_runs_and_compares_at_the_selected_point(tmp_path):
    args = _args(tmp_path, "--tasks", "rte", "--seeds", "1", "2", "--arms", "baseline", "lbe", "auto")
    grid = {(0.2, 0.005): 55.0, (0.2, 0.05): 57.0, (0.5, 0.005): 54.0, (0.5, 0.05): 56.0}
    records = [_record(args, "rte", "lbe", a, b, 0, "select", acc) for (a, b), acc in grid.items()]
    _write(tmp_path / "runs.jsonl", records)
    assert GLUE["chosen_point"](args, "rte", records) == (0.2, 0.05)
    compare = [
        _record(args, "rte", arm, alpha, 0.0 if arm == "baseline" else 0.05, seed, "compare", 58.0)
        for seed in (1, 2)
        for arm, alpha in (("baseline", None), ("lbe", 0.2), ("auto", "auto"))
    ]
    _write(tmp_path / "runs.jsonl", records + compare)
    assert GLUE["campaign"](args) == 0
    assert not (tmp_path / "runs").exists()  # nothing was started
    # The run with another seed, or another lr, is not the finished one.
    other = [GLUE["run_spec"](args, "rte", "baseline", None, 0.0, 3, "compare")]
    other.append(GLUE["run_spec"](_args(tmp_path, "--lr", "3e-5"), "rte", "baseline", None, 0.0, 1, "compare"))
    assert GLUE["pending"](other + [compare[0]], tmp_path / "runs.jsonl") == other


def test_check_learns_exit_status(tmp_path, capsys):
    args = _args(tmp_path, "--tasks", "rte", "--check_learns")
    _write(tmp_path / "runs.jsonl", [_record(args, "rte", "baseline", None, 0.0, 1, "compare", 60.0)])
    assert GLUE["check_learns"](args) == 0
    _write(tmp_path / "runs.jsonl", [_record(args, "rte", "baseline", None, 0.0, 1, "compare", 53.1)])
    assert GLUE["check_learns"](args) == 1 and "stays at the majority class" in capsys.readouterr().out
    # At another budget there is no baseline run yet.
    assert GLUE["check_learns"](_args(tmp_path, "--tasks", "rte", "--task_epochs", "rte=6")) == 1


@pytest.mark.parametrize(
    "words, message",
    [
        (["--jobs", "3"], "--jobs must be 1 or 2"),
        (["--results", "docs/glue_auto_alpha.md"], "JSON Lines"),
        (["--select_seeds", "1"], "overlap"),
        (["--task_epochs", "sst2=3"], "TASK=VALUE"),
        (["--task_lr", "cola=fast"], "is not a float"),
        (["--lbe_alpha", "high"], "numbers or 'auto'"),
        (["--max_train_samples", "8"], "below one batch"),
        (["--tasks", "qqp"], "invalid choice"),
        (["--data_dir", "no/such/folder"], "pass --data_dir"),
    ],
)
def test_argument_errors(words, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        GLUE["parse_args"](words)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_task_overrides_accumulate():
    args = GLUE["parse_args"](["--task_epochs", "cola=6", "--task_lr", "cola=1e-4", "--task_epochs", "rte=4"])
    assert GLUE["task_budget"](args, "cola") == (6.0, 1e-4)
    assert GLUE["task_budget"](args, "rte") == (4.0, 5e-5) and GLUE["task_budget"](args, "mrpc") == (3.0, 5e-5)


@pytest.mark.slow
def test_a_tiny_real_run_is_recorded_and_then_skipped(tmp_path):
    words = ["--tasks", "cola", "--arms", "lbe", "--lbe_alpha", "0.5", "--lbe_beta", "0.05", "--seeds", "1",
             "--max_steps", "2", "--batch_size", "16", "--max_train_samples", "32", "--max_eval_samples", "64",
             "--eval_steps", "1"]  # fmt: skip
    words += ["--results", str(tmp_path / "runs.jsonl"), "--run_dir", str(tmp_path / "runs")]
    assert GLUE["main"](words) == 0
    (record,) = REPORT.read_records(tmp_path / "runs.jsonl")
    assert (record["task"], record["arm"], record["alpha"], record["beta"], record["steps"]) == ("cola", "lbe", 0.5,
                                                                                                 0.05, 2)  # fmt: skip
    assert [c["step"] for c in record["eval_curve"]] == [1, 2] and record["eval_rows"] == 64
    assert -1 <= record["metrics"]["matthews_correlation"] <= 1 and record["train_log"]["lbe_loss"] > 0
    assert record["median_step_s"] > 0 and record["wall_s"] > record["median_step_s"] and record["device"] == "cpu"
    assert len(record["load_start"]) == 3 and record["threads"] == 1
    assert len(record["final_alphas"]) == 6 and record["final_alphas"] != [0.5] * 6  # MiniLM's six FFN outputs
    assert not list((tmp_path / "runs").rglob("model.safetensors"))  # the weights are not kept
    assert not any(w.startswith("/") for w in shlex.split(record["run_command"]))  # no machine paths
    assert shlex.split(record["run_command"])[3] == "$MODEL"
    assert GLUE["main"](words) == 0  # the same command again: the finished run is skipped
    assert len(REPORT.read_records(tmp_path / "runs.jsonl")) == 1


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint_and_records_the_whole_run(tmp_path):
    import signal
    import sys
    import time

    from lbe_hf.checkpoint import get_last_complete_checkpoint

    words = ["--tasks", "cola", "--arms", "lbe", "--lbe_alpha", "0.5", "--lbe_beta", "0.05", "--seeds", "1",
             "--max_steps", "10", "--batch_size", "16", "--max_train_samples", "160", "--max_eval_samples", "32",
             "--eval_steps", "1", "--save_steps", "3"]  # fmt: skip
    whole = [*words, "--results", str(tmp_path / "whole.jsonl"), "--run_dir", str(tmp_path / "whole")]
    words += ["--results", str(tmp_path / "runs.jsonl"), "--run_dir", str(tmp_path / "runs")]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    script = str(ROOT / "scripts/benchmarks/glue.py")
    job = subprocess.Popen([sys.executable, script, *words], env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 600
    timing = None
    while time.time() < deadline and job.poll() is None:
        found = list((tmp_path / "runs").rglob("timing.json"))
        if found:
            timing = found[0]
            break
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)  # the whole run, as the end of a session does
    job.wait()
    assert timing is not None, "no checkpoint was saved before the run ended"
    assert not (tmp_path / "runs.jsonl").exists()  # killed before it finished
    saved = json.loads(timing.read_text())
    assert Path(get_last_complete_checkpoint(timing.parent)).name == f"checkpoint-{saved['global_step']}"
    assert saved["global_step"] in (3, 6, 9) and len(saved["step_s"]) == saved["global_step"]

    assert GLUE["main"](words) == 0  # the same command: the run resumes from its checkpoint and finishes
    (record,) = REPORT.read_records(tmp_path / "runs.jsonl")
    assert record["resumed_from"] == saved["global_step"] and record["steps"] == 10
    assert [c["step"] for c in record["eval_curve"]] == list(range(1, 11))  # the killed attempt's evaluations kept
    assert record["wall_s"] >= saved["wall_s"] > 0  # the killed attempt's time up to its checkpoint counts
    assert not list((tmp_path / "runs").rglob("checkpoint-*"))  # checkpoints go once the run is recorded
    # The same run never killed: the same evaluations (the resume restores weights, optimizer, data order and RNG).
    assert GLUE["main"](whole) == 0
    (reference,) = REPORT.read_records(tmp_path / "whole.jsonl")
    assert reference["resumed_from"] is None
    assert record["eval_curve"] == reference["eval_curve"] and record["final_alphas"] == reference["final_alphas"]


def test_campaign_queue_tries_the_fallback_budget_and_drops_a_task_that_never_learns(tmp_path):
    # The queue's own logic (scripts/benchmarks/glue_campaign.sh) with a stand-in for glue.py whose --check_learns
    # fails for RTE at every budget and for CoLA at the default budget only.
    stand_in = tmp_path / "glue_stand_in.sh"
    stand_in.write_text(
        '#!/usr/bin/env bash\necho "glue.py $*"\n'
        '[[ "$*" == *check_learns* && "$*" == *"--tasks rte"* ]] && exit 1\n'
        '[[ "$*" == *check_learns* && "$*" == *"--tasks cola"* && "$*" != *cola=6* ]] && exit 1\n'
        "exit 0\n"
    )
    stand_in.chmod(0o755)
    out = subprocess.run(
        ["bash", str(ROOT / "scripts/benchmarks/glue_campaign.sh")],
        env={**os.environ, "GLUE": str(stand_in)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "glue.py --jobs 1 --tasks cola --arms baseline --seeds 1 --eval_steps 25 --task_epochs cola=6 " \
        "--task_lr cola=1e-4" in lines  # fmt: skip
    assert any(line.startswith("rte: the baseline stays at the majority class") for line in lines)
    # Selection and comparison one task at a time, in the queue's order.
    per_task = [
        f"glue.py --jobs 1 --tasks {t} --seeds 1 2 3 --task_epochs cola=6 --task_lr cola=1e-4"
        for t in ("mrpc", "cola")
    ]
    assert [line for line in lines if line in per_task] == per_task
    assert "glue.py --jobs 1 --tasks mrpc --lr 3e-5 --seeds 1 2 3 --task_epochs cola=6 --task_lr cola=1e-4" in lines
    # Seeds 4 and 5 task by task, shortest runs first, only for the tasks whose baseline learns.
    more = [line for line in lines if "--seeds 4 5" in line]
    assert more == [
        f"glue.py --jobs 1 --tasks {t} --seeds 4 5 --task_epochs cola=6 --task_lr cola=1e-4" for t in ("cola", "mrpc")
    ]
    assert lines[-1] == "glue.py --report" and not any("--tasks rte mrpc" in line for line in lines)


def test_lr_table_pairs_each_arm_by_seed_across_learning_rates(tmp_path):
    fast, slow = _args(tmp_path, "--tasks", "rte"), _args(tmp_path, "--tasks", "rte", "--lr", "3e-5")
    records = [_record(slow, "rte", "lbe", 0.2, 0.05, 0, "select", 70.0)]  # selection runs stay out of the table
    for seed, (base_slow, base_fast, lbe_slow, lbe_fast) in {1: (60, 62, 61, 61), 2: (58, 61, 60, 63)}.items():
        records += [
            _record(slow, "rte", "baseline", None, 0.0, seed, "compare", base_slow),
            _record(fast, "rte", "baseline", None, 0.0, seed, "compare", base_fast),
            _record(slow, "rte", "lbe", 0.2, 0.05, seed, "compare", lbe_slow),
            _record(fast, "rte", "lbe", 0.5, 0.005, seed, "compare", lbe_fast),  # each lr's own grid choice
        ]
    records.append(_record(fast, "rte", "baseline", None, 0.0, 3, "compare", 90.0))  # no 3e-5 partner: unpaired
    rows = [line for line in REPORT.lr_table(records) if line.startswith("| RTE |")]
    assert len(rows) == 2
    assert "| baseline | accuracy | 2 | 3e-05: 59.0 | 5e-05: 61.5 | +2.5 [-3.9, +8.9] | +2.0, +3.0 |" in rows[0]
    assert rows[1].startswith("| RTE | 3 epochs | LBE (each lr's grid choice) |") and "| +0.0, +3.0 |" in rows[1]
    # One lr only: no table.
    assert REPORT.lr_table([r for r in records if r["lr"] == 5e-5]) == []


def test_runs_whose_alphas_never_moved_are_labelled_fixed(tmp_path):
    args = _args(tmp_path, "--tasks", "rte")
    frozen = dict(_record(args, "rte", "lbe", 0.2, 0.05, 1, "compare", 60.0), final_alphas=[0.2] * 6)
    learned = dict(_record(args, "rte", "lbe", 0.2, 0.05, 2, "compare", 60.0), final_alphas=[0.2] * 5 + [0.21])
    assert REPORT.frozen_targets(frozen) and not REPORT.frozen_targets(learned)
    assert REPORT.arm_label(frozen) == "LBE (alpha 0.2 fixed, beta 0.05)"
    assert REPORT.arm_label(learned) == "LBE (alpha 0.2, beta 0.05)"
    baseline = [dict(_record(args, "rte", "baseline", None, 0.0, s, "compare", 58.0), final_alphas=None) for s in (1,)]
    rows = [line for line in REPORT.summary_table([frozen, *baseline]) if line.startswith("| RTE")]
    assert rows and "(alpha 0.2 fixed, beta 0.05)" in rows[0]
