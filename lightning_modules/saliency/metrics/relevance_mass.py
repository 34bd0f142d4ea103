"""Relevance mass accuracy (Arras et al. 2022): the share of the map's mass on the object.

As Quantus' ``RelevanceMassAccuracy`` (0.6): the sum of the map inside the object's box over
the sum of the whole map. 1 puts all relevance on the object; a map spread evenly scores the
box's share of the image.
"""

from __future__ import annotations

import torch

from lightning_modules.saliency.metrics.base import MetricInputs, SaliencyMetric
from lightning_modules.saliency.metrics.pointing_game import box_masks


class RelevanceMassAccuracy(SaliencyMetric):
    """``sum(map inside the box) / sum(map)`` per image (NaN without a box).

    No normalisation: Quantus divides the maps by their maximum first, which leaves the ratio as
    it is. A box covers the pixels whose centres lie in it
    (:func:`~lightning_modules.saliency.metrics.pointing_game.box_masks`); an image without a
    box, or whose box covers no pixel, scores NaN, as Quantus scores an empty mask. An all-zero
    map scores NaN (0 / 0), as in Quantus.
    """

    name = "relevance_mass_accuracy"
    family = "localisation"
    higher_is_better = True
    needs_boxes = True

    @property
    def normalisation(self) -> str:
        return "none (the ratio is the same after Quantus' division by the maximum)"

    def score(self, batch: MetricInputs) -> torch.Tensor:
        maps = batch.maps.detach().to(torch.float32)
        count, height, width = maps.shape
        if batch.boxes is None:
            return torch.full((count,), float("nan"), device=maps.device)
        inside = box_masks(batch.boxes.to(maps.device), height, width)
        within = (maps * inside).sum(dim=(1, 2))
        accuracy = within / maps.sum(dim=(1, 2))
        has_box = inside.any(dim=2).any(dim=1)
        return torch.where(has_box, accuracy, torch.full_like(accuracy, float("nan")))
