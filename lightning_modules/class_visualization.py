"""Class visualization: the picture a class looks like to the network.

Gradient ascent on a class's raw score, starting from noise (Simonyan et al. 2014; Yosinski et al.
2015), as in the CS231n homework: each step shifts the image by a random jitter, steps along the
gradient of ``score - l2_reg * ||image||^2``, undoes the jitter, clamps to the valid pixel range,
and every ``blur_every`` steps blurs with a Gaussian (sigma 0.5).

:func:`create_class_visualization` is the homework's function and the one implementation;
:class:`ClassVisualization` runs the same loss, update and regularization under the Lightning
``Trainer``. Two extras come from Lucid/Lucent (Olah et al. 2017, "Feature Visualization"): a
Fourier-space, colour-decorrelated image parameterization (``parameterization="fourier"``) and
their standard set of random pad/jitter/scale/rotate transforms (``transforms=True``).

The homework's update is the raw gradient times 25, tuned for SqueezeNet; on EfficientNet-Lite0
the same step barely moves the image. The default update here divides each image's gradient by
its L2 norm (as the fooling-image step does), so the step length does not depend on the scale of
the network's logits.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.backbones import IMAGENET_MEAN, IMAGENET_STD
from lightning_modules.base import ImageOptimization, ImageSlot, check_non_negative
from lightning_modules.errors import UserInputError
from lightning_modules.losses import at_least_float32

Step = Literal["normalized", "raw", "adam"]
Parameterization = Literal["pixel", "fourier"]

DEFAULT_L2_REG = 1e-3
DEFAULT_NUM_ITERATIONS = 100
DEFAULT_INIT_STD = 1.0


# ============================================================================ the homework's pieces
def jitter(images: torch.Tensor, ox: int, oy: int) -> torch.Tensor:
    """Shift images circularly by ``ox`` pixels right and ``oy`` down (the homework's jitter).

    ``jitter(jitter(x, ox, oy), -ox, -oy)`` is ``x`` again, exactly.

    Args:
        images: ``[N, C, H, W]``.
        ox: Horizontal shift in pixels.
        oy: Vertical shift in pixels.

    Returns:
        The shifted images (a new tensor).
    """
    return torch.roll(images, shifts=(oy, ox), dims=(2, 3))


def blur_image(images: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """Gaussian blur of each channel, as ``scipy.ndimage.gaussian_filter1d`` along H then W.

    Matches the homework's ``blur_image`` (scipy's defaults: kernel radius ``int(4 * sigma + 0.5)``,
    edges reflected about the border, ``d c b a | a b c d``).

    Args:
        images: ``[N, C, H, W]``.
        sigma: Standard deviation in pixels.

    Returns:
        The blurred images (a new tensor).
    """
    radius = int(4.0 * sigma + 0.5)
    if radius == 0:
        return images.clone()
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(images)
    channels = images.shape[1]
    for dim in (2, 3):
        size = images.shape[dim]
        # scipy's "reflect" extension (edge pixel repeated), periodic with period 2 * size.
        positions = torch.arange(-radius, size + radius, device=images.device) % (2 * size)
        positions = torch.where(positions < size, positions, 2 * size - 1 - positions)
        padded = images.index_select(dim, positions)
        weight = kernel.view(1, 1, -1, 1) if dim == 2 else kernel.view(1, 1, 1, -1)
        images = F.conv2d(padded, weight.expand(channels, -1, -1, -1), groups=channels)
    return images


def clamp_to_range(images: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Clamp normalized images per channel to ``[low, high]`` (each ``[1, C, 1, 1]``)."""
    return torch.max(torch.min(images, high), low)


def pixel_range(mean: Sequence[float] | torch.Tensor,
                std: Sequence[float] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalized values of black and white pixels, each ``[1, 3, 1, 1]``."""
    mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
    return -mean / std, (1 - mean) / std


# ============================================================================ Lucent's pieces
# Square root of ImageNet's colour correlation (Lucid), scaled to unit maximum column norm:
# the Fourier parameterization works in decorrelated colour coordinates.
_COLOR_CORRELATION_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]]
)
_COLOR_CORRELATION = _COLOR_CORRELATION_SQRT / _COLOR_CORRELATION_SQRT.norm(dim=0).max()


def fourier_spectrum_shape(batch: int, image_size: int) -> tuple[int, ...]:
    """Shape of the Fourier parameter of ``batch`` square images: real and imaginary parts."""
    return (batch, 3, image_size, image_size // 2 + 1, 2)


def fourier_to_pixels(spectrum: torch.Tensor, decay_power: float = 1.0) -> torch.Tensor:
    """Render a Fourier parameter ``[N, 3, S, S//2+1, 2]`` as 0-1 pixels ``[N, 3, S, S]``.

    As Lucent's ``fft_image`` + ``to_valid_rgb(decorrelate=True)``: each frequency is scaled by
    ``1 / max(f, 1/S) ** decay_power`` (so all frequencies learn at a similar rate), the inverse
    real FFT gives decorrelated colours, the colour correlation matrix maps them to RGB, and a
    sigmoid keeps every pixel valid.

    Args:
        spectrum: Real and imaginary parts of each image's spectrum.
        decay_power: How fast the scale falls with frequency.

    Returns:
        0-1 pixels.
    """
    # The picture is the parameter, not part of the network: render it in float32 under a
    # bf16 autocast too (the einsum would otherwise round every pixel to 3 digits).
    with torch.autocast(spectrum.device.type, enabled=False):
        return _render_spectrum(at_least_float32(spectrum), decay_power)


def _render_spectrum(spectrum: torch.Tensor, decay_power: float) -> torch.Tensor:
    size = spectrum.shape[2]
    fy = torch.fft.fftfreq(size, device=spectrum.device)[:, None]
    fx = torch.fft.rfftfreq(size, device=spectrum.device)[None, :]
    frequency = torch.sqrt(fx * fx + fy * fy)
    scale = 1.0 / frequency.clamp(min=1.0 / size) ** decay_power
    complex_spectrum = torch.view_as_complex(spectrum.contiguous()) * scale
    decorrelated = torch.fft.irfft2(complex_spectrum, s=(size, size), norm="ortho") / 4.0
    rgb = torch.einsum("nchw,dc->ndhw", decorrelated, _COLOR_CORRELATION.to(spectrum))
    return torch.sigmoid(rgb)


def _choice(values: Sequence[float], generator: Optional[torch.Generator]) -> float:
    return values[int(torch.randint(len(values), (1,), generator=generator))]


def _random_crop(images: torch.Tensor, shrink: int,
                 generator: Optional[torch.Generator]) -> torch.Tensor:
    dx, dy = (int(v) for v in torch.randint(shrink + 1, (2,), generator=generator))
    height, width = images.shape[2] - shrink, images.shape[3] - shrink
    return images[:, :, dy : dy + height, dx : dx + width]


# Lucent's standard_transforms: pad 12, jitter 8, scale 0.9-1.1, rotate -10..10 deg, jitter 4.
_SCALES = [1 + (i - 5) / 50.0 for i in range(11)]
_ANGLES = list(range(-10, 11)) + 5 * [0]


def random_transforms(images: torch.Tensor, pad_value: torch.Tensor,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Lucent's standard random transforms, differentiable, one draw for the whole batch.

    Pad 12 px with grey, crop a random 8 px jitter, scale by 0.9-1.1, rotate by -10 to 10
    degrees, crop a random 4 px jitter.

    Args:
        images: Normalized images ``[N, 3, H, W]``.
        pad_value: The normalized value of the padding colour, ``[1, 3, 1, 1]``.
        generator: Random source of the draws.

    Returns:
        The transformed images (their size changes slightly).
    """
    pad = 12
    canvas = pad_value.to(images).expand(images.shape[0], -1, images.shape[2] + 2 * pad,
                                         images.shape[3] + 2 * pad).clone()
    canvas[:, :, pad:-pad, pad:-pad] = images
    images = _random_crop(canvas, 8, generator)
    scale = _choice(_SCALES, generator)
    if scale != 1:
        images = F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
    angle = math.radians(_choice(_ANGLES, generator))
    if angle != 0:
        cos, sin = math.cos(angle), math.sin(angle)
        theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=images.dtype,
                             device=images.device).expand(images.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                               align_corners=False)
    return _random_crop(images, 4, generator)


# ============================================================================ the loop's parts
class GradientAscent(torch.optim.Optimizer):
    """The homework's update, as an optimizer that *descends* the loss ``-objective``.

    ``normalize=False`` is the homework's ``image += lr * grad``; ``normalize=True`` divides each
    image's gradient (each row of the parameter) by its L2 norm, ``image += lr * g / ||g||_2``.

    Args:
        params: The image parameters, batch first.
        lr: Step length.
        normalize: Divide each image's gradient by its L2 norm.
    """

    def __init__(self, params: Any, lr: float, normalize: bool = True) -> None:
        super().__init__(params, {"lr": lr, "normalize": normalize})

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if group["normalize"]:
                    norms = grad.flatten(1).norm(dim=1).clamp(min=1e-12)
                    grad = grad / norms.view(-1, *([1] * (grad.ndim - 1)))
                param.sub_(grad, alpha=group["lr"])
        return loss


def default_learning_rate(step: str, parameterization: str) -> float:
    """The step length used when none is given.

    ``raw``: the homework's 25; ``adam``: Lucent's 0.05; ``normalized``: 30 for pixels and 8 for
    a Fourier spectrum, measured on EfficientNet-Lite0 at 224 px (every one of the ten test
    classes above p = 0.9 within 50 to 100 steps).
    """
    if step == "raw":
        return 25.0
    if step == "adam":
        return 0.05
    return 8.0 if parameterization == "fourier" else 30.0


def make_optimizer(step: str, params: Sequence[torch.Tensor], lr: float,
                   fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer of an update rule: ``"normalized"``, ``"raw"`` (homework) or ``"adam"``.

    ``fused`` picks the fused Adam kernel (``"adam"`` only; the others are two kernels a step).
    """
    if step == "adam":
        return torch.optim.Adam(params, lr=lr, fused=fused or None)
    if step in ("normalized", "raw"):
        return GradientAscent(params, lr=lr, normalize=step == "normalized")
    raise UserInputError(f"Unknown step '{step}'; choose 'normalized', 'raw' or 'adam'.")


def start_parameter(batch: int, image_size: int, parameterization: str,
                    low: torch.Tensor, high: torch.Tensor,
                    generator: Optional[torch.Generator] = None,
                    init_std: float = 1.0) -> torch.Tensor:
    """The starting parameter: the homework's Gaussian noise, or Lucent's small random spectrum.

    Args:
        batch: Number of images.
        image_size: Side of the square images.
        parameterization: ``"pixel"`` (normalized images ``[N, 3, S, S]``, ``init_std * randn``
            clamped to ``[low, high]``) or ``"fourier"`` (a spectrum, ``0.01 * randn``).
        low: Normalized value of a black pixel, ``[1, 3, 1, 1]``.
        high: Normalized value of a white pixel.
        generator: Random source.
        init_std: Standard deviation of the starting pixel noise, in normalized units (the
            homework's 1).

    Returns:
        The parameter's starting value (CPU).
    """
    if parameterization == "fourier":
        return 0.01 * torch.randn(fourier_spectrum_shape(batch, image_size), generator=generator)
    noise = init_std * torch.randn(batch, 3, image_size, image_size, generator=generator)
    return clamp_to_range(noise, low.cpu(), high.cpu())


def render_images(parameter: torch.Tensor, parameterization: str, mean: torch.Tensor,
                  std: torch.Tensor, decay_power: float = 1.0) -> torch.Tensor:
    """The normalized images ``[N, 3, S, S]`` a parameter stands for (the pixel one is itself)."""
    if parameterization == "fourier":
        return (fourier_to_pixels(parameter, decay_power) - mean) / std
    return parameter


def class_visualization_loss(
    parameter: torch.Tensor,
    target_y: torch.Tensor,
    model: nn.Module,
    *,
    parameterization: str,
    mean: torch.Tensor,
    std: torch.Tensor,
    l2_reg: float,
    max_jitter: int,
    transforms: bool = False,
    decay_power: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One step's loss terms (to minimize) and the logits they came from.

    The network sees the image shifted by a random jitter of 0 to ``max_jitter`` pixels (a
    circular shift, so the gradient step lands on the unshifted image, exactly as the homework's
    jitter, step, unjitter), then, with ``transforms``, Lucent's random transforms.

    Args:
        parameter: Pixel images or Fourier spectra (see :func:`start_parameter`).
        target_y: The class of each image, ``[N]`` long.
        model: Maps normalized images to logits.
        parameterization: ``"pixel"`` or ``"fourier"``.
        mean: Per-channel mean of the model's preprocessing, ``[1, 3, 1, 1]``.
        std: Per-channel standard deviation.
        l2_reg: Weight of ``||image||^2`` (normalized units).
        max_jitter: Largest random shift in pixels; 0 turns it off.
        transforms: Apply Lucent's random transforms too.
        decay_power: Spectrum decay of the Fourier parameterization.
        generator: Random source of the jitter and transforms.

    Returns:
        ``({"score": -score, "l2": l2_reg * ||image||^2}, logits)``, each term ``[N]``.
    """
    images = render_images(parameter, parameterization, mean, std, decay_power)
    shown = images
    if max_jitter > 0:
        ox, oy = (int(v) for v in torch.randint(max_jitter + 1, (2,), generator=generator))
        shown = jitter(shown, ox, oy)
    if transforms:
        grey = (0.5 - mean) / std
        shown = random_transforms(shown, grey, generator)
    logits = model(shown)
    score = logits.gather(1, target_y.view(-1, 1)).squeeze(1)
    l2 = l2_reg * images.pow(2).flatten(1).sum(1)
    return {"score": -score, "l2": l2}, logits


@torch.no_grad()
def regularize_pixels(images: torch.Tensor, step_index: int, low: torch.Tensor,
                      high: torch.Tensor, blur_every: int, blur_sigma: float = 0.5) -> None:
    """After a step, in place: clamp to ``[low, high]``; blur when ``step_index % blur_every == 0``.

    Args:
        images: Normalized pixel images ``[N, 3, H, W]`` (the parameter itself).
        step_index: The step just taken, counted from 0 (the homework blurs after step 0 too).
        low: Normalized value of a black pixel, ``[1, 3, 1, 1]``.
        high: Normalized value of a white pixel.
        blur_every: Blur period in steps; 0 never blurs.
        blur_sigma: Standard deviation of the blur, in pixels.
    """
    images.copy_(clamp_to_range(images, low, high))
    if blur_every > 0 and step_index % blur_every == 0:
        images.copy_(blur_image(images, blur_sigma))


def _check_options(l2_reg: float, learning_rate: Optional[float], num_iterations: Optional[int],
                   blur_every: int, blur_sigma: float, max_jitter: int, image_size: int,
                   step: str, parameterization: str, init_std: float) -> None:
    check_non_negative("l2_reg", l2_reg)
    check_non_negative("init_std", init_std)
    if learning_rate is not None and not learning_rate > 0:
        raise UserInputError(f"learning_rate must be positive, got {learning_rate}.")
    if num_iterations is not None and num_iterations < 0:
        raise UserInputError(f"num_iterations must be zero or positive, got {num_iterations}.")
    if blur_every < 0:
        raise UserInputError(f"blur_every must be zero (never) or positive, got {blur_every}.")
    if not blur_sigma > 0:
        raise UserInputError(f"blur_sigma must be positive, got {blur_sigma}.")
    if max_jitter < 0:
        raise UserInputError(f"max_jitter must be zero or positive, got {max_jitter}.")
    if image_size < 8:
        raise UserInputError(f"image_size must be at least 8 pixels, got {image_size}.")
    if step not in ("normalized", "raw", "adam"):
        raise UserInputError(f"Unknown step '{step}'; choose 'normalized', 'raw' or 'adam'.")
    if parameterization not in ("pixel", "fourier"):
        raise UserInputError(
            f"Unknown parameterization '{parameterization}'; choose 'pixel' or 'fourier'."
        )


def _preprocessing(model: nn.Module, mean: Optional[Sequence[float]],
                   std: Optional[Sequence[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean``/``std`` as ``[1, 3, 1, 1]``: given, else the backbone's own, else ImageNet's."""
    if mean is None:
        mean = getattr(model, "mean", IMAGENET_MEAN)
    if std is None:
        std = getattr(model, "std", IMAGENET_STD)
    mean = torch.as_tensor(mean, dtype=torch.float32).detach().cpu().reshape(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).detach().cpu().reshape(1, -1, 1, 1)
    return mean, std


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
    step: Step = "normalized",
    blur_sigma: float = 0.5,
    parameterization: Parameterization = "pixel",
    transforms: bool = False,
    decay_power: float = 1.0,
    init_std: float = DEFAULT_INIT_STD,
    on_show: Optional[Callable[[int, torch.Tensor], None]] = None,
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
            ``lr * g``) or ``"adam"``.
        blur_sigma: Standard deviation of the blur, in pixels.
        parameterization: ``"pixel"`` (the homework) or ``"fourier"`` (Lucent's decorrelated
            Fourier-space image; no clamping or blur needed).
        transforms: Apply Lucent's random pad/jitter/scale/rotate transforms each step.
        decay_power: Spectrum decay of the Fourier parameterization.
        init_std: Standard deviation of the starting noise in normalized units (pixel
            parameterization; the homework's is 1).
        on_show: ``on_show(step, images)`` with the current normalized images.

    Returns:
        The images in the model's normalized space: ``[1, 3, S, S]`` for one class,
        ``[N, 3, S, S]`` for a list of ``N`` classes.
    """
    _check_options(l2_reg, learning_rate, num_iterations, blur_every, blur_sigma, max_jitter,
                   image_size, step, parameterization, init_std)
    if learning_rate is None:
        learning_rate = default_learning_rate(step, parameterization)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    target = torch.as_tensor(target_y, dtype=torch.long, device=device).reshape(-1)
    mean, std = _preprocessing(model, mean, std)
    low, high = pixel_range(mean, std)
    parameter = start_parameter(len(target), image_size, parameterization, low, high, generator,
                                init_std)
    parameter = parameter.to(device).requires_grad_(True)
    mean, std, low, high = (t.to(device) for t in (mean, std, low, high))
    optimizer = make_optimizer(step, [parameter], learning_rate)
    for t in range(num_iterations):
        optimizer.zero_grad()
        terms, logits = class_visualization_loss(
            parameter, target, model, parameterization=parameterization, mean=mean, std=std,
            l2_reg=l2_reg, max_jitter=max_jitter, transforms=transforms,
            decay_power=decay_power, generator=generator)
        torch.stack([value.sum() for value in terms.values()]).sum().backward()
        optimizer.step()
        if parameterization == "pixel":
            regularize_pixels(parameter, t, low, high, blur_every, blur_sigma)
        if show_every and (t == 0 or (t + 1) % show_every == 0 or t == num_iterations - 1):
            images = render_images(parameter.detach(), parameterization, mean, std, decay_power)
            if on_show is not None:
                on_show(t, images)
            else:
                probabilities = logits.detach().softmax(1).gather(1, target.view(-1, 1))
                print(f"step {t + 1}/{num_iterations}: p(target) = "
                      + ", ".join(f"{p:.3f}" for p in probabilities.flatten().tolist()))
    with torch.no_grad():
        return render_images(parameter.detach(), parameterization, mean, std, decay_power)


# ============================================================================ the LightningModule
def class_file_name(index: int, category: str) -> str:
    """A file-name-safe name for a class, e.g. ``0130_flamingo``, ``0207_golden_retriever``."""
    safe = "".join(c if c.isalnum() else "_" for c in category.lower()).strip("_")
    return f"{index:04d}_{'_'.join(filter(None, safe.split('_')))}"


class ClassVisualization(ImageOptimization):
    """Draw what each class looks like to the network: one image per class, all in one batch.

    Classes come from :class:`datamodules.classes.ClassListData` (indices or ImageNet names).
    Each step logs ``target_prob`` (the mean probability of the target classes, as the network
    sees the jittered images) and ``target_prob/<class>`` for each class. At the end the run
    directory gets ``class_probability.png`` (the curves) and ``classes_sheet.png`` (every class,
    titled with its name and the probability of its 8-bit PNG); the ``ImageWriter`` callback
    writes ``<class>.png`` per class.

    Args:
        l2_reg: Weight of the L2 penalty ``||image||^2`` on the normalized image.
        blur_every: Blur every this many steps (0: never; pixel parameterization only).
        blur_sigma: Standard deviation of the blur, in pixels.
        max_jitter: Largest random circular shift in pixels, undone after each step (0: none).
        image_size: Side of the square images.
        parameterization: ``"pixel"`` (the homework: the image is the parameter) or
            ``"fourier"`` (Lucent: a colour-decorrelated spectrum; no clamping or blur needed).
        transforms: Apply Lucent's standard random pad/jitter/scale/rotate transforms.
        decay_power: Spectrum decay of the Fourier parameterization.
        init_std: Standard deviation of the starting noise in normalized units (pixel
            parameterization; the homework's is 1).
        step: ``"normalized"`` (``lr * g / ||g||_2`` per image), ``"raw"`` (the homework's
            ``lr * g``) or ``"adam"``.
        lr: Step length (the homework's ``learning_rate``); None:
            :func:`default_learning_rate` of ``step`` and ``parameterization``.
        **kwargs: ``backbone``, ``weights``, the learning-rate drop and ``clamp`` options of
            :class:`~lightning_modules.base.ImageOptimization` (its ``optimizer`` must stay
            ``adam``: choose the update with ``step``).
    """

    def __init__(
        self,
        l2_reg: float = DEFAULT_L2_REG,
        blur_every: int = 10,
        blur_sigma: float = 0.5,
        max_jitter: int = 16,
        image_size: int = 224,
        parameterization: Parameterization = "pixel",
        transforms: bool = False,
        decay_power: float = 1.0,
        init_std: float = DEFAULT_INIT_STD,
        step: Step = "normalized",
        lr: Optional[float] = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("optimizer", "adam") != "adam":
            raise UserInputError("ClassVisualization chooses its update with --model.step "
                                 "(normalized, raw or adam), not --model.optimizer.")
        _check_options(l2_reg, lr, None, blur_every, blur_sigma, max_jitter, image_size, step,
                       parameterization, init_std)
        super().__init__(lr=lr if lr is not None else default_learning_rate(step, parameterization),
                         **kwargs)
        self.save_hyperparameters()
        self.l2_reg = l2_reg
        self.blur_every = blur_every
        self.blur_sigma = blur_sigma
        self.max_jitter = max_jitter
        self.image_size = image_size
        self.parameterization = parameterization
        self.transforms = transforms
        self.decay_power = decay_power
        self.init_std = init_std
        self.step_rule = step
        self.class_indices: list[int] = []
        self.job_names: list[str] = []
        self.probability_history: list[list[float]] = []  # per step of the current chunk
        self.finished: list[tuple[int, str, list[float]]] = []  # (job, title, p per step)
        self.generator: Optional[torch.Generator] = None
        self.output_directory = None
        self._last_logits: Optional[torch.Tensor] = None
        self._targets: Optional[torch.Tensor] = None  # class_indices on the device
        self._pending_probabilities: list[torch.Tensor] = []  # steps not yet in the history
        self._saved_probabilities: tuple[int, list[float]] = (-1, [])

    # ----------------------------------------------------------------- images
    def create_images(self) -> list[torch.Tensor]:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "classes"):
            raise UserInputError("ClassVisualization needs a ClassListData datamodule "
                                 "(data: class_path: datamodules.classes.ClassListData).")
        classes = [self.backbone.class_index(c) for c in datamodule.classes]
        counts: dict[str, int] = {}
        self.job_names = []
        for index in classes:
            name = class_file_name(index, self.backbone.categories[index])
            counts[name] = counts.get(name, 0) + 1
            # The same class twice: two pictures from different noise.
            self.job_names.append(name if counts[name] == 1 else f"{name}_{counts[name]}")
        mine = self.my_jobs(range(len(classes)))
        self.class_indices = [classes[job] for job in mine]
        self.slots = [ImageSlot(self.job_names[job], 0, row) for row, job in enumerate(mine)]
        self.probability_history = []
        # The seed function's generator, seeded like the run, so both give the same images.
        # Every process and chunk draws the noise of all classes and keeps its own rows: the
        # jitter that follows is then the same everywhere, as in one run of all classes.
        self.generator = torch.Generator().manual_seed(torch.initial_seed())
        low, high = self._bounds()
        noise = start_parameter(len(classes), self.image_size, self.parameterization, low, high,
                                self.generator, self.init_std)
        return [noise[mine]]

    def _bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The clamp range: ``±clamp`` when set, else the backbone's valid pixel range."""
        if self.clamp is not None:
            limit = torch.full_like(self.backbone.mean, self.clamp)
            return -limit, limit
        return self.backbone.pixel_min, self.backbone.pixel_max

    def rendered_images(self) -> torch.Tensor:
        """The current normalized images ``[B, 3, S, S]``, one per class."""
        return render_images(self.images[0], self.parameterization, self.backbone.mean,
                             self.backbone.std, self.decay_power)

    # ----------------------------------------------------------------- optimization
    def setup(self, stage: str) -> None:
        from callbacks.run_directory import run_directory

        super().setup(stage)
        if self._trainer is not None:
            self.output_directory = run_directory(self.trainer)

    def configure_optimizers(self) -> Any:
        return make_optimizer(self.step_rule, list(self.images), self.lr, fused=self.fused_optimizer)

    @torch.no_grad()
    def clamp_images(self) -> None:
        # A spectrum needs no clamping: the sigmoid keeps its pixels valid.
        if self.parameterization == "pixel":
            super().clamp_images()

    def prepare_targets(self) -> None:
        # Once per chunk: a host list to a GPU tensor is a copy that waits for the GPU.
        self._targets = torch.as_tensor(self.class_indices, dtype=torch.long, device=self.device)

    def loss_terms(self, group: int, images: torch.Tensor) -> dict[str, torch.Tensor]:
        terms, self._last_logits = class_visualization_loss(
            images, self._targets, self.backbone, parameterization=self.parameterization,
            mean=self.backbone.mean, std=self.backbone.std, l2_reg=self.l2_reg,
            max_jitter=self.max_jitter, transforms=self.transforms,
            decay_power=self.decay_power, generator=self.generator)
        return terms

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        logits = self._last_logits.detach()
        self._last_logits = None  # under CUDA graphs the next step overwrites it
        probabilities = logits.softmax(1).gather(1, self._targets.view(-1, 1))[:, 0]
        # On the device until a logging step, like the losses (see record_losses).
        self._pending_probabilities.append(probabilities)
        if self.is_log_step():
            self.flush_probabilities(log=True)
        return loss

    def flush_probabilities(self, log: bool) -> None:
        """Move the pending steps' probabilities to the history (one host read); log the last."""
        if not self._pending_probabilities:
            return
        last = self._pending_probabilities[-1]
        self.probability_history.extend(torch.stack(self._pending_probabilities).cpu().tolist())
        self._pending_probabilities = []
        if log:
            self.log_job_mean("target_prob", last, prog_bar=True)
            # Each process logs its own classes (metrics.csv: those of process 0).
            for slot, value in zip(self.slots, last):
                self.log(f"target_prob/{slot.name}", value, on_step=True, on_epoch=False)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any,
                       optimizer_closure: Optional[Callable[[], Any]] = None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.parameterization == "pixel":
            low, high = self._bounds()
            regularize_pixels(self.images[0], batch_idx, low, high, self.blur_every,
                              self.blur_sigma)

    # ----------------------------------------------------------------- results
    def result_pixels(self, index: int) -> torch.Tensor:
        if self.parameterization == "pixel":
            return super().result_pixels(index)
        with torch.no_grad():
            spectrum = self.images[0][index : index + 1].detach().float()
            return fourier_to_pixels(spectrum, self.decay_power)[0].clamp(0, 1).cpu()

    @torch.no_grad()
    def saved_probabilities(self) -> list[float]:
        """The probability the network gives each class's image once saved as an 8-bit PNG."""
        if self._saved_probabilities[0] != self.global_step:
            pixels = torch.stack([self.result_pixels(i) for i in range(len(self.slots))])
            pixels = pixels.mul(255).round().div(255).to(self.device)
            target = torch.as_tensor(self.class_indices, device=self.device)
            values = []
            for start in range(0, len(pixels), 32):
                logits = self.backbone(self.backbone.normalize(pixels[start : start + 32]))
                chosen = target[start : start + 32, None]
                values += logits.softmax(1).gather(1, chosen)[:, 0].tolist()
            self._saved_probabilities = (self.global_step, values)
        return self._saved_probabilities[1]

    def panel_title(self, index: int) -> str:
        """``"<class name> p=<probability of the saved PNG>"``."""
        name = self.backbone.categories[self.class_indices[index]]
        return f"{name} p={self.saved_probabilities()[index]:.2f}"

    def sheet_panels(self, index: int) -> list[tuple[str, torch.Tensor]]:
        return [(self.panel_title(index), self.result_pixels(index))]

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.flush_probabilities(log=False)
        # The end of a chunk: keep what the run's sheet and plot need; the image goes to disk.
        if self.idle or self.output_directory is None:
            return
        from datamodules.images import save_png

        for row, job in enumerate(self.job_indices):
            path = self.output_directory / f"{self.job_names[job]}.png"
            if not path.exists():  # written by ImageWriter, unless there is none
                save_png(self.result_pixels(row), path)
            curve = [step[row] for step in self.probability_history]
            self.finished.append((job, self.panel_title(row), curve))

    def on_train_end(self) -> None:
        finished = sorted((item for part in self.gather(self.finished) for item in part),
                          key=lambda item: item[0])
        if self.output_directory is None or not self.trainer.is_global_zero:
            return
        from datamodules.images import image_to_tensor, load_image, save_png

        panels = [(title, image_to_tensor(load_image(self.output_directory
                                                     / f"{self.job_names[job]}.png")))
                  for job, title, _ in finished]
        save_png(grid_sheet(panels), self.output_directory / "classes_sheet.png")
        if finished and finished[0][2]:
            history = [list(step) for step in zip(*(curve for _, _, curve in finished))]
            plot_probabilities(history, [self.job_names[job] for job, _, _ in finished],
                               self.output_directory / "class_probability.png")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        self.flush_probabilities(log=False)
        checkpoint["class_visualization"] = {
            "generator": self.generator.get_state(), "history": self.probability_history,
            "finished": self.finished}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint["class_visualization"]
        self.generator.set_state(saved["generator"])  # the jitter goes on where it stopped
        self.probability_history = saved["history"]
        self.finished = saved["finished"]


def grid_sheet(panels: Sequence[tuple[str, torch.Tensor]], columns: int = 5,
               height: int = 224) -> Any:
    """Titled pictures in rows of ``columns`` (a PIL image)."""
    from PIL import Image

    from callbacks.image_writer import make_sheet

    rows = [make_sheet(panels[i : i + columns], height) for i in range(0, len(panels), columns)]
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height
    return sheet


def plot_probabilities(history: Sequence[Sequence[float]], names: Sequence[str], path: Any) -> None:
    """Draw each class's target probability against the step into a new PNG file."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    steps = range(len(history))
    for column, name in enumerate(names):
        axes.plot(steps, [row[column] for row in history], linewidth=1.2, label=name)
    axes.plot(steps, [sum(row) / len(row) for row in history], color="black", linewidth=2.5,
              label="mean")
    axes.set_ylim(0, 1)
    axes.set_xlabel("step")
    axes.set_ylabel("p(target class)")
    axes.grid(True, alpha=0.3)
    if len(names) <= 12:
        axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as handle:
        figure.savefig(handle, format="png")
    plt.close(figure)
