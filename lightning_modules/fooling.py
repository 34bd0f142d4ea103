"""Fooling images: small changes that make a classifier see a class of our choosing.

Two targeted attacks move each image towards a target class until the network predicts it:

* ``"seed"``, the CS231n homework's method: gradient ascent on the target's raw score, each step
  ``lr * g / ||g||_2`` in the network's normalized input space (:func:`make_fooling_image`);
* ``"pgd"``, targeted projected gradient descent: signed (L∞) or length-normalized (L2) steps of
  ``step_size`` that raise the target's log-probability (``loss="ce"``) or its margin over the
  best other class (``loss="margin"``); the change ``δ`` is projected back into the ``eps`` ball
  and the image into [0, 1], both in 0-1 pixel units (:func:`pgd_attack`).

:class:`FoolingAttack` is the one implementation of both: the functions run it in a loop, and
the :class:`FoolingImage` LightningModule runs one :meth:`FoolingAttack.advance` per trainer step.
Each image stops changing once it is fooled. A PNG stores 8-bit pixels, and rounding can undo an
attack, so with ``quantize=True`` (always, in the module) an image counts as fooled only when its
8-bit version is classified as the target: the saved file is what was checked.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from lightning_modules.backbones import DEFAULT_BACKBONE
from lightning_modules.base import ImageOptimization, ImageSlot
from lightning_modules.errors import UserInputError

Method = Literal["seed", "pgd"]
Norm = Literal["linf", "l2"]
Loss = Literal["ce", "margin"]
ClassSpec = Union[int, str]

RESULTS_FILE = "fooling_results.csv"
RESULT_COLUMNS = ("name", "true_class", "target_class", "success", "steps", "l2", "linf", "ssim",
                  "psnr", "p_target", "predicted_class")


# --------------------------------------------------------------------------- helpers
def quantize_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """Round 0-1 pixels to the 8-bit levels a PNG stores (clamped to [0, 1] first).

    Args:
        pixels: 0-1 pixels of any shape.

    Returns:
        The pixels as they read back from an 8-bit file.
    """
    return pixels.clamp(0, 1).mul(255).round().div(255)


def _per_image_norm(values: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each image of a batch, shaped ``[N, 1, 1, 1]`` for broadcasting."""
    return values.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def _unit_step(gradient: torch.Tensor) -> torch.Tensor:
    """``g / ||g||_2`` per image; an all-zero gradient gives no step instead of NaN."""
    return gradient / _per_image_norm(gradient).clamp_min(1e-12)


def project(delta: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """Project each image's change onto the ``eps`` ball of the L∞ or L2 norm.

    Args:
        delta: Changes ``[N, 3, H, W]`` in 0-1 pixel units.
        eps: The radius of the ball.
        norm: ``"linf"`` (clip every pixel to ±eps) or ``"l2"`` (shrink the whole change).

    Returns:
        The projected changes.
    """
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / _per_image_norm(delta).clamp_min(1e-12)).clamp(max=1)


def target_objective(logits: torch.Tensor, target_y: torch.Tensor, loss: str) -> torch.Tensor:
    """What an attack raises, one value per image.

    Args:
        logits: ``[N, C]`` class scores.
        target_y: ``[N]`` target classes.
        loss: ``"score"`` (the raw target score, the seed's), ``"ce"`` (minus the cross-entropy
            towards the target, i.e. ``log p(target)``) or ``"margin"`` (the target score minus
            the best other score, as in Carlini and Wagner).

    Returns:
        ``[N]`` values.
    """
    target_scores = logits.gather(1, target_y[:, None]).squeeze(1)
    if loss == "score":
        return target_scores
    if loss == "ce":
        return -F.cross_entropy(logits, target_y, reduction="none")
    others = logits.scatter(1, target_y[:, None], float("-inf"))
    return target_scores - others.max(dim=1).values


def _as_targets(target_y: int | Sequence[int] | torch.Tensor, count: int,
                device: torch.device) -> torch.Tensor:
    targets = torch.as_tensor(target_y, dtype=torch.long, device=device).flatten()
    return targets.expand(count).clone() if targets.numel() == 1 else targets


def _channel_stats(values: Any, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


# --------------------------------------------------------------------------- the attack
@dataclass
class FoolingProgress:
    """Where each image of a batch stands.

    Attributes:
        fooled: ``[N]`` bool: the image (8-bit, when quantizing) was classified as the target at
            its last check; it no longer changes.
        steps: ``[N]`` long: updates applied to the image.
        p_target: ``[N]`` float: the target's probability at the last check.
    """

    fooled: torch.Tensor
    steps: torch.Tensor
    p_target: torch.Tensor

    @classmethod
    def start(cls, count: int, device: torch.device | str = "cpu") -> "FoolingProgress":
        """Progress of ``count`` images that have not been checked yet."""
        return cls(torch.zeros(count, dtype=torch.bool, device=device),
                   torch.zeros(count, dtype=torch.long, device=device),
                   torch.zeros(count, device=device))


@dataclass
class FoolingAttack:
    """One targeted attack step, and the loop that repeats it until every image is fooled.

    Images are in the network's normalized input space, as in the homework; ``mean`` and ``std``
    (per channel, 0-1 pixel units) say how pixels were normalized.

    Args:
        method: ``"seed"`` (the homework's step ``lr * g / ||g||_2`` on the target's raw score)
            or ``"pgd"`` (targeted projected gradient descent).
        lr: Length of the seed's step, in normalized units.
        norm: The PGD budget's norm, ``"linf"`` or ``"l2"``.
        eps: The PGD budget: the largest ``||δ||`` in 0-1 pixel units (2/255 ≈ 0.00784).
        step_size: The PGD step in 0-1 pixel units: each pixel moves by it (L∞), or the whole
            image does (L2). None: ``eps / 4``.
        loss: What PGD raises: ``"ce"`` (log-probability of the target) or ``"margin"``.
        mean: Per-channel mean of the normalization; needed by PGD and by ``quantize``. With
            the seed's method it also keeps the image within the valid pixel range.
        std: Per-channel standard deviation of the normalization.
        quantize: Count an image as fooled only when its 8-bit version (as saved to a PNG) is
            classified as the target.
    """

    method: Method = "seed"
    lr: float = 1.0
    norm: Norm = "linf"
    eps: float = 2 / 255
    step_size: Optional[float] = None
    loss: Loss = "ce"
    mean: Any = None
    std: Any = None
    quantize: bool = False

    def __post_init__(self) -> None:
        choices = {"method": ("seed", "pgd"), "norm": ("linf", "l2"), "loss": ("ce", "margin")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UserInputError(f"Unknown {name} '{getattr(self, name)}'; choose "
                                     + " or ".join(f"'{a}'" for a in allowed) + ".")
        if not self.eps > 0:  # also catches NaN
            raise UserInputError(
                f"eps must be positive, in 0-1 pixel units (2/255 is 0.00784), got {self.eps}."
            )
        if self.step_size is None:
            self.step_size = self.eps / 4
        if not self.step_size > 0:
            raise UserInputError(f"step_size must be positive, in 0-1 pixel units, got "
                                 f"{self.step_size}.")
        if not self.lr > 0:
            raise UserInputError(f"lr must be positive, got {self.lr}.")
        if (self.mean is None) != (self.std is None):
            raise UserInputError("Give both mean and std of the normalization, or neither.")
        if self.mean is None and (self.method == "pgd" or self.quantize):
            needs = "PGD" if self.method == "pgd" else "quantize"
            raise UserInputError(f"{needs} needs the mean and std of the normalization, to work "
                                 "in 0-1 pixel units.")

    # ----------------------------------------------------------------- pixel space
    def to_pixels(self, inputs: torch.Tensor) -> torch.Tensor:
        """Normalized inputs to 0-1 pixels (not clamped)."""
        return inputs * _channel_stats(self.std, inputs) + _channel_stats(self.mean, inputs)

    def to_inputs(self, pixels: torch.Tensor) -> torch.Tensor:
        """0-1 pixels to normalized inputs."""
        return (pixels - _channel_stats(self.mean, pixels)) / _channel_stats(self.std, pixels)

    def judged(self, images: torch.Tensor) -> torch.Tensor:
        """The images as success is judged: their 8-bit versions when quantizing."""
        return self.to_inputs(quantize_pixels(self.to_pixels(images))) if self.quantize else images

    # ----------------------------------------------------------------- one step
    def update(self, images: torch.Tensor, origin: torch.Tensor, target_y: torch.Tensor,
               model: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """One step of the attack on every image given, fooled or not.

        Args:
            images: Current normalized images ``[N, 3, H, W]``.
            origin: The unchanged images (the centre of the PGD budget).
            target_y: ``[N]`` target classes.
            model: Maps normalized images to logits.

        Returns:
            The next images.
        """
        inputs = images.detach().requires_grad_(True)
        with torch.enable_grad():
            objective = "score" if self.method == "seed" else self.loss
            value = target_objective(model(inputs), target_y, objective).sum()
            (gradient,) = torch.autograd.grad(value, inputs)
        if self.method == "seed":
            moved = images.detach() + self.lr * _unit_step(gradient)
            if self.mean is None:  # the homework: no pixel range known, none kept
                return moved
            low = self.to_inputs(torch.zeros_like(moved[:1]))
            high = self.to_inputs(torch.ones_like(moved[:1]))
            return torch.max(torch.min(moved, high), low)
        # Gradient with respect to 0-1 pixels: normalizing divides by std (chain rule).
        pixel_gradient = gradient / _channel_stats(self.std, gradient)
        ascent = pixel_gradient.sign() if self.norm == "linf" else _unit_step(pixel_gradient)
        pixels, origin_pixels = self.to_pixels(images.detach()), self.to_pixels(origin)
        delta = project(pixels + self.step_size * ascent - origin_pixels, self.eps, self.norm)
        # Clamping moves pixels towards the (valid) origin, so δ stays inside the ball.
        return self.to_inputs((origin_pixels + delta).clamp(0, 1))

    @torch.no_grad()
    def advance(self, images: torch.Tensor, origin: torch.Tensor, target_y: torch.Tensor,
                model: Callable[[torch.Tensor], torch.Tensor],
                progress: FoolingProgress) -> torch.Tensor:
        """Check which images are fooled, then step the others; fooled images never change.

        Args:
            images: Current normalized images ``[N, 3, H, W]``.
            origin: The unchanged images.
            target_y: ``[N]`` target classes.
            model: Maps normalized images to logits.
            progress: Updated in place.

        Returns:
            The next images (a new tensor).
        """
        following = images.detach().clone()
        rows = (~progress.fooled).nonzero().squeeze(1)
        if rows.numel() == 0:
            return following
        probabilities = model(self.judged(images[rows])).float().softmax(dim=1)  # bf16 autocast
        progress.p_target[rows] = probabilities.gather(1, target_y[rows, None]).squeeze(1)
        fooled = probabilities.argmax(dim=1) == target_y[rows]
        progress.fooled[rows] = fooled
        rows = rows[~fooled]
        if rows.numel():
            following[rows] = self.update(images[rows], origin[rows], target_y[rows], model)
            progress.steps[rows] += 1
        return following

    def run(self, images: torch.Tensor, target_y: int | Sequence[int] | torch.Tensor,
            model: Callable[[torch.Tensor], torch.Tensor],
            max_iter: int = 100) -> tuple[torch.Tensor, FoolingProgress]:
        """Repeat :meth:`advance` until every image is fooled or ``max_iter`` checks were made.

        Args:
            images: Normalized images ``[N, 3, H, W]``.
            target_y: One target class for all images, or one per image.
            model: Maps normalized images to logits.
            max_iter: The most checks (and so steps) per image.

        Returns:
            The fooled images and the progress of each.
        """
        origin = images.detach()
        targets = _as_targets(target_y, len(images), images.device)
        progress = FoolingProgress.start(len(images), images.device)
        for _ in range(max_iter):
            images = self.advance(images, origin, targets, model, progress)
            if progress.fooled.all():
                break
        return images, progress


# --------------------------------------------------------------------------- the seed's functions
def make_fooling_image(
    X: torch.Tensor,
    target_y: int | Sequence[int] | torch.Tensor,
    model: Callable[[torch.Tensor], torch.Tensor],
    lr: float = 1.0,
    max_iter: int = 100,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> torch.Tensor:
    """The homework's fooling image: ascend the target's raw score until the model predicts it.

    Each step is ``X += lr * g / ||g||_2`` with ``g`` the gradient of the target's unnormalized
    score, norms taken per image. Every image of the batch stops once it is classified as its
    target (or after ``max_iter`` checks).

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        target_y: One target class for all images, or one per image.
        model: Maps normalized images to logits.
        lr: Step length in normalized units.
        max_iter: The most steps.
        mean: Per-channel mean of the normalization (0-1 pixel units). With ``std``, keeps the
            image within valid pixels and counts it as fooled only when its 8-bit version is
            classified as the target, as a saved PNG would be. None: the homework exactly.
        std: Per-channel standard deviation of the normalization.

    Returns:
        The fooled images ``[N, 3, H, W]``, normalized.
    """
    attack = FoolingAttack("seed", lr=lr, mean=mean, std=std, quantize=mean is not None)
    return attack.run(X, target_y, model, max_iter)[0]


def pgd_attack(
    X: torch.Tensor,
    target_y: int | Sequence[int] | torch.Tensor,
    model: Callable[[torch.Tensor], torch.Tensor],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    eps: float = 2 / 255,
    step_size: Optional[float] = None,
    norm: Norm = "linf",
    loss: Loss = "ce",
    max_iter: int = 100,
    quantize: bool = True,
) -> torch.Tensor:
    """Targeted projected gradient descent with an L∞ or L2 budget in 0-1 pixel units.

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        target_y: One target class for all images, or one per image.
        model: Maps normalized images to logits.
        mean: Per-channel mean of the normalization (0-1 pixel units).
        std: Per-channel standard deviation of the normalization.
        eps: The budget: the largest ``||δ||`` in 0-1 pixel units.
        step_size: Step in 0-1 pixel units (None: ``eps / 4``).
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"`` (raise log p(target)) or ``"margin"`` (raise the target's lead).
        max_iter: The most steps.
        quantize: Count an image as fooled only when its 8-bit version is.

    Returns:
        The fooled images ``[N, 3, H, W]``, normalized.
    """
    attack = FoolingAttack("pgd", norm=norm, eps=eps, step_size=step_size, loss=loss, mean=mean,
                           std=std, quantize=quantize)
    return attack.run(X, target_y, model, max_iter)[0]


# --------------------------------------------------------------------------- the module
@dataclass
class FoolingJob:
    """One image to push towards one target class.

    Attributes:
        name: File-name-safe and unique, ``<image>_to_<target class>``.
        pixels: The original 0-1 pixels ``[3, S, S]`` at the network's input size.
        true_class: The image's class index, or None when unknown.
        target_class: The class index to reach.
    """

    name: str
    pixels: torch.Tensor
    true_class: Optional[int]
    target_class: int


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _short(text: str, length: int = 18) -> str:
    return text if len(text) <= length else text[: length - 1] + "."


class FoolingImage(ImageOptimization):
    """Fooling images: change each image a little until the network sees the target class.

    Images and their true classes come from ``datamodules.labeled_images.LabeledImageData``.
    Every trainer step checks each image (its 8-bit version, as the PNG will store it) and steps
    those not yet fooled; a fooled image stops changing, and the run stops when all are fooled
    (or at ``trainer.max_steps``). The run directory gets ``<job>.png`` (the fooled image at the
    network's input size), ``<job>_sheet.png`` (original | fooled | difference x10) and
    ``fooling_results.csv``: per job success (the PNG read back from disk is classified as the
    target), steps, ``||δ||₂`` and ``||δ||∞`` in 0-1 pixel units, SSIM, PSNR and p(target).

    Args:
        target: The target class (index or ImageNet name) for every image, or a list: one per
            image, or with ``all_pairs`` the classes each image is pushed towards.
        all_pairs: Make one job per image and target class in ``target``; pairs whose target
            is the image's true class are skipped.
        method: ``"seed"`` (the homework's step ``lr * g / ||g||_2``) or ``"pgd"``.
        lr: Step length of the seed's method, in normalized units.
        norm: PGD budget norm, ``"linf"`` or ``"l2"``.
        eps: PGD budget in 0-1 pixel units (2/255 is 0.00784).
        step_size: PGD step in 0-1 pixel units (None: ``eps / 4``).
        loss: What PGD raises: ``"ce"`` or ``"margin"``.
        backbone: Name of the frozen classifier.
        weights: ``"default"``, ``"random"`` or a local state-dict file.
        channels_last: Keep the images and the backbone in channels-last memory format.
        fast: Compile the backbone (CUDA graphs on a GPU) and use channels-last; see
            :class:`~lightning_modules.base.ImageOptimization`.
    """

    def __init__(
        self,
        target: Union[ClassSpec, list[ClassSpec]] = 6,
        all_pairs: bool = False,
        method: Method = "seed",
        lr: float = 1.0,
        norm: Norm = "linf",
        eps: float = 2 / 255,
        step_size: Optional[float] = None,
        loss: Loss = "ce",
        backbone: str = DEFAULT_BACKBONE,
        weights: str = "default",
        channels_last: bool = False,
        fast: bool = False,
    ) -> None:
        super().__init__(backbone=backbone, weights=weights, lr=lr, channels_last=channels_last,
                         fast=fast)
        self.save_hyperparameters()
        # Each step is the attack's own update, not an optimizer's.
        self.automatic_optimization = False
        self.attack = FoolingAttack(method, lr=lr, norm=norm, eps=eps, step_size=step_size,
                                    loss=loss, mean=self.backbone.mean, std=self.backbone.std,
                                    quantize=True)
        self.targets = list(target) if isinstance(target, (list, tuple)) else [target]
        if not self.targets:
            raise UserInputError("target must name at least one class.")
        self.target_classes = [self.backbone.class_index(t) for t in self.targets]
        self.all_pairs = all_pairs
        self.jobs: list[FoolingJob] = []
        self.progress: Optional[FoolingProgress] = None
        self.finished: list[tuple[int, dict[str, Any]]] = []  # (job index, results row)
        self._restored_progress: Optional[dict[str, torch.Tensor]] = None
        self.directory: Optional[Path] = None
        self._origin: Optional[torch.Tensor] = None  # the unchanged images, normalized
        self._target_y: Optional[torch.Tensor] = None

    # ----------------------------------------------------------------- jobs and images
    def create_images(self) -> list[torch.Tensor]:
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "items"):
            raise UserInputError("FoolingImage needs a LabeledImageData datamodule "
                                 "(datamodules.labeled_images.LabeledImageData).")
        self.jobs = self.make_jobs(datamodule.items)
        if not self.jobs:
            raise UserInputError("No image is left to fool: every target is the image's own class.")
        self.jobs = self.my_jobs(self.jobs)
        self.slots = [ImageSlot(job.name, 0, row) for row, job in enumerate(self.jobs)]
        return [self.backbone.normalize(torch.stack([job.pixels for job in self.jobs]))]

    def make_jobs(self, items: Sequence[Any]) -> list[FoolingJob]:
        """Pair images with target classes.

        Args:
            items: ``LabeledImage``s (``name``, ``pixels``, ``label``).

        Returns:
            One job per image (or per image and target, with ``all_pairs``).
        """
        if self.all_pairs:
            targets = list(dict.fromkeys(self.target_classes))  # unique, in order
            pairs = [(item, t) for item in items for t in targets]
        elif len(self.target_classes) in (1, len(items)):
            per_image = self.target_classes * (len(items) if len(self.target_classes) == 1 else 1)
            pairs = list(zip(items, per_image))
        else:
            raise UserInputError(
                f"target lists {len(self.target_classes)} classes for {len(items)} images; give "
                "one class, one per image, or set all_pairs to try every class on every image."
            )
        jobs = []
        for item, target in pairs:
            true_class = None if item.label is None else self.backbone.class_index(item.label)
            name = self.backbone.categories[target]
            if target == true_class:
                if self.all_pairs:
                    rank_zero_warn(f"Skipping '{item.name}' -> '{name}': it is the true class.")
                    continue
                raise UserInputError(f"The target class {target} ({name}) is the true class of "
                                     f"image '{item.name}'; choose another target.")
            jobs.append(FoolingJob(f"{item.name}_to_{_slug(name)}", item.pixels, true_class,
                                   target))
        return jobs

    def setup(self, stage: str) -> None:
        super().setup(stage)
        from callbacks.run_directory import run_directory

        # Read here: run_directory is a collective call under DDP (see its docstring).
        self.directory = run_directory(self.trainer)

    def prepare_targets(self) -> None:
        self._origin = self.backbone.normalize(
            torch.stack([job.pixels for job in self.jobs]).to(self.device))
        self._target_y = torch.tensor([job.target_class for job in self.jobs], device=self.device)
        # A resumed run goes on with the progress it left off with (see on_load_checkpoint).
        restored, self._restored_progress = self._restored_progress, None
        self.progress = (FoolingProgress(**{k: v.to(self.device) for k, v in restored.items()})
                         if restored else FoolingProgress.start(len(self.jobs), self.device))

    # ----------------------------------------------------------------- optimization
    def configure_optimizers(self) -> torch.optim.Optimizer:
        # SGD with lr 1 applies the attack's update (see training_step), so Lightning counts
        # steps: global_step, max_steps and snapshots work as for every other technique.
        return torch.optim.SGD(list(self.images), lr=1.0)

    def clamp_images(self) -> None:
        """Do nothing: the attack keeps images valid, and fooled images must not change."""

    def training_step(self, batch: Any, batch_idx: int) -> None:
        image = self.images[0]
        following = self.attack.advance(image, self._origin, self._target_y, self.backbone,
                                        self.progress)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        image.grad = image.detach() - following
        optimizer.step()
        progress = self.progress
        self.log_job_mean("fooled", progress.fooled.float(), prog_bar=True)
        self.log_job_mean("p_target", progress.p_target, prog_bar=True)
        # Cross-entropy towards the target of the 8-bit images: LossHistory draws it.
        self.log_job_mean("loss", -progress.p_target.clamp_min(1e-12).log(), prog_bar=True)

    def chunk_finished(self) -> bool:
        """Every image is fooled: the chunk (or the run) ends early."""
        return self.progress is not None and bool(self.progress.fooled.all())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["fooling"] = {"progress": vars(self.progress), "finished": self.finished}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._restored_progress = checkpoint["fooling"]["progress"]
        self.finished = checkpoint["fooling"]["finished"]

    # ----------------------------------------------------------------- results
    @torch.no_grad()
    def _classify(self, pixels: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[N, C]`` of 0-1 pixels ``[N, 3, H, W]``, on the CPU."""
        inputs = self.backbone.normalize(pixels.to(self.device))
        return self.backbone(inputs).softmax(dim=1).cpu()

    def fooled_pixels(self, index: int) -> torch.Tensor:
        """Job ``index``'s fooled image as its 8-bit PNG will hold it, 0-1 ``[3, H, W]``."""
        return quantize_pixels(self.result_pixels(index))

    def sheet_panels(self, index: int) -> list[tuple[str, torch.Tensor]]:
        job = self.jobs[index]
        fooled = self.fooled_pixels(index)
        before, after = self._classify(torch.stack([job.pixels, fooled]))
        predicted = int(before.argmax())
        categories = self.backbone.categories
        return [
            (f"{_short(categories[predicted])} p={before[predicted]:.2f}", job.pixels),
            (f"{_short(categories[job.target_class])} p={after[job.target_class]:.2f}", fooled),
            ("difference x10", ((fooled - job.pixels) * 10 + 0.5).clamp(0, 1)),
        ]

    def _saved_png(self, index: int) -> torch.Tensor:
        """Read job ``index``'s PNG back from disk; write it first if no ImageWriter did."""
        from datamodules.images import image_to_tensor, load_image, save_png

        path = self.directory / f"{self.slots[index].name}.png"
        if not path.exists():
            save_png(self.result_pixels(index), path)
        return image_to_tensor(load_image(path))

    @torch.no_grad()
    def results(self) -> list[dict[str, Any]]:
        """Score every job on its saved PNG read back from disk.

        Returns:
            One row per job with the columns of ``fooling_results.csv``.
        """
        from torchmetrics.functional.image import (
            peak_signal_noise_ratio,
            structural_similarity_index_measure,
        )

        originals = torch.stack([job.pixels for job in self.jobs])
        saved = torch.stack([self._saved_png(i) for i in range(len(self.jobs))])
        delta = (saved - originals).flatten(1)
        probabilities = self._classify(saved)
        ssim = structural_similarity_index_measure(saved, originals, data_range=1.0,
                                                   reduction="none")
        psnr = peak_signal_noise_ratio(saved, originals, data_range=1.0, reduction="none",
                                       dim=(1, 2, 3))
        categories = self.backbone.categories
        rows = []
        for i, job in enumerate(self.jobs):
            predicted = int(probabilities[i].argmax())
            rows.append({
                "name": job.name,
                "true_class": "" if job.true_class is None else categories[job.true_class],
                "target_class": categories[job.target_class],
                "success": predicted == job.target_class,
                "steps": int(self.progress.steps[i]) if self.progress is not None else 0,
                "l2": float(delta[i].norm()),
                "linf": float(delta[i].abs().max()),
                "ssim": float(ssim[i]),
                "psnr": float(psnr[i]),
                "p_target": float(probabilities[i, job.target_class]),
                "predicted_class": categories[predicted],
            })
        return rows

    def on_train_epoch_end(self) -> None:
        # The end of a chunk: score its jobs while their images are still here.
        if not self.idle:
            self.finished += list(zip(self.job_indices, self.results()))

    def on_train_end(self) -> None:
        everyone = sorted((pair for part in self.gather(self.finished) for pair in part),
                          key=lambda pair: pair[0])
        rows = [row for _, row in everyone]
        if self.trainer.is_global_zero:
            path = self.directory / RESULTS_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x", newline="") as handle:  # never overwrite a run's results
                writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS)
                writer.writeheader()
                for row in rows:
                    writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v
                                     for k, v in row.items()})
        metrics = summarize(rows)
        for row in rows:
            metrics.update({f"{row['name']}/{key}": float(row[key])
                            for key in ("success", "steps", "l2", "linf", "ssim", "psnr",
                                        "p_target")})
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)
        rank_zero_info(
            f"Fooled {sum(r['success'] for r in rows)} of {len(rows)} images (PNG read back); "
            f"mean ||δ||₂ {metrics['l2_mean']:.4g}, max ||δ||∞ {metrics['linf_max']:.4g} "
            f"(0-1 pixels); results in {self.directory / RESULTS_FILE}."
        )


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Aggregate figures of :meth:`FoolingImage.results` rows.

    Args:
        rows: Per-job results.

    Returns:
        Success rate, mean and largest steps, mean and largest ``||δ||₂`` and ``||δ||∞``, mean
        SSIM and PSNR.
    """
    def column(key: str) -> list[float]:
        return [float(row[key]) for row in rows]

    finite_psnr = [v for v in column("psnr") if math.isfinite(v)]
    return {
        "success_rate": sum(column("success")) / len(rows),
        "steps_mean": sum(column("steps")) / len(rows),
        "steps_max": max(column("steps")),
        "l2_mean": sum(column("l2")) / len(rows),
        "l2_max": max(column("l2")),
        "linf_mean": sum(column("linf")) / len(rows),
        "linf_max": max(column("linf")),
        "ssim_mean": sum(column("ssim")) / len(rows),
        "psnr_mean": sum(finite_psnr) / len(finite_psnr) if finite_psnr else float("inf"),
    }
