"""Optional dependencies: import one, or fail with the `pip install "lbe-hf[extra]"` line that provides it."""

from __future__ import annotations

import importlib
from types import ModuleType

# module -> the extra of pyproject.toml that installs it
EXTRA_OF = {
    "datasets": "glue",
    "evaluate": "glue",
    "peft": "glue",
    "scipy": "glue",
    "yaml": "glue",
    "tensorboard": "glue",
    "sklearn": "demo",
    "matplotlib": "demo",
    "torchvision": "vision",
    "skimage": "vision",
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str, extra: str | None = None, purpose: str = "this command") -> ModuleType:
    """`importlib.import_module(module)`, or MissingExtraError naming `pip install "lbe-hf[extra]"`."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        top = module.split(".")[0]
        if error.name not in (module, top):
            raise  # the module exists but one of its own imports is missing: show that error as it is
        extra = extra or EXTRA_OF.get(top, "test")
        raise MissingExtraError(
            f"{purpose} needs the optional package {top!r}, which is not installed. Install it with "
            f'pip install "lbe-hf[{extra}]" (or pip install -e ".[{extra}]" in a source checkout).'
        ) from error
