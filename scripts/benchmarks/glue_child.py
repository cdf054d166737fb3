"""One benchmark run in this process: scripts/run_glue.py's `main` with a callback timing each training step.

    python scripts/benchmarks/glue_child.py RUN_INFO.json <scripts/run_glue.py arguments>

Started by `glue.py`, one process per run. Writes RUN_INFO.json: every training step's seconds (forward, backward,
optimizer step; evaluations excluded), the device, torch's thread count and the library versions. A run killed
after a checkpoint resumes from it (`run_glue.py` finds the last complete one): every checkpoint save writes the
step times and wall time so far to `timing.json` in the output folder, and the resumed process starts from those,
so RUN_INFO.json holds the whole run's step times and the wall time of the attempts up to the checkpoint resumed.
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
STARTED = time.time()
TIMING_NAME = "timing.json"


def prior_timing(output_dir: Path) -> dict:
    """What the earlier attempts of this run measured up to the checkpoint this process resumes from.

    {"resumed_from": step or None, "step_s": [...], "wall_s": seconds, or None where the timing file is missing
    or belongs to another checkpoint (a kill between the checkpoint and its timing file)}.
    """
    from lbe_hf.checkpoint import get_last_complete_checkpoint

    last = get_last_complete_checkpoint(output_dir)
    if last is None:
        return {"resumed_from": None, "step_s": [], "wall_s": 0.0}
    step = int(Path(last).name.split("-")[1])
    try:
        saved = json.loads((output_dir / TIMING_NAME).read_text())
    except (OSError, ValueError):
        saved = {}
    if saved.get("global_step") != step:
        return {"resumed_from": step, "step_s": [], "wall_s": None}
    return {"resumed_from": step, "step_s": saved["step_s"], "wall_s": saved["wall_s"]}


def write_atomically(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


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
    output_dir = Path(words[words.index("--output_dir") + 1])
    prior = prior_timing(output_dir)
    times: list[float] = list(prior["step_s"])
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

        def on_save(self, args, state, control, **kwargs):
            # After the checkpoint is complete: what a resume from it would have measured so far.
            wall = None if prior["wall_s"] is None else prior["wall_s"] + time.time() - STARTED
            write_atomically(output_dir / TIMING_NAME, {"global_step": state.global_step, "step_s": times,
                                                        "wall_s": wall})  # fmt: skip

    class TimedTrainer(module.LBETrainer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.add_callback(StepTimer())

    module.LBETrainer = TimedTrainer
    module.main(words)
    if not times:
        raise RuntimeError("No training step was timed: scripts/run_glue.py must build its LBETrainer by that name.")
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    info = {"step_s": times, "device": device[0], "threads": torch.get_num_threads(), "versions": versions,
            "resumed_from": prior["resumed_from"], "prior_wall_s": prior["wall_s"]}  # fmt: skip
    Path(info_path).write_text(json.dumps(info))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
