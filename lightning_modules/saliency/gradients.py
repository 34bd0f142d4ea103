"""The gradient methods as objects: the seed's vanilla gradient, SmoothGrad, Integrated Gradients.

Each wraps its plain function of :mod:`~lightning_modules.saliency.functional` (one
implementation, two ways in) and checks its own options when it is made, so a config that names
one by ``class_path`` is refused before any image, as the short names are.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from lightning_modules.errors import UserInputError, check_choice, check_non_negative
from lightning_modules.saliency.base import Saliency, SaliencyMethod
from lightning_modules.saliency.functional import (
    attribution_map,
    compute_saliency_maps,
    integrated_gradients,
    integration_rule,
    smoothgrad_saliency,
)

# The reductions that make a non-negative map (attribution_map's "sum" is signed).
MAP_REDUCTIONS = ("abs_sum", "positive", "abs_max")
BASELINES = ("black", "zero")


def check_internal_batch_size(value: Optional[int], name: str = "internal_batch_size") -> None:
    """None, or a whole number of at least 1 (a bound on the network inputs of one pass)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UserInputError(f"{name} must be a whole number of at least 1, got {value}.")


def check_smoothing(noise_level: float, samples: int) -> None:
    """SmoothGrad's noise level (zero or more) and sample count (at least 1)."""
    check_non_negative("noise_level", noise_level)
    if isinstance(samples, bool) or not isinstance(samples, int) or not samples >= 1:
        raise UserInputError(f"samples must be at least 1, got {samples}.")


def check_path(baseline: object, steps: int, integration: str, reduction: str) -> None:
    """Integrated Gradients' baseline, quadrature rule and steps, and map reduction."""
    if isinstance(baseline, str):  # from Python also a number or a tensor
        check_choice("baseline", baseline, BASELINES)
    check_choice("reduction", reduction, MAP_REDUCTIONS)
    integration_rule(steps, integration)  # checks steps and the rule's name


class Vanilla(SaliencyMethod):
    """The homework's map (Simonyan et al. 2014): the absolute gradient of the class score,
    maximum over the colour channels
    (:func:`~lightning_modules.saliency.functional.compute_saliency_maps`)."""

    shorthand = "vanilla"

    def attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  generator: Optional[torch.Generator] = None) -> Saliency:
        return Saliency(compute_saliency_maps(inputs, targets, model))


class SmoothGrad(SaliencyMethod):
    """SmoothGrad (Smilkov et al. 2017): the vanilla map averaged over noisy copies of the image.

    Args:
        noise_level: The noise's standard deviation as a fraction of each image's value range.
        samples: Number of noisy copies averaged.
        internal_batch_size: The most noisy images in one pass (None: one copy of the batch);
            the maps do not depend on it.
    """

    shorthand = "smoothgrad"

    def __init__(self, noise_level: float = 0.15, samples: int = 25,
                 internal_batch_size: Optional[int] = None) -> None:
        check_smoothing(noise_level, samples)
        check_internal_batch_size(internal_batch_size)
        self.noise_level = noise_level
        self.samples = samples
        self.internal_batch_size = internal_batch_size

    def attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  generator: Optional[torch.Generator] = None) -> Saliency:
        return Saliency(smoothgrad_saliency(inputs, targets, model, self.noise_level,
                                            self.samples, generator,
                                            internal_batch_size=self.internal_batch_size))


class IntegratedGradients(SaliencyMethod):
    """Integrated Gradients (Sundararajan et al. 2017), Captum's numbers; the signed
    attributions and their map.

    Args:
        baseline: The path's start: ``"black"`` (black pixels) or ``"zero"`` (zeros in
            normalized space, the mean colour; Captum's default); from Python also a number or
            a tensor (see :func:`~lightning_modules.saliency.functional.resolve_baseline`).
        steps: Number of points on the path.
        integration: The quadrature rule: ``"gausslegendre"`` (Captum's), ``"riemann_left"``,
            ``"riemann_right"``, ``"riemann_middle"`` or ``"riemann_trapezoid"``.
        reduction: How the ``[N, 3, H, W]`` attributions become a map: ``"abs_sum"`` (as Captum
            draws them), ``"positive"`` or ``"abs_max"``.
        internal_batch_size: The most path points (of all images) in one pass (None: one point
            of the whole batch at a time).
    """

    shorthand = "integrated_gradients"

    def __init__(self, baseline: Union[str, float] = "black", steps: int = 50,
                 integration: str = "gausslegendre", reduction: str = "abs_sum",
                 internal_batch_size: Optional[int] = None) -> None:
        check_path(baseline, steps, integration, reduction)
        check_internal_batch_size(internal_batch_size)
        self.baseline = baseline
        self.steps = steps
        self.integration = integration
        self.reduction = reduction
        self.internal_batch_size = internal_batch_size

    def attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  generator: Optional[torch.Generator] = None) -> Saliency:
        attributions = integrated_gradients(inputs, targets, model, self.baseline, self.steps,
                                            self.integration,
                                            internal_batch_size=self.internal_batch_size)
        return Saliency(attribution_map(attributions, self.reduction), attributions)
