"""The `lbe-hf` command line and its tools: `demo`, `diagnose`, `loss-surface`, and the plots they draw."""

from .main import main

__all__ = ["main"]
