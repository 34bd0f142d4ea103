"""The style term: the picture's feature statistics match the style images' (Gatys et al.)."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import torch

from lightning_modules.backbones import Backbone
from lightning_modules.errors import UserInputError, check_non_negative
from lightning_modules.image_optimization.resize import resize_pixels
from lightning_modules.style_transfer.style_losses import (
    StyleLoss,
    blended_targets,
    layered_style_loss,
    make_style_loss,
    masked_style_loss,
    style_regions,
)
from lightning_modules.style_transfer.terms.base import LossTerm, per_layer


class StyleTerm(LossTerm):
    """``sum_l w_l * loss_l`` per picture: its statistics at each style layer against the
    style images' (blended by ``style_blend_weights``; with style masks, each style in its
    region, see :func:`~lightning_modules.style_transfer.style_losses.masked_style_loss`).

    The style images shrink with the picture at a coarse scale, so their strokes keep their
    size relative to it.

    Args:
        layers: The style layers, by index or by name.
        weights: The weight of each style layer (one number: the same for all).
        loss: The statistics matched: a :class:`~.style_losses.StyleLoss` object, or the name
            of one (``"gram"``, ``"mean_std"``, ``"sliced_wasserstein"``; see
            :data:`~.style_losses.STYLE_LOSSES`).
    """

    name = "style"
    reads_styles = True

    def __init__(self, layers: Sequence[Union[int, str]] = (1, 2, 3, 4),
                 weights: float | Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                 loss: Union[StyleLoss, str] = "gram") -> None:
        super().__init__()
        self.criterion = make_style_loss(loss)
        if isinstance(weights, (int, float)):
            check_non_negative("style_weights", weights)
        self.layer_names = list(layers)
        self.weight = weights
        self.weights: list[float] = []

    def bind(self, backbone: Backbone, wrap: bool) -> None:
        self.layers = backbone.layer_indices(self.layer_names, "style layer")
        self.weights = per_layer(self.weight, len(self.layers), "style_weights")
        check_non_negative("style_weights", self.weights)
        if not self.layers:
            raise UserInputError("style_layers must name at least one layer.")
        backbone.check_spatial(self.layers, "style layer")

    def target(self, jobs: Sequence[Any], sizes: Sequence[tuple[int, int]], backbone: Backbone,
               device: torch.device) -> tuple[list[Any], Optional[tuple[Any, Any, Any]]]:
        """The blended targets of each style layer, and the regions (None without masks)."""
        statistics = [self.statistics(job, size, backbone, device)
                      for job, size in zip(jobs, sizes)]
        return (blended_targets(self.criterion, statistics, jobs),
                style_regions(self.criterion, statistics, jobs, device))

    def statistics(self, job: Any, size: tuple[int, int], backbone: Backbone,
                   device: torch.device) -> list[list[Any]]:
        """The style loss's statistics of each style image of ``job``, at each style layer,
        for a picture of ``size``."""
        factor = min(size) / min(job.size)  # the picture's scale: the styles follow it
        statistics = []
        for style in job.styles:
            pixels = resize_pixels(style, [round(side * factor) for side in style.shape[-2:]])
            pixels = pixels.to(device)[None]
            feats = backbone.extract(backbone.normalize(pixels), self.layers)
            statistics.append([self.criterion.target(f) for f in feats])
        return statistics

    def loss(self, pictures: torch.Tensor, features: Mapping[int, torch.Tensor], target: Any,
             step: int) -> torch.Tensor:
        targets, regions = target
        if regions is None:
            return layered_style_loss(self.criterion, features, self.layers, targets,
                                      self.weights, step)
        return masked_style_loss(self.criterion, features, self.layers, self.weights, *regions,
                                 step)

    def panels(self, job: Any) -> list[tuple[str, torch.Tensor]]:
        styles = job.styles
        panels = [(f"style {k + 1}" if len(styles) > 1 else "style", s)
                  for k, s in enumerate(styles)]
        return panels + [(f"mask {k + 1}", mask.expand(3, -1, -1))
                         for k, mask in enumerate(getattr(job, "style_masks", []))]
