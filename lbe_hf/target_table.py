"""The default LBE targets per model family: one row per set of `config.model_type`s that share a module layout.

Each pattern is a regex that must match the whole module name relative to the (sub-)model that carries the
`config.model_type`, with any prefix allowed (`bert.`, `model.`, PEFT's `base_model.model.`). It picks one tensor
per block: the block's feed-forward output before dropout, residual and normalization, the tensor the authors
regularize in BERT (`layer.N.output.dense`). Mixture-of-experts blocks are regularized at the block's combined
output (`layers.N.mlp`), never at single experts; on the dense blocks of a mixed stack the same name is the MLP,
whose output is its `down_proj` output. Convolutional stacks (ResNet, wav2vec2's feature encoder) are regularized at
each conv layer's output (conv, normalization, activation), inside the residual branch: "regularizing the complete
residual block has no effect" (the paper).

The README's table of defaults is `markdown_table()` (run `python -m lbe_hf.targets`); a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FamilyTargets:
    """One row of the defaults table.

    Args:
        kind: encoder, decoder, MoE decoder, encoder-decoder, vision or audio.
        families: the names users know, for the README.
        model_types: the `config.model_type` values this row applies to.
        pattern: regex, full match of the module name (any prefix).
        modules: the matched names as the README shows them, `N` standing for a block index, comma-separated when
            a model has several stacks; a test checks that each matches `pattern`.
    """

    kind: str
    families: str
    model_types: tuple[str, ...]
    pattern: str
    modules: str


_ANY = r"(.*\.)?"

DEFAULT_TARGETS_DOC: tuple[FamilyTargets, ...] = (
    FamilyTargets(
        "encoder",
        "BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA, DeBERTa, DeBERTa-v2, MPNet, MiniLM (the FFN's, not "
        "`attention.output.dense`)",
        ("bert", "roberta", "xlm-roberta", "camembert", "electra", "deberta", "deberta-v2", "mpnet"),
        _ANY + r"layer\.\d+\.output\.dense",
        "layer.N.output.dense",
    ),
    FamilyTargets("encoder", "DistilBERT", ("distilbert",), _ANY + r"layer\.\d+\.ffn\.lin2", "layer.N.ffn.lin2"),
    FamilyTargets(
        "encoder",
        "ALBERT (its one shared layer runs num_hidden_layers times per forward)",
        ("albert",),
        _ANY + r"albert_layer_groups\.\d+\.albert_layers\.\d+\.ffn_output",
        "albert_layer_groups.N.albert_layers.N.ffn_output",
    ),
    FamilyTargets("encoder", "ModernBERT", ("modernbert",), _ANY + r"layers\.\d+\.mlp\.Wo", "layers.N.mlp.Wo"),
    FamilyTargets("decoder", "GPT-2", ("gpt2",), _ANY + r"h\.\d+\.mlp\.c_proj", "h.N.mlp.c_proj"),
    FamilyTargets(
        "decoder",
        "Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma 2, Gemma 3 (text), Phi-3",
        ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3"),
        _ANY + r"layers\.\d+\.mlp\.down_proj",
        "layers.N.mlp.down_proj",
    ),
    FamilyTargets("decoder", "Phi-1, Phi-2", ("phi",), _ANY + r"layers\.\d+\.mlp\.fc2", "layers.N.mlp.fc2"),
    FamilyTargets("decoder", "StarCoder2", ("starcoder2",), _ANY + r"layers\.\d+\.mlp\.c_proj", "layers.N.mlp.c_proj"),
    FamilyTargets("decoder", "OPT", ("opt",), _ANY + r"layers\.\d+\.fc2", "layers.N.fc2"),
    FamilyTargets(
        "decoder", "Falcon, BLOOM", ("falcon", "bloom"), _ANY + r"h\.\d+\.mlp\.dense_4h_to_h", "h.N.mlp.dense_4h_to_h"
    ),
    FamilyTargets(
        "decoder",
        "GPT-NeoX (Pythia)",
        ("gpt_neox",),
        _ANY + r"layers\.\d+\.mlp\.dense_4h_to_h",
        "layers.N.mlp.dense_4h_to_h",
    ),
    FamilyTargets(
        "MoE decoder",
        "Mixtral, Qwen2-MoE, DeepSeek-V3 (sparse and dense blocks alike)",
        ("mixtral", "qwen2_moe", "deepseek_v3"),
        _ANY + r"layers\.\d+\.mlp",
        "layers.N.mlp",
    ),
    FamilyTargets(
        "MoE encoder-decoder",
        "SwitchTransformers (the feed-forward layer, sparse or dense; not the experts' wo)",
        ("switch_transformers",),
        _ANY + r"block\.\d+\.layer\.\d+\.mlp",
        "block.N.layer.N.mlp",
    ),
    FamilyTargets(
        "encoder-decoder",
        "T5, mT5",
        ("t5", "mt5"),
        _ANY + r"block\.\d+\.layer\.\d+\.DenseReluDense\.wo",
        "encoder.block.N.layer.1.DenseReluDense.wo, decoder.block.N.layer.2.DenseReluDense.wo",
    ),
    FamilyTargets(
        "encoder-decoder",
        "BART, mBART, Whisper",
        ("bart", "mbart", "whisper"),
        _ANY + r"(en|de)coder\.layers\.\d+\.fc2",
        "encoder.layers.N.fc2, decoder.layers.N.fc2",
    ),
    FamilyTargets("vision", "ViT", ("vit",), _ANY + r"layers\.\d+\.mlp\.fc2", "layers.N.mlp.fc2"),
    FamilyTargets(
        "vision-language",
        "CLIP, SigLIP (text and vision towers, or either alone)",
        ("clip", "clip_text_model", "clip_vision_model", "siglip", "siglip_text_model", "siglip_vision_model"),
        _ANY + r"encoder\.layers\.\d+\.mlp\.fc2",
        "text_model.encoder.layers.N.mlp.fc2, vision_model.encoder.layers.N.mlp.fc2",
    ),
    FamilyTargets("vision", "Swin", ("swin",), _ANY + r"blocks\.\d+\.mlp\.fc2", "layers.N.blocks.N.mlp.fc2"),
    FamilyTargets(
        "vision", "ConvNeXt", ("convnext",), _ANY + r"stages\.\d+\.layers\.\d+\.pwconv2", "stages.N.layers.N.pwconv2"
    ),
    FamilyTargets(
        "vision",
        "ResNet (transformers' own; every conv layer of each residual branch)",
        ("resnet",),
        _ANY + r"stages\.\d+\.layers\.\d+\.layer\.\d+",
        "stages.N.layers.N.layer.N",
    ),
    FamilyTargets(
        "audio",
        "Wav2Vec2, HuBERT (conv feature encoder and transformer layers)",
        ("wav2vec2", "hubert"),
        _ANY + r"(feature_extractor\.conv_layers\.\d+|encoder\.layers\.\d+\.feed_forward\.output_dense)",
        "feature_extractor.conv_layers.N, encoder.layers.N.feed_forward.output_dense",
    ),
)

TARGETS_BY_MODEL_TYPE: dict[str, str] = {t: row.pattern for row in DEFAULT_TARGETS_DOC for t in row.model_types}


def markdown_table() -> str:
    """The README's table of defaults, generated from `DEFAULT_TARGETS_DOC`."""
    lines = [
        "| kind | family | `config.model_type` | modules (`N`: block index, any prefix) |",
        "| --- | --- | --- | --- |",
    ]
    for row in DEFAULT_TARGETS_DOC:
        types = ", ".join(f"`{t}`" for t in row.model_types)
        modules = ", ".join(f"`…{m}`" for m in row.modules.split(", "))
        lines.append(f"| {row.kind} | {row.families} | {types} | {modules} |")
    return "\n".join(lines)
