"""Content and style images in, style-transfer jobs out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import torch

from datamodules.images import (
    READ_BYTES_PER_PIXEL,
    image_to_tensor,
    load_image,
    resize_shorter_side,
)
from datamodules.jobs import JobData, StepLoader  # noqa: F401 - StepLoader's old home
from datamodules.sources import (IMAGE_SUFFIXES, Sources, expand_sources,  # noqa: F401
                                 is_missing_file, source_stem)
from datamodules.style_masks import load_style_mask, mask_tensor, style_mask_sources
from lightning_modules.errors import UserInputError, check_image_side, check_positive
from lightning_modules.naming import unique_names


@dataclass
class StyleJob:
    """One picture to make: a content image (or none) in the blend of one or more styles.

    Attributes:
        name: File-name-safe name of the job, unique within a run.
        content: 0-1 pixels ``[3, H, W]``, or None (texture synthesis).
        styles: 0-1 pixels of each style image, each at its own size.
        style_blend_weights: Weight of each style's Gram matrices; they sum to 1.
        size: ``(H, W)`` of the image to optimize.
        style_masks: 0-1 weights ``[1, H, W]`` of each style's region, at ``size``; empty: every
            style everywhere.
    """

    name: str
    content: Optional[torch.Tensor]
    styles: list[torch.Tensor] = field(default_factory=list)
    style_blend_weights: list[float] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)
    style_masks: list[torch.Tensor] = field(default_factory=list)


def blend_weights(weights: Optional[list[float]], count: int) -> list[float]:
    """The blend weights of ``count`` style images (equal when None), summing to 1.

    Raises:
        UserInputError: For another count of weights, a negative one, or all zero.
    """
    weights = weights or [1.0] * count
    if len(weights) != count:
        raise UserInputError(f"style_blend_weights has {len(weights)} values for {count} style "
                             "images.")
    if any(not w >= 0 for w in weights) or (count and sum(weights) <= 0):
        raise UserInputError("style_blend_weights must be non-negative and not all zero.")
    return [w / sum(weights) for w in weights] if count else []


class StyleTransferData(JobData):
    """Content and style images for style transfer, feature inversion and texture synthesis.

    With ``style_mode="blend"`` every content image is one job, drawn in the blend of all style
    images (``<content>__<style1>+<style2>``); with ``"each"`` every content and style pair is a
    job (``<content>__<style>``). Sizes are the shorter side in pixels, as in the homework;
    aspect ratios are kept.

    Args:
        content: Content image(s): paths, folders, globs or built-in samples (``sample:NAME``,
            e.g. ``sample:chelsea``); None for texture synthesis.
        style: Style image(s), same forms; None for feature inversion.
        style_blend_weights: Relative weight of each style image (default: equal); normalized
            to sum to 1.
        image_size: Shorter side of the content image and of the result.
        style_size: Shorter side of the style images (default: ``image_size``).
        style_scale: Multiplies ``style_size``: smaller values give finer style features.
        style_mode: ``"blend"`` (one job per content image, all styles blended) or ``"each"``
            (one job per content and style pair; texture synthesis: one per style).
        batch_size: The most jobs one process optimizes at once, in one ``[B, 3, H, W]``
            parameter of one image size; the rest wait for the next chunk, each job getting
            ``trainer.max_steps`` steps. None: all jobs at once.
        style_masks: One greyscale mask image per style image, in the same order (spatial
            control, Gatys et al. 2017): white marks where that style paints, stretched to each
            content image's size. With masks, ``"blend"`` means each style in its own region
            (``style_blend_weights`` then weigh the regions' losses; a position no mask covers
            gets no style loss and stays close to the content); with ``"each"``, the job of
            style ``k`` paints it only in mask ``k``'s region. Needs content images.
    """

    def __init__(
        self,
        content: Sources = "sample:chelsea",
        style: Sources = "sample:immunohistochemistry",
        style_blend_weights: Optional[list[float]] = None,
        image_size: int = 256,
        style_size: Optional[int] = None,
        style_scale: float = 1.0,
        style_mode: Literal["blend", "each"] = "blend",
        batch_size: Optional[int] = None,
        style_masks: Sources = None,
    ) -> None:
        super().__init__(batch_size)
        check_positive("image_size", image_size)
        check_positive("style_size", style_size)
        check_positive("style_scale", style_scale)
        check_image_side("image_size", image_size, READ_BYTES_PER_PIXEL)
        check_image_side("style_size", style_size, READ_BYTES_PER_PIXEL)
        if style_mode not in ("blend", "each"):
            raise UserInputError(f"Unknown style_mode '{style_mode}'; choose 'blend' or 'each'.")
        if style_mode == "each" and style_blend_weights is not None:
            raise UserInputError("style_blend_weights needs style_mode 'blend'.")
        self.content = content
        self.style = style
        self.style_blend_weights = style_blend_weights
        self.image_size = image_size
        self.style_size = style_size
        self.style_scale = style_scale
        self.style_mode = style_mode
        self.style_masks = style_masks

    def _load(self, source: str, size: int) -> torch.Tensor:
        return image_to_tensor(resize_shorter_side(load_image(source), size, source))

    def setup(self, stage: str) -> None:
        if self.jobs:
            return
        content_sources = expand_sources(self.content, "--data.content")
        style_sources = expand_sources(self.style, "--data.style")
        if not content_sources and not style_sources:
            raise UserInputError("Give at least one content (--data.content) or style image "
                                 "(--data.style).")
        missing = [(source, option) for sources, option in ((content_sources, "--data.content"),
                                                            (style_sources, "--data.style"))
                   for source in sources if is_missing_file(source)]
        if len(missing) > 1:
            # Every missing file at once, not one per attempt.
            raise UserInputError("Image files not found: " + ", ".join(
                f"{source} ({option})" for source, option in missing) + ".")
        blend = blend_weights(self.style_blend_weights, len(style_sources))
        mask_sources = style_mask_sources(self.style_masks, len(style_sources),
                                          bool(content_sources))
        masks = [load_style_mask(source) for source in mask_sources]
        style_side = round((self.style_size or self.image_size) * self.style_scale)
        check_positive("style_size * style_scale", style_side)
        styles = [self._load(s, style_side) for s in style_sources]
        # Each style set is (name part, style images, blend weights, mask positions).
        if self.style_mode == "each" and style_sources:
            style_sets = [(source_stem(source), [style], [1.0], [k])
                          for k, (source, style) in enumerate(zip(style_sources, styles))]
        else:
            style_sets = [("+".join(source_stem(s) for s in style_sources), styles, blend,
                           list(range(len(styles))))]
        jobs: list[StyleJob] = []
        if not content_sources:
            # Texture synthesis: the first style's aspect ratio at image_size.
            for (style_name, style_images, weights, _), source in zip(style_sets, style_sources):
                _, h, w = self._load(source, self.image_size).shape
                jobs.append(StyleJob(style_name, None, style_images, weights, (h, w)))
        for source in content_sources:
            content = self._load(source, self.image_size)
            size = tuple(content.shape[1:])
            resized = {k: mask_tensor(masks[k], size, mask_sources[k]) for k in range(len(masks))}
            for style_name, style_images, weights, positions in style_sets:
                name = "__".join(filter(None, [source_stem(source), style_name]))
                jobs.append(StyleJob(name, content, style_images, weights, size,
                                     [resized[k] for k in positions if k in resized]))
        # Two photos with one stem: keep both.
        for job, name in zip(jobs, unique_names(job.name for job in jobs)):
            job.name = name
        self.jobs = jobs
