"""The colour term: the picture's pixels are distributed as the style's (its palette and values).

The style term compares network features, and a network's features barely depend on the
absolute colour and lightness of a region (a classifier is trained to ignore them): a picture
started from the photo keeps the photo's palette wherever its strokes already satisfy the
features. This term compares the pixels themselves, in CIELAB, so the result takes the
painting's colours and lightness as well as its strokes.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import torch

from lightning_modules.backbones import Backbone
from lightning_modules.errors import UserInputError, check_non_negative
from lightning_modules.image_optimization.resize import resize_pixels
from lightning_modules.style_transfer.functional import rgb_to_lab
from lightning_modules.style_transfer.style_losses import (SlicedWassersteinLoss, blended_targets,
                                                           layered_style_loss, masked_style_loss,
                                                           style_regions)
from lightning_modules.style_transfer.terms.base import LossTerm

# The lightness and the chrominance stand for two "layers" of the style losses (seeding their
# random directions apart from the network's layers, which are 0 and up).
_LIGHTNESS, _CHROMA = -1, -2
# Lab scaled so that its three axes span about one unit, as 0-1 RGB does.
_LAB_SCALE = torch.tensor([1 / 100, 1 / 128, 1 / 128])


class ColorTerm(LossTerm):
    """``w * (SW(L) + f * SW(a, b))``: how far the distribution of the picture's colours is from
    the style images' (blended; with style masks, each in its region).

    The sliced Wasserstein distance (:class:`~..style_losses.SlicedWassersteinLoss`) of the
    pixels' CIELAB lightness (one dimension: its exact Wasserstein distance) and, apart, of
    their chrominance (a and b, along random directions each step): the whole distribution,
    palette and values, not only its mean and spread. Lightness and chrominance are matched
    apart so that a mismatch of lightness never pushes colours: against a painting without
    colour, every pixel's chrominance is pulled straight to grey.

    Every pixel of the picture counts at every step. A large style is represented by every
    ``k``-th of its pixels across and down (at most ``most_pixels``): its quantiles, which the
    picture's sorted pixels are compared with, barely change, and fewer values are sorted
    again at every step.

    Args:
        weight: The term's weight.
        chroma_factor: How much more the chrominance's distance counts than the lightness's
            (``f``). Against a painting without colour the photo's tints must go entirely:
            measured at 512 px (docs/style_transfer.md), the result's chroma noise was 0.0024
            with 1, 0.0021 with 4 and 0.0016 with 16, at the same colour distance.
        most_pixels: The most pixels of a style image kept.
    """

    name = "color"
    reads_styles = True

    def __init__(self, weight: float = 0.0, chroma_factor: float = 16.0,
                 most_pixels: int = 65536) -> None:
        super().__init__()
        check_non_negative("color_weight", weight)
        check_non_negative("chroma_factor", chroma_factor)
        if isinstance(most_pixels, bool) or not isinstance(most_pixels, int) or most_pixels < 1:
            raise UserInputError(f"most_pixels must be a whole number of at least 1, got "
                                 f"{most_pixels!r}.")
        self.weight = weight
        self.chroma_factor = chroma_factor
        self.most_pixels = most_pixels
        self.criterion = SlicedWassersteinLoss()  # as many directions as channels: 1 and 2
        self.backbone: Optional[Backbone] = None

    def bind(self, backbone: Backbone, wrap: bool) -> None:
        self.backbone = backbone

    def block(self, size: Sequence[int]) -> int:
        """The step ``k`` of the pixels kept of a style image of ``size``."""
        return max(1, math.ceil(math.sqrt(size[0] * size[1] / self.most_pixels)))

    @staticmethod
    def colors(pixels: torch.Tensor) -> dict[int, torch.Tensor]:
        """The lightness ``[N, 1, H, W]`` and chrominance ``[N, 2, H, W]`` of 0-1 pixels
        ``[N, 3, H, W]``, in CIELAB scaled to about one unit per axis."""
        lab = rgb_to_lab(pixels) * _LAB_SCALE.to(pixels)[:, None, None]
        return {_LIGHTNESS: lab[:, :1], _CHROMA: lab[:, 1:]}

    def target(self, jobs: Sequence[Any], sizes: Sequence[tuple[int, int]], backbone: Backbone,
               device: torch.device) -> tuple[list[Any], Optional[tuple[Any, Any, Any]]]:
        """The blended colour statistics of each job's styles, and the regions (None without
        masks)."""
        statistics = []
        for job, size in zip(jobs, sizes):
            factor = min(size) / min(job.size)  # as the style term: styles follow the picture
            per_style = []
            for style in job.styles:
                pixels = resize_pixels(style, [round(side * factor) for side in style.shape[-2:]])
                block = self.block(pixels.shape[-2:])
                colors = self.colors(pixels[:, ::block, ::block].to(device)[None])
                per_style.append([self.criterion.target(colors[part])
                                  for part in (_LIGHTNESS, _CHROMA)])
            statistics.append(per_style)
        return (blended_targets(self.criterion, statistics, jobs),
                style_regions(self.criterion, statistics, jobs, device))

    def loss(self, pictures: torch.Tensor, features: Mapping[int, torch.Tensor], target: Any,
             step: int) -> torch.Tensor:
        colors = self.colors(self.backbone.denormalize(pictures))
        parts, weights = [_LIGHTNESS, _CHROMA], [self.weight, self.weight * self.chroma_factor]
        targets, regions = target
        if regions is None:
            return layered_style_loss(self.criterion, colors, parts, targets, weights, step)
        return masked_style_loss(self.criterion, colors, parts, weights, *regions, step)
