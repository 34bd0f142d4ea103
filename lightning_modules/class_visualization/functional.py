"""Class visualization, the homework's way: the picture a class looks like to the network.

Gradient ascent on a class's raw score, starting from noise (Simonyan et al. 2014; Yosinski et al.
2015), as in the CS231n homework: each step shifts the image by a random jitter, steps along the
gradient of ``score - l2_reg * ||image||^2``, undoes the jitter, clamps to the valid pixel range,
and every ``blur_every`` steps blurs with a Gaussian (sigma 0.5).

:func:`create_class_visualization` is the homework's function; the LightningModule
(:class:`~lightning_modules.class_visualization.module.ClassVisualization`) runs the same loss
(:func:`class_visualization_loss`), update (:func:`make_optimizer`) and regularization
(:func:`regularize`). Two extras come from Lucid/Lucent (Olah et al. 2017): a Fourier-space,
colour-decorrelated image parameterization and their standard random transforms.

The homework's update is the raw gradient times 25, tuned for SqueezeNet; on EfficientNet-Lite0
the same step barely moves the image. The default update here divides each image's gradient by
its L2 norm (as the fooling-image step does), so the step length does not depend on the scale of
the network's logits. No Lightning and no files here: this is what a notebook imports.
"""

from __future__ import annotations

from typing import Callable, Literal, Optional, Sequence, Union

import torch
from torch import nn

from lightning_modules.backbones.normalization import pixel_range, preprocessing_of
from lightning_modules.errors import (
    UserInputError,
    check_image_side,
    check_learning_rate,
    check_non_negative,
)
from lightning_modules.image_optimization.parameterizations import (
    Parameterization,
    make_parameterization,
)
from lightning_modules.image_optimization.steps import STEP_RULES, StepRule, resolve_step
from lightning_modules.image_optimization.transforms import (
    ImageTransforms,
    RandomCrops,
    jitter,
    resolve_transforms,
)

Step = Literal["normalized", "raw", "adam"]
STEPS = tuple(STEP_RULES)
ParameterizationName = Literal["pixel", "fourier", "maco"]
# What the network sees of each picture every step: the picture itself, Lucent's standard random
# transforms of it, or MACO's random crops of it (a canvas) with noise.
TransformName = Literal["none", "lucent", "crops"]

#: MACO's crops: the seed function's ``crops=`` (the older name of :class:`RandomCrops`).
CropViews = RandomCrops

DEFAULT_L2_REG = 1e-3
DEFAULT_NUM_ITERATIONS = 100
DEFAULT_INIT_STD = 1.0


def default_learning_rate(step: Union[str, StepRule], parameterization: Parameterization) -> float:
    """The step length used when none is given.

    ``raw``: the homework's 25; ``adam``: Lucent's 0.05; ``normalized``: the parameterization's
    own (30 for pixels, 8 for a Fourier spectrum, measured on EfficientNet-Lite0 at 224 px:
    every one of the ten test classes above p = 0.9 within 50 to 100 steps).
    """
    return resolve_step(step).default_lr(parameterization)


def make_optimizer(step: Union[str, StepRule], params: Sequence[torch.Tensor], lr: float,
                   fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer of an update rule: ``"normalized"``, ``"raw"`` (homework), ``"adam"`` or
    a :class:`~lightning_modules.image_optimization.steps.StepRule`.

    ``fused`` picks the fused Adam kernel (``"adam"`` only; the others are two kernels a step).
    """
    return resolve_step(step).optimizer(params, lr, fused)


def as_view(transforms: Union[bool, str, ImageTransforms],
            crops: Optional[RandomCrops] = None) -> ImageTransforms:
    """The view ``transforms`` stands for (see
    :func:`~lightning_modules.image_optimization.transforms.resolve_transforms`); ``crops``, the
    seed function's older way to give the crops' options, goes with ``transforms="crops"``."""
    if crops is None:
        return resolve_transforms(transforms)
    return resolve_transforms(transforms, crops=crops.count, crop_size=crops.size,
                              crop_scale=crops.scale, crop_noise=crops.noise)


def shown_views(parameter: torch.Tensor, parameterization: Parameterization,
                mean: torch.Tensor, std: torch.Tensor, max_jitter: int,
                view: ImageTransforms, generator: Optional[torch.Generator] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The pictures a parameter stands for, and what the network sees of them this step.

    The pictures are shifted by a random circular jitter of 0 to ``max_jitter`` pixels (so the
    gradient step lands on the unshifted picture, exactly as the homework's jitter, step,
    unjitter), then shown through ``view``. Every technique of this family (a class, any
    objective, DeepDream) sees its pictures through this one function.

    Args:
        parameter: The pictures' parameter.
        parameterization: What ``parameter`` is.
        mean: Per-channel mean of the network's preprocessing, ``[1, 3, 1, 1]``.
        std: Its standard deviation.
        max_jitter: Largest random shift in pixels; 0 turns it off.
        view: The view (none, Lucent's transforms, crops).
        generator: Random source of the jitter and the view.

    Returns:
        ``(images, shown)``: the normalized pictures ``[N, 3, H, W]`` and their views
        ``[N * view.views_per_image, 3, h, w]``.
    """
    images = parameterization.to_inputs(parameter, mean, std)
    shown = images
    if max_jitter > 0:
        ox, oy = (int(v) for v in torch.randint(max_jitter + 1, (2,), generator=generator))
        shown = jitter(shown, ox, oy)
    return images, view(shown, mean, std, generator)


def l2_penalty(images: torch.Tensor, l2_reg: float) -> torch.Tensor:
    """``l2_reg * ||image||^2`` per image (normalized units), ``[N]``."""
    return l2_reg * images.pow(2).flatten(1).sum(1)


def class_visualization_loss(
    parameter: torch.Tensor,
    target_y: torch.Tensor,
    model: nn.Module,
    *,
    parameterization: Parameterization,
    mean: torch.Tensor,
    std: torch.Tensor,
    l2_reg: float,
    max_jitter: int,
    transforms: Union[bool, TransformName, ImageTransforms] = False,
    generator: Optional[torch.Generator] = None,
    crops: Optional[CropViews] = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One step's loss terms (to minimize) and the logits they came from.

    The network sees the image shifted by a random jitter of 0 to ``max_jitter`` pixels (a
    circular shift, so the gradient step lands on the unshifted image, exactly as the homework's
    jitter, step, unjitter), then, with ``transforms="lucent"`` (or True), Lucent's random
    transforms, or with ``"crops"`` MACO's random crops: the score is then the mean over the
    crops, so every part of the picture has to show the class.

    Args:
        parameter: The images' parameter (see ``parameterization``).
        target_y: The class of each image, ``[N]`` long.
        model: Maps normalized images to logits.
        parameterization: What ``parameter`` is (pixels, a spectrum).
        mean: Per-channel mean of the model's preprocessing, ``[1, 3, 1, 1]``.
        std: Per-channel standard deviation.
        l2_reg: Weight of ``||image||^2`` (normalized units).
        max_jitter: Largest random shift in pixels; 0 turns it off.
        transforms: ``"none"`` (False), ``"lucent"`` (True), ``"crops"``, or a view object
            (:class:`~lightning_modules.image_optimization.transforms.ImageTransforms`).
        generator: Random source of the jitter and transforms.
        crops: The crops' options, with ``transforms="crops"`` (None: the defaults).

    Returns:
        ``({"score": -score, "l2": l2_reg * ||image||^2}, logits)``, each term ``[N]``; with
        crops the logits are each picture's mean over its crops.
    """
    view = as_view(transforms, crops)
    images, shown = shown_views(parameter, parameterization, mean, std, max_jitter, view,
                                generator)
    logits = model(shown)
    if view.views_per_image > 1:
        logits = logits.view(len(images), view.views_per_image, -1).mean(1)
    score = logits.gather(1, target_y.view(-1, 1)).squeeze(1)
    l2 = l2_penalty(images, l2_reg)
    return {"score": -score, "l2": l2}, logits


def regularize(parameter: torch.Tensor, parameterization: Parameterization, step_index: int,
               low: torch.Tensor, high: torch.Tensor, blur_every: int,
               blur_sigma: float = 0.5) -> None:
    """After a step, in place: keep the picture valid; blur when ``step_index % blur_every == 0``.

    Args:
        parameter: The images' parameter.
        parameterization: What ``parameter`` is; a spectrum needs neither clamp nor blur.
        step_index: The step just taken, counted from 0 (the homework blurs after step 0 too).
        low: Normalized value of a black pixel, ``[1, 3, 1, 1]``.
        high: Normalized value of a white pixel.
        blur_every: Blur period in steps; 0 never blurs.
        blur_sigma: Standard deviation of the blur, in pixels.
    """
    parameterization.project_(parameter, low, high)
    if blur_every > 0 and step_index % blur_every == 0:
        parameterization.smooth_(parameter, blur_sigma)


def check_options(l2_reg: float, learning_rate: Optional[float], blur_every: int,
                  blur_sigma: float, max_jitter: int, image_size: int,
                  step: Union[str, StepRule], init_std: float) -> None:
    """The options the function and the module share, each with its one-sentence error."""
    check_non_negative("l2_reg", l2_reg)
    check_non_negative("init_std", init_std)
    check_learning_rate("learning_rate", learning_rate)
    if blur_every < 0:
        raise UserInputError(f"blur_every must be zero (never) or positive, got {blur_every}.")
    if not blur_sigma > 0:
        raise UserInputError(f"blur_sigma must be positive, got {blur_sigma}.")
    if max_jitter < 0:
        raise UserInputError(f"max_jitter must be zero or positive, got {max_jitter}.")
    if image_size < 8:
        raise UserInputError(f"image_size must be at least 8 pixels, got {image_size}.")
    check_image_side("image_size", image_size)
    resolve_step(step)


def create_class_visualization(
    target_y: int | Sequence[int],
    model: nn.Module,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    l2_reg: float = DEFAULT_L2_REG,
    learning_rate: Optional[float] = None,
    num_iterations: int = DEFAULT_NUM_ITERATIONS,
    blur_every: int = 10,
    max_jitter: int = 16,
    show_every: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    image_size: int = 224,
    step: Union[Step, StepRule] = "normalized",
    blur_sigma: float = 0.5,
    parameterization: Union[ParameterizationName, Parameterization] = "pixel",
    transforms: Union[bool, TransformName, ImageTransforms] = False,
    decay_power: float = 1.0,
    init_std: float = DEFAULT_INIT_STD,
    on_show: Optional[Callable[[int, torch.Tensor], None]] = None,
    crops: Optional[CropViews] = None,
) -> torch.Tensor:
    """Generate an image that maximizes the score of a class (the homework's function).

    The homework's settings for SqueezeNet are ``step="raw", learning_rate=25, l2_reg=1e-3``
    (``configs/cs231n/class_visualization.yaml``); the defaults here take normalized steps, which
    work on any network whatever the scale of its logits.

    Args:
        target_y: A class index, or a list of them for a batch of images (one per class).
        model: Maps normalized images ``[N, 3, H, W]`` to logits; it is not changed.
        mean: Per-channel mean of the model's preprocessing (default: the model's ``mean`` if it
            is a :class:`~lightning_modules.backbones.Backbone`, else ImageNet's).
        std: Per-channel standard deviation (same default rule).
        l2_reg: Weight of the L2 penalty ``||image||^2`` on the normalized image.
        learning_rate: Step length (see ``step``); None: :func:`default_learning_rate`.
        num_iterations: Number of steps.
        blur_every: Blur the image every this many steps (0: never; pixel parameterization).
        max_jitter: Largest random shift in pixels, undone after each step (0: none).
        show_every: Call ``on_show`` (or print the target probabilities) at the first step,
            every this many steps, and at the last; None: never.
        generator: Random source of the starting noise and the jitter (for reproducible runs).
        image_size: Side of the square image, in pixels.
        step: ``"normalized"`` (``lr * g / ||g||_2`` per image), ``"raw"`` (the homework's
            ``lr * g``), ``"adam"``, or a
            :class:`~lightning_modules.image_optimization.steps.StepRule`.
        blur_sigma: Standard deviation of the blur, in pixels.
        parameterization: ``"pixel"`` (the homework), ``"fourier"`` (Lucent's decorrelated
            Fourier-space image; no clamping or blur needed), ``"maco"`` (MACO's phase with a
            photo's amplitude), or a
            :class:`~lightning_modules.image_optimization.parameterizations.Parameterization`.
        transforms: ``"lucent"`` (or True): Lucent's random pad/jitter/scale/rotate transforms
            each step; ``"crops"``: MACO's random crops (see ``crops``); ``"none"`` (False); or
            a view object (:class:`~lightning_modules.image_optimization.transforms.RandomCrops`,
            ...).
        decay_power: Spectrum decay of the Fourier parameterization.
        init_std: Standard deviation of the starting noise in normalized units (pixel
            parameterization; the homework's is 1).
        on_show: ``on_show(step, images)`` with the current normalized images.
        crops: The crops' count, size, scale and noise, with ``transforms="crops"`` (None:
            :class:`CropViews`' defaults).

    Returns:
        The images in the model's normalized space: ``[1, 3, S, S]`` for one class,
        ``[N, 3, S, S]`` for a list of ``N`` classes.
    """
    check_options(l2_reg, learning_rate, blur_every, blur_sigma, max_jitter, image_size, step,
                  init_std)
    view = as_view(transforms, crops)
    if num_iterations < 0:
        raise UserInputError(f"num_iterations must be zero or positive, got {num_iterations}.")
    if not isinstance(parameterization, Parameterization):
        parameterization = make_parameterization(parameterization, init_std, decay_power)
    if learning_rate is None:
        learning_rate = default_learning_rate(step, parameterization)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    target = torch.as_tensor(target_y, dtype=torch.long, device=device).reshape(-1)
    mean, std = preprocessing_of(model, mean, std)
    low, high = pixel_range(mean, std)
    parameter = parameterization.start(len(target), image_size, image_size, low, high, generator)
    parameter = parameter.to(device).requires_grad_(True)
    mean, std, low, high = (t.to(device) for t in (mean, std, low, high))
    optimizer = make_optimizer(step, [parameter], learning_rate)
    for t in range(num_iterations):
        optimizer.zero_grad()
        terms, logits = class_visualization_loss(
            parameter, target, model, parameterization=parameterization, mean=mean, std=std,
            l2_reg=l2_reg, max_jitter=max_jitter, transforms=view, generator=generator)
        torch.stack([value.sum() for value in terms.values()]).sum().backward()
        optimizer.step()
        regularize(parameter, parameterization, t, low, high, blur_every, blur_sigma)
        if show_every and (t == 0 or (t + 1) % show_every == 0 or t == num_iterations - 1):
            with torch.no_grad():
                images = parameterization.to_inputs(parameter.detach(), mean, std)
            if on_show is not None:
                on_show(t, images)
            else:
                probabilities = logits.detach().softmax(1).gather(1, target.view(-1, 1))
                print(f"step {t + 1}/{num_iterations}: p(target) = "
                      + ", ".join(f"{p:.3f}" for p in probabilities.flatten().tolist()))
    with torch.no_grad():
        return parameterization.to_inputs(parameter.detach(), mean, std)
