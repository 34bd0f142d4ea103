"""The techniques, each a LightningModule whose parameter is the image, and their parts."""

from lightning_modules.backbones import (
    Backbone,
    available_backbones,
    load_backbone,
    register_backbone,
)
from lightning_modules.base import DivergedError, ImageOptimization
from lightning_modules.class_visualization import ClassVisualization, create_class_visualization
from lightning_modules.errors import UserInputError
from lightning_modules.fooling import FoolingAttack, FoolingImage, make_fooling_image, pgd_attack
from lightning_modules.losses import content_loss, extract_features, gram_matrix, style_loss, tv_loss
from lightning_modules.saliency import (
    SaliencyBatch,
    SaliencyMap,
    attribution_map,
    compute_saliency_maps,
    integrated_gradients,
    smoothgrad_saliency,
)
from lightning_modules.strategy import ImageDDPStrategy
from lightning_modules.style_transfer import FeatureInversion, StyleTransfer, TextureSynthesis

__all__ = [
    "ImageDDPStrategy",
    "ClassVisualization",
    "create_class_visualization",
    "FoolingAttack",
    "FoolingImage",
    "SaliencyBatch",
    "SaliencyMap",
    "attribution_map",
    "compute_saliency_maps",
    "integrated_gradients",
    "make_fooling_image",
    "pgd_attack",
    "smoothgrad_saliency",
    "Backbone",
    "DivergedError",
    "FeatureInversion",
    "ImageOptimization",
    "StyleTransfer",
    "TextureSynthesis",
    "UserInputError",
    "available_backbones",
    "content_loss",
    "extract_features",
    "gram_matrix",
    "load_backbone",
    "register_backbone",
    "style_loss",
    "tv_loss",
]
