"""Pictures laid out with titles: one row (a job's sheet) or a grid (a run's classes)."""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from datamodules.images import tensor_to_image


def make_sheet(panels: Sequence[tuple[str, torch.Tensor]], height: int = 256) -> Image.Image:
    """Lay titled pictures side by side at one height.

    Args:
        panels: ``(title, 0-1 pixels [3, H, W])`` pairs, left to right.
        height: Height of every picture in the sheet.

    Returns:
        The sheet as an RGB image.
    """
    pictures = []
    for _, pixels in panels:
        picture = tensor_to_image(pixels)
        width = max(1, round(picture.width * height / picture.height))
        pictures.append(picture.resize((width, height), Image.Resampling.LANCZOS))
    gap, line_height = 8, 20
    lines = max(len(title.split("\n")) for title, _ in panels)
    title_height = 4 + line_height * lines
    sheet = Image.new("RGB", (sum(p.width for p in pictures) + gap * (len(pictures) + 1),
                              height + title_height + gap), "white")
    draw = ImageDraw.Draw(sheet)
    x = gap
    for (title, _), picture in zip(panels, pictures):
        for row, line in enumerate(title.split("\n")):
            draw.text((x, 3 + line_height * row), line, fill="black",
                      font=_font_to_fit(draw, line, picture.width))
        sheet.paste(picture, (x, title_height))
        x += picture.width + gap
    return sheet


def _font_to_fit(draw: ImageDraw.ImageDraw, text: str, width: int) -> ImageFont.ImageFont:
    """The default font at 16 px, or smaller (down to 10) where ``text`` would overrun
    ``width`` into the next picture."""
    for size in range(16, 10, -1):
        font = ImageFont.load_default(size=size)
        if draw.textlength(text, font=font) <= width:
            return font
    return ImageFont.load_default(size=10)


def grid_sheet(panels: Sequence[tuple[str, torch.Tensor]], columns: int = 5,
               height: int = 224) -> Image.Image:
    """Titled pictures in rows of ``columns`` (see :func:`make_sheet`)."""
    rows = [make_sheet(panels[i : i + columns], height) for i in range(0, len(panels), columns)]
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height
    return sheet
