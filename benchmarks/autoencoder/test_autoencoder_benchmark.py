"""The autoencoder benchmark's runner and report, on a tiny experiment (seconds, one thread).

    python -m pytest benchmarks/autoencoder/test_autoencoder_benchmark.py

Uses MNIST's files in $LBE_DATA_DIR/mnist (default: ../shared/data beside the checkout) when they are there, and
random blob images (`--synthetic_data`) otherwise: nothing is skipped.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
os.environ.setdefault("LBE_DATA_DIR", str(ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import report  # noqa: E402
import run as bench  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
HAS_MNIST = any((Path(os.environ["LBE_DATA_DIR"]) / "mnist").glob("t10k-images*"))
TINY = ["--epochs", "1", "--max_train_samples", "256", "--max_eval_samples", "64"]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_runner_appends_one_line_per_run_skips_it_on_rerun_and_resumes(tmp_path, capsys):
    results, runs = tmp_path / "results.jsonl", tmp_path / "runs"
    argv = ["--filter", "dataset=mnist,depth=1,optimizer=adamw,seed=0,arm=plain|lbe_authors", *TINY,
            "--results", str(results), "--runs_dir", str(runs), "--no_report"]  # fmt: skip
    if not HAS_MNIST:
        argv.append("--synthetic_data")
    assert bench.main(argv) == 0
    rows = _lines(results)
    assert [r["experiment"]["arm"] for r in rows] == ["plain", "lbe_authors"]
    for r in rows:
        # Overrides are part of the key: a tiny run never stands in for a full one.
        assert r["experiment"]["epochs"] == 1 and r["experiment"]["max_train_samples"] == 256
        assert r["key"] == bench.key_of(r["experiment"])
        assert -1 <= r["test_mssim"] <= 1 and r["final_train_loss"] > 0 and r["n_train"] == 256
        assert len(r["curve"]) == 1 and {"val_loss", "val_mssim", "train_loss"} <= set(r["curve"][0])
        assert r["torch"] == torch.__version__ and "run.py" in r["command"]
        assert bench.decode_pictures(r["pictures"]["reconstructions"]).shape == (8, 1, 28, 28)
        assert not list((runs / r["run_name"]).glob("checkpoint-*"))  # removed once the line is written
    assert rows[0]["lbe_config"] is None and rows[1]["lbe_config"]["alpha"] == 2.5
    assert len(rows[1]["alphas"]) == 3  # encoder layer, latent code, decoder layer

    capsys.readouterr()
    assert bench.main(argv) == 0
    assert "nothing to run" in capsys.readouterr().out
    assert len(_lines(results)) == 2

    # Resume: a run whose line is missing but whose folder holds a complete checkpoint continues from it.
    lbe_argv = [a.replace("plain|lbe_authors", "lbe_authors") for a in argv] + ["--keep_checkpoints"]
    results.write_text("")
    bench.main(lbe_argv)
    first = _lines(results)[0]
    results.write_text("")
    bench.main(lbe_argv)
    resumed = _lines(results)[0]
    assert resumed["resumed_from_step"] == first["global_step"]
    assert resumed["test_mssim"] == first["test_mssim"]


def _row(arm: str, mssim: float, seed: int = 0) -> dict:
    exp = {"dataset": "mnist", "depth": 10, "arm": arm, "optimizer": "adamw", "seed": seed}
    images = np.random.default_rng(seed).random((8, 1, 28, 28))
    return {
        "key": bench.key_of(exp), "experiment": exp, "run_name": bench.run_name(exp), "test_mssim": mssim,
        "test_loss": 0.2, "final_train_loss": 0.2, "final_val_loss": 0.2, "final_val_mssim": mssim, "final_lr": 5e-4,
        "curve": [{"epoch": 1, "val_loss": 0.3, "val_mssim": mssim - 0.05},
                  {"epoch": 2, "val_loss": 0.2, "val_mssim": mssim}],
        "seconds": 120.0, "n_train": 7000, "n_val": 1000, "n_test": 2000,
        "pictures": {"originals": bench.encode_pictures(images), "reconstructions": bench.encode_pictures(images / 2)},
        "torch": "2.x", "transformers": "5.x", "lbe_hf": "0.x", "python": "3.x", "threads": 1,
        "finished": "2026-01-01T00:00:00+00:00",
    }  # fmt: skip


def test_report_renders_from_a_two_line_results_file(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(_row("plain", 0.123)) + "\n" + json.dumps(_row("lbe_authors", 0.456)) + "\n")
    readme = report.write_report(results)
    text = readme.read_text()
    assert readme == tmp_path / "README.md"
    assert "| MNIST | 10 | plain | adamw | 1/3 | 0.123 | - | 0.12 | <= 0.15 | met |" in text
    assert "| MNIST | 10 | lbe_authors | adamw | 1/3 | 0.456 | - | 0.42 | >= 0.40 | met |" in text
    assert "| MNIST | 25 | plain | adamw | 0/3 | - | - | 0.12 | <= 0.15 | pending |" in text
    assert "So far 2 of 2 checks with results are met" in text
    assert "reconstructions_mnist_d10.png" in text and (tmp_path / "reconstructions_mnist_d10.png").stat().st_size
    assert (tmp_path / "curves.png").is_file()
    assert "2 of 54 planned runs finished" in text and "52 runs" in text
