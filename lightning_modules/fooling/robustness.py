"""What happens to a picture after it is saved: real JPEG, resizing and blur, as checks.

A fooled image is judged on its saved PNG; these checks ask whether it still fools after the
everyday things that happen to pictures next. Each check is the real thing (Pillow's JPEG
encoder and resampling), not a differentiable stand-in, and maps 8-bit-exact 0-1 pixels
``[3, H, W]`` to 0-1 pixels of the same size.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from lightning_modules.errors import UserInputError


def _to_image(pixels: torch.Tensor) -> Image.Image:
    levels = pixels.detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(levels.permute(1, 2, 0).contiguous().numpy())


def _to_pixels(image: Image.Image) -> torch.Tensor:
    array = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
    return array.view(image.height, image.width, 3).permute(2, 0, 1).float() / 255


def jpeg(quality: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Encode as JPEG at ``quality`` (Pillow's encoder, 4:2:0 chroma) and decode again."""
    def apply(pixels: torch.Tensor) -> torch.Tensor:
        buffer = io.BytesIO()
        _to_image(pixels).save(buffer, format="JPEG", quality=quality)
        return _to_pixels(Image.open(io.BytesIO(buffer.getvalue())))
    return apply


def resize(scale: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Resize by ``scale`` (bicubic, antialiased) and back to the original size."""
    def apply(pixels: torch.Tensor) -> torch.Tensor:
        image = _to_image(pixels)
        small = image.resize((max(1, round(image.width * scale)),
                              max(1, round(image.height * scale))), Image.BICUBIC)
        return _to_pixels(small.resize(image.size, Image.BICUBIC))
    return apply


def blur(sigma: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Gaussian blur with standard deviation ``sigma`` pixels (Pillow's)."""
    def apply(pixels: torch.Tensor) -> torch.Tensor:
        return _to_pixels(_to_image(pixels).filter(ImageFilter.GaussianBlur(radius=sigma)))
    return apply


# The report's checks by default: each a transformation name whose fixed instance is tried.
DEFAULT_CHECKS = ("jpeg90", "jpeg75", "resize0.75", "blur1")


def check(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The fixed transformation a report check applies: ``transformation(name).check``.

    Raises:
        UserInputError: For an unknown name, or a random transformation (a shift).
    """
    found = transformation(name).check
    if found is None:
        raise UserInputError(f"Transformation {name!r} is random: it has no fixed instance to "
                             "check (checks: jpeg<q>, resize<scale>, blur<sigma>).")
    return found


def check_names(names: Sequence[str]) -> list[str]:
    """The check names, each refused in one sentence unless :func:`check` knows it."""
    for name in names:
        check(name)
    return list(names)


def fools(probabilities: torch.Tensor, target: torch.Tensor, confidence: float) -> torch.Tensor:
    """Whether each image is classified as its target with at least ``confidence``.

    Args:
        probabilities: ``[N, C]`` class probabilities.
        target: ``[N]`` target classes.
        confidence: The least p(target) that counts (0: the target only has to win).

    Returns:
        ``[N]`` bool.
    """
    p_target = probabilities.gather(1, target[:, None]).squeeze(1)
    return (probabilities.argmax(dim=1) == target) & (p_target >= confidence)


@torch.no_grad()
def robustness(saved: torch.Tensor, target: torch.Tensor,
               classify: Callable[[torch.Tensor], torch.Tensor], confidence: float = 0.0,
               checks: Sequence[str] = DEFAULT_CHECKS) -> dict[str, torch.Tensor]:
    """Which saved images still fool after each check.

    Args:
        saved: The saved pictures, 0-1 ``[N, 3, H, W]``.
        target: ``[N]`` target classes.
        classify: Maps 0-1 pixels ``[N, 3, H, W]`` to class probabilities ``[N, C]``.
        confidence: The least p(target) that counts as fooled.
        checks: Transformation names with a fixed instance (see :func:`check`).

    Returns:
        Check name -> ``[N]`` bool.
    """
    results = {}
    for name in check_names(checks):
        apply = check(name)
        changed = torch.stack([apply(picture) for picture in saved]).to(saved)
        results[name] = fools(classify(changed), target, confidence)
    return results


# --------------------------------------------------------------------------- robust attacks
@dataclass
class Transformation:
    """A transformation a robust attack trains against (expectation over transformations).

    Attributes:
        name: As given, e.g. ``jpeg75``, ``resize0.5-1.5``, ``blur1``, ``shift4``.
        sample: Applies a random instance to 0-1 pixels ``[N, 3, H, W]``, differentiably (JPEG:
            the real encoder forward, the identity backward: a straight-through estimate).
        check: The instance an image must survive before it counts as fooled (the real JPEG,
            the smallest scale, the blur itself), or None (a random shift has none).
    """

    name: str
    sample: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]
    check: Callable[[torch.Tensor], torch.Tensor] | None


def _each(function: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    return torch.stack([function(picture) for picture in pixels]).to(pixels)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _resized(pixels: torch.Tensor, scale: float) -> torch.Tensor:
    height, width = pixels.shape[-2:]
    small = F.interpolate(pixels, size=(max(1, round(height * scale)), max(1, round(width * scale))),
                          mode="bicubic", antialias=True, align_corners=False)
    return F.interpolate(small, size=(height, width), mode="bicubic", align_corners=False)


def _gaussian_blur(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=pixels.dtype, device=pixels.device)
    kernel = torch.exp(-offsets.square() / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    channels = pixels.shape[1]
    padded = F.pad(pixels, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def transformation(name: str) -> Transformation:
    """Parse a transformation name.

    Known: ``jpeg<quality>`` (1-100), ``resize<scale>`` or ``resize<low>-<high>`` (a random
    scale in the range, down and back up), ``blur<sigma>`` (Gaussian, pixels), ``shift<pixels>``
    (a random circular shift of up to that many pixels each way).

    Raises:
        UserInputError: For any other name.
    """
    number = r"(\d+(?:\.\d+)?)"
    if match := re.fullmatch(r"jpeg(\d+)", name):
        quality = int(match.group(1))
        if 1 <= quality <= 100:
            real = jpeg(quality)
            return Transformation(
                name, lambda p, g: p + (_each(real, p.detach()) - p).detach(), real)
    elif match := re.fullmatch(rf"resize{number}(?:-{number})?", name):
        low = float(match.group(1))
        high = float(match.group(2) or low)
        if 0 < low <= high <= 4:
            return Transformation(name, lambda p, g: _resized(p, _uniform(low, high, g)),
                                  resize(low))
    elif match := re.fullmatch(rf"blur{number}", name):
        sigma = float(match.group(1))
        if 0 < sigma <= 10:
            return Transformation(name, lambda p, g: _gaussian_blur(p, sigma), blur(sigma))
    elif match := re.fullmatch(r"shift(\d+)", name):
        most = int(match.group(1))

        def shift(pixels: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
            dy, dx = (int(v) for v in torch.randint(-most, most + 1, (2,), generator=generator))
            return pixels.roll((dy, dx), dims=(-2, -1))
        return Transformation(name, shift, None)
    raise UserInputError(
        f"Unknown or out-of-range transformation {name!r}: use jpeg<1-100>, resize<scale> or "
        "resize<low>-<high> (scales up to 4), blur<sigma> (up to 10) or shift<pixels>.")


def diverse_input(pixels: torch.Tensor, probability: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Input diversity (Xie et al. 2019): with ``probability``, resize the batch to a random
    side between its own and 1.1 times it (nearest), then pad it with zeros, at a random place,
    to 1.1 times its size. The network sees a slightly different picture each step, and the
    image it makes transfers better to other networks.
    """
    if probability <= 0 or float(torch.rand((), generator=generator)) >= probability:
        return pixels
    height, width = pixels.shape[-2:]
    outer_h, outer_w = round(height * 1.1), round(width * 1.1)
    side = int(torch.randint(height, outer_h + 1, (), generator=generator))
    inner_w = min(outer_w, round(width * side / height))
    resized = F.interpolate(pixels, size=(side, inner_w), mode="nearest")
    top = int(torch.randint(outer_h - side + 1, (), generator=generator))
    left = int(torch.randint(outer_w - inner_w + 1, (), generator=generator))
    return F.pad(resized, (left, outer_w - inner_w - left, top, outer_h - side - top))
