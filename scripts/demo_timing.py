"""Wall time of `lbe-hf demo` at several thread counts, with a note of what else was running on the machine.

    python scripts/demo_timing.py --threads 1 2 --out demo_timing.jsonl -- --steps 200

Runs the demo once per thread count (in a subprocess, so `--threads` sets torch's thread pool as a user's run
would) and appends one JSON line each: threads, wall seconds, the load average, and the other processes then using
more than 20% of a core (from `ps`), so "idle" and "under load" are stated, not assumed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def busy_processes(threshold: float = 20.0) -> list[str]:
    """Other processes using more than `threshold` % of a core (ps's average over their lifetime)."""
    out = subprocess.run(["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    busy = []
    for line in out.splitlines()[1:]:
        pid, cpu, *args = line.split(None, 2)
        if float(cpu) >= threshold and int(pid) != os.getpid():
            command = " ".join(map(_without_location, " ".join(args).split()))
            busy.append(f"{float(cpu):.0f}% {command[:90]}")
    return busy


def _without_location(word: str) -> str:
    """An absolute path as the record may show it: relative to the checkout when inside it, else its name only
    (where a program or script is installed is nobody's business)."""
    if not word.startswith("/"):
        return word
    path = Path(word)
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else path.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--label", default="", help="free text stored with each line, e.g. 'idle' or 'under load'")
    parser.add_argument("--out", required=True, help="JSON Lines file, appended to")
    parser.add_argument("demo_args", nargs=argparse.REMAINDER, help="after --: flags of lbe-hf demo")
    args = parser.parse_args()
    rest = [a for a in args.demo_args if a != "--"]
    for threads in args.threads:
        before = busy_processes()
        load = os.getloadavg()
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, "-m", "lbe_hf.cli.main", "demo", "--threads", str(threads), "--no_progress"]
            start = time.perf_counter()
            subprocess.run([*command, *rest, "--output_dir", out], check=True, capture_output=True)
            wall = time.perf_counter() - start
            with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
                summary = json.load(f)
        row = {
            "label": args.label,
            "threads": threads,
            "demo_args": rest,
            "wall_seconds": round(wall, 1),
            "demo_seconds": summary["wall_seconds"],
            "with_lbe_accuracy": summary["runs"]["with LBE"]["accuracy"],
            "load_average_1min_before": round(load[0], 2),
            "busy_before": before,
            "busy_after": busy_processes(),
        }
        print(json.dumps(row), flush=True)
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
