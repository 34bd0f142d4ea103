"""Is a class picture recognisable? A second network's verdict, whole and in parts, and contrast.

A class picture can reach p = 1.00 on the network that made it and still be a texture of the
class's parts in a grey fog. Three figures tell a picture a person would recognise from that:

- **whole**: the probability and rank of the class under a *second* network, one that did not
  make the picture (EfficientNet-Lite2, say: its ImageNet weights ship offline);
- **crops**: the share of random half-area crops, mirrored half the time, that the second
  network puts at top-1 for the class: a photo of a thing keeps its class in its parts;
- **contrast**: the range of the luminance between its 1st and 99th percentile (0.67 to 0.87
  for ordinary photos; Lucent-style pictures are often below 0.6).

The pictures are judged as saved: 8-bit, 0-1 pixels. No Lightning and no files here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

# Rec. 601 luma weights: the luminance of an sRGB pixel, near enough for a range.
_LUMA = (0.299, 0.587, 0.114)
DEFAULT_CROPS = 8


@dataclass
class Recognition:
    """One picture's verdict.

    Attributes:
        judge_prob: The second network's probability of the class, on the whole picture.
        judge_rank: The class's rank among the second network's scores (1: its top-1).
        crop_top1: The share of half-area crops (with flips) that it puts at top-1.
        crop_prob: Its mean probability of the class over those crops.
        contrast: The luminance's 1st-99th percentile range.
    """

    judge_prob: float
    judge_rank: int
    crop_top1: float
    crop_prob: float
    contrast: float

    def as_row(self) -> dict[str, float]:
        """The fields as a CSV row (names as the attributes)."""
        return asdict(self)


def luminance_contrast(pixels: torch.Tensor) -> torch.Tensor:
    """The luminance range between the 1st and 99th percentile of each picture, ``[N]``.

    Args:
        pixels: 0-1 RGB ``[N, 3, H, W]``.
    """
    weights = torch.tensor(_LUMA, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    luma = (pixels * weights).sum(1).flatten(1).float()
    quantiles = torch.quantile(luma, torch.tensor([0.01, 0.99], device=luma.device), dim=1)
    return quantiles[1] - quantiles[0]


def half_area_crops(pixels: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` crops of each picture with half its area, at random places, mirrored at random.

    Args:
        pixels: ``[N, C, H, W]``.
        count: Crops per picture.
        generator: Random source (CPU).

    Returns:
        ``[N * count, C, h, w]`` with ``h, w`` the sides times ``1/sqrt(2)``, picture 0's first.
    """
    _, _, height, width = pixels.shape
    crop_h, crop_w = round(height / math.sqrt(2)), round(width / math.sqrt(2))
    views = []
    for picture in pixels:
        for _ in range(count):
            top = int(torch.randint(height - crop_h + 1, (1,), generator=generator))
            left = int(torch.randint(width - crop_w + 1, (1,), generator=generator))
            view = picture[:, top : top + crop_h, left : left + crop_w]
            if bool(torch.rand(1, generator=generator) < 0.5):
                view = view.flip(-1)
            views.append(view)
    return torch.stack(views)


@torch.no_grad()
def recognise(pixels: torch.Tensor, classes: Sequence[int], judge: torch.nn.Module,
              normalize, input_size: int, crops: int = DEFAULT_CROPS, seed: int = 0,
              batch_size: int = 32) -> list[Recognition]:
    """The second network's verdict on each picture (see the module docstring).

    Args:
        pixels: 0-1 pictures ``[N, 3, H, W]``; rounded to 8 bits here, as saved.
        classes: Each picture's class.
        judge: The second network: normalized images to logits.
        normalize: Its preprocessing, 0-1 pixels to its input (``Backbone.normalize``).
        input_size: The side it sees: pictures and crops are resized to it.
        crops: Half-area crops per picture.
        seed: Seed of the crops' places and flips (the same pictures get the same crops).
        batch_size: Images per forward pass.

    Returns:
        One :class:`Recognition` per picture.
    """
    device = next((p.device for p in judge.parameters()), torch.device("cpu"))
    pixels = pixels.float().clamp(0, 1).mul(255).round().div(255).cpu()
    target = torch.as_tensor(list(classes), dtype=torch.long)

    def probabilities(images: torch.Tensor) -> torch.Tensor:
        parts = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size].to(device)
            chunk = F.interpolate(chunk, size=(input_size, input_size), mode="bilinear",
                                  align_corners=False, antialias=True)
            parts.append(judge(normalize(chunk)).float().softmax(1).cpu())
        return torch.cat(parts)

    whole = probabilities(pixels)
    chosen = whole.gather(1, target[:, None])[:, 0]
    ranks = 1 + (whole > chosen[:, None]).sum(1)
    generator = torch.Generator().manual_seed(seed)
    parts = probabilities(half_area_crops(pixels, crops, generator)).view(len(pixels), crops, -1)
    crop_chosen = parts.gather(2, target[:, None, None].expand(-1, crops, 1))[..., 0]
    crop_top1 = (parts.argmax(2) == target[:, None]).float().mean(1)
    contrast = luminance_contrast(pixels)
    return [Recognition(float(chosen[i]), int(ranks[i]), float(crop_top1[i]),
                        float(crop_chosen[i].mean()), float(contrast[i]))
            for i in range(len(pixels))]


def summary(verdicts: Sequence[Recognition]) -> Optional[dict[str, float]]:
    """The means over pictures, and the share the judge puts at top-1; None for none."""
    if not verdicts:
        return None
    count = len(verdicts)
    return {"judge_top1": sum(v.judge_rank == 1 for v in verdicts) / count,
            "judge_prob": sum(v.judge_prob for v in verdicts) / count,
            "crop_top1": sum(v.crop_top1 for v in verdicts) / count,
            "contrast": sum(v.contrast for v in verdicts) / count}
