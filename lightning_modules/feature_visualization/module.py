"""Feature visualization and DeepDream: the class visualization's loop on any objective.

:class:`FeatureVisualization` is :class:`~lightning_modules.class_visualization.ClassVisualization`
with the class logit replaced by an objective (:mod:`.objectives`): the same parameterization,
view (jitter, transforms), steps, clamp and blur, checkpoints; only the score differs.
:class:`DeepDream` starts from a photo instead of noise and climbs octaves, coarse to fine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Hashable, Optional, Sequence, Union

import torch

from lightning_modules.class_visualization.functional import Step, make_optimizer, regularize
from lightning_modules.class_visualization.module import ClassVisualization
from lightning_modules.errors import UserInputError, check_positive
from lightning_modules.feature_visualization.functional import (
    carry_detail,
    normalized_step_length,
    objective_loss,
    octave_sizes,
)
from lightning_modules.feature_visualization.objectives import (
    ChannelAtlas,
    Objective,
    parse_objective,
)
from lightning_modules.image_optimization.module import ImageOptimization
from lightning_modules.naming import safe_name, short_title, unique_names
from lightning_modules.style_transfer.scales import ScalePlan, resize_pixels

# Longer objective strings are cut in file names (the sheet's title and config.yaml keep them).
NAME_LENGTH = 80

# A coarser octave than this many pixels on its shorter side leaves the deeper layers no map.
MIN_OCTAVE_SIDE = 16


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


class FeatureVisualization(ClassVisualization):
    """Draw what raises an objective: a channel, a neuron, a direction, a layer, their sums.

    Objectives come from :class:`datamodules.objectives.ObjectiveListData`, one picture per
    entry (an objective given twice: two pictures, which ``diversity`` can set apart), or from
    :class:`datamodules.objectives.ChannelAtlasData`, one picture per channel of a layer
    (:class:`~.objectives.ChannelAtlas` items, expanded against the backbone in
    :meth:`make_jobs`; their pictures also go on one ``atlas_sheet.png``, see
    :meth:`atlas_records`); from Python, :meth:`set_jobs` takes strings,
    :class:`~.objectives.Objective` objects and :class:`~.objectives.ChannelAtlas` items. Pictures
    of one objective are scored together (a batch objective compares them), in one network
    pass with every other objective's. Each step logs ``objective`` (the mean score); files are
    ``<objective>.png`` (e.g. ``channel_blocks.4_12.png``) and its sheet, titled with the
    objective.

    Args:
        **kwargs: The options of
            :class:`~lightning_modules.class_visualization.ClassVisualization` (``l2_reg``,
            ``parameterization``, ``transforms``, ``step``, ``lr``, ``max_jitter``,
            ``image_size``, ``backbone``, ...).
    """

    data_name = ("an ObjectiveListData or ChannelAtlasData datamodule (data: class_path: "
                 "datamodules.objectives.ObjectiveListData)")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.objectives: dict[str, Objective] = {}  # bound, by the text each job gives
        self._chunk_objectives: list[Objective] = []  # the chunk's distinct objectives
        self._chunk_rows: list[list[int]] = []  # per distinct objective, its rows in the chunk
        self._step_scores: list[torch.Tensor] = []
        self.atlas_layers: list[str] = []  # the layers of the run's channel atlases, as written

    # ----------------------------------------------------------------- jobs
    def probe_size(self) -> Optional[int]:
        """The image side objectives are checked at (a neuron's position must be on the map)."""
        return self.image_size

    def bind_objective(self, objective: Union[str, Objective]) -> Objective:
        """``objective`` parsed (if a string) and bound to the backbone, checked."""
        return parse_objective(objective).bind(self.backbone, self.probe_size())

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

    def prepare_targets(self) -> None:
        rows: dict[str, list[int]] = {}
        for job, slot in zip(self.jobs, self.slots):
            rows.setdefault(job.objective, []).append(slot.row)
        self._chunk_objectives = [self.objectives[text] for text in rows]
        self._chunk_rows = list(rows.values())

    # ----------------------------------------------------------------- the step
    def loss_terms(self, group: int, images: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = None if len(self._chunk_objectives) == 1 else self._chunk_rows
        terms, scores = objective_loss(
            images, self.backbone, self._chunk_objectives, rows,
            parameterization=self.parameterization, l2_reg=self.l2_reg,
            max_jitter=self.max_jitter, transforms=self.transforms, generator=self.generator,
            crops=self.crop_views)
        self._step_scores.append(scores.detach())
        return terms

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        # The shared step (losses logged, checked); no class, so no class probabilities.
        self._step_scores = []
        loss = ImageOptimization.training_step(self, batch, batch_idx)
        if self.is_log_step():
            self.log_job_mean("objective", torch.cat(self._step_scores), prog_bar=True)
        return loss

    @property
    def class_records(self) -> Any:
        """Not a class report's: ``callbacks.ClassReport`` looks for this and leaves the run be."""
        raise AttributeError("class_records")

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
                if getattr(job, "atlas", None) is not None]


class DeepDream(FeatureVisualization):
    """DeepDream (Mordvintsev et al. 2015): a photo, changed to raise an objective.

    Photos come from :class:`datamodules.StyleTransferData` (``--data.content``; no style).
    The picture climbs ``octaves`` sizes, each ``octave_scale`` times the last, up to the
    photo's: at each octave the photo at that size plus the detail dreamed so far (upsampled)
    is raised by normalized gradient ascent on the objective, through a random circular jitter,
    and clamped to valid pixels: :func:`~.functional.deep_dream`'s loop, a step at a time.
    The steps (``trainer.max_steps``) are split equally between the octaves, or as
    ``octave_steps`` says.

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
            or ``"adam"``.
        max_jitter: Largest random circular shift in pixels, undone after each step.
        l2_reg: Weight of the L2 penalty ``||image||^2`` on the normalized image.
        blur_every: Blur every this many steps (0: never).
        blur_sigma: Standard deviation of the blur, in pixels.
        clamp: Clamp to ``[-clamp, clamp]`` in normalized units; None: valid pixels.
        **kwargs: ``backbone``, ``weights``, ``channels_last``, ``fast`` of
            :class:`~lightning_modules.image_optimization.ImageOptimization`.
    """

    data_name = ("a StyleTransferData datamodule with photos (data: class_path: "
                 "datamodules.StyleTransferData, init_args: {content: photo.jpg, style: null})")

    def __init__(
        self,
        objective: str = "layer:blocks.4",
        octaves: int = 4,
        octave_scale: float = 1.4,
        octave_steps: Optional[Sequence[int]] = None,
        lr: float = 0.02,
        step: Step = "normalized",
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
        super().__init__(lr=lr, step=step, max_jitter=max_jitter, l2_reg=l2_reg,
                         blur_every=blur_every, blur_sigma=blur_sigma, clamp=clamp,
                         parameterization="pixel", transforms=False,
                         # Not DeepDream's: the photo gives the size, the pixels the start.
                         image_size=224, decay_power=1.0, init_std=1.0, **kwargs)
        self.objective_text = objective
        parse_objective(objective)  # a malformed string is refused now, before any image is read
        self.octaves = octaves
        self.octave_scale = octave_scale
        self.octave_plan = ScalePlan(None, octave_steps)
        self.octave = 0  # the octave the images are at now
        self._restored_octave: Optional[int] = None

    # ----------------------------------------------------------------- jobs and octaves
    def probe_size(self) -> Optional[int]:
        return None  # a neuron's position is checked on each octave's map as it comes

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
        return resize_pixels(job.content, self.octave_size(job.size, self.octave
                                                           if octave is None else octave))

    def create_images(self, jobs: list[Any]) -> list[torch.Tensor]:
        # A fresh chunk starts at the coarsest octave; a restored one at its checkpoint's.
        self.octave = self._restored_octave or 0
        self._restored_octave = None
        self.generator = torch.Generator().manual_seed(torch.initial_seed())
        return [self.parameterization.encode(torch.stack([self._photo(i) for i in positions]),
                                             self.backbone.mean, self.backbone.std)
                for positions in self.groups]

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self._trainer is not None:
            self.octave_plan.step_counts(self.steps_per_chunk, self.octaves)  # refuse bad splits

    @torch.no_grad()
    def enter_octave(self, octave: int) -> None:
        """Go on at octave ``octave``: the photo at its size plus the detail dreamed so far."""
        previous, self.octave = self.octave, octave
        for group, positions in enumerate(self.groups):
            image = self.images[group]
            dreamed = self.backbone.denormalize(image.detach()).float().cpu()
            pixels = carry_detail(dreamed, torch.stack([self._photo(i, previous) for i in positions]),
                                  torch.stack([self._photo(i) for i in positions]))
            encoded = self.parameterization.encode(pixels, self.backbone.mean.cpu(),
                                                   self.backbone.std.cpu())
            image.data = self._in_memory_format(encoded.to(image.device, image.dtype))
        if self._trainer is not None:
            for optimizer in self.trainer.optimizers:
                optimizer.state.clear()  # Adam's moments belonged to the previous size
                self._set_step_lengths(optimizer)

    def before_step(self, step: int) -> None:
        octave = self.octave_plan.scale_at(step, self.steps_per_chunk, self.octaves)
        if octave != self.octave:
            self.enter_octave(octave)

    def snapshot_name(self, steps_taken: int) -> Optional[str]:
        """``octave<k>`` after an octave's last step: the image writer keeps that picture."""
        if self.octave_plan.is_scale_end(steps_taken, self.steps_per_chunk, self.octaves):
            return f"octave{self.octave + 1}"
        return None

    # ----------------------------------------------------------------- optimization
    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = make_optimizer(self.step_rule, [self.images[0]], self.lr,
                                   fused=self.fused_optimizer)
        for image in list(self.images)[1:]:
            optimizer.add_param_group({"params": [image]})
        self._set_step_lengths(optimizer)
        return optimizer

    def _set_step_lengths(self, optimizer: torch.optim.Optimizer) -> None:
        """Normalized steps of ``lr`` per pixel value (RMS) at the octave's size (see
        :func:`~.functional.normalized_step_length`)."""
        if self.step_rule != "normalized":
            return
        for group in optimizer.param_groups:
            group["lr"] = normalized_step_length(self.lr, group["params"][0])

    def after_step(self, step: int) -> None:
        low, high = self._bounds()
        for image in self.images:
            regularize(image, self.parameterization, step, low.to(self.device),
                       high.to(self.device), self.blur_every, self.blur_sigma)

    # ----------------------------------------------------------------- results
    def sheet_panels(self, index: int) -> list[tuple[str, torch.Tensor]]:
        return [("photo", self.jobs[index].content),
                (short_title(self.objective_text, 40), self.result_pixels(index))]

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["deep_dream_octave"] = self.octave

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The images must have the checkpoint's octave's size before the checks and the load.
        octave = int(checkpoint.get("deep_dream_octave", 0))
        if not 0 <= octave < self.octaves:
            raise UserInputError("The checkpoint was made with other octaves: resume with the "
                                 "interrupted run's options (its config.yaml).")
        self._restored_octave = octave
        if octave != self.octave and len(self.images):
            self.octave = octave
            for group, positions in enumerate(self.groups):
                # Only the shape matters: the checkpoint's pixels replace these.
                shape = self._photo(positions[0]).shape[-2:]
                self.images[group].data = self.images[group].data.new_zeros(
                    len(positions), 3, *shape)
        super().on_load_checkpoint(checkpoint)
        self.octave = octave
        self._restored_octave = None
