"""Smoothness terms: total variation of the picture, and of its colours alone."""

from __future__ import annotations

from typing import Any, Literal, Mapping, Optional

import torch

from lightning_modules.backbones import Backbone
from lightning_modules.errors import check_choice, check_non_negative
from lightning_modules.style_transfer.functional import chrominance, tv_loss
from lightning_modules.style_transfer.terms.base import LossTerm


class TotalVariation(LossTerm):
    """The homework's total variation: ``w * sum`` of squared neighbour differences of the
    normalized picture (wrapped around for a tileable picture).

    Args:
        weight: The term's weight.
        reduction: ``"mean"``: divided by the number of pixel values, so one weight serves
            every size; ``"sum"``: the homework's sum.
    """

    name = "tv"

    def __init__(self, weight: float = 0.0, reduction: Literal["mean", "sum"] = "mean") -> None:
        super().__init__()
        check_choice("loss_reduction", reduction, ("mean", "sum"))
        check_non_negative(f"{self.name}_weight", weight)
        self.weight = weight
        self.reduction = reduction
        self.wrap = False
        self.backbone: Optional[Backbone] = None

    def bind(self, backbone: Backbone, wrap: bool) -> None:
        self.wrap = wrap
        self.backbone = backbone

    def loss(self, pictures: torch.Tensor, features: Mapping[int, torch.Tensor], target: Any,
             step: int) -> torch.Tensor:
        return tv_loss(pictures, self.weight, self.reduction, wrap=self.wrap)


class ChromaTotalVariation(TotalVariation):
    """The total variation of the chrominance alone (I and Q of YIQ, in 0-1 pixel units).

    It removes single-pixel colour noise ("confetti") without blurring the luminance, where
    brush strokes and edges live.

    Args:
        weight: The term's weight.
        reduction: As :class:`TotalVariation`'s.
    """

    name = "chroma_tv"

    def loss(self, pictures: torch.Tensor, features: Mapping[int, torch.Tensor], target: Any,
             step: int) -> torch.Tensor:
        pixels = self.backbone.denormalize(pictures)
        return tv_loss(chrominance(pixels), self.weight, self.reduction, wrap=self.wrap)
