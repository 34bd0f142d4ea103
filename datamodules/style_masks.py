"""Spatial style masks (Gatys et al. 2017): which region of the content each style paints.

One greyscale mask image per style image, in the same order: white is that style's region,
black is not, grey is in between. Each mask is stretched to the content image's size; a
position that no mask covers gets no style loss, so it stays close to the content.
"""

from __future__ import annotations

import torch
from PIL import Image

from datamodules.images import image_to_tensor, load_image
from datamodules.sources import Sources, expand_sources
from lightning_modules.errors import UserInputError


def style_mask_sources(masks: Sources, style_count: int, has_content: bool) -> list[str]:
    """The mask files, checked against the style and content images before any is read.

    Args:
        masks: ``--data.style_masks``: paths, folders or globs; None: no masks.
        style_count: The number of style images.
        has_content: Whether there is a content image (the masks mark regions of it).

    Returns:
        One path per style image, or an empty list without masks.

    Raises:
        UserInputError: Masks without content images, or not one mask per style image.
    """
    sources = expand_sources(masks, "--data.style_masks") if masks is not None else []
    if not sources:
        return []
    if not has_content:
        raise UserInputError("style_masks mark regions of the content image, but there is no "
                             "content image (--data.content).")
    if len(sources) != style_count:
        raise UserInputError(f"style_masks has {len(sources)} mask"
                             f"{'' if len(sources) == 1 else 's'} for {style_count} style "
                             f"image{'' if style_count == 1 else 's'}; give one per style image, "
                             "in the same order.")
    return sources


def load_style_mask(source: str) -> Image.Image:
    """A mask image, read as greyscale (``"L"``); alpha is composited over white, as elsewhere."""
    return load_image(source).convert("L")


def mask_tensor(mask: Image.Image, size: tuple[int, int], source: str) -> torch.Tensor:
    """A mask resized to ``(H, W)`` as 0-1 weights ``[1, H, W]``.

    Raises:
        UserInputError: If the resized mask is black everywhere (an empty region).
    """
    height, width = size
    resized = mask.resize((width, height), Image.Resampling.BILINEAR).convert("RGB")
    weights = image_to_tensor(resized)[:1]
    if not float(weights.max()) > 0:
        raise UserInputError(f"Style mask {source} is black everywhere at {width} x {height} px: "
                             "it gives its style no region (white marks the region).")
    return weights
