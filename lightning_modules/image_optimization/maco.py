"""MACO: optimize only the phase of the picture's spectrum; its magnitude is that of photos.

Fel et al. 2023, "Unlocking Feature Visualization for Deeper Networks with MAgnitude
Constrained Optimization". A Fourier parameterization (Lucent's) lets the optimizer pour energy
into whatever frequencies the network rewards, and the pictures drift towards high-frequency
texture in a grey fog. MACO fixes the amplitude of every frequency to the mean amplitude of
natural photos and lets the optimizer move only the phases (where things are), so every
picture keeps a photo's spectrum: its contrast and its balance of broad shapes and detail.

The mean amplitude is computed here, offline, from the built-in sample photos (Horama downloads
an ImageNet one), or from the photos or the ``.pt`` tensor a user gives. The crops of a larger
canvas that MACO pairs with it are in :func:`~lightning_modules.image_optimization.transforms.
random_crops`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from lightning_modules.backbones.normalization import normalize
from lightning_modules.errors import UserInputError
from lightning_modules.image_optimization.parameterizations import COLOR_CORRELATION, Parameterization

# The built-in samples that are photos of ordinary scenes (not a telescope's or a microscope's).
NATURAL_SAMPLES = ("astronaut", "cat", "chelsea", "coffee", "rocket")
# Side at which the mean amplitude is measured; other sizes resample it.
SPECTRUM_SIDE = 256
_EPS = 1e-5


def _decorrelated(pixels: torch.Tensor) -> torch.Tensor:
    """0-1 RGB ``[N, 3, H, W]`` in the decorrelated colour basis the spectrum lives in."""
    inverse = torch.linalg.inv(COLOR_CORRELATION.to(pixels))
    return torch.einsum("nchw,dc->ndhw", pixels - pixels.mean((1, 2, 3), keepdim=True), inverse)


def mean_amplitude(pixels: torch.Tensor) -> torch.Tensor:
    """The mean amplitude ``[3, H, W//2+1]`` of the spectra of photos ``[N, 3, H, W]`` (0-1)."""
    return torch.fft.rfft2(_decorrelated(pixels.float()), norm="ortho").abs().mean(0)


def _square_photos(sources: Sequence[str], side: int) -> torch.Tensor:
    from torchvision.transforms.functional import center_crop

    from datamodules.images import image_to_tensor, load_image, resize_shorter_side

    return torch.stack([center_crop(image_to_tensor(resize_shorter_side(load_image(s), side)),
                                    [side, side]) for s in sources])


@functools.lru_cache(maxsize=4)
def natural_amplitude(source: Optional[str] = None) -> torch.Tensor:
    """The amplitude MACO keeps, ``[3, S, S//2+1]`` at ``S =`` :data:`SPECTRUM_SIDE`.

    Args:
        source: None for the built-in sample photos; a ``.pt`` file holding a ``[3, H, W//2+1]``
            amplitude; or a folder or glob of photos, whose mean amplitude it is.

    Raises:
        UserInputError: The file does not hold an amplitude, or no photos were found.
    """
    if source is None:
        return mean_amplitude(_square_photos([f"sample:{s}" for s in NATURAL_SAMPLES],
                                             SPECTRUM_SIDE))
    if str(source).endswith(".pt"):
        if not Path(source).is_file():
            raise UserInputError(f"Amplitude file not found: {source}.")
        try:
            amplitude = torch.load(source, map_location="cpu", weights_only=True)
        except Exception:  # pickle and zip errors alike: not a tensor file
            raise UserInputError(f"Could not read {source}: it is not a tensor saved with "
                                 "torch.save.") from None
        if not torch.is_tensor(amplitude) or amplitude.dim() != 3 or amplitude.shape[0] != 3:
            raise UserInputError(f"{source} must hold an amplitude tensor [3, H, W//2+1].")
        return amplitude.float().abs()
    from datamodules.sources import expand_sources

    return mean_amplitude(_square_photos(expand_sources(source, "The amplitude's photos"),
                                         SPECTRUM_SIDE))


def resized_amplitude(amplitude: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``amplitude`` resampled to the spectrum of an ``height x width`` picture.

    The amplitude of a natural image falls as ``1/f``; sampled at the same relative frequencies
    and scaled by the picture's side, a larger canvas gets the same picture statistics.
    """
    shape = (height, width // 2 + 1)
    # No mean colour: the picture is standardized anyway, and a photo's mean (its (0, 0)
    # frequency, tens of times any other) would otherwise decide the colour of the whole picture
    # and, resampled, bleed into the lowest frequencies.
    amplitude = amplitude.clone()
    amplitude[:, 0, 0] = 0
    if tuple(amplitude.shape[-2:]) == shape:
        return amplitude
    # Spectra put negative vertical frequencies in the second half: move them to the middle so
    # that interpolation sees a smooth function, then back.
    shifted = torch.fft.fftshift(amplitude, dim=-2)
    resized = F.interpolate(shifted[None], size=shape, mode="bilinear", align_corners=False)[0]
    resized = torch.fft.ifftshift(resized, dim=-2)
    resized[:, 0, 0] = 0
    return resized


def _standardized(values: torch.Tensor) -> torch.Tensor:
    """Zero mean and unit standard deviation per image."""
    dims = tuple(range(1, values.dim()))
    centred = values - values.mean(dims, keepdim=True)
    return centred / (centred.pow(2).mean(dims, keepdim=True).sqrt() + _EPS)


def phase_to_pixels(phase: torch.Tensor, amplitude: torch.Tensor, width: int,
                    contrast: float = 1.0) -> torch.Tensor:
    """MACO's picture: ``amplitude * exp(i * phase)``, inverse FFT, standardized, recorrelated
    colours, sigmoid. 0-1 pixels ``[N, 3, H, W]``.

    Args:
        phase: ``[N, 3, H, W//2+1]``, in radians.
        amplitude: ``[3, H, W//2+1]`` (see :func:`resized_amplitude`).
        width: The pictures' width.
        contrast: Gain before the sigmoid: the standardized picture's spread (1: MACO's).
    """
    with torch.autocast(phase.device.type, enabled=False):
        phase = phase.float()
        spectrum = torch.polar(amplitude.to(phase), phase)
        image = torch.fft.irfft2(spectrum, s=(phase.shape[-2], width), norm="ortho")
        image = contrast * _standardized(image)
        rgb = torch.einsum("nchw,dc->ndhw", image, COLOR_CORRELATION.to(image))
        return torch.sigmoid(rgb)


class MacoImage(Parameterization):
    """The MACO parameterization: the parameter is the phase, the amplitude is fixed.

    Args:
        amplitude: Where the amplitude comes from (see :func:`natural_amplitude`): None for
            the built-in sample photos' mean, a ``.pt`` tensor ``[3, H, W//2+1]``, or a folder
            or glob of your photos.
        contrast: Gain on the standardized picture before the sigmoid (see
            :func:`phase_to_pixels`).

    Raises:
        UserInputError: A contrast that is not positive, or an amplitude that cannot be read
            (said when the parameterization is built, not at the run's first step).
    """

    normalized_lr = 2.0

    def __init__(self, amplitude: Optional[str] = None, contrast: float = 1.0) -> None:
        super().__init__()
        if not contrast > 0:
            raise UserInputError(f"contrast must be positive, got {contrast}.")
        if amplitude is not None:
            natural_amplitude(amplitude)
        self.amplitude = amplitude
        self.contrast = contrast
        self._width: Optional[int] = None
        self._amplitudes: dict[tuple[int, int, str], torch.Tensor] = {}

    def amplitude_at(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """The fixed amplitude for an ``height x width`` picture, on ``device``."""
        key = (height, width, str(device))
        if key not in self._amplitudes:
            base = natural_amplitude(self.amplitude)
            self._amplitudes[key] = resized_amplitude(base, height, width).to(device)
        return self._amplitudes[key]

    def start(self, batch: int, height: int, width: int, low: torch.Tensor, high: torch.Tensor,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
        self._width = width
        # Uniform phases: a random picture with the photos' spectrum. (Phases drawn around 0,
        # as a standard normal would, add up in phase at pixel (0, 0): a bright spot in the
        # corners, which then takes the standardization's whole range.)
        uniform = torch.rand(batch, 3, height, width // 2 + 1, generator=generator)
        return (2 * uniform - 1) * torch.pi

    def to_pixels(self, parameter: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                  width: Optional[int] = None) -> torch.Tensor:
        width = width or self._width or 2 * (parameter.shape[-1] - 1)
        return phase_to_pixels(parameter, self.amplitude_at(parameter.shape[-2], width,
                                                            parameter.device), width,
                               self.contrast)

    def to_inputs(self, parameter: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                  width: Optional[int] = None) -> torch.Tensor:
        return normalize(self.to_pixels(parameter, mean, std, width), mean, std)

    def encode(self, pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """The phase of a picture's spectrum: its layout, on the photos' amplitude."""
        self._width = pixels.shape[-1]
        spectrum = torch.fft.rfft2(_decorrelated(pixels.float()), norm="ortho")
        return torch.angle(spectrum)

    def project_(self, parameter: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> None:
        """Nothing: every phase gives valid pixels."""

    def smooth_(self, parameter: torch.Tensor, sigma: float) -> None:
        """Nothing: the amplitude already fixes how much fine detail there is."""
