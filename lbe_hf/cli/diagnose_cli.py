"""`lbe-hf diagnose MODEL`: the command line of `lbe_hf.cli.diagnose` (options, defaults, report, exit status)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

import torch
from torch import nn

from ..collect import resolve_target_modules
from ..entropy import CONSTANTS
from .diagnose import SPREAD_THRESHOLD, Diagnosis, diagnose
from .diagnose_io import load_inputs, load_model

# ---- command line ---------------------------------------------------------------------------------------------


# Defaults that depend on the model's input: a forward of 512 x 128 tokens takes ~100 s on a laptop CPU for MiniLM.
IMAGE_DEFAULTS = {"batch_size": 512, "probe_steps": 30, "probe_batch_size": 128}
TOKEN_DEFAULTS = {"batch_size": 32, "probe_steps": 10, "probe_batch_size": 16}
DEFAULT_PLOT = os.path.join("lbe_diagnose", "diagnose.png")
EPILOG = """exit status:
  0  healthy: information reaches every layer (and the probe, if run, learns or is inconclusive)
  1  collapsed: some layer passes no information, or the probe neither learns nor keeps information
  2  bad input (missing folder, unknown FNN key, data that does not fit the model, ...): the message says
     what to change
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument(
        "model", help="a local checkpoint folder or Hub id, or an lbe_hf FNN spec such as 'fnn:depth=50,init=torch'"
    )
    parser.add_argument(
        "--data",
        default=None,
        help="'mnist' (shared MNIST idx files), 'digits' (scikit-learn), a folder of MNIST-format idx files, a JSON "
        "Lines file with text ('sentence' or 'sentence1'/'sentence2') and 'label', or 'synthetic' (random inputs of "
        "the model's shape, no probe). None: mnist/digits for 784/64-input FNNs, else synthetic (the report then "
        "says so).",
    )
    parser.add_argument(
        "--standardize",
        action="store_true",
        help="MNIST/digits pixels standardised to mean 0, std 1 (as the trainability benchmark's 'mnist'), not [0, 1]",
    )
    parser.add_argument(
        "--batch_size",
        type=int,
        default=None,
        help="samples in the measured (held-out) batch; None: "
        f"{IMAGE_DEFAULTS['batch_size']} for image/FNN models, {TOKEN_DEFAULTS['batch_size']} for token inputs",
    )
    parser.add_argument("--seq_len", type=int, default=128, help="sequence length of text (token) inputs")
    parser.add_argument(
        "--probe_steps",
        type=int,
        default=None,
        help="Adam steps of the probe (needs labelled --data); 0 turns it off; None: "
        f"{IMAGE_DEFAULTS['probe_steps']} for image/FNN models, {TOKEN_DEFAULTS['probe_steps']} for token inputs",
    )
    parser.add_argument("--probe_lr", type=float, default=1e-3, help="learning rate of the probe's Adam")
    parser.add_argument(
        "--probe_batch_size",
        type=int,
        default=None,
        help="training batch of each probe step; None: "
        f"{IMAGE_DEFAULTS['probe_batch_size']} for image/FNN models, {TOKEN_DEFAULTS['probe_batch_size']} for tokens",
    )
    parser.add_argument(
        "--spread_threshold",
        type=float,
        default=SPREAD_THRESHOLD,
        help="a layer whose relative spread (share of its signal that differs between samples) is below this is "
        "collapsed",
    )
    parser.add_argument(
        "--target_modules", nargs="+", default=None, help="layers to measure; None: LBE's default targets"
    )
    parser.add_argument(
        "--entropy_constant", choices=sorted(CONSTANTS), default="pi_e", help="c of eq. 3 (pi_e: the authors' code)"
    )
    parser.add_argument("--plot", default=DEFAULT_PLOT, help="PNG to write, its folder created ('' for none)")
    parser.add_argument("--json", default=None, help="also write the measurements as JSON here")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model's init (FNN specs), data order, probe")


def _input_note(model: nn.Module, inputs: dict) -> str | None:
    """What the report says when no real data was measured (random inputs, no probe)."""
    if "labels" in inputs:
        return None
    shape = "x".join(str(d) for d in next(iter(inputs.values())).shape)
    kind = "token ids" if "input_ids" in inputs else "inputs"
    return (
        f"no real data: measured on random {kind} of shape {shape} and skipped the probe (it needs labels). "
        "Pass --data to measure real inputs and run the probe: a JSON Lines file with text and 'label', a folder "
        "of MNIST idx files, 'digits', or 'mnist' (read from $LBE_DATA_DIR/mnist)."
    )


def _print_report(result: Diagnosis, out=None) -> None:
    out = out or sys.stdout
    width = max(len(n) for n in result.names)
    # '#' counts layers from 1, as the plot's x axis does.
    print(f"{'#':>3}  {'layer':<{width}}  {'entropy':>10}  {'rel.spread':>10}  {'eff.rank':>8}  status", file=out)
    collapsed = set(result.collapsed_layers)
    for i, (name, h, s, r) in enumerate(zip(result.names, result.entropy, result.spread, result.effective_rank), 1):
        # A collapsed layer's rank is that of float rounding noise around one point: not a property of the layer.
        rank = "noise" if name in collapsed else f"{r:.3g}"
        status = "COLLAPSED" if name in collapsed else "ok"
        print(f"{i:>3}  {name:<{width}}  {h:>10.3g}  {s:>10.3g}  {rank:>8}  {status}", file=out)
    if collapsed:
        print(
            "eff.rank 'noise': the layer's relative spread is below the collapse threshold, so its effective rank "
            "only measures float rounding.",
            file=out,
        )
    if result.probe is not None:
        p = result.probe
        print(
            f"probe: {p['steps']} Adam steps (lr {p['lr']:g}): held-out loss {p['loss_before']:.4f} -> "
            f"{p['loss_after']:.4f}, label entropy {p['label_entropy']:.4f}: "
            f"{'learns' if p['learned'] else 'does NOT learn'}; smallest relative spread {min(result.spread):.2g} -> "
            f"{min(p['spread_after']):.2g}",
            file=out,
        )
    for note in result.notes:
        print(note, file=out)
    healthy = "healthy: information reaches every layer"
    verdict = "COLLAPSED: " + "; ".join(result.reasons) if result.collapsed else healthy
    learns = result.probe is not None and result.probe["learned"]
    print(verdict + (" (and the probe learns)" if learns and not result.collapsed else ""), file=out)


def run(args: argparse.Namespace) -> int:
    """The CLI: 0 healthy, 1 collapsed, 2 bad input (with a message saying what to change)."""
    try:
        if args.batch_size is not None and args.batch_size < 2:
            raise ValueError(f"--batch_size {args.batch_size}: batch entropy needs at least 2 samples.")
        torch.manual_seed(args.seed)
        model = load_model(args.model, args.data)
        defaults = IMAGE_DEFAULTS if getattr(model, "main_input_name", None) == "pixel_values" else TOKEN_DEFAULTS
        for key, value in defaults.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        if args.batch_size < 2:
            raise ValueError(f"--batch_size {args.batch_size}: batch entropy needs at least 2 samples.")
        if args.probe_steps < 0:
            raise ValueError(f"--probe_steps must be >= 0, got {args.probe_steps}.")
        inputs, train = load_inputs(
            model, args.model, args.data, args.batch_size, args.seq_len, args.seed, args.standardize
        )
        names = resolve_target_modules(model, args.target_modules)
    except (ValueError, OSError, KeyError) as e:
        print(f"lbe-hf diagnose: error: {e}", file=sys.stderr)
        return 2
    note = _input_note(model, inputs)
    if note:
        print(note)
    result = diagnose(
        model,
        inputs,
        names,
        CONSTANTS[args.entropy_constant],
        args.spread_threshold,
        train,
        args.probe_steps,
        args.probe_lr,
        args.probe_batch_size,
        args.seed,
    )
    _print_report(result)
    if args.plot:
        from .plotting import plot_layer_profile

        flagged = [n in set(result.collapsed_layers) for n in result.names]
        plot_layer_profile(
            result.names,
            result.entropy,
            args.plot,
            flagged,
            result.spread,
            title=f"{os.path.basename(args.model.rstrip('/'))}: {'COLLAPSED' if result.collapsed else 'healthy'}",
            threshold=args.spread_threshold,
        )
        print(f"plot: {os.path.abspath(args.plot)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({**asdict(result), "collapsed": result.collapsed, "model": args.model}, f, indent=1)
    return 1 if result.collapsed else 0
