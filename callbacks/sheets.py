"""Pictures laid out with titles: one row (a job's sheet) or a grid (a run's classes)."""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from datamodules.images import tensor_to_image


def make_sheet(panels: Sequence[tuple[str, torch.Tensor]], height: int = 256,
               font_size: int = 16) -> Image.Image:
    """Lay titled pictures side by side at one height.

    Args:
        panels: ``(title, 0-1 pixels [3, H, W])`` pairs, left to right.
        height: Height of every picture in the sheet.
        font_size: Size of the titles (the gaps and the title band scale with it).

    Returns:
        The sheet as an RGB image.
    """
    pictures = []
    for _, pixels in panels:
        picture = tensor_to_image(pixels)
        width = max(1, round(picture.width * height / picture.height))
        pictures.append(picture.resize((width, height), Image.Resampling.LANCZOS))
    # A title may have several lines (a class's own probability, then its judge's verdict).
    lines = max(len(title.split("\n")) for title, _ in panels)
    line_height = font_size + 4
    gap, title_height = max(2, font_size // 2), line_height * lines + 4
    sheet = Image.new("RGB", (sum(p.width for p in pictures) + gap * (len(pictures) + 1),
                              height + title_height + gap), "white")
    draw = ImageDraw.Draw(sheet)
    x = gap
    for (title, _), picture in zip(panels, pictures):
        for row, line in enumerate(title.split("\n")):
            draw.text((x, max(1, font_size // 5) + line_height * row), line, fill="black",
                      font=_font_to_fit(draw, line, picture.width, font_size))
        sheet.paste(picture, (x, title_height))
        x += picture.width + gap
    return sheet


def _font_to_fit(draw: ImageDraw.ImageDraw, text: str, width: int,
                 size: int) -> ImageFont.ImageFont:
    """The default font at ``size``, or smaller (down to 10 px) where ``text`` would overrun
    ``width`` into the next picture."""
    for smaller in range(size, 10, -1):
        font = ImageFont.load_default(size=smaller)
        if draw.textlength(text, font=font) <= width:
            return font
    return ImageFont.load_default(size=min(size, 10))


def grid_sheet(panels: Sequence[tuple[str, torch.Tensor]], columns: int = 5,
               height: int = 224, font_size: int = 16) -> Image.Image:
    """Titled pictures in rows of ``columns`` (see :func:`make_sheet`)."""
    rows = [make_sheet(panels[i : i + columns], height, font_size)
            for i in range(0, len(panels), columns)]
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height
    return sheet
