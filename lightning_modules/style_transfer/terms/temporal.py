"""The temporal term of a video frame: stay where the previous frames' pictures moved to.

Ruder, Dosovitskiy and Brox, "Artistic style transfer for videos" (2016): the previous frames'
results, warped to this frame by the optical flow of the *input* video, are targets for every
pixel the flow follows reliably (not disoccluded, not on a motion boundary), so a still or a
moving region keeps its strokes from frame to frame instead of landing in another optimum.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch

from lightning_modules.backbones import Backbone
from lightning_modules.errors import check_non_negative
from lightning_modules.image_optimization.resize import resize_pixels
from lightning_modules.style_transfer.terms.base import LossTerm


class TemporalTerm(LossTerm):
    """``w * sum_k mean(c_k * (x - warp_k(x_prev))^2)`` per picture, in 0-1 pixel units.

    ``c_k`` are the per-pixel weights of each earlier frame's warped result (1 where the flow
    is reliable; a long-term one only where the nearer frames' is not, as
    :class:`~lightning_modules.video_style_transfer.VideoStyleTransfer` sets them); the mean runs over
    the picture's values, so one weight serves every size. A frame without a predecessor (a
    chain's first) has no such term: 0.

    Args:
        weight: The term's weight.
    """

    name = "temporal"

    def __init__(self, weight: float = 0.0) -> None:
        super().__init__()
        check_non_negative("temporal_weight", weight)
        self.weight = weight
        self.backbone: Optional[Backbone] = None

    def bind(self, backbone: Backbone, wrap: bool) -> None:
        self.backbone = backbone

    def target(self, jobs: Sequence[Any], sizes: Sequence[tuple[int, int]], backbone: Backbone,
               device: torch.device) -> list[Optional[tuple[torch.Tensor, torch.Tensor]]]:
        targets = []
        for job, size in zip(jobs, sizes):
            temporal = getattr(job, "temporal", None)
            if temporal is None:
                targets.append(None)
                continue
            warped, weights = temporal
            if tuple(warped.shape[-2:]) != tuple(size):
                warped, weights = resize_pixels(warped, size), resize_pixels(weights, size)
            targets.append((warped.to(device), weights.to(device)))
        return targets

    def loss(self, pictures: torch.Tensor, features: Mapping[int, torch.Tensor],
             target: list[Optional[tuple[torch.Tensor, torch.Tensor]]], step: int
             ) -> torch.Tensor:
        losses = []
        pixels = self.backbone.denormalize(pictures)
        for picture, frame_target in zip(pixels, target):
            if frame_target is None or not self.weight:
                losses.append(picture.sum() * 0.0)
                continue
            warped, weights = frame_target
            squared = (picture.unsqueeze(0) - warped.to(picture.dtype)) ** 2
            losses.append(self.weight * (weights.to(picture.dtype) * squared).mean(dim=(1, 2, 3)
                                                                                 ).sum())
        return torch.stack(losses)
