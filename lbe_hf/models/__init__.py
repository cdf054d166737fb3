"""PreTrainedModel adapters whose LBE targets are known: register with the Auto classes on import."""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .fnn import FNNConfig, FNNForImageClassification

AutoConfig.register(FNNConfig.model_type, FNNConfig, exist_ok=True)
AutoModel.register(FNNConfig, FNNForImageClassification, exist_ok=True)
AutoModelForImageClassification.register(FNNConfig, FNNForImageClassification, exist_ok=True)

__all__ = ["FNNConfig", "FNNForImageClassification"]
