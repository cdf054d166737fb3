"""PreTrainedModel adapters whose LBE targets are known: register with the Auto classes on import."""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .autoencoder import AutoencoderConfig, AutoencoderForImageReconstruction, mean_ssim, reconstruction_metrics
from .fnn import FNNConfig, FNNForImageClassification
from .torchvision_wrapper import TorchvisionConfig, TorchvisionForImageClassification

AutoConfig.register(FNNConfig.model_type, FNNConfig, exist_ok=True)
AutoModel.register(FNNConfig, FNNForImageClassification, exist_ok=True)
AutoModelForImageClassification.register(FNNConfig, FNNForImageClassification, exist_ok=True)
AutoConfig.register(TorchvisionConfig.model_type, TorchvisionConfig, exist_ok=True)
AutoModel.register(TorchvisionConfig, TorchvisionForImageClassification, exist_ok=True)
AutoModelForImageClassification.register(TorchvisionConfig, TorchvisionForImageClassification, exist_ok=True)
# No Auto class for image reconstruction exists; AutoModel loads the autoencoder with its head.
AutoConfig.register(AutoencoderConfig.model_type, AutoencoderConfig, exist_ok=True)
AutoModel.register(AutoencoderConfig, AutoencoderForImageReconstruction, exist_ok=True)

__all__ = [
    "AutoencoderConfig",
    "AutoencoderForImageReconstruction",
    "FNNConfig",
    "FNNForImageClassification",
    "TorchvisionConfig",
    "TorchvisionForImageClassification",
    "mean_ssim",
    "reconstruction_metrics",
]
