"""The paper's deep fully connected autoencoder (Sec. 4.3) as a `PreTrainedModel`, and its SSIM evaluation.

Encoder: `depth` hidden layers (Linear + ReLU, `width` units), then a linear bottleneck of `bottleneck` units.
Decoder: `depth` hidden layers from the bottleneck, then a linear layer to one logit per pixel. The reconstruction
loss is Bernoulli (binary cross-entropy with logits, mean over pixels, as the authors' `nn.BCELoss` on sigmoid
outputs); the reconstruction is `sigmoid(logits)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

INITS = ("torch", "he")


class AutoencoderConfig(PretrainedConfig):
    """A deep FC autoencoder for images of shape (num_channels, image_size, image_size).

    Args:
        depth: hidden layers in the encoder and, again, in the decoder (the authors' `--depth`).
        width: units per hidden layer (paper: 256).
        bottleneck: size of the latent code (paper: 10).
        init: "torch" (PyTorch's default `nn.Linear` init, what the authors' code ran) or "he" (Kaiming normal).
    """

    model_type = "lbe_autoencoder"

    def __init__(
        self,
        num_channels: int = 1,
        image_size: int = 28,
        depth: int = 10,
        width: int = 256,
        bottleneck: int = 10,
        init: str = "torch",
        **kwargs,
    ):
        for name, value in (
            ("num_channels", num_channels),
            ("image_size", image_size),
            ("depth", depth),
            ("width", width),
            ("bottleneck", bottleneck),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}.")
        self.num_channels = num_channels
        self.image_size = image_size
        self.depth = depth
        self.width = width
        self.bottleneck = bottleneck
        self.init = init
        super().__init__(**kwargs)

    @property
    def input_dim(self) -> int:
        return self.num_channels * self.image_size * self.image_size


@dataclass
class AutoencoderOutput(ModelOutput):
    """loss: scalar BCE; reconstruction: (batch, C, H, W) pixel probabilities; latent: (batch, bottleneck)."""

    loss: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    latent: torch.Tensor | None = None


class DenseBlock(nn.Module):
    """Linear + ReLU; LBE regularizes `act`'s output."""

    def __init__(self, fan_in: int, width: int):
        super().__init__()
        self.linear = nn.Linear(fan_in, width)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(x))


class Encoder(nn.Module):
    """(batch, C*H*W) -> `depth` DenseBlocks -> (batch, bottleneck) latent code z (linear, no activation)."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        dims = [config.input_dim] + [config.width] * config.depth
        self.layers = nn.ModuleList(DenseBlock(dims[i], dims[i + 1]) for i in range(config.depth))
        self.bottleneck = nn.Linear(config.width, config.bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.bottleneck(x)


class Decoder(nn.Module):
    """(batch, bottleneck) -> `depth` DenseBlocks -> (batch, C*H*W) logits of per-pixel Bernoulli probabilities."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        dims = [config.bottleneck] + [config.width] * config.depth
        self.layers = nn.ModuleList(DenseBlock(dims[i], dims[i + 1]) for i in range(config.depth))
        self.output = nn.Linear(config.width, config.input_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            z = layer(z)
        return self.output(z)


class AutoencoderPreTrainedModel(PreTrainedModel):
    config_class = AutoencoderConfig
    base_model_prefix = "autoencoder"
    main_input_name = "pixel_values"
    accepts_loss_kwargs = False
    # The authors regularize every hidden ReLU output of encoder and decoder and the latent code z.
    _lbe_target_modules = r"(.*\.)?((en|de)coder\.layers\.\d+\.act|encoder\.bottleneck)"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Overrides post_init()'s N(0, 0.02): with depth 10+ that init collapses the signal before training starts.
        # Same rule as fnn.init_linear, repeated on purpose: pushed for trust_remote_code, this file stands alone.
        if not isinstance(module, nn.Linear):
            return
        if self.config.init == "he":
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(module.bias)
        else:
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(module.in_features)
            nn.init.uniform_(module.bias, -bound, bound)


class AutoencoderForImageReconstruction(AutoencoderPreTrainedModel):
    def __init__(self, config: AutoencoderConfig):
        super().__init__(config)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.post_init()

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, return_dict: bool | None = None
    ) -> AutoencoderOutput | tuple:
        """pixel_values: (batch, C, H, W) in [0, 1]. labels: the reconstruction target, same shape (default: the
        input itself; datasets pass it so the Trainer hands it to compute_metrics). Loss: mean BCE over pixels."""
        expected = (self.config.num_channels, self.config.image_size, self.config.image_size)
        if tuple(pixel_values.shape[1:]) != expected and pixel_values[0].numel() != self.config.input_dim:
            raise ValueError(
                f"pixel_values has shape {tuple(pixel_values.shape)} but the autoencoder was built for (batch, "
                f"{', '.join(map(str, expected))}). Build AutoencoderConfig(num_channels=..., image_size=...) for it."
            )
        x = pixel_values.reshape(pixel_values.shape[0], -1).to(self.decoder.output.weight.dtype)
        latent = self.encoder(x)
        logits = self.decoder(latent)
        target = x if labels is None else labels.reshape(labels.shape[0], -1).to(logits.dtype)
        if target.shape != logits.shape:
            raise ValueError(
                f"labels (the reconstruction target) has shape {tuple(labels.shape)}; it must be images in [0, 1] "
                f"shaped like pixel_values {tuple(pixel_values.shape)}, or None to reconstruct the input."
            )
        loss = nn.functional.binary_cross_entropy_with_logits(logits, target)
        reconstruction = torch.sigmoid(logits).reshape(pixel_values.shape[0], *expected)
        if return_dict is False:
            return (loss, reconstruction, latent)
        return AutoencoderOutput(loss=loss, reconstruction=reconstruction, latent=latent)


def mean_ssim(reconstructions: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor) -> float:
    """Mean structural similarity (scikit-image's `structural_similarity`, data range 1) over a batch.

    Uses the Gaussian-window setting of Wang et al. (2004) (11x11 window, sigma 1.5, population covariance), which is
    also torchmetrics' default, the implementation the authors' code reports.

    Args:
        reconstructions, targets: (N, C, H, W) or (N, H*W*C with square images of 1 channel) in [0, 1].
    Returns:
        the average of the per-image SSIM values.
    """
    from skimage.metrics import structural_similarity

    a = np.asarray(reconstructions.detach().cpu() if isinstance(reconstructions, torch.Tensor) else reconstructions)
    b = np.asarray(targets.detach().cpu() if isinstance(targets, torch.Tensor) else targets)
    if a.shape != b.shape:
        raise ValueError(f"reconstructions {a.shape} and targets {b.shape} differ in shape.")
    if a.ndim == 2:  # flattened single-channel squares
        side = math.isqrt(a.shape[1])
        a, b = a.reshape(-1, 1, side, side), b.reshape(-1, 1, side, side)
    a, b = a.astype(np.float64), b.astype(np.float64)
    scores = [
        structural_similarity(
            x.transpose(1, 2, 0),
            y.transpose(1, 2, 0),
            data_range=1.0,
            channel_axis=2,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        for x, y in zip(a, b)
    ]
    return float(np.mean(scores))


def reconstruction_metrics(eval_pred) -> dict[str, float]:
    """`compute_metrics` for the Trainer: predictions (reconstruction, latent), label_ids the original images."""
    predictions = eval_pred.predictions
    reconstructions = predictions[0] if isinstance(predictions, (tuple, list)) else predictions
    return {"ssim": mean_ssim(reconstructions, eval_pred.label_ids)}
