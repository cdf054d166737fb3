"""Which modules to regularize: the family's default, a structural fallback, and a check that every block is covered.

Resolution of the default (`target_modules=None`), in order:

1. the model's own `_lbe_target_modules` (lbe_hf's models declare one);
2. `TARGETS_BY_MODEL_TYPE[config.model_type]` (see `target_table.py`);
3. composite models (`VisionEncoderDecoderModel`, `EncoderDecoderModel`, ...): each sub-model that is a
   `PreTrainedModel` gets 1-2 for its own `config.model_type`, under its prefix;
4. the structural fallback, for every block that 1-3 left uncovered: the block's feed-forward submodule (the last
   container named `mlp`, `ffn` or `feed_forward`), else its last `Linear`/conv layer in registration order. It
   warns with the modules it chose.

A *block* is an element of a repeated-layer list: an `nn.ModuleList` or `nn.Sequential` of modules of one class
(or all transformers `GradientCheckpointingLayer`s) that have submodules and parameters. When a list's elements
hold such lists themselves (Swin and ConvNeXt stages, ALBERT's layer groups, a ResNet block's conv layers), the
innermost lists hold the blocks. Lists named `experts` are parts of a block, never blocks. A shared layer applied k
times (ALBERT) is one block here.

Run `python -m lbe_hf.targets` to print the README's table of defaults.
"""

from __future__ import annotations

import re
import warnings

from torch import nn

from .target_table import DEFAULT_TARGETS_DOC, TARGETS_BY_MODEL_TYPE, FamilyTargets, markdown_table

try:
    from transformers.modeling_layers import GradientCheckpointingLayer
except ImportError:  # older transformers
    GradientCheckpointingLayer = ()
from transformers.pytorch_utils import Conv1D

__all__ = [
    "DEFAULT_TARGETS_DOC",
    "TARGETS_BY_MODEL_TYPE",
    "FamilyTargets",
    "count_blocks",
    "markdown_table",
    "model_blocks",
    "resolve_target_modules",
    "uncovered_blocks",
    "unwrap_model",
]

_FFN_NAMES = ("mlp", "ffn", "feed_forward")
_PROJECTIONS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, Conv1D)
_SHOWN = 8  # names shown in warnings and errors


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's model under DDP, torch.compile and PEFT wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP, DataParallel
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif hasattr(model, "get_base_model"):  # PEFT
            model = model.get_base_model()
        else:
            return model


def _matches(name: str, pattern: list[str] | str) -> bool:
    if isinstance(pattern, str):
        return re.fullmatch(pattern, name) is not None
    return any(name == p or name.endswith("." + p) for p in pattern)


def _inside(name: str, prefix: str) -> bool:
    return prefix == "" or name.startswith(prefix + ".")


def _shown(names: list[str]) -> str:
    return ", ".join(names[:_SHOWN]) + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")


def _is_block_list(name: str, module: nn.Module) -> bool:
    if type(module) not in (nn.ModuleList, nn.Sequential) or len(module) == 0:
        return False
    if name.rsplit(".", 1)[-1] == "experts":
        return False
    items = list(module)
    same_kind = len({type(m) for m in items}) == 1 or all(isinstance(m, GradientCheckpointingLayer) for m in items)
    return same_kind and all(any(True for _ in m.children()) and any(True for _ in m.parameters()) for m in items)


def model_blocks(model: nn.Module) -> list[str]:
    """Names of the model's blocks (the repeated layers of every stack), in `named_modules()` order."""
    lists = [(n, m) for n, m in model.named_modules() if _is_block_list(n, m)]
    names = [n for n, _ in lists]
    innermost = [(n, m) for n, m in lists if not any(o != n and _inside(o, n) for o in names)]
    return [".".join(p for p in (n, str(i)) if p) for n, m in innermost for i in range(len(m))]


def count_blocks(model: nn.Module) -> int:
    """How many blocks `model` has (see `model_blocks`)."""
    return len(model_blocks(model))


def uncovered_blocks(model: nn.Module, names: list[str], blocks: list[str] | None = None) -> list[str]:
    """The blocks of `model` that none of the module `names` lies in (or is)."""
    blocks = model_blocks(model) if blocks is None else blocks
    return [b for b in blocks if not any(n == b or n.startswith(b + ".") for n in names)]


def _model_type(module: nn.Module) -> str | None:
    config = getattr(module, "config", None)
    return getattr(config, "model_type", None) if hasattr(module, "base_model_prefix") else None


def _known_roots(model: nn.Module) -> list[tuple[str, list[str] | str, bool]]:
    """(prefix, pattern, declared) of the outermost (sub-)models with a declared or tabled default."""
    roots: list[tuple[str, list[str] | str, bool]] = []
    for name, module in model.named_modules():
        if any(_inside(name, p) for p, _, _ in roots):
            continue
        declared = getattr(module, "_lbe_target_modules", None)
        if declared:
            roots.append((name, declared, True))
        elif _model_type(module) in TARGETS_BY_MODEL_TYPE:
            roots.append((name, TARGETS_BY_MODEL_TYPE[_model_type(module)], False))
    return roots


def _fallback_target(block: str, module: nn.Module) -> str | None:
    """The block's feed-forward submodule, else its last projection (Linear/conv), as a full name."""
    # A container (ALBERT's `ffn` is its first Linear, not the feed-forward block).
    ffns = [n for n, m in module.named_modules() if n and n.rsplit(".", 1)[-1] in _FFN_NAMES and len(m._modules)]
    ffns = [n for n in ffns if not any(o != n and n.startswith(o + ".") for o in ffns)]
    if ffns:
        return f"{block}.{ffns[-1]}"
    projections = [n for n, m in module.named_modules() if n and isinstance(m, _PROJECTIONS)]
    return f"{block}.{projections[-1]}" if projections else None


def _default_targets(model: nn.Module, names: list[str]) -> list[str]:
    chosen: set[str] = set()
    declared_roots = []  # a model's own declaration is complete: the fallback never adds to it
    for prefix, pattern, declared in _known_roots(model):
        start = len(prefix) + 1 if prefix else 0
        chosen.update(n for n in names if _inside(n, prefix) and n != prefix and _matches(n[start:], pattern))
        if declared:
            declared_roots.append(prefix)
    modules = dict(model.named_modules())
    blocks = [b for b in model_blocks(model) if not any(_inside(b, p) for p in declared_roots)]
    fallback = {}
    for block in uncovered_blocks(model, sorted(chosen), blocks):
        target = _fallback_target(block, modules[block])
        if target is not None:
            fallback[block] = target
    if fallback:
        warnings.warn(
            f"No LBE default covers {len(fallback)} block(s) of {type(unwrap_model(model)).__name__} "
            f"(model_type {_model_type(unwrap_model(model))!r}); the structural fallback chose "
            f"{_shown(list(fallback.values()))}. Set BatchEntropyConfig(target_modules=...) to choose yourself.",
            stacklevel=3,
        )
        chosen.update(fallback.values())
    return [n for n in names if n in chosen]


def _no_default_error(model: nn.Module) -> ValueError:
    base = unwrap_model(model)
    modules = dict(model.named_modules())
    blocks = model_blocks(model)
    if blocks:
        parts = [f"{b}.{{{','.join(n for n, _ in modules[b].named_children())}}}" for b in blocks]
        # e.g. the first block list with its blocks' last child: `encoder\.layer\.\d+\.output`
        stack = blocks[0].rsplit(".", 1)[0] if "." in blocks[0] else ""
        last_child = list(modules[blocks[0]].named_children())[-1][0]
        example = (re.escape(stack) + r"\." if stack else "") + r"\d+\." + re.escape(last_child)
        where = f"Its blocks' parts: {_shown(parts)}"
    else:
        example = r"(.*\.)?layers\.\d+\.mlp"
        where = f"It has no repeated blocks; its top-level modules: {_shown([n for n, _ in base.named_children()])}"
    return ValueError(
        f"No default LBE target for {type(base).__name__} (model_type {_model_type(base)!r} is not in "
        f"lbe_hf.targets.TARGETS_BY_MODEL_TYPE and the structural fallback found no block with a Linear or conv "
        f"layer). Set BatchEntropyConfig(target_modules=...) to a regex (full match), e.g. {example!r}, or a list of "
        f"module names. {where}"
    )


def resolve_target_modules(
    model: nn.Module, target_modules: list[str] | str | None = None, exclude_modules: list[str] | str | None = None
) -> list[str]:
    """Names of the modules to regularize, in `named_modules()` order.

    `target_modules`: a string is a regex that must match the full name; a list matches an exact name or a
    `.name` suffix (PEFT's convention). None: the default (see the module docstring). `exclude_modules` is matched
    the same way and removes names afterwards. A choice of the user's (a `target_modules` or `exclude_modules`) that
    leaves blocks without a target gets one warning naming them.

    Raises:
        ValueError: nothing matches (the message shows an example regex and the blocks' parts), or the exclusion
            leaves nothing.
    """
    names = [n for n, _ in model.named_modules() if n]
    if target_modules is None:
        chosen = _default_targets(model, names)
        if not chosen:
            raise _no_default_error(model)
    else:
        chosen = [n for n in names if _matches(n, target_modules)]
        if not chosen:
            leaves = [n for n, m in model.named_modules() if n and not list(m.children())]
            blocks = model_blocks(model)
            raise ValueError(
                f"target_modules={target_modules!r} matches no module of {type(unwrap_model(model)).__name__}. "
                f"A string must match the full name (regex); a list entry the exact name or a '.name' suffix. "
                f"Module names look like: {_shown(leaves)}" + (f"; its blocks: {_shown(blocks)}" if blocks else "")
            )
    if exclude_modules is not None:
        chosen = [n for n in chosen if not _matches(n, exclude_modules)]
        if not chosen:
            raise ValueError(f"exclude_modules={exclude_modules!r} leaves no module to regularize.")
    if target_modules is not None or exclude_modules is not None:
        blocks = model_blocks(model)
        missing = uncovered_blocks(model, chosen, blocks)
        if missing:
            warnings.warn(
                f"The LBE targets leave {len(missing)} of {len(blocks)} blocks of "
                f"{type(unwrap_model(model)).__name__} unregularized: {_shown(missing)}.",
                stacklevel=2,
            )
    return chosen


if __name__ == "__main__":
    print(markdown_table())
