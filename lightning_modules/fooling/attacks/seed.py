"""The CS231n homework's fooling step: ascend the target's raw score by ``lr * g / ||g||_2``."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from lightning_modules.errors import check_learning_rate
from lightning_modules.fooling.attacks.base import Attack
from lightning_modules.fooling.steps import SeedStep, target_objective


class SeedAttack(Attack):
    """The homework's method (``method: seed``): each step adds ``lr * g / ||g||_2`` to the image,
    ``g`` the gradient of the target's unnormalized score, norms taken per image.

    With the normalization known the image stays within valid pixels; it works in normalized
    units, so it needs no normalization otherwise (:func:`make_fooling_image` without ``mean``
    is the homework exactly).

    Args:
        lr: Step length in normalized units.
    """

    title: ClassVar[str] = "the seed's step"
    flat_options: ClassVar[dict[str, str]] = {"lr": "lr"}
    needs_normalization: ClassVar[bool] = False

    def __init__(self, lr: float = 1.0) -> None:
        check_learning_rate("lr", lr)
        self.lr = lr

    def logit_loss(self, logits: torch.Tensor, target_y: torch.Tensor) -> torch.Tensor:
        return -target_objective(logits, target_y, "score").sum()

    def optimizer(self, params: Any, mean: Any, std: Any) -> torch.optim.Optimizer:
        return SeedStep(params, self.lr, mean, std)
