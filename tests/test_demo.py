"""`lbe-hf demo`: its code path (small), and the README's demo numbers against the demo's own committed output."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lbe_hf.cli import demo

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def test_demo_cli_writes_table_summary_and_entropy_plot(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lbe_hf.cli.main", "demo", "--depth", "4", "--width", "32", "--steps", "6",
         "--batch_size", "64", "--no_progress", "--output_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "results.md").read_text().splitlines()
    assert table[2].startswith("| without LBE |") and table[3].startswith("| with LBE |")
    assert "| with LBE |" in result.stdout and f"Written to {tmp_path}" in result.stdout
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["settings"]["depth"] == 4 and summary["settings"]["steps"] == 6
    assert summary["threads"] == 1 and summary["wall_seconds"] > 0
    for name, row in zip(("without LBE", "with LBE"), table[2:]):
        run = summary["runs"][name]
        assert f"| {run['accuracy']:.1%} | {run['last_layer_entropy']:.4f} |" in row
    png = (tmp_path / "entropy_per_layer.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_demo_rejects_bad_arguments(tmp_path):
    from lbe_hf.cli import main

    # In-process: the error comes before any data is loaded or anything is trained.
    with pytest.raises(SystemExit, match="--batch_size >= 2"):
        main(["demo", "--batch_size", "1", "--output_dir", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def _readme_demo_rows() -> tuple[dict[str, list[str]], str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("**Demo**") :]
    section = section[: section.index("\n\n**", 10)]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| with") and len(cells) == 4:
            rows[cells[0]] = cells[1:]
    return rows, section


def test_readme_demo_table_is_the_demos_own_output_and_within_the_measured_spread():
    summary = json.loads((RESULTS / "demo.json").read_text())
    # The committed output is of the demo's current defaults (a changed default needs a new run).
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    defaults = vars(parser.parse_args([]))
    assert summary["settings"] == {k: defaults[k] for k in summary["settings"]}
    rows, section = _readme_demo_rows()
    assert set(rows) == {"without LBE", "with LBE"}
    for name, cells in rows.items():
        run = summary["runs"][name]
        assert cells == [
            f"{run['accuracy']:.1%}",
            f"{run['last_layer_entropy']:.4f}",
            f"{run['min_layer_entropy']:.4f}",
        ], name
    # The seed check of the same settings (scripts/demo_seeds.py, lbe_hf's entropy and a plain-autograd one):
    # the headline run lies within its spread, and the README states that spread.
    setting = {k: v for k, v in summary["settings"].items() if k not in ("seed", "beta")}
    rows_of_setting = [
        json.loads(line) for line in (RESULTS / "demo_seeds.jsonl").read_text().splitlines() if line.strip()
    ]
    seeds = [r for r in rows_of_setting if {k: r["settings"][k] for k in setting} == setting]
    lbe = [r for r in seeds if r["beta"] == summary["settings"]["beta"]]
    plain = [r["accuracy"] for r in seeds if r["beta"] == 0.0]
    assert {r["path"] for r in lbe} == {"lbe_hf", "autograd"} and len(lbe) >= 10 and len(plain) >= 3
    accuracies = [r["accuracy"] for r in lbe]
    assert min(accuracies) - 1e-4 <= summary["runs"]["with LBE"]["accuracy"] <= max(accuracies) + 1e-4
    assert max(plain) < 0.2 and summary["runs"]["without LBE"]["accuracy"] < 0.2  # plain stays near chance (10%)
    spread = re.search(r"with LBE (\d+\.\d)-(\d+\.\d)%", section)
    assert spread, "the README's demo paragraph should state the seed spread as 'with LBE a-b%'"
    assert (float(spread[1]), float(spread[2])) == (round(min(accuracies) * 100, 1), round(max(accuracies) * 100, 1))
