"""lbe_hf.targets: the defaults table and the README, composites, the structural fallback, coverage warnings."""

import re
import runpy
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import transformers as tf
from torch import nn

from lbe_hf.models import (
    AutoencoderConfig,
    AutoencoderForImageReconstruction,
    FNNConfig,
    FNNForImageClassification,
    TorchvisionConfig,
    TorchvisionForImageClassification,
)
from lbe_hf.targets import (
    DEFAULT_TARGETS_DOC,
    TARGETS_BY_MODEL_TYPE,
    count_blocks,
    markdown_table,
    model_blocks,
    resolve_target_modules,
    uncovered_blocks,
)

README = Path(__file__).resolve().parents[1] / "README.md"


def tiny_bert(layers=2, **extra):
    torch.manual_seed(0)
    config = tf.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=24, **extra
    )
    return tf.BertForSequenceClassification(config)


def tiny_gpt2(**extra):
    torch.manual_seed(0)
    return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, **extra))


@contextmanager
def no_warnings():
    """A context in which any warning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ---- the table and the README ----


def readme_table() -> str:
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("What is regularized by default"))
    head = next(i for i in range(start, len(lines)) if lines[i].startswith("| kind | family"))
    end = next(i for i in range(head, len(lines)) if not lines[i].startswith("|"))
    return "\n".join(lines[head:end])


def test_readme_table_is_the_code_table():
    assert readme_table() == markdown_table()


def test_module_names_shown_for_each_row_match_its_pattern():
    for row in DEFAULT_TARGETS_DOC:
        for shown in row.modules.split(", "):
            for prefix in ("", "model.", "base_model.model.bert."):
                assert re.fullmatch(row.pattern, prefix + shown.replace(".N.", ".0.").replace(".N", ".1")), shown
        assert all(TARGETS_BY_MODEL_TYPE[t] == row.pattern for t in row.model_types)
    # one row per model_type
    assert len(TARGETS_BY_MODEL_TYPE) == sum(len(row.model_types) for row in DEFAULT_TARGETS_DOC)


@pytest.mark.filterwarnings("ignore:'lbe_hf.targets' found in sys.modules")
def test_module_main_prints_the_table(capsys):
    runpy.run_module("lbe_hf.targets", run_name="__main__")
    assert capsys.readouterr().out.strip() == markdown_table()


# ---- blocks ----


def test_blocks_of_nested_stacks_are_the_innermost_layers():
    torch.manual_seed(0)
    swin = tf.SwinModel(tf.SwinConfig(image_size=16, patch_size=4, embed_dim=8, depths=[2, 1], num_heads=[1, 2]))
    assert model_blocks(swin) == [
        "encoder.layers.0.blocks.0",
        "encoder.layers.0.blocks.1",
        "encoder.layers.1.blocks.0",
    ]
    albert = tf.AlbertModel(
        tf.AlbertConfig(vocab_size=50, embedding_size=8, hidden_size=16, num_hidden_layers=3, num_attention_heads=2)
    )
    assert model_blocks(albert) == ["encoder.albert_layer_groups.0.albert_layers.0"]  # shared: one block
    t5 = tf.T5Model(tf.T5Config(vocab_size=50, d_model=16, d_ff=24, d_kv=8, num_layers=3, num_decoder_layers=1))
    # T5Block's `layer` list mixes attention and FF sublayers: the blocks are the T5Blocks
    assert model_blocks(t5) == ["encoder.block.0", "encoder.block.1", "encoder.block.2", "decoder.block.0"]
    assert count_blocks(t5) == 4


class Expert(nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(4, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.Linear(4, 4)
        self.experts = nn.ModuleList(Expert() for _ in range(3))
        self.out = nn.Linear(4, 4)

    def forward(self, x):
        x = self.attn(x)
        return self.out(sum(e(x) for e in self.experts))


class Net(nn.Module):
    def __init__(self, blocks=3):
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.layers = nn.ModuleList(Block() for _ in range(blocks))

    def forward(self, x):
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return x


def test_expert_lists_are_not_blocks_and_the_fallback_takes_the_last_projection():
    net = Net()
    assert model_blocks(net) == ["layers.0", "layers.1", "layers.2"]
    with pytest.warns(UserWarning, match=r"No LBE default covers 3 block\(s\) of Net.*fallback chose layers.0.out"):
        assert resolve_target_modules(net) == ["layers.0.out", "layers.1.out", "layers.2.out"]


def test_fallback_prefers_the_feed_forward_submodule_on_an_unknown_family():
    torch.manual_seed(0)
    config = tf.GPTJConfig(vocab_size=50, n_embd=16, n_layer=3, n_head=2, rotary_dim=4)
    model = tf.GPTJForCausalLM(config)
    assert config.model_type not in TARGETS_BY_MODEL_TYPE
    with pytest.warns(UserWarning, match=r"model_type 'gptj'.*transformer.h.0.mlp"):
        names = resolve_target_modules(model)
    assert names == [f"transformer.h.{i}.mlp" for i in range(3)]
    assert uncovered_blocks(model, names) == []


# ---- composites, PEFT, lbe_hf's own models ----


def test_composite_vision_encoder_decoder_gets_each_part_default():
    torch.manual_seed(0)
    vit = tf.ViTConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=2, num_attention_heads=2)
    gpt2 = tf.GPT2Config(vocab_size=50, n_embd=16, n_layer=3, n_head=2, add_cross_attention=True, is_decoder=True)
    model = tf.VisionEncoderDecoderModel(config=tf.VisionEncoderDecoderConfig.from_encoder_decoder_configs(vit, gpt2))
    assert model.config.model_type not in TARGETS_BY_MODEL_TYPE
    with no_warnings():
        names = resolve_target_modules(model)
    assert names == ["encoder.layers.0.mlp.fc2", "encoder.layers.1.mlp.fc2"] + [
        f"decoder.transformer.h.{i}.mlp.c_proj" for i in range(3)
    ]
    assert uncovered_blocks(model, names) == [] and count_blocks(model) == 5


def test_composite_encoder_decoder_of_two_berts():
    torch.manual_seed(0)
    small = dict(vocab_size=50, hidden_size=16, num_attention_heads=2, intermediate_size=24)
    config = tf.EncoderDecoderConfig.from_encoder_decoder_configs(
        tf.BertConfig(num_hidden_layers=2, **small),
        tf.BertConfig(num_hidden_layers=1, is_decoder=True, add_cross_attention=True, **small),
    )
    model = tf.EncoderDecoderModel(config=config)
    with no_warnings():
        names = resolve_target_modules(model)
    # the decoder's cross-attention output.dense is not the FFN output
    assert names == [
        "encoder.encoder.layer.0.output.dense",
        "encoder.encoder.layer.1.output.dense",
        "decoder.bert.encoder.layer.0.output.dense",
    ]


def test_composite_gemma3_image_text_model_covers_the_siglip_tower_and_the_language_model():
    torch.manual_seed(0)
    tower = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48)
    config = tf.Gemma3Config(
        text_config=dict(num_key_value_heads=2, head_dim=16, vocab_size=300, **tower),
        vision_config=dict(image_size=16, patch_size=4, **tower),
        mm_tokens_per_image=4, image_token_index=299, boi_token_index=297, eoi_token_index=298,
    )  # fmt: skip
    model = tf.Gemma3ForConditionalGeneration(config)
    assert model.config.model_type == "gemma3" not in TARGETS_BY_MODEL_TYPE
    with no_warnings():
        names = resolve_target_modules(model)
    assert names == [f"model.vision_tower.encoder.layers.{i}.mlp.fc2" for i in range(2)] + [
        f"model.language_model.layers.{i}.mlp.down_proj" for i in range(2)
    ]
    assert uncovered_blocks(model, names) == []


def test_peft_wrapped_model_keeps_the_default_under_its_prefix():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_bert(), LoraConfig(r=2, target_modules=["query", "dense"]))
    with no_warnings():
        names = resolve_target_modules(model)
    # the LoRA layer itself (base output + adapter), not its base_layer
    assert names == [f"base_model.model.bert.encoder.layer.{i}.output.dense" for i in range(2)]


@pytest.mark.parametrize(
    "build, expected",
    [
        (
            lambda: FNNForImageClassification(FNNConfig(input_dim=4, depth=3, width=8)),
            ["layers.0.act", "layers.1.act", "layers.2.act"],
        ),
        (lambda: AutoencoderForImageReconstruction(AutoencoderConfig(image_size=4, depth=2, width=8)), None),
        (lambda: TorchvisionForImageClassification(TorchvisionConfig(architecture="resnet18", num_labels=3)), None),
    ],
)
def test_a_model_declaring_its_targets_is_honoured_and_covered(build, expected):
    model = build()
    with no_warnings():
        names = resolve_target_modules(model)
    declared = model._lbe_target_modules
    if expected is None:
        if isinstance(declared, str):
            expected = [n for n, _ in model.named_modules() if n and re.fullmatch(declared, n)]
        else:
            expected = declared
    assert names == expected
    assert count_blocks(model) > 0 and uncovered_blocks(model, names) == []


# ---- user-given targets ----


@pytest.mark.parametrize(
    "target, exclude, expected",
    [
        (r"bert\.encoder\.layer\.\d\.output\.dense", None, [f"bert.encoder.layer.{i}.output.dense" for i in (0, 1)]),
        (["layer.0.output.dense"], None, ["bert.encoder.layer.0.output.dense"]),
        (
            ["output.dense"],
            r".*attention.*",
            ["bert.encoder.layer.0.output.dense", "bert.encoder.layer.1.output.dense"],
        ),
        (["utput.dense"], None, None),  # a suffix must start at a dot
        (r"output\.dense", None, None),  # a regex must match the whole name
    ],
)  # fmt: skip
def test_user_targets_match_as_peft_does(target, exclude, expected):
    if expected is None:
        with pytest.raises(ValueError, match=r"matches no module.*bert.embeddings.*its blocks: bert.encoder.layer.0"):
            resolve_target_modules(tiny_bert(), target, exclude)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_target_modules(tiny_bert(), target, exclude) == expected
    coverage = [w for w in caught if "unregularized" in str(w.message)]
    assert len(coverage) == (len(expected) < 2)


def test_user_targets_that_leave_blocks_out_warn_once_naming_them():
    with pytest.warns(UserWarning, match=r"leave 3 of 4 blocks of BertForSequenceClassification.*layer.1, .*layer.3"):
        names = resolve_target_modules(tiny_bert(4), r".*layer\.0\.output\.dense")
    assert names == ["bert.encoder.layer.0.output.dense"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolve_target_modules(tiny_bert(4), None, [f"layer.{i}.output.dense" for i in (1, 2)])
    assert [str(w.message).count("unregularized") for w in caught] == [1]
    assert "leave 2 of 4 blocks" in str(caught[0].message)


# ---- no default ----


class NormOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm, self.act = nn.LayerNorm(4), nn.GELU()

    def forward(self, x):
        return self.act(self.norm(x))


def test_no_default_error_shows_an_example_regex_and_the_blocks_parts():
    model = nn.Module()
    model.body = nn.Module()
    model.body.layers = nn.ModuleList(NormOnly() for _ in range(2))
    with pytest.raises(ValueError) as error:
        resolve_target_modules(model)
    message = str(error.value)
    assert "No default LBE target for Module" in message
    assert r"'body\\.layers\\.\\d+\\.act'" in message
    assert "body.layers.0.{norm,act}, body.layers.1.{norm,act}" in message
    assert resolve_target_modules(model, r"body\.layers\.\d+\.act") == ["body.layers.0.act", "body.layers.1.act"]


def test_no_blocks_at_all_lists_the_top_level_modules():
    with pytest.raises(ValueError, match=r"No default LBE target for Sequential.*top-level modules: 0, 1"):
        resolve_target_modules(nn.Sequential(nn.Linear(3, 4), nn.ReLU()))


def test_real_minilm_checkpoint_gets_its_six_ffn_outputs(minilm_path):
    model = tf.AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
    with no_warnings():
        names = resolve_target_modules(model)
    assert names == [f"bert.encoder.layer.{i}.output.dense" for i in range(6)] and count_blocks(model) == 6
