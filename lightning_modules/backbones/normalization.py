"""A classifier's preprocessing: 0-1 pixels to its normalized inputs, and the valid pixel range.

The one implementation of these conversions: :class:`~lightning_modules.backbones.Backbone`
uses it with its own ``mean`` and ``std``, and the seed's plain functions use it with the mean
and std they are given (a plain ``nn.Module`` has none: ImageNet's are the default).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def channel_values(values: Any, like: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-channel values (a sequence or tensor) as ``[1, C, 1, 1]``, on ``like``'s device/dtype."""
    if like is None:
        return torch.as_tensor(values, dtype=torch.float32).detach().reshape(1, -1, 1, 1)
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).reshape(1, -1, 1, 1)


def normalize(pixels: torch.Tensor, mean: Any, std: Any) -> torch.Tensor:
    """0-1 pixels ``[N, C, H, W]`` to the network's input space: ``(pixels - mean) / std``."""
    return (pixels - channel_values(mean, pixels)) / channel_values(std, pixels)


def denormalize(inputs: torch.Tensor, mean: Any, std: Any) -> torch.Tensor:
    """Network inputs back to 0-1 pixels (not clamped): ``inputs * std + mean``."""
    return inputs * channel_values(std, inputs) + channel_values(mean, inputs)


def pixel_range(mean: Any, std: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalized values of black and white pixels, each ``[1, C, 1, 1]``."""
    mean, std = channel_values(mean), channel_values(std)
    return -mean / std, (1 - mean) / std


def clamp_to_range(images: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Clamp normalized images per channel to ``[low, high]`` (each ``[1, C, 1, 1]``)."""
    return torch.max(torch.min(images, high.to(images)), low.to(images))


def preprocessing_of(model: nn.Module, mean: Optional[Sequence[float]] = None,
                     std: Optional[Sequence[float]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean`` and ``std`` as ``[1, 3, 1, 1]`` on the CPU: given, else the model's own (a
    :class:`~lightning_modules.backbones.Backbone` knows them), else ImageNet's."""
    if mean is None:
        mean = getattr(model, "mean", IMAGENET_MEAN)
    if std is None:
        std = getattr(model, "std", IMAGENET_STD)
    return (channel_values(torch.as_tensor(mean).detach().cpu()),
            channel_values(torch.as_tensor(std).detach().cpu()))
