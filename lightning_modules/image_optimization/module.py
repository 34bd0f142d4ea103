"""The shared "the image is the parameter" LightningModule.

A technique optimizes one or more images against a frozen backbone. This base class owns what
they all share: the backbone, the image parameters (one tensor per image size, see
:mod:`~lightning_modules.image_optimization.jobs`), the run's jobs, chunks and processes, the
losses (kept on the device, checked for divergence, logged), the fast path and checkpoints.

**How data reaches a module.** One path: :meth:`ImageOptimization.set_jobs`. In a Lightning run
``setup`` calls it with the datamodule's ``jobs`` (a list) and ``batch_size`` (the most jobs one
process optimizes at once), unless it was called before (from Python, without a datamodule).
The technique turns those items into its own jobs (:meth:`make_jobs`); every job has a
``name``, the stem of its output files.

Each chunk of jobs is one training epoch of ``trainer.max_steps`` steps: ``max_steps`` is the
number of steps *every job* gets, and the step the hooks see counts from 0 in each chunk. A run
with one chunk and one process is exactly the plain loop.

A technique implements :meth:`create_images` (the starting parameters of this process's current
jobs, one tensor per size group), :meth:`loss_terms` (each weighted loss term, one value per
image) and ``configure_optimizers`` (its own optimizers and schedules), and may implement
:meth:`make_jobs`, :meth:`job_size`, :meth:`prepare_targets`, :meth:`before_step`,
:meth:`after_step` and :meth:`chunk_finished`. It returns results (``result_pixels``,
``sheet_panels`` and its own records); callbacks write every file.

**Stages.** A chunk's steps may be split into stages, each with its own picture size
(coarse-to-fine scales, DeepDream's octaves). A technique with stages implements
:meth:`stage_count`, :meth:`stage_steps` and :meth:`stage_size` (and may name them with
:meth:`stage_name`); the base does the rest: ``create_images`` makes the pictures at the size
of ``self.stage_index``, the first step of a stage enters it (:meth:`enter_stage`: the images
resampled by :meth:`resample_group`, a fresh optimizer state, the targets prepared again), the
end of a stage that is not the last is a snapshot, and a checkpoint keeps the stage it was
taken in (under :attr:`stage_key`), so a run resumed mid-stage goes on at that stage's size.
"""

from __future__ import annotations

import inspect
from typing import Any, Hashable, Optional, Sequence, Union

import pytorch_lightning as pl
import torch
from torch import nn

from lightning_modules.backbones import DEFAULT_BACKBONE, Backbone, load_backbone
from lightning_modules.errors import UserInputError, check_fits_in_memory
from lightning_modules.image_optimization.fast_path import fast_path_mode
from lightning_modules.image_optimization.jobs import ImageSlot, JobPlan, size_groups
from lightning_modules.image_optimization.metrics import LossRecord
from lightning_modules.image_optimization.parameterizations import Parameterization, PixelImage
from lightning_modules.image_optimization.resize import resize_pixels
from lightning_modules.image_optimization.strategy import ImageDDPStrategy


class ImageOptimization(pl.LightningModule):
    """Base class of techniques whose learnable parameters are images.

    Args:
        backbone: Name of the frozen classifier (see ``lightning_modules.available_backbones``;
            also ``timm:<model>`` and ``torchvision:<model>``). From Python it may also be a
            :class:`Backbone` itself, e.g. ``classifier_backbone(your_model)``.
        weights: ``"default"`` (ImageNet weights), ``"random"``, or a local state-dict file.
        channels_last: Keep the images and the backbone in channels-last memory format
            (convolutions on tensor-core GPUs are fastest in it; same results up to rounding).
        fast: The GPU fast path: the backbone runs through ``torch.compile`` with CUDA graphs
            (mode ``reduce-overhead``), in channels-last, with a fused Adam. The first steps
            pay the compilation (tens of seconds). A run on the CPU, where compiled steps
            measured slower than eager ones, says so and runs eager. See
            ``benchmarks/README.md`` for what it buys.
        recompute_features: Activation checkpointing: the backward pass keeps only each
            feature layer's output and recomputes what is inside the layers, so a step needs
            several times less memory per pixel (the largest pictures: see the README's memory
            table) for about a third more time.
    """

    #: What the technique's jobs come from, for the error message when they are missing.
    data_name = "a datamodule with jobs"

    #: The checkpoint's key for the stage its images are at, and what a stage is called in the
    #: message that refuses a checkpoint of other stages (a technique keeps its older names).
    stage_key = "image_stage"
    stage_word = "stages"

    # ``backbone``: a name on the command line; Python callers may pass a Backbone object.
    def __init__(self, backbone: Union[str, Backbone] = DEFAULT_BACKBONE, weights: str = "default",
                 channels_last: bool = False, fast: bool = False,
                 recompute_features: bool = False) -> None:
        super().__init__()
        if isinstance(backbone, Backbone):  # your own network, from Python
            self.backbone_name, self._backbone_object = backbone.name, True
            self.backbone: Backbone = backbone
        else:
            self.backbone_name, self._backbone_object = backbone, False
            self.backbone = load_backbone(backbone, weights)
        self.fast = fast
        self.channels_last = channels_last
        self.compile_mode: Optional[str] = None  # set by setup when the fast path is on
        if channels_last:
            self.backbone.use_channels_last()
        self.recompute_features = recompute_features
        self.backbone.use_recomputation(recompute_features)
        self.parameterization: Parameterization = PixelImage()
        self.images = nn.ParameterList()
        self.slots: list[ImageSlot] = []
        self.groups: list[list[int]] = []  # per image group, the positions of its jobs
        self.plan: Optional[JobPlan] = None
        self.jobs: list[Any] = []  # this process's jobs of the current chunk
        self._data: Optional[tuple[list[Any], Optional[int]]] = None
        self._finish_chunk = False
        self._restored = False  # set by on_load_checkpoint until the first batch starts
        self._saved_optimizer: Optional[str] = None
        self.losses = LossRecord()
        self.steps_per_chunk = 0  # trainer.max_steps: the steps every job gets (set by setup)
        self.stage_index = 0  # the stage the images are at now (see "Stages" above)

    # ----------------------------------------------------------------- the technique's part
    def make_jobs(self, items: Sequence[Any]) -> list[Any]:
        """The technique's jobs from the data's items (default: the items are the jobs)."""
        return list(items)

    def job_size(self, job: Any) -> Hashable:
        """A job's image size: jobs of different sizes never share a parameter or a chunk."""
        return None

    def create_images(self, jobs: list[Any]) -> list[torch.Tensor]:
        """The starting parameters of ``jobs``, one tensor per group of ``self.groups``.

        Called for each chunk, after ``self.slots`` and ``self.groups`` are set; the index in
        the run of ``jobs[i]`` is ``self.job_indices[i]`` (seed per-job randomness with it, so
        that a job starts the same however the jobs are split).
        """
        raise NotImplementedError

    def loss_terms(self, group: int, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each weighted loss term of one group, as ``{name: [B] tensor}``; they are summed."""
        raise NotImplementedError

    def prepare_targets(self) -> None:
        """Compute what the losses compare against, once per chunk, on the training device."""

    def before_step(self, step: int) -> None:
        """Called before step ``step`` (counted from 0 in each chunk) computes its losses."""

    def after_step(self, step: int) -> None:
        """Called after the optimizer took step ``step``."""

    def snapshot_name(self, steps_taken: int) -> Optional[str]:
        """A name for the images after ``steps_taken`` steps of the chunk, if they are a stage
        worth keeping; the image writer saves them as ``snapshots/<job>_<name>.png``. Default:
        the end of every stage but the last, named by :meth:`stage_name`."""
        if steps_taken in self._stage_ends()[:-1]:
            return self.stage_name(self.stage_index)
        return None

    def chunk_finished(self) -> bool:
        """Whether this process's jobs are done before the chunk's last step (default: never)."""
        return False

    # ----------------------------------------------------------------- stages
    def stage_count(self) -> int:
        """How many stages the current chunk's pictures go through (default 1: no stages)."""
        return 1

    def stage_steps(self) -> list[int]:
        """The steps of each stage, summing to ``trainer.max_steps`` (default: one stage).

        Raises:
            UserInputError: If the steps cannot be split so (called in ``setup``, before any
                step is taken).
        """
        return [self.steps_per_chunk]

    def stage_size(self, index: int, stage: Optional[int] = None) -> Optional[tuple[int, int]]:
        """Job ``index``'s picture size ``(H, W)`` at ``stage`` (default: the current one);
        None: the technique has no stages (its pictures keep their size)."""
        return None

    def stage_name(self, stage: int) -> str:
        """The name of stage ``stage`` in snapshot file names (default ``stage<k>``, from 1)."""
        return f"stage{stage + 1}"

    def stage_at(self, step: int) -> int:
        """The stage of step ``step`` (counted from 0 in the chunk)."""
        ends = self._stage_ends()
        return next((stage for stage, end in enumerate(ends) if step < end), len(ends) - 1)

    def _stage_ends(self) -> list[int]:
        """The step that ends each stage (the last one's is ``trainer.max_steps``)."""
        ends, total = [], 0
        for steps in self.stage_steps():
            total += steps
            ends.append(total)
        return ends

    def resize_for_stage(self, inputs: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Normalized pictures ``[N, 3, H, W]`` at another stage's ``size``: bilinearly,
        antialiased when shrinking (see :func:`~.resize.resize_pixels`)."""
        return resize_pixels(inputs, size)

    def resample_group(self, group: int, parameter: torch.Tensor, previous: int
                       ) -> Optional[torch.Tensor]:
        """Group ``group``'s parameter, made at stage ``previous``, at the current stage.

        The default resizes the picture, not the parameter (a spectrum cannot be resized as
        pixels are), and encodes it again. Returns None when the size does not change.
        """
        positions = self.groups[group]
        size, old_size = (self.stage_size(positions[0]),
                          self.stage_size(positions[0], previous))
        if size is None or old_size == size:
            return None
        mean, std = self.backbone.mean, self.backbone.std
        inputs = self.parameterization.to_inputs(parameter, mean, std, old_size[1])
        pixels = self.backbone.denormalize(self.resize_for_stage(inputs, size))
        return self.parameterization.encode(pixels, mean, std)

    @torch.no_grad()
    def _resample_images(self, previous: int) -> None:
        """Bring every image group from stage ``previous`` to the current stage's size."""
        for group, image in enumerate(self.images):
            resampled = self.resample_group(group, image.detach(), previous)
            if resampled is not None:
                image.data = self._in_memory_format(resampled.to(image.device, image.dtype))

    @torch.no_grad()
    def enter_stage(self, stage: int) -> None:
        """Go on at stage ``stage``: the images resampled, a fresh optimizer state, the targets
        prepared again (they may depend on the size).

        The optimizer keeps its parameters (their tensors change size in place) and forgets its
        moments or curvature pairs, which belonged to the previous stage's pixels.
        """
        previous, self.stage_index = self.stage_index, stage
        self._resample_images(previous)
        if self._trainer is not None:
            for optimizer in self.trainer.optimizers:
                optimizer.state.clear()
                if isinstance(optimizer, torch.optim.LBFGS):
                    # L-BFGS flattens its parameters and caches their size; it must count again.
                    optimizer._numel_cache = None
        self._prepare_targets()

    # ----------------------------------------------------------------- jobs
    def set_jobs(self, items: Sequence[Any], batch_size: Optional[int] = None) -> None:
        """Give the module its data: every item of the run, and the most jobs optimized at once.

        Args:
            items: The data's items, in the same order in every process.
            batch_size: The most jobs one process optimizes at once; None: all at once.
        """
        self._data = (list(items), batch_size)

    # The plan's view of the current chunk (see JobPlan): empty before setup.
    job_indices = property(lambda self: self.plan.indices if self.plan else [])
    idle = property(lambda self: self.plan is not None and self.plan.idle)
    chunk = property(lambda self: self.plan.chunk if self.plan else 0)
    chunk_size = property(lambda self: self.plan.chunk_size if self.plan else len(self.slots))

    def _world(self) -> tuple[int, int]:
        if self._trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def _plan_jobs(self) -> None:
        if self._data is None:
            datamodule = self.trainer.datamodule if self._trainer is not None else None
            if datamodule is None or not hasattr(datamodule, "jobs"):
                raise UserInputError(f"{type(self).__name__} needs {self.data_name}.")
            self.set_jobs(datamodule.jobs, getattr(datamodule, "batch_size", None))
        items, batch_size = self._data
        jobs = self.make_jobs(items)
        self.plan = JobPlan(jobs, [self.job_size(job) for job in jobs], batch_size,
                            *self._world())

    def _start_images(self) -> None:
        """Create the current chunk's images (in place of the previous chunk's)."""
        self.jobs = self.plan.current()
        self.slots, self.groups = size_groups([job.name for job in self.jobs],
                                              [self.job_size(job) for job in self.jobs])
        self.stage_index = 0  # a fresh chunk starts at its first stage
        groups = [self._in_memory_format(group) for group in self.create_images(self.jobs)]
        if len(self.images) == 0:
            self._check_memory(groups)
            for group in groups:
                self.images.append(nn.Parameter(group.detach().clone()))
            return
        if len(groups) != len(self.images):
            raise RuntimeError("Every chunk must have as many image groups as the first.")
        for parameter, group in zip(self.images, groups):
            group = group.detach().to(parameter.device, parameter.dtype)
            if group.shape == parameter.shape:
                # In place: the parameter keeps its address, which CUDA graphs were recorded with.
                with torch.no_grad():
                    parameter.copy_(group)
            else:
                parameter.data = group.clone()

    def _check_memory(self, groups: list[torch.Tensor]) -> None:
        """Refuse images whose optimization could not fit in the memory left, before making it.

        Past that memory the kernel kills the process, with no message. The least a step needs:
        the parameters and their gradients (two copies of ``groups``), and the backbone's first
        layer's output on every pixel, kept for the backward pass. Deeper features and the
        optimizer's state come on top.
        """
        values = sum(group.numel() * group.element_size() for group in groups)
        pixels = sum(group.shape[0] * group.shape[-2] * group.shape[-1] for group in groups
                     if group.dim() == 4)  # a spectrum (Fourier) is not in pixels: left out
        try:
            with torch.no_grad():
                probe = self.backbone.features[0](torch.zeros(1, 3, 32, 32,
                                                              device=self.backbone.mean.device))
            first_layer = probe.numel() * probe.element_size() / (32 * 32)  # bytes a pixel
        except RuntimeError:  # a network of one's own that will not take 32 px: count no features
            first_layer = 0
        check_fits_in_memory(
            f"Optimizing {len(self.jobs)} image(s) (their values, gradients and first layer's "
            f"features)", 2 * values + pixels * first_layer,
            "give smaller images or fewer at once (batch_size)")

    # ----------------------------------------------------------------- results
    def result_pixels(self, index: int) -> torch.Tensor:
        """Job ``index``'s current image as 0-1 pixels ``[3, H, W]`` on the CPU."""
        slot = self.slots[index]
        with torch.no_grad():
            parameter = self.images[slot.group][slot.row : slot.row + 1].detach().float()
            pixels = self.parameterization.to_pixels(parameter, self.backbone.mean,
                                                     self.backbone.std,
                                                     self.picture_width(slot.group))
        return pixels[0].clamp(0, 1).cpu()

    def result_stem(self, index: int) -> str:
        """Where job ``index``'s result is saved, relative to the run folder and without
        ``.png`` (default: the job's name)."""
        return self.slots[index].name

    def picture_width(self, group: int) -> Optional[int]:
        """The width of group ``group``'s pictures, for a parameter whose shape does not say it
        (a spectrum's); ``None``: the parameterization's own (every group is one size)."""
        return None

    def sheet_panels(self, index: int) -> list[tuple[str, torch.Tensor]]:
        """Titled pictures for job ``index``'s side-by-side sheet; the result comes last."""
        return [("result", self.result_pixels(index))]

    # ----------------------------------------------------------------- Lightning hooks
    def save_hyperparameters(self, *args: Any, ignore: Any = None, frame: Any = None,
                             logger: bool = True) -> None:
        """Lightning's, except that a Backbone given as an object is not a hyperparameter (its
        weights are in the checkpoint already; its name is ``backbone_name``)."""
        ignore = [ignore] if isinstance(ignore, str) else list(ignore or [])
        if self._backbone_object:
            ignore.append("backbone")
        super().save_hyperparameters(*args, ignore=ignore,
                                     frame=frame or inspect.currentframe().f_back, logger=logger)

    def setup(self, stage: str) -> None:
        if self.fast and self._trainer is not None and self.compile_mode is None:
            # Channels-last now (before the images are made); compilation in on_fit_start.
            self.compile_mode = fast_path_mode(self.trainer, self.backbone)
            self.channels_last = self.channels_last or self.compile_mode is not None
        if self.plan is None:
            self._plan_jobs()
        if len(self.images) == 0:  # fit after fit (or a restored checkpoint) keeps its images
            self._start_images()
        if self._trainer is not None and stage == "fit":
            self._plan_loop()
            if self.jobs:
                self._check_stages()

    def _check_stages(self) -> None:
        """Refuse stages that do not fit the steps, and pictures whose last (largest) stage
        would not fit in memory, before the first step (the images were made at the first)."""
        self.stage_steps()
        last = self.stage_count() - 1
        if last > 0:
            self._check_memory([torch.empty(len(positions), 3, *self.stage_size(positions[0], last),
                                            device="meta") for positions in self.groups])

    @property
    def fused_optimizer(self) -> bool:
        """Whether Adam runs as one fused kernel (the fast path, once it is on)."""
        return self.compile_mode is not None

    def _in_memory_format(self, group: torch.Tensor) -> torch.Tensor:
        """An image group in the run's memory format (4-D images only; a spectrum stays)."""
        if self.channels_last and group.dim() == 4:
            return group.contiguous(memory_format=torch.channels_last)
        return group

    def _plan_loop(self) -> None:
        """One epoch of ``max_steps`` steps per chunk (see the module docstring)."""
        trainer = self.trainer
        if trainer.world_size > 1 and not isinstance(trainer.strategy, ImageDDPStrategy):
            raise UserInputError(
                f"Several processes need --trainer.strategy image_ddp (got "
                f"{type(trainer.strategy).__name__}, which would mix the processes' images)."
            )
        steps = trainer.max_steps
        if steps is None or steps <= 0:
            raise UserInputError(
                f"trainer.max_steps must be a positive number of steps, got {steps}.")
        trainer.limit_train_batches = steps
        self.steps_per_chunk = steps
        trainer.fit_loop.max_epochs = len(self.plan)
        trainer.fit_loop.epoch_loop.max_steps = steps * len(self.plan)

    def on_fit_start(self) -> None:
        if self.compile_mode is not None and self.backbone.compile_mode is None:
            self.backbone.compile_network(self.compile_mode)
        self._prepare_targets()

    def _prepare_targets(self) -> None:
        # Under the run's precision (e.g. bf16 autocast), so targets match what steps compute.
        with torch.no_grad(), self.trainer.precision_plugin.forward_context():
            self.prepare_targets()

    def on_train_epoch_start(self) -> None:
        self._follow_epoch()

    def _follow_epoch(self) -> None:
        """Begin the chunk of the current epoch, unless it is under way."""
        if self.current_epoch != self.plan.chunk:
            self.plan.chunk = self.current_epoch
            self._start_images()
            self._prepare_targets()
            # A fresh optimizer for the fresh images, as a run with only this chunk would have.
            self.trainer.strategy.setup_optimizers(self.trainer)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Optional[int]:
        # Resumed from a chunk's last step, Lightning goes on at the next epoch's first batch
        # without starting that epoch (see callbacks.checkpoint.RunCheckpoint).
        self._follow_epoch()
        if self._restored:
            # The checkpoint was saved before this flag was set at its step's end (callbacks
            # run before the module's hook): decide again, or a finished chunk takes a step.
            self._restored = False
            self._finish_chunk = self.trainer.strategy.reduce_boolean_decision(
                self.idle or self.chunk_finished(), all=True)
        if self._finish_chunk:
            self._finish_chunk = False
            # Lightning counts the refused batch as ready and processed, never as started; with
            # its totals so apart it no longer sees that a later checkpoint was saved at a
            # batch's end, and a run resumed from one would take that batch again (one step too
            # many). Uncounted here, the batch never was.
            progress = self.trainer.fit_loop.epoch_loop.batch_progress
            for counts in (progress.total, progress.current):
                counts.ready -= 1
                counts.processed -= 1
            return -1  # Lightning ends the epoch: the next chunk starts
        if self.backbone.compile_mode == "reduce-overhead":
            # A new step: the CUDA graphs may reuse the previous step's output memory.
            torch.compiler.cudagraph_mark_step_begin()
        stage = self.stage_at(batch_idx)
        if stage != self.stage_index:
            self.enter_stage(stage)
        self.before_step(batch_idx)
        return None

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any,
                       optimizer_closure: Any = None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.after_step(batch_idx)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Every process must agree, or one would wait for the others forever.
        finished = self.idle or self.chunk_finished()
        self._finish_chunk = self.trainer.strategy.reduce_boolean_decision(finished, all=True)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        sums: dict[str, torch.Tensor] = {}
        for group, images in enumerate(self.images):
            for name, values in self.loss_terms(group, images).items():
                sums[name] = sums[name] + values.sum() if name in sums else values.sum()
        total = torch.stack(list(sums.values())).sum()
        self.record_losses({**{f"{name}_loss": value for name, value in sums.items()},
                            "loss": total})
        return total

    # ----------------------------------------------------------------- metrics, logged cheaply
    def is_log_step(self) -> bool:
        """Whether Lightning writes the loggers after this step (its ``log_every_n_steps`` rule)."""
        every = self.trainer.log_every_n_steps
        return every > 0 and (self.global_step + 1) % every == 0

    def log_job_mean(self, name: str, values: torch.Tensor, prog_bar: bool = False) -> None:
        """Log the mean per job over the current chunk of every process.

        Args:
            name: The metric's name.
            values: The values of this process's jobs (summed; any shape).
            prog_bar: Show it in the progress bar.
        """
        total = values.detach().float().sum() * (0.0 if self.idle else 1.0)
        self.log(name, total / self.chunk_size, prog_bar=prog_bar, on_step=True, on_epoch=False,
                 sync_dist=True, reduce_fx="sum")

    def record_losses(self, losses: dict[str, torch.Tensor]) -> None:
        """Keep this step's losses, per job, on the device; check and log them on logging steps.

        Reading a value on the host waits for the GPU, and every ``self.log`` costs Lightning
        about 0.5 ms of Python, so both happen once every ``log_every_n_steps`` steps.

        Args:
            losses: Each term summed over this process's jobs, and the total, by metric name.
        """
        # Per job: every process's jobs of the chunk count (an idle process adds nothing).
        self.losses.append(self.global_step + 1, losses,
                           (0.0 if self.idle else 1.0) / self.chunk_size)
        if self.is_log_step():
            self.flush_losses(log=True)

    def flush_losses(self, log: bool) -> None:
        """Read the pending steps (stopping on NaN/inf), keep the rows, log the last step.

        Every process calls it at the same steps: one collective sums all pending steps over
        the processes, so all of them see the same values and stop together on divergence.
        """
        last = self.losses.flush(lambda values: self.trainer.strategy.reduce(values,
                                                                              reduce_op="sum"))
        if log and last is not None:
            for name, value in zip(self.losses.names, last):
                self.log(name, value, prog_bar=True, on_step=True, on_epoch=False)

    def take_loss_rows(self) -> list[dict[str, float]]:
        """The loss rows read since the last call (``step`` and each term), for ``LossHistory``."""
        return self.losses.take_rows()

    def on_train_epoch_end(self) -> None:
        # The chunk's last steps go to losses.csv; self.log(on_step=True) is not allowed here.
        self.flush_losses(log=False)

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.flush_losses(log=False)  # every process saves: the rows not yet taken travel along
        checkpoint["loss_rows"] = list(self.losses.rows)
        state = checkpoint["state_dict"]
        for key in [key for key in state if key.startswith("backbone.")]:
            del state[key]  # frozen and rebuilt from the hyperparameters: keep checkpoints small
        optimizers = self.trainer.optimizers if self._trainer is not None else []
        checkpoint[self.stage_key] = self.stage_index
        checkpoint["image_jobs"] = {"chunk": self.chunk, "world_size": self._world()[0],
                                    "slots": [[s.name, s.group, s.row] for s in self.slots],
                                    "optimizer": type(optimizers[0]).__name__ if optimizers
                                    else None}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("image_jobs")
        if saved is None:
            raise UserInputError("This checkpoint was not written by an image-optimization run.")
        world = self._world()[0]
        if saved["world_size"] != world:
            raise UserInputError(
                f"The checkpoint was written by {saved['world_size']} processes; resume it with as "
                f"many (--trainer.devices, --trainer.num_nodes), not {world}."
            )
        self.losses.rows = list(checkpoint.get("loss_rows", []))
        if not 0 <= saved["chunk"] < len(self.plan):
            raise UserInputError("The checkpoint holds other jobs than this run: resume with the "
                                 "same data options as the interrupted run.")
        if saved["chunk"] != self.chunk:
            self.plan.chunk = saved["chunk"]
            self._start_images()
        if [[s.name, s.group, s.row] for s in self.slots] != saved["slots"]:
            raise UserInputError("The checkpoint holds other jobs than this run: resume with the "
                                 "same data options as the interrupted run.")
        # The images take the checkpoint's stage's size before their shapes are checked and
        # its values replace them.
        stage = int(checkpoint.get(self.stage_key, 0))
        if not 0 <= stage < self.stage_count():
            raise UserInputError(f"The checkpoint was made with other {self.stage_word}: resume "
                                 "with the interrupted run's options (its config.yaml).")
        if stage != self.stage_index:
            previous, self.stage_index = self.stage_index, stage
            self._resample_images(previous)
        for index, group in enumerate(self.images):
            stored = checkpoint["state_dict"].get(f"images.{index}")
            if stored is None or tuple(stored.shape) != tuple(group.shape):
                had = "none" if stored is None else "x".join(map(str, stored.shape[-2:]))
                raise UserInputError(
                    f"The checkpoint's images are {had} pixels, this run's "
                    f"{'x'.join(map(str, group.shape[-2:]))}: resume with the interrupted run's "
                    "options (image_size, ...; they are in its config.yaml).")
        checkpoint["state_dict"].update(
            {f"backbone.{key}": value for key, value in self.backbone.state_dict().items()})
        self._saved_optimizer = saved.get("optimizer")
        self._restored = True

    def on_train_start(self) -> None:
        # The optimizers exist only now; another one would be handed the saved one's state.
        built = type(self.trainer.optimizers[0]).__name__ if self.trainer.optimizers else None
        if self._saved_optimizer is not None and built is not None \
                and built != self._saved_optimizer:
            raise UserInputError(
                f"The checkpoint's optimizer is {self._saved_optimizer}, this run's {built}: "
                "resume with the interrupted run's options (its config.yaml).")
