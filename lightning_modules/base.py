"""The shared "the image is the parameter" LightningModule.

A technique optimizes one or more images against a frozen backbone. This base class owns what
they all share: the backbone, the image parameters (one ``[B, 3, H, W]`` tensor per image size,
kept in the backbone's normalized input space as the homework does), the optimizer and its
learning-rate drop, clamping, logging of every loss term, and the divergence check.

It also owns how a run's jobs are split (see :func:`plan_chunks`): into *chunks* that are
optimized one after another (``batch_size`` jobs per process at a time, so memory stays bounded),
and, within a chunk, across processes (``--trainer.devices N``; each process optimizes only its
own jobs). Each chunk is one training epoch of ``trainer.max_steps`` steps: ``max_steps`` is the
number of steps *every job* gets, and the step a schedule sees (``batch_idx``) counts from 0 in
each chunk. A run with one chunk and one process is exactly the plain loop.

A subclass implements :meth:`ImageOptimization.create_images` (the starting images of the jobs
that :meth:`ImageOptimization.my_jobs` hands this process) and
:meth:`ImageOptimization.loss_terms` (each weighted loss term, one value per image).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Hashable, Literal, Optional, Sequence, TypeVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from lightning_modules.backbones import DEFAULT_BACKBONE, Backbone, load_backbone
from lightning_modules.errors import UserInputError
from lightning_modules.strategy import ImageDDPStrategy

Job = TypeVar("Job")


class DivergedError(RuntimeError):
    """The optimization produced NaN or infinite losses."""


@dataclass
class ImageSlot:
    """Where one job's image lives: row ``row`` of image group ``group``."""

    name: str
    group: int
    row: int


def check_non_negative(name: str, values: float | Sequence[float]) -> None:
    """Raise a one-sentence error if a weight (or any of a list of weights) is negative or NaN."""
    for value in [values] if isinstance(values, (int, float)) else values:
        if not value >= 0:  # also catches NaN
            raise UserInputError(f"{name} must be zero or positive, got {value}.")


def plan_chunks(sizes: Sequence[Hashable], batch_size: Optional[int],
                world_size: int) -> list[list[int]]:
    """Split a run's jobs into chunks that are optimized one after another.

    Process ``r`` of ``world_size`` optimizes items ``r, r + world_size, ...`` of each chunk, so a
    chunk holds at most ``batch_size`` jobs per process.

    Args:
        sizes: One key per job, its image size: with a ``batch_size``, a chunk holds one size.
        batch_size: The most jobs one process optimizes at once; None puts every job in one
            chunk (of any sizes).
        world_size: The number of processes.

    Returns:
        The job indices of each chunk, in order; each job is in exactly one chunk.
    """
    if batch_size is None:
        return [list(range(len(sizes)))] if len(sizes) else []
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserInputError(f"batch_size must be a positive number of jobs, got {batch_size!r}.")
    by_size: dict[Hashable, list[int]] = defaultdict(list)
    for index, size in enumerate(sizes):
        by_size[size].append(index)
    width = batch_size * world_size
    return [indices[start:start + width] for indices in by_size.values()
            for start in range(0, len(indices), width)]


def fast_path_compile_mode(device: torch.device) -> Optional[str]:
    """``torch.compile``'s mode for the fast path on ``device``; None: stay eager.

    On a GPU, CUDA graphs (``reduce-overhead``): at batch 1 a small network's step is bound by
    kernel launches, which a graph replays at once. On a CPU nothing is gained: compiled steps
    of EfficientNet-Lite0 measured about 2x slower than eager ones (benchmarks/README.md).
    """
    return "reduce-overhead" if device.type == "cuda" else None


class ImageOptimization(pl.LightningModule):
    """Base class of techniques whose learnable parameters are images.

    Args:
        backbone: Name of the frozen classifier (see ``lightning_modules.available_backbones``).
        weights: ``"default"`` (ImageNet weights), ``"random"``, or a local state-dict file.
        optimizer: ``"adam"`` or ``"lbfgs"`` (each trainer step is one L-BFGS iteration).
        lr: Learning rate.
        lr_drop_step: Step at which the learning rate drops to ``lr_drop_to`` (None: never).
        lr_drop_to: The learning rate after ``lr_drop_step``.
        restart_optimizer_at_drop: Forget Adam's moments at the drop, as the homework does by
            creating a new optimizer.
        clamp: Before each step, clamp the image to ``[-clamp, clamp]`` in normalized units (the
            homework uses 1.5); None clamps to the valid pixel range of the backbone.
        clamp_until: Clamp only before steps ``< clamp_until`` (None: every step).
        channels_last: Keep the images and the backbone in channels-last memory format
            (convolutions on tensor-core GPUs are fastest in it; same results up to rounding).
        fast: The GPU fast path: the backbone runs through ``torch.compile`` with CUDA graphs
            (mode ``reduce-overhead``), in channels-last, with a fused Adam. The first steps
            pay the compilation (tens of seconds). A run on the CPU, where compiled steps
            measured slower than eager ones, says so and runs eager. See
            ``benchmarks/README.md`` for what it buys.
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        weights: str = "default",
        optimizer: Literal["adam", "lbfgs"] = "adam",
        lr: float = 0.05,
        lr_drop_step: Optional[int] = None,
        lr_drop_to: Optional[float] = None,
        restart_optimizer_at_drop: bool = False,
        clamp: Optional[float] = None,
        clamp_until: Optional[int] = None,
        channels_last: bool = False,
        fast: bool = False,
    ) -> None:
        super().__init__()
        if optimizer not in ("adam", "lbfgs"):
            raise UserInputError(f"Unknown optimizer '{optimizer}'; choose 'adam' or 'lbfgs'.")
        if not lr > 0 or (lr_drop_to is not None and not lr_drop_to > 0):
            raise UserInputError("Learning rates must be positive.")
        if clamp is not None and not clamp > 0:
            raise UserInputError(f"clamp must be positive (or null for the pixel range), got {clamp}.")
        self.backbone_name = backbone
        self.backbone: Backbone = load_backbone(backbone, weights)
        self.optimizer_name = optimizer
        self.lr = lr
        self.lr_drop_step = lr_drop_step
        self.lr_drop_to = lr_drop_to
        self.restart_optimizer_at_drop = restart_optimizer_at_drop
        self.clamp = clamp
        self.clamp_until = clamp_until
        self.fast = fast
        self.channels_last = channels_last
        self.compile_mode: Optional[str] = None  # set by setup when the fast path is on
        if channels_last:
            self.backbone.use_channels_last()
        self.images = nn.ParameterList()
        self.slots: list[ImageSlot] = []
        # How the run's jobs are split (filled by my_jobs): see plan_chunks.
        self.chunks: Optional[list[list[int]]] = None
        self.chunk = 0
        self.job_indices: list[int] = []
        self.idle = False  # this process has no job in the chunk and repeats one, writing nothing
        self._finish_chunk = False
        # Each step's losses (per job) stay on the device until a logging step: see record_losses.
        self.loss_names: list[str] = []
        self.loss_rows: list[dict[str, float]] = []
        self._pending_losses: list[tuple[int, torch.Tensor]] = []

    # ----------------------------------------------------------------- to be implemented
    def create_images(self) -> list[torch.Tensor]:
        """Return the starting images, one normalized ``[B, 3, H, W]`` tensor per group.

        Pick the jobs with :meth:`my_jobs` (every job of the run in, this process's jobs of the
        current chunk out) and fill ``self.slots`` with one :class:`ImageSlot` per job returned.
        Called again for each chunk.
        """
        raise NotImplementedError

    def loss_terms(self, group: int, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each weighted loss term of one group, as ``{name: [B] tensor}``; they are summed."""
        raise NotImplementedError

    def prepare_targets(self) -> None:
        """Compute what the losses compare against, once per chunk, on the training device."""

    def chunk_finished(self) -> bool:
        """Whether this process's jobs are done before the chunk's last step (default: never)."""
        return False

    # ----------------------------------------------------------------- jobs
    def my_jobs(self, all_jobs: Sequence[Job],
                sizes: Optional[Sequence[Hashable]] = None) -> list[Job]:
        """The jobs this process optimizes now: its share of the current chunk.

        The first call plans the chunks from the number of jobs, their ``sizes``, the
        datamodule's ``batch_size`` and the number of processes. Afterwards
        ``self.job_indices`` holds the index of each returned job in ``all_jobs``: seed per-job
        randomness with it, so that a job starts the same however the jobs are split.

        Args:
            all_jobs: Every job of the run, in the same order in every process.
            sizes: The image size of each job (jobs of different sizes never share a chunk
                when ``batch_size`` is set); None: all the same.

        Returns:
            The jobs to optimize now. A process with no job in this chunk gets a copy of one
            (``self.idle`` is True): it keeps in step with the others and writes nothing.
        """
        all_jobs = list(all_jobs)
        if not all_jobs:
            raise UserInputError("There is nothing to optimize: the data gives no job.")
        world, rank = self._world()
        if self.chunks is None:
            datamodule = self.trainer.datamodule if self._trainer is not None else None
            keys = list(sizes) if sizes is not None else [None] * len(all_jobs)
            self.chunks = plan_chunks(keys, getattr(datamodule, "batch_size", None), world)
        chunk = self.chunks[self.chunk]
        share = chunk[rank::world]
        self.idle = not share
        self.job_indices = share or chunk[:1]
        return [all_jobs[index] for index in self.job_indices]

    @property
    def chunk_size(self) -> int:
        """The number of jobs in the current chunk, over all processes."""
        return len(self.chunks[self.chunk]) if self.chunks else len(self.slots)

    def _world(self) -> tuple[int, int]:
        if self._trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, in rank order (``[value]`` in a one-process run).

        Every process must call it at the same point.
        """
        world, _ = self._world()
        if world == 1:
            return [value]
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, value)
        return gathered

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

    # ----------------------------------------------------------------- results
    def result_pixels(self, index: int) -> torch.Tensor:
        """Job ``index``'s current image as 0-1 pixels ``[3, H, W]`` on the CPU."""
        slot = self.slots[index]
        image = self.images[slot.group][slot.row : slot.row + 1].detach().float()
        return self.backbone.denormalize(image)[0].clamp(0, 1).cpu()

    def sheet_panels(self, index: int) -> list[tuple[str, torch.Tensor]]:
        """Titled pictures for job ``index``'s side-by-side sheet; the result comes last."""
        return [("result", self.result_pixels(index))]

    # ----------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str) -> None:
        if self.fast and self._trainer is not None and self.compile_mode is None:
            self._set_up_fast_path(self.trainer.strategy.root_device)
        if len(self.images) == 0:  # fit after fit (or a restored checkpoint) keeps its images
            self._start_images()
        if self._trainer is not None and stage == "fit":
            self._plan_loop()

    def _start_images(self) -> None:
        """Create the current chunk's images (in place of the previous chunk's)."""
        self.slots = []
        groups = [self._in_memory_format(group) for group in self.create_images()]
        if len(self.images) == 0:
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

    def _set_up_fast_path(self, device: torch.device) -> None:
        """Channels-last now (before the images are made); compilation in ``on_fit_start``."""
        if self.trainer.accumulate_grad_batches != 1:
            raise UserInputError("--model.fast cannot accumulate gradients over steps (CUDA graphs "
                                 "reuse the gradient's memory); leave "
                                 "--trainer.accumulate_grad_batches at 1.")
        self.compile_mode = fast_path_compile_mode(device)
        if self.compile_mode is None:
            rank_zero_warn(f"--model.fast speeds up GPU runs; this run is on the {device.type}, "
                           "where compiled steps measured slower than eager ones, so it runs "
                           "eager.")
            return
        self.channels_last = True
        self.backbone.use_channels_last()

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
        if trainer.world_size > 1:
            if self.chunks is None:
                raise RuntimeError(f"{type(self).__name__}.create_images must pick its jobs with "
                                   "self.my_jobs(...) to run in several processes.")
            if not isinstance(trainer.strategy, ImageDDPStrategy):
                raise UserInputError(
                    f"Several processes need --trainer.strategy image_ddp (got "
                    f"{type(trainer.strategy).__name__}, which would mix the processes' images)."
                )
        steps = self.steps_per_chunk = trainer.max_steps
        if steps is None or steps <= 0:
            raise UserInputError(
                f"trainer.max_steps must be a positive number of steps, got {steps}.")
        chunks = len(self.chunks) if self.chunks else 1
        trainer.limit_train_batches = steps
        trainer.fit_loop.max_epochs = chunks
        trainer.fit_loop.epoch_loop.max_steps = steps * chunks

    def on_fit_start(self) -> None:
        if self.compile_mode is not None and self.backbone.compile_mode is None:
            self.backbone.compile_network(self.compile_mode)
        self._prepare_targets()

    def _prepare_targets(self) -> None:
        # Under the run's precision (e.g. bf16 autocast), so targets match what steps compute.
        with torch.no_grad(), self.trainer.precision_plugin.forward_context():
            self.prepare_targets()

    def on_train_epoch_start(self) -> None:
        if self.chunks and self.current_epoch != self.chunk:
            self.chunk = self.current_epoch
            self._start_images()
            self._prepare_targets()
            # A fresh optimizer for the fresh images, as a run with only this chunk would have.
            self.trainer.strategy.setup_optimizers(self.trainer)

    def configure_optimizers(self) -> Any:
        params = list(self.images)
        if self.optimizer_name == "lbfgs":
            return torch.optim.LBFGS(params, lr=self.lr, max_iter=1, history_size=50)
        return torch.optim.Adam(params, lr=self.lr, fused=self.fused_optimizer or None)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Optional[int]:
        if self._finish_chunk:
            self._finish_chunk = False
            return -1  # Lightning ends the epoch: the next chunk starts
        step = batch_idx  # steps this chunk has taken so far
        if self.backbone.compile_mode == "reduce-overhead":
            # A new step: the CUDA graphs may reuse the previous step's output memory.
            torch.compiler.cudagraph_mark_step_begin()
        if self.lr_drop_step is not None and step == self.lr_drop_step:
            optimizer = self.optimizers(use_pl_optimizer=False)
            for group in optimizer.param_groups:
                group["lr"] = self.lr_drop_to if self.lr_drop_to is not None else group["lr"]
            if self.restart_optimizer_at_drop:
                optimizer.state.clear()
        if self.clamp_until is None or step < self.clamp_until:
            self.clamp_images()
        return None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Every process must agree, or one would wait for the others forever.
        finished = self.idle or self.chunk_finished()
        self._finish_chunk = self.trainer.strategy.reduce_boolean_decision(finished, all=True)

    @torch.no_grad()
    def clamp_images(self) -> None:
        """Clamp every image to ``±clamp`` or to the backbone's valid pixel range."""
        for image in self.images:
            if self.clamp is not None:
                image.clamp_(-self.clamp, self.clamp)
            else:
                image.copy_(torch.max(torch.min(image, self.backbone.pixel_max),
                                      self.backbone.pixel_min))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        sums: dict[str, torch.Tensor] = {}
        for group, images in enumerate(self.images):
            for name, values in self.loss_terms(group, images).items():
                sums[name] = sums[name] + values.sum() if name in sums else values.sum()
        total = torch.stack(list(sums.values())).sum()
        self.record_losses({**{f"{name}_loss": value for name, value in sums.items()},
                            "loss": total})
        return total

    # ----------------------------------------------------------------- losses, logged cheaply
    def is_log_step(self) -> bool:
        """Whether Lightning writes the loggers after this step (its ``log_every_n_steps`` rule)."""
        every = self.trainer.log_every_n_steps
        return every > 0 and (self.global_step + 1) % every == 0

    def record_losses(self, losses: dict[str, torch.Tensor]) -> None:
        """Keep this step's losses, per job, on the device; check and log them on logging steps.

        Reading a value on the host waits for the GPU, and every ``self.log`` costs Lightning
        about 0.5 ms of Python, so both happen once every ``log_every_n_steps`` steps.

        Args:
            losses: Each term summed over this process's jobs, and the total, by metric name.
        """
        values = torch.stack([value.detach().float() for value in losses.values()])
        # Per job: every process's jobs of the chunk count (an idle process adds nothing).
        values = values * (0.0 if self.idle else 1.0) / self.chunk_size
        self.loss_names = list(losses)
        self._pending_losses.append((self.global_step + 1, values))
        if self.is_log_step():
            self.flush_losses(log=True)

    def flush_losses(self, log: bool) -> None:
        """Read the pending steps on the host, stop on NaN/inf, keep the rows, log the last step.

        Every process calls it at the same steps (the values are summed over processes).
        """
        if not self._pending_losses:
            return
        steps = [step for step, _ in self._pending_losses]
        values = torch.stack([value for _, value in self._pending_losses])
        self._pending_losses = []
        # One collective for all pending steps; every process then sees the same values, so
        # all of them stop together on divergence.
        values = self.trainer.strategy.reduce(values, reduce_op="sum")
        host = values.cpu()
        finite = torch.isfinite(host).all(1)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0, 0])
            raise DivergedError(
                f"The loss became {host[first, -1].item()} at step {steps[first] - 1}: the run "
                "diverged; lower the learning rate or the loss weights."
            )
        self.loss_rows.extend({"step": float(step), **dict(zip(self.loss_names, row.tolist()))}
                              for step, row in zip(steps, host))
        if log:
            for name, value in zip(self.loss_names, values[-1]):
                self.log(name, value, prog_bar=True, on_step=True, on_epoch=False)

    def take_loss_rows(self) -> list[dict[str, float]]:
        """The loss rows read since the last call (``step`` and each term), for ``LossHistory``."""
        rows, self.loss_rows = self.loss_rows, []
        return rows

    def on_train_epoch_end(self) -> None:
        # The chunk's last steps go to losses.csv; self.log(on_step=True) is not allowed here.
        self.flush_losses(log=False)

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.flush_losses(log=False)  # every process saves: the rows not yet taken travel along
        checkpoint["loss_rows"] = list(self.loss_rows)
        state = checkpoint["state_dict"]
        for key in [key for key in state if key.startswith("backbone.")]:
            del state[key]  # frozen and rebuilt from the hyperparameters: keep checkpoints small
        checkpoint["image_jobs"] = {"chunk": self.chunk, "world_size": self._world()[0],
                                    "slots": [[s.name, s.group, s.row] for s in self.slots]}

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
        self.loss_rows = list(checkpoint.get("loss_rows", []))
        if saved["chunk"] != self.chunk:
            self.chunk = saved["chunk"]
            self._start_images()
        if [[s.name, s.group, s.row] for s in self.slots] != saved["slots"]:
            raise UserInputError("The checkpoint holds other jobs than this run: resume with the "
                                 "same data options as the interrupted run.")
        checkpoint["state_dict"].update(
            {f"backbone.{key}": value for key, value in self.backbone.state_dict().items()})
