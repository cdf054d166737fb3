"""Complete checkpoints only: a marker written last, and a resume helper that skips folders without it.

`transformers.Trainer._save_checkpoint` writes `checkpoint-N` in place, file after file, and
`transformers.trainer_utils.get_last_checkpoint` returns the highest-numbered folder without checking it: a job
killed while saving resumes from a half-written checkpoint (or fails to). `LBETrainer` removes the marker before it
(re)writes a folder and writes it after every process has saved its files, so a folder with the marker is complete.
"""

from __future__ import annotations

import json
import os
import re
import socket

from .alphas import ALPHAS_NAME

COMPLETE_MARKER = "lbe_checkpoint_complete.json"

TRAINER_STATE_FILE = "trainer_state.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def mark_complete(folder: str | os.PathLike, global_step: int) -> None:
    """Writes the completion marker into `folder`, atomically (temporary file + rename).

    Meant to be called by one process, but safe if several do: each writes its own temporary file (named by host
    and process id), and the last rename wins with the same content.
    """
    tmp = os.path.join(folder, f"{COMPLETE_MARKER}.{socket.gethostname()}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"global_step": int(global_step)}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(folder, COMPLETE_MARKER))


def unmark(folder: str | os.PathLike) -> None:
    """Removes the marker before a folder is (re)written, so a kill during the rewrite leaves it incomplete."""
    try:
        os.remove(os.path.join(folder, COMPLETE_MARKER))
    except FileNotFoundError:
        pass


def _reads_as_json(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            json.load(f)
        return True
    except (OSError, ValueError):
        return False


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether `folder` is a checkpoint that was completely written.

    An LBE checkpoint (it holds `lbe_alphas.safetensors`) is complete when it has the marker. A folder written by a
    plain `Trainer` has no marker; it counts as complete when its `trainer_state.json` (the Trainer's last file)
    reads as JSON.
    """
    folder = os.fspath(folder)
    marker = os.path.join(folder, COMPLETE_MARKER)
    if os.path.isfile(marker):
        return _reads_as_json(marker)
    if os.path.exists(os.path.join(folder, ALPHAS_NAME)):
        return False
    return _reads_as_json(os.path.join(folder, TRAINER_STATE_FILE))


def is_saved_model(folder: str | os.PathLike) -> bool:
    """Whether `folder` is what `save_model` writes (a model and its LBE files) rather than a Trainer checkpoint."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder) or _CHECKPOINT_RE.match(os.path.basename(os.path.normpath(folder))):
        return False
    names = set(os.listdir(folder))
    # A half-written checkpoint also lacks trainer_state.json, but has optimizer/scheduler/RNG files.
    if names & {TRAINER_STATE_FILE, COMPLETE_MARKER, "optimizer.pt", "scheduler.pt"}:
        return False
    if any(name.startswith("rng_state") for name in names):
        return False
    return bool(names & {ALPHAS_NAME, "config.json"})


def get_last_complete_checkpoint(folder: str | os.PathLike) -> str | None:
    """The highest-numbered complete `checkpoint-N` in `folder`, or None.

    A drop-in for `transformers.trainer_utils.get_last_checkpoint` that skips folders a killed job left
    half-written (see `is_complete_checkpoint`).
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return None
    numbered = []
    for name in os.listdir(folder):
        match = _CHECKPOINT_RE.match(name)
        if match and os.path.isdir(os.path.join(folder, name)):
            numbered.append((int(match.group(1)), name))
    for _, name in sorted(numbered, reverse=True):
        path = os.path.join(folder, name)
        if is_complete_checkpoint(path):
            return path
    return None
