"""Feature visualization's step: the scores of objectives, and the loss that raises them.

One network pass per step serves every objective of the batch: the layers all of them read are
extracted together (and the logits only when one reads them). The pictures reach the network
through :func:`~lightning_modules.class_visualization.functional.shown_views`, as the class
visualization's do: the view (rendering, jitter, transforms) and the L2 penalty have one
implementation, and a class logit and a channel are optimized the same way.
:func:`deep_dream` is DeepDream's plain loop, made of the pieces its module uses. No Lightning
and no files here.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from lightning_modules.backbones import Backbone
from lightning_modules.class_visualization.functional import (
    CropViews,
    as_view,
    l2_penalty,
    regularize,
    shown_views,
)
from lightning_modules.feature_visualization.objectives import (
    Activations,
    Objective,
    parse_objective,
)
from lightning_modules.image_optimization.parameterizations import Parameterization, PixelImage
from lightning_modules.image_optimization.steps import GradientAscent, NormalizedStep
from lightning_modules.image_optimization.transforms import ImageTransforms
from lightning_modules.style_transfer.scales import resize_pixels


def activations(shown: torch.Tensor, backbone: Backbone,
                objectives: Sequence[Objective]) -> Activations:
    """What ``objectives`` read of images ``shown``, from one pass through ``backbone``.

    Args:
        shown: Normalized images ``[N, 3, H, W]``.
        backbone: The network.
        objectives: Bound objectives (their layers are indices).
    """
    layers = sorted({index for objective in objectives for index in objective.layer_specs()})
    if any(objective.needs_logits for objective in objectives):
        maps, logits = backbone.extract_with_logits(shown, layers)
    else:
        maps, logits = (backbone.extract(shown, layers) if layers else []), None
    return Activations(dict(zip(layers, maps)), logits)


def objective_scores(shown: torch.Tensor, backbone: Backbone, objectives: Sequence[Objective],
                     rows: Optional[Sequence[Sequence[int]]] = None) -> torch.Tensor:
    """Each image's score under its own objective, ``[N]``.

    Args:
        shown: Normalized images ``[N, 3, H, W]``.
        backbone: The network.
        objectives: Bound objectives.
        rows: The images (rows of ``shown``) each objective scores; a batch objective such as
            diversity compares the images of its own rows only. None: one objective, all rows.
    """
    return score_activations(activations(shown, backbone, objectives), objectives, rows)


def score_activations(seen: Activations, objectives: Sequence[Objective],
          rows: Optional[Sequence[Sequence[int]]] = None, images: Optional[int] = None
          ) -> torch.Tensor:
    """Each image's score from activations already computed (see :func:`objective_scores`).

    Args:
        seen: The activations of ``views`` rows.
        objectives: Bound objectives.
        rows: Per objective, the images it scores; None: one objective, every image.
        images: How many images the rows stand for; a view of several rows per image (random
            crops, image after image) scores their mean. None: one row per image.
    """
    views = next(iter(seen.features.values()), seen.logits).shape[0]
    images = views if images is None else images
    per_image = views // images
    if rows is None:
        (objective,) = objectives
        return objective.score(seen).float().view(images, per_image).mean(1)
    reference = next(iter(seen.features.values()), seen.logits)
    scores = reference.new_zeros(views, dtype=torch.float32)
    for objective, indices in zip(objectives, rows):
        index = torch.as_tensor([row * per_image + k for row in indices for k in range(per_image)],
                                device=reference.device)
        part = Activations({layer: values[index] for layer, values in seen.features.items()},
                           None if seen.logits is None else seen.logits[index])
        scores = scores.index_put((index,), objective.score(part).float())
    return scores.view(images, per_image).mean(1)


def objective_loss(
    parameter: torch.Tensor,
    backbone: Backbone,
    objectives: Sequence[Objective],
    rows: Optional[Sequence[Sequence[int]]] = None,
    *,
    parameterization: Parameterization,
    l2_reg: float = 0.0,
    max_jitter: int = 0,
    transforms: Union[bool, str, ImageTransforms] = False,
    generator: Optional[torch.Generator] = None,
    crops: Optional[CropViews] = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One step's loss terms (to minimize) and the scores they came from.

    Args:
        parameter: The images' parameter (see ``parameterization``), batch first.
        backbone: The network.
        objectives: Bound objectives; see :func:`objective_scores` for ``rows``.
        rows: The rows each objective scores; None: one objective, every row.
        parameterization: What ``parameter`` is.
        l2_reg: Weight of ``||image||^2`` (normalized units).
        max_jitter: Largest random circular shift in pixels; 0 turns it off.
        transforms: ``"none"`` (False), ``"lucent"`` (True), ``"crops"`` (MACO's), or a view
            object; with several views of a picture its score is their mean.
        generator: Random source of the jitter and transforms.
        crops: The crops' options, with ``transforms="crops"`` (None: the defaults).

    Returns:
        ``({"objective": -score, "l2": l2_reg * ||image||^2}, score)``, each ``[N]`` (no
        ``l2`` term when ``l2_reg`` is 0).
    """
    images, shown = shown_views(parameter, parameterization, backbone.mean, backbone.std,
                                max_jitter, as_view(transforms, crops), generator)
    scores = score_activations(activations(shown, backbone, objectives), objectives, rows,
                               parameter.shape[0])
    terms = {"objective": -scores}
    if l2_reg:
        terms["l2"] = l2_penalty(images, l2_reg)
    return terms, scores


# ----------------------------------------------------------------- DeepDream
def octave_sizes(size: Sequence[int], octaves: int, octave_scale: float) -> list[tuple[int, int]]:
    """The picture's ``(H, W)`` at each octave, coarse to fine; the last is ``size`` itself.

    Args:
        size: The photo's ``(H, W)``.
        octaves: How many sizes the picture climbs.
        octave_scale: The ratio of one octave's side to the previous.
    """
    sizes = []
    for octave in range(octaves):
        factor = octave_scale ** (octaves - 1 - octave)
        sizes.append((max(1, round(size[0] / factor)), max(1, round(size[1] / factor))))
    return sizes


def carry_detail(dreamed: torch.Tensor, photo_before: torch.Tensor,
                 photo_now: torch.Tensor) -> torch.Tensor:
    """The next octave's start: the photo at its size plus the detail dreamed so far, upsampled.

    Upsampling the dream itself would blur the photo's own fine detail away; only what the
    dream added is upsampled (Mordvintsev et al.'s octaves).

    Args:
        dreamed: The dream at the previous octave, 0-1 pixels ``[N, 3, h, w]``.
        photo_before: The photo at the previous octave's size, ``[N, 3, h, w]``.
        photo_now: The photo at this octave's size, ``[N, 3, H, W]``.

    Returns:
        0-1 pixels ``[N, 3, H, W]``, clamped.
    """
    detail = resize_pixels(dreamed - photo_before, photo_now.shape[-2:])
    return (photo_now + detail).clamp(0, 1)


def normalized_step_length(lr: float, parameter: torch.Tensor) -> float:
    """A unit step's length ``lr * sqrt(values per image)``: ``lr`` is then the root-mean-square
    change of one value, whatever the image's size (a unit step per image would shrink per
    pixel as the octaves grow)."""
    return NormalizedStep().length_per_value(lr, parameter)


def deep_dream(
    photo: torch.Tensor,
    backbone: Backbone,
    objective: Union[str, Objective] = "layer:blocks.4",
    octaves: int = 4,
    octave_scale: float = 1.4,
    steps_per_octave: int = 20,
    lr: float = 0.02,
    max_jitter: int = 32,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """DeepDream a photo: the plain loop that :class:`~.module.DeepDream` runs step by step.

    At each octave (see :func:`octave_sizes`) the photo at that size plus the detail dreamed so
    far (:func:`carry_detail`) climbs ``objective`` by normalized gradient ascent, through a
    random circular jitter of up to ``max_jitter`` pixels, clamped to valid pixels.

    Args:
        photo: 0-1 pixels ``[3, H, W]`` or ``[N, 3, H, W]``.
        backbone: The network (a :class:`~lightning_modules.backbones.Backbone`).
        objective: What to raise (see :mod:`.objectives`).
        octaves: How many sizes the picture climbs.
        octave_scale: The ratio of one octave's side to the previous.
        steps_per_octave: Steps at each octave.
        lr: The root-mean-square change of a pixel value per step, in normalized units.
        max_jitter: Largest random circular shift in pixels; 0 turns it off.
        generator: Random source of the jitter (for reproducible runs).

    Returns:
        The dream, 0-1 pixels of the photo's shape.
    """
    batch = photo if photo.dim() == 4 else photo[None]
    device = backbone.mean.device
    batch = batch.to(device).float()
    bound = parse_objective(objective).bind(backbone)
    pixel = PixelImage()
    low, high = backbone.pixel_min, backbone.pixel_max
    dreamed, previous = None, None
    for size in octave_sizes(batch.shape[-2:], octaves, octave_scale):
        photo_now = resize_pixels(batch, size)
        start = photo_now if dreamed is None else carry_detail(dreamed, previous, photo_now)
        parameter = backbone.normalize(start).requires_grad_(True)
        step = GradientAscent([parameter], lr=normalized_step_length(lr, parameter))
        for index in range(steps_per_octave):
            step.zero_grad()
            terms, _ = objective_loss(parameter, backbone, [bound], parameterization=pixel,
                                      max_jitter=max_jitter, generator=generator)
            torch.stack([value.sum() for value in terms.values()]).sum().backward()
            step.step()
            regularize(parameter, pixel, index, low, high, blur_every=0)
        dreamed, previous = backbone.denormalize(parameter.detach()), photo_now
    return dreamed if photo.dim() == 4 else dreamed[0]
