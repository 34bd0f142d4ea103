"""Content and style images in, style-transfer jobs out."""

from __future__ import annotations

import glob
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from datamodules.images import SAMPLE_PREFIX, image_to_tensor, load_image, resize_shorter_side
from lightning_modules.errors import UserInputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}

Sources = Union[str, Sequence[str], None]


@dataclass
class StyleJob:
    """One picture to make: a content image (or none) in the blend of one or more styles.

    Attributes:
        name: File-name-safe name of the job, unique within a run.
        content: 0-1 pixels ``[3, H, W]``, or None (texture synthesis).
        styles: 0-1 pixels of each style image, each at its own size.
        style_blend_weights: Weight of each style's Gram matrices; they sum to 1.
        size: ``(H, W)`` of the image to optimize.
    """

    name: str
    content: Optional[torch.Tensor]
    styles: list[torch.Tensor] = field(default_factory=list)
    style_blend_weights: list[float] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)


class StepIndices(IterableDataset):
    """Yields 0, 1, 2, ... forever: each item is one optimization step; ``max_steps`` ends it."""

    def __iter__(self) -> Iterator[int]:
        return itertools.count()


def expand_sources(sources: Sources) -> list[str]:
    """Turn a path, a list of paths, folders (their images, sorted) and globs into paths.

    Args:
        sources: A path, ``sample:NAME``, a folder, a glob pattern, or a list of these.

    Returns:
        The image sources in order.
    """
    if sources is None:
        return []
    items = [sources] if isinstance(sources, (str, Path)) else list(sources)
    expanded: list[str] = []
    for item in map(str, items):
        if item.startswith(SAMPLE_PREFIX):
            expanded.append(item)
        elif Path(item).is_dir():
            found = sorted(str(p) for p in Path(item).iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserInputError(f"Folder {item} holds no image files.")
            expanded += found
        elif glob.has_magic(item):
            found = sorted(glob.glob(item))
            if not found:
                raise UserInputError(f"No file matches {item}.")
            expanded += found
        else:
            expanded.append(item)
    return expanded


def source_stem(source: str) -> str:
    """A short name for an image source, e.g. ``chelsea`` for ``sample:chelsea`` or a path."""
    if source.startswith(SAMPLE_PREFIX):
        return source[len(SAMPLE_PREFIX):]
    return Path(source).stem


def check_size(name: str, value: Optional[float]) -> None:
    """Raise a one-sentence error unless ``value`` is None or a positive number."""
    if value is not None and not value > 0:
        raise UserInputError(f"{name} must be positive, got {value}.")


class StyleTransferData(pl.LightningDataModule):
    """Content and style images for style transfer, feature inversion and texture synthesis.

    Every content image is one job, drawn in the blend of all style images. Sizes are the
    shorter side in pixels, as in the homework; aspect ratios are kept.

    Args:
        content: Content image(s): paths, folders, globs or built-in samples (``sample:NAME``,
            e.g. ``sample:chelsea``); None for texture synthesis.
        style: Style image(s), same forms; None for feature inversion.
        style_blend_weights: Relative weight of each style image (default: equal); normalized
            to sum to 1.
        image_size: Shorter side of the content image and of the result.
        style_size: Shorter side of the style images (default: ``image_size``).
        style_scale: Multiplies ``style_size``: smaller values give finer style features.
    """

    def __init__(
        self,
        content: Sources = "sample:chelsea",
        style: Sources = "sample:immunohistochemistry",
        style_blend_weights: Optional[list[float]] = None,
        image_size: int = 256,
        style_size: Optional[int] = None,
        style_scale: float = 1.0,
    ) -> None:
        super().__init__()
        check_size("image_size", image_size)
        check_size("style_size", style_size)
        check_size("style_scale", style_scale)
        self.content = content
        self.style = style
        self.style_blend_weights = style_blend_weights
        self.image_size = image_size
        self.style_size = style_size
        self.style_scale = style_scale
        self.jobs: list[StyleJob] = []

    def _load(self, source: str, size: int) -> torch.Tensor:
        return image_to_tensor(resize_shorter_side(load_image(source), size))

    def setup(self, stage: str) -> None:
        if self.jobs:
            return
        content_sources = expand_sources(self.content)
        style_sources = expand_sources(self.style)
        if not content_sources and not style_sources:
            raise UserInputError("Give at least one content (--data.content) or style image "
                                 "(--data.style).")
        blend = self.style_blend_weights or [1.0] * len(style_sources)
        if len(blend) != len(style_sources):
            raise UserInputError(f"style_blend_weights has {len(blend)} values for "
                                 f"{len(style_sources)} style images.")
        if any(not w >= 0 for w in blend) or (style_sources and sum(blend) <= 0):
            raise UserInputError("style_blend_weights must be non-negative and not all zero.")
        blend = [w / sum(blend) for w in blend] if style_sources else []
        style_side = round((self.style_size or self.image_size) * self.style_scale)
        check_size("style_size * style_scale", style_side)
        styles = [self._load(s, style_side) for s in style_sources]
        style_name = "+".join(source_stem(s) for s in style_sources)
        if not content_sources:
            # Texture synthesis: the first style's aspect ratio at image_size.
            _, h, w = self._load(style_sources[0], self.image_size).shape
            self.jobs = [StyleJob(style_name, None, styles, blend, (h, w))]
            return
        names: set[str] = set()
        for source in content_sources:
            content = self._load(source, self.image_size)
            name = "__".join(filter(None, [source_stem(source), style_name]))
            while name in names:  # two photos with one stem: keep both
                name += "_"
            names.add(name)
            self.jobs.append(StyleJob(name, content, styles, blend, tuple(content.shape[1:])))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(StepIndices(), batch_size=None)
