import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from lbe_hf import ActivationCollector, resolve_target_modules
from lbe_hf.models import FNNConfig, FNNForImageClassification


def tiny_bert(layers=2):
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=24
    )
    return BertForSequenceClassification(config)


def test_bert_default_is_ffn_output_dense_not_attention_output_dense():
    names = resolve_target_modules(tiny_bert(3))
    assert names == [f"bert.encoder.layer.{i}.output.dense" for i in range(3)]


@pytest.mark.parametrize(
    "target, exclude, expected",
    [
        (r"bert\.encoder\.layer\.1\.output\.dense", None, ["bert.encoder.layer.1.output.dense"]),
        (["layer.0.output.dense"], None, ["bert.encoder.layer.0.output.dense"]),
        # a suffix match catches both FFN and attention output.dense: that is why the default is a regex
        (
            ["output.dense"],
            None,
            [
                "bert.encoder.layer.0.attention.output.dense",
                "bert.encoder.layer.0.output.dense",
                "bert.encoder.layer.1.attention.output.dense",
                "bert.encoder.layer.1.output.dense",
            ],
        ),
        (
            ["output.dense"],
            r".*attention.*",
            ["bert.encoder.layer.0.output.dense", "bert.encoder.layer.1.output.dense"],
        ),
        (["classifier"], None, ["classifier"]),
        (r"output\.dense", None, None),  # a regex must match the whole name
        (["utput.dense"], None, None),  # a suffix must start at a dot
    ],
)
def test_matching_table(target, exclude, expected):
    model = tiny_bert()
    if expected is None:
        with pytest.raises(ValueError, match="matches no module.*bert.embeddings"):
            resolve_target_modules(model, target, exclude)
    else:
        assert resolve_target_modules(model, target, exclude) == expected


def test_exclude_everything_is_an_error():
    with pytest.raises(ValueError, match="leaves no module"):
        resolve_target_modules(tiny_bert(), None, ["output.dense"])


@pytest.mark.parametrize(
    "model, expected",
    [
        (
            lambda: DistilBertForSequenceClassification(
                DistilBertConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=24)
            ),
            ["distilbert.transformer.layer.0.ffn.lin2", "distilbert.transformer.layer.1.ffn.lin2"],
        ),
        (
            lambda: GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2)),
            ["transformer.h.0.mlp.c_proj", "transformer.h.1.mlp.c_proj"],
        ),
        (
            lambda: LlamaForCausalLM(
                LlamaConfig(
                    vocab_size=50,
                    hidden_size=16,
                    intermediate_size=24,
                    num_hidden_layers=2,
                    num_attention_heads=2,
                    num_key_value_heads=2,
                )
            ),  # fmt: skip
            ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"],
        ),
        (
            lambda: FNNForImageClassification(FNNConfig(input_dim=4, depth=3, width=8)),
            ["layers.0.act", "layers.1.act", "layers.2.act"],
        ),
    ],
)
def test_family_defaults(model, expected):
    assert resolve_target_modules(model()) == expected


def test_unknown_architecture_lists_candidates():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    with pytest.raises(ValueError, match="No default LBE target for Sequential.*0, 1"):
        resolve_target_modules(model)


def test_hooks_capture_only_inside_capture_and_are_removed():
    model = FNNForImageClassification(FNNConfig(input_dim=4, depth=3, width=8))
    names = resolve_target_modules(model)
    collector = ActivationCollector(model, names)
    x = torch.randn(5, 4)
    model(x)
    assert collector.activations == {}
    with collector.capture():
        model(x)
    taken = collector.take()
    assert [t.shape for t in taken] == [(5, 8)] * 3
    assert torch.all(taken[-1] >= 0)  # the ReLU output
    assert collector.activations == {}
    collector.remove()
    assert not collector.hooked
    assert all(not m._forward_hooks for m in model.modules())
    with collector.capture():
        model(x)
    assert collector.activations == {}


def test_non_tensor_output_is_a_clear_error():
    model = tiny_bert()
    collector = ActivationCollector(model, ["bert.encoder"])  # returns a BaseModelOutput
    with pytest.raises(TypeError, match="bert.encoder.*returned BaseModelOutput.*not a tensor"):
        with collector.capture():
            model(torch.randint(0, 50, (2, 5)))


def test_measure_entropies_removes_its_hooks_restores_the_mode_and_names_applications():
    from lbe_hf.collect import measure_entropies
    from lbe_hf.entropy import batch_entropy

    torch.manual_seed(0)
    shared = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(shared, torch.nn.ReLU(), shared).train()
    x = torch.randn(16, 4)
    seen = measure_entropies(model, ["0"], lambda: model(x))
    assert seen.names == ["0#0", "0#1"]  # one module, applied twice
    first = shared(x)
    assert torch.allclose(seen.entropies[0], batch_entropy(first))
    assert torch.allclose(seen.entropies[1], batch_entropy(shared(torch.relu(first))))
    assert torch.equal(seen.output, model(x)) and model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
