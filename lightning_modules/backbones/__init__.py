"""Frozen classifiers: the :class:`Backbone` interface, its preprocessing, the registry, and
:func:`classifier_backbone` for your own model."""

from lightning_modules.backbones.backbone import COMPILED_CALLS, Backbone, PixelInputs
from lightning_modules.backbones.custom import classifier_backbone
from lightning_modules.backbones.normalization import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    clamp_to_range,
    denormalize,
    normalize,
    pixel_range,
    preprocessing_of,
)
from lightning_modules.backbones.registry import (
    DEFAULT_BACKBONE,
    available_backbones,
    imagenet_categories,
    load_backbone,
    native_input_size,
    register_backbone,
)

__all__ = ["COMPILED_CALLS", "DEFAULT_BACKBONE", "IMAGENET_MEAN", "IMAGENET_STD", "Backbone",
           "PixelInputs",
           "available_backbones", "clamp_to_range", "classifier_backbone", "denormalize", "imagenet_categories",
           "load_backbone", "native_input_size", "normalize", "pixel_range", "preprocessing_of", "register_backbone"]
