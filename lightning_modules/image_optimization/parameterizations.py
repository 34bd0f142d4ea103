"""How an image is parameterized: what the optimizer moves, and the picture it stands for.

A :class:`Parameterization` turns its parameter into the network's normalized input and into
0-1 pixels, keeps it valid after a step, and knows the step length that suits it. The loop that
renders and optimizes never asks which one it has (as Lucent's ``param`` objects).

- :class:`PixelImage`: the parameter is the normalized image itself (the homework's).
- :class:`FourierImage`: Lucid/Lucent's colour-decorrelated Fourier spectrum (Olah et al. 2017,
  "Feature Visualization"), rendered through a sigmoid so every pixel is valid.
- :class:`~lightning_modules.image_optimization.maco.MacoImage`: MACO's phase, with the
  spectrum's amplitude fixed to that of photos (Fel et al. 2023).

A config names one by ``class_path`` with its own options, or by its short name
(:func:`parameterization_registry`): ``parameterization: fourier`` or
``parameterization: {class_path: lightning_modules.image_optimization.FourierImage,
init_args: {decay_power: 1.5}}``.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from lightning_modules.backbones.normalization import clamp_to_range, denormalize, normalize
from lightning_modules.errors import UserInputError, check_non_negative
from lightning_modules.image_optimization.transforms import blur_image
from lightning_modules.image_optimization.variants import resolve_variant, variant_options

# Square root of ImageNet's colour correlation (Lucid), scaled to unit maximum column norm:
# the Fourier parameterization works in decorrelated colour coordinates.
_COLOR_CORRELATION_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]]
)
COLOR_CORRELATION = _COLOR_CORRELATION_SQRT / _COLOR_CORRELATION_SQRT.norm(dim=0).max()


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Promote half and bfloat16 to float32 (sums of many squares overflow or lose precision)."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


class Parameterization:
    """The interface; see the module docstring. Images are ``[N, 3, H, W]``.

    Attributes:
        normalized_lr: The length of a normalized gradient step (``lr * g / ||g||_2``) that
            suits this parameter, measured on EfficientNet-Lite0 at 224 px.
    """

    normalized_lr: float = 1.0
    #: Whether a picture of this kind can leave the pixel range (then it is clamped after each
    #: step) and be blurred (:meth:`smooth_`); one rendered through a sigmoid cannot and need not.
    pixels_are_free: bool = False

    def start(self, batch: int, height: int, width: int, low: torch.Tensor, high: torch.Tensor,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """A random starting parameter (on the CPU) for ``batch`` images.

        Args:
            batch: Number of images.
            height: Image height.
            width: Image width.
            low: Normalized value of a black pixel, ``[1, 3, 1, 1]``.
            high: Normalized value of a white pixel.
            generator: Random source.
        """
        raise NotImplementedError

    def to_inputs(self, parameter: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                  width: Optional[int] = None) -> torch.Tensor:
        """The normalized images the parameter stands for (differentiable).

        Args:
            parameter: The parameter.
            mean: Per-channel mean of the backbone's preprocessing, ``[1, 3, 1, 1]``.
            std: Its standard deviation.
            width: The images' width, where the parameter's shape does not tell it (a
                spectrum's); default: the width of the last :meth:`start` or :meth:`encode`.
        """
        raise NotImplementedError

    def to_pixels(self, parameter: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                  width: Optional[int] = None) -> torch.Tensor:
        """The 0-1 pixels the parameter stands for (not clamped); ``width`` as in :meth:`to_inputs`."""
        return denormalize(self.to_inputs(parameter, mean, std, width), mean, std)

    def encode(self, pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """The parameter whose picture is ``pixels`` (0-1): a run that starts from a picture
        (a photo, or the previous scale's result upsampled) starts from this."""
        raise NotImplementedError

    def project_(self, parameter: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> None:
        """Keep the parameter's picture within ``[low, high]``, in place (default: nothing)."""

    def smooth_(self, parameter: torch.Tensor, sigma: float) -> None:
        """Blur the parameter's picture in place, where that is a regularizer (default: never)."""


class PixelImage(Parameterization):
    """The parameter is the normalized image; it starts as ``init_std`` Gaussian noise, clamped.

    Args:
        init_std: Standard deviation of the starting noise in normalized units (the homework's 1).
    """

    normalized_lr = 30.0
    pixels_are_free = True

    def __init__(self, init_std: float = 1.0) -> None:
        check_non_negative("init_std", init_std)
        self.init_std = init_std

    def start(self, batch: int, height: int, width: int, low: torch.Tensor, high: torch.Tensor,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
        noise = self.init_std * torch.randn(batch, 3, height, width, generator=generator)
        return clamp_to_range(noise, low.cpu(), high.cpu())

    def to_inputs(self, parameter: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                  width: Optional[int] = None) -> torch.Tensor:
        return parameter

    def encode(self, pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        return normalize(pixels, mean, std)

    def project_(self, parameter: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> None:
        with torch.no_grad():
            parameter.copy_(clamp_to_range(parameter, low, high))

    def smooth_(self, parameter: torch.Tensor, sigma: float) -> None:
        with torch.no_grad():
            parameter.copy_(blur_image(parameter, sigma))


def fourier_spectrum_shape(batch: int, height: int, width: Optional[int] = None) -> tuple[int, ...]:
    """Shape of the Fourier parameter of ``batch`` images: real and imaginary parts."""
    width = height if width is None else width
    return (batch, 3, height, width // 2 + 1, 2)


def fourier_to_pixels(spectrum: torch.Tensor, decay_power: float = 1.0,
                      width: Optional[int] = None) -> torch.Tensor:
    """Render a Fourier parameter ``[N, 3, H, W//2+1, 2]`` as 0-1 pixels ``[N, 3, H, W]``.

    As Lucent's ``fft_image`` + ``to_valid_rgb(decorrelate=True)``: each frequency is scaled by
    ``1 / max(f, 1/S) ** decay_power`` (so all frequencies learn at a similar rate), the inverse
    real FFT gives decorrelated colours, the colour correlation matrix maps them to RGB, and a
    sigmoid keeps every pixel valid.

    Args:
        spectrum: Real and imaginary parts of each image's spectrum.
        decay_power: How fast the scale falls with frequency.
        width: The images' width (default: their height, square images).

    Returns:
        0-1 pixels.
    """
    # The picture is the parameter, not part of the network: render it in float32 under a
    # bf16 autocast too (the einsum would otherwise round every pixel to 3 digits).
    with torch.autocast(spectrum.device.type, enabled=False):
        return _render_spectrum(at_least_float32(spectrum), decay_power, width)


def _render_spectrum(spectrum: torch.Tensor, decay_power: float,
                     width: Optional[int]) -> torch.Tensor:
    height = spectrum.shape[2]
    width = height if width is None else width
    scale = _frequency_scale(height, width, decay_power, spectrum.device)
    complex_spectrum = torch.view_as_complex(spectrum.contiguous()) * scale
    decorrelated = torch.fft.irfft2(complex_spectrum, s=(height, width), norm="ortho") / 4.0
    rgb = torch.einsum("nchw,dc->ndhw", decorrelated, COLOR_CORRELATION.to(spectrum))
    return torch.sigmoid(rgb)


def _frequency_scale(height: int, width: int, decay_power: float,
                     device: torch.device) -> torch.Tensor:
    """Each frequency's scale ``1 / max(f, 1/S) ** decay_power``, ``[H, W//2+1]``."""
    fy = torch.fft.fftfreq(height, device=device)[:, None]
    fx = torch.fft.rfftfreq(width, device=device)[None, :]
    frequency = torch.sqrt(fx * fx + fy * fy)
    return 1.0 / frequency.clamp(min=1.0 / max(height, width)) ** decay_power


def pixels_to_fourier(pixels: torch.Tensor, decay_power: float = 1.0) -> torch.Tensor:
    """The Fourier parameter whose picture (:func:`fourier_to_pixels`) is ``pixels``.

    Pixels at 0 or 1 exactly, which the sigmoid only approaches, are taken as 1/1000 inside.

    Args:
        pixels: 0-1 pixels ``[N, 3, H, W]``.
        decay_power: As in :func:`fourier_to_pixels`.

    Returns:
        The parameter ``[N, 3, H, W//2+1, 2]``.
    """
    pixels = at_least_float32(pixels)
    height, width = pixels.shape[-2:]
    rgb = torch.logit(pixels.clamp(1e-3, 1 - 1e-3))
    decorrelated = torch.einsum("nchw,dc->ndhw", rgb,
                                torch.linalg.inv(COLOR_CORRELATION.to(pixels)))
    spectrum = torch.fft.rfft2(4.0 * decorrelated, norm="ortho")
    spectrum = spectrum / _frequency_scale(height, width, decay_power, pixels.device)
    return torch.view_as_real(spectrum).contiguous()


class FourierImage(Parameterization):
    """Lucent's decorrelated Fourier spectrum; it starts as a small random spectrum.

    Args:
        decay_power: How fast the spectrum's scale falls with frequency.
    """

    normalized_lr = 8.0

    def __init__(self, decay_power: float = 1.0) -> None:
        if not decay_power > 0:
            raise UserInputError(f"decay_power must be positive, got {decay_power}.")
        self.decay_power = decay_power
        self._width: Optional[int] = None

    def start(self, batch: int, height: int, width: int, low: torch.Tensor, high: torch.Tensor,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
        self._width = width
        return 0.01 * torch.randn(fourier_spectrum_shape(batch, height, width),
                                  generator=generator)

    def to_pixels(self, parameter: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                  width: Optional[int] = None) -> torch.Tensor:
        return fourier_to_pixels(parameter, self.decay_power, width or self._width)

    def to_inputs(self, parameter: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                  width: Optional[int] = None) -> torch.Tensor:
        return normalize(self.to_pixels(parameter, mean, std, width), mean, std)

    def encode(self, pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        self._width = pixels.shape[-1]
        return pixels_to_fourier(pixels, self.decay_power)


def parameterization_registry() -> dict[str, type[Parameterization]]:
    """The short names a config may give for a parameterization: ``pixel``, ``fourier``,
    ``maco``. (A function: MACO's module imports this one.)"""
    from lightning_modules.image_optimization.maco import MacoImage

    return {"pixel": PixelImage, "fourier": FourierImage, "maco": MacoImage}


def resolve_parameterization(value: Any, **options: Any) -> Parameterization:
    """The parameterization ``value`` stands for: an object, or a short name built with the
    options given beside it (``init_std``, ``decay_power``, ``amplitude``, ``contrast``; None:
    not given), each of which the chosen one must take.

    Raises:
        UserInputError: An unknown name, or an option the parameterization does not have.
    """
    return resolve_variant("parameterization", value, Parameterization,
                           parameterization_registry(),
                           {name: (name, option) for name, option in options.items()})


def make_parameterization(name: Any, init_std: float = 1.0, decay_power: float = 1.0,
                          amplitude: Optional[str] = None,
                          contrast: float = 1.0) -> Parameterization:
    """The parameterization called ``name`` (a short name, or an object returned as is), with
    those of the options that it has: ``init_std`` (pixel), ``decay_power`` (fourier),
    ``amplitude`` and ``contrast`` (maco). The others are left unused, as the techniques that
    always pass ``decay_power`` expect; :func:`resolve_parameterization` refuses them."""
    if isinstance(name, Parameterization):
        return name
    kind = parameterization_registry().get(name.strip().lower()) if isinstance(name, str) else None
    if kind is None:
        return resolve_parameterization(name)  # says which names there are
    offered = dict(init_std=init_std, decay_power=decay_power, amplitude=amplitude,
                   contrast=contrast)
    return kind(**{option: offered[option] for option in variant_options(kind)
                   if option in offered})
