"""Pointing game (Zhang et al. 2018): does the map's strongest pixel fall on the object?

As Quantus' ``PointingGame`` (0.6): a hit when any pixel that holds the map's maximum lies in
the object's box. Zhang et al. count a hit within 15 pixels of the object as well, to forgive
small offsets; :class:`PointingGame`'s ``tolerance`` takes that distance (0, Quantus' setting,
by default).
"""

from __future__ import annotations

import torch

from lightning_modules.errors import check_non_negative
from lightning_modules.saliency.metrics.base import MetricInputs, SaliencyMetric


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Which pixels lie in each box: ``[B, height, width]`` bool.

    A pixel lies in a box when its centre does: pixel ``(row, column)`` is in
    ``(x0, y0, x1, y1)`` when ``x0 <= column + 0.5 < x1`` and ``y0 <= row + 0.5 < y1``, which
    for whole-pixel boxes is ``x0 <= column < x1`` (exclusive ends) and for boxes scaled with
    the image keeps the pixels the box mostly covers. A NaN row, or a box outside the image,
    covers no pixel.

    Args:
        boxes: ``[B, 4]`` boxes ``(x0, y0, x1, y1)`` in input pixels.
        height: The maps' height.
        width: The maps' width.
    """
    boxes = boxes.to(torch.float32)
    x0, y0, x1, y1 = boxes.unbind(dim=1)
    columns = torch.arange(width, dtype=torch.float32, device=boxes.device) + 0.5
    rows = torch.arange(height, dtype=torch.float32, device=boxes.device) + 0.5
    in_columns = (x0[:, None] <= columns) & (columns < x1[:, None])  # NaN compares False
    in_rows = (y0[:, None] <= rows) & (rows < y1[:, None])
    return in_rows[:, :, None] & in_columns[:, None, :]


def box_distances(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Each pixel's distance in pixels to the nearest pixel of each box (0 inside):
    ``[B, height, width]``.

    Measured between pixel centres (the box's pixels span centres ``x0 + 0.5 ... x1 - 0.5``),
    so the pixel beside a box is 1 away, as Zhang et al. count their tolerance in pixels.
    """
    boxes = boxes.to(torch.float32)
    x0, y0, x1, y1 = boxes.unbind(dim=1)
    columns = torch.arange(width, dtype=torch.float32, device=boxes.device) + 0.5
    rows = torch.arange(height, dtype=torch.float32, device=boxes.device) + 0.5
    dx = (x0[:, None] + 0.5 - columns).clamp(min=0) + (columns - x1[:, None] + 0.5).clamp(min=0)
    dy = (y0[:, None] + 0.5 - rows).clamp(min=0) + (rows - y1[:, None] + 0.5).clamp(min=0)
    return torch.hypot(dy[:, :, None], dx[:, None, :])


class PointingGame(SaliencyMetric):
    """1 where the map's maximum lies on the object's box, else 0 (NaN without a box).

    Ties count as in Quantus: a hit when any pixel that holds the maximum is in the box (so a
    flat map hits every box). No normalisation: Quantus divides the maps by their maximum,
    which moves no maximum of a non-negative map.

    Differences from Quantus 0.6, on purpose: an image without a box (or whose box covers no
    pixel) scores NaN, where Quantus writes NaN into a boolean array and so returns 1; Quantus'
    ``weighted`` option (which suffers the same cast) is not offered.

    Args:
        tolerance: Also a hit when a maximum's pixel lies within this many pixels of the box's
            nearest pixel (centre to centre, :func:`box_distances`; Zhang et al. used 15 px at
            224 px); 0 asks for the box itself.
    """

    name = "pointing_game"
    family = "localisation"
    higher_is_better = True
    needs_boxes = True

    def __init__(self, tolerance: float = 0.0) -> None:
        check_non_negative("tolerance", tolerance)
        self.tolerance = tolerance

    @property
    def perturbation(self) -> str:
        return "none"

    @property
    def normalisation(self) -> str:
        return ("none (the maximum of a non-negative map is the same after Quantus' division by "
                "the maximum)")

    def score(self, batch: MetricInputs) -> torch.Tensor:
        maps = batch.maps.detach()
        count, height, width = maps.shape
        if batch.boxes is None:
            return torch.full((count,), float("nan"), device=maps.device)
        boxes = batch.boxes.to(maps.device)
        inside = box_masks(boxes, height, width)
        reach = inside
        if self.tolerance > 0:
            reach = inside | (box_distances(boxes, height, width) <= self.tolerance)
        peaks = maps == maps.amax(dim=(1, 2), keepdim=True)
        hits = (peaks & reach).any(dim=2).any(dim=1).to(torch.float32)
        has_box = inside.any(dim=2).any(dim=1)
        return torch.where(has_box, hits, torch.full_like(hits, float("nan")))
