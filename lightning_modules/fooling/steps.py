"""The fooling attacks' maths: what they raise, the 8-bit check, and their update rules.

:class:`SeedStep` is the homework's step and :class:`ProjectedStep` targeted PGD's, both
``torch.optim.Optimizer``s, so the LightningModule steps with them as with any optimizer and the
seed's functions call them directly. Either leaves an image whose gradient is zero exactly as it
is: that is how a fooled image stops changing.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Optional

import torch
import torch.nn.functional as F

from lightning_modules.backbones.normalization import (
    channel_values,
    clamp_to_range,
    denormalize,
    normalize,
    pixel_range,
)
from lightning_modules.image_optimization.steps import (
    GradientAscent,
    ImageStep,
    per_image_norm,
    unit_step,
)

Norm = Literal["linf", "l2"]


def quantize_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """Round 0-1 pixels to the 8-bit levels a PNG stores (clamped to [0, 1] first).

    Args:
        pixels: 0-1 pixels of any shape.

    Returns:
        The pixels as they read back from an 8-bit file.
    """
    return pixels.clamp(0, 1).mul(255).round().div(255)


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
    return delta * (eps / per_image_norm(delta).clamp_min(1e-12)).clamp(max=1)


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


def _moving_rows(gradient: torch.Tensor) -> torch.Tensor:
    """The rows (images) whose gradient is not all zero; the others stay exactly as they are."""
    return gradient.flatten(1).ne(0).any(dim=1).nonzero().squeeze(1)


class SeedStep(GradientAscent):
    """The homework's fooling step ``image += lr * g / ||g||_2`` (``g`` the gradient of the
    target's raw score), then, with the normalization known, a clamp to the valid pixels.

    Args:
        params: Normalized images, batch first.
        lr: Step length in normalized units.
        mean: Per-channel mean of the normalization, or None (the homework: no clamp).
        std: Per-channel standard deviation.
    """

    def __init__(self, params: Any, lr: float, mean: Any = None, std: Any = None) -> None:
        super().__init__(params, lr=lr, normalize=True)
        self.bounds = None if mean is None else pixel_range(mean, std)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = super().step(closure)
        if self.bounds is not None:
            for group in self.param_groups:
                for param in group["params"]:
                    param.copy_(clamp_to_range(param, *self.bounds))
        return loss


class ProjectedStep(ImageStep):
    """One targeted PGD step in 0-1 pixel units, projected into the ``eps`` ball around the
    image the parameter held at its first step (its state's ``origin``).

    The ascent direction of the objective is ``-grad`` of the loss, taken with respect to the
    pixels (normalizing divides by ``std``): its sign (L∞) or its unit vector (L2).

    Args:
        params: Normalized images, batch first.
        eps: The budget: the largest ``||δ||`` in 0-1 pixel units.
        step_size: The step in 0-1 pixel units.
        norm: ``"linf"`` or ``"l2"``.
        mean: Per-channel mean of the normalization.
        std: Per-channel standard deviation.
        momentum: MI-FGSM's decay (Dong et al. 2018): the step follows ``momentum`` times the
            previous direction plus this step's gradient divided by its mean absolute value,
            per image; 0 is plain PGD. Momentum steadies the direction, which transfers better
            to networks the image was not made on.
    """

    def __init__(self, params: Any, eps: float, step_size: float, norm: Norm, mean: Any,
                 std: Any, momentum: float = 0.0) -> None:
        super().__init__(params, {"eps": eps, "step_size": step_size, "norm": norm,
                                  "momentum": momentum})
        self.mean, self.std = mean, std

    def update(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[param]
        if "origin" not in state:  # set by the module (its jobs' photos), else the first image
            state["origin"] = param.detach().clone()
        origin = state["origin"]
        rows = _moving_rows(param.grad)
        if rows.numel() == 0:
            return
        pixel_gradient = -param.grad[rows] / channel_values(self.std, param)
        if group["momentum"]:
            velocity = state.setdefault("velocity", torch.zeros_like(param))
            scale = pixel_gradient.abs().flatten(1).mean(dim=1).clamp_min(1e-12)
            velocity[rows] = (group["momentum"] * velocity[rows]
                              + pixel_gradient / scale.view(-1, *[1] * (param.dim() - 1)))
            pixel_gradient = velocity[rows]
        ascent = pixel_gradient.sign() if group["norm"] == "linf" else unit_step(pixel_gradient)
        pixels = denormalize(param[rows], self.mean, self.std)
        origin_pixels = denormalize(origin[rows], self.mean, self.std)
        delta = project(pixels + group["step_size"] * ascent - origin_pixels, group["eps"],
                        group["norm"])
        # Clamping moves pixels towards the (valid) origin, so δ stays inside the ball.
        param[rows] = normalize((origin_pixels + delta).clamp(0, 1), self.mean, self.std)


class CarliniWagnerStep(ImageStep):
    """Carlini and Wagner's targeted L2 attack (2017), one Adam step at a time.

    The image is ``x = (tanh(w) + 1) / 2`` in 0-1 pixels, so it never leaves the valid range,
    and Adam descends ``||x - x0||²`` plus the loss it is given (``c · max(best other logit -
    target logit, -κ)``, see :meth:`FoolingAttack.attack_loss`) with respect to ``w``. ``w``
    and Adam's moments live in the optimizer's state; the parameter holds the normalized image.
    The constant ``c`` is fixed (no binary search), as in torchattacks; an image stops at its
    first success (the module's check), which the growing ``δ`` reaches with a small norm.

    Args:
        params: Normalized images, batch first.
        lr: Adam's learning rate on ``w`` (0.01 in the paper).
        mean: Per-channel mean of the normalization.
        std: Per-channel standard deviation.
        betas: Adam's moment decays.
    """

    def __init__(self, params: Any, lr: float, mean: Any, std: Any,
                 betas: tuple[float, float] = (0.9, 0.999)) -> None:
        super().__init__(params, {"lr": lr, "betas": betas})
        self.mean, self.std = mean, std

    def update(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[param]
        pixels = denormalize(param, self.mean, self.std)
        if "origin" not in state:
            state["origin"] = param.detach().clone()
        if "w" not in state:  # atanh of pixels pulled just inside (0, 1), where it is finite
            state["w"] = torch.atanh((pixels * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
            state["step"] = torch.zeros(param.shape[0], device=param.device)
        rows = _moving_rows(param.grad)
        if rows.numel() == 0:
            return
        w = state["w"][rows]
        origin_pixels = denormalize(state["origin"][rows], self.mean, self.std)
        # d(loss)/d(pixels): the given loss's (through the normalization) plus the L2 term's.
        pixel_gradient = (param.grad[rows] / channel_values(self.std, param)
                          + 2 * (pixels[rows] - origin_pixels))
        gradient = pixel_gradient * (1 - torch.tanh(w).square()) / 2
        beta1, beta2 = group["betas"]
        state["step"][rows] += 1
        step = state["step"][rows].view(-1, *[1] * (param.dim() - 1))
        exp_avg = state["exp_avg"][rows].mul_(beta1).add_(gradient, alpha=1 - beta1)
        exp_avg_sq = state["exp_avg_sq"][rows].mul_(beta2).addcmul_(gradient, gradient,
                                                                    value=1 - beta2)
        state["exp_avg"][rows], state["exp_avg_sq"][rows] = exp_avg, exp_avg_sq
        update = (exp_avg / (1 - beta1 ** step)) / ((exp_avg_sq / (1 - beta2 ** step)).sqrt()
                                                    + 1e-8)
        state["w"][rows] = w - group["lr"] * update
        param[rows] = normalize((torch.tanh(state["w"][rows]) + 1) / 2, self.mean, self.std)
