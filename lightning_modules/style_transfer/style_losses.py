"""Style losses as small objects: Gram matrices, per-channel mean and std, sliced Wasserstein.

No Lightning and no files here. Each loss is one class with two halves, computed at different
times (as a Lucent objective or a torchattacks attack is one object with one job):

- ``target(features)``: the statistics of one style image's features at one layer, computed
  once per run; ``blend(targets, weights)`` mixes several styles' statistics and
  ``stack(targets)`` batches the jobs of one image group;
- ``loss(features, target, mask, seed)``: one value per image ``[N]`` of the current images'
  features against the batched target. Images of a batch never mix.

A config names a loss by its short name (``style_loss: sliced_wasserstein``, resolved in the
one registry :data:`STYLE_LOSSES`) or by class with its own options (``style_loss:
{class_path: lightning_modules.style_transfer.SlicedWassersteinLoss, init_args: {projections:
32}}``). A new loss is one subclass of :class:`StyleLoss` and its entry in the registry.

A ``mask`` ``[N, 1, h, w]`` (0-1, at the feature map's size: see :func:`resize_mask`) restricts
the current image's statistics to a region, as in Gatys et al. 2017, "Controlling Perceptual
Factors in Neural Style Transfer": every position counts with its mask value as weight.

Magnitudes, at one layer with ``C`` channels of activations of size ``a``: the Gram loss (the
homework's, Gram matrices normalized by ``C * H * W``) sums ``C^2`` squared differences of
entries about ``a^2 / C`` in size, so it grows like ``a^4`` and not with ``C``; ``mean_std``
and ``sliced_wasserstein`` are squared distances in the ``C``-dimensional feature space (of the
mean and std vectors; of the feature distributions), so they grow like ``C * a^2``. Gram over
the others is thus about ``a^2 / C``, near 1 for EfficientNet-Lite0's style layers (mean
``|a|`` 4.5 to 6.7, ``C`` 16 to 80). Measured at 128 px, ``sample:chelsea`` against
``sample:immunohistochemistry``, layers 1 to 4: gram 104, 255, 169, 402; mean_std 157, 257,
362, 1264; sliced_wasserstein about 103, 203, 430, 1440 (random directions). So the config's
``style_weights`` suit all three, the new ones leaning more on the deeper layers. On another
backbone, compare the first rows of ``losses.csv`` and scale ``style_weights`` to match.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from lightning_modules.errors import UserInputError, check_choice
from lightning_modules.image_optimization.parameterizations import at_least_float32
from lightning_modules.style_transfer.functional import gram_matrix

# An empty region (a mask that is zero at some layer) weighs nothing instead of dividing by 0.
_TINY = 1e-12


def resize_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A 0-1 mask ``[N, 1, H, W]`` averaged down (or up) to a feature map's ``(h, w)``.

    Area interpolation: a feature position's weight is the share of its pixels inside the mask.
    """
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.adaptive_avg_pool2d(mask, tuple(size))


def projection_seed(step: int, layer: int, base_seed: Optional[int] = None) -> int:
    """The seed of the sliced-Wasserstein directions of one step and one style layer.

    Derived from ``torch.initial_seed()`` (set by ``seed_everything``), the global step and the
    layer, so a run draws the same directions whenever it is repeated or resumed, and every job
    of a step, whatever its group or process, is compared along the same directions.
    """
    base = torch.initial_seed() if base_seed is None else base_seed
    return ((base * 1_000_003 + step) * 1_000_003 + layer) % (2**63)


class StyleLoss:
    """One style statistic: what to compute from the style once, and how to compare each step.

    Subclasses set :attr:`name` and implement :meth:`target` and :meth:`loss`; the default
    :meth:`blend` (weighted sum) and :meth:`stack` (``torch.stack``) suit statistics that are
    tensors.
    """

    name = ""

    def options(self) -> dict[str, Any]:
        """The loss's own options, as its ``__init__`` takes them (default: its attributes)."""
        return dict(vars(self))

    def describe(self) -> Union[str, dict[str, Any]]:
        """The loss as a config would name it: its short name when it has its default
        options, else ``{class_path, init_args}`` (a checkpoint's hyperparameters hold no
        objects)."""
        if STYLE_LOSSES.get(self.name) is type(self) and self.options() == type(self)().options():
            return self.name
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": self.options()}

    def target(self, features: torch.Tensor) -> Any:
        """Statistics of one style image's features ``[1, C, H, W]`` (without a batch axis)."""
        raise NotImplementedError

    def blend(self, targets: Sequence[Any], weights: Sequence[float]) -> Any:
        """One target from several styles' targets: their ``weights``-weighted sum."""
        blended = None
        for target, weight in zip(targets, weights):
            blended = weight * target if blended is None else blended + weight * target
        return blended

    def stack(self, targets: Sequence[Any]) -> Any:
        """The targets of the jobs of one image group, batched along a first axis."""
        return torch.stack(list(targets))

    def loss(self, features: torch.Tensor, target: Any, mask: Optional[torch.Tensor] = None,
             seed: int = 0) -> torch.Tensor:
        """The loss of each image.

        Args:
            features: The current images' features ``[N, C, H, W]``.
            target: Batched target (from :meth:`stack`), one per image.
            mask: Weight of each position ``[N, 1, H, W]``; None: all positions count fully.
            seed: This step's and layer's random draw (losses without randomness ignore it).

        Returns:
            ``[N]`` losses.
        """
        raise NotImplementedError


class GramLoss(StyleLoss):
    """Gatys et al.'s Gram-matrix loss, the homework's: ``sum((G - A)^2)`` per image.

    ``G`` is :func:`~lightning_modules.style_transfer.functional.gram_matrix` (normalized by
    ``C * H * W``). With a mask ``m``, ``G = sum_p m_p f_p f_p^T / (C * sum_p m_p)``: the Gram
    matrix of the region (an all-ones mask gives the plain one).
    """

    name = "gram"

    def target(self, features: torch.Tensor) -> torch.Tensor:
        return gram_matrix(features)[0]

    def loss(self, features: torch.Tensor, target: torch.Tensor,
             mask: Optional[torch.Tensor] = None, seed: int = 0) -> torch.Tensor:
        if mask is None:
            gram = gram_matrix(features)
        else:
            # gram_matrix(f * sqrt(m)) sums m_p f_p f_p^T; rescale its C*H*W to C*sum(m).
            height, width = features.shape[-2:]
            mask = at_least_float32(mask)
            gram = gram_matrix(at_least_float32(features) * mask.sqrt())
            gram = gram * (height * width / mask.flatten(1).sum(1).clamp_min(_TINY)).view(-1, 1, 1)
        return (gram - at_least_float32(target)).pow(2).flatten(1).sum(1)


def _weighted_mean_std(features: torch.Tensor, mask: Optional[torch.Tensor],
                       eps: float) -> torch.Tensor:
    """Per-channel mean and std ``[N, 2, C]`` over the positions, weighted by ``mask``."""
    flat = at_least_float32(features).flatten(2)
    if mask is None:
        weights = torch.full_like(flat[:, :1], 1.0 / flat.shape[-1])
    else:
        weights = at_least_float32(mask).flatten(2)
        weights = weights / weights.sum(-1, keepdim=True).clamp_min(_TINY)
    mean = (flat * weights).sum(-1)
    variance = ((flat - mean[..., None]).pow(2) * weights).sum(-1)
    return torch.stack([mean, (variance + eps).sqrt()], 1)


class MeanStdLoss(StyleLoss):
    """AdaIN's statistics (Huang & Belongie 2017): per-channel mean and standard deviation.

    ``loss = sum_c (mu_c - mu'_c)^2 + sum_c (sigma_c - sigma'_c)^2`` per image: the sum of
    squared differences (see the module's notes on its size). ``sigma = sqrt(var + eps)``
    (``eps = 1e-5``, AdaIN's), so a channel that is zero everywhere still has a gradient. With a
    mask, the mean and variance are the mask-weighted ones.

    Args:
        eps: Added to the variance before the square root.
    """

    name = "mean_std"

    def __init__(self, eps: float = 1e-5) -> None:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise UserInputError(f"eps of the mean_std style loss must be positive, got {eps!r}.")
        self.eps = eps

    def target(self, features: torch.Tensor) -> torch.Tensor:
        return _weighted_mean_std(features, None, self.eps)[0]

    def loss(self, features: torch.Tensor, target: torch.Tensor,
             mask: Optional[torch.Tensor] = None, seed: int = 0) -> torch.Tensor:
        statistics = _weighted_mean_std(features, mask, self.eps)
        return (statistics - at_least_float32(target)).pow(2).flatten(1).sum(1)


def quantile_function(sorted_values: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """The quantile function of sorted samples ``[P, M]`` at ``levels`` ``[P, L]`` in (0, 1).

    Sample ``j`` sits at level ``(j + 1/2) / M``; between them the function is linear, beyond
    the outermost ones constant. At the levels ``(i + 1/2) / M`` it returns the samples exactly.
    """
    count = sorted_values.shape[-1]
    position = (levels * count - 0.5).clamp(0, count - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=count - 1)
    fraction = position - low
    below = sorted_values.gather(-1, low)
    return below + fraction * (sorted_values.gather(-1, high) - below)


class SlicedWassersteinLoss(StyleLoss):
    """The sliced Wasserstein distance of feature distributions (Heitz et al., CVPR 2021).

    Each step, the features ``[N, C, H*W]`` of the image and of the style are projected onto
    ``projections`` random unit directions of the ``C``-dimensional feature space, each set of
    projections is sorted, and the loss is the mean squared difference of the image's sorted
    projections and the style's quantiles at the same levels, times ``C``:
    ``C * mean_(p,i) (x_p(i) - y_p(i))^2``. A random unit direction keeps ``1 / C`` of a squared
    length on average, so the factor makes the loss estimate the squared distance in the whole
    feature space, whatever the number of projections (and of the size of ``mean_std``'s).
    When the pixel counts differ, the style's quantile function is interpolated at the image's
    levels ``(i + 1/2) / (H*W)``. The directions are renewed every step, drawn from ``seed``
    (see :func:`projection_seed`) on the CPU, so a run is reproducible on any device.

    Blending several styles takes the blend-weighted mean of their quantile functions at each
    level: the Wasserstein barycenter of the styles' projected distributions.

    With a mask, positions count with the mask as weight: the image's sorted projections sit at
    the levels of their cumulated weights, and the mean is weighted.

    Args:
        projections: The number of directions; None: as many as the layer has channels
            (Heitz et al.'s choice).
    """

    name = "sliced_wasserstein"

    def __init__(self, projections: Optional[int] = None) -> None:
        if projections is not None and (isinstance(projections, bool)
                                        or not isinstance(projections, int) or projections < 1):
            raise UserInputError(f"projections of the sliced_wasserstein style loss must be a "
                                 f"whole number of at least 1 (or null), got {projections!r}.")
        self.projections = projections

    def target(self, features: torch.Tensor) -> torch.Tensor:
        # The directions change every step: keep the whole feature cloud [C, H*W].
        return at_least_float32(features)[0].flatten(1)

    def blend(self, targets: Sequence[torch.Tensor], weights: Sequence[float]
              ) -> list[tuple[float, torch.Tensor]]:
        return [(float(weight), cloud) for cloud, weight in zip(targets, weights) if weight > 0]

    def stack(self, targets: Sequence[Any]) -> list[list[tuple[float, torch.Tensor]]]:
        # Feature clouds of different styles differ in size: a list, one mixture per image.
        return [target if isinstance(target, list) else [(1.0, target)] for target in targets]

    def directions(self, channels: int, seed: int, device: torch.device) -> torch.Tensor:
        """``[P, C]`` random unit directions drawn from ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        count = self.projections or channels
        directions = torch.randn(count, channels, generator=generator)
        return (directions / directions.norm(dim=1, keepdim=True)).to(device)

    def loss(self, features: torch.Tensor, target: Sequence[Sequence[tuple[float, torch.Tensor]]],
             mask: Optional[torch.Tensor] = None, seed: int = 0) -> torch.Tensor:
        flat = at_least_float32(features).flatten(2)
        batch, channels, positions = flat.shape
        directions = self.directions(channels, seed, flat.device)
        with torch.autocast(device_type=flat.device.type, enabled=False):
            projected, order = torch.matmul(directions, flat).sort(-1)  # [N, P, L]
        if mask is None:
            weights = torch.ones_like(projected)
        else:
            weights = at_least_float32(mask).flatten(2).expand_as(projected).gather(-1, order)
        totals = weights.sum(-1, keepdim=True).clamp_min(_TINY)
        levels = (weights.cumsum(-1) - weights / 2) / totals
        sorted_styles: dict[int, torch.Tensor] = {}  # jobs of a blend share their style clouds
        losses = []
        for image, mixture in enumerate(target):
            expected = None
            for weight, cloud in mixture:
                if id(cloud) not in sorted_styles:
                    sorted_styles[id(cloud)] = torch.matmul(directions, cloud).sort(-1).values
                quantiles = weight * quantile_function(sorted_styles[id(cloud)], levels[image])
                expected = quantiles if expected is None else expected + quantiles
            squared = self.gap(projected[image], expected).pow(2) * weights[image]
            losses.append((squared.sum(-1) / totals[image, :, 0]).mean())
        return channels * torch.stack(losses)

    def gap(self, projected: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
        """How far each sorted projection is from the style's quantile at its level (squared,
        it is the loss): here the signed difference, both ways counting."""
        return projected - expected


class ExcessOverQuantiles(SlicedWassersteinLoss):
    """One-sided: how far a 1-D statistic's sorted values exceed the style's quantiles.

    :class:`SlicedWassersteinLoss` on a single channel (its one direction fixed to +1), where
    only values above the style's quantile at their level count: ``mean_i max(0, x(i) -
    y(i))^2``. A picture with less of the statistic than the style (e.g. smoother colours than
    the painting's) costs nothing; a picture with more pays for the excess alone. Blends and
    masks work as in :class:`SlicedWassersteinLoss`.
    """

    name = "excess_over_quantiles"

    def __init__(self) -> None:
        super().__init__(projections=1)

    def directions(self, channels: int, seed: int, device: torch.device) -> torch.Tensor:
        if channels != 1:
            raise ValueError(f"ExcessOverQuantiles compares one channel, got {channels}.")
        return torch.ones(1, 1, device=device)

    def gap(self, projected: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
        return (projected - expected).clamp_min(0)


#: The style losses' short names, for ``--model.style_loss NAME``: the one place a name
#: becomes a class (a new loss is its class and its entry here).
STYLE_LOSSES: dict[str, type[StyleLoss]] = {
    cls.name: cls for cls in (GramLoss, MeanStdLoss, SlicedWassersteinLoss)
}


def make_style_loss(loss: Union[StyleLoss, str]) -> StyleLoss:
    """The style loss ``loss`` names, with its default options, or ``loss`` itself.

    Args:
        loss: A :class:`StyleLoss` (e.g. a config's ``class_path:
            lightning_modules.style_transfer.SlicedWassersteinLoss`` with its ``init_args``),
            or a short name of :data:`STYLE_LOSSES` (``"gram"``, ``"mean_std"``,
            ``"sliced_wasserstein"``).

    Raises:
        UserInputError: For an unknown name or another kind of object.
    """
    if isinstance(loss, StyleLoss):
        return loss
    if not isinstance(loss, str):
        raise UserInputError(f"style_loss must be a style loss's name or a StyleLoss, got "
                             f"{type(loss).__name__}.")
    check_choice("style_loss", loss, STYLE_LOSSES)
    return STYLE_LOSSES[loss]()


def layered_style_loss(
    criterion: StyleLoss,
    feats: Sequence[torch.Tensor] | dict[int, torch.Tensor],
    style_layers: Sequence[int],
    style_targets: Sequence[Any],
    style_weights: Sequence[float],
    step: int = 0,
) -> torch.Tensor:
    """``sum_l w_l * loss_l`` per image, over the style layers, without masks.

    With :class:`GramLoss` this is exactly (bit for bit) the homework's
    :func:`~lightning_modules.style_transfer.functional.style_loss`.

    Args:
        criterion: The style loss.
        feats: The current images' features, indexable by layer.
        style_layers: The style layers.
        style_targets: The batched target of each style layer.
        style_weights: The weight of each style layer.
        step: The global step (seeds random projections).

    Returns:
        ``[N]`` losses.
    """
    total = None
    for layer, target, weight in zip(style_layers, style_targets, style_weights):
        term = weight * criterion.loss(feats[layer], target, seed=projection_seed(step, layer))
        total = term if total is None else total + term
    if total is None:
        raise ValueError("A style loss needs at least one style layer.")
    return total


def masked_style_loss(
    criterion: StyleLoss,
    feats: Sequence[torch.Tensor] | dict[int, torch.Tensor],
    style_layers: Sequence[int],
    style_weights: Sequence[float],
    region_targets: Sequence[Sequence[Any]],
    masks: torch.Tensor,
    region_weights: torch.Tensor,
    step: int = 0,
) -> torch.Tensor:
    """Each style in its region: ``sum_k r_k sum_l w_l * area_kl * loss_l(region k)`` per image.

    A region's statistics are the current image's, weighted by its mask (downsampled to each
    layer by area); its loss is weighted by the region's share of the image (``area_kl``, the
    mask's mean at layer ``l``), so each pixel is pushed as hard as in a run with one style
    everywhere, and a position no mask covers gets no style loss.

    Args:
        criterion: The style loss.
        feats: The current images' features, indexable by layer.
        style_layers: The style layers.
        style_weights: The weight of each style layer.
        region_targets: For each region ``k``, the batched target of each style layer.
        masks: ``[K, N, 1, H, W]`` 0-1 masks at the image's size.
        region_weights: ``[K, N]`` weight ``r_k`` of each region's loss.
        step: The global step (seeds random projections).

    Returns:
        ``[N]`` losses.
    """
    total = None
    for region, (targets, mask) in enumerate(zip(region_targets, masks)):
        for layer, target, weight in zip(style_layers, targets, style_weights):
            features = feats[layer]
            layer_mask = resize_mask(mask.to(features.device), features.shape[-2:])
            area = layer_mask.flatten(1).mean(1)
            loss = criterion.loss(features, target, layer_mask, seed=projection_seed(step, layer))
            term = weight * region_weights[region] * area * loss
            total = term if total is None else total + term
    if total is None:
        raise ValueError("A style loss needs at least one style layer and one region.")
    return total


def blended_targets(criterion: StyleLoss, statistics: Sequence[Sequence[Sequence[Any]]],
                    jobs: Sequence[Any]) -> list[Any]:
    """The batched target of each style layer for one image group: each job's styles blended.

    Args:
        criterion: The style loss.
        statistics: Per job, per style image, per style layer: ``criterion.target`` of it.
        jobs: The jobs (their ``style_blend_weights``).

    Returns:
        Per style layer, the jobs' blended targets, stacked.
    """
    per_job = [[criterion.blend(layer, job.style_blend_weights) for layer in zip(*styles)]
               for styles, job in zip(statistics, jobs)]
    return [criterion.stack(layer) for layer in zip(*per_job)]


def style_regions(criterion: StyleLoss, statistics: Sequence[Sequence[Sequence[Any]]],
                  jobs: Sequence[Any], device: torch.device | str = "cpu"
                  ) -> Optional[tuple[list[list[Any]], torch.Tensor, torch.Tensor]]:
    """Each style in its region: the arguments of :func:`masked_style_loss` for one group.

    Region ``k`` is style ``k`` of every job, matched where the job's mask ``k`` is on. Its
    loss weight is ``K * blend_k``: equal blend weights give each region the weight of a
    one-style run.

    Args:
        criterion: The style loss.
        statistics: Per job, per style image, per style layer: ``criterion.target`` of it.
        jobs: The jobs: their ``style_masks`` (one ``[1, H, W]`` per style, at the image's
            size) and ``style_blend_weights``.
        device: Where the masks go.

    Returns:
        ``(region targets, masks [K, N, 1, H, W], region weights [K, N])``, or None when the
        jobs have no masks.
    """
    if not any(getattr(job, "style_masks", None) for job in jobs):
        return None
    count = len(jobs[0].styles)
    if any(len(job.styles) != count or len(job.style_masks) != count for job in jobs):
        raise ValueError("Jobs optimized together need one mask per style image and the same "
                         "number of styles.")
    targets = [[criterion.stack([styles[region][layer] for styles in statistics])
                for layer in range(len(statistics[0][region]))] for region in range(count)]
    masks = torch.stack([torch.stack([job.style_masks[region] for job in jobs])
                         for region in range(count)]).to(device)
    weights = torch.tensor([[count * job.style_blend_weights[region] for job in jobs]
                            for region in range(count)], device=device)
    return targets, masks, weights
