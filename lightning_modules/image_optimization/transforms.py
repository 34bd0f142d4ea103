"""Differentiable image transforms: the homework's jitter and blur, Lucent's random transforms."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F


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
