"""Plain-torch multimodal models: encoders per modality, fusion, alignment losses, build_model(arch)."""

from mmops.models.fusion import (
    FUSIONS,
    FusionClassifier,
    ModalityEncoder,
    alignment_loss,
    build_model,
    info_nce,
    recall_at_k,
)
from mmops.models.image import IMAGE_ENCODERS, PRETRAINED_IMAGE, load_backbone_weights
from mmops.models.sensor import SENSOR_ENCODERS
from mmops.models.text import TEXT_ENCODERS, resolve_text_encoder

__all__ = ["FUSIONS", "IMAGE_ENCODERS", "PRETRAINED_IMAGE", "SENSOR_ENCODERS", "TEXT_ENCODERS", "FusionClassifier",
           "ModalityEncoder", "alignment_loss", "build_model", "info_nce", "load_backbone_weights", "recall_at_k",
           "resolve_text_encoder"]
