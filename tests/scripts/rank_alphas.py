"""Runs a GLUE script's `main()` under a launcher, then writes this process's final alphas to `<dir>/rank<N>.json`.

    accelerate launch ... tests/scripts/rank_alphas.py OUT_DIR scripts/run_glue.py --task_name rte ...

tests/test_glue.py compares the files of the two ranks: DDP must keep the alphas identical on every process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys


def main() -> None:
    out_dir, script, *argv = sys.argv[1:]
    spec = importlib.util.spec_from_file_location("glue_script", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    results = module.main(argv)
    rank = int(os.environ.get("RANK", "0"))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w", encoding="utf-8") as f:
        json.dump({"rank": rank, "world_size": results["world_size"], "alphas": results["lbe_alphas"]}, f)


if __name__ == "__main__":
    main()
