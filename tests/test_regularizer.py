import logging

import pytest
import torch
from helpers import tiny_bert
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from lbe_hf import BatchEntropyConfig, LBERegularizer


def saved_regularized_model(folder, alphas=(0.7, 0.9)):
    """A tiny BERT saved with `save_pretrained` and learned-looking alphas beside it, as `save_model` leaves it."""
    model = tiny_bert()
    reg = LBERegularizer(model, BatchEntropyConfig(alpha=0.5))
    with torch.no_grad():
        model.lbe_alphas.alpha.copy_(torch.tensor(alphas))
    model.save_pretrained(folder)
    reg.save_pretrained(folder)
    reg.remove()
    return folder


def test_model_loaded_from_a_saved_folder_continues_with_its_alphas(tmp_path, caplog):
    folder = saved_regularized_model(tmp_path / "saved")
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    with caplog.at_level(logging.INFO, logger="lbe_hf.regularizer"):
        reg = LBERegularizer(model, BatchEntropyConfig(alpha=0.5))
    assert reg.alphas.tolist() == pytest.approx([0.7, 0.9])
    assert any(
        "continuing with the 2 alphas saved in" in r.getMessage() and str(folder) in r.getMessage()
        for r in caplog.records
    )


def test_saved_alphas_for_other_modules_are_left_with_a_warning(tmp_path, caplog):
    folder = saved_regularized_model(tmp_path / "saved")
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    config = BatchEntropyConfig(alpha=0.5, target_modules=["bert.encoder.layer.1.output.dense"])
    with caplog.at_level(logging.WARNING, logger="lbe_hf.regularizer"):
        reg = LBERegularizer(model, config)
    assert reg.alphas.tolist() == [0.5]
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "saved but not regularized now: ['bert.encoder.layer.0.output.dense']" in message
    assert "start from alpha=0.5" in message


def test_auto_alpha_is_not_measured_when_saved_alphas_are_loaded(tmp_path):
    folder = saved_regularized_model(tmp_path / "saved")
    reg = LBERegularizer(AutoModelForSequenceClassification.from_pretrained(folder), BatchEntropyConfig(alpha="auto"))
    assert reg.auto_alpha is None and reg.alphas.tolist() == pytest.approx([0.7, 0.9])


def test_a_fresh_model_starts_from_config_alpha():
    assert LBERegularizer(tiny_bert(), BatchEntropyConfig(alpha=0.3)).alphas.tolist() == pytest.approx([0.3, 0.3])


def test_damaged_alphas_file_is_an_error_naming_it(tmp_path):
    folder = saved_regularized_model(tmp_path / "saved")
    path = folder / "lbe_alphas.safetensors"
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(ValueError, match=rf"{path} could not be read .* damaged or was cut short"):
        LBERegularizer(AutoModelForSequenceClassification.from_pretrained(folder))


def test_save_pretrained_writes_alphas_with_module_names(tmp_path):
    reg = LBERegularizer(tiny_bert())
    reg.save_pretrained(tmp_path)
    assert load_file(tmp_path / "lbe_alphas.safetensors")["alpha"].tolist() == [0.5, 0.5]
    assert BatchEntropyConfig.from_pretrained(tmp_path) == reg.config
