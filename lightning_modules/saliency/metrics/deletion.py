"""Deletion and insertion (Petsiuk et al. 2018, "RISE", section 4.1) as per-image metrics.

Deletion replaces the map's most salient pixels of the image, in equal steps, with a baseline and
records the softmax probability of the target after each step; a faithful map makes it fall fast,
so a low area under that curve is better. Insertion starts from a blurred copy and puts the
original pixels back in the same order; a high area is better. The curves are the trust report's
(:func:`~lightning_modules.saliency.evaluation.perturbation_curves`).

Against Quantus 0.6.0: deletion is Quantus' ``PixelFlipping`` with ``features_in_step`` one
step's pixels (times the channels) and ``return_auc_per_sample``. Its curve leaves out step 0
(the untouched image) and integrates with ``dx=1``; ours starts at step 0 and integrates over the
fraction removed (0 to 1), so ours = (Quantus' AUC + (p_0 + p_1) / 2) / steps, where p_k is the
probability after step k. Quantus' ``"black"`` is the image's least value over all channels;
ours is a black pixel (each channel's normalized value of 0). Quantus has no insertion metric;
a ``PixelFlipping`` from the blurred image that puts original values back is ours.
"""

from __future__ import annotations

import torch

from lightning_modules.errors import check_choice
from lightning_modules.saliency.evaluation import (
    SUBSTRATES,
    area_under_curve,
    check_positive_integer,
    perturbation_curves,
    substrate,
)
from lightning_modules.saliency.metrics.base import MetricInputs, SaliencyMetric

# What each substrate is, for the perturbation sentence.
SUBSTRATE_WORDS = {"black": "black pixels",
                   "zero": "zeros of the normalized input (the preprocessing's mean colour)",
                   "blur": "a Gaussian blur of the image (kernel 11, sigma 5)"}


class _PixelOrderCurve(SaliencyMetric):
    """Shared options of deletion and insertion: steps, what replaces pixels, batch size."""

    family = "faithfulness"

    def __init__(self, steps: int = 20, substrate: str = "black", batch_size: int = 16) -> None:
        check_positive_integer("steps", steps)
        check_choice("substrate", substrate, SUBSTRATES)
        check_positive_integer("batch_size", batch_size)
        self.steps = steps
        self.substrate = substrate
        self.batch_size = batch_size

    @property
    def normalisation(self) -> str:
        return "none: only the order of the map's pixels counts (ties in reading order)"


class Deletion(_PixelOrderCurve):
    """Deletion AUC: the target's probability as the most salient pixels are removed.

    Args:
        steps: Equal steps from no pixel to every pixel (``round(k * H * W / steps)`` pixels
            removed at step ``k``).
        substrate: What removed pixels become: ``"black"``, ``"zero"`` (the normalized input's
            zero) or ``"blur"``.
        batch_size: Most perturbed images per forward pass (memory stays at one such batch).
    """

    name = "deletion"
    higher_is_better = False

    @property
    def perturbation(self) -> str:
        return (f"the map's most salient pixels (all channels) become "
                f"{SUBSTRATE_WORDS[self.substrate]}"
                f" in {self.steps} equal steps; score: trapezoid area under the target's softmax"
                " probability over the fraction removed (0 to 1)")

    def score(self, batch: MetricInputs) -> torch.Tensor:
        inputs = batch.inputs.detach()
        fractions, curves = perturbation_curves(
            batch.model, inputs, substrate(self.substrate, inputs, batch.model), batch.maps,
            batch.targets, self.steps, self.batch_size)
        return area_under_curve(fractions, curves).to(inputs.device)


class Insertion(_PixelOrderCurve):
    """Insertion AUC: the target's probability as the most salient pixels are put back.

    Args:
        steps: Equal steps from no pixel to every pixel.
        substrate: What the image starts from: ``"blur"`` (RISE's), ``"black"`` or ``"zero"``.
        batch_size: Most perturbed images per forward pass.
    """

    name = "insertion"
    higher_is_better = True

    def __init__(self, steps: int = 20, substrate: str = "blur", batch_size: int = 16) -> None:
        super().__init__(steps, substrate, batch_size)

    @property
    def perturbation(self) -> str:
        return (f"starting from {SUBSTRATE_WORDS[self.substrate]}, the map's most salient pixels"
                f" (all channels) get their original values back in {self.steps} equal steps;"
                " score: trapezoid area under the target's softmax probability over the fraction"
                " inserted (0 to 1)")

    def score(self, batch: MetricInputs) -> torch.Tensor:
        inputs = batch.inputs.detach()
        fractions, curves = perturbation_curves(
            batch.model, substrate(self.substrate, inputs, batch.model), inputs, batch.maps,
            batch.targets, self.steps, self.batch_size)
        return area_under_curve(fractions, curves).to(inputs.device)
