import subprocess
import sys


def test_demo_cli_writes_table_and_entropy_plot(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lbe_hf.cli", "demo", "--depth", "4", "--width", "32", "--steps", "6",
         "--batch_size", "64", "--no_progress", "--output_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "results.md").read_text().splitlines()
    assert table[2].startswith("| without LBE |") and table[3].startswith("| with LBE |")
    assert "| with LBE |" in result.stdout
    png = (tmp_path / "entropy_per_layer.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_demo_rejects_bad_arguments(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lbe_hf.cli", "demo", "--batch_size", "1", "--output_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode != 0 and "--batch_size >= 2" in result.stderr
