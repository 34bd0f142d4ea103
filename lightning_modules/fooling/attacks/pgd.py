"""Targeted projected gradient descent (Madry et al. 2018), with MI-FGSM's momentum as an option."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

import torch

from lightning_modules.errors import MAX_LEARNING_RATE, UserInputError, check_choice
from lightning_modules.fooling.attacks.base import Attack
from lightning_modules.fooling.steps import Norm, ProjectedStep, target_objective

Loss = Literal["ce", "margin"]


class PGD(Attack):
    """Targeted PGD (``method: pgd``): signed (L∞) or length-normalized (L2) steps of
    ``step_size`` that raise the target's log-probability or its margin over the best other
    class; the change ``δ`` is projected back into the ``eps`` ball and the image into [0, 1],
    both in 0-1 pixel units (:class:`~lightning_modules.fooling.steps.ProjectedStep`).

    Args:
        eps: The budget: the largest ``||δ||`` in 0-1 pixel units (2/255 ≈ 0.00784).
        step_size: The step in 0-1 pixel units: each pixel moves by it (L∞), or the whole
            image does (L2). None: ``eps / 4``.
        norm: The budget's norm, ``"linf"`` or ``"l2"``.
        loss: What the attack raises: ``"ce"`` (log p(target)) or ``"margin"`` (the target's
            score minus the best other one).
        momentum: MI-FGSM's momentum (1.0 in Dong et al. 2018; 0: none), which steadies the
            direction so that the image transfers better to networks it was not made on.
    """

    title: ClassVar[str] = "PGD"
    flat_options: ClassVar[dict[str, str]] = {"norm": "norm", "eps": "eps",
                                              "step_size": "step_size", "loss": "loss",
                                              "momentum": "momentum"}

    def __init__(self, eps: float = 2 / 255, step_size: Optional[float] = None,
                 norm: Norm = "linf", loss: Loss = "ce", momentum: float = 0.0) -> None:
        check_choice("norm", norm, ("linf", "l2"))
        check_choice("loss", loss, ("ce", "margin"))
        # Past MAX_LEARNING_RATE the step overflows float32 (a traceback, not a result).
        if not 0 < eps <= MAX_LEARNING_RATE:  # also catches NaN
            raise UserInputError(
                f"eps must be positive and at most {MAX_LEARNING_RATE:g}, in 0-1 pixel units "
                f"(2/255 is 0.00784), got {eps:g}.")
        if norm == "linf" and eps > 1:
            raise UserInputError(f"eps is in 0-1 pixel units: an L∞ budget above 1 allows any "
                                 f"image, got {eps:g}.")
        if not 0 <= momentum <= 10:  # also catches NaN
            raise UserInputError(f"momentum must be from 0 to 10 (MI-FGSM uses 1), got "
                                 f"{momentum:g}.")
        if step_size is not None and not 0 < step_size <= MAX_LEARNING_RATE:
            raise UserInputError(f"step_size must be positive and at most "
                                 f"{MAX_LEARNING_RATE:g}, in 0-1 pixel units, got "
                                 f"{step_size:g}.")
        self.eps, self.step_size, self.norm, self.loss, self.momentum = (eps, step_size, norm,
                                                                         loss, momentum)

    def logit_loss(self, logits: torch.Tensor, target_y: torch.Tensor) -> torch.Tensor:
        return -target_objective(logits, target_y, self.loss).sum()

    @property
    def step(self) -> float:
        """The step in 0-1 pixel units (``step_size``, or ``eps / 4``)."""
        return self.eps / 4 if self.step_size is None else self.step_size

    def optimizer(self, params: Any, mean: Any, std: Any) -> torch.optim.Optimizer:
        return ProjectedStep(params, self.eps, self.step, self.norm, mean, std, self.momentum)
