"""Terms on the pixels' own statistics against the style's: its palette and values
(:class:`ColorTerm`), and no more fine colour detail than it has (:class:`ChromaDetailTerm`).

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
from lightning_modules.style_transfer.functional import _RGB_TO_YIQ, chrominance, rgb_to_lab
from lightning_modules.style_transfer.style_losses import (ExcessOverQuantiles, SlicedWassersteinLoss,
                                                           StyleLoss, blended_targets,
                                                           layered_style_loss, masked_style_loss,
                                                           quantile_function, style_regions)
from lightning_modules.style_transfer.terms.base import LossTerm

# The pixel statistics stand for "layers" of the style losses (seeding their random directions
# apart from the network's layers, which are 0 and up).
_LIGHTNESS, _CHROMA, _CHROMA_DETAIL = -1, -2, -3
# Lab scaled so that its three axes span about one unit, as 0-1 RGB does.
_LAB_SCALE = torch.tensor([1 / 100, 1 / 128, 1 / 128])


class PixelStatisticsTerm(LossTerm):
    """A term comparing statistics of the picture's pixels with the style images' (blended;
    with style masks, each in its region), through a style loss's criterion.

    A subclass says which statistics (:meth:`statistics`: maps ``[N, C, H, W]`` by part), with
    which weights (:meth:`part_weights`) and criterion. Every pixel of the picture counts at
    every step. A large style is represented by every ``k``-th of its statistics' values across
    and down (at most ``most_pixels``): its quantiles, which the picture's sorted values are
    compared with, barely change, and fewer values are sorted again at every step.

    Args:
        weight: The term's weight.
        criterion: The comparison of distributions (a sliced-Wasserstein kind of style loss).
        most_pixels: The most pixels of a style image kept.
    """

    reads_styles = True

    def __init__(self, weight: float, criterion: StyleLoss, most_pixels: int) -> None:
        super().__init__()
        check_non_negative(f"{self.name}_weight", weight)
        if isinstance(most_pixels, bool) or not isinstance(most_pixels, int) or most_pixels < 1:
            raise UserInputError(f"most_pixels must be a whole number of at least 1, got "
                                 f"{most_pixels!r}.")
        self.weight = weight
        self.most_pixels = most_pixels
        self.criterion = criterion
        self.backbone: Optional[Backbone] = None

    def bind(self, backbone: Backbone, wrap: bool) -> None:
        self.backbone = backbone

    def block(self, size: Sequence[int]) -> int:
        """The step ``k`` of the values kept of a style image of ``size``."""
        return max(1, math.ceil(math.sqrt(size[0] * size[1] / self.most_pixels)))

    def statistics(self, pixels: torch.Tensor) -> dict[int, torch.Tensor]:
        """The compared statistics of 0-1 pixels ``[N, 3, H, W]``, maps ``[N, C, H, W]`` by
        part."""
        raise NotImplementedError

    def part_weights(self) -> list[float]:
        """The weight of each part of :meth:`statistics`, in its order."""
        raise NotImplementedError

    def target(self, jobs: Sequence[Any], sizes: Sequence[tuple[int, int]], backbone: Backbone,
               device: torch.device) -> tuple[list[Any], Optional[tuple[Any, Any, Any]]]:
        """The blended statistics of each job's styles, and the regions (None without masks)."""
        statistics = []
        for job, size in zip(jobs, sizes):
            factor = min(size) / min(job.size)  # as the style term: styles follow the picture
            per_style = []
            for style in job.styles:
                pixels = resize_pixels(style, [round(side * factor) for side in style.shape[-2:]])
                block = self.block(pixels.shape[-2:])
                parts = self.statistics(pixels.to(device)[None])
                per_style.append([self.criterion.target(part[..., ::block, ::block])
                                  for part in parts.values()])
            statistics.append(per_style)
        return (blended_targets(self.criterion, statistics, jobs),
                style_regions(self.criterion, statistics, jobs, device))

    def loss(self, pictures: torch.Tensor, features: Mapping[int, torch.Tensor], target: Any,
             step: int) -> torch.Tensor:
        parts = self.statistics(self.backbone.denormalize(pictures))
        names, weights = list(parts), self.part_weights()
        targets, regions = target
        if regions is None:
            return layered_style_loss(self.criterion, parts, names, targets, weights, step)
        return masked_style_loss(self.criterion, parts, names, weights, *regions, step)


class ColorTerm(PixelStatisticsTerm):
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

    def __init__(self, weight: float = 0.0, chroma_factor: float = 16.0,
                 most_pixels: int = 65536) -> None:
        check_non_negative("chroma_factor", chroma_factor)
        # As many directions as channels: 1 and 2.
        super().__init__(weight, SlicedWassersteinLoss(), most_pixels)
        self.chroma_factor = chroma_factor

    @staticmethod
    def colors(pixels: torch.Tensor) -> dict[int, torch.Tensor]:
        """The lightness ``[N, 1, H, W]`` and chrominance ``[N, 2, H, W]`` of 0-1 pixels
        ``[N, 3, H, W]``, in CIELAB scaled to about one unit per axis."""
        lab = rgb_to_lab(pixels) * _LAB_SCALE.to(pixels)[:, None, None]
        return {_LIGHTNESS: lab[:, :1], _CHROMA: lab[:, 1:]}

    def statistics(self, pixels: torch.Tensor) -> dict[int, torch.Tensor]:
        return self.colors(pixels)

    def part_weights(self) -> list[float]:
        return [self.weight, self.weight * self.chroma_factor]


def chroma_detail(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How far each pixel's chrominance stands out of its 3x3 neighbourhood's mean.

    Args:
        pixels: 0-1 RGB pixels ``[N, 3, H, W]``.

    Returns:
        The detail ``[N, 2, H, W]``: the chrominance (I and Q of YIQ, 0-1 units) minus its 3x3
        box average (edges replicated), 0 where colour is smooth, large at colour specks and
        fringes; and its length ``[N, 1, H, W]``.
    """
    chroma = chrominance(pixels)
    padded = torch.nn.functional.pad(chroma, (1, 1, 1, 1), mode="replicate")
    detail = chroma - torch.nn.functional.avg_pool2d(padded, 3, stride=1)
    # The small floor keeps the length's gradient finite where the colour is exactly smooth.
    return detail, (detail.pow(2).sum(1, keepdim=True) + 1e-12).sqrt()


class ChromaDetailTerm(PixelStatisticsTerm):
    """No more fine colour detail than the painting has: a limit after each step, a loss, or both.

    The picture's :func:`chroma_detail` lengths, ranked, are compared with the style's
    quantiles at the same levels (blended over the styles; style masks are not looked at):
    where the painting is smooth in colour (a Vermeer's glazes), the specks and fringes of
    colour the network's features bring are too much; where it has strokes of colour (an
    impressionist's), as much colour detail as the painting has is allowed. A total variation
    of the chrominance, in contrast, costs the same against every painting.

    - ``limit`` (pixel pictures): after every optimizer step each pixel's colour detail is
      scaled down to the style's quantile at its rank, the luminance untouched. The other
      terms' steps are left as they are: measured at 512 px, the limit met the speckle bound
      where the loss alone, weighted enough to meet it, slowed the colour term (docs).
    - ``weight``: the loss ``w * mean_i max(0, d(i) - q(i))^2`` over the sorted lengths ``d``
      (:class:`~..style_losses.ExcessOverQuantiles`), for pictures a limit cannot reach
      (Fourier parameterization).

    Args:
        weight: The loss's weight (0: no loss; the term then adds no column to the losses).
        limit: Limit the colour detail after each step.
        most_pixels: The most pixels of a style image kept.
    """

    name = "chroma_detail"

    def __init__(self, weight: float = 0.0, limit: bool = True, most_pixels: int = 65536) -> None:
        super().__init__(weight, ExcessOverQuantiles(), most_pixels)
        if not isinstance(limit, bool):
            raise UserInputError(f"limit must be true or false, got {limit!r}.")
        self.limit = limit
        self.adds_loss = weight > 0

    def statistics(self, pixels: torch.Tensor) -> dict[int, torch.Tensor]:
        return {_CHROMA_DETAIL: chroma_detail(pixels)[1]}

    def part_weights(self) -> list[float]:
        return [self.weight]

    @torch.no_grad()
    def project(self, pixels: torch.Tensor, target: Any) -> Optional[torch.Tensor]:
        if not self.limit:
            return None
        (mixtures,), _ = target  # one part; each picture's blend of style clouds [1, M]
        detail, lengths = chroma_detail(pixels)
        flat = lengths.flatten(1)  # [N, H*W]
        order = flat.argsort(-1)
        levels = (torch.arange(flat.shape[-1], device=flat.device) + 0.5) / flat.shape[-1]
        allowed = torch.empty_like(flat)
        for image, mixture in enumerate(mixtures):
            at_rank = sum(weight * quantile_function(cloud.sort(-1).values, levels[None])[0]
                          for weight, cloud in mixture)
            allowed[image].scatter_(0, order[image], at_rank)
        scale = (allowed / flat).clamp(max=1.0).view_as(lengths)
        # Only the chrominance changes: back to RGB through YIQ's inverse, I and Q columns.
        to_rgb = torch.linalg.inv(_RGB_TO_YIQ)[:, 1:].to(detail)
        change = torch.einsum("ij,njhw->nihw", to_rgb, detail * (scale - 1))
        return pixels + change.to(pixels.dtype)
