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

from typing import Any, Hashable, Literal, Optional, Sequence, Union

import torch

from lightning_modules.errors import (UserInputError, check_choice, check_learning_rate,
                                      check_non_negative)
from lightning_modules.image_optimization.module import ImageOptimization
from lightning_modules.image_optimization.parameterizations import (PixelImage,
                                                                    make_parameterization)
from lightning_modules.image_optimization.transforms import random_shift
from lightning_modules.style_transfer.functional import (
    chrominance,
    content_loss,
    keep_colors,
    tv_loss,
)
from lightning_modules.style_transfer.scales import ScalePlan, resize_pixels
from lightning_modules.style_transfer.style_losses import (
    STYLE_LOSSES,
    blended_targets,
    layered_style_loss,
    make_style_loss,
    masked_style_loss,
    style_regions,
)

def _as_list(value: float | Sequence[float], count: int, name: str) -> list[float]:
    values = [float(value)] * count if isinstance(value, (int, float)) else list(value)
    if len(values) != count:
        raise UserInputError(f"{name} has {len(values)} values but there are {count} layers.")
    return values


class StyleTransfer(ImageOptimization):
    """Draw the content of a photo in the style of one or more images.

    Args:
        content_layers: Layers whose features the result must share with the content image, by
            index or by name (``python cli.py layers --model.backbone NAME`` lists them).
        content_weight: Weight of the content loss, one for all content layers or one each.
        style_layers: Layers whose Gram matrices the result must share with the style (index or
            name).
        style_weights: Weight of each style layer (same count as ``style_layers``).
        style_loss: The style statistics matched: ``"gram"`` (Gatys et al., the homework's),
            ``"mean_std"`` (per-channel mean and std, AdaIN's) or ``"sliced_wasserstein"``
            (sorted random projections, Heitz et al. 2021); see
            :mod:`~lightning_modules.style_transfer.style_losses`. With style masks
            (``--data.style_masks``) each style is matched in its own region.
        tv_weight: Weight of the total-variation (smoothness) loss.
        chroma_tv_weight: Weight of the total variation of the chrominance (I and Q of YIQ, in
            0-1 pixel units) alone: it removes single-pixel colour noise ("confetti") without
            blurring the luminance, where brush strokes and edges live.
        loss_reduction: ``"mean"``: the content and TV losses are means over their values, so
            one set of weights serves every image size (and every scale); ``"sum"``: the
            homework's sums, which grow with the number of pixels.
        shift: Each step the backbone sees the image shifted by a random whole number of pixels
            up to ``shift`` each way (transformation robustness): patterns that only the
            network's stride grid sees cannot settle. 0: off.
        scales: Coarse to fine: the shorter sides the picture is optimized at in turn, each
            starting from the previous result upsampled; the last is always the image size
            (``image_size``), added if missing. ``"auto"``: a ladder of sides growing by
            ``sqrt(2)`` from 128 px (see :class:`~lightning_modules.style_transfer.scales.ScalePlan`).
            Style images are resized with the picture, so brush strokes keep their size
            relative to it. None: the image size only.
        scale_steps: Steps at each scale (they sum to ``trainer.max_steps``); None: split
            equally, the remainder to the coarsest scales.
        init: Starting image: ``"content"``, ``"noise"``, or the path of an image file.
        noise_scale: The spread of the ``"noise"`` start: uniform in ``0.5 ± noise_scale / 2``
            (1: the whole 0-1 range, the homework's). Small values start near grey, so no
            grain of the start survives into the picture.
        preserve_colors: Keep the content's colours: the result's luminance is combined with
            the content's chrominance (luminance-only transfer, Gatys et al. 2017).
        optimizer: ``"adam"`` or ``"lbfgs"`` (each trainer step is one L-BFGS iteration).
        lr: Learning rate.
        lr_drop_step: Step at which the learning rate drops to ``lr_drop_to`` (None: never).
        lr_drop_to: The learning rate after ``lr_drop_step``.
        restart_optimizer_at_drop: Forget Adam's moments at the drop, as the homework does by
            creating a new optimizer.
        clamp: Before each step, clamp the image to ``[-clamp, clamp]`` in normalized units (the
            homework uses 1.5); None clamps to the valid pixel range of the backbone.
        clamp_until: Clamp only before steps ``< clamp_until`` (None: every step).
        tileable: Make a seamless texture: the backbone pads circularly (it sees the image as a
            torus) and the TV loss wraps around, so the result tiles without a visible edge.
        parameterization: What the optimizer moves: ``"pixel"`` (the picture itself, the
            homework's) or ``"fourier"`` (the decorrelated-colour spectrum of Olah et al. 2017,
            rendered through a sigmoid). The spectrum preconditions the steps: low frequencies,
            which a pixel step barely moves, move as fast as high ones. Feature inversion
            reaches a far closer picture in the same steps with it. ``clamp`` is for pixels only.
        decay_power: How fast the Fourier spectrum's scale falls with frequency.
        **kwargs: ``backbone``, ``weights``, ``channels_last`` and ``fast`` of
            :class:`~lightning_modules.image_optimization.ImageOptimization`.
    """

    data_name = "a StyleTransferData datamodule (data: class_path: datamodules.StyleTransferData)"

    uses_content = True
    uses_style = True

    def __init__(
        self,
        content_layers: Sequence[Union[int, str]] = (4,),
        content_weight: float | Sequence[float] = 1.0,
        style_layers: Sequence[Union[int, str]] = (1, 2, 3, 4),
        style_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        style_loss: str = "gram",
        tv_weight: float = 0.0,
        chroma_tv_weight: float = 0.0,
        loss_reduction: Literal["mean", "sum"] = "mean",
        shift: int = 0,
        scales: Union[Sequence[int], Literal["auto"], None] = None,
        scale_steps: Optional[Sequence[int]] = None,
        init: str = "content",
        noise_scale: float = 1.0,
        preserve_colors: bool = False,
        optimizer: Literal["adam", "lbfgs"] = "adam",
        lr: float = 0.05,
        lr_drop_step: Optional[int] = None,
        lr_drop_to: Optional[float] = None,
        restart_optimizer_at_drop: bool = False,
        clamp: Optional[float] = None,
        clamp_until: Optional[int] = None,
        tileable: bool = False,
        parameterization: Literal["pixel", "fourier"] = "pixel",
        decay_power: float = 1.0,
        **kwargs: Any,
    ) -> None:
        check_choice("optimizer", optimizer, ("adam", "lbfgs"))
        check_choice("loss_reduction", loss_reduction, ("mean", "sum"))
        if not 0 < noise_scale <= 1:
            raise UserInputError(f"noise_scale must be above 0 and at most 1, got {noise_scale}.")
        check_non_negative("chroma_tv_weight", chroma_tv_weight)
        if not isinstance(shift, int) or shift < 0:
            raise UserInputError(f"shift must be a whole number of pixels, 0 or more, got {shift}.")
        self.scale_plan = ScalePlan(scales, scale_steps)
        check_choice("style_loss", style_loss, STYLE_LOSSES)
        check_learning_rate("lr", lr)
        check_learning_rate("lr_drop_to", lr_drop_to)
        if clamp is not None and not clamp > 0:
            raise UserInputError(f"clamp must be positive (or null for the pixel range), got {clamp}.")
        if not decay_power > 0:
            raise UserInputError(f"decay_power must be positive, got {decay_power}.")
        if parameterization != "pixel" and (clamp is not None or clamp_until is not None):
            raise UserInputError("clamp and clamp_until are for the pixel parameterization; a "
                                 f"{parameterization} picture is always within the pixel range.")
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.parameterization = make_parameterization(parameterization, decay_power=decay_power)
        self.optimizer_name = optimizer
        self.lr = lr
        self.lr_drop_step = lr_drop_step
        self.lr_drop_to = lr_drop_to
        self.restart_optimizer_at_drop = restart_optimizer_at_drop
        self.clamp = clamp
        self.clamp_until = clamp_until
        self.tileable = tileable
        if tileable:  # a circular copy: a backbone shared with other modules stays as it was
            self.backbone = self.backbone.with_circular_padding().use_recomputation(
                self.recompute_features)
        # By index or by name ("blocks.3", "layer3.1"): indices from here on.
        self.content_layers = (self.backbone.layer_indices(content_layers, "content layer")
                               if self.uses_content else [])
        self.style_layers = (self.backbone.layer_indices(style_layers, "style layer")
                             if self.uses_style else [])
        # A term the technique does not use keeps no weights, so its defaults never clash.
        self.content_weights = (_as_list(content_weight, len(self.content_layers), "content_weight")
                                if self.uses_content else [])
        self.style_weights = (_as_list(style_weights, len(self.style_layers), "style_weights")
                              if self.uses_style else [])
        check_non_negative("content_weight", self.content_weights)
        check_non_negative("style_weights", self.style_weights)
        check_non_negative("tv_weight", tv_weight)
        if self.style_layers:
            self.backbone.check_spatial(self.style_layers, "style layer")
        if self.uses_content and not self.content_layers:
            raise UserInputError("content_layers must name at least one layer.")
        if self.uses_style and not self.style_layers:
            raise UserInputError("style_layers must name at least one layer.")
        self.tv_weight = tv_weight
        self.chroma_tv_weight = chroma_tv_weight
        self.loss_reduction = loss_reduction
        self.shift = shift
        self.scale_index = 0  # the scale the images are at now
        self._restored_scale: Optional[int] = None
        self.style_criterion = make_style_loss(style_loss)
        self.init = init
        self.noise_scale = noise_scale
        self.preserve_colors = preserve_colors
        self._content_targets: list[list[torch.Tensor]] = []
        self._style_targets: list[list[Any]] = []
        # Per group: None, or with style masks (per region per layer targets, masks, weights).
        self._style_regions: list[Optional[tuple[Any, torch.Tensor, torch.Tensor]]] = []

    # ----------------------------------------------------------------- jobs and images
    def job_size(self, job: Any) -> Hashable:
        return job.size

    def make_jobs(self, items: Sequence[Any]) -> list[Any]:
        for job in items:
            if self.uses_content and job.content is None:
                raise UserInputError(f"{type(self).__name__} needs a content image (--data.content).")
            if self.uses_style and not job.styles:
                raise UserInputError(f"{type(self).__name__} needs a style image (--data.style).")
        return list(items)

    def create_images(self, jobs: list[Any]) -> list[torch.Tensor]:
        # A fresh chunk starts at the coarsest scale; a restored one at its checkpoint's scale.
        self.scale_index = self._restored_scale or 0
        self._restored_scale = None
        return [self._encode(torch.stack([self._starting_pixels(i) for i in positions]))
                for positions in self.groups]

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """The parameter of 0-1 pixels ``[N, 3, H, W]``."""
        return self.parameterization.encode(pixels, self.backbone.mean, self.backbone.std)

    def _decode(self, group: int, parameter: torch.Tensor) -> torch.Tensor:
        """Group ``group``'s normalized pictures (differentiable)."""
        return self.parameterization.to_inputs(parameter, self.backbone.mean, self.backbone.std,
                                               self.picture_width(group))

    def picture_width(self, group: int) -> Optional[int]:
        return self.scale_size(self.groups[group][0])[1] if self.jobs else None

    def _resize_images(self, from_scale: int) -> None:
        """Bring every image group from scale ``from_scale`` to the current scale's size.

        The picture is resized, not the parameter (a spectrum cannot be resized as pixels are),
        and encoded again.
        """
        for group, positions in enumerate(self.groups):
            image = self.images[group]
            size = self.scale_size(positions[0])
            old_size = self.scale_size(positions[0], from_scale)
            if old_size == size:
                continue
            inputs = self.parameterization.to_inputs(image.detach(), self.backbone.mean,
                                                     self.backbone.std, old_size[1])
            pixels = self.backbone.denormalize(resize_pixels(inputs, size, circular=self.tileable))
            image.data = self._in_memory_format(self._encode(pixels).to(image.dtype))

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.jobs and self._trainer is not None:
            # Refuse scales that do not fit the images or the steps before the first step.
            for index in range(len(self.jobs)):
                self.scale_plan.sides(min(self.jobs[index].size))
            self.scale_plan.step_counts(self.steps_per_chunk, self.scale_count())
            if self.scale_count() > 1:  # the images were checked at the coarsest scale
                self._check_memory([torch.empty(len(positions), 3, *self.jobs[positions[0]].size,
                                                device="meta") for positions in self.groups])

    def scale_count(self) -> int:
        """The number of scales of the current jobs (the first job's; they share a shorter side)."""
        return self.scale_plan.count(self.jobs[0].size if self.jobs else None)

    def scale_size(self, index: int, scale: Optional[int] = None) -> tuple[int, int]:
        """Job ``index``'s picture size ``(H, W)`` at scale ``scale`` (default: the current one)."""
        return self.scale_plan.size(self.jobs[index].size,
                                    self.scale_index if scale is None else scale)

    def _at_scale(self, pixels: torch.Tensor, index: int) -> torch.Tensor:
        """Pixels of job ``index`` (the content, or anything at its full size) at the scale."""
        return resize_pixels(pixels, self.scale_size(index))

    def _starting_pixels(self, index: int) -> torch.Tensor:
        job = self.jobs[index]
        height, width = self.scale_size(index)
        init = self.init if self.uses_content else ("noise" if self.init == "content" else self.init)
        if init == "content":
            return self._at_scale(job.content, index)
        if init == "noise":
            # One generator per job: the same job starts the same way however jobs are split.
            seed = torch.initial_seed() + self.job_indices[index]
            generator = torch.Generator().manual_seed(seed)
            noise = torch.rand(3, height, width, generator=generator)
            return 0.5 + (noise - 0.5) * self.noise_scale
        # The one file a module reads: a starting image named by an option, read as data is.
        from datamodules.images import image_to_tensor, load_image

        image = load_image(init).convert("RGB").resize((width, height))
        return image_to_tensor(image)

    # ----------------------------------------------------------------- optimization
    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = list(self.images)
        if self.optimizer_name == "lbfgs":
            return torch.optim.LBFGS(params, lr=self.lr, max_iter=1, history_size=50)
        return torch.optim.Adam(params, lr=self.lr, fused=self.fused_optimizer or None)

    def before_step(self, step: int) -> None:
        if self.lr_drop_step is not None and step == self.lr_drop_step:
            optimizer = self.optimizers(use_pl_optimizer=False)
            for group in optimizer.param_groups:
                group["lr"] = self.lr_drop_to if self.lr_drop_to is not None else group["lr"]
            if self.restart_optimizer_at_drop:
                optimizer.state.clear()
        scale = self.scale_plan.scale_at(step, self.steps_per_chunk, self.scale_count())
        if scale != self.scale_index:
            self.enter_scale(scale)
        if self.clamp_until is None or step < self.clamp_until:
            self.clamp_images()

    @torch.no_grad()
    def enter_scale(self, scale: int) -> None:
        """Go on at scale ``scale``: the images upsampled, new targets, a fresh optimizer state.

        The optimizer keeps its parameters (their tensors change size in place) and forgets its
        moments or curvature pairs, which belonged to the previous scale's pixels.
        """
        previous, self.scale_index = self.scale_index, scale
        self._resize_images(previous)
        if self._trainer is not None:
            for optimizer in self.trainer.optimizers:
                optimizer.state.clear()
                if isinstance(optimizer, torch.optim.LBFGS):
                    # L-BFGS flattens its parameters and caches their size; it must count again.
                    optimizer._numel_cache = None
        self._prepare_targets()

    def snapshot_name(self, steps_taken: int) -> Optional[str]:
        """``scale<side>`` after a coarse scale's last step: the image writer keeps that picture."""
        if not self.scale_plan.is_scale_end(steps_taken, self.steps_per_chunk,
                                            self.scale_count()):
            return None
        side = min(self.scale_size(0))
        return f"scale{side}px"

    @torch.no_grad()
    def clamp_images(self) -> None:
        """Clamp every image to ``±clamp`` or to the backbone's valid pixel range (pixel
        parameterization; a Fourier picture is valid by construction)."""
        if not isinstance(self.parameterization, PixelImage):
            return
        for image in self.images:
            if self.clamp is not None:
                image.clamp_(-self.clamp, self.clamp)
            else:
                image.copy_(self.backbone.clamp_pixels(image))

    # ----------------------------------------------------------------- losses
    def prepare_targets(self) -> None:
        self._content_targets, self._style_targets, self._style_regions = [], [], []
        for indices in self.groups:
            if self.uses_content:
                contents = torch.stack([self._at_scale(self.jobs[i].content, i)
                                        for i in indices]).to(self.device)
                self._content_targets.append(
                    self.backbone.extract(self.backbone.normalize(contents), self.content_layers)
                )
            if self.uses_style:
                jobs = [self.jobs[i] for i in indices]
                statistics = [self._style_statistics(job) for job in jobs]
                self._style_targets.append(blended_targets(self.style_criterion, statistics, jobs))
                self._style_regions.append(
                    style_regions(self.style_criterion, statistics, jobs, self.device))

    def _style_statistics(self, job: Any) -> list[list[Any]]:
        """The style loss's statistics of each style image of a job, at each style layer."""
        statistics = []
        # The style shrinks with the picture: its strokes keep their size relative to it.
        factor = self.scale_plan.factor(self.scale_index, job.size)
        for style in job.styles:
            pixels = resize_pixels(style, [round(side * factor) for side in style.shape[-2:]])
            pixels = pixels.to(self.device)[None]
            feats = self.backbone.extract(self.backbone.normalize(pixels), self.style_layers)
            statistics.append([self.style_criterion.target(f) for f in feats])
        return statistics

    def _shift_generator(self) -> torch.Generator:
        # One draw per step from the run's seed: a resumed run shifts as the uninterrupted one.
        step = self.global_step if self._trainer is not None else 0
        return torch.Generator().manual_seed(torch.initial_seed() + 7919 * step)

    def loss_terms(self, group: int, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = self._decode(group, images)
        layers = sorted(set(self.content_layers + self.style_layers))
        shift = min(self.shift, min(images.shape[-2:]) - 1)  # a reflection needs a smaller pad
        seen = (random_shift(images, shift, self._shift_generator(), circular=self.tileable)
                if shift > 0 else images)
        feats = dict(zip(layers, self.backbone.extract(seen, layers)))
        terms = {}
        if self.uses_content:
            terms["content"] = sum(
                content_loss(weight, feats[layer], target, self.loss_reduction)
                for layer, weight, target in zip(
                    self.content_layers, self.content_weights, self._content_targets[group]
                )
            )
        if self.uses_style:
            regions = self._style_regions[group]
            if regions is None:
                terms["style"] = layered_style_loss(self.style_criterion, feats, self.style_layers,
                                                    self._style_targets[group], self.style_weights,
                                                    self.global_step)
            else:
                terms["style"] = masked_style_loss(self.style_criterion, feats, self.style_layers,
                                                   self.style_weights, *regions, self.global_step)
        terms["tv"] = tv_loss(images, self.tv_weight, self.loss_reduction, wrap=self.tileable)
        if self.chroma_tv_weight:
            pixels = self.backbone.denormalize(images)
            terms["chroma_tv"] = tv_loss(chrominance(pixels), self.chroma_tv_weight,
                                         self.loss_reduction, wrap=self.tileable)
        return terms

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["style_scale"] = self.scale_index

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The images must have the checkpoint's scale before the checks and the state load.
        scale = int(checkpoint.get("style_scale", 0))
        if not 0 <= scale < self.scale_count():
            raise UserInputError("The checkpoint was made with other scales: resume with the "
                                 "interrupted run's options (its config.yaml).")
        self._restored_scale = scale
        if scale != self.scale_index and len(self.images):
            previous, self.scale_index = self.scale_index, scale
            with torch.no_grad():
                self._resize_images(previous)
        super().on_load_checkpoint(checkpoint)
        self.scale_index = scale
        self._restored_scale = None

    # ----------------------------------------------------------------- results
    def result_pixels(self, index: int) -> torch.Tensor:
        pixels = super().result_pixels(index)
        content = self.jobs[index].content if self.jobs else None
        if self.preserve_colors and content is not None:
            pixels = keep_colors(pixels, resize_pixels(content.cpu(), pixels.shape[-2:]))
        return pixels

    def sheet_panels(self, index: int) -> list[tuple[str, torch.Tensor]]:
        job = self.jobs[index]
        panels = []
        if job.content is not None and self.uses_content:
            panels.append(("content", job.content))
        if self.uses_style:
            panels += [(f"style {k + 1}" if len(job.styles) > 1 else "style", s)
                       for k, s in enumerate(job.styles)]
            panels += [(f"mask {k + 1}", mask.expand(3, -1, -1))
                       for k, mask in enumerate(getattr(job, "style_masks", []))]
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
