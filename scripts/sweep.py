"""Expand a grid YAML (configs/glue/*.yaml) into runs: run them one after another, or print launch lines.

    python scripts/sweep.py configs/glue/rte.yaml --print          # one `accelerate launch ...` line per run
    python scripts/sweep.py configs/glue/rte.yaml --run --limit 2   # run the first two, sequentially

A grid file has `script` (relative to the repository root, where runs start and printed lines must be run),
`fixed` (flags shared by every run), `grids` (a list of {flag: [values]} blocks; each block is a cartesian product,
the blocks are concatenated) and `output_dir`, a template filled with each run's values, e.g.
`runs/rte/beta{lbe_beta}_lr{learning_rate}_seed{seed}` (a flag a block does not set reads as "-").
`--set key=value` overrides a fixed flag (e.g. a local model or --max_steps for a smoke run).
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="Grid YAML file.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--print", action="store_true", help="Print one launch line per run (default).")
    mode.add_argument("--run", action="store_true", help="Run every expanded command sequentially.")
    parser.add_argument("--launcher", default="accelerate launch", help="Prefix of printed lines / runs.")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="Override fixed flags.")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N runs.")
    return parser


class _Blank(dict):
    """Template values; a flag not swept in this block (e.g. lbe_alpha for the baseline) reads as "-"."""

    def __missing__(self, key: str) -> str:
        return "-"


def _flag(key: str, value) -> list[str]:
    """`--key value`; booleans become a bare flag (True) or nothing (False), as HfArgumentParser reads them."""
    if value is True:
        return [f"--{key}"]
    if value is False or value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [f"--{key}", *map(str, value)]
    return [f"--{key}", str(value)]


def expand(spec: dict, overrides: dict[str, str] | None = None) -> list[list[str]]:
    """Every run of a grid spec as an argument list for its script (without the launcher).

    Raises:
        ValueError: a grid flag that is also fixed, or a spec without `script`/`grids`.
    """
    for key in ("script", "grids"):
        if key not in spec:
            raise ValueError(f"grid file has no {key!r} entry (needs script, fixed, grids, output_dir).")
    fixed = dict(spec.get("fixed") or {})
    fixed.update(overrides or {})
    runs = []
    for block in spec["grids"]:
        clash = sorted(set(block) & set(fixed))
        if clash:
            raise ValueError(f"{clash} are both fixed and swept; keep each flag in one place.")
        keys = list(block)
        for values in itertools.product(*(block[k] if isinstance(block[k], list) else [block[k]] for k in keys)):
            point = dict(zip(keys, values))
            args = [str(spec["script"])]  # relative to the repository root, where runs start
            for key, value in {**fixed, **point}.items():
                args += _flag(key, value)
            if "output_dir" in spec:
                args += ["--output_dir", spec["output_dir"].format_map(_Blank({**fixed, **point}))]
            runs.append(args)
    return runs


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    spec = yaml.safe_load(Path(args.grid).read_text(encoding="utf-8"))
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}.")
        overrides[key] = yaml.safe_load(value)
    runs = expand(spec, overrides)[: args.limit]
    launcher = shlex.split(args.launcher)
    for i, run in enumerate(runs):
        command = [*launcher, *run]
        if not args.run:
            print(shlex.join(command))
            continue
        print(f"[{i + 1}/{len(runs)}] {shlex.join(command)}", flush=True)
        subprocess.run(command, check=True, cwd=ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
