"""Model cards: the base model, the data actually used, and a section saying how a model was regularized."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .config import BatchEntropyConfig

PAPER = "https://openreview.net/forum?id=LJohl5DnZf"
TAGS = ["lbe", "lbe_hf", "batch-entropy"]
# A Hub cache snapshot folder: .../models--{org}--{name}/snapshots/{commit}
_HUB_CACHE = re.compile(r"models--(?P<org>[^/\\]+?)--(?P<name>[^/\\]+)[/\\]snapshots[/\\][^/\\]+[/\\]?$")
_FROM_SCRATCH = "This model was trained from scratch on "


def base_model_name(name_or_path: str) -> tuple[str, bool]:
    """(name for a card, whether it is a Hub id) of a `--model_name_or_path`.

    A Hub id stays as it is; a local folder that is a Hub cache snapshot gives back its Hub id; any other local
    folder gives its basename (a card never carries an absolute local path).
    """
    if not os.path.isdir(name_or_path):
        return name_or_path, True
    match = _HUB_CACHE.search(str(Path(name_or_path).resolve()))
    if match:
        return f"{match['org']}/{match['name']}", True
    return Path(name_or_path).resolve().name, False


def local_files_description(files: dict[str, str | None]) -> str:
    """ "train: train.jsonl, validation: validation.jsonl": the basenames of the local files a run read."""
    return ", ".join(f"{split}: {Path(path).name}" for split, path in files.items() if path)


def fix_from_scratch_line(card_path: str | os.PathLike, name_or_path: str) -> None:
    """Trainer's card says "trained from scratch" for a model loaded from a local folder: name the base instead."""
    name, is_hub = base_model_name(name_or_path)
    text = Path(card_path).read_text(encoding="utf-8")
    base = f"[{name}](https://huggingface.co/{name})" if is_hub else f"`{name}` (a local checkpoint)"
    text = text.replace(_FROM_SCRATCH, f"This model is a fine-tuned version of {base} on ", 1)
    Path(card_path).write_text(text, encoding="utf-8")


def name_base_model_in_cards(trainer, name_or_path: str) -> None:
    """Makes every card `trainer` writes (`create_model_card`, also inside `push_to_hub`) name a local base model.

    Trainer only names a Hub id as the base (its card then links it); for a local folder it writes "trained from
    scratch". This wraps the instance's `create_model_card` to replace that line with the folder's name.
    """
    create = trainer.create_model_card

    def create_model_card(*args, **kwargs):
        create(*args, **kwargs)
        path = os.path.join(trainer.args.output_dir, "README.md")
        if trainer.is_world_process_zero() and os.path.isfile(path):
            fix_from_scratch_line(path, name_or_path)

    trainer.create_model_card = create_model_card


def lbe_card_section(config: BatchEntropyConfig, module_names: list[str], alphas: list[float]) -> str:
    """Markdown for a model card: the LBE config and the learned entropy target of each regularized module."""
    lines = [
        "## Layerwise batch-entropy regularization",
        "",
        f"Trained with lbe_hf, layerwise batch-entropy regularization ([Peer et al., TMLR 2022]({PAPER})): "
        "loss = L + L * L_BE, L_BE = beta/L * sum_l (H_l - max(alpha_min, |alpha_l|))^2. The weights load with "
        "plain `transformers`; the learned targets are in `lbe_alphas.safetensors`, the config in `lbe_config.json`.",
        "",
        "| setting | value |",
        "| --- | --- |",
    ]
    for key, value in config.to_dict().items():
        lines.append(f"| {key} | `{value}` |")
    lines += ["", f"Learned entropy targets ({len(module_names)} modules):", ""]
    lines += ["| module | alpha |", "| --- | --- |"]
    lines += [f"| `{name}` | {alpha:.4f} |" for name, alpha in zip(module_names, alphas)]
    return "\n".join(lines) + "\n"
