"""Differentiable image transforms: the homework's jitter and blur, Lucent's random transforms,
MACO's random crops; and the *views* a picture is shown to the network through, as objects.

A view (:class:`ImageTransforms`) is what the network sees of each picture every step:
:class:`NoTransforms` (the picture itself), :class:`LucentTransforms` (Lucent's random
pad/jitter/scale/rotate) or :class:`RandomCrops` (MACO's crops, with their own count, size,
scale and noise). A config names one by ``class_path``, or by its short name (``none``,
``lucent``, ``crops``; ``true`` and ``false`` are ``lucent`` and ``none``): see
:func:`resolve_transforms`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from lightning_modules.errors import UserInputError, check_non_negative
from lightning_modules.image_optimization.variants import resolve_variant


def jitter(images: torch.Tensor, ox: int, oy: int) -> torch.Tensor:
    """Shift images circularly by ``ox`` pixels right and ``oy`` down (the homework's jitter).

    ``jitter(jitter(x, ox, oy), -ox, -oy)`` is ``x`` again, exactly.

    Args:
        images: ``[N, C, H, W]``.
        ox: Horizontal shift in pixels.
        oy: Vertical shift in pixels.

    Returns:
        The shifted images (a new tensor).
    """
    return torch.roll(images, shifts=(oy, ox), dims=(2, 3))


def blur_image(images: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """Gaussian blur of each channel, as ``scipy.ndimage.gaussian_filter1d`` along H then W.

    Matches the homework's ``blur_image`` (scipy's defaults: kernel radius ``int(4 * sigma + 0.5)``,
    edges reflected about the border, ``d c b a | a b c d``).

    Args:
        images: ``[N, C, H, W]``.
        sigma: Standard deviation in pixels.

    Returns:
        The blurred images (a new tensor).
    """
    radius = int(4.0 * sigma + 0.5)
    if radius == 0:
        return images.clone()
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(images)
    channels = images.shape[1]
    for dim in (2, 3):
        size = images.shape[dim]
        # scipy's "reflect" extension (edge pixel repeated), periodic with period 2 * size.
        positions = torch.arange(-radius, size + radius, device=images.device) % (2 * size)
        positions = torch.where(positions < size, positions, 2 * size - 1 - positions)
        padded = images.index_select(dim, positions)
        weight = kernel.view(1, 1, -1, 1) if dim == 2 else kernel.view(1, 1, 1, -1)
        images = F.conv2d(padded, weight.expand(channels, -1, -1, -1), groups=channels)
    return images


def _choice(values: Sequence[float], generator: Optional[torch.Generator]) -> float:
    return values[int(torch.randint(len(values), (1,), generator=generator))]


def _random_crop(images: torch.Tensor, shrink: int,
                 generator: Optional[torch.Generator]) -> torch.Tensor:
    dx, dy = (int(v) for v in torch.randint(shrink + 1, (2,), generator=generator))
    height, width = images.shape[2] - shrink, images.shape[3] - shrink
    return images[:, :, dy : dy + height, dx : dx + width]


# Lucent's standard_transforms: pad 12, jitter 8, scale 0.9-1.1, rotate -10..10 deg, jitter 4.
_SCALES = [1 + (i - 5) / 50.0 for i in range(11)]
_ANGLES = list(range(-10, 11)) + 5 * [0]


def random_transforms(images: torch.Tensor, pad_value: torch.Tensor,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Lucent's standard random transforms, differentiable, one draw for the whole batch.

    Pad 12 px with grey, crop a random 8 px jitter, scale by 0.9-1.1, rotate by -10 to 10
    degrees, crop a random 4 px jitter.

    Args:
        images: Normalized images ``[N, 3, H, W]``.
        pad_value: The normalized value of the padding colour, ``[1, 3, 1, 1]``.
        generator: Random source of the draws.

    Returns:
        The transformed images (their size changes slightly).
    """
    pad = 12
    canvas = pad_value.to(images).expand(images.shape[0], -1, images.shape[2] + 2 * pad,
                                         images.shape[3] + 2 * pad).clone()
    canvas[:, :, pad:-pad, pad:-pad] = images
    images = _random_crop(canvas, 8, generator)
    scale = _choice(_SCALES, generator)
    if scale != 1:
        images = F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
    angle = math.radians(_choice(_ANGLES, generator))
    if angle != 0:
        cos, sin = math.cos(angle), math.sin(angle)
        theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=images.dtype,
                             device=images.device).expand(images.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                               align_corners=False)
    return _random_crop(images, 4, generator)


def random_shift(images: torch.Tensor, max_shift: int, generator: Optional[torch.Generator] = None,
                 circular: bool = False) -> torch.Tensor:
    """Shift images by a random offset of up to ``max_shift`` pixels each way, keeping the size.

    One draw for the whole batch: ``dy`` and ``dx`` uniform in ``[-max_shift, max_shift]``,
    pixel ``(y, x)`` of the result is pixel ``(y - dy, x - dx)`` of the input.

    Args:
        images: ``[N, C, H, W]``.
        max_shift: The largest shift in pixels, zero or more; without ``circular`` less than
            the image's height and width.
        generator: Random source of the draws.
        circular: Roll the images (``torch.roll``): what comes out one side comes in the other,
            as a tileable image expects. Otherwise the shifted-in border is the image
            reflected about its edge (reflect padding, then a crop).

    Returns:
        The shifted images (a new tensor, the same size).
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be zero or more, got {max_shift}.")
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=generator))
    if circular:
        return torch.roll(images, shifts=(dy, dx), dims=(2, 3))
    if max_shift >= min(images.shape[2], images.shape[3]):
        raise ValueError(f"max_shift {max_shift} must be less than the image's height and width "
                         f"({images.shape[2]} x {images.shape[3]}) to reflect-pad.")
    height, width = images.shape[2], images.shape[3]
    padded = F.pad(images, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)), mode="reflect")
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[:, :, top : top + height, left : left + width]


def random_crops(images: torch.Tensor, count: int, size: int,
                 scale: tuple[float, float] = (0.4, 1.0), noise: float = 0.0,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """MACO's views of a canvas: ``count`` random square crops of each image, resized to ``size``.

    Each crop's side is a uniform fraction ``scale`` of the canvas's shorter side, at a uniform
    random place, mirrored left-right half the time; every view gets Gaussian noise of standard
    deviation ``noise``. One draw serves the whole batch (as Lucent's transforms): every image
    gets the same ``count`` crops and noise, so what a picture sees does not depend on which
    other pictures share its batch, chunk or process. One ``roi_align`` call crops and resizes
    every view (bilinear, several samples per output pixel, so large crops shrink without
    aliasing), and it is differentiable.

    Args:
        images: ``[N, C, H, W]`` (the network's normalized input).
        count: Crops per image.
        size: Side of each view, in pixels.
        scale: Smallest and largest crop side, as fractions of the shorter side.
        noise: Standard deviation of the noise added to the views (0: none).
        generator: Random source of the draws.

    Returns:
        The views ``[N * count, C, size, size]``, those of image 0 first.
    """
    from torchvision.ops import roi_align

    batch, channels, height, width = images.shape
    low, high = scale
    sides = (low + (high - low) * torch.rand(count, generator=generator)) * min(height, width)
    x0 = torch.rand(count, generator=generator) * (width - sides)
    y0 = torch.rand(count, generator=generator) * (height - sides)
    flips = torch.rand(count, generator=generator) < 0.5
    owners = torch.arange(batch).repeat_interleave(count).to(sides)
    corners = torch.stack([x0, y0, x0 + sides, y0 + sides], 1).repeat(batch, 1)
    boxes = torch.cat([owners[:, None], corners], 1).to(images)
    crops = roi_align(images, boxes, output_size=size, spatial_scale=1.0, sampling_ratio=2,
                      aligned=True)
    flips = flips.repeat(batch).to(images.device)
    crops = torch.where(flips[:, None, None, None], crops.flip(3), crops)
    if noise > 0:
        draw = torch.randn((count, channels, size, size), generator=generator)
        crops = crops + noise * draw.repeat(batch, 1, 1, 1).to(crops)
    return crops


# --------------------------------------------------------------------------- views as objects
class ImageTransforms:
    """What the network sees of each picture every step (see the module docstring).

    Attributes:
        views_per_image: How many views of each picture one step shows; a picture's score is
            the mean over its views.
    """

    views_per_image: int = 1

    def __call__(self, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The views of normalized images ``[N, 3, H, W]``: ``[N * views_per_image, 3, h, w]``,
        those of picture 0 first (differentiable).

        Args:
            images: The pictures, in the network's normalized units.
            mean: Per-channel mean of the network's preprocessing, ``[1, 3, 1, 1]``.
            std: Its standard deviation.
            generator: Random source of the draws.
        """
        raise NotImplementedError


class NoTransforms(ImageTransforms):
    """The picture itself (the homework's view, besides its jitter)."""

    def __call__(self, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return images


class LucentTransforms(ImageTransforms):
    """Lucent's standard random transforms (:func:`random_transforms`), grey padding."""

    def __call__(self, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        grey = (0.5 - mean) / std
        return random_transforms(images, grey, generator)


class RandomCrops(ImageTransforms):
    """MACO's views (:func:`random_crops`): ``count`` random crops of each picture (a canvas)
    resized to ``size``, with noise, so the score asks every part of the picture.

    Args:
        count: Crops per picture and step.
        size: Side of each crop as the network sees it (None: the picture's side).
        scale: Smallest and largest crop side, as fractions of the picture's side.
        noise: Standard deviation of the Gaussian noise on each view, in normalized units.

    Raises:
        UserInputError: An option out of its range, in one sentence.
    """

    def __init__(self, count: int = 4, size: Optional[int] = None,
                 scale: tuple[float, float] = (0.4, 1.0), noise: float = 0.05) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise UserInputError(f"crops must be at least 1 (the crops' count), got {count!r}.")
        if size is not None and size < 8:
            raise UserInputError(f"crop_size (the crops' size) must be at least 8 pixels, "
                                 f"got {size}.")
        if len(scale) != 2 or not 0 < float(scale[0]) <= float(scale[1]) <= 1:
            raise UserInputError(f"crop_scale (the crops' scale) must be two fractions "
                                 f"0 < low <= high <= 1 of the picture's side, got {list(scale)}.")
        check_non_negative("crop_noise", noise)
        self.count = count
        self.size = size
        self.scale = (float(scale[0]), float(scale[1]))
        self.noise = noise

    @property
    def views_per_image(self) -> int:  # type: ignore[override]
        return self.count

    def check(self) -> "RandomCrops":
        """Returns ``self`` (the options are checked when it is built)."""
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RandomCrops) and (self.count, self.size, self.scale,
                                                   self.noise) == (other.count, other.size,
                                                                   other.scale, other.noise)

    def __hash__(self) -> int:
        return hash((self.count, self.size, self.scale, self.noise))

    def __call__(self, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return random_crops(images, self.count, self.size or images.shape[-1], self.scale,
                            self.noise, generator)


#: The short names a config may give for ``transforms``.
TRANSFORMS: Mapping[str, type[ImageTransforms]] = {
    "none": NoTransforms, "lucent": LucentTransforms, "crops": RandomCrops}
# The older on/off switch, as the command line and YAML spell it.
_SWITCH = {True: "lucent", False: "none", "true": "lucent", "false": "none"}


def resolve_transforms(value: Any, **crop_options: Any) -> ImageTransforms:
    """The view ``value`` stands for: an :class:`ImageTransforms`, a short name, or the older
    switch (true: ``lucent``, false: ``none``).

    Args:
        value: The ``transforms`` option.
        **crop_options: The older options beside the name, for ``crops``: ``crops`` (count),
            ``crop_size``, ``crop_scale``, ``crop_noise``; None: not given.

    Raises:
        UserInputError: An unknown name, or a crop option given with a view other than crops.
    """
    if isinstance(value, (bool, str)):
        value = _SWITCH.get(value.strip().lower() if isinstance(value, str) else value, value)
    arguments = {"crops": "count", "crop_size": "size", "crop_scale": "scale",
                 "crop_noise": "noise"}
    legacy = {option: (arguments[option], given) for option, given in crop_options.items()}
    return resolve_variant("transforms", value, ImageTransforms, TRANSFORMS, legacy)
