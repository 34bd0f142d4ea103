"""Saliency maps: which pixels matter to a class score.

Three attribution methods, each a plain function that works on any classifier ``model`` mapping
a normalized batch ``[N, 3, H, W]`` to logits ``[N, C]`` (in eval mode, so that images in a
batch do not interact),  and the LightningModule :class:`~lightning_modules.saliency.module.SaliencyMap` runs them
under ``python cli.py predict --config configs/saliency.yaml``. No Lightning here:

- :func:`compute_saliency_maps` (the CS231n seed, Simonyan et al. 2014): the absolute gradient
  of the unnormalized class score with respect to the input, maximum over colour channels.
- :func:`smoothgrad_saliency` (Smilkov et al. 2017): the seed's map averaged over noisy copies of
  the image.
- :func:`integrated_gradients` (Sundararajan et al. 2017): gradients integrated along the straight
  path from a baseline to the image, times the image minus the baseline; the same numbers as
  Captum's ``IntegratedGradients`` (same quadrature rules, Gauss-Legendre by default).
  :func:`attribution_map` turns its ``[N, 3, H, W]`` attributions into a ``[N, H, W]`` map.

Gradients are taken with respect to the *normalized* input, the space the network sees, as
the homework and Captum do.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch

from lightning_modules.backbones.backbone import Backbone
from lightning_modules.backbones.normalization import pixel_range
from lightning_modules.errors import UserInputError

METHODS = ("vanilla", "smoothgrad", "integrated_gradients")
INTEGRATION_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                       "riemann_trapezoid")
REDUCTIONS = ("abs_max", "abs_sum", "positive", "sum")
Baseline = Union[None, str, float, torch.Tensor]


def _as_targets(y: Union[torch.Tensor, Sequence[int]], inputs: torch.Tensor) -> torch.Tensor:
    targets = torch.as_tensor(y, device=inputs.device).long().reshape(-1)
    if targets.numel() != inputs.shape[0]:
        raise UserInputError(f"Got {targets.numel()} classes for {inputs.shape[0]} images.")
    return targets


def class_score_gradient(X: torch.Tensor, y: Union[torch.Tensor, Sequence[int]],
                         model: torch.nn.Module) -> torch.Tensor:
    """Gradient of each image's unnormalized score for its class, with respect to the image.

    The scores of the batch are summed before differentiating: with a model in eval mode each
    image's gradient is exactly the gradient of its own score.

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        y: Class index of each image, ``[N]``.
        model: Maps ``[N, 3, H, W]`` to logits ``[N, C]``.

    Returns:
        ``[N, 3, H, W]``, the same dtype as ``X``.
    """
    targets = _as_targets(y, X)
    # enable_grad: callers may sit under no_grad (Lightning's predict loop, notebooks).
    with torch.enable_grad():
        inputs = X.detach().clone().requires_grad_(True)
        scores = model(inputs).gather(1, targets[:, None]).sum()
        (gradient,) = torch.autograd.grad(scores, inputs)
    return gradient


def compute_saliency_maps(X: torch.Tensor, y: Union[torch.Tensor, Sequence[int]],
                          model: torch.nn.Module) -> torch.Tensor:
    """The homework's vanilla-gradient saliency map.

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        y: The class to explain for each image, ``[N]`` (usually the true class).
        model: Maps normalized images to logits, in eval mode.

    Returns:
        ``[N, H, W]``: the absolute gradient of each image's unnormalized class score with
        respect to the normalized input, maximum over the three channels.
    """
    return class_score_gradient(X, y, model).abs().amax(dim=1)


def internal_batches(copies: int, batch: int, internal_batch_size: Optional[int] = None
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The rows of ``copies`` copies of a batch of ``batch`` images, a bounded number at a time.

    Row ``r`` is image ``r % batch`` of copy ``r // batch`` (a noisy sample, a path point): the
    copies are taken in order, as a loop over them would, and each window goes through the
    network as one batch, so memory is set by ``internal_batch_size`` alone.

    Args:
        copies: Number of copies of the batch.
        batch: Number of images.
        internal_batch_size: The most rows in one window (None: one copy of the batch).

    Yields:
        ``(copy, image)``: the copy and the image index of each row of the window.
    """
    size = batch if internal_batch_size is None else internal_batch_size
    rows = copies * batch
    for start in range(0, rows, size):
        row = torch.arange(start, min(start + size, rows))
        yield row // batch, row % batch


def smoothgrad_saliency(X: torch.Tensor, y: Union[torch.Tensor, Sequence[int]],
                        model: torch.nn.Module, noise_level: float = 0.15, samples: int = 25,
                        generator: Optional[torch.Generator] = None,
                        internal_batch_size: Optional[int] = None) -> torch.Tensor:
    """SmoothGrad: the vanilla saliency map averaged over noisy copies of each image.

    ``map(x) = 1/samples * sum_k compute_saliency_maps(x + noise_k)`` with ``noise_k`` drawn
    from ``N(0, sigma^2)`` per pixel and channel, and ``sigma = noise_level * (max(x) - min(x))``
    computed per image over all its (normalized) values, as in Smilkov et al. 2017 (they found
    10-20 % best). The absolute value and channel maximum are taken per sample, before
    averaging, so ``noise_level=0`` gives exactly the vanilla map.

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        y: The class to explain for each image, ``[N]``.
        model: Maps normalized images to logits, in eval mode.
        noise_level: Noise standard deviation as a fraction of each image's value range.
        samples: Number of noisy copies averaged.
        generator: Random generator for the noise (default: torch's global one).
        internal_batch_size: The most noisy images in one pass (None: one copy of the batch);
            the noise, drawn one copy of the batch at a time, does not depend on it.

    Returns:
        ``[N, H, W]``.
    """
    if not noise_level >= 0:
        raise UserInputError(f"noise_level must be zero or positive, got {noise_level}.")
    if not samples >= 1:
        raise UserInputError(f"samples must be at least 1, got {samples}.")
    X = X.detach()
    sigma = noise_level * (X.amax(dim=(1, 2, 3)) - X.amin(dim=(1, 2, 3))).view(-1, 1, 1, 1)
    noise_device = generator.device if generator is not None else X.device
    targets = _as_targets(y, X)
    total = torch.zeros(X.shape[0], *X.shape[2:], dtype=X.dtype, device=X.device)
    noises: dict[int, torch.Tensor] = {}  # the copies a window needs, drawn in order
    for copy, image in internal_batches(samples, X.shape[0], internal_batch_size):
        first, last = int(copy[0]), int(copy[-1])
        for k in range(first, last + 1):
            if k not in noises:
                noises[k] = torch.randn(X.shape, generator=generator, device=noise_device,
                                        dtype=X.dtype).to(X.device)
        noise = torch.stack([noises[k] for k in range(first, last + 1)])[copy - first, image]
        maps = compute_saliency_maps(X[image] + sigma[image] * noise, targets[image], model)
        total.index_add_(0, image.to(X.device), maps)
        for k in [k for k in noises if k < last]:
            del noises[k]  # used up: the next window starts at copy `last` or after it
    return total / samples


def integration_rule(steps: int, method: str = "gausslegendre") -> tuple[list[float], list[float]]:
    """Weights and points of a quadrature rule on [0, 1], exactly as Captum builds them.

    Args:
        steps: Number of points.
        method: ``"gausslegendre"`` (Captum's default) or ``"riemann_left"``,
            ``"riemann_right"``, ``"riemann_middle"``, ``"riemann_trapezoid"``.

    Returns:
        ``(weights, alphas)``: the integral of ``f`` is about ``sum(w * f(a))``. As in Captum,
        ``riemann_trapezoid`` puts its points ``1/(steps-1)`` apart but weighs them by
        ``1/steps`` (halved at the ends), so its weights sum to ``1 - 1/steps``.
    """
    if method not in INTEGRATION_METHODS:
        raise UserInputError(f"Unknown integration method '{method}'; choose one of: "
                             f"{', '.join(INTEGRATION_METHODS)}.")
    minimum = 1 if method == "gausslegendre" else 2
    if not isinstance(steps, int) or steps < minimum:
        raise UserInputError(f"steps must be an integer of at least {minimum} for {method}, "
                             f"got {steps}.")
    if method == "gausslegendre":
        points, weights = np.polynomial.legendre.leggauss(steps)
        return (0.5 * weights).tolist(), (0.5 * (1 + points)).tolist()
    kind = method.split("_")[1]
    weights = [1 / steps] * steps
    if kind == "trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
    # float32 linspace, as Captum computes it, so that both sample the very same points.
    start, end = {"trapezoid": (0, 1), "left": (0, 1 - 1 / steps),
                  "middle": (1 / (2 * steps), 1 - 1 / (2 * steps)), "right": (1 / steps, 1)}[kind]
    return weights, torch.linspace(start, end, steps).tolist()


def resolve_baseline(baseline: Baseline, X: torch.Tensor, model: Optional[torch.nn.Module] = None,
                     mean: Optional[Sequence[float]] = None,
                     std: Optional[Sequence[float]] = None) -> torch.Tensor:
    """The integration baseline in normalized space, shaped like ``X``.

    Args:
        baseline: None or ``"zero"`` (all zeros in normalized space: the dataset's mean colour,
            Captum's default), ``"black"`` (black pixels: ``-mean / std``), a number (that
            normalized value everywhere), or a tensor broadcastable to ``X``.
        X: Normalized images ``[N, 3, H, W]``.
        model: Supplies ``mean``/``std`` for ``"black"`` when it is a :class:`Backbone`.
        mean: Per-channel mean of the preprocessing (0-1 pixel units), for ``"black"``.
        std: Per-channel standard deviation of the preprocessing, for ``"black"``.

    Returns:
        ``[N, 3, H, W]`` on ``X``'s device and dtype.
    """
    if baseline is None or (isinstance(baseline, str) and baseline == "zero"):
        return torch.zeros_like(X)
    if isinstance(baseline, str) and baseline == "black":
        if mean is None or std is None:
            if not isinstance(model, Backbone):
                raise UserInputError("The 'black' baseline needs the model's mean and std; pass "
                                     "mean= and std= or give a baseline tensor.")
            mean, std = model.mean.flatten().tolist(), model.std.flatten().tolist()
        black = pixel_range(mean, std)[0].to(X)
        return black.expand_as(X).clone()
    if isinstance(baseline, str):
        raise UserInputError(f"Unknown baseline '{baseline}'; choose 'black' or 'zero'.")
    try:
        return torch.as_tensor(baseline, dtype=X.dtype, device=X.device).expand_as(X).clone()
    except RuntimeError:
        raise UserInputError(f"The baseline's shape {list(torch.as_tensor(baseline).shape)} does "
                             f"not fit images of shape {list(X.shape)}.") from None


def integrated_gradients(X: torch.Tensor, y: Union[torch.Tensor, Sequence[int]],
                         model: torch.nn.Module, baseline: Baseline = None, steps: int = 50,
                         method: str = "gausslegendre",
                         mean: Optional[Sequence[float]] = None,
                         std: Optional[Sequence[float]] = None,
                         internal_batch_size: Optional[int] = None) -> torch.Tensor:
    """Integrated Gradients, with Captum's defaults (zero baseline, 50 Gauss-Legendre points).

    ``attr(x) = (x - x0) * sum_k w_k * grad score_y(x0 + a_k (x - x0))``, with weights ``w_k`` and
    points ``a_k`` from :func:`integration_rule`. The attributions of an image add up to about
    ``score_y(x) - score_y(x0)`` (completeness).

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        y: The class to explain for each image, ``[N]``.
        model: Maps normalized images to logits, in eval mode.
        baseline: See :func:`resolve_baseline` (None: zeros, as in Captum).
        steps: Number of points on the path.
        method: Quadrature rule, see :func:`integration_rule`.
        mean: Preprocessing mean, only for ``baseline="black"`` with a model that is not a
            :class:`Backbone`.
        std: Preprocessing standard deviation, likewise.
        internal_batch_size: The most path points (of all images) in one pass, as Captum's
            ``internal_batch_size`` (None: one point of the whole batch at a time).

    Returns:
        Attributions ``[N, 3, H, W]`` (signed); see :func:`attribution_map` for a 2-D map.
    """
    weights, alphas = integration_rule(steps, method)
    X = X.detach()
    start = resolve_baseline(baseline, X, model, mean, std)
    targets = _as_targets(y, X)
    weights_t = torch.tensor(weights, dtype=X.dtype, device=X.device)
    alphas_t = torch.tensor(alphas, dtype=X.dtype, device=X.device)
    total = torch.zeros_like(X)
    for point, image in internal_batches(len(alphas), X.shape[0], internal_batch_size):
        point, image = point.to(X.device), image.to(X.device)
        alpha = alphas_t[point].view(-1, 1, 1, 1)
        gradient = class_score_gradient(start[image] + alpha * (X[image] - start[image]),
                                        targets[image], model)
        total.index_add_(0, image, weights_t[point].view(-1, 1, 1, 1) * gradient)
    return total * (X - start)


def attribution_map(attributions: torch.Tensor, reduction: str = "abs_sum") -> torch.Tensor:
    """Reduce per-channel attributions ``[N, 3, H, W]`` to one value per pixel ``[N, H, W]``.

    Args:
        attributions: E.g. from :func:`integrated_gradients`.
        reduction: ``"abs_sum"``: ``|sum over channels|``, Captum's ``visualize_image_attr``
            with ``sign="absolute_value"``; ``"positive"``: the channel sum where positive,
            else 0 (evidence for the class); ``"abs_max"``: the largest absolute channel value,
            as the homework's saliency map; ``"sum"``: the signed channel sum.

    Returns:
        ``[N, H, W]``.
    """
    if reduction == "abs_sum":
        return attributions.sum(dim=1).abs()
    if reduction == "positive":
        return attributions.sum(dim=1).clamp(min=0)
    if reduction == "abs_max":
        return attributions.abs().amax(dim=1)
    if reduction == "sum":
        return attributions.sum(dim=1)
    raise UserInputError(f"Unknown reduction '{reduction}'; choose one of: "
                         f"{', '.join(REDUCTIONS)}.")
