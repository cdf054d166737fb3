"""One benchmark run in this process: scripts/run_glue.py's `main` with a callback timing each training step.

    python scripts/benchmarks/glue_child.py RUN_INFO.json <scripts/run_glue.py arguments>

Started by `glue.py`, one process per run. Writes RUN_INFO.json: every training step's seconds (forward, backward,
optimizer step; evaluations excluded), the device, torch's thread count and the library versions.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

# The shared data sets beside this checkout (glue/, mnist/), unless LBE_DATA_DIR says otherwise.
os.environ.setdefault("LBE_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))


ROOT = Path(__file__).resolve().parents[2]


def main(info_path: str, words: list[str]) -> None:
    """One run in this process: scripts/run_glue.py's `main` with a callback timing each training step."""
    import torch
    import transformers
    from transformers import TrainerCallback

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    spec = importlib.util.spec_from_file_location("run_glue", ROOT / "scripts" / "run_glue.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_glue"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    times: list[float] = []
    device: list[str] = []

    class StepTimer(TrainerCallback):
        # on_step_begin .. on_step_end spans forward, backward and the optimizer step, not the evaluations.
        def on_train_begin(self, args, state, control, **kwargs):
            d = args.device
            device.append(torch.cuda.get_device_name(d) if d.type == "cuda" else d.type)

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.t0)

    class TimedTrainer(module.LBETrainer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.add_callback(StepTimer())

    module.LBETrainer = TimedTrainer
    module.main(words)
    if not times:
        raise RuntimeError("No training step was timed: scripts/run_glue.py must build its LBETrainer by that name.")
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    info = {"step_s": times, "device": device[0], "threads": torch.get_num_threads(), "versions": versions}
    Path(info_path).write_text(json.dumps(info))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
