"""Plain PyTorch reference loops: the work of a project run, without Lightning.

These are the loops a user would otherwise write (the PyTorch tutorial, the CS231n homework):
an image tensor with ``requires_grad``, a frozen backbone, the losses, an optimizer, and a
``for`` loop. They use the project's backbone and loss functions, so the benchmark compares the
cost of running *through Lightning* with the cost of the same arithmetic in a bare loop.

* :func:`style_transfer_loop` does per step what ``StyleTransfer`` does under the ``Trainer``:
  clamp the image to the valid pixel range (``ImageOptimization.clamp_images``), content +
  style + total-variation losses on the chosen feature layers, one Adam step.
* :func:`class_visualization_loop` does what ``ClassVisualization`` does: render the image
  (pixels, or Lucent's Fourier parameterization), random circular jitter (and Lucent's random
  transforms), the class score minus an L2 penalty, a gradient step (normalized, raw or Adam),
  and for pixels a clamp and a blur every ``blur_every`` steps. This is the homework's loop, so
  pixels are clamped once per step (after the update); the project also clamps them before the
  step, which the benchmark counts as the project's overhead. The Fourier rendering, the blur
  and the random transforms are the project's functions (a plain user would call Lucent's).

Each loop is a generator (``*_steps``) that runs one step per ``next()``, so ``run.py`` can
interleave its steps with the Lightning run's; ``*_loop`` runs it for a number of steps, calling
``on_step(step)`` at the start of every step so the caller can time steps the same way it times
the Lightning run. The final image is returned; ``run.py`` compares it with the project's to
show that the two do the same work.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any, Callable, Iterator, Optional, Sequence

import torch

from lightning_modules.backbones import Backbone
from lightning_modules.class_visualization import (blur_image, fourier_spectrum_shape,
                                                   fourier_to_pixels, random_transforms)
from lightning_modules.losses import content_loss, gram_matrix, style_loss, tv_loss

OnStep = Optional[Callable[[int], None]]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context Lightning uses for ``precision`` (``"32-true"`` or ``"bf16-mixed"``)."""
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision in ("32-true", "32"):
        return contextlib.nullcontext()
    raise ValueError(f"Unsupported precision {precision!r}.")


def run_loop(loop: Iterator[Optional[torch.Tensor]], steps: int, on_step: OnStep = None
             ) -> torch.Tensor:
    """Run ``steps`` steps of a loop generator, calling ``on_step(step)`` before each.

    Args:
        loop: A generator from :func:`style_transfer_steps` or :func:`class_visualization_steps`.
        steps: Number of steps.
        on_step: Called with the step index at the start of each step.

    Returns:
        What the loop yielded after the last step (the optimized parameter).
    """
    result = next(loop)  # the set-up: targets, starting image, optimizer
    for step in range(steps):
        if on_step is not None:
            on_step(step)
        result = next(loop)
    loop.close()
    return result


def style_transfer_loop(backbone: Backbone, content: torch.Tensor, style: torch.Tensor,
                        steps: int, on_step: OnStep = None, **options: Any) -> torch.Tensor:
    """Run :func:`style_transfer_steps` for ``steps`` steps; returns the final image."""
    return run_loop(style_transfer_steps(backbone, content, style, **options), steps, on_step)


def class_visualization_loop(backbone: Backbone, classes: Sequence[int], steps: int,
                             on_step: OnStep = None, **options: Any) -> torch.Tensor:
    """Run :func:`class_visualization_steps` for ``steps`` steps; returns the final parameter."""
    return run_loop(class_visualization_steps(backbone, classes, **options), steps, on_step)


def style_transfer_steps(
    backbone: Backbone,
    content: torch.Tensor,
    style: torch.Tensor,
    content_layers: Sequence[int] = (4,),
    content_weights: Sequence[float] = (1.0,),
    style_layers: Sequence[int] = (1, 2, 3, 4),
    style_weights: Sequence[float] = (1e4, 1e4, 1e4, 1e4),
    tv_weight: float = 0.005,
    lr: float = 0.08,
    precision: str = "32-true",
    fused: bool = False,
) -> Iterator[Optional[torch.Tensor]]:
    """Gatys style transfer of a batch of content images, started from the content.

    A generator: it yields None once set up, then the image after each step, for ever (so a
    benchmark can interleave its steps with another loop's; :func:`run_loop` runs it).

    Args:
        backbone: The frozen backbone, already on the device.
        content: 0-1 content pixels ``[B, 3, H, W]`` on the device.
        style: 0-1 style pixels ``[3, h, w]`` on the device (one style for the whole batch).
        content_layers: Layers of the content loss.
        content_weights: Weight of each content layer.
        style_layers: Layers of the style loss.
        style_weights: Weight of each style layer.
        tv_weight: Weight of the total-variation loss.
        lr: Adam's learning rate.
        precision: ``"32-true"`` or ``"bf16-mixed"`` (autocast around the forward pass and the
            losses, as Lightning's mixed-precision plugin does).
        fused: Adam as one fused kernel (the project's fast path). The image takes the
            backbone's memory format, and a backbone compiled for CUDA graphs gets a new graph
            step before each step, as ``ImageOptimization`` does (``benchmarks/layouts.py``).

    Yields:
        None, then the image (normalized, ``[B, 3, H, W]``) after each step.
    """
    device = content.device
    batch = content.shape[0]
    pixel_min, pixel_max = backbone.pixel_min, backbone.pixel_max
    # Targets once, under the run's precision, as the project's on_fit_start computes them.
    with torch.no_grad(), autocast(device, precision):
        content_targets = backbone.extract(backbone.normalize(content), content_layers)
        style_feats = backbone.extract(backbone.normalize(style[None]), style_layers)
        style_targets = [gram_matrix(f).expand(batch, -1, -1) for f in style_feats]
    image = backbone.normalize(content).detach().clone()
    image = image.contiguous(memory_format=backbone.memory_format).requires_grad_(True)
    optimizer = torch.optim.Adam([image], lr=lr, fused=fused or None)
    layers = sorted(set(content_layers) | set(style_layers))
    yield None
    while True:
        if backbone.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        with torch.no_grad():
            image.copy_(torch.max(torch.min(image, pixel_max), pixel_min))
        with autocast(device, precision):
            feats = dict(zip(layers, backbone.extract(image, layers)))
            content_term = sum(content_loss(w, feats[layer], target)
                               for layer, w, target in zip(content_layers, content_weights,
                                                           content_targets))
            style_term = style_loss(feats, style_layers, style_targets, style_weights)
            tv_term = tv_loss(image, tv_weight)
            loss = torch.stack([content_term.sum(), style_term.sum(), tv_term.sum()]).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        yield image.detach()


def class_visualization_steps(
    backbone: Backbone,
    classes: Sequence[int],
    image_size: int = 224,
    parameterization: str = "pixel",
    transforms: bool = False,
    decay_power: float = 1.0,
    step_rule: str = "normalized",
    lr: float = 30.0,
    l2_reg: float = 1e-3,
    blur_every: int = 10,
    blur_sigma: float = 0.5,
    max_jitter: int = 16,
    init_std: float = 1.0,
    seed: int = 0,
    precision: str = "32-true",
) -> Iterator[Optional[torch.Tensor]]:
    """Class visualization by gradient ascent on the class scores (one image per class).

    A generator like :func:`style_transfer_steps`.

    Args:
        backbone: The frozen backbone, already on the device.
        classes: The class index of each image.
        image_size: Side of the square images.
        parameterization: ``"pixel"`` (the image is the parameter; clamped every step, blurred
            every ``blur_every``) or ``"fourier"`` (Lucent's colour-decorrelated spectrum).
        transforms: Lucent's random pad/jitter/scale/rotate after the circular jitter.
        decay_power: Spectrum decay of the Fourier parameterization.
        step_rule: ``"normalized"`` (``lr * g / ||g||_2`` per image), ``"raw"`` (``lr * g``)
            or ``"adam"``.
        lr: Step length.
        l2_reg: Weight of the L2 penalty on the normalized image.
        blur_every: Blur every this many steps (0: never; pixels only).
        blur_sigma: Standard deviation of the blur in pixels.
        max_jitter: Largest random circular shift in pixels.
        init_std: Standard deviation of the starting pixel noise (normalized units).
        seed: Seed of the CPU generator that draws the start, the jitter and the transforms.
        precision: ``"32-true"`` or ``"bf16-mixed"``.

    Yields:
        None, then the parameter (normalized images ``[N, 3, S, S]``, or spectra) after each
        step.
    """
    device = backbone.mean.device
    mean, std = backbone.mean, backbone.std
    low, high = backbone.pixel_min, backbone.pixel_max
    grey = (0.5 - mean) / std
    fourier = parameterization == "fourier"
    generator = torch.Generator().manual_seed(seed)
    if fourier:
        start = 0.01 * torch.randn(fourier_spectrum_shape(len(classes), image_size),
                                   generator=generator)
    else:
        noise = init_std * torch.randn(len(classes), 3, image_size, image_size,
                                       generator=generator)
        start = torch.max(torch.min(noise, high.cpu()), low.cpu())
    parameter = start.to(device).requires_grad_(True)
    target = torch.as_tensor(list(classes), dtype=torch.long, device=device)
    adam = torch.optim.Adam([parameter], lr=lr) if step_rule == "adam" else None
    yield None
    for step in itertools.count():
        with autocast(device, precision):
            images = parameter
            if fourier:
                images = (fourier_to_pixels(parameter, decay_power) - mean) / std
            ox, oy = (int(v) for v in torch.randint(max_jitter + 1, (2,), generator=generator))
            shown = torch.roll(images, shifts=(oy, ox), dims=(2, 3))
            if transforms:
                shown = random_transforms(shown, grey, generator)
            logits = backbone(shown)
            score = logits.gather(1, target.view(-1, 1)).squeeze(1)
            l2 = l2_reg * images.pow(2).flatten(1).sum(1)
            loss = torch.stack([(-score).sum(), l2.sum()]).sum()
        parameter.grad = None
        loss.backward()
        with torch.no_grad():
            if adam is not None:
                adam.step()
            else:
                grad = parameter.grad
                if step_rule == "normalized":
                    norms = grad.flatten(1).norm(dim=1).clamp(min=1e-12)
                    grad = grad / norms.view(-1, *([1] * (grad.ndim - 1)))
                parameter.sub_(grad, alpha=lr)
            if not fourier:
                parameter.copy_(torch.max(torch.min(parameter, high), low))
                if blur_every > 0 and step % blur_every == 0:
                    parameter.copy_(blur_image(parameter, blur_sigma))
        yield parameter.detach()
