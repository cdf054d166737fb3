"""The model-card section that says how a model was regularized."""

from __future__ import annotations

from .config import BatchEntropyConfig

PAPER = "https://openreview.net/forum?id=LJohl5DnZf"


def lbe_card_section(config: BatchEntropyConfig, module_names: list[str], alphas: list[float]) -> str:
    """Markdown for a model card: the LBE config and the learned entropy target of each regularized module."""
    lines = [
        "## Layerwise batch-entropy regularization",
        "",
        f"Trained with [lbe_hf](https://pypi.org/project/lbe-hf/) ([Peer et al., TMLR 2022]({PAPER})): "
        "loss = L + L * L_BE, L_BE = beta/L * sum_l (H_l - max(alpha_min, |alpha_l|))^2.",
        "",
        "| setting | value |",
        "| --- | --- |",
    ]
    for key, value in config.to_dict().items():
        lines.append(f"| {key} | `{value}` |")
    lines += ["", f"Learned entropy targets ({len(module_names)} modules, also in `lbe_alphas.safetensors`):", ""]
    lines += ["| module | alpha |", "| --- | --- |"]
    lines += [f"| `{name}` | {alpha:.4f} |" for name, alpha in zip(module_names, alphas)]
    return "\n".join(lines) + "\n"
