"""The trust report: does a saliency map point at what the network uses, and does it depend on
the network at all?

Two checks from the literature, as plain functions (no Lightning, no files):

- **Deletion and insertion** (Petsiuk et al. 2018, "RISE", section 4.1): remove the pixels from
  the image in the map's order, most salient first, and record the softmax probability of the
  explained class after each step; a good map makes it fall fast (low deletion AUC). Insertion
  starts from a blurred copy and puts the original pixels back in the same order; a good map
  makes the probability rise fast (high insertion AUC). :func:`deletion_insertion`.
- **Cascading parameter randomization** (Adebayo et al. 2018, "Sanity Checks for Saliency Maps",
  section 3): re-initialise the network's layers from the top down, cumulatively, recompute the
  map with the same method after each step, and compare it with the original map by Spearman
  rank correlation (of absolute values) and SSIM. A map that stays the same does not explain the
  network: it is an edge detector. :func:`cascading_randomization`.

:func:`trust_report` runs both on a batch; :class:`TrustReport` holds the numbers.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from lightning_modules.backbones.backbone import Backbone
from lightning_modules.errors import UserInputError, check_choice

# What removed pixels become (deletion) and what insertion starts from.
SUBSTRATES = ("black", "zero", "blur")
# RISE's insertion start: an 11 x 11 Gaussian kernel of sigma 5 (their evaluation.py).
BLUR_KERNEL, BLUR_SIGMA = 11, 5.0
# The percentile that maps to 1 before SSIM: the PAIR saliency library's VisualizeImageGrayscale,
# which Adebayo et al. used; a few huge gradients would otherwise leave two black images to compare.
SSIM_PERCENTILE = 99.0

# (model, normalized inputs [B, 3, H, W], targets [B]) -> maps [B, H, W]
SaliencyFunction = Callable[[Backbone, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrustReport:
    """The trust report of one batch (all tensors on the CPU).

    Attributes:
        method: The saliency method evaluated.
        deletion_substrate: What removed pixels became (``"black"``, ``"zero"``, ``"blur"``).
        insertion_substrate: What insertion started from.
        fractions: Fraction of pixels removed (inserted) at each step, ``[S + 1]``, 0 to 1.
        deletion_curves: Probability of the explained class at each step, ``[B, S + 1]``.
        insertion_curves: The same for insertion, ``[B, S + 1]``.
        deletion_auc: Trapezoid area under each deletion curve, ``[B]`` (lower is better).
        insertion_auc: Trapezoid area under each insertion curve, ``[B]`` (higher is better).
        randomized_layers: Names of the layers re-initialised, top down (``"head"``,
            ``"features.8"``, ...); entry ``j`` means every layer up to it is random.
        randomized_maps: The map after each cumulative step, ``[B, L, H, W]``.
        rank_correlation: Spearman correlation of each randomized map to the original, ``[B, L]``
            (NaN where a map is constant).
        ssim: SSIM of each randomized map to the original, ``[B, L]``.
    """

    method: str
    deletion_substrate: str
    insertion_substrate: str
    fractions: torch.Tensor
    deletion_curves: torch.Tensor
    insertion_curves: torch.Tensor
    deletion_auc: torch.Tensor
    insertion_auc: torch.Tensor
    randomized_layers: list[str]
    randomized_maps: torch.Tensor
    rank_correlation: torch.Tensor
    ssim: torch.Tensor


def check_positive_integer(name: str, value: object) -> None:
    """Raise a one-sentence :class:`UserInputError` unless ``value`` is an integer of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserInputError(f"{name} must be an integer of at least 1, got {value!r}.")


def check_evaluation_options(steps: int, batch_size: int, deletion_substrate: str,
                             insertion_substrate: str, seed: int = 0) -> None:
    """Raise a one-sentence :class:`UserInputError` for a bad option of the trust report."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserInputError(f"evaluation_steps must be an integer of at least 1, got {steps}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserInputError("evaluation_batch_size must be an integer of at least 1, "
                             f"got {batch_size}.")
    check_choice("deletion_baseline", deletion_substrate, SUBSTRATES)
    check_choice("insertion_start", insertion_substrate, SUBSTRATES)
    # Each randomized layer adds its position to the seed, and torch takes 64-bit seeds.
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**62:
        raise UserInputError(f"randomization_seed must be an integer from 0 to 2**62, got {seed}.")


# --- deletion and insertion (RISE) -------------------------------------------------------------


def blur(inputs: torch.Tensor, kernel_size: int = BLUR_KERNEL,
         sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """RISE's insertion start: each channel blurred by a Gaussian (reflecting at the border).

    The kernel shrinks to fit images smaller than it (reflection needs the border to be wider
    than half the kernel).
    """
    from torchvision.transforms.functional import gaussian_blur

    largest = min(inputs.shape[-2:])
    kernel_size = min(kernel_size, largest if largest % 2 else largest - 1)
    return gaussian_blur(inputs, [kernel_size, kernel_size], [sigma, sigma])


def substrate(name: str, inputs: torch.Tensor, backbone: Backbone) -> torch.Tensor:
    """The image that removed pixels are taken from, in normalized space, shaped like ``inputs``.

    Args:
        name: ``"black"`` (black pixels), ``"zero"`` (zeros in normalized space: the
            preprocessing's mean colour, what RISE's code substitutes), or ``"blur"`` (a blurred
            copy, RISE's insertion start).
        inputs: Normalized images ``[B, 3, H, W]``.
        backbone: Supplies the normalized value of a black pixel.
    """
    check_choice("substrate", name, SUBSTRATES)
    if name == "black":
        return backbone.pixel_min.to(inputs).expand_as(inputs).clone()
    if name == "zero":
        return torch.zeros_like(inputs)
    return blur(inputs)


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """Each pixel's place in the map's order, most salient first: ``[B, H * W]``, 0-based.

    Ties keep reading order (a stable sort), so that a run repeats exactly.
    """
    order = torch.argsort(maps.flatten(1), dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


def perturbation_curves(model: nn.Module, source: torch.Tensor, replacement: torch.Tensor,
                        maps: torch.Tensor, targets: torch.Tensor, steps: int,
                        batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The class probability as the map's most salient pixels of ``source`` are replaced.

    At step ``k`` (0 to ``steps``) the ``round(k * H * W / steps)`` most salient pixels (all
    channels) come from ``replacement``, the rest from ``source``. Deletion: ``source`` is the
    image, ``replacement`` the baseline; insertion: the other way round.

    Args:
        model: Maps normalized images to logits, in eval mode.
        source: Normalized images ``[B, 3, H, W]`` at step 0.
        replacement: What the salient pixels become, shaped like ``source``.
        maps: Saliency maps ``[B, H, W]``.
        targets: The explained class of each image, ``[B]``.
        steps: Number of steps.
        batch_size: Most perturbed images per forward pass: memory stays at one such batch,
            whatever the number of images and steps.

    Returns:
        ``(fractions [steps + 1], curves [B, steps + 1])``: the fraction of pixels replaced and
        the softmax probability of the target class at each step.
    """
    images, pixels = source.shape[0], maps.shape[1] * maps.shape[2]
    counts = torch.linspace(0, pixels, steps + 1).round().long().to(source.device)
    ranks = pixel_ranks(maps.to(source.device))
    targets = torch.as_tensor(targets, device=source.device).long()
    curves = torch.empty(images * (steps + 1), dtype=torch.float32)
    # The perturbed images are made chunk by chunk, never all at once.
    for start in range(0, images * (steps + 1), batch_size):
        index = torch.arange(start, min(start + batch_size, images * (steps + 1)),
                             device=source.device)
        image, step = index // (steps + 1), index % (steps + 1)
        replaced = (ranks[image] < counts[step][:, None]).view(-1, 1, *maps.shape[1:])
        perturbed = torch.where(replaced, replacement[image], source[image])
        with torch.no_grad():
            probabilities = model(perturbed).float().softmax(dim=1)
        curves[start:start + len(index)] = probabilities.gather(1, targets[image][:, None])[:, 0].cpu()
    return (counts.cpu().double() / pixels).float(), curves.view(images, steps + 1)


def area_under_curve(fractions: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
    """Trapezoid area under each curve ``[B, S + 1]`` over ``fractions`` ``[S + 1]``: ``[B]``.

    With equal steps this is RISE's ``(sum - first / 2 - last / 2) / S``.
    """
    widths = fractions[1:] - fractions[:-1]
    return ((curves[:, 1:] + curves[:, :-1]) / 2 * widths).sum(dim=1)


def deletion_insertion(backbone: Backbone, inputs: torch.Tensor, maps: torch.Tensor,
                       targets: torch.Tensor, steps: int = 20, batch_size: int = 16,
                       deletion_substrate: str = "black", insertion_substrate: str = "blur"
                       ) -> dict[str, torch.Tensor]:
    """RISE's deletion and insertion curves and their areas.

    Args:
        backbone: The classifier.
        inputs: Normalized images ``[B, 3, H, W]``.
        maps: Their saliency maps ``[B, H, W]``.
        targets: The explained class of each image, ``[B]``.
        steps: Number of equal steps from no pixel to every pixel.
        batch_size: Most perturbed images per forward pass.
        deletion_substrate: What removed pixels become, see :func:`substrate`.
        insertion_substrate: What insertion starts from.

    Returns:
        ``fractions``, ``deletion_curves``, ``insertion_curves``, ``deletion_auc`` and
        ``insertion_auc``, as in :class:`TrustReport`.
    """
    inputs = inputs.detach()
    fractions, deletion = perturbation_curves(
        backbone, inputs, substrate(deletion_substrate, inputs, backbone), maps, targets, steps,
        batch_size)
    _, insertion = perturbation_curves(
        backbone, substrate(insertion_substrate, inputs, backbone), inputs, maps, targets, steps,
        batch_size)
    return {"fractions": fractions, "deletion_curves": deletion, "insertion_curves": insertion,
            "deletion_auc": area_under_curve(fractions, deletion),
            "insertion_auc": area_under_curve(fractions, insertion)}


# --- cascading parameter randomization (Adebayo et al.) ----------------------------------------


GRANULARITIES = ("blocks", "modules")


def randomization_order(backbone: nn.Module, granularity: str = "blocks"
                        ) -> list[tuple[str, nn.Module]]:
    """The layers that randomization re-initialises, top down.

    Args:
        backbone: The classifier.
        granularity: ``"blocks"``: the head, then ``features[-1]``, ``features[-2]``, ... (a
            :class:`Backbone`'s blocks; layers without parameters, such as ReLU or pooling, are
            skipped: randomizing them would change nothing). ``"modules"``: every module that has
            ``reset_parameters`` (convolutions, linear layers, batch norms), in reverse
            ``named_modules`` order, as Quantus' MPRT walks a network (any ``nn.Module``).
    """
    check_choice("granularity", granularity, GRANULARITIES)
    if granularity == "modules":
        return [(name, module) for name, module in backbone.named_modules()
                if hasattr(module, "reset_parameters")][::-1]
    layers = [("head", backbone.head)] + [
        (f"features.{index}", backbone.features[index])
        for index in reversed(range(len(backbone.features)))]
    return [(name, layer) for name, layer in layers if any(True for _ in layer.parameters())]


def randomize_layer(layer: nn.Module, seed: int) -> None:
    """Re-initialise every weight of ``layer`` in place, repeatably.

    Modules with ``reset_parameters`` (convolutions, linear layers, batch norm, whose running
    statistics reset too) draw their framework default initialisation from a generator seeded
    with ``seed``; any other parameter is redrawn from a normal distribution with its own mean
    and standard deviation. The global random state is left as it was.
    """
    devices = sorted({parameter.device.index or 0 for parameter in layer.parameters()
                      if parameter.device.type == "cuda"})
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for module in layer.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
                continue
            for parameter in module.parameters(recurse=False):
                std = parameter.std().item() if parameter.numel() > 1 else 1.0
                noise = torch.randn(parameter.shape, generator=generator).to(parameter)
                parameter.copy_(noise * std + parameter.mean())


def cascading_models(backbone: nn.Module, seed: int = 0, granularity: str = "blocks"
                     ) -> Iterator[tuple[str, nn.Module]]:
    """Ever more randomized copies of the network, top down and cumulative (Adebayo et al.).

    The backbone itself is never touched: one deep copy is randomized layer by layer in
    :func:`randomization_order`, and yielded after each layer (the same object each time, so use
    it before asking for the next). Layer ``j`` in that order is re-initialised from seed
    ``seed + j``, so a run repeats and a layer gets the same weights whatever the depth.

    Yields:
        ``(layer name, the copy with every layer up to it randomized)``.
    """
    randomized = copy.deepcopy(backbone)
    for position, (name, layer) in enumerate(randomization_order(randomized, granularity)):
        randomize_layer(layer, seed + position)
        yield name, randomized


def cascading_randomization(backbone: Backbone, saliency: SaliencyFunction, inputs: torch.Tensor,
                            targets: torch.Tensor, seed: int = 0
                            ) -> tuple[list[str], torch.Tensor]:
    """The maps of ever more randomized copies of the network (Adebayo et al. 2018).

    The copies are :func:`cascading_models`' (the backbone's blocks, layer ``j`` from seed
    ``seed + j``), and the map is recomputed after each layer.

    Args:
        backbone: The trained classifier.
        saliency: Computes maps ``[B, H, W]`` of ``(model, inputs, targets)`` with the method
            under test.
        inputs: Normalized images ``[B, 3, H, W]``.
        targets: The explained class of each image, ``[B]`` (the same for every copy).
        seed: Seed of the re-initialisation.

    Returns:
        ``(layer names, maps [B, L, H, W])`` on the CPU, one map per cumulative step.
    """
    names, maps = [], []
    for name, randomized in cascading_models(backbone, seed):
        names.append(name)
        maps.append(saliency(randomized, inputs, targets).detach().float().cpu())
    return names, torch.stack(maps, dim=1)


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """0-based ranks along the last dimension, tied values sharing their mean rank (as Spearman's
    needs: a map's zeros are many and tied). ``[..., N]`` to float64 ``[..., N]``, on the
    values' device."""
    rows = values.reshape(-1, values.shape[-1])
    count = rows.shape[1]
    ordered, order = torch.sort(rows, dim=1, stable=True)
    # A tie group starts wherever the sorted value changes; groups are numbered across the rows
    # so that one scatter finds every group's first and last position at once.
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = starts.flatten().cumsum(0) - 1
    positions = torch.arange(count, device=values.device, dtype=torch.float64).repeat(len(rows))
    groups = int(group[-1]) + 1 if group.numel() else 0
    first = torch.full((groups,), float(count), dtype=torch.float64, device=values.device)
    last = torch.zeros(groups, dtype=torch.float64, device=values.device)
    first.scatter_reduce_(0, group, positions, "amin")
    last.scatter_reduce_(0, group, positions, "amax")
    mean_rank = ((first + last) / 2)[group].view(rows.shape)
    ranks = torch.empty_like(mean_rank).scatter_(1, order, mean_rank)
    return ranks.view(values.shape)


def spearman(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of rows, on their device: ``[B, ...]`` twice to
    float64 ``[B]``.

    Ties get their mean rank, as in ``scipy.stats.spearmanr``; NaN where a row is constant (it
    orders nothing).
    """
    a = average_ranks(first.detach().flatten(1))
    b = average_ranks(second.detach().flatten(1))
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    scale = a.norm(dim=1) * b.norm(dim=1)
    correlation = (a * b).sum(dim=1) / scale
    return torch.where(scale > 0, correlation, torch.full_like(correlation, float("nan")))


def rank_correlation(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of the absolute values of two batches of maps ``[B, H, W]``.

    Absolute values as Adebayo et al. report it: a method's sign may flip with random weights.
    Ties get their mean rank, as in ``scipy.stats.spearmanr``. Returns ``[B]`` float32 on the
    CPU; NaN where a map is constant (it orders nothing).
    """
    return spearman(first.detach().abs().double(), second.detach().abs().double()).float().cpu()


def normalized_map(maps: torch.Tensor, percentile: float = SSIM_PERCENTILE) -> torch.Tensor:
    """Absolute maps ``[B, H, W]`` scaled to 0-1: minimum to 0, the ``percentile`` to 1, clipped
    (the PAIR saliency library's grayscale visualization, which Adebayo et al. compared)."""
    maps = maps.detach().abs().float()
    low = maps.flatten(1).amin(dim=1).view(-1, 1, 1)
    high = torch.quantile(maps.flatten(1), percentile / 100.0, dim=1).view(-1, 1, 1)
    span = torch.where(high > low, high - low, torch.ones_like(high))
    return ((maps - low) / span).clamp(0, 1)


def map_ssim(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """SSIM of two batches of maps ``[B, H, W]`` after :func:`normalized_map`: ``[B]``.

    torchmetrics' SSIM (Gaussian window 11, sigma 1.5, shrunk to fit small maps), data range 1.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    largest = min(first.shape[-2:])
    kernel = min(11, largest if largest % 2 else largest - 1)
    return structural_similarity_index_measure(
        normalized_map(second)[:, None], normalized_map(first)[:, None], data_range=1.0,
        kernel_size=kernel, reduction="none").float().cpu()


# --- both ---------------------------------------------------------------------------------------


def trust_report(backbone: Backbone, saliency: SaliencyFunction, inputs: torch.Tensor,
                 targets: torch.Tensor, maps: torch.Tensor, method: str, steps: int = 20,
                 batch_size: int = 16, deletion_substrate: str = "black",
                 insertion_substrate: str = "blur", seed: int = 0) -> TrustReport:
    """Deletion and insertion AUCs and the cascading randomization check of one batch.

    Args:
        backbone: The trained classifier (left untouched).
        saliency: The method under test, see :func:`cascading_randomization`.
        inputs: Normalized images ``[B, 3, H, W]``.
        targets: The explained class of each image, ``[B]``.
        maps: The method's maps of the trained network, ``[B, H, W]``.
        method: The method's name, for the report.
        steps: Deletion and insertion steps.
        batch_size: Most perturbed images per forward pass.
        deletion_substrate: What removed pixels become (``"black"``, ``"zero"``, ``"blur"``).
        insertion_substrate: What insertion starts from.
        seed: Seed of the re-initialisation.

    Returns:
        A :class:`TrustReport`.
    """
    check_evaluation_options(steps, batch_size, deletion_substrate, insertion_substrate, seed)
    curves = deletion_insertion(backbone, inputs, maps, targets, steps, batch_size,
                                deletion_substrate, insertion_substrate)
    names, randomized = cascading_randomization(backbone, saliency, inputs, targets, seed)
    original = maps.detach().float().cpu()
    layers = randomized.shape[1]
    rank = torch.stack([rank_correlation(original, randomized[:, j]) for j in range(layers)], 1)
    ssim = torch.stack([map_ssim(original, randomized[:, j]) for j in range(layers)], 1)
    return TrustReport(method=method, deletion_substrate=deletion_substrate,
                       insertion_substrate=insertion_substrate, randomized_layers=names,
                       randomized_maps=randomized, rank_correlation=rank, ssim=ssim, **curves)


def summary(reports: list[TrustReport]) -> dict[str, float]:
    """The mean of each metric over every image of ``reports`` (one method), NaN-skipping.

    Keys: ``images``, ``deletion_auc``, ``insertion_auc``, then ``rank_correlation_<layer>`` and
    ``ssim_<layer>`` per randomized layer.
    """
    deletion = torch.cat([report.deletion_auc for report in reports])
    insertion = torch.cat([report.insertion_auc for report in reports])
    rank = torch.cat([report.rank_correlation for report in reports]).numpy()
    ssim = torch.cat([report.ssim for report in reports]).numpy()
    row: dict[str, float] = {"images": float(len(deletion)),
                             "deletion_auc": deletion.mean().item(),
                             "insertion_auc": insertion.mean().item()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a column of NaN (every map constant) stays NaN
        for j, name in enumerate(reports[0].randomized_layers):
            row[f"rank_correlation_{name}"] = float(np.nanmean(rank[:, j]))
            row[f"ssim_{name}"] = float(np.nanmean(ssim[:, j]))
    return row
