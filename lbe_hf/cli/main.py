"""`lbe-hf` command line: `lbe-hf demo`, `lbe-hf diagnose MODEL`, `lbe-hf loss-surface MODEL`.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int` (the exit status),
imported only when that subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "demo": (
        "lbe_hf.cli.demo",
        "Train a deep vanilla FNN with and without LBE and show the collapse/recovery contrast.",
    ),
    "diagnose": (
        "lbe_hf.cli.diagnose_cli",
        "Batch entropy of every layer of a model: flag layers that pass no information.",
    ),
    "loss-surface": ("lbe_hf.cli.loss_surface", "Plot task and LBE loss surfaces around a model (Li et al. 2018)."),
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every option's default and keeps the epilog's line breaks (exit status tables)."""


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lbe-hf", description="Layerwise batch-entropy regularization tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter)
        sub_parser.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Import only the chosen subcommand's module (the others may need optional extras).
    chosen = next((a for a in argv if not a.startswith("-")), None)
    if chosen in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[chosen][0])
        parser = argparse.ArgumentParser(
            prog=f"lbe-hf {chosen}", description=SUBCOMMANDS[chosen][1], formatter_class=_HelpFormatter
        )
        module.add_arguments(parser)
        rest = list(argv)
        rest.remove(chosen)
        return int(module.run(parser.parse_args(rest)) or 0)
    make_parser().parse_args(argv)  # prints usage / help and exits
    return 2


if __name__ == "__main__":
    sys.exit(main())
