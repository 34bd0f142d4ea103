"""Update rules shared by the techniques: the per-image unit gradient and gradient ascent."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch


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
