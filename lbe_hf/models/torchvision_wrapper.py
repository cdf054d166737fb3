"""Any torchvision classification architecture as a `PreTrainedModel` (the pattern of transformers' `timm_wrapper`).

`TorchvisionForImageClassification` takes `pixel_values` (batch, in_channels, H, W) and `labels` (batch,) and returns
an `ImageClassifierOutput`. The first convolution is rebuilt for `in_channels` (MNIST: 1) and the head for
`num_labels`; weights travel as `model.<torchvision name>` in `model.safetensors`, so `save_pretrained` /
`from_pretrained` / `push_to_hub` round-trip exactly and the Auto classes load it once `lbe_hf.models` is imported.

Default LBE targets follow the paper (Sec. 4: "regularizing the complete residual block has no effect"): the
intermediate layers inside each residual block, never the block output; for plain CNNs every conv layer. See
`default_lbe_targets`.
"""

from __future__ import annotations

import difflib
import os

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Tanh)

# Blocks whose hidden activation module is shared or missing, so the target is a named submodule. torchvision's
# ResNet blocks reuse ONE `relu` module (after bn1 and after the residual add), so a hook on it would see the block
# output last. `bn1` (and `bn2` in Bottleneck) is followed by that ReLU applied in place, so the tensor the hook
# stored holds, by the time the LBE term is computed, relu(bn(conv(x))): the activation the next conv receives.
# (conv1's raw output would be a poor target: the BatchNorm after it undoes any scale the LBE term asks for.)
NAMED_BLOCK_TARGETS: dict[str, tuple[str, ...]] = {
    "BasicBlock": ("bn1",),  # resnet18/34
    "Bottleneck": ("bn1", "bn2"),  # resnet50+, resnext, wide_resnet
    "_DenseLayer": ("relu2",),  # densenet: the activation between its two convs
    "BasicConv2d": ("",),  # googlenet/inception: conv + bn + in-place relu per layer ("every conv")
}
# Residual blocks built from separate activation modules: every activation inside the block except the block's own
# (a direct child, applied to the block output) and those inside squeeze-excitation gates.
ACTIVATION_BLOCKS = {
    "InvertedResidual",  # mobilenet_v2/v3, shufflenet_v2
    "_InvertedResidual",  # mnasnet
    "MBConv",  # efficientnet, maxvit
    "FusedMBConv",  # efficientnet_v2
    "ResBottleneckBlock",  # regnet
    "CNBlock",  # convnext
    "EncoderBlock",  # vit: the MLP's GELU
    "SwinTransformerBlock",
    "SwinTransformerBlockV2",
}
SKIPPED_SUBMODULES = {"SqueezeExcitation", "SqueezeExcitationBlock"}


def available_architectures() -> list[str]:
    """torchvision's classification model names (`torchvision.models.list_models(module=torchvision.models)`)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_architecture(name: str) -> None:
    """Raises a ValueError naming the closest torchvision classification models when `name` is not one."""
    names = available_architectures()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"{name!r} is not a torchvision classification architecture.{hint} Choose one of "
            f"torchvision.models.list_models(module=torchvision.models): {', '.join(names[:8])}, ..."
        )


class TorchvisionConfig(PretrainedConfig):
    """A torchvision classification architecture adapted to `in_channels` input channels and `num_labels` classes.

    Args:
        architecture: torchvision builder name, e.g. "resnet18", "wide_resnet50_2", "mobilenet_v3_small".
        in_channels: channels of `pixel_values` (1 for MNIST/FashionMNIST, 3 for CIFAR).
        small_input: ResNet family only: a 3x3 stride-1 stem and no max-pool, as in the CIFAR ResNets the paper
            trains (keeps 28x28 / 32x32 inputs from shrinking to 1x1 before the last stage).
        model_kwargs: extra keyword arguments for the torchvision builder (e.g. {"dropout": 0.3}).
        pretrained_weights: where the initial weights came from (provenance only: the weights themselves live in the
            checkpoint; see `TorchvisionForImageClassification.from_torchvision`).
    """

    model_type = "lbe_torchvision"

    def __init__(
        self,
        architecture: str = "resnet18",
        in_channels: int = 3,
        num_labels: int | None = None,
        small_input: bool = False,
        model_kwargs: dict | None = None,
        pretrained_weights: str | None = None,
        **kwargs,
    ):
        check_architecture(architecture)
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}.")
        self.architecture = architecture
        self.in_channels = in_channels
        self.small_input = bool(small_input)
        self.model_kwargs = dict(model_kwargs or {})
        self.pretrained_weights = pretrained_weights
        # config.json stores id2label, not num_labels: a default here would override the saved label count.
        if num_labels is None and "id2label" not in kwargs:
            num_labels = 10
        if num_labels is not None:
            kwargs["num_labels"] = num_labels
        super().__init__(**kwargs)


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def _first_conv(net: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError(f"{type(net).__name__} has no Conv2d stem whose input channels could be adapted.")


def _rebuilt_conv(old: nn.Conv2d, in_channels: int, **overrides) -> nn.Conv2d:
    """A Conv2d like `old` with `in_channels` inputs, its weights drawn with the std of `old`'s.

    torchvision's stems are Kaiming fan-out (ResNet: std independent of in_channels) or similar, so matching the std
    keeps the architecture's own init scale for a fresh model. On the meta device this just allocates.
    """
    args = dict(
        kernel_size=old.kernel_size, stride=old.stride, padding=old.padding, dilation=old.dilation, groups=old.groups
    )
    args.update(overrides)
    new = nn.Conv2d(in_channels, old.out_channels, bias=old.bias is not None, device=old.weight.device, **args)
    if old.weight.device.type != "meta":
        with torch.no_grad():
            nn.init.normal_(new.weight, 0.0, float(old.weight.std()))
            if new.bias is not None:
                nn.init.zeros_(new.bias)
    return new


def _adapt_stem_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Pretrained RGB stem weights (out, 3, k, k) for `in_channels`: summed for grayscale, else tiled and rescaled
    so a constant image gives the same response."""
    if weight.shape[1] == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)


def build_torchvision_model(config: TorchvisionConfig) -> nn.Module:
    """The torchvision network for `config` (random init, or meta tensors inside `from_pretrained`)."""
    import torchvision

    kwargs = dict(config.model_kwargs)
    if config.architecture in ("googlenet", "inception_v3"):
        # Their aux heads return a tuple in training and their input transform assumes ImageNet RGB statistics.
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("transform_input", False)
        kwargs.setdefault("init_weights", True)
    net = torchvision.models.get_model(config.architecture, weights=None, num_classes=config.num_labels, **kwargs)
    if config.small_input:
        if not (isinstance(getattr(net, "conv1", None), nn.Conv2d) and hasattr(net, "maxpool")):
            raise ValueError(
                f"small_input=True swaps a ResNet's conv1/maxpool stem; {config.architecture} has none. Use a "
                "resnet*/resnext*/wide_resnet* architecture or small_input=False."
            )
        net.conv1 = _rebuilt_conv(net.conv1, config.in_channels, kernel_size=3, stride=1, padding=1)
        net.maxpool = nn.Identity()
    else:
        name, conv = _first_conv(net)
        if conv.in_channels != config.in_channels:
            _set_submodule(net, name, _rebuilt_conv(conv, config.in_channels))
    return net


def default_lbe_targets(net: nn.Module, prefix: str = "") -> list[str]:
    """The paper's LBE targets for a torchvision network, as full module names (with `prefix`).

    Residual families: the intermediate layers inside each block (see NAMED_BLOCK_TARGETS / ACTIVATION_BLOCKS),
    never the block output. Plain CNNs (VGG, AlexNet, SqueezeNet): every activation of `features`, i.e. every conv
    layer's output. Returns [] when no rule applies (the caller then asks for explicit target_modules).
    """
    targets: list[str] = []
    for name, module in net.named_modules():
        kind = type(module).__name__
        if kind in NAMED_BLOCK_TARGETS:
            targets += [".".join(p for p in (name, sub) if p) for sub in NAMED_BLOCK_TARGETS[kind]]
        elif kind in ACTIVATION_BLOCKS:
            skipped = [n for n, m in module.named_modules() if type(m).__name__ in SKIPPED_SUBMODULES]
            for sub, child in module.named_modules():
                inside_gate = any(sub == s or sub.startswith(s + ".") for s in skipped)
                if isinstance(child, ACTIVATIONS) and "." in sub and not inside_gate:
                    targets.append(f"{name}.{sub}")
    if not targets:
        scope = net.get_submodule("features") if hasattr(net, "features") else net
        base = "features" if scope is not net else ""
        targets = [".".join(p for p in (base, n) if p) for n, m in scope.named_modules() if isinstance(m, ACTIVATIONS)]
    # A block nested in another block (maxvit's MBConv in a layer) must not be listed twice.
    return [f"{prefix}{t}" for t in dict.fromkeys(targets)]


class TorchvisionPreTrainedModel(PreTrainedModel):
    config_class = TorchvisionConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    # forward takes no loss kwargs: the loss is a per-batch mean.
    accepts_loss_kwargs = False
    # Per instance (depends on the architecture): set in __init__ from default_lbe_targets.
    _lbe_target_modules: list[str] | None = None

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # post_init() would overwrite torchvision's own init (Kaiming fan-out convs, ones/zeros BN, ...) with
        # N(0, 0.02). A freshly built network keeps it; inside from_pretrained (meta device) only modules whose
        # weights are missing from the checkpoint (e.g. a new head) get PyTorch's default init.
        if getattr(self, "_keep_torchvision_init", False):
            return
        if hasattr(module, "reset_parameters") and module is not self:
            module.reset_parameters()


class TorchvisionForImageClassification(TorchvisionPreTrainedModel):
    """`config.architecture` from torchvision under `self.model`; LBE targets in `self._lbe_target_modules`.

    Build from scratch with `TorchvisionForImageClassification(TorchvisionConfig(...))`, from torchvision's
    pretrained weights with `from_torchvision(...)`, from a saved/pushed model with `from_pretrained`.
    """

    def __init__(self, config: TorchvisionConfig):
        super().__init__(config)
        self.model = build_torchvision_model(config)
        self._keep_torchvision_init = next(self.model.parameters()).device.type != "meta"
        self._lbe_target_modules = default_lbe_targets(self.model, prefix="model.") or None
        self.post_init()

    @classmethod
    def from_torchvision(
        cls,
        architecture: str,
        weights: str | os.PathLike | None = None,
        allow_download: bool = False,
        **config_kwargs,
    ) -> TorchvisionForImageClassification:
        """A model initialised from torchvision's pretrained weights, adapted to in_channels / num_labels.

        Args:
            weights: a local state-dict file (.pth/.pt/.safetensors), or a torchvision weights name such as
                "IMAGENET1K_V1", "DEFAULT" or "ResNet18_Weights.IMAGENET1K_V1", read from torch.hub's cache
                (`torch.hub.get_dir()/checkpoints`). None: random init.
            allow_download: let torchvision download a named weights file that is not cached.
        Weights whose shape no longer fits (the head for another num_labels) keep their fresh init; the stem is
            adapted to in_channels (summed over RGB for grayscale).
        """
        config = TorchvisionConfig(architecture=architecture, pretrained_weights=None, **config_kwargs)
        model = cls(config)
        if weights is None:
            return model
        state, source = _load_torchvision_state(architecture, weights, allow_download)
        own = model.model.state_dict()
        stem_name, _ = _first_conv(model.model)
        adapted = {}
        for key, value in state.items():
            if key == f"{stem_name}.weight" and value.dim() == 4:
                value = _adapt_stem_weight(value, config.in_channels)
            if key in own and own[key].shape == value.shape:
                adapted[key] = value
        missing = sorted(set(own) - set(adapted))
        model.model.load_state_dict(adapted, strict=False)
        model.config.pretrained_weights = source
        model.pretrained_missing_keys = missing  # the freshly initialised ones, e.g. the new head
        return model

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, return_dict: bool | None = None
    ) -> ImageClassifierOutput | tuple:
        """pixel_values: (batch, in_channels, H, W); labels: (batch,) class ids. Loss: mean cross-entropy."""
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.config.in_channels:
            raise ValueError(
                f"pixel_values has shape {tuple(pixel_values.shape)} but {self.config.architecture} was built for "
                f"(batch, {self.config.in_channels}, H, W). Build TorchvisionConfig(in_channels="
                f"{pixel_values.shape[1] if pixel_values.dim() == 4 else '...'}) for this data, or convert the images."
            )
        logits = self.model(pixel_values.to(next(self.model.parameters()).dtype))
        if not isinstance(logits, torch.Tensor):  # GoogLeNet/Inception outputs with aux heads enabled
            logits = logits[0]
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        if return_dict is False:
            return (loss, logits) if loss is not None else (logits,)
        return ImageClassifierOutput(loss=loss, logits=logits)


def _load_torchvision_state(
    architecture: str, weights: str | os.PathLike, allow_download: bool
) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, provenance string) from a local file or torchvision's named weights (cache only by default)."""
    path = os.fspath(weights)
    if os.path.isfile(path):
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path), os.path.basename(path)
        return torch.load(path, map_location="cpu", weights_only=True), os.path.basename(path)
    import torchvision

    enum = torchvision.models.get_model_weights(architecture)
    member = path.split(".")[-1]
    try:
        entry = enum.DEFAULT if member == "DEFAULT" else enum[member]
    except KeyError:
        raise ValueError(
            f"{path!r} is neither a file nor a weights name of {architecture}; names: "
            f"{', '.join(['DEFAULT'] + [w.name for w in enum])}."
        ) from None
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(entry.url))
    if not os.path.isfile(cached) and not allow_download:
        raise FileNotFoundError(
            f"{enum.__name__}.{entry.name} is not in torch.hub's cache ({cached}). Pass a local weights file, put "
            "the file there, or allow_download=True."
        )
    return entry.get_state_dict(progress=False, check_hash=False), f"{enum.__name__}.{entry.name}"
