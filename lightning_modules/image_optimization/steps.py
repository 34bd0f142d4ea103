"""Update rules shared by the techniques: the per-image unit gradient and gradient ascent, and
the step rules a config names (:class:`StepRule`: ``raw``, ``normalized``, ``adam``)."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from lightning_modules.image_optimization.variants import resolve_variant


def per_image_norm(values: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each image of a batch, shaped ``[N, 1, ..., 1]`` for broadcasting."""
    return values.flatten(1).norm(dim=1).view(-1, *([1] * (values.ndim - 1)))


def unit_step(gradient: torch.Tensor) -> torch.Tensor:
    """``g / ||g||_2`` per image; an all-zero gradient gives no step instead of NaN."""
    return gradient / per_image_norm(gradient).clamp_min(1e-12)


class ImageStep(torch.optim.Optimizer):
    """An update rule on image parameters: :meth:`update` moves one parameter from its gradient.

    ``step`` runs the closure (under gradients, for Lightning) and calls :meth:`update` for each
    parameter that has a gradient, without recording a graph.
    """

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self.update(param, group)
        return loss

    def update(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        """Move ``param`` in place from ``param.grad``, with its group's options."""
        raise NotImplementedError


class GradientAscent(ImageStep):
    """The homework's update, as an optimizer that *descends* the loss ``-objective``.

    ``normalize=False`` is the homework's ``image += lr * grad``; ``normalize=True`` divides each
    image's gradient (each row of the parameter) by its L2 norm, ``image += lr * g / ||g||_2``
    (the class-visualization and fooling-image steps). A row whose gradient is zero does not
    move.

    Args:
        params: The image parameters, batch first.
        lr: Step length.
        normalize: Divide each image's gradient by its L2 norm.
    """

    def __init__(self, params: Any, lr: float, normalize: bool = True) -> None:
        super().__init__(params, {"lr": lr, "normalize": normalize})

    def update(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        grad = unit_step(param.grad) if group["normalize"] else param.grad
        param.sub_(grad, alpha=group["lr"])


# --------------------------------------------------------------------------- step rules
class StepRule:
    """How the picture's parameter moves from its gradient: the optimizer, and the step length
    it takes when the config gives none. A config names one by ``class_path`` or by its short
    name (``raw``, ``normalized``, ``adam``; see :func:`resolve_step`)."""

    def optimizer(self, params: Sequence[torch.Tensor], lr: float,
                  fused: bool = False) -> torch.optim.Optimizer:
        """The optimizer over ``params`` with step length ``lr`` (``fused``: one fused kernel,
        where the rule has one)."""
        raise NotImplementedError

    def default_lr(self, parameterization: Any) -> float:
        """The step length when none is given, for a parameter of ``parameterization``."""
        raise NotImplementedError

    def length_per_value(self, lr: float, parameter: torch.Tensor) -> float:
        """The optimizer's step length that changes each value by about ``lr`` (root mean
        square) per step, whatever the picture's size (default: ``lr``, already per value)."""
        return lr


class RawStep(StepRule):
    """The homework's ``image += lr * g``; its default ``lr`` is the homework's 25."""

    def optimizer(self, params: Sequence[torch.Tensor], lr: float,
                  fused: bool = False) -> torch.optim.Optimizer:
        return GradientAscent(params, lr=lr, normalize=False)

    def default_lr(self, parameterization: Any) -> float:
        return 25.0


class NormalizedStep(StepRule):
    """``image += lr * g / ||g||_2`` per image: a step whose length does not depend on the scale
    of the network's scores; its default ``lr`` is the parameterization's ``normalized_lr``."""

    def optimizer(self, params: Sequence[torch.Tensor], lr: float,
                  fused: bool = False) -> torch.optim.Optimizer:
        return GradientAscent(params, lr=lr, normalize=True)

    def default_lr(self, parameterization: Any) -> float:
        return parameterization.normalized_lr

    def length_per_value(self, lr: float, parameter: torch.Tensor) -> float:
        # A unit step per image would shrink per value as the image grows.
        return lr * math.sqrt(parameter[0].numel())


class AdamStep(StepRule):
    """Adam (per-value steps); its default ``lr`` is Lucent's 0.05."""

    def optimizer(self, params: Sequence[torch.Tensor], lr: float,
                  fused: bool = False) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=lr, fused=fused or None)

    def default_lr(self, parameterization: Any) -> float:
        return 0.05


#: The short names a config may give for ``step``.
STEP_RULES: Mapping[str, type[StepRule]] = {"normalized": NormalizedStep, "raw": RawStep,
                                            "adam": AdamStep}


def resolve_step(value: Any) -> StepRule:
    """The step rule ``value`` stands for: a :class:`StepRule`, or a short name.

    Raises:
        UserInputError: An unknown name.
    """
    return resolve_variant("step", value, StepRule, STEP_RULES)
