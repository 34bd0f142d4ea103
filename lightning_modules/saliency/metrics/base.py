"""What every evaluation metric of saliency maps is: an object with options and one call.

A metric scores each map of a batch with one number (``[B]``), on the batch's device, without
files or Lightning. :class:`~lightning_modules.saliency.dataset.DatasetExplanation` runs every
metric it is given on every method's maps and on the controls' (a random map, an edge map, a
centred Gaussian), and the index CSV gets one column ``<method>.<metric>`` per pair. A config
names a metric by ``class_path`` or by its short name (registry.py).

Each metric states how it perturbs and normalises (:attr:`SaliencyMetric.perturbation`,
:attr:`SaliencyMetric.normalisation`): Quantus' guidelines ask a report to say both, and the
dataset report prints them beside the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

# (model, normalized inputs [B, 3, H, W], targets [B]) -> maps [B, H, W]: the method being
# evaluated, for the metrics that explain again (randomisation, robustness).
Explainer = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class MetricInputs:
    """Everything a metric may use for one batch (all on the batch's device).

    Attributes:
        model: The frozen classifier (a :class:`~lightning_modules.backbones.backbone.Backbone`,
            normalized images to logits), in eval mode.
        inputs: Normalized images ``[B, 3, H, W]``.
        targets: The explained class of each image, ``[B]``.
        maps: The maps to score, non-negative ``[B, H, W]``.
        explain: Recomputes the evaluated method's maps for other inputs or another model.
        boxes: Each image's object box ``[B, 4]`` as ``(x0, y0, x1, y1)`` in input pixels
            (exclusive ends), NaN rows where an image has none; None when no image has one.
        generator: Random generator for the metric's noise, seeded by the caller so that a
            batch scores the same in every run and process.
    """

    model: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    maps: torch.Tensor
    explain: Explainer
    boxes: Optional[torch.Tensor] = None
    generator: Optional[torch.Generator] = None


class SaliencyMetric:
    """Base of the metrics: options in the constructor, one number per map from :meth:`score`.

    Class attributes:
        name: Column name in the index CSV and the report (``"road_morf"``).
        family: Quantus' family: ``"faithfulness"``, ``"randomisation"``, ``"robustness"``,
            ``"localisation"``, ``"complexity"``.
        higher_is_better: Whether a better map scores higher.
        needs_boxes: Scores only images with a box (NaN for the others).
        explains_again: Calls ``explain`` (so costs as many method runs as it says).
        reads_batch_norm: Changes or reads the network's layers themselves (randomising them
            one by one), so it gets the unfolded network where the others get the
            normalizations folded into the convolutions.
    """

    name: str = ""
    family: str = ""
    higher_is_better: bool = True
    needs_boxes: bool = False
    explains_again: bool = False
    reads_batch_norm: bool = False

    @property
    def perturbation(self) -> str:
        """How the metric perturbs the input or model, in one sentence (``"none"`` if it does
        not)."""
        return "none"

    @property
    def normalisation(self) -> str:
        """How the metric normalises the maps before scoring, in one sentence."""
        return "none"

    def score(self, batch: MetricInputs) -> torch.Tensor:
        """One number per map, ``[B]`` float (NaN where undefined, e.g. no box)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement score().")

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in vars(self).items()
                            if not key.startswith("_"))
        return f"{type(self).__name__}({options})"
