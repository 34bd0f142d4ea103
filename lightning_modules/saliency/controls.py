"""The controls every metric is read against: maps that know nothing of the model.

Quantus' guidelines ask for a random-map control beside every metric, and the issue that brought
these in showed why: on four photos a random map beat every method on deletion AUC, and an edge
map and a centred Gaussian came close to Grad-CAM on insertion. A method earns a metric only
where it beats these three:

- :class:`RandomMap` (``random``): uniform noise, drawn from the generator the caller passes, so
  a seeded run draws the same maps;
- :class:`EdgeMap` (``edges``): the Sobel gradient magnitude of the image, what a map that
  merely follows contrast would show;
- :class:`CenteredGaussianMap` (``center``): the photographer's bias, the same blob in the
  middle of every image.

They are ordinary :class:`~lightning_modules.saliency.base.SaliencyMethod` objects, so the
plain saliency run draws them too (``--model.method edges``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from lightning_modules.saliency.base import Saliency, SaliencyMethod

# Sobel's horizontal derivative kernel; its transpose is the vertical one.
SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def _map_dtype(inputs: torch.Tensor) -> torch.dtype:
    return inputs.dtype if inputs.is_floating_point() else torch.float32


class RandomMap(SaliencyMethod):
    """The random control: each pixel's value drawn uniformly from ``[0, 1)``.

    Drawn from ``generator`` (on the generator's device, then moved to the inputs'), so the
    same seed gives the same maps on every machine; None draws from torch's global generator.
    """

    shorthand = "random"

    def attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  generator: Optional[torch.Generator] = None) -> Saliency:
        count, _, height, width = inputs.shape
        device = generator.device if generator is not None else inputs.device
        maps = torch.rand((count, height, width), generator=generator, device=device,
                          dtype=_map_dtype(inputs))
        return Saliency(maps.to(inputs.device))


class EdgeMap(SaliencyMethod):
    """The edge control: the Sobel gradient magnitude of the image, summed over its channels.

    ``map = sum_c sqrt(sobel_x(I_c)^2 + sobel_y(I_c)^2)`` on the image in pixel values: where the
    model has ``denormalize`` (every
    :class:`~lightning_modules.backbones.backbone.Backbone`), the normalized inputs are turned
    back into pixels first, so the map depends on the image alone, not on the model's
    normalization; other models get the inputs as they are. The border is padded by repeating
    it, so the image's frame is no edge.
    """

    shorthand = "edges"

    def attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  generator: Optional[torch.Generator] = None) -> Saliency:
        with torch.no_grad():
            denormalize = getattr(model, "denormalize", None)
            pixels = (denormalize(inputs) if callable(denormalize) else inputs).detach()
            pixels = pixels.to(_map_dtype(inputs))
            channels = pixels.shape[1]
            sobel_x = torch.tensor(SOBEL_X, dtype=pixels.dtype, device=pixels.device)
            kernels = torch.stack([sobel_x, sobel_x.T]).unsqueeze(1).repeat(channels, 1, 1, 1)
            padded = F.pad(pixels, (1, 1, 1, 1), mode="replicate")
            # Each channel convolved with both kernels: [N, 2C, H, W], x and y side by side.
            derivatives = F.conv2d(padded, kernels, groups=channels)
            derivatives = derivatives.view(pixels.shape[0], channels, 2, *pixels.shape[2:])
            maps = derivatives.pow(2).sum(dim=2).sqrt().sum(dim=1)
        return Saliency(maps)


class CenteredGaussianMap(SaliencyMethod):
    """The centre-bias control: an isotropic Gaussian centred on the image, 1 at its peak.

    Its standard deviation is a quarter of the image's shorter side; the map is the same for
    every image and every model.
    """

    shorthand = "center"

    def attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  generator: Optional[torch.Generator] = None) -> Saliency:
        count, _, height, width = inputs.shape
        dtype = _map_dtype(inputs)
        sigma = min(height, width) / 4
        rows = torch.arange(height, dtype=dtype, device=inputs.device) - (height - 1) / 2
        columns = torch.arange(width, dtype=dtype, device=inputs.device) - (width - 1) / 2
        squared_distance = rows[:, None] ** 2 + columns[None, :] ** 2
        gaussian = torch.exp(-squared_distance / (2 * sigma ** 2))
        return Saliency(gaussian.expand(count, height, width).clone())
