"""The content term: the picture's features match the content image's (Gatys et al.)."""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence, Union

import torch

from lightning_modules.backbones import Backbone
from lightning_modules.errors import UserInputError, check_choice, check_non_negative
from lightning_modules.image_optimization.resize import resize_pixels
from lightning_modules.style_transfer.functional import content_loss
from lightning_modules.style_transfer.terms.base import LossTerm, per_layer


class ContentTerm(LossTerm):
    """``sum_l w_l * ||F_l - P_l||^2`` per picture: its features against the content image's.

    Args:
        layers: The layers whose features the picture must share with the content image, by
            index or by name (``python cli.py layers --model.backbone NAME`` lists them).
        weight: One weight for all layers, or one each.
        reduction: ``"mean"``: a mean over the feature values, so one weight serves every
            picture size (and every scale); ``"sum"``: the homework's sum.
    """

    name = "content"
    reads_content = True

    def __init__(self, layers: Sequence[Union[int, str]] = (4,),
                 weight: float | Sequence[float] = 1.0,
                 reduction: Literal["mean", "sum"] = "mean") -> None:
        super().__init__()
        check_choice("loss_reduction", reduction, ("mean", "sum"))
        if isinstance(weight, (int, float)):
            check_non_negative("content_weight", weight)
        self.layer_names = list(layers)
        self.weight = weight
        self.reduction = reduction
        self.weights: list[float] = []

    def bind(self, backbone: Backbone, wrap: bool) -> None:
        self.layers = backbone.layer_indices(self.layer_names, "content layer")
        self.weights = per_layer(self.weight, len(self.layers), "content_weight")
        check_non_negative("content_weight", self.weights)
        if not self.layers:
            raise UserInputError("content_layers must name at least one layer.")

    def target(self, jobs: Sequence[Any], sizes: Sequence[tuple[int, int]], backbone: Backbone,
               device: torch.device) -> list[torch.Tensor]:
        contents = torch.stack([resize_pixels(job.content, size)
                                for job, size in zip(jobs, sizes)]).to(device)
        return backbone.extract(backbone.normalize(contents), self.layers)

    def loss(self, pictures: torch.Tensor, features: Mapping[int, torch.Tensor],
             target: list[torch.Tensor], step: int) -> torch.Tensor:
        return sum(content_loss(weight, features[layer], layer_target, self.reduction)
                   for layer, weight, layer_target in zip(self.layers, self.weights, target))

    def panels(self, job: Any) -> list[tuple[str, torch.Tensor]]:
        return [("content", job.content)]
