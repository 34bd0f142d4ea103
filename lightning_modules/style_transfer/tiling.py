"""Seamless textures: how visible an image's seam is when tiled, and the tiling itself.

No Lightning and no files here: this is what a notebook imports. A tileable run
(``tileable=True`` on :class:`~lightning_modules.StyleTransfer` and its subclasses) pads the
backbone circularly and wraps the TV loss around; :func:`seam_ratio` measures the result.
"""

from __future__ import annotations

import torch


def seam_ratio(pixels: torch.Tensor) -> torch.Tensor:
    """How much larger the steps across the tiling seam are than the steps inside the image.

    The mean absolute difference between the last and first row and between the last and first
    column (the neighbours that meet when the image is tiled), over the mean absolute difference
    between neighbouring rows and columns inside the image. Near 1: the seam is as smooth as
    the rest of the image, the tiling shows no edge.

    Args:
        pixels: Images ``[N, C, H, W]`` or ``[C, H, W]``, at least 2 x 2.

    Returns:
        ``[N]`` ratios (a 0-d tensor for a single ``[C, H, W]`` image).
    """
    single = pixels.dim() == 3
    images = (pixels[None] if single else pixels).float()
    seam = torch.cat([(images[:, :, -1, :] - images[:, :, 0, :]).abs().flatten(1),
                      (images[:, :, :, -1] - images[:, :, :, 0]).abs().flatten(1)], 1)
    inside = torch.cat([(images[:, :, 1:, :] - images[:, :, :-1, :]).abs().flatten(1),
                        (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().flatten(1)], 1)
    ratio = seam.mean(1) / inside.mean(1).clamp_min(1e-12)
    return ratio[0] if single else ratio


def tile(pixels: torch.Tensor, rows: int = 2, columns: int = 2) -> torch.Tensor:
    """The image repeated ``rows`` times down and ``columns`` times across.

    Args:
        pixels: An image ``[C, H, W]`` (or images ``[N, C, H, W]``, each tiled).
        rows: Copies down.
        columns: Copies across.

    Returns:
        ``[C, rows * H, columns * W]`` (or ``[N, C, rows * H, columns * W]``).
    """
    return pixels.repeat(*([1] * (pixels.dim() - 2)), rows, columns)
