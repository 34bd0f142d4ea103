"""A picture made to match other images' features: the sum of its loss terms.

:class:`FeatureMatching` optimizes one picture per job against a list of
:mod:`~lightning_modules.style_transfer.terms` (content, style, total variation, ...), and owns
what every such picture shares: where it starts, what moves it (pixels or a spectrum, Adam or
L-BFGS), the random shifts the backbone sees it through, coarse-to-fine scales (the base's
stages), a tileable torus and the colours kept. Style transfer, feature inversion and texture
synthesis are presets of it (:mod:`.module`): each builds its terms from the homework's flat
options.

Jobs come from ``datamodules.StyleTransferData``: each job is a content image (or none) and a
list of style images with blend weights. A job must have the images its terms read, and no image
that none of them reads.
"""

from __future__ import annotations

import inspect
from typing import Any, Hashable, Literal, Optional, Sequence, Union

import torch

from lightning_modules.errors import UserInputError, check_choice, check_learning_rate
from lightning_modules.image_optimization.module import ImageOptimization
from lightning_modules.image_optimization.parameterizations import (PixelImage,
                                                                    make_parameterization)
from lightning_modules.image_optimization.resize import resize_pixels
from lightning_modules.image_optimization.transforms import random_shift
from lightning_modules.style_transfer.functional import keep_colors
from lightning_modules.style_transfer.scales import ScalePlan
from lightning_modules.style_transfer.terms import LossTerm


class FeatureMatching(ImageOptimization):
    """Optimize a picture per job to lower the sum of its loss terms.

    Args:
        terms: The loss terms, summed in this order (see
            :mod:`~lightning_modules.style_transfer.terms`); two terms of one name are logged
            as ``<name>`` and ``<name>_2``.
        shift: Each step the backbone sees the image shifted by a random whole number of pixels
            up to ``shift`` each way (transformation robustness): patterns that only the
            network's stride grid sees cannot settle. 0: off.
        scales: Coarse to fine: the shorter sides the picture is optimized at in turn, each
            starting from the previous result upsampled; the last is always the image size
            (``image_size``), added if missing. ``"auto"``: a ladder of sides growing by
            ``sqrt(2)`` from 128 px (see :class:`~.scales.ScalePlan`).
            Style images are resized with the picture, so brush strokes keep their size
            relative to it. None: the image size only.
        scale_steps: Steps at each scale (they sum to ``trainer.max_steps``); None: split
            equally, the remainder to the coarsest scales.
        init: Starting image: ``"content"`` (with a content term), ``"noise"``, or the path of
            an image file.
        noise_scale: The spread of the ``"noise"`` start: uniform in ``0.5 ± noise_scale / 2``
            (1: the whole 0-1 range, the homework's). Small values start near grey, so no
            grain of the start survives into the picture.
        preserve_colors: Keep the content's colours (with a content term): the result's
            luminance is combined with the content's chrominance (luminance-only transfer,
            Gatys et al. 2017).
        optimizer: ``"adam"`` or ``"lbfgs"`` (each trainer step is one L-BFGS iteration).
        lr: Learning rate; None: the optimizer's own (:attr:`default_lr`: L-BFGS's is 1, its
            line search's unit step, while an Adam step is a pixel change).
        lr_drop_step: Step at which the learning rate drops to ``lr_drop_to`` (None: never).
        lr_drop_to: The learning rate after ``lr_drop_step``.
        restart_optimizer_at_drop: Forget Adam's moments at the drop, as the homework does by
            creating a new optimizer.
        clamp: Before each step, clamp the image to ``[-clamp, clamp]`` in normalized units (the
            homework uses 1.5); None clamps to the valid pixel range of the backbone.
        clamp_until: Clamp only before steps ``< clamp_until`` (None: every step).
        tileable: Make a seamless picture: the backbone pads circularly (it sees the image as a
            torus) and the TV terms wrap around, so the result tiles without a visible edge.
        parameterization: What the optimizer moves: ``"pixel"`` (the picture itself, the
            homework's) or ``"fourier"`` (the decorrelated-colour spectrum of Olah et al. 2017,
            rendered through a sigmoid). The spectrum preconditions the steps: low frequencies,
            which a pixel step barely moves, move as fast as high ones. ``clamp`` is for pixels
            only.
        decay_power: How fast the Fourier spectrum's scale falls with frequency (``fourier``).
        **kwargs: ``backbone``, ``weights``, ``channels_last``, ``fast`` and
            ``recompute_features`` of
            :class:`~lightning_modules.image_optimization.ImageOptimization`.
    """

    data_name = "a StyleTransferData datamodule (data: class_path: datamodules.StyleTransferData)"

    #: The learning rate of each optimizer when ``lr`` is None.
    default_lr = {"adam": 0.05, "lbfgs": 1.0}

    # Checkpoints of the scales keep the name they had before the stages were shared.
    stage_key = "style_scale"
    stage_word = "scales"

    def __init__(
        self,
        terms: Sequence[LossTerm] = (),
        shift: int = 0,
        scales: Union[Sequence[int], Literal["auto"], None] = None,
        scale_steps: Optional[Sequence[int]] = None,
        init: str = "content",
        noise_scale: float = 1.0,
        preserve_colors: bool = False,
        optimizer: Literal["adam", "lbfgs"] = "adam",
        lr: Optional[float] = None,
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
        terms = list(terms)
        name = type(self).__name__
        if not terms or not all(isinstance(term, LossTerm) for term in terms):
            raise UserInputError(f"{name} needs a list of loss terms (LossTerm objects, e.g. "
                                 "lightning_modules.style_transfer.terms.ContentTerm).")
        reads_content = any(term.reads_content for term in terms)
        check_choice("optimizer", optimizer, ("adam", "lbfgs"))
        if not 0 < noise_scale <= 1:
            raise UserInputError(f"noise_scale must be above 0 and at most 1, got {noise_scale}.")
        if not isinstance(shift, int) or shift < 0:
            raise UserInputError(f"shift must be a whole number of pixels, 0 or more, got {shift}.")
        self.scale_plan = ScalePlan(scales, scale_steps)
        check_learning_rate("lr", lr)
        check_learning_rate("lr_drop_to", lr_drop_to)
        if clamp is not None and not clamp > 0:
            raise UserInputError(f"clamp must be positive (or null for the pixel range), got "
                                 f"{clamp}.")
        if not decay_power > 0:
            raise UserInputError(f"decay_power must be positive, got {decay_power}.")
        if parameterization != "pixel" and (clamp is not None or clamp_until is not None):
            raise UserInputError("clamp and clamp_until are for the pixel parameterization; a "
                                 f"{parameterization} picture is always within the pixel range.")
        if not reads_content and init == "content":
            raise UserInputError(f"{name} has no content image to start from: init must be "
                                 "'noise' or an image file.")
        if not reads_content and preserve_colors:
            raise UserInputError(f"preserve_colors keeps the content image's colours, and {name} "
                                 "has no content image.")
        accepted = inspect.signature(ImageOptimization.__init__).parameters
        for key in kwargs:
            if key not in accepted:
                raise UserInputError(f"{name} has no option '{key}'.")
        super().__init__(**kwargs)
        # The terms are objects (a config's own, or built by a preset): the hyperparameters
        # keep plain values, which a checkpoint can hold.
        self.save_hyperparameters(ignore=["terms"])
        for key, value in list(self.hparams.items()):
            if hasattr(value, "describe"):
                self.hparams[key] = value.describe()
        self.parameterization = make_parameterization(parameterization, decay_power=decay_power)
        self.optimizer_name = optimizer
        self.lr = lr if lr is not None else self.default_lr[optimizer]
        self.lr_drop_step = lr_drop_step
        self.lr_drop_to = lr_drop_to
        self.restart_optimizer_at_drop = restart_optimizer_at_drop
        self.clamp = clamp
        self.clamp_until = clamp_until
        self.tileable = tileable
        if tileable:  # a circular copy: a backbone shared with other modules stays as it was
            self.backbone = self.backbone.with_circular_padding().use_recomputation(
                self.recompute_features)
        for term in terms:
            term.bind(self.backbone, wrap=tileable)
        self.terms = terms
        self.term_names = _distinct([term.name for term in terms])
        self.shift = shift
        self.init = init
        self.noise_scale = noise_scale
        self.preserve_colors = preserve_colors
        self.targets: list[list[Any]] = []  # per image group, each term's target

    def term(self, name: str) -> LossTerm:
        """The term logged as ``name`` (``"content"``, ``"style"``, ``"tv"``, ...)."""
        if name not in self.term_names:
            raise KeyError(f"{type(self).__name__} has no term '{name}' (it has "
                           f"{', '.join(self.term_names)}).")
        return self.terms[self.term_names.index(name)]

    # ----------------------------------------------------------------- jobs and images
    def job_size(self, job: Any) -> Hashable:
        return job.size

    def make_jobs(self, items: Sequence[Any]) -> list[Any]:
        name = type(self).__name__
        reads_content = any(term.reads_content for term in self.terms)
        reads_styles = any(term.reads_styles for term in self.terms)
        for job in items:
            content, styles = getattr(job, "content", None), getattr(job, "styles", [])
            if reads_content and content is None:
                raise UserInputError(f"{name} needs a content image (--data.content).")
            if reads_styles and not styles:
                raise UserInputError(f"{name} needs a style image (--data.style).")
            if not reads_content and content is not None:
                raise UserInputError(f"{name} uses no content image: leave --data.content out "
                                     "(null).")
            if not reads_styles and styles:
                raise UserInputError(f"{name} uses no style image: leave --data.style out "
                                     "(null).")
        return list(items)

    def create_images(self, jobs: list[Any]) -> list[torch.Tensor]:
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
        return self.stage_size(self.groups[group][0])[1] if self.jobs else None

    def _starting_pixels(self, index: int) -> torch.Tensor:
        job = self.jobs[index]
        height, width = self.stage_size(index)
        if self.init == "content":
            return resize_pixels(job.content, (height, width))
        if self.init == "noise":
            # One generator per job: the same job starts the same way however jobs are split.
            seed = torch.initial_seed() + self.job_indices[index]
            generator = torch.Generator().manual_seed(seed)
            noise = torch.rand(3, height, width, generator=generator)
            return 0.5 + (noise - 0.5) * self.noise_scale
        # The one file a module reads: a starting image named by an option, read as data is.
        from datamodules.images import image_to_tensor, load_image

        image = load_image(self.init).convert("RGB").resize((width, height))
        return image_to_tensor(image)

    # ----------------------------------------------------------------- scales (the stages)
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.jobs and self._trainer is not None:
            for job in self.jobs:  # scales that do not fit a picture: refused before any step
                self.scale_plan.sides(min(job.size), self._most_scales)

    @property
    def _most_scales(self) -> Optional[int]:
        """The run's steps, once known: automatic scales never outnumber them. (The images
        are made in setup before the loop is planned: then the Trainer's ``max_steps`` is
        still the steps of a job.)"""
        if self.steps_per_chunk:
            return self.steps_per_chunk
        steps = self._trainer.max_steps if self._trainer is not None else None
        return steps if steps and steps > 0 else None

    def stage_count(self) -> int:
        """The number of scales of the current jobs (the first job's; they share a shorter side)."""
        return self.scale_plan.count(self.jobs[0].size if self.jobs else None, self._most_scales)

    def stage_steps(self) -> list[int]:
        return self.scale_plan.step_counts(self.steps_per_chunk, self.stage_count())

    def stage_size(self, index: int, stage: Optional[int] = None) -> tuple[int, int]:
        """Job ``index``'s picture size ``(H, W)`` at scale ``stage`` (default: the current one)."""
        return self.scale_plan.size(self.jobs[index].size,
                                    self.stage_index if stage is None else stage,
                                    self._most_scales)

    def stage_name(self, stage: int) -> str:
        """``scale<side>px``: the snapshot at a coarse scale's end."""
        return f"scale{min(self.stage_size(0, stage))}px"

    def resize_for_stage(self, inputs: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        # A tileable picture is resized round the torus, so no seam appears at its edges.
        return resize_pixels(inputs, size, circular=self.tileable)

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
        if self.clamp_until is None or step < self.clamp_until:
            self.clamp_images()

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
        self.targets = []
        for positions in self.groups:
            jobs = [self.jobs[i] for i in positions]
            sizes = [self.stage_size(i) for i in positions]
            self.targets.append([term.target(jobs, sizes, self.backbone, self.device)
                                 for term in self.terms])

    def _shift_generator(self) -> torch.Generator:
        # One draw per step from the run's seed: a resumed run shifts as the uninterrupted one.
        step = self.global_step if self._trainer is not None else 0
        return torch.Generator().manual_seed(torch.initial_seed() + 7919 * step)

    def loss_terms(self, group: int, images: torch.Tensor) -> dict[str, torch.Tensor]:
        pictures = self._decode(group, images)
        layers = sorted({layer for term in self.terms for layer in term.layers})
        features: dict[int, torch.Tensor] = {}
        if layers:
            # A reflection needs a pad smaller than the picture.
            shift = min(self.shift, min(pictures.shape[-2:]) - 1)
            seen = (random_shift(pictures, shift, self._shift_generator(), circular=self.tileable)
                    if shift > 0 else pictures)
            features = dict(zip(layers, self.backbone.extract(seen, layers)))
        step = self.global_step
        return {name: term.loss(pictures, features, target, step)
                for name, term, target in zip(self.term_names, self.terms, self.targets[group])
                if term.adds_loss}

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Bring each pixel picture back within its terms' limits (``LossTerm.project``)."""
        if not isinstance(self.parameterization, PixelImage):
            return
        for image, targets in zip(self.images, self.targets):
            for term, target in zip(self.terms, targets):
                limited = term.project(self.backbone.denormalize(image), target)
                if limited is not None:
                    image.copy_(self.backbone.normalize(limited))

    # ----------------------------------------------------------------- results
    def result_pixels(self, index: int) -> torch.Tensor:
        pixels = super().result_pixels(index)
        content = getattr(self.jobs[index], "content", None) if self.jobs else None
        if self.preserve_colors and content is not None:
            pixels = keep_colors(pixels, resize_pixels(content.cpu(), pixels.shape[-2:]))
        return pixels

    def sheet_panels(self, index: int) -> list[tuple[str, torch.Tensor]]:
        job = self.jobs[index]
        panels: dict[str, torch.Tensor] = {}  # two terms of one image show it once
        for term in self.terms:
            for title, picture in term.panels(job):
                panels.setdefault(title, picture)
        return [*panels.items(), ("result", self.result_pixels(index))]


def _distinct(names: list[str]) -> list[str]:
    """The names in order, a second ``x`` as ``x_2``, a third as ``x_3``."""
    result: list[str] = []
    for name in names:
        candidate, copy = name, 1
        while candidate in result:
            copy += 1
            candidate = f"{name}_{copy}"
        result.append(candidate)
    return result
