"""Feature visualization and DeepDream: pictures raised on objectives, seen through a view.

:class:`ObjectiveAscent` is what they share: a parameterization (what the optimizer moves),
a view (what the network sees each step: jitter, then Lucent's transforms or MACO's crops), a
step rule, the clamp and blur, the objectives' scores, checkpoints. :class:`FeatureVisualization`
draws what raises each objective from noise (the general technique: a class logit is one
objective, and :class:`~lightning_modules.class_visualization.ClassVisualization` is its preset
for classes). :class:`DeepDream` starts from a photo instead of noise and climbs octaves,
coarse to fine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Hashable, Optional, Sequence, Union

import torch

from lightning_modules.class_visualization.functional import (
    DEFAULT_L2_REG,
    regularize,
)
from lightning_modules.errors import (
    UserInputError,
    check_image_side,
    check_learning_rate,
    check_non_negative,
    check_positive,
)
from lightning_modules.feature_visualization.functional import (
    carry_detail,
    objective_loss,
    octave_sizes,
)
from lightning_modules.feature_visualization.objectives import (
    ChannelAtlas,
    Objective,
    parse_objective,
)
from lightning_modules.image_optimization.module import ImageOptimization
from lightning_modules.image_optimization.parameterizations import (
    Parameterization,
    PixelImage,
    resolve_parameterization,
)
from lightning_modules.image_optimization.steps import StepRule, resolve_step
from lightning_modules.image_optimization.transforms import (
    ImageTransforms,
    NoTransforms,
    resolve_transforms,
)
from lightning_modules.image_optimization.variants import describe_variant
from lightning_modules.naming import safe_name, short_title, unique_names
from lightning_modules.style_transfer.scales import ScalePlan, resize_pixels

# Longer objective strings are cut in file names (the sheet's title and config.yaml keep them).
NAME_LENGTH = 80

# A coarser octave than this many pixels on its shorter side leaves the deeper layers no map.
MIN_OCTAVE_SIDE = 16

# The blur period of a pixel picture when none is given (the homework's).
DEFAULT_BLUR_EVERY = 10


@dataclass
class ObjectiveJob:
    """One picture to make: its output name and the objective (as written) it raises.

    A job of a channel atlas also says which: ``atlas`` is its layer as written, ``channel``
    its channel (None for other jobs).
    """

    name: str
    objective: str
    atlas: Optional[str] = None
    channel: Optional[int] = None


def objective_file_name(text: str) -> str:
    """A file stem for an objective: ``channel:blocks.4:12 - 0.5*layer:3`` ->
    ``channel_blocks.4_12_minus_0.5x_layer_3``."""
    words = re.sub(r"\s+-\s+", "_minus_", re.sub(r"\s+\+\s+", "_plus_", text.strip()))
    words = re.sub(r"^-\s*", "minus_", words)
    stem = safe_name(re.sub(r"\s*\*\s*", "x_", words))
    return stem[:NAME_LENGTH].rstrip("._-") or "objective"


class ObjectiveAscent(ImageOptimization):
    """Pictures whose parameters climb objectives, seen through a view: the shared part of
    :class:`FeatureVisualization` (and its class preset) and :class:`DeepDream`.

    Each step renders the pictures (``parameterization``), shifts them by a random circular
    jitter, shows them through ``transforms``, scores each under its job's objective and steps
    by ``step``; after the step, a pixel picture is clamped (and blurred every ``blur_every``
    steps). A subclass makes the jobs and the starting pictures.

    Args:
        parameterization: What the optimizer moves: a
            :class:`~lightning_modules.image_optimization.parameterizations.Parameterization`
            or its short name (``pixel``, ``fourier``, ``maco``).
        transforms: What the network sees each step: an
            :class:`~lightning_modules.image_optimization.transforms.ImageTransforms`, its short
            name (``none``, ``lucent``, ``crops``) or the older switch (true: ``lucent``).
        step: The update rule: a :class:`~lightning_modules.image_optimization.steps.StepRule`
            or its short name (``normalized``, ``raw``, ``adam``).
        lr: Step length; None: the step rule's default for the parameterization.
        l2_reg: Weight of the L2 penalty ``||image||^2`` on the normalized image.
        max_jitter: Largest random circular shift in pixels, undone after each step (0: none).
        blur_every: Blur every this many steps (0: never); only a parameterization whose
            pixels are free (pixel) can be blurred.
        blur_sigma: Standard deviation of the blur, in pixels.
        clamp: Clamp pixel pictures to ``[-clamp, clamp]`` in normalized units after each
            step; None: the backbone's valid pixel range. Only for a pixel parameterization.
        **kwargs: ``backbone``, ``weights``, ``channels_last``, ``fast`` and
            ``recompute_features`` of
            :class:`~lightning_modules.image_optimization.ImageOptimization`.
    """

    def __init__(
        self,
        parameterization: Union[str, Parameterization] = "pixel",
        transforms: Union[bool, str, ImageTransforms] = False,
        step: Union[str, StepRule] = "normalized",
        lr: Optional[float] = None,
        l2_reg: float = DEFAULT_L2_REG,
        max_jitter: int = 16,
        blur_every: int = 0,
        blur_sigma: float = 0.5,
        clamp: Optional[float] = None,
        **kwargs: Any,
    ) -> None:
        parameterization = resolve_parameterization(parameterization)
        view = resolve_transforms(transforms)
        step_rule = resolve_step(step)
        check_learning_rate("lr", lr)
        check_non_negative("l2_reg", l2_reg)
        if isinstance(blur_every, bool) or not isinstance(blur_every, int) or blur_every < 0:
            raise UserInputError(f"blur_every must be zero (never) or positive, got {blur_every}.")
        if not blur_sigma > 0:
            raise UserInputError(f"blur_sigma must be positive, got {blur_sigma}.")
        if max_jitter < 0:
            raise UserInputError(f"max_jitter must be zero or positive, got {max_jitter}.")
        check_positive("clamp", clamp, " (or null for the pixel range)")
        if not parameterization.pixels_are_free and (blur_every or clamp is not None):
            option = "blur_every" if blur_every else "clamp"
            raise UserInputError(f"{option} is for the pixel parameterization; a "
                                 f"{type(parameterization).__name__} picture is always within "
                                 "the pixel range and is not blurred.")
        super().__init__(**kwargs)
        self.save_hyperparameters()
        # Hyperparameters travel in checkpoints, which hold plain data only.
        for key, value in list(self.hparams.items()):
            if isinstance(value, (Parameterization, ImageTransforms, StepRule)):
                self.hparams[key] = describe_variant(value)
        self.parameterization = parameterization
        self.view = view
        self.step_rule = step_rule
        self.lr = lr if lr is not None else step_rule.default_lr(parameterization)
        self.l2_reg = l2_reg
        self.max_jitter = max_jitter
        self.blur_every = blur_every
        self.blur_sigma = blur_sigma
        self.clamp = clamp
        self.generator: Optional[torch.Generator] = None
        self.objectives: dict[str, Objective] = {}  # bound, by the text each job gives
        self._chunk_objectives: list[Objective] = []  # the chunk's distinct objectives
        self._chunk_rows: list[list[int]] = []  # per distinct objective, its rows in the chunk
        self._step_scores: list[torch.Tensor] = []

    # ----------------------------------------------------------------- objectives
    def probe_size(self) -> Optional[int]:
        """The image side objectives are checked at (a neuron's position must be on the map);
        None: each is checked on the maps as they come."""
        return None

    def bind_objective(self, objective: Union[str, Objective]) -> Objective:
        """``objective`` parsed (if a string) and bound to the backbone, checked."""
        return parse_objective(objective).bind(self.backbone, self.probe_size())

    def prepare_targets(self) -> None:
        rows: dict[str, list[int]] = {}
        for job, slot in zip(self.jobs, self.slots):
            rows.setdefault(job.objective, []).append(slot.row)
        self._chunk_objectives = [self.objectives[text] for text in rows]
        self._chunk_rows = list(rows.values())

    def _bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The clamp range: ``±clamp`` when set, else the backbone's valid pixel range."""
        if self.clamp is not None:
            limit = torch.full_like(self.backbone.mean, self.clamp)
            return -limit, limit
        return self.backbone.pixel_min, self.backbone.pixel_max

    def rendered_images(self) -> torch.Tensor:
        """The current normalized images of the first group ``[B, 3, H, W]``."""
        return self.parameterization.to_inputs(self.images[0], self.backbone.mean,
                                               self.backbone.std)

    # ----------------------------------------------------------------- the step
    def loss_terms(self, group: int, images: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = None if len(self._chunk_objectives) == 1 else self._chunk_rows
        terms, scores = objective_loss(
            images, self.backbone, self._chunk_objectives, rows,
            parameterization=self.parameterization, l2_reg=self.l2_reg,
            max_jitter=self.max_jitter, transforms=self.view, generator=self.generator)
        self._step_scores.append(scores.detach())
        return terms

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.record_scores()
        return loss

    def record_scores(self) -> None:
        """After each step's losses: log ``objective``, the mean score, on logging steps."""
        scores, self._step_scores = self._step_scores, []
        if self.is_log_step():
            self.log_job_mean("objective", torch.cat(scores), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = self.step_rule.optimizer([self.images[0]], self.lr,
                                             fused=self.fused_optimizer)
        for image in list(self.images)[1:]:
            optimizer.add_param_group({"params": [image]})
        self.set_step_lengths(optimizer)
        return optimizer

    def set_step_lengths(self, optimizer: torch.optim.Optimizer) -> None:
        """Each image group's step length (default: ``lr`` for all)."""

    def after_step(self, step: int) -> None:
        low, high = self._bounds()
        for image in self.images:
            regularize(image, self.parameterization, step, low.to(self.device),
                       high.to(self.device), self.blur_every, self.blur_sigma)

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # The key checkpoints of every earlier version of these techniques used.
        checkpoint.setdefault("class_visualization", {})["generator"] = \
            self.generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("class_visualization", {})
        if "finished" in saved:
            raise UserInputError("This checkpoint was written by an earlier version of "
                                 f"{type(self).__name__}, which kept its records in the "
                                 "module; start the run again.")
        super().on_load_checkpoint(checkpoint)
        if "generator" not in saved:
            raise UserInputError(f"This checkpoint was not written by {type(self).__name__}: "
                                 "resume with the interrupted run's options (its config.yaml).")
        self.generator.set_state(saved["generator"])  # the jitter goes on where it stopped


class FeatureVisualization(ObjectiveAscent):
    """Draw what raises an objective: a channel, a neuron, a direction, a layer, a class, sums.

    Objectives come from :class:`datamodules.objectives.ObjectiveListData`, one picture per
    entry (an objective given twice: two pictures, which ``diversity`` can set apart), or from
    :class:`datamodules.objectives.ChannelAtlasData`, one picture per channel of a layer
    (:class:`~.objectives.ChannelAtlas` items, expanded against the backbone in
    :meth:`make_jobs`; their pictures also go on one ``atlas_sheet.png``, drawn by the
    ``AtlasSheet`` this technique brings, see :meth:`configure_callbacks`); from Python,
    :meth:`set_jobs` takes strings, :class:`~.objectives.Objective` objects and
    :class:`~.objectives.ChannelAtlas` items. Every picture starts from the parameterization's
    noise at ``image_size``. Pictures of one objective are scored together (a batch objective
    compares them), in one network pass with every other objective's. Each step logs
    ``objective`` (the mean score); files are ``<objective>.png`` (e.g.
    ``channel_blocks.4_12.png``) and its sheet, titled with the objective.

    The variants' options can also be given beside their short names, as older configs do
    (``parameterization: maco`` with ``contrast: 2.0``); an option the chosen variant does not
    have is refused, in one sentence.

    Args:
        l2_reg: Weight of the L2 penalty ``||image||^2`` on the normalized image.
        blur_every: Blur every this many steps (0: never); None: every 10 steps for a pixel
            parameterization (the homework's), never for the others, which cannot be blurred.
        blur_sigma: Standard deviation of the blur, in pixels.
        max_jitter: Largest random circular shift in pixels, undone after each step (0: none).
        image_size: Side of the square pictures.
        parameterization: ``pixel`` (the homework: the image is the parameter), ``fourier``
            (Lucent: a colour-decorrelated spectrum) or ``maco`` (MACO: only the spectrum's
            phase moves, on a photo's amplitude), or an object with its own options (see
            :mod:`lightning_modules.image_optimization.parameterizations`).
        transforms: ``lucent`` (or true: Lucent's random pad/jitter/scale/rotate), ``crops``
            (MACO's random crops) or ``none`` (false), or a view object with its own options
            (see :mod:`lightning_modules.image_optimization.transforms`).
        decay_power: With ``parameterization: fourier``: its spectrum's decay (default 1).
        init_std: With ``parameterization: pixel``: the starting noise's standard deviation in
            normalized units (default 1, the homework's).
        step: ``normalized`` (``lr * g / ||g||_2`` per image), ``raw`` (the homework's
            ``lr * g``) or ``adam``, or a step-rule object.
        lr: Step length (the homework's ``learning_rate``); None: the step rule's default for
            the parameterization
            (:func:`~lightning_modules.class_visualization.functional.default_learning_rate`).
        clamp: Clamp pixel pictures to ``[-clamp, clamp]`` in normalized units after each
            step; None: the backbone's valid pixel range.
        crops: With ``transforms: crops``: the crops of each picture per step (default 4).
        crop_size: With ``transforms: crops``: their side as the network sees them (default:
            ``image_size``).
        crop_scale: With ``transforms: crops``: their smallest and largest side, as fractions
            of the picture's side (default 0.4 to 1).
        crop_noise: With ``transforms: crops``: the noise on each crop (default 0.05).
        amplitude: With ``parameterization: maco``: its amplitude (default: the built-in sample
            photos'; a ``.pt`` tensor ``[3, H, W//2+1]``, or a folder or glob of photos).
        contrast: With ``parameterization: maco``: its gain before the sigmoid (default 1).
        **kwargs: ``backbone``, ``weights``, ``channels_last``, ``fast`` and
            ``recompute_features`` of
            :class:`~lightning_modules.image_optimization.ImageOptimization`.
    """

    data_name = ("an ObjectiveListData or ChannelAtlasData datamodule (data: class_path: "
                 "datamodules.objectives.ObjectiveListData)")

    def __init__(
        self,
        l2_reg: float = DEFAULT_L2_REG,
        blur_every: Optional[int] = None,
        blur_sigma: float = 0.5,
        max_jitter: int = 16,
        image_size: int = 224,
        parameterization: Union[str, Parameterization] = "pixel",
        transforms: Union[bool, str, ImageTransforms] = False,
        decay_power: Optional[float] = None,
        init_std: Optional[float] = None,
        step: Union[str, StepRule] = "normalized",
        lr: Optional[float] = None,
        clamp: Optional[float] = None,
        crops: Optional[int] = None,
        crop_size: Optional[int] = None,
        crop_scale: Optional[tuple[float, float]] = None,
        crop_noise: Optional[float] = None,
        amplitude: Optional[str] = None,
        contrast: Optional[float] = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
            raise UserInputError(f"image_size must be at least 8 pixels, got {image_size}.")
        check_image_side("image_size", image_size)
        parameterization = resolve_parameterization(
            parameterization, init_std=init_std, decay_power=decay_power, amplitude=amplitude,
            contrast=contrast)
        view = resolve_transforms(transforms, crops=crops, crop_size=crop_size,
                                  crop_scale=crop_scale, crop_noise=crop_noise)
        if blur_every is None:
            blur_every = DEFAULT_BLUR_EVERY if parameterization.pixels_are_free else 0
        super().__init__(parameterization=parameterization, transforms=view, step=step, lr=lr,
                         l2_reg=l2_reg, max_jitter=max_jitter, blur_every=blur_every,
                         blur_sigma=blur_sigma, clamp=clamp, **kwargs)
        self.image_size = image_size
        self.atlas_layers: list[str] = []  # the layers of the run's channel atlases, as written

    # ----------------------------------------------------------------- jobs
    def probe_size(self) -> Optional[int]:
        return self.image_size

    def make_jobs(self, items: Sequence[Union[str, Objective, ChannelAtlas]]
                  ) -> list[ObjectiveJob]:
        # A channel atlas becomes one job per channel here, where the backbone can count them.
        texts: list[str] = []
        atlas: list[tuple[Optional[str], Optional[int]]] = []
        for item in items:
            if isinstance(item, ChannelAtlas):
                for text, bound in item.channel_objectives(self.backbone, self.probe_size()):
                    self.objectives.setdefault(text, bound)
                    texts.append(text)
                    atlas.append((str(item.layer), bound.channel))
                continue
            text = item if isinstance(item, str) else str(item)
            if text not in self.objectives:
                self.objectives[text] = self.bind_objective(item)
            texts.append(text)
            atlas.append((None, None))
        names = unique_names(objective_file_name(text) for text in texts)
        self.atlas_layers = list(dict.fromkeys(layer for layer, _ in atlas if layer is not None))
        return [ObjectiveJob(name, text, layer, channel)
                for name, text, (layer, channel) in zip(names, texts, atlas)]

    def create_images(self, jobs: list[Any]) -> list[torch.Tensor]:
        # The seed function's generator, seeded like the run, so both give the same images.
        # Every process and chunk draws the noise of all jobs and keeps its own rows: the
        # jitter that follows is then the same everywhere, as in one run of all jobs.
        self.generator = torch.Generator().manual_seed(torch.initial_seed())
        low, high = self._bounds()
        noise = self.parameterization.start(len(self.plan.jobs), self.image_size,
                                            self.image_size, low, high, self.generator)
        return [noise[self.job_indices]]

    # ----------------------------------------------------------------- results
    def panel_title(self, index: int) -> str:
        return short_title(self.jobs[index].objective, 40)

    def sheet_panels(self, index: int) -> list[tuple[str, torch.Tensor]]:
        return [(self.panel_title(index), self.result_pixels(index))]

    def atlas_title(self, index: int) -> str:
        """Job ``index``'s title in an atlas sheet: its channel (``12``), and its layer too
        (``blocks.4:12``) when the run draws more than one layer's atlas."""
        job = self.jobs[index]
        return f"{job.atlas}:{job.channel}" if len(self.atlas_layers) > 1 else str(job.channel)

    def atlas_records(self) -> list[dict[str, Any]]:
        """Per channel-atlas job of this process's chunk: its run index, name and title, for
        ``callbacks.AtlasSheet`` (other objectives are not in the atlas)."""
        return [{"job": job_index, "name": slot.name, "title": self.atlas_title(row)}
                for row, (job_index, slot, job) in enumerate(zip(self.job_indices, self.slots,
                                                                 self.jobs))
                if job.atlas is not None]

    def configure_callbacks(self) -> list[Any]:
        """The atlas sheet (``callbacks.AtlasSheet``) when the jobs hold a channel atlas, in a
        run that saves pictures."""
        from callbacks import AtlasSheet  # the callbacks package imports the techniques

        if not any(isinstance(item, ChannelAtlas) for item in self._items()):
            return []
        return AtlasSheet.reading(self.atlas_records, self.trainer)

    def _items(self) -> list[Any]:
        """The data's items: given with :meth:`set_jobs`, else the datamodule's (its jobs)."""
        if self._data is not None:
            return list(self._data[0])
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        return list(getattr(datamodule, "jobs", None) or [])


class DeepDream(ObjectiveAscent):
    """DeepDream (Mordvintsev et al. 2015): a photo, changed to raise an objective.

    Photos come from :class:`datamodules.StyleTransferData` (``--data.content``; no style).
    The picture climbs ``octaves`` sizes, each ``octave_scale`` times the last, up to the
    photo's: at each octave the photo at that size plus the detail dreamed so far (upsampled)
    is raised by normalized gradient ascent on the objective, through a random circular jitter,
    and clamped to valid pixels: :func:`~.functional.deep_dream`'s loop, a step at a time.
    The steps (``trainer.max_steps``) are split equally between the octaves, or as
    ``octave_steps`` says. The octaves are the base's stages (see
    :class:`~lightning_modules.image_optimization.ImageOptimization`): each coarse octave's
    last picture is a snapshot (``snapshots/<photo>_octave<k>.png``), and a run resumed from a
    checkpoint goes on at its octave. The picture is the photo's pixels (no other
    parameterization) and the network sees it whole, jittered (no other view); the photo gives
    its size.

    Args:
        objective: What to raise, in the grammar of :mod:`.objectives`: ``layer:L`` is the
            classic DeepDream, any objective works (``channel:blocks.4:12``, sums, ...).
        octaves: How many sizes the picture climbs (1: the photo's size only).
        octave_scale: The ratio of one octave's side to the previous.
        octave_steps: Steps at each octave (they sum to ``trainer.max_steps``); None: equal.
        lr: Step length. With the ``normalized`` step, the root-mean-square change of a pixel
            value (normalized units) per step, at every octave's size; otherwise the step
            rule's own.
        step: ``"normalized"`` (``g / ||g||_2`` per image, scaled as ``lr`` says), ``"raw"``
            or ``"adam"``, or a step-rule object.
        max_jitter: Largest random circular shift in pixels, undone after each step.
        l2_reg: Weight of the L2 penalty ``||image||^2`` on the normalized image.
        blur_every: Blur every this many steps (0: never).
        blur_sigma: Standard deviation of the blur, in pixels.
        clamp: Clamp to ``[-clamp, clamp]`` in normalized units; None: valid pixels.
        **kwargs: ``backbone``, ``weights``, ``channels_last``, ``fast`` and
            ``recompute_features`` of
            :class:`~lightning_modules.image_optimization.ImageOptimization`.
    """

    data_name = ("a StyleTransferData datamodule with photos (data: class_path: "
                 "datamodules.StyleTransferData, init_args: {content: photo.jpg, style: null})")
    # The octaves are the base's stages; checkpoints keep the key they had before.
    stage_key = "deep_dream_octave"
    stage_word = "octaves"

    def __init__(
        self,
        objective: str = "layer:blocks.4",
        octaves: int = 4,
        octave_scale: float = 1.4,
        octave_steps: Optional[Sequence[int]] = None,
        lr: float = 0.02,
        step: Union[str, StepRule] = "normalized",
        max_jitter: int = 32,
        l2_reg: float = 0.0,
        blur_every: int = 0,
        blur_sigma: float = 0.5,
        clamp: Optional[float] = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(octaves, bool) or not isinstance(octaves, int) or octaves < 1:
            raise UserInputError(f"octaves must be a whole number of at least 1, got {octaves!r}.")
        if not octave_scale > 1:
            raise UserInputError(f"octave_scale must be above 1, got {octave_scale}.")
        check_positive("lr", lr)
        parse_objective(objective)  # a malformed string is refused now, before any image is read
        super().__init__(parameterization=PixelImage(), transforms=NoTransforms(), step=step,
                         lr=lr, l2_reg=l2_reg, max_jitter=max_jitter, blur_every=blur_every,
                         blur_sigma=blur_sigma, clamp=clamp, **kwargs)
        self.objective_text = objective
        self.octaves = octaves
        self.octave_scale = octave_scale
        self.octave_plan = ScalePlan(None, octave_steps, steps_option="octave_steps",
                                     scale_word="octave")

    # ----------------------------------------------------------------- jobs and octaves
    def job_size(self, job: Any) -> Hashable:
        return tuple(job.size)

    def make_jobs(self, items: Sequence[Any]) -> list[Any]:
        for job in items:
            if getattr(job, "content", None) is None:
                raise UserInputError("DeepDream needs a photo to start from (--data.content).")
        self.objectives = {self.objective_text: self.bind_objective(self.objective_text)}
        jobs = list(items)
        coarsest = min(self.octave_size(jobs[0].size, 0))
        if coarsest < MIN_OCTAVE_SIDE:
            raise UserInputError(
                f"{self.octaves} octaves at octave_scale {self.octave_scale} shrink a "
                f"{min(jobs[0].size)} px picture to {coarsest} px at the coarsest; give fewer "
                f"octaves or a larger --data.image_size.")
        return jobs

    def prepare_targets(self) -> None:
        # One objective for every photo: each group's images are scored together.
        self._chunk_objectives = [self.objectives[self.objective_text]]
        self._chunk_rows = [list(range(len(self.jobs)))]

    def octave_size(self, size: Sequence[int], octave: int) -> tuple[int, int]:
        """A picture of ``size = (H, W)`` at octave ``octave`` (the last is ``size`` itself)."""
        return octave_sizes(size, self.octaves, self.octave_scale)[octave]

    def _photo(self, index: int, octave: Optional[int] = None) -> torch.Tensor:
        """Job ``index``'s photo (0-1 pixels) at octave ``octave`` (default: the current one)."""
        job = self.jobs[index]
        return resize_pixels(job.content, self.octave_size(job.size, self.stage_index
                                                           if octave is None else octave))

    def create_images(self, jobs: list[Any]) -> list[torch.Tensor]:
        # The photos at the current octave (the base starts a chunk at the coarsest).
        self.generator = torch.Generator().manual_seed(torch.initial_seed())
        return [self.parameterization.encode(torch.stack([self._photo(i) for i in positions]),
                                             self.backbone.mean, self.backbone.std)
                for positions in self.groups]

    # ----------------------------------------------------------------- octaves (the stages)
    def stage_count(self) -> int:
        return self.octaves

    def stage_steps(self) -> list[int]:
        return self.octave_plan.step_counts(self.steps_per_chunk, self.octaves)

    def stage_size(self, index: int, stage: Optional[int] = None) -> tuple[int, int]:
        """Job ``index``'s picture size ``(H, W)`` at octave ``stage`` (default: the current
        one)."""
        return self.octave_size(self.jobs[index].size,
                                self.stage_index if stage is None else stage)

    def stage_name(self, stage: int) -> str:
        """``octave<k>`` (from 1): the snapshot at a coarse octave's end."""
        return f"octave{stage + 1}"

    def resample_group(self, group: int, parameter: torch.Tensor, previous: int
                       ) -> torch.Tensor:
        """The photo at the current octave's size plus the detail dreamed at octave
        ``previous``, upsampled (:func:`~.functional.carry_detail`), on the CPU as the plain
        loop computes it."""
        positions = self.groups[group]
        dreamed = self.backbone.denormalize(parameter).float().cpu()
        pixels = carry_detail(dreamed, torch.stack([self._photo(i, previous) for i in positions]),
                              torch.stack([self._photo(i) for i in positions]))
        return self.parameterization.encode(pixels, self.backbone.mean.cpu(),
                                            self.backbone.std.cpu())

    def enter_stage(self, stage: int) -> None:
        super().enter_stage(stage)
        if self._trainer is not None:
            for optimizer in self.trainer.optimizers:
                self.set_step_lengths(optimizer)  # a step's length depends on the octave's size

    # ----------------------------------------------------------------- optimization
    def set_step_lengths(self, optimizer: torch.optim.Optimizer) -> None:
        """Steps of ``lr`` per pixel value at the octave's size (for the normalized step, see
        :meth:`~lightning_modules.image_optimization.steps.StepRule.length_per_value`)."""
        for group in optimizer.param_groups:
            group["lr"] = self.step_rule.length_per_value(self.lr, group["params"][0])

    # ----------------------------------------------------------------- results
    def sheet_panels(self, index: int) -> list[tuple[str, torch.Tensor]]:
        return [("photo", self.jobs[index].content),
                (short_title(self.objective_text, 40), self.result_pixels(index))]
