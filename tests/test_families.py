"""Every family in the defaults table: tiny random model, one target per block, every block covered; a few train."""

import re
import warnings

import pytest
import torch
import transformers as tf
from datasets import Dataset

from lbe_hf import BatchEntropyConfig, LBERegularizer, LBETrainer
from lbe_hf.targets import TARGETS_BY_MODEL_TYPE, model_blocks, resolve_target_modules, uncovered_blocks

H = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, vocab_size=99
)  # grouped_mm experts: rows of 16 bytes
IDS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
SEQ2SEQ = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2)
SEQ2SEQ.update(encoder_ffn_dim=37, decoder_ffn_dim=37, vocab_size=99, decoder_start_token_id=1, **IDS)
T5 = dict(
    d_model=32, d_ff=37, d_kv=16, num_layers=2, num_heads=2, vocab_size=99, decoder_start_token_id=0, pad_token_id=0
)
CONV = dict(conv_dim=(8, 8), conv_stride=(4, 4), conv_kernel=(8, 8), num_conv_pos_embeddings=4)
CONV.update(num_conv_pos_embedding_groups=2, layerdrop=0.0, **H)  # layerdrop would skip blocks at random
DEC = dict(num_key_value_heads=2, **H)
TOWER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48)
TEXT, VISION = dict(vocab_size=99, **TOWER), dict(image_size=8, patch_size=4, **TOWER)
MOE = dict(num_experts_per_tok=2, moe_intermediate_size=16, **DEC)

# model_type -> tiny model; hidden 32, 2 blocks per stack, 2 heads, vocab 99
FAMILIES = {
    "bert": lambda: tf.BertForSequenceClassification(tf.BertConfig(**H)),
    "roberta": lambda: tf.RobertaForSequenceClassification(tf.RobertaConfig(**H)),
    "xlm-roberta": lambda: tf.XLMRobertaForMaskedLM(tf.XLMRobertaConfig(**H)),
    "camembert": lambda: tf.CamembertForSequenceClassification(tf.CamembertConfig(**H)),
    "deberta": lambda: tf.DebertaForSequenceClassification(tf.DebertaConfig(**H)),
    "mpnet": lambda: tf.MPNetForMaskedLM(tf.MPNetConfig(**H)),
    "electra": lambda: tf.ElectraForSequenceClassification(tf.ElectraConfig(embedding_size=32, **H)),
    "deberta-v2": lambda: tf.DebertaV2ForSequenceClassification(tf.DebertaV2Config(**H)),
    "distilbert": lambda: tf.DistilBertForSequenceClassification(
        tf.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=37, vocab_size=99)
    ),
    "albert": lambda: tf.AlbertForSequenceClassification(tf.AlbertConfig(embedding_size=16, **H)),
    "modernbert": lambda: tf.ModernBertForSequenceClassification(
        tf.ModernBertConfig(cls_token_id=1, sep_token_id=2, **IDS, **H)
    ),
    "gpt2": lambda: tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=99)),
    "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**DEC)),
    "mistral": lambda: tf.MistralForCausalLM(tf.MistralConfig(**DEC)),
    "qwen2": lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(**DEC)),
    "qwen3": lambda: tf.Qwen3ForCausalLM(tf.Qwen3Config(head_dim=16, **DEC)),
    "gemma": lambda: tf.GemmaForCausalLM(tf.GemmaConfig(head_dim=16, **DEC)),
    "gemma2": lambda: tf.Gemma2ForCausalLM(tf.Gemma2Config(head_dim=16, **DEC)),
    "gemma3_text": lambda: tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(head_dim=16, **DEC)),
    "phi3": lambda: tf.Phi3ForCausalLM(tf.Phi3Config(**IDS, **DEC)),
    "phi": lambda: tf.PhiForCausalLM(tf.PhiConfig(**H)),
    "starcoder2": lambda: tf.Starcoder2ForCausalLM(tf.Starcoder2Config(**DEC)),
    "bloom": lambda: tf.BloomForCausalLM(tf.BloomConfig(hidden_size=32, n_layer=2, n_head=2, vocab_size=99)),
    "gpt_neox": lambda: tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(**H)),
    "opt": lambda: tf.OPTForCausalLM(
        tf.OPTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=37, vocab_size=99)
    ),
    "falcon": lambda: tf.FalconForCausalLM(
        tf.FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, vocab_size=99)
    ),
    "mixtral": lambda: tf.MixtralForCausalLM(tf.MixtralConfig(num_local_experts=4, num_experts_per_tok=2, **DEC)),
    # mixed stacks: block 0 dense (mlp.down_proj), block 1 mixture of experts
    "qwen2_moe": lambda: tf.Qwen2MoeForCausalLM(
        tf.Qwen2MoeConfig(num_experts=4, shared_expert_intermediate_size=16, mlp_only_layers=[0], **MOE)
    ),
    "deepseek_v3": lambda: tf.DeepseekV3ForCausalLM(
        tf.DeepseekV3Config(
            n_routed_experts=4,
            n_group=1,
            topk_group=1,
            first_k_dense_replace=1,
            kv_lora_rank=16,
            q_lora_rank=16,
            qk_rope_head_dim=8,
            qk_nope_head_dim=8,
            v_head_dim=8,
            **MOE,
        )
    ),  # fmt: skip
    "switch_transformers": lambda: tf.SwitchTransformersForConditionalGeneration(
        tf.SwitchTransformersConfig(
            num_experts=4, num_sparse_encoder_layers=1, num_sparse_decoder_layers=1, num_decoder_layers=2, **T5
        )
    ),
    "t5": lambda: tf.T5ForConditionalGeneration(tf.T5Config(**T5)),
    "mt5": lambda: tf.MT5ForConditionalGeneration(tf.MT5Config(**T5)),
    "bart": lambda: tf.BartForConditionalGeneration(tf.BartConfig(**SEQ2SEQ)),
    "mbart": lambda: tf.MBartForConditionalGeneration(tf.MBartConfig(**SEQ2SEQ)),
    "whisper": lambda: tf.WhisperForConditionalGeneration(
        tf.WhisperConfig(num_mel_bins=8, max_source_positions=8, max_target_positions=16, **SEQ2SEQ)
    ),
    "vit": lambda: tf.ViTForImageClassification(tf.ViTConfig(image_size=8, patch_size=4, **H)),
    "clip": lambda: tf.CLIPModel(tf.CLIPConfig(text_config=TEXT, vision_config=VISION)),
    "clip_text_model": lambda: tf.CLIPTextModel(tf.CLIPTextConfig(**TEXT)),
    "clip_vision_model": lambda: tf.CLIPVisionModel(tf.CLIPVisionConfig(**VISION)),
    "siglip": lambda: tf.SiglipModel(tf.SiglipConfig(text_config=TEXT, vision_config=VISION)),
    "siglip_text_model": lambda: tf.SiglipTextModel(tf.SiglipTextConfig(**TEXT)),
    "siglip_vision_model": lambda: tf.SiglipVisionModel(tf.SiglipVisionConfig(**VISION)),
    "swin": lambda: tf.SwinForImageClassification(
        tf.SwinConfig(image_size=16, patch_size=4, embed_dim=8, depths=[2, 2], num_heads=[1, 2], window_size=2)
    ),
    "convnext": lambda: tf.ConvNextForImageClassification(
        tf.ConvNextConfig(hidden_sizes=[8, 16], depths=[2, 2], num_stages=2)
    ),
    "resnet": lambda: tf.ResNetForImageClassification(
        tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[2, 2], layer_type="bottleneck")
    ),
    "wav2vec2": lambda: tf.Wav2Vec2ForCTC(tf.Wav2Vec2Config(**CONV)),
    "hubert": lambda: tf.HubertForCTC(tf.HubertConfig(**CONV)),
}


def build(model_type, seed=0):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FAMILIES[model_type]()


def example_inputs(model, batch=2):
    """One forward's inputs for `model` (decoder inputs shorter than the encoder's for encoder-decoders)."""
    g = torch.Generator().manual_seed(0)
    config = model.config
    name = model.main_input_name
    if name == "pixel_values":
        size = config.image_size if isinstance(getattr(config, "image_size", None), int) else 16
        inputs = {name: torch.randn(batch, config.num_channels, size, size, generator=g)}
    elif name == "input_values":
        inputs = {name: torch.randn(batch, 400, generator=g)}
    elif name == "input_features":
        inputs = {name: torch.randn(batch, config.num_mel_bins, 2 * config.max_source_positions, generator=g)}
    else:
        inputs = {name: torch.randint(3, 99, (batch, 7), generator=g)}
    if hasattr(config, "vision_config") and hasattr(config, "text_config"):  # two towers
        size = config.vision_config.image_size
        inputs["pixel_values"] = torch.randn(batch, config.vision_config.num_channels, size, size, generator=g)
    if config.is_encoder_decoder:
        inputs["decoder_input_ids"] = torch.randint(3, 99, (batch, 5), generator=g)
    return inputs


def test_every_family_of_the_table_has_a_test():
    assert set(FAMILIES) == set(TARGETS_BY_MODEL_TYPE)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_default_is_one_tensor_per_block_and_covers_every_block(model_type):
    model = build(model_type)
    assert model.config.model_type == model_type
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback: the table covers the family alone
        names = resolve_target_modules(model)
    blocks = model_blocks(model)
    assert len(blocks) >= 2 or model_type == "albert"  # ALBERT: one shared layer
    assert uncovered_blocks(model, names) == []
    per_block = {b: [n for n in names if n.startswith(b + ".") or n == b] for b in blocks}
    assert all(len(found) == 1 for found in per_block.values()), per_block
    assert len(names) == len(blocks)
    assert all(re.fullmatch(TARGETS_BY_MODEL_TYPE[model_type], n) for n in names)

    # every target runs in a forward and returns one tensor (a MoE block's combined output, not a tuple)
    modules = dict(model.named_modules())
    outputs = {n: [] for n in names}
    handles = [modules[n].register_forward_hook(lambda m, a, out, n=n: outputs[n].append(type(out))) for n in names]
    model.eval()
    with torch.no_grad():
        model(**example_inputs(model))
    for handle in handles:
        handle.remove()
    applications = model.config.num_hidden_layers if model_type == "albert" else 1
    assert outputs == {n: [torch.Tensor] * applications for n in names}

    # one training forward with the default config: every target's alpha gets a gradient from the term
    reg = LBERegularizer(model, BatchEntropyConfig(alpha=1.5), fold_into_loss=False)
    assert reg.module_names == names
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no target may drop out of the term
        with reg.capture():
            out = model(**example_inputs(model, batch=4))
        first = next(v for v in out.values() if isinstance(v, torch.Tensor) and v.is_floating_point())
        loss = reg.fold(first.float().square().mean())
    loss.backward()
    assert torch.all(model.lbe_alphas.alpha.grad != 0)
    assert len(reg.layer_names) == len(names) * applications
    reg.remove()


def test_mixed_moe_stacks_cover_dense_and_sparse_blocks():
    model = build("qwen2_moe")
    layers = model.model.layers
    assert type(layers[0].mlp).__name__ == "Qwen2MoeMLP" and hasattr(layers[1].mlp, "experts")
    assert resolve_target_modules(model) == ["model.layers.0.mlp", "model.layers.1.mlp"]
    model = build("deepseek_v3")
    assert hasattr(model.model.layers[1].mlp, "experts") and not hasattr(model.model.layers[0].mlp, "experts")
    assert resolve_target_modules(model) == ["model.layers.0.mlp", "model.layers.1.mlp"]


# ---- a short real training per kind: encoder, decoder, MoE, encoder-decoder, vision ----


def token_rows(n=8, seq=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 99, (n, seq), generator=g)


def dataset_for(model_type, n=8):
    g = torch.Generator().manual_seed(1)
    if model_type in ("modernbert",):
        ids = token_rows(n)
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "labels": torch.randint(0, 2, (n,), generator=g),
        }
    if model_type in ("qwen3", "qwen2_moe"):
        ids = token_rows(n)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    if model_type in ("t5", "switch_transformers"):  # encoder length 8, decoder length 4
        ids = token_rows(n)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": token_rows(n, 4, seed=2)}
    if model_type == "convnext":
        return {
            "pixel_values": torch.randn(n, 3, 16, 16, generator=g),
            "labels": torch.randint(0, 2, (n,), generator=g),
        }
    if model_type == "wav2vec2":
        return {"input_values": torch.randn(n, 400, generator=g), "labels": torch.randint(3, 99, (n, 5), generator=g)}
    raise KeyError(model_type)


@pytest.mark.parametrize(
    "model_type", ["modernbert", "qwen3", "qwen2_moe", "t5", "switch_transformers", "convnext", "wav2vec2"]
)
def test_lbe_trainer_trains_the_default_targets(model_type, tmp_path):
    model = build(model_type)
    names = resolve_target_modules(model)
    columns = dataset_for(model_type)
    train = Dataset.from_dict({k: v.tolist() for k, v in columns.items()}).with_format("torch")
    args = tf.TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to=[], save_strategy="no", logging_steps=1, max_steps=2,
        per_device_train_batch_size=4, learning_rate=1e-2, seed=0, disable_tqdm=True,
    )  # fmt: skip
    trainer = LBETrainer(
        model=model, args=args, train_dataset=train, lbe_config=BatchEntropyConfig(alpha=1.5, target_modules=names)
    )
    assert trainer.lbe_module_names == names
    initial = trainer.alphas.clone()
    assert initial.shape == (len(names),)
    trainer.train()
    assert torch.all(trainer.alphas != initial)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(h["lbe_loss"] > 0 for h in logs)
