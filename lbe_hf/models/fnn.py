"""The paper's vanilla fully connected network (no skips, no normalization) as a `PreTrainedModel`."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "identity": nn.Identity}
INITS = ("he", "torch")


class FNNConfig(PretrainedConfig):
    """A vanilla FNN: `depth` hidden layers of `width` units, then a linear classifier.

    Args:
        input_dim: features per sample (`pixel_values` of any shape are flattened to this).
        depth: hidden layers (Linear + activation); the net has depth + 1 Linear layers, as the authors' "depth L".
        init: "he" (Kaiming normal, fan-in, zero bias: the paper's text) or "torch" (PyTorch's default
            `nn.Linear` init, weight variance 1/(3*fan_in): what the authors' published code ran, and why their
            deep nets start collapsed).
    """

    model_type = "lbe_fnn"

    def __init__(
        self,
        input_dim: int = 784,
        depth: int = 10,
        width: int = 256,
        num_labels: int | None = None,
        activation: str = "relu",
        init: str = "he",
        **kwargs,
    ):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}.")
        for name, value in (("input_dim", input_dim), ("depth", depth), ("width", width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.input_dim = input_dim
        self.depth = depth
        self.width = width
        self.activation = activation
        self.init = init
        # config.json stores id2label, not num_labels: a default of 10 here would override a saved label count.
        if num_labels is None and "id2label" not in kwargs:
            num_labels = 10
        if num_labels is not None:
            kwargs["num_labels"] = num_labels
        super().__init__(**kwargs)


@torch.no_grad()
def init_linear(module: nn.Linear, scheme: str) -> None:
    """ "he": Kaiming normal (fan-in, ReLU gain), zero bias. "torch": `nn.Linear`'s own default init."""
    if scheme == "he":
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(module.bias)
    else:
        nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(module.in_features)
        nn.init.uniform_(module.bias, -bound, bound)


class FNNBlock(nn.Module):
    """Linear + activation; LBE regularizes `act`'s output."""

    def __init__(self, fan_in: int, width: int, activation: str):
        super().__init__()
        self.linear = nn.Linear(fan_in, width)
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(x))


class FNNPreTrainedModel(PreTrainedModel):
    config_class = FNNConfig
    base_model_prefix = "fnn"
    main_input_name = "pixel_values"
    # forward takes no loss kwargs: the loss is a per-batch mean (see LBETrainer's gradient accumulation note).
    accepts_loss_kwargs = False
    # Every hidden layer's activation output.
    _lbe_target_modules = r"(.*\.)?layers\.\d+\.act"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Overrides post_init()'s N(0, 0.02): the init scheme is the experiment (collapse vs. healthy signal).
        if isinstance(module, nn.Linear):
            init_linear(module, self.config.init)


class FNNForImageClassification(FNNPreTrainedModel):
    def __init__(self, config: FNNConfig):
        super().__init__(config)
        dims = [config.input_dim] + [config.width] * config.depth
        self.layers = nn.ModuleList(FNNBlock(dims[i], dims[i + 1], config.activation) for i in range(config.depth))
        self.classifier = nn.Linear(config.width, config.num_labels)
        self.post_init()

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, return_dict: bool | None = None
    ) -> ImageClassifierOutput | tuple:
        """pixel_values: (batch, ...) flattened to (batch, input_dim); labels: (batch,) class ids."""
        x = pixel_values.reshape(pixel_values.shape[0], -1)
        if x.shape[1] != self.config.input_dim:
            raise ValueError(
                f"pixel_values has {x.shape[1]} features per sample but the model expects input_dim="
                f"{self.config.input_dim}; build FNNConfig(input_dim={x.shape[1]}, ...) for this data."
            )
        x = x.to(self.classifier.weight.dtype)
        for layer in self.layers:
            x = layer(x)
        logits = self.classifier(x)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels)
        if return_dict is False:
            return (loss, logits) if loss is not None else (logits,)
        return ImageClassifierOutput(loss=loss, logits=logits)
