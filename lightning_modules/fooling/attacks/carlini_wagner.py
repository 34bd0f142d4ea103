"""Carlini and Wagner's targeted L2 attack (2017): the smallest change that fools, no budget."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch

from lightning_modules.errors import UserInputError, check_learning_rate
from lightning_modules.fooling.attacks.base import Attack, Model
from lightning_modules.fooling.steps import CarliniWagnerStep, quantize_pixels, target_objective

if TYPE_CHECKING:
    from lightning_modules.fooling.functional import FoolingAttack, FoolingProgress


class CarliniWagner(Attack):
    """Carlini and Wagner's L2 attack (``method: cw``): Adam on ``w``, the image being
    ``(tanh w + 1) / 2``, descends ``||δ||₂² + c · max(best other logit - target logit, -κ)``
    (:class:`~lightning_modules.fooling.steps.CarliniWagnerStep`).

    ``c`` is fixed (no binary search), as in torchattacks. Unlike the other attacks it does not
    stop at the first success: every image is checked and stepped at every step, and each keeps
    the smallest change (``||δ||₂`` of its 8-bit version) that fooled so far, which is its
    result; the run goes on to its last step.

    Args:
        c: The weight of the logit term against ``||δ||₂²``.
        kappa: The logit margin over the best other class to aim for.
        lr: Adam's learning rate on ``w`` (0.01 in the paper).
    """

    title: ClassVar[str] = "Carlini-Wagner"
    flat_options: ClassVar[dict[str, str]] = {"c": "c", "kappa": "kappa", "cw_lr": "lr"}

    def __init__(self, c: float = 1.0, kappa: float = 0.0, lr: float = 0.01) -> None:
        if not 0 < c <= 1e6 or not 0 <= kappa <= 1e3:  # also catches NaN
            raise UserInputError(f"c must be in (0, 1e6] and kappa in [0, 1000], got c "
                                 f"{c:g}, kappa {kappa:g}.")
        check_learning_rate("Carlini-Wagner's lr (cw_lr)", lr)
        self.c, self.kappa, self.lr = c, kappa, lr

    def logit_loss(self, logits: torch.Tensor, target_y: torch.Tensor) -> torch.Tensor:
        # c · max(best other - target, -κ): no push once the margin reaches κ.
        shortfall = -target_objective(logits, target_y, "margin")
        return (self.c * shortfall.clamp_min(-self.kappa)).sum()

    def optimizer(self, params: Any, mean: Any, std: Any) -> torch.optim.Optimizer:
        return CarliniWagnerStep(params, self.lr, mean, std)

    def check(self, runner: "FoolingAttack", images: torch.Tensor, target_y: torch.Tensor,
              model: Model, progress: "FoolingProgress",
              origin: Optional[torch.Tensor]) -> torch.Tensor:
        """Check every image, keep (in ``progress.best``) each one's smallest change that fooled,
        and step them all; without ``origin``, the plain check."""
        if origin is None:
            return super().check(runner, images, target_y, model, progress, origin)
        from lightning_modules.fooling.functional import FoolingProgress

        every = torch.arange(len(images), device=images.device)
        fooled_now = FoolingProgress.start(len(images), images.device)
        runner.check_unfooled(images, target_y, model, fooled_now)  # on every image
        progress.p_target.copy_(fooled_now.p_target)
        l2 = (quantize_pixels(runner.to_pixels(images))
              - runner.to_pixels(origin)).flatten(1).norm(dim=1)
        better = fooled_now.fooled & (l2 < progress.best_l2)
        if progress.best is None or progress.best.shape != images.shape:
            progress.best = images.detach().clone()
        progress.best[better] = images[better].detach()
        progress.best_l2[better] = l2[better]
        progress.fooled |= fooled_now.fooled
        return every

    def finished(self, progress: "FoolingProgress") -> bool:
        """Never before the last step: the changes go on shrinking."""
        return False

    def kept_image(self, progress: "FoolingProgress", index: int) -> Optional[torch.Tensor]:
        """The smallest change of image ``index`` that fooled, if one did."""
        if progress.best is None or not bool(torch.isfinite(progress.best_l2[index])):
            return None
        return progress.best[index]

    def conclude(self, runner: "FoolingAttack", images: torch.Tensor, target_y: torch.Tensor,
                 model: Model, progress: "FoolingProgress", origin: torch.Tensor) -> torch.Tensor:
        """Check the last step's images too, then each image's smallest fooling change."""
        self.check(runner, images, target_y, model, progress, origin)
        return self.result(images, progress)
