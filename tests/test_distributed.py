"""LBETrainer under real 2-process DDP (gloo on CPU), launched with accelerate; see tests/scripts/ddp_lbe.py.

One launch covers: ddp_find_unused_parameters False and True on a tiny FNN, the Trainer's default on a tiny BERT;
a batch of 1 on rank 0 only (LBE term skipped there), then on both ranks; a NaN input on rank 0 (FNN runs).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import accelerate_launch

SCRIPT = Path(__file__).parent / "scripts" / "ddp_lbe.py"
RUNS = ["fnn:false", "fnn:true", "bert:none"]
CAUSAL = "llama:none"


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> dict[tuple[str, str], list[dict]]:
    # Without ACCELERATE_USE_CPU=true each process would silently train alone (world size 1) on a GPU-less machine.
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = accelerate_launch()
    cmd += [
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(SCRIPT),
        "--runs",
        *RUNS,
        CAUSAL,
    ]
    output_dir = tmp_path_factory.mktemp("ddp")
    cmd += ["--output_dir", str(output_dir)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    results: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(output_dir.glob("result_*_rank*.json")):
        r = json.loads(path.read_text())
        results.setdefault((r["kind"], str(r["find_unused"]).lower()), []).append(r)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_ddp_two_processes(ddp_results, run):
    kind, setting = run.split(":")
    ranks = sorted(ddp_results[(kind, setting)], key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1]
    for r in ranks:
        assert r["world_size"] == 2 and r["num_processes"] == 2 and r["wrapped"] == "DistributedDataParallel"
        if setting != "none":
            assert r["ddp_find_unused_effective"] == (setting == "true")
        assert r["global_step"] == 5 and r["params_finite"] and r["params_equal_across_ranks"]
        assert r["last_complete_checkpoint"] == "checkpoint-5"  # marked after both ranks wrote their files
        # Logged counts are sums over both ranks: rank 1 never skipped alone, yet logs rank 0's skip at step 2.
        nan_step = [0, 0, 0, 1, 0] if kind == "fnn" else [0, 0, 0, 0, 0]
        assert r["skipped_per_step"] == [a + b for a, b in zip([0, 1, 2, 0, 0], nan_step)]
        assert r["nonfinite_per_step"] == nan_step
    assert ranks[0]["alphas"] == ranks[1]["alphas"]
    assert all(abs(a - 0.5) > 1e-4 for a in ranks[0]["alphas"]), "the alphas did not train"


@pytest.mark.slow
def test_ddp_logged_task_loss_of_a_causal_lm_is_the_trainers_loss(ddp_results):
    # A causal LM's loss inside the forward is its share of the global token sum (transformers then multiplies by
    # the world size): the logged task_loss must be the per-step mean the Trainer logs as `loss` (beta=0 here).
    ranks = ddp_results[("llama", "none")]
    assert sorted(r["rank"] for r in ranks) == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    for r in ranks:
        assert len(r["loss_per_step"]) == 5
        for loss, task in zip(r["loss_per_step"], r["task_loss_per_step"]):
            assert task == pytest.approx(loss, rel=1e-3)
