"""Writes benchmarks/autoencoder/README.md (and its pictures) from results.jsonl, experiments.json, defaults.json and
paper.json only: no number in the README is typed by hand. Called by `run.py --report` and after every run."""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402

ARM_ORDER = {"plain": 0, "lbe_authors": 1, "lbe_default": 2}
OPTIMIZER_ORDER = {"adamw": 0, "adam_l2": 1}
DATASET_NAMES = {"mnist": "MNIST", "fashion": "Fashion-MNIST"}


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def is_full(row: dict) -> bool:
    """A run of the benchmark proper (no command-line overrides such as --epochs in its key)."""
    return set(row["experiment"]) == set(bench.EXPERIMENT_FIELDS)


def _group_key(e: dict) -> tuple:
    return (e["dataset"], e["depth"], e["arm"], e["optimizer"])


def _sort_key(k: tuple) -> tuple:
    dataset, depth, arm, optimizer = k
    return (list(bench.DATASETS).index(dataset), depth, OPTIMIZER_ORDER.get(optimizer, 9), ARM_ORDER.get(arm, 9))


def summarize(results: list[dict], planned: list[dict]) -> dict[tuple, dict]:
    """(dataset, depth, arm, optimizer) -> mean / standard error (scipy.stats.sem, ddof 1) / seeds / planned."""
    from scipy.stats import sem

    groups: dict[tuple, dict] = defaultdict(lambda: {"values": [], "seeds": [], "planned": 0, "seconds": []})
    for e in planned:
        groups[_group_key(e)]["planned"] += 1
    for row in sorted(results, key=lambda r: r["experiment"]["seed"]):
        g = groups[_group_key(row["experiment"])]
        g["values"].append(row["test_mssim"])
        g["seeds"].append(row["experiment"]["seed"])
        g["seconds"].append(row["seconds"])
    for g in groups.values():
        values = np.asarray(g["values"], dtype=float)
        g["n"] = len(values)
        g["mean"] = float(values.mean()) if len(values) else None
        g["sem"] = float(sem(values)) if len(values) > 1 else None
    return dict(sorted(groups.items(), key=lambda kv: _sort_key(kv[0])))


def paper_value(paper: dict, dataset: str, depth: int, arm: str):
    return paper["mssim"].get(dataset, {}).get("plain" if arm == "plain" else "lbe", {}).get(str(depth))


def check_targets(key: tuple, groups: dict, paper: dict) -> list[tuple[str, str]]:
    """[(target text, 'met' / 'missed' / 'pending')] for one table row."""
    dataset, depth, arm, optimizer = key
    mean = groups[key]["mean"]
    out = []
    for t in paper["targets"]:
        if (t["arm"] == "plain") != (arm == "plain"):
            continue
        if "min_depth" in t and depth < t["min_depth"]:
            continue
        if "depths" in t and depth not in t["depths"]:
            continue
        if t["rule"] == "at_most":
            text = f"<= {t['value']:.2f}"
            ok = None if mean is None else mean <= t["value"]
        elif t["rule"] == "at_least":
            text = f">= {t['value']:.2f}"
            ok = None if mean is None else mean >= t["value"]
        elif t["rule"] == "within_of_plain":
            plain = groups.get((dataset, depth, "plain", optimizer), {}).get("mean")
            text = f"plain +- {t['value']:.2f}"
            ok = None if mean is None or plain is None else abs(mean - plain) <= t["value"]
        else:
            raise ValueError(f"paper.json: unknown target rule {t['rule']!r}")
        out.append((text, "pending" if ok is None else ("met" if ok else "missed")))
    return out


# ---- pictures --------------------------------------------------------------------------------------------------


def reconstruction_figure(rows: list[dict], dataset: str, depth: int, path: Path) -> bool:
    """Original / plain / LBE for the same test images: the lowest seed that has plain and an LBE arm (AdamW)."""
    candidates = [
        r for r in rows
        if r["experiment"]["dataset"] == dataset and r["experiment"]["depth"] == depth
        and r["experiment"]["optimizer"] == "adamw" and r.get("pictures")
    ]  # fmt: skip
    by_seed = defaultdict(dict)
    for r in candidates:
        by_seed[r["experiment"]["seed"]][r["experiment"]["arm"]] = r
    seeds = [s for s in sorted(by_seed) if "plain" in by_seed[s] and len(by_seed[s]) > 1]
    if not seeds:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = by_seed[seeds[0]]
    arms = sorted(chosen, key=lambda a: ARM_ORDER.get(a, 9))
    originals = bench.decode_pictures(chosen["plain"]["pictures"]["originals"])
    panels = [("original", originals)] + [
        (
            f"{arm}\nMSSIM {chosen[arm]['test_mssim']:.3f}",
            bench.decode_pictures(chosen[arm]["pictures"]["reconstructions"]),
        )
        for arm in arms
    ]
    n = originals.shape[0]
    fig, axes = plt.subplots(len(panels), n, figsize=(1.1 * n + 1.2, 1.15 * len(panels)), squeeze=False)
    for i, (label, images) in enumerate(panels):
        for j in range(n):
            ax = axes[i][j]
            ax.imshow(images[j, 0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"{DATASET_NAMES[dataset]}, depth {depth}, seed {seeds[0]}, AdamW: first {n} test images", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def curves_figure(rows: list[dict], path: Path) -> bool:
    """Validation MSSIM per epoch, mean over seeds, one panel per (dataset, depth), one line per arm x optimizer."""
    rows = [r for r in rows if r.get("curve")]
    panels = sorted({(r["experiment"]["dataset"], r["experiment"]["depth"]) for r in rows},
                    key=lambda p: (list(bench.DATASETS).index(p[0]), p[1]))  # fmt: skip
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.4 * cols, 2.6 * nrows), squeeze=False)
    colors = {"plain": "tab:red", "lbe_authors": "tab:blue", "lbe_default": "tab:green"}
    for ax, (dataset, depth) in zip(axes.flat, panels):
        lines = defaultdict(list)
        for r in rows:
            e = r["experiment"]
            if (e["dataset"], e["depth"]) == (dataset, depth):
                lines[(e["arm"], e["optimizer"])].append(r["curve"])
        for (arm, optimizer), curves in sorted(lines.items(), key=lambda kv: (ARM_ORDER.get(kv[0][0], 9), kv[0][1])):
            length = min(len(c) for c in curves)
            y = np.mean([[p["val_mssim"] for p in c[:length]] for c in curves], axis=0)
            x = [p["epoch"] for p in curves[0][:length]]
            ax.plot(x, y, color=colors.get(arm, "k"), linestyle="-" if optimizer == "adamw" else "--",
                    label=f"{arm} {optimizer} (n={len(curves)})")  # fmt: skip
        ax.set_title(f"{DATASET_NAMES[dataset]}, depth {depth}", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("validation MSSIM", fontsize=8)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# ---- the README ------------------------------------------------------------------------------------------------


def write_report(
    results_path: Path,
    experiments_path: Path = HERE / "experiments.json",
    defaults_path: Path = HERE / "defaults.json",
    paper_path: Path = HERE / "paper.json",
) -> Path:
    results_path = Path(results_path)
    out_dir = results_path.parent
    readme = out_dir / "README.md"
    defaults = bench.load_json(Path(defaults_path))
    experiments = bench.load_json(Path(experiments_path))
    paper = bench.load_json(Path(paper_path))
    planned = bench.expand(experiments)
    all_rows = bench.read_results(results_path)
    rows = [r for r in all_rows if is_full(r)]
    # The last line of a key wins (a run redone after deleting its line would otherwise count twice).
    rows = list({r["key"]: r for r in rows}.values())
    done = {r["key"] for r in rows}
    missing = [e for e in planned if bench.key_of(e) not in done]
    groups = summarize(rows, planned)
    rel = results_path.name

    md = [
        "# Deep autoencoders with and without LBE (the paper's Table 3)",
        "",
        f"<!-- Generated by `python benchmarks/autoencoder/run.py --report` from `{rel}`, `experiments.json`, "
        "`defaults.json` and `paper.json`; do not edit by hand. -->",
        "",
        "**Question.** Peer et al. (TMLR 2022, Sec. 4.3, Table 3) train fully connected autoencoders with D hidden "
        "layers in the encoder and again in the decoder. Without LBE they report a collapse to the mean image from "
        "D = 10 on; with layerwise batch-entropy regularization the deep ones train, and D = 1 is unchanged. Does "
        "that hold with `lbe_hf` (plain `transformers.Trainer` vs `lbe_hf.LBETrainer`, everything else equal)?",
        "",
        f"Status: {len(rows)} of {len(planned)} planned runs finished"
        + (f" (last {max(r['finished'] for r in rows)})" if rows else "")
        + (f"; {len(all_rows) - len(rows)} result lines with overrides (`--epochs` ...) are not counted"
           if len(all_rows) != len(rows) else "")
        + ".",
        "",
    ]  # fmt: skip

    # ---- summary of the targets
    verdicts = []
    for key, g in groups.items():
        for text, status in check_targets(key, groups, paper):
            if status != "pending":
                verdicts.append((key, text, status, g))
    md += ["## Targets", ""]
    target_lines = []
    for t in paper["targets"]:
        where = f"depth >= {t['min_depth']}" if "min_depth" in t else "depth " + ", ".join(map(str, t["depths"]))
        what = {
            "at_most": f"mean test MSSIM <= {t['value']:.2f}",
            "at_least": f"mean test MSSIM >= {t['value']:.2f}",
            "within_of_plain": f"mean test MSSIM within {t['value']:.2f} of plain (same dataset, depth, optimizer)",
        }[t["rule"]]
        arm = "plain" if t["arm"] == "plain" else "every LBE arm"
        target_lines.append(f"- {t['name']}: {arm} at {where}: {what}.")
    md += target_lines + [""]
    if verdicts:
        met = sum(v[2] == "met" for v in verdicts)
        md.append(f"So far {met} of {len(verdicts)} checks with results are met:")
        md.append("")
        for (dataset, depth, arm, optimizer), text, status, g in verdicts:
            md.append(
                f"- {DATASET_NAMES[dataset]} D={depth} {arm} {optimizer}: {_fmt(g['mean'])} "
                f"(n={g['n']}) vs {text}: **{status}**"
            )
        md.append("")
    else:
        md += ["No check has results yet.", ""]
    adamw = groups.get(("mnist", 10, "plain", "adamw"), {})
    adam_l2 = groups.get(("mnist", 10, "plain", "adam_l2"), {})
    if adamw.get("n") and adam_l2.get("n"):
        md += [
            f"Optimizer question (MNIST D=10, plain): AdamW {_fmt(adamw['mean'])} (n={adamw['n']}) vs torch Adam + "
            f"L2 {_fmt(adam_l2['mean'])} (n={adam_l2['n']}).",
            "",
        ]

    # ---- main table
    table = []
    for key, g in groups.items():
        dataset, depth, arm, optimizer = key
        checks = check_targets(key, groups, paper)
        table.append([
            DATASET_NAMES[dataset], depth, arm, optimizer, f"{g['n']}/{g['planned']}",
            _fmt(g["mean"]), _fmt(g["sem"]), _fmt(paper_value(paper, dataset, depth, arm), 2),
            "; ".join(t for t, _ in checks) or "-", "; ".join(s for _, s in checks) or "-",
        ])  # fmt: skip
    md += [
        "## Results: test MSSIM",
        "",
        "Mean over seeds of the test images' mean SSIM (`lbe_hf.models.autoencoder.mean_ssim`: Gaussian window, "
        "sigma 1.5, as torchmetrics' `ssim` the authors used), standard error of the mean over seeds "
        "(`scipy.stats.sem`), n = finished / planned seeds. Paper = Table 3 (its LBE column for every LBE arm; "
        "'-' where the brief gives no number). Status: whether these runs reproduce the paper's claim.",
        "",
        md_table(["dataset", "D", "arm", "optimizer", "n", "MSSIM", "SEM", "paper", "target", "status"], table),
        "",
    ]

    def late_gain(r: dict) -> float | None:
        """Validation MSSIM gained over the last 10 epochs: > 0 means still improving when training stopped."""
        c = r.get("curve") or []
        return c[-1]["val_mssim"] - c[-11]["val_mssim"] if len(c) > 10 else None

    per_run = [
        [r["run_name"], _fmt(r["test_mssim"]), _fmt(late_gain(r)), _fmt(r["final_train_loss"], 4),
         _fmt(r["final_val_loss"], 4), f"{r['final_lr']:.1e}", _fmt(r["seconds"] / 60, 1)]
        for r in sorted(rows, key=lambda r: (_sort_key(_group_key(r["experiment"])), r["experiment"]["seed"]))
    ]  # fmt: skip
    if per_run:
        headers = ["run", "test MSSIM", "val MSSIM gain, last 10 epochs", "final train BCE", "final val BCE",
                   "final lr", "minutes"]  # fmt: skip
        gains = defaultdict(list)
        for r in rows:
            if late_gain(r) is not None:
                gains["LBE" if r["experiment"]["arm"] != "plain" else "plain"].append(late_gain(r))
        md += [
            "<details><summary>Every run</summary>",
            "",
            md_table(headers, per_run),
            "",
            "</details>",
            "",
        ]
        if gains:
            md += [
                "Still improving at the end? Mean validation-MSSIM gain over the last 10 epochs: "
                + ", ".join(f"{arm} {np.mean(v):+.3f} (n={len(v)})" for arm, v in sorted(gains.items()))
                + ".",
                "",
            ]

    # ---- pictures
    pictures = []
    for dataset in bench.DATASETS:
        for depth in (10, 25):
            name = f"reconstructions_{dataset}_d{depth}.png"
            if reconstruction_figure(rows, dataset, depth, out_dir / name):
                pictures.append(f"![{DATASET_NAMES[dataset]} depth {depth} reconstructions]({name})")
    if pictures:
        md += ["## Reconstructions", "", "Test images (top row) and their reconstructions by the final models.", ""]
        md += [p + "\n" for p in pictures]
    if curves_figure(rows, out_dir / "curves.png"):
        md += [
            "## Validation MSSIM per epoch",
            "",
            "Mean over seeds; solid AdamW, dashed torch Adam + L2.",
            "",
            "![validation curves](curves.png)",
            "",
        ]

    # ---- setup
    s = {k: v for k, v in defaults.items() if not k.startswith("_")}
    sizes = defaultdict(set)
    for r in rows:
        sizes[r["experiment"]["dataset"]].add((r["n_train"], r["n_val"], r["n_test"]))
    size_text = "; ".join(
        f"{DATASET_NAMES[d]}: " + ", ".join(f"{a} train / {b} validation / {c} test" for a, b, c in sorted(v))
        for d, v in sizes.items()
    )
    arms_text = "; ".join(
        f"`{arm}`: " + ("plain `transformers.Trainer`" if cfg is None else
                        f"`LBETrainer`, `BatchEntropyConfig({', '.join(f'{k}={v}' for k, v in cfg.items())})`")
        for arm, cfg in s["arms"].items()
    )  # fmt: skip
    md += [
        "## Setup (`defaults.json`)",
        "",
        f"- Model: `AutoencoderForImageReconstruction`, D hidden layers of {s['width']} units (Linear + ReLU) in the "
        f"encoder and again in the decoder, linear bottleneck of {s['bottleneck']}, init `{s['init']}` (PyTorch's "
        "default `nn.Linear` init, as the authors' code), BCE on sigmoid outputs, pixels in [0, 1].",
        f"- Training: {s['epochs']} epochs, batch {s['batch_size']}, lr {s['learning_rate']}, weight decay "
        f"{s['weight_decay']}, lr x {s['plateau_factor']} when the validation loss has not improved for "
        f'{s["plateau_patience"]} epochs (`lr_scheduler_type="reduce_lr_on_plateau"`), one CPU thread.',
        f"- Arms: {arms_text}. LBE regularizes every hidden ReLU output of encoder and decoder and the latent "
        "code (the model's default targets, the authors' A).",
        "- Optimizers: " + "; ".join(f"`{k}`: {v}" for k, v in s["optimizers"].items()) + ".",
        f"- Data: MNIST is `lbe_hf.tasks.data.mnist_split` (only MNIST's 10k test images are available offline: the "
        f"first {s['mnist_train_images']} are the training pool, the rest the test images); Fashion-MNIST is "
        f"`fashion_mnist_split` (Debian's `dataset-fashion-mnist`, 60k / 10k). From each training pool "
        f"{', '.join(f'{k} {v}' for k, v in s['val_images'].items())} images (a fixed random subset, split seed "
        f"{s['split_seed']}) are the validation set that drives the schedule; the test images are used once, at "
        "the end." + (f" Sizes in these results: {size_text}." if size_text else ""),
        "- Same seed for both arms: the same initial weights, batch order and data.",
        "",
        "Departures from the authors' runs: AdamW's decoupled decay by default (`adam_l2` is their torch Adam); "
        "Trainer leaves biases (and the LBE alphas) undecayed in both, the authors decayed every parameter; the "
        "LBE arms' validation loss is the plain BCE (the authors' included the LBE term); MNIST trains on "
        "part of MNIST's test images (the authors: 50k of the 60k training images, 10k validation); the last "
        "partial batch of an epoch is kept (the authors dropped it); SSIM by scikit-image rather than "
        "torchmetrics (same window and constants).",
        "",
    ]

    # ---- cost
    if rows:
        cost = defaultdict(list)
        for r in rows:
            e = r["experiment"]
            cost[(e["dataset"], e["depth"], e["arm"] != "plain")].append(r["seconds"])
        cost_rows = [
            [DATASET_NAMES[d], depth, "LBE" if lbe else "plain", len(v), _fmt(float(np.median(v)) / 60, 1)]
            for (d, depth, lbe), v in sorted(
                cost.items(), key=lambda kv: (list(bench.DATASETS).index(kv[0][0]), kv[0][1], kv[0][2])
            )
        ]  # fmt: skip
        by_size = defaultdict(list)
        for r in rows:
            by_size[(r["experiment"]["dataset"], r["experiment"]["depth"])].append(r["seconds"])
        left, unknown = 0.0, 0
        for e in missing:
            v = by_size.get((e["dataset"], e["depth"]))
            if v:
                left += float(np.median(v))
            else:
                unknown += 1
        md += [
            "## Cost",
            "",
            f"Wall time per run on one CPU thread (a resumed run counts its segments up to its last checkpoint). "
            f"Finished runs so far: {sum(r['seconds'] for r in rows) / 3600:.2f} hours. Left: {len(missing)} runs, "
            f"about {left / 3600:.2f} hours for those of sizes already timed"
            + (f", plus {unknown} of sizes not timed yet" if unknown else "") + ".",
            "",
            md_table(["dataset", "D", "arm", "runs", "median minutes"], cost_rows),
            "",
        ]  # fmt: skip

    # ---- commands
    md += [
        "## Commands",
        "",
        "```bash",
        "# MNIST: $LBE_DATA_DIR/mnist holds MNIST's t10k idx files",
        "# Fashion-MNIST: apt-get install dataset-fashion-mnist",
        "export LBE_DATA_DIR=/path/to/shared/data OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1",
        "python benchmarks/autoencoder/run.py --dry_run                        # what is missing, in run order",
        "python benchmarks/autoencoder/run.py                                  # run it all (rerun to resume)",
        "python benchmarks/autoencoder/run.py --filter dataset=mnist,depth=10  # a subset",
        "python benchmarks/autoencoder/run.py --report                         # this README from results.jsonl",
        "python -m pytest benchmarks/autoencoder/test_autoencoder_benchmark.py",
        "```",
        "",
        "Each line of `results.jsonl` holds its experiment, the settings, the per-epoch curve, the software versions "
        "and the command that produced it. Checkpoints live under `runs/autoencoder/<run>/` (git-ignored); a "
        "killed run resumes from its last complete checkpoint; a finished run's checkpoints are deleted.",
        "",
    ]
    if missing:
        by_group = []
        for group in experiments["groups"]:
            keys = {bench.key_of(e) for e in bench.expand({"groups": [group]})}
            left = sum(bench.key_of(e) in keys for e in missing)
            if left:
                by_group.append(f"- {group['name']}: {left} of {len(keys)} runs to go")
        md += ["## Still to run", "", *by_group, ""]
    versions = sorted({(r["torch"], r["transformers"], r["lbe_hf"], r["python"], r["threads"]) for r in rows})
    if versions:
        md += [
            "## Software",
            "",
            *[f"- torch {a}, transformers {b}, lbe_hf {c}, Python {d}, {t} thread(s)" for a, b, c, d, t in versions],
            "",
        ]
    readme.write_text("\n".join(md).rstrip() + "\n", encoding="utf-8")
    return readme


if __name__ == "__main__":
    print(write_report(Path(sys.argv[1]) if len(sys.argv) > 1 else bench.DEFAULT_RESULTS))
