"""The style-transfer losses of the CS231n homework, batched, and colour preservation.

No Lightning and no files here: this is what a notebook imports.

The formulas and signatures are the homework's. Each loss returns one value per image, shaped
``[N]``: images of a batch never mix, and ``loss.sum()`` (or, for a single image, the one-element
result itself) can be back-propagated. Gram matrices and sums are accumulated in float32 so that
mixed-precision runs give the same losses.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from lightning_modules.image_optimization.parameterizations import at_least_float32


def extract_features(x: torch.Tensor, model: nn.Module) -> list[torch.Tensor]:
    """Run ``x`` through ``model.features`` and keep every layer's output (the homework's helper).

    Args:
        x: Normalized images ``[N, 3, H, W]``.
        model: Anything whose ``features`` is an iterable of layers, such as a
            :class:`~lightning_modules.backbones.Backbone` or a torchvision SqueezeNet.

    Returns:
        The output of each layer of ``model.features``, in order.
    """
    features = []
    current = x
    for layer in model.features:
        current = layer(current)
        features.append(current)
    return features


def content_loss(
    content_weight: float | torch.Tensor,
    content_current: torch.Tensor,
    content_original: torch.Tensor,
    reduction: str = "sum",
) -> torch.Tensor:
    """Content loss ``w * sum((F - P)^2)`` per image.

    Args:
        content_weight: Scalar weight ``w``.
        content_current: Features of the current image ``[N, C, H, W]``.
        content_original: Features of the content image, ``[N, C, H, W]`` or ``[1, C, H, W]``.
        reduction: ``"sum"`` (the homework's) or ``"mean"`` over the ``C * H * W`` values, which
            does not grow with the image: one weight serves every image size.

    Returns:
        ``[N]`` losses.
    """
    difference = at_least_float32(content_current) - at_least_float32(content_original)
    squares = difference.pow(2).flatten(1)
    return content_weight * (squares.mean(1) if reduction == "mean" else squares.sum(1))


def gram_matrix(features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Gram matrices of feature maps.

    Args:
        features: ``[N, C, H, W]`` feature maps.
        normalize: Divide by ``C * H * W``, as the homework does.

    Returns:
        ``[N, C, C]`` Gram matrices in float32.
    """
    batch, channels, height, width = features.shape
    flat = at_least_float32(features).reshape(batch, channels, height * width)
    # Autocast would run the matmul in bf16/fp16; the products of many activations need fp32.
    with torch.autocast(device_type=flat.device.type, enabled=False):
        gram = torch.bmm(flat, flat.transpose(1, 2))
    if normalize:
        gram = gram / (channels * height * width)
    return gram


def style_loss(
    feats: Sequence[torch.Tensor] | Mapping[int, torch.Tensor],
    style_layers: Sequence[int],
    style_targets: Sequence[torch.Tensor],
    style_weights: Sequence[float] | torch.Tensor,
) -> torch.Tensor:
    """Style loss ``sum_l w_l * sum((G_l - A_l)^2)`` per image.

    Args:
        feats: Features of the current image, indexable by layer index (the list from
            :func:`extract_features`, or a mapping from layer index to feature map).
        style_layers: The layer indices used for the style loss.
        style_targets: Gram matrix ``A_l`` of the style for each entry of ``style_layers``,
            ``[N, C, C]`` or ``[1, C, C]``.
        style_weights: Weight ``w_l`` for each entry of ``style_layers``.

    Returns:
        ``[N]`` losses.
    """
    total = None
    for layer, target, weight in zip(style_layers, style_targets, style_weights):
        gram = gram_matrix(feats[layer])
        term = weight * (gram - at_least_float32(target)).pow(2).flatten(1).sum(1)
        total = term if total is None else total + term
    if total is None:
        raise ValueError("style_loss needs at least one style layer.")
    return total


def tv_loss(img: torch.Tensor, tv_weight: float | torch.Tensor,
            reduction: str = "sum", wrap: bool = False) -> torch.Tensor:
    """Total-variation loss: ``w * (sum of squared vertical + horizontal neighbour differences)``.

    Args:
        img: Images ``[N, C, H, W]``.
        tv_weight: Scalar weight ``w``.
        reduction: ``"sum"`` (the homework's) or ``"mean"``: divided by the number of pixel
            values ``C * H * W``, so that one weight serves every image size.
        wrap: The image is a torus (a tileable texture): the last row's neighbour is the first
            row, and the last column's the first column, so those differences count too.

    Returns:
        ``[N]`` losses.
    """
    img = at_least_float32(img)
    if wrap:
        vertical = (torch.roll(img, 1, 2) - img).pow(2).flatten(1).sum(1)
        horizontal = (torch.roll(img, 1, 3) - img).pow(2).flatten(1).sum(1)
    else:
        vertical = (img[:, :, 1:, :] - img[:, :, :-1, :]).pow(2).flatten(1).sum(1)
        horizontal = (img[:, :, :, 1:] - img[:, :, :, :-1]).pow(2).flatten(1).sum(1)
    total = vertical + horizontal
    if reduction == "mean":
        total = total / img[0].numel()
    return tv_weight * total


def chrominance(pixels: torch.Tensor) -> torch.Tensor:
    """The I and Q (chrominance) channels of YIQ, from 0-1 RGB pixels ``[N, 3, H, W]``."""
    return torch.einsum("ij,njhw->nihw", _RGB_TO_YIQ[1:].to(pixels), at_least_float32(pixels))


def _deviation_from_median(channels: torch.Tensor) -> float:
    """The mean absolute difference of ``[N, C, H, W]`` values from their own 3x3 median."""
    padded = torch.nn.functional.pad(channels, (1, 1, 1, 1), mode="replicate")
    windows = padded.unfold(2, 3, 1).unfold(3, 3, 1)  # [N, C, H, W, 3, 3]
    median = windows.flatten(-2).median(-1).values
    return float((channels - median).abs().mean())


def chroma_noise(pixels: torch.Tensor) -> float:
    """Colour speckle: the mean absolute difference of the chrominance from its own 3x3 median.

    Brush strokes and edges barely move a 3x3 median; single-pixel colour noise ("confetti")
    does. A photo or a painting scores about 0.001-0.003.

    Args:
        pixels: 0-1 RGB pixels ``[3, H, W]`` (or ``[N, 3, H, W]``: the mean over the images).

    Returns:
        The score, in 0-1 units of I and Q.
    """
    batch = pixels if pixels.dim() == 4 else pixels[None]
    return _deviation_from_median(chrominance(batch.float()))


def luma_noise(pixels: torch.Tensor) -> float:
    """Light and dark flecks: :func:`chroma_noise`'s measure on the luminance (Y of YIQ).

    Unlike the chrominance, a painting's luminance has texture of its own (canvas, hatching):
    compare a picture's score with its style image's, at the same size.

    Args:
        pixels: 0-1 RGB pixels ``[3, H, W]`` (or ``[N, 3, H, W]``).

    Returns:
        The score, in 0-1 units of Y.
    """
    batch = pixels if pixels.dim() == 4 else pixels[None]
    luminance = torch.einsum("j,njhw->nhw", _RGB_TO_YIQ[0].to(batch), at_least_float32(batch))
    return _deviation_from_median(luminance[:, None])


# YIQ, as in Gatys et al. 2017 "Controlling perceptual factors": luminance Y, chrominance I, Q.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)


def keep_colors(result: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Combine the luminance of ``result`` with the chrominance of ``content``.

    Args:
        result: 0-1 pixels ``[3, H, W]``.
        content: 0-1 pixels of the same size.

    Returns:
        0-1 pixels ``[3, H, W]``.
    """
    to_yiq = _RGB_TO_YIQ.to(result)
    result_yiq = torch.einsum("ij,jhw->ihw", to_yiq, result)
    content_yiq = torch.einsum("ij,jhw->ihw", to_yiq, content)
    mixed = torch.cat([result_yiq[:1], content_yiq[1:]])
    return torch.einsum("ij,jhw->ihw", torch.linalg.inv(to_yiq), mixed).clamp(0, 1)


# sRGB (D65) to CIE XYZ, for CIELAB.
_RGB_TO_XYZ = torch.tensor(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
     [0.0193339, 0.1191920, 0.9503041]]
)
_D65_WHITE = torch.tensor([0.95047, 1.0, 1.08883])


def rgb_to_lab(pixels: torch.Tensor) -> torch.Tensor:
    """CIELAB (D65) of 0-1 sRGB pixels ``[..., 3, H, W]``: L in 0-100, a and b about -128-127.

    Lab is where a distance between colours is close to the difference a person sees.
    """
    pixels = at_least_float32(pixels).clamp(0, 1)
    linear = torch.where(pixels <= 0.04045, pixels / 12.92, ((pixels + 0.055) / 1.055) ** 2.4)
    xyz = torch.einsum("ij,...jhw->...ihw", _RGB_TO_XYZ.to(linear), linear)
    xyz = xyz / _D65_WHITE.to(xyz)[:, None, None]
    epsilon, kappa = 216 / 24389, 24389 / 27
    f = torch.where(xyz > epsilon, xyz.clamp(min=epsilon) ** (1 / 3), (kappa * xyz + 16) / 116)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def color_distance(picture: torch.Tensor, reference: torch.Tensor, directions: int = 64,
                   size: int = 256, seed: int = 0) -> float:
    """How far the colours of ``picture`` are from those of ``reference``: the sliced
    Wasserstein distance between their pixels in CIELAB.

    Both are resized to ``size`` x ``size`` (so pictures of any two sizes compare, and every
    pixel weighs the same); the pixels' Lab values are projected on ``directions`` random unit
    directions (the same for both, drawn from ``seed``), each projection's values sorted, and
    the distance is the root of the mean squared difference of the sorted values over all
    directions. It compares the distributions, not the places: a picture against its own
    pixels shuffled is 0, a grey picture against a red one is large (tens of Lab units).

    Args:
        picture: 0-1 RGB pixels ``[3, H, W]``.
        reference: 0-1 RGB pixels ``[3, H', W']`` (e.g. the style image).
        directions: How many random directions.
        size: The side both are resized to.
        seed: Seeds the directions, so that distances of one study compare.

    Returns:
        The distance, in Lab units.
    """
    resized = [torch.nn.functional.interpolate(at_least_float32(image)[None], size=(size, size),
                                               mode="bilinear", antialias=True,
                                               align_corners=False)[0]
               for image in (picture, reference)]
    generator = torch.Generator().manual_seed(seed)
    axes = torch.randn(directions, 3, generator=generator)
    axes = axes / axes.norm(dim=1, keepdim=True)
    projected = [(axes @ rgb_to_lab(image).flatten(1)).sort(dim=1).values for image in resized]
    return float(((projected[0] - projected[1]) ** 2).mean().sqrt())
