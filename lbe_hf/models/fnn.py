"""The paper's vanilla fully connected network (no skips, no normalization) as a `PreTrainedModel`."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "identity": nn.Identity}
INITS = ("he", "torch", "glorot", "orthogonal", "lsuv")


class FNNConfig(PretrainedConfig):
    """A vanilla FNN: `depth` hidden layers of `width` units, then a linear classifier.

    Args:
        input_dim: features per sample (`pixel_values` of any shape are flattened to this).
        depth: hidden layers (Linear + activation); the net has depth + 1 Linear layers, as the authors' "depth L".
        init: "he" (Kaiming normal, fan-in, zero bias: the paper's text), "torch" (PyTorch's default
            `nn.Linear` init, weight variance 1/(3*fan_in): what the authors' published code ran, and why their
            deep nets start collapsed), "glorot" (Glorot/Xavier uniform, weight variance 2/(fan_in+fan_out), zero
            bias: Keras' `Dense` default, which the TensorFlow port of LBE ran), "orthogonal" (orthogonal weights
            with gain sqrt(2), zero bias) or "lsuv"
            (Mishkin & Matas 2016: orthogonal, then every Linear rescaled to unit output variance on a data batch).
            "lsuv" needs that batch: call `lsuv_init(model, batch)` after construction; a model built with
            init="lsuv" refuses a training-mode forward until then (`lsuv_calibrated` records it in config.json).
        residual: x + f(x) around every hidden block whose input has the block's width (all but the first): the
            architectural fix, not the paper's vanilla net. Each branch's initial weights are scaled by
            1/(number of residual blocks) (n ReLU branches add coherently; 1/sqrt(n) lets the signal grow like
            exp(sqrt(n))), so the forward signal stays O(1) at any depth.
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
        residual: bool = False,
        lsuv_calibrated: bool = False,
        **kwargs,
    ):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}.")
        if residual and init == "lsuv":
            raise ValueError(
                "init='lsuv' rescales each layer's output and would undo the residual branch scaling; use "
                "residual=True with init 'he', 'torch' or 'orthogonal'."
            )
        for name, value in (("input_dim", input_dim), ("depth", depth), ("width", width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.input_dim = input_dim
        self.depth = depth
        self.width = width
        self.activation = activation
        self.init = init
        self.residual = residual
        self.lsuv_calibrated = lsuv_calibrated
        # config.json stores id2label, not num_labels: a default of 10 here would override a saved label count.
        if num_labels is None and "id2label" not in kwargs:
            num_labels = 10
        if num_labels is not None:
            kwargs["num_labels"] = num_labels
        super().__init__(**kwargs)


@torch.no_grad()
def init_linear(module: nn.Linear, scheme: str) -> None:
    """ "he": Kaiming normal (fan-in, ReLU gain), zero bias. "torch": `nn.Linear`'s own default init. "glorot":
    Glorot/Xavier uniform, zero bias (Keras' `Dense` default).

    "orthogonal" and "lsuv": orthogonal weights (rows or columns orthonormal, whichever is fewer) times sqrt(2),
    zero bias; "lsuv" then needs `lsuv_init` to rescale each layer on data.
    """
    if scheme == "he":
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(module.bias)
    elif scheme in ("orthogonal", "lsuv"):
        nn.init.orthogonal_(module.weight, gain=math.sqrt(2))
        nn.init.zeros_(module.bias)
    elif scheme == "glorot":
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
    elif scheme == "torch":
        nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(module.in_features)
        nn.init.uniform_(module.bias, -bound, bound)
    else:
        raise ValueError(f"init must be one of {INITS}, got {scheme!r}.")


class FNNBlock(nn.Module):
    """Linear + activation, plus the input when `residual`; LBE regularizes `act`'s output (the branch)."""

    def __init__(self, fan_in: int, width: int, activation: str, residual: bool = False):
        super().__init__()
        self.linear = nn.Linear(fan_in, width)
        self.act = ACTIVATIONS[activation]()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.linear(x))
        return x + out if self.residual else out


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
            if getattr(module, "_lbe_residual_scale", None) is not None:
                module.weight.mul_(module._lbe_residual_scale)
                module.bias.mul_(module._lbe_residual_scale)


class FNNForImageClassification(FNNPreTrainedModel):
    def __init__(self, config: FNNConfig):
        super().__init__(config)
        dims = [config.input_dim] + [config.width] * config.depth
        residual = [bool(config.residual) and dims[i] == dims[i + 1] for i in range(config.depth)]
        self.layers = nn.ModuleList(
            FNNBlock(dims[i], dims[i + 1], config.activation, residual[i]) for i in range(config.depth)
        )
        for block in self.layers:  # read by _init_weights: n branches of size 1/n keep the stream O(1)
            block.linear._lbe_residual_scale = 1 / sum(residual) if block.residual else None
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
        if self.training and self.config.init == "lsuv" and not self.config.lsuv_calibrated:
            raise RuntimeError(
                "This FNN was built with init='lsuv' but not calibrated: call "
                "lbe_hf.models.fnn.lsuv_init(model, batch) with a batch of training inputs before training."
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


@torch.no_grad()
def lsuv_init(
    model: FNNForImageClassification, batch: torch.Tensor, tol: float = 0.01, max_iters: int = 10
) -> list[float]:
    """LSUV (Mishkin & Matas 2016, "All you need is a good init"): orthogonal weights (from the constructor), then
    each Linear, bottom to top, divided by the std of its output on `batch` until that variance is 1 +- `tol`.

    Args:
        model: an FNN, usually built with `FNNConfig(init="lsuv")`; any init is rescaled the same way.
        batch: (batch, ...) training inputs, flattened as `forward` does; at least 2 samples.
    Returns:
        the output variance of each Linear (hidden layers, then the classifier) after rescaling.
    Sets `model.config.lsuv_calibrated = True`, which the forward of an init="lsuv" model checks.
    """
    x = batch.reshape(batch.shape[0], -1).to(model.classifier.weight.dtype)
    if x.shape[0] < 2:
        raise ValueError("lsuv_init needs a batch of at least 2 samples (the variance is over the batch).")
    variances = []
    for linear, after in [(b.linear, b) for b in model.layers] + [(model.classifier, None)]:
        for _ in range(max_iters):
            var = float(linear(x).var())
            if not math.isfinite(var) or var == 0.0:
                raise ValueError(f"lsuv_init: a layer's output variance on the batch is {var}; cannot rescale it.")
            if abs(var - 1.0) < tol:
                break
            linear.weight.div_(math.sqrt(var))
            linear.bias.div_(math.sqrt(var))
        variances.append(float(linear(x).var()))
        if after is not None:
            x = after(x)
    model.config.lsuv_calibrated = True
    return variances
