"""Vision adapters (torchvision wrapper, autoencoder), LBETrainer on real MNIST, and scripts/run_vision.py."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModel, AutoModelForImageClassification, TrainingArguments

from lbe_hf import BatchEntropyConfig, LBETrainer
from lbe_hf.models import (
    AutoencoderConfig,
    AutoencoderForImageReconstruction,
    FNNConfig,
    FNNForImageClassification,
    TorchvisionConfig,
    TorchvisionForImageClassification,
    mean_ssim,
    reconstruction_metrics,
)
from lbe_hf.tasks.data import TensorDictDataset, default_mnist_folder, load_mnist_idx

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
MNIST = default_mnist_folder()


@pytest.fixture(scope="module")
def mnist() -> tuple[torch.Tensor, torch.Tensor]:
    if not MNIST.is_dir():
        pytest.skip(f"no MNIST idx files at {MNIST} (set LBE_DATA_DIR)")
    x, y = load_mnist_idx(MNIST)
    return x[:256], y[:256]


@pytest.fixture(scope="module")
def run_vision():
    spec = importlib.util.spec_from_file_location("run_vision", ROOT / "scripts" / "run_vision.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _resnet(**kwargs) -> TorchvisionForImageClassification:
    torch.manual_seed(0)
    return TorchvisionForImageClassification(TorchvisionConfig(architecture="resnet18", **kwargs))


@pytest.mark.parametrize(
    "make, auto",
    [
        (lambda: _resnet(in_channels=1, num_labels=3, small_input=True), AutoModelForImageClassification),
        (lambda: AutoencoderForImageReconstruction(AutoencoderConfig(depth=3, width=32)), AutoModel),
        (
            lambda: FNNForImageClassification(FNNConfig(depth=3, width=32, num_labels=3)),
            AutoModelForImageClassification,
        ),
    ],
    ids=["resnet18", "autoencoder", "fnn"],
)
def test_save_load_round_trip_is_exact(tmp_path, make, auto):
    model = make().eval()
    model.save_pretrained(tmp_path)
    loaded = auto.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        a, b = model(pixel_values=x), loaded(pixel_values=x)
    key = "reconstruction" if isinstance(model, AutoencoderForImageReconstruction) else "logits"
    assert torch.equal(a[key], b[key])
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), loaded.state_dict().values()))


@pytest.fixture(scope="module")
def resnet() -> TorchvisionForImageClassification:
    return _resnet(in_channels=1)


def test_post_init_keeps_torchvision_init(resnet):
    model = resnet
    conv = model.model.layer1[0].conv1.weight.detach()  # Kaiming normal, fan-out: std sqrt(2 / (64 * 3 * 3)) = 0.059
    assert abs(float(conv.std()) - (2 / (64 * 9)) ** 0.5) < 0.006  # post_init's N(0, 0.02) would give 0.02
    assert model.model.conv1.in_channels == 1
    assert model.model.fc.out_features == 10


def test_default_lbe_targets_per_family():
    def targets(arch: str) -> list[str]:
        with torch.device("meta"):  # the architecture only, no memory
            return TorchvisionForImageClassification(TorchvisionConfig(architecture=arch))._lbe_target_modules

    assert targets("resnet18") == [f"model.layer{s}.{b}.bn1" for s in range(1, 5) for b in range(2)]
    resnet50 = targets("resnet50")
    assert len(resnet50) == 2 * 16 and {t.rsplit(".", 1)[1] for t in resnet50} == {"bn1", "bn2"}
    assert targets("vgg11") == [f"model.features.{i}" for i in (1, 4, 7, 9, 12, 14, 17, 19)]  # every conv's ReLU
    mobilenet = targets("mobilenet_v3_small")
    assert mobilenet and not any(".fc" in t or "SqueezeExcitation" in t for t in mobilenet)


def test_resnet_target_holds_the_activation_after_relu(resnet):
    """bn1's output is ReLU'd in place by torchvision's block: the stored tensor is what conv2 receives."""
    seen = {}
    handle = resnet.model.layer1[0].bn1.register_forward_hook(lambda m, i, o: seen.setdefault("bn1", o))
    with torch.no_grad():
        resnet.train()(pixel_values=torch.rand(4, 1, 28, 28))
    handle.remove()
    assert seen["bn1"].min() >= 0 and (seen["bn1"] == 0).any()


def test_lbe_trainer_trains_resnet_on_mnist(tmp_path, mnist):
    x, y = mnist
    model = _resnet(in_channels=1, num_labels=10)
    before = model.model.layer2[0].conv1.weight.detach().clone()
    args = TrainingArguments(
        str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1,
        report_to="none", save_strategy="no", use_cpu=True, seed=0,
    )  # fmt: skip
    trainer = LBETrainer(model=model, args=args, train_dataset=TensorDictDataset(x, y))
    assert trainer.lbe_module_names == model._lbe_target_modules
    trainer.train()
    assert not torch.allclose(trainer.alphas, torch.full_like(trainer.alphas, 0.5))
    assert not torch.equal(before, model.model.layer2[0].conv1.weight)
    logged = [entry for entry in trainer.state.log_history if "entropy_mean" in entry]
    assert logged and all(entry["entropy_mean"] > 0 for entry in logged)


def test_lbe_trainer_trains_autoencoder_on_mnist_and_reports_ssim(tmp_path, mnist):
    x, _ = mnist
    torch.manual_seed(0)
    model = AutoencoderForImageReconstruction(AutoencoderConfig(depth=3, width=64))
    assert len(model._lbe_target_modules) and len(model.encoder.layers) == 3
    args = TrainingArguments(
        str(tmp_path), max_steps=6, per_device_train_batch_size=32, learning_rate=1e-3, logging_steps=2,
        report_to="none", save_strategy="no", use_cpu=True, seed=0, per_device_eval_batch_size=64,
    )  # fmt: skip
    trainer = LBETrainer(
        model=model,
        args=args,
        lbe_config=BatchEntropyConfig(alpha=2.5, beta=0.5, alpha_min=0.5),
        train_dataset=TensorDictDataset(x[:192], x[:192]),
        eval_dataset=TensorDictDataset(x[192:], x[192:]),
        compute_metrics=reconstruction_metrics,
    )
    # encoder 3 + bottleneck + decoder 3, as the authors' A = a_enc + [z] + a_dec
    assert len(trainer.lbe_module_names) == 7 and "encoder.bottleneck" in trainer.lbe_module_names
    first = trainer.evaluate()
    trainer.train()
    assert not torch.allclose(trainer.alphas, torch.full_like(trainer.alphas, 2.5))
    last = trainer.evaluate()
    assert last["eval_loss"] < first["eval_loss"]
    assert -1 <= last["eval_ssim"] <= 1 and last["eval_ssim"] != first["eval_ssim"]


def test_mean_ssim_uses_real_ssim(mnist):
    x, _ = mnist
    assert mean_ssim(x[:8], x[:8]) == pytest.approx(1.0)
    assert mean_ssim(torch.rand(8, 1, 28, 28), x[:8]) < 0.2
    with pytest.raises(ValueError, match="shape"):
        mean_ssim(x[:8], x[:4])


def test_bad_model_name_and_channel_mismatch_give_clear_errors(resnet):
    with pytest.raises(ValueError, match="resnet18"):
        TorchvisionConfig(architecture="resnet19")
    with pytest.raises(ValueError, match="in_channels=3"):
        resnet.eval()(pixel_values=torch.rand(2, 3, 32, 32))
    ae = AutoencoderForImageReconstruction(AutoencoderConfig(depth=1, width=8))
    with pytest.raises(ValueError, match="num_channels"):
        ae(pixel_values=torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="small_input"):
        TorchvisionForImageClassification(TorchvisionConfig(architecture="mobilenet_v3_small", small_input=True))


def test_script_rejects_bad_model_and_mismatched_checkpoint_before_training(tmp_path, run_vision):
    base = ["--data_dir", str(MNIST), "--output_dir", str(tmp_path / "out"), "--do_train", "--report_to", "none"]
    with pytest.raises(ValueError, match="'fnn', 'autoencoder' or a torchvision"):  # at parse time, before any data
        run_vision.main(base + ["--model", "resnet19", "--data_dir", str(tmp_path / "missing")])
    rgb = tmp_path / "rgb"
    _resnet(in_channels=3).save_pretrained(rgb)
    with pytest.raises(ValueError, match="in_channels=3"):
        run_vision.main(base + ["--model_name_or_path", str(rgb)])
    assert not (tmp_path / "out").exists()


def test_script_trains_evaluates_and_resumes(tmp_path, run_vision):
    out = tmp_path / "out"
    argv = [
        "--model", "autoencoder", "--depth", "2", "--width", "32", "--data_dir", str(MNIST),
        "--max_train_samples", "64", "--max_eval_samples", "32", "--output_dir", str(out), "--do_train",
        "--do_eval", "--per_device_train_batch_size", "16", "--save_steps", "2", "--logging_steps", "1",
        "--report_to", "none", "--use_cpu", "--lbe_alpha", "2.0", "--lbe_alpha_min", "0.5",
    ]  # fmt: skip
    first = run_vision.main(argv + ["--max_steps", "2"])
    assert "eval_ssim" in first and first["alphas"] != [2.0] * len(first["alphas"])
    saved = out / "checkpoint-2" / "lbe_alphas.safetensors"
    # Mark the checkpoint's alphas: only a run that resumes from it starts at 3.0 (a fresh run starts at 2.0).
    save_file({"alpha": torch.full((len(first["alphas"]),), 3.0)}, saved, metadata=safe_open(saved, "pt").metadata())
    second = run_vision.main(argv + ["--max_steps", "4"])
    assert all(abs(a - 3.0) < 0.01 for a in second["alphas"]) and second["alphas"] != [3.0] * len(first["alphas"])
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert (out / "lbe_alphas.safetensors").is_file() and (out / "model.safetensors").is_file()
    assert isinstance(AutoModel.from_pretrained(out), AutoencoderForImageReconstruction)


def test_configs_parse_and_name_their_command(run_vision):
    configs = sorted((ROOT / "configs" / "vision").glob("*.yaml"))
    assert len(configs) >= 4
    for path in configs:
        first_line = path.read_text().splitlines()[0]
        assert first_line.startswith("# ") and f"configs/vision/{path.name}" in first_line, path
        vision_args, training_args, lbe_args = run_vision.parse([str(path), "--output_dir", "/tmp/unused"])
        values = yaml.safe_load(path.read_text())
        assert vision_args.model == values["model"] and lbe_args.to_config().beta == values["lbe_beta"]
        assert training_args.learning_rate == values["learning_rate"]


def test_script_reads_hub_style_splits_and_image_folders(tmp_path, run_vision, mnist):
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    x, y = mnist
    pixels = (x[:6, 0] * 255).round().to(torch.uint8)
    features = Features({"image": Image(), "label": ClassLabel(num_classes=10)})
    split = Dataset.from_dict({"image": list(pixels.numpy()), "label": y[:6].tolist()}, features=features)
    images, labels = run_vision.from_hf_split(split, "image", "label")  # what load_hub does with ylecun/mnist
    assert images.shape == (6, 1, 28, 28) and torch.equal(images[:, 0], pixels) and torch.equal(labels, y[:6])

    for part, rows in (("train", range(5)), ("test", range(5, 6))):  # labels 7 2 1 0 4 | 1
        for i in rows:
            (tmp_path / part / f"digit{int(y[i])}").mkdir(parents=True, exist_ok=True)
            PILImage.fromarray(pixels[i].numpy()).save(tmp_path / part / f"digit{int(y[i])}" / f"{i}.png")
    (train_x, _), (test_x, test_y), num_labels = run_vision.load_local(tmp_path, idx_train_samples=0)
    assert train_x.shape == (5, 1, 28, 28) and test_x.shape == (1, 1, 28, 28) and num_labels == 5
    # Ids follow train's sorted class folders (digit0 digit1 digit2 digit4 digit7), not test's (only digit1).
    assert test_y.tolist() == [1]
    with pytest.raises(ValueError, match="train/ and test/"):
        run_vision.load_local(tmp_path / "train", idx_train_samples=0)


def test_pushed_files_load_with_trust_remote_code(tmp_path):
    """What --push_to_hub uploads: the model file travels with the weights, so the Hub repo loads without lbe_hf."""
    model = AutoencoderForImageReconstruction(AutoencoderConfig(depth=1, width=8))
    try:
        model.config.register_for_auto_class()
        type(model).register_for_auto_class("AutoModel")
        model.save_pretrained(tmp_path)
    finally:
        AutoencoderConfig._auto_class = AutoencoderForImageReconstruction._auto_class = None
    source = (tmp_path / "autoencoder.py").read_text()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "autoencoder.AutoencoderForImageReconstruction"
    # Standalone: a Hub user without lbe_hf can import it (checked by hand in a fresh process: it loads and runs).
    assert "lbe_hf" not in source and "from ." not in source


def test_from_torchvision_adapts_local_pretrained_weights(tmp_path):
    import torchvision

    torch.manual_seed(1)
    imagenet = (
        torchvision.models.mobilenet_v3_small()
    )  # stands in for a downloaded checkpoint: 3 channels, 1000 classes
    torch.save(imagenet.state_dict(), tmp_path / "weights.pth")
    model = TorchvisionForImageClassification.from_torchvision(
        "mobilenet_v3_small", tmp_path / "weights.pth", in_channels=1, num_labels=10
    )
    stem = imagenet.features[0][0].weight
    assert torch.equal(model.model.features[0][0].weight, stem.sum(dim=1, keepdim=True))  # RGB summed to gray
    assert torch.equal(model.model.features[5].block[1][0].weight, imagenet.features[5].block[1][0].weight)
    assert model.model.classifier[3].out_features == 10 and model.pretrained_missing_keys == [
        "classifier.3.bias",
        "classifier.3.weight",
    ]
    assert model.config.pretrained_weights == "weights.pth"
    with pytest.raises(FileNotFoundError, match="allow_download"):  # named weights: cache only, never downloads
        TorchvisionForImageClassification.from_torchvision("mobilenet_v3_small", "IMAGENET1K_V1", in_channels=1)


def test_from_pretrained_with_new_head_initialises_it(tmp_path):
    torch.manual_seed(0)
    model = TorchvisionForImageClassification(TorchvisionConfig(architecture="mobilenet_v3_small", in_channels=1))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=5, ignore_mismatched_sizes=True)
    head = loaded.model.classifier[3].weight
    assert head.shape == (5, 1024) and torch.isfinite(head).all()
    # PyTorch's default Linear init (|w| <= 1/sqrt(fan_in)), not post_init's N(0, 0.02) and not uninitialised memory
    assert 0 < head.abs().max() <= 1024**-0.5
    assert torch.equal(loaded.model.features[1].block[0][0].weight, model.model.features[1].block[0][0].weight)


# --- FNN inits (FNNConfig(init=...)) and the residual variant ---


def _fnn(**kwargs):
    torch.manual_seed(0)
    return FNNForImageClassification(FNNConfig(**{"input_dim": 64, "depth": 4, "width": 128, **kwargs}))


@pytest.mark.parametrize(("init", "variance"), [("he", 2 / 128), ("torch", 1 / (3 * 128)), ("glorot", 1 / 128)])
def test_fnn_he_torch_and_glorot_init_weight_variance(init, variance):
    layer = _fnn(init=init).layers[2].linear  # 128 -> 128
    assert float(layer.weight.detach().var()) == pytest.approx(variance, rel=0.05)
    if init == "glorot":  # uniform on +-sqrt(6 / (fan_in + fan_out)), zero bias
        assert float(layer.weight.abs().max()) <= (6 / 256) ** 0.5 and float(layer.bias.abs().max()) == 0.0


def test_fnn_orthogonal_init_has_orthogonal_rows_with_gain_sqrt2():
    model = _fnn(init="orthogonal")
    square = model.layers[2].linear.weight  # (128, 128)
    torch.testing.assert_close(square @ square.T, 2 * torch.eye(128), atol=1e-4, rtol=0)
    wide = model.layers[0].linear.weight  # (128, 64): the 64 columns are orthogonal
    torch.testing.assert_close(wide.T @ wide, 2 * torch.eye(64), atol=1e-4, rtol=0)
    assert float(model.layers[2].linear.bias.abs().max()) == 0.0


def test_fnn_lsuv_needs_its_data_batch_then_gives_unit_output_variance(tmp_path):
    from lbe_hf.models.fnn import lsuv_init

    model = _fnn(init="lsuv")
    batch = torch.randn(256, 64) * 3 + 1
    with pytest.raises(RuntimeError, match="lsuv_init"):
        model(pixel_values=batch)  # training mode, not calibrated: refuses
    before = model.layers[2].linear.weight.clone()
    variances = lsuv_init(model, batch)
    assert len(variances) == 5 and all(abs(v - 1) < 0.01 for v in variances)
    # Still orthogonal, only rescaled.
    w = model.layers[2].linear.weight
    gram = w @ w.T
    torch.testing.assert_close(gram, gram[0, 0] * torch.eye(128), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(w, before)
    x = batch
    for block in model.layers:
        assert float(block.linear(x).var()) == pytest.approx(1.0, abs=0.01)
        x = block(x)
    model(pixel_values=batch, labels=torch.zeros(256, dtype=torch.long)).loss.backward()
    model.save_pretrained(tmp_path)  # the calibration travels in config.json
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert reloaded.config.lsuv_calibrated and reloaded.training is False
    reloaded.train()(pixel_values=batch)
    torch.testing.assert_close(reloaded.layers[2].linear.weight, w)
    with pytest.raises(ValueError, match="residual"):
        _fnn(init="lsuv", residual=True)


def test_fnn_residual_blocks_add_their_input_and_stay_bounded_at_depth():
    model = _fnn(init="he", residual=True, depth=200).eval()
    assert not model.layers[0].residual and all(b.residual for b in model.layers[1:])  # 64 -> 128 has no skip
    x = torch.randn(32, 64)
    h0 = model.layers[0](x)
    block = model.layers[1]
    torch.testing.assert_close(block(h0), h0 + torch.relu(block.linear(h0)))
    # Branch weights start at He / 199 (number of residual blocks): the stream neither explodes nor vanishes.
    plain_he = _fnn(init="he", depth=200).layers[1].linear.weight
    torch.testing.assert_close(block.linear.weight * 199, plain_he)
    h = h0
    for b in model.layers[1:]:
        h = b(h)
    assert 0.5 < float(h.pow(2).mean().sqrt() / h0.pow(2).mean().sqrt()) < 3.0
    assert torch.isfinite(model(pixel_values=x).logits).all()


def test_fnn_config_without_new_fields_loads_as_before(tmp_path):
    model = _fnn(init="torch")
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    for key in ("residual", "lsuv_calibrated"):  # a config.json written before these fields existed
        saved.pop(key)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = FNNConfig.from_pretrained(tmp_path)
    assert (config.init, config.residual, config.lsuv_calibrated) == ("torch", False, False)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    x = torch.randn(8, 64)
    torch.testing.assert_close(reloaded(pixel_values=x).logits, model.eval()(pixel_values=x).logits)
    assert FNNConfig().init == "he" and FNNConfig().residual is False


def _write_idx(path: Path, array) -> None:
    import gzip

    import numpy as np

    array = np.asarray(array, dtype=np.uint8)
    header = (2051 if array.ndim == 3 else 2049).to_bytes(4, "big")
    header += b"".join(n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_fashion_mnist_split_reads_train_and_test_files_and_standardises(tmp_path, monkeypatch):
    from lbe_hf.tasks.data import FASHION_MNIST_DIR_ENV, FASHION_MNIST_MEAN, fashion_mnist_split

    gen = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        images = torch.randint(0, 256, (n, 28, 28), generator=gen)
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images.numpy())
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", torch.arange(n).numpy() % 10)
    monkeypatch.setenv(FASHION_MNIST_DIR_ENV, str(tmp_path))
    train, test = fashion_mnist_split()
    assert (len(train), len(test)) == (6, 4)
    assert train.pixel_values.shape == (6, 784) and test.labels.tolist() == [0, 1, 2, 3]
    raw, _ = fashion_mnist_split(tmp_path)
    standardised, _ = fashion_mnist_split(tmp_path, normalize=True)
    assert raw.pixel_values.max() <= 1.0
    assert torch.allclose(standardised.pixel_values[0, 0], (raw.pixel_values[0, 0] - FASHION_MNIST_MEAN) / 0.3530)
    monkeypatch.setenv(FASHION_MNIST_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        fashion_mnist_split()
