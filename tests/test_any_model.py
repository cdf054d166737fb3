"""What the regularizer captures on architectures beyond one-pass stacks: shared layers applied several times,
encoder-decoder token masks, mixture-of-experts modules that get too few (or no) tokens."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import (
    AlbertConfig,
    AlbertForSequenceClassification,
    BartConfig,
    BartForConditionalGeneration,
    SwitchTransformersConfig,
    SwitchTransformersForConditionalGeneration,
)

from lbe_hf import BatchEntropyConfig, LBERegularizer
from lbe_hf.entropy import batch_entropy

FFN = "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn_output"


def outputs_of(module: nn.Module, run) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    try:
        run()
    finally:
        handle.remove()
    return seen


def test_albert_shared_layer_counts_once_per_application():
    torch.manual_seed(0)
    config = AlbertConfig(
        vocab_size=64, embedding_size=16, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=48, max_position_embeddings=32,
    )  # fmt: skip
    model = AlbertForSequenceClassification(config)
    reg = LBERegularizer(model, BatchEntropyConfig(target_modules=[FFN]))
    ids = torch.randint(1, 64, (6, 8))
    labels = torch.randint(0, 2, (6,))

    def forward():
        with reg.capture():
            return model(input_ids=ids, labels=labels).loss

    applications = outputs_of(model.get_submodule(FFN), forward)
    assert len(applications) == 3  # the one shared layer runs num_hidden_layers times
    expected = torch.stack([batch_entropy(x, reg.config.constant) for x in applications])
    assert torch.allclose(reg.last_entropies, expected, atol=1e-6)
    assert len(set(expected.tolist())) == 3  # three different tensors, not the last one three times
    assert reg.alphas.numel() == 1  # one target per module, shared by its applications
    assert reg.layer_names == [f"{FFN}#0", f"{FFN}#1", f"{FFN}#2"]
    metrics, layers = reg.pop_metrics()
    assert torch.allclose(layers, expected, atol=1e-6)
    assert metrics["entropy_min"] == pytest.approx(expected.min().item(), abs=1e-6)


def tiny_bart():
    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=64, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=32,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    )  # fmt: skip
    return BartForConditionalGeneration(config)


@pytest.mark.parametrize("with_decoder_mask", [True, False])
def test_token_mode_uses_each_stacks_own_mask_in_bart(with_decoder_mask):
    model = tiny_bart()
    names = [f"model.{stack}.layers.{i}.fc2" for stack in ("encoder", "decoder") for i in range(2)]
    reg = LBERegularizer(model, BatchEntropyConfig(target_modules=names, entropy_mode="token"))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 64, (4, 10), generator=g)
    mask = (torch.arange(10)[None] < torch.tensor([10, 7, 4, 9])[:, None]).long()
    dec_ids = torch.randint(3, 64, (4, 6), generator=g)  # a different length from the encoder's
    dec_mask = (torch.arange(6)[None] < torch.tensor([6, 2, 5, 3])[:, None]).long()
    kwargs = dict(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids, labels=dec_ids)
    if with_decoder_mask:
        kwargs["decoder_attention_mask"] = dec_mask
    seen = {n: [] for n in names}
    handles = [model.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: seen[n].append(o)) for n in names]
    with reg.capture():
        model(**kwargs)
    for h in handles:
        h.remove()
    decoder_mask = dec_mask if with_decoder_mask else torch.ones(4, 6, dtype=torch.long)
    expected = [
        batch_entropy(seen[n][0].detach(), reg.config.constant, mask if "encoder" in n else decoder_mask)
        for n in names
    ]
    assert torch.allclose(reg.last_entropies, torch.stack(expected), atol=1e-6)
    # The padded positions really are left out: the encoder's all-positions entropy differs.
    assert not torch.isclose(expected[0], batch_entropy(seen[names[0]][0].detach(), reg.config.constant, None))


def test_experts_routed_no_tokens_drop_out_and_the_rest_of_the_term_stays():
    torch.manual_seed(0)
    config = SwitchTransformersConfig(
        vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2, num_experts=4,
        encoder_sparse_step=1, decoder_sparse_step=1, decoder_start_token_id=0, pad_token_id=0,
        router_jitter_noise=0.0, router_bias=True,
    )  # fmt: skip
    model = SwitchTransformersForConditionalGeneration(config)
    for name, module in model.named_modules():
        if name.endswith("router.classifier"):  # every token goes to expert 0
            with torch.no_grad():
                module.weight.zero_()
                module.bias.zero_()
                module.bias[0] = 10.0
    experts = [f"encoder.block.0.layer.1.mlp.experts.expert_{i}.wo" for i in range(4)]
    reg = LBERegularizer(model, BatchEntropyConfig(target_modules=experts))
    ids = torch.ones(4, 6, dtype=torch.long) + torch.arange(6)
    with pytest.warns(UserWarning, match="did not run"):
        with reg.capture():
            target = ids[:, :3].contiguous()
            loss = model(input_ids=ids, decoder_input_ids=target, labels=target).loss
    loss.backward()
    grad = model.lbe_alphas.alpha.grad
    assert grad[0] != 0 and torch.all(grad[1:] == 0)
    metrics, _ = reg.pop_metrics()
    assert metrics["lbe_layers_dropped"] == 3 and metrics["lbe_skipped"] == 0 and metrics["lbe_loss"] > 0


class ToyRouted(nn.Module):
    """Three experts: `few` sees one sample of the batch, `none` never runs, `all` sees every sample."""

    def __init__(self):
        super().__init__()
        self.few, self.none, self.all = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        out = self.all(x)
        out = out + torch.cat([self.few(x[:1]), torch.zeros_like(x[1:])])
        return {"loss": out.square().mean()}


def test_a_first_listed_module_with_one_sample_does_not_skip_the_term():
    torch.manual_seed(0)
    model = ToyRouted()
    reg = LBERegularizer(model, BatchEntropyConfig(target_modules=["few", "none", "all"]))
    with pytest.warns(UserWarning, match="'none' did not run"):
        with reg.capture():
            loss = model(torch.randn(8, 4))["loss"]
    loss.backward()
    metrics, layers = reg.pop_metrics()
    assert metrics["lbe_skipped"] == 0 and metrics["lbe_layers_dropped"] == 2
    assert reg.layer_names == ["all"] and layers.numel() == 1
    grad = model.lbe_alphas.alpha.grad
    assert grad[2] != 0 and grad[0] == 0 and grad[1] == 0


def test_entropy_callback_names_every_application(tmp_path):
    from datasets import Dataset
    from transformers import TrainingArguments

    from lbe_hf import EntropyCallback, LBETrainer

    torch.manual_seed(0)
    config = AlbertConfig(
        vocab_size=64, embedding_size=16, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=48, max_position_embeddings=32,
    )  # fmt: skip
    rows = Dataset.from_dict({"input_ids": torch.randint(1, 64, (8, 6)).tolist(), "labels": [0, 1] * 4})
    args = TrainingArguments(
        str(tmp_path), max_steps=2, per_device_train_batch_size=4, logging_steps=1, report_to=[], use_cpu=True,
        save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    callback = EntropyCallback()
    trainer = LBETrainer(
        model=AlbertForSequenceClassification(config), args=args, train_dataset=rows, callbacks=[callback]
    )
    trainer.train()
    assert trainer.lbe_module_names == [FFN]
    assert callback.module_names == trainer.lbe_layer_names == [f"{FFN}#{k}" for k in range(3)]
    assert all(len(entropies) == 3 for _, entropies in callback.history)
