import pytest
from transformers import HfArgumentParser, TrainingArguments

from lbe_hf import BatchEntropyConfig, LBEArguments


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"beta": -0.1}, "beta must be >= 0"),
        ({"alpha_min": 0.0}, "alpha_min must be > 0"),
        ({"alpha_min": -1}, "alpha_min must be > 0"),
        ({"alpha": float("nan")}, "alpha must be a finite number"),
        ({"alpha": "high"}, "alpha must be a number"),
        ({"entropy_constant": "e"}, "entropy_constant must be one of"),
        ({"entropy_mode": "tokens"}, "entropy_mode must be"),
        ({"on_nonfinite": "ignore"}, "on_nonfinite must be"),
        ({"target_modules": []}, "non-empty list"),
        ({"target_modules": 3}, "regex string"),
        ({"alpha": 0}, r"alpha must be > 0, got 0: .* act as 0.2"),
        ({"alpha": -1.0}, r"alpha must be > 0, got -1.0: .* act as 1.0"),
    ],
)
def test_invalid_values_say_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchEntropyConfig(**kwargs)


def test_defaults_and_constant():
    config = BatchEntropyConfig()
    assert (config.alpha, config.beta, config.alpha_min) == (0.5, 0.5, 0.2)
    assert config.constant == pytest.approx(8.5397, rel=1e-4)  # pi * e
    assert BatchEntropyConfig(entropy_constant="2pi_e").constant == pytest.approx(2 * config.constant)


def test_save_and_load_round_trip(tmp_path):
    config = BatchEntropyConfig(alpha=0.3, beta=0.05, target_modules=["dense"], entropy_mode="token")
    config.save_pretrained(tmp_path)
    assert BatchEntropyConfig.from_pretrained(tmp_path) == config


def test_prefixed_flags_parse_next_to_training_arguments(tmp_path):
    parser = HfArgumentParser((TrainingArguments, LBEArguments))
    training, lbe = parser.parse_args_into_dataclasses(
        [
            "--output_dir", str(tmp_path), "--learning_rate", "3e-5",
            "--lbe_alpha", "0.8", "--lbe_beta", "0.01", "--lbe_target_regex", r".*layer\.\d+\.output\.dense",
            "--lbe_exclude_modules", "layer.0.output.dense", "layer.1.output.dense",
        ]
    )  # fmt: skip
    config = lbe.to_config()
    assert training.learning_rate == 3e-5
    assert (config.alpha, config.beta) == (0.8, 0.01)
    assert config.target_modules == r".*layer\.\d+\.output\.dense"  # --lbe_target_regex: a regex (full match)
    assert config.exclude_modules == ["layer.0.output.dense", "layer.1.output.dense"]
    defaults = parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path)])[1].to_config()
    assert defaults == BatchEntropyConfig()


def test_module_names_and_regex_flags_are_separate(tmp_path):
    parser = HfArgumentParser((LBEArguments,))
    (names,) = parser.parse_args_into_dataclasses(["--lbe_target_modules", "fc1", "layers.0.act"])
    assert names.to_config().target_modules == ["fc1", "layers.0.act"]  # names, even with a '.' in them
    (both,) = parser.parse_args_into_dataclasses(["--lbe_target_modules", "fc1", "--lbe_target_regex", ".*fc1"])
    with pytest.raises(ValueError, match="not both"):
        both.to_config()
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--lbe_entropy_mode", "tokens"])  # a closed set: argparse refuses it


def test_every_config_field_has_a_flag():
    import dataclasses

    flags = {f.name for f in dataclasses.fields(LBEArguments)}
    assert {f"lbe_{f.name}" for f in dataclasses.fields(BatchEntropyConfig)} <= flags


def test_alpha_below_alpha_min_warns_that_the_targets_are_frozen():
    with pytest.warns(UserWarning, match="below alpha_min=0.2: .* stay frozen"):
        BatchEntropyConfig(alpha=0.1)


def test_damaged_config_file_is_an_error_naming_it(tmp_path):
    BatchEntropyConfig().save_pretrained(tmp_path)
    path = tmp_path / "lbe_config.json"
    path.write_text(path.read_text()[:20])
    with pytest.raises(ValueError, match=rf"{path} is not valid JSON .* cut short"):
        BatchEntropyConfig.from_pretrained(tmp_path)
