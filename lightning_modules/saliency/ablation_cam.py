"""Ablation-CAM (Desai and Ramaswamy 2020): channels weighted by the score lost without them.

No gradient. For each image and each channel ``k`` of one layer, the network runs again with
that channel *ablated* in the layer's output, and the channel's weight is the relative drop of
the class score, ``w_k = (s - s_k) / s``, with ``s`` the image's class score (a logit) and
``s_k`` the score with channel ``k`` ablated. The map is ``ReLU(sum_k w_k A_k)``, scaled as
every CAM (:func:`~lightning_modules.saliency.cam.scale_cam`).

What "ablated" means is pytorch-grad-cam's (1.5.7, ``AblationLayer``): the channel's values
are set to 0 where the image's smallest activation at that layer is exactly 0 (the usual case
after a ReLU), else to that smallest activation minus ``1e7``, far below every other value.
The library subtracts the offset again for each further channel ablated in the same internal
batch (its running minimum includes the channels it has already ablated), so its maps of a
layer without zeros depend on its ``batch_size``; ours use one value per image, which is the
library's with ``batch_size=1``. Its ``ratio_channels_to_ablate`` (an experimental skip of
channels) is not offered: every channel is ablated.

The pairs (image, channel) of the whole batch run in one flat sequence of internal batches of
``internal_batch_size`` network inputs, so every pass is full and memory is that of one such
batch whatever the channel count.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import nn

from lightning_modules.errors import UserInputError
from lightning_modules.saliency.base import Saliency
from lightning_modules.saliency.cam import (
    Layer,
    LayerMethod,
    Targets,
    _captured,
    _resolve,
    weighted_cam,
)
from lightning_modules.saliency.functional import _as_targets
from lightning_modules.saliency.gradients import check_internal_batch_size

ABLATION_OFFSET = 1e7  # pytorch-grad-cam's ABLATION_VALUE, below a layer's minimum


@contextmanager
def _replaced_output(module: nn.Module, output: torch.Tensor) -> Iterator[None]:
    """Inside the block, ``module`` outputs ``output`` whatever its input."""
    handle = module.register_forward_hook(lambda _module, _inputs, _output: output)
    try:
        yield
    finally:
        handle.remove()


def check_batch_size(internal_batch_size: int) -> None:
    """A whole number of at least 1 (None too is refused: the passes need a bound)."""
    if internal_batch_size is None:
        raise UserInputError("internal_batch_size must be a whole number of at least 1, "
                             "got None.")
    check_internal_batch_size(internal_batch_size)


def ablation_values(activations: torch.Tensor) -> torch.Tensor:
    """The value an ablated channel takes, per image: 0 where the image's smallest activation
    is 0, else that minimum minus ``1e7``.

    Args:
        activations: One layer's output ``[N, K, h, w]``.

    Returns:
        ``[N]``.
    """
    lowest = activations.flatten(1).amin(dim=1)
    return torch.where(lowest == 0, torch.zeros_like(lowest), lowest - ABLATION_OFFSET)


def ablation_cam(X: torch.Tensor, y: Targets, model: nn.Module, layer: Layer = None,
                 internal_batch_size: int = 32) -> torch.Tensor:
    """Ablation-CAM: channels weighted by the relative class-score drop when each is ablated.

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        y: The class to explain for each image, ``[N]``.
        model: Maps normalized images to logits, in eval mode.
        layer: See :func:`~lightning_modules.saliency.cam.find_layer`; its output must be
            spatial maps ``[N, K, h, w]`` as the module gives them (not a token sequence).
        internal_batch_size: Network inputs (one image with one channel ablated each) per
            forward pass.

    Returns:
        ``[N, H, W]`` in 0-1, as pytorch-grad-cam's ``AblationCAM`` (see the module docstring
        for the ablation value).

    Raises:
        UserInputError: A bad layer or internal batch size.
    """
    check_batch_size(internal_batch_size)
    targets = _as_targets(y, X)
    X = X.detach()
    module, what, view = _resolve(model, layer, X)
    with torch.no_grad(), _captured(module, what, leaf=False) as outputs:
        logits = model(X)
    if not outputs:
        raise UserInputError(f"CAM layer '{what}' does not run in the model's forward pass.")
    output = outputs[0]
    activations = view(output)
    if output.ndim != 4 or activations.shape != output.shape:
        raise UserInputError(f"Ablation-CAM ablates channels of a layer that outputs spatial "
                             f"maps [N, C, H, W]; CAM layer '{what}' outputs shape "
                             f"{list(output.shape)}; choose a convolutional layer.")
    original = logits.gather(1, targets[:, None])[:, 0]
    count, channels = output.shape[:2]
    fill = ablation_values(output)
    ablated_scores = torch.empty(count * channels, dtype=original.dtype, device=X.device)
    with torch.no_grad():
        for start in range(0, count * channels, internal_batch_size):
            pairs = torch.arange(start, min(start + internal_batch_size, count * channels),
                                 device=X.device)
            images, kept = pairs // channels, pairs % channels
            ablated = output[images]  # indexing copies: the cached output stays as it was
            ablated[torch.arange(len(pairs), device=X.device), kept] = fill[images, None, None]
            with _replaced_output(module, ablated):
                logits = model(X[images])
            ablated_scores[pairs] = logits.gather(1, targets[images][:, None])[:, 0]
    weights = (original[:, None] - ablated_scores.view(count, channels)) / original[:, None]
    return weighted_cam(activations, weights, X.shape[2:])


class AblationCAM(LayerMethod):
    """Ablation-CAM (:func:`ablation_cam`): channels weighted by the score lost without them.

    Args:
        layer: See :class:`~lightning_modules.saliency.cam.LayerMethod`.
        internal_batch_size: Network inputs (one image with one channel ablated each) per
            forward pass.
    """

    shorthand = "ablationcam"

    def __init__(self, layer: Layer = None, internal_batch_size: int = 32) -> None:
        super().__init__(layer)
        check_batch_size(internal_batch_size)
        self.internal_batch_size = internal_batch_size

    def attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  generator: Optional[torch.Generator] = None) -> Saliency:
        return Saliency(ablation_cam(inputs, targets, model, self.chosen_layer(model, inputs),
                                     self.internal_batch_size))
