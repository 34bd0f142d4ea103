"""Neural style transfer (Gatys et al.) and its two halves: feature inversion and texture synthesis.

One implementation serves all three. ``StyleTransfer`` matches the content features of a photo
and the Gram matrices of one or more style images, with a total-variation smoothness term.
``FeatureInversion`` keeps only the content and TV terms and starts from noise (reconstructing
an image from its features); ``TextureSynthesis`` keeps only the style and TV terms and starts
from noise (a new texture with the style's statistics).

Jobs come from ``datamodules.StyleTransferData``: each job is a content image (or none) and a
list of style images with blend weights; the blended Gram matrices are the style target, as in
jcjohnson/neural-style.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal, Optional, Sequence

import torch

from lightning_modules.base import ImageOptimization, ImageSlot, check_non_negative
from lightning_modules.errors import UserInputError
from lightning_modules.losses import content_loss, gram_matrix, style_loss, tv_loss

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


def _as_list(value: float | Sequence[float], count: int, name: str) -> list[float]:
    values = [float(value)] * count if isinstance(value, (int, float)) else list(value)
    if len(values) != count:
        raise UserInputError(f"{name} has {len(values)} values but there are {count} layers.")
    return values


class StyleTransfer(ImageOptimization):
    """Draw the content of a photo in the style of one or more images.

    Args:
        content_layers: Layers whose features the result must share with the content image.
        content_weight: Weight of the content loss, one for all content layers or one each.
        style_layers: Layers whose Gram matrices the result must share with the style.
        style_weights: Weight of each style layer (same count as ``style_layers``).
        tv_weight: Weight of the total-variation (smoothness) loss.
        init: Starting image: ``"content"``, ``"noise"``, or the path of an image file.
        preserve_colors: Keep the content's colours: the result's luminance is combined with
            the content's chrominance (luminance-only transfer, Gatys et al. 2017).
        **kwargs: Backbone, optimizer and clamping options of
            :class:`~lightning_modules.base.ImageOptimization`.
    """

    uses_content = True
    uses_style = True

    def __init__(
        self,
        content_layers: Sequence[int] = (4,),
        content_weight: float | Sequence[float] = 1.0,
        style_layers: Sequence[int] = (1, 2, 3, 4),
        style_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        tv_weight: float = 0.0,
        init: str = "content",
        preserve_colors: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.content_layers = list(content_layers) if self.uses_content else []
        self.style_layers = list(style_layers) if self.uses_style else []
        # A term the technique does not use keeps no weights, so its defaults never clash.
        self.content_weights = (_as_list(content_weight, len(self.content_layers), "content_weight")
                                if self.uses_content else [])
        self.style_weights = (_as_list(style_weights, len(self.style_layers), "style_weights")
                              if self.uses_style else [])
        check_non_negative("content_weight", self.content_weights)
        check_non_negative("style_weights", self.style_weights)
        check_non_negative("tv_weight", tv_weight)
        self.backbone.check_layers(self.content_layers, "content layer")
        self.backbone.check_layers(self.style_layers, "style layer")
        if self.uses_content and not self.content_layers:
            raise UserInputError("content_layers must name at least one layer.")
        if self.uses_style and not self.style_layers:
            raise UserInputError("style_layers must name at least one layer.")
        self.tv_weight = tv_weight
        self.init = init
        self.preserve_colors = preserve_colors
        self.jobs: list[Any] = []
        self._content_targets: list[list[torch.Tensor]] = []
        self._style_targets: list[list[torch.Tensor]] = []

    # ----------------------------------------------------------------- images
    def create_images(self) -> list[torch.Tensor]:
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "jobs"):
            raise UserInputError(f"{type(self).__name__} needs a StyleTransferData datamodule.")
        self.jobs = self.my_jobs(datamodule.jobs, [job.size for job in datamodule.jobs])
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, job in enumerate(self.jobs):
            if self.uses_content and job.content is None:
                raise UserInputError(f"{type(self).__name__} needs a content image (--data.content).")
            if self.uses_style and not job.styles:
                raise UserInputError(f"{type(self).__name__} needs a style image (--data.style).")
            by_size[job.size].append(index)
        groups = []
        self.slots = [None] * len(self.jobs)  # type: ignore[list-item]
        for group, indices in enumerate(by_size.values()):
            rows = []
            for row, index in enumerate(indices):
                self.slots[index] = ImageSlot(self.jobs[index].name, group, row)
                rows.append(self._starting_pixels(index))
            groups.append(self.backbone.normalize(torch.stack(rows)))
        return groups

    def _starting_pixels(self, index: int) -> torch.Tensor:
        job = self.jobs[index]
        height, width = job.size
        init = self.init if self.uses_content else ("noise" if self.init == "content" else self.init)
        if init == "content":
            return job.content.clone()
        if init == "noise":
            # One generator per job: the same job starts the same way however jobs are split.
            seed = torch.initial_seed() + self.job_indices[index]
            generator = torch.Generator().manual_seed(seed)
            return torch.rand(3, height, width, generator=generator)
        from datamodules.images import image_to_tensor, load_image

        image = load_image(init).convert("RGB").resize((width, height))
        return image_to_tensor(image)

    # ----------------------------------------------------------------- losses
    def prepare_targets(self) -> None:
        self._content_targets, self._style_targets = [], []
        for group, images in enumerate(self.images):
            indices = [i for i, slot in enumerate(self.slots) if slot.group == group]
            if self.uses_content:
                contents = torch.stack([self.jobs[i].content for i in indices]).to(self.device)
                self._content_targets.append(
                    self.backbone.extract(self.backbone.normalize(contents), self.content_layers)
                )
            if self.uses_style:
                per_job = [self._blended_grams(self.jobs[i]) for i in indices]
                self._style_targets.append([torch.stack(layer) for layer in zip(*per_job)])

    def _blended_grams(self, job: Any) -> list[torch.Tensor]:
        """The style target of a job: blend-weighted Gram matrices of its style images."""
        blended = None
        for style, weight in zip(job.styles, job.style_blend_weights):
            pixels = style.to(self.device)[None]
            feats = self.backbone.extract(self.backbone.normalize(pixels), self.style_layers)
            grams = [weight * gram_matrix(f)[0] for f in feats]
            blended = grams if blended is None else [a + b for a, b in zip(blended, grams)]
        return blended

    def loss_terms(self, group: int, images: torch.Tensor) -> dict[str, torch.Tensor]:
        layers = sorted(set(self.content_layers + self.style_layers))
        feats = dict(zip(layers, self.backbone.extract(images, layers)))
        terms = {}
        if self.uses_content:
            terms["content"] = sum(
                content_loss(weight, feats[layer], target)
                for layer, weight, target in zip(
                    self.content_layers, self.content_weights, self._content_targets[group]
                )
            )
        if self.uses_style:
            terms["style"] = style_loss(feats, self.style_layers, self._style_targets[group],
                                        self.style_weights)
        terms["tv"] = tv_loss(images, self.tv_weight)
        return terms

    # ----------------------------------------------------------------- results
    def result_pixels(self, index: int) -> torch.Tensor:
        pixels = super().result_pixels(index)
        content = self.jobs[index].content if self.jobs else None
        if self.preserve_colors and content is not None:
            pixels = keep_colors(pixels, content.cpu())
        return pixels

    def sheet_panels(self, index: int) -> list[tuple[str, torch.Tensor]]:
        job = self.jobs[index]
        panels = []
        if job.content is not None and self.uses_content:
            panels.append(("content", job.content))
        if self.uses_style:
            panels += [(f"style {k + 1}" if len(job.styles) > 1 else "style", s)
                       for k, s in enumerate(job.styles)]
        return panels + [("result", self.result_pixels(index))]


class FeatureInversion(StyleTransfer):
    """Reconstruct an image from its features at the content layers (content + TV loss).

    Starts from noise by default. Takes the same options as :class:`StyleTransfer`; the style
    options are ignored.
    """

    uses_style = False

    def __init__(self, init: str = "noise", **kwargs: Any) -> None:
        super().__init__(init=init, **kwargs)


class TextureSynthesis(StyleTransfer):
    """Synthesize a texture with the Gram statistics of the style image(s) (style + TV loss).

    Starts from noise. Takes the same options as :class:`StyleTransfer`; the content options are
    ignored.
    """

    uses_content = False

    def __init__(self, init: str = "noise", **kwargs: Any) -> None:
        super().__init__(init=init, **kwargs)
