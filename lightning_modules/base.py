"""The shared "the image is the parameter" LightningModule.

A technique optimizes one or more images against a frozen backbone. This base class owns what
they all share: the backbone, the image parameters (one ``[B, 3, H, W]`` tensor per image size,
kept in the backbone's normalized input space as the homework does), the optimizer and its
learning-rate drop, clamping, logging of every loss term, and the divergence check.

A subclass implements :meth:`ImageOptimization.create_images` (the starting images for its jobs)
and :meth:`ImageOptimization.loss_terms` (each weighted loss term, one value per image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from lightning_modules.backbones import DEFAULT_BACKBONE, Backbone, load_backbone
from lightning_modules.errors import UserInputError


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
        self.images = nn.ParameterList()
        self.slots: list[ImageSlot] = []

    # ----------------------------------------------------------------- to be implemented
    def create_images(self) -> list[torch.Tensor]:
        """Return the starting images, one normalized ``[B, 3, H, W]`` tensor per group.

        Also fill ``self.slots`` with one :class:`ImageSlot` per job.
        """
        raise NotImplementedError

    def loss_terms(self, group: int, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each weighted loss term of one group, as ``{name: [B] tensor}``; they are summed."""
        raise NotImplementedError

    def prepare_targets(self) -> None:
        """Compute what the losses compare against, once, on the training device."""

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
        if len(self.images) == 0:  # fit after fit (or a restored checkpoint) keeps its images
            self.slots = []
            for group in self.create_images():
                self.images.append(nn.Parameter(group.detach().clone()))

    def on_fit_start(self) -> None:
        with torch.no_grad():
            self.prepare_targets()

    def configure_optimizers(self) -> Any:
        params = list(self.images)
        if self.optimizer_name == "lbfgs":
            return torch.optim.LBFGS(params, lr=self.lr, max_iter=1, history_size=50)
        return torch.optim.Adam(params, lr=self.lr)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        step = self.global_step
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
        if not torch.isfinite(total):
            raise DivergedError(
                f"The loss became {total.item()} at step {self.global_step}: the run diverged; "
                "lower the learning rate or the loss weights."
            )
        jobs = len(self.slots)
        # Logged per job, so figures do not grow with the number of jobs in the run.
        for name, value in sums.items():
            self.log(f"{name}_loss", value.detach() / jobs, prog_bar=True, on_step=True,
                     on_epoch=False)
        self.log("loss", total.detach() / jobs, prog_bar=True, on_step=True, on_epoch=False)
        return total
