"""Resizing pictures between the sizes of a run's stages (coarse-to-fine scales, octaves).

No Lightning here: what :meth:`~lightning_modules.image_optimization.ImageOptimization.enter_stage`
uses to bring a picture from one stage's size to the next's.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def resize_pixels(images: torch.Tensor, size: Sequence[int], circular: bool = False
                  ) -> torch.Tensor:
    """Resize ``[C, H, W]`` or ``[N, C, H, W]`` images to ``size = (H, W)``, bilinearly.

    Shrinking is antialiased (no aliasing of fine texture into the coarse picture); the same
    size returns the images unchanged. ``circular``: the image is a torus (a tileable
    picture): the last row's neighbour is the first, so the result tiles as the input did.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(images.shape[-2:]) == size:
        return images
    if circular:
        return _circular_bilinear(images, size)
    batch = images if images.dim() == 4 else images[None]
    shrinking = size[0] * size[1] < batch.shape[-2] * batch.shape[-1]
    resized = F.interpolate(batch.float(), size=size, mode="bilinear", align_corners=False,
                            antialias=shrinking).to(images.dtype)
    return resized if images.dim() == 4 else resized[0]


def _circular_bilinear(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resizing with wrapped-around neighbours (pixel centres aligned, as
    ``F.interpolate(align_corners=False)``): no edge is clamped, so no seam appears."""

    def taps(source: int, target: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        position = (torch.arange(target, dtype=torch.float64) + 0.5) * source / target - 0.5
        low = position.floor()
        weight = (position - low).to(images.device, torch.float32)
        low = low.long()
        return (low % source).to(images.device), ((low + 1) % source).to(images.device), weight

    top, bottom, down = taps(images.shape[-2], size[0])
    left, right, across = taps(images.shape[-1], size[1])
    values = images.float()
    rows = values[..., top, :] * (1 - down)[:, None] + values[..., bottom, :] * down[:, None]
    resized = rows[..., left] * (1 - across) + rows[..., right] * across
    return resized.to(images.dtype)
