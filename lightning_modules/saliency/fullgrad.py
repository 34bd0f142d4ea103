"""FullGrad (Srinivas and Fleuret 2019): the input-gradient and every layer's bias-gradient.

A ReLU network's class score is exactly the input-gradient term plus the sum, over every bias
``b`` in the network, of ``b`` times the score's gradient with respect to the tensor the bias
is added to. FullGrad draws each term as a map and sums them:

- the input term ``|x * dS/dx|`` per colour channel (``x`` the normalized image), each channel
  scaled to 0-1;
- for each bias site with bias ``b`` (``[K]``) and gradient ``g`` (``[N, K, h, w]``) of the
  class score with respect to the tensor it is added to: ``|b_k * g_k|``, each channel scaled
  to 0-1, upsampled bilinearly to the image and summed over the channels;
- the sum of all terms, scaled to 0-1 (no layer is chosen: every bias counts).

That is pytorch-grad-cam's ``FullGrad`` (1.5.7), number for number, on networks built of
``nn.Conv2d`` and ``nn.BatchNorm2d``. Its scaling of one channel is
:func:`~lightning_modules.saliency.cam.unit_scale` (minimum to 0, divided by ``1e-7 +`` the
maximum); we sum a layer's channels before upsampling, where the library upsamples each and
then sums: bilinear upsampling is linear, so the maps agree up to rounding, and ours never
hold ``K`` full-size maps.

**What a bias is** (the library's rule, widened to subclasses):

- an ``nn.Conv2d`` (or a subclass, such as timm's ``Conv2dSame``) that has a bias: that bias,
  at the convolution's output;
- an ``nn.BatchNorm2d`` (or a subclass) with affine parameters, in eval mode: its effective
  bias ``beta - running_mean * gamma / sqrt(running_var + eps)`` (the normalization is
  ``x * gamma / sqrt(var + eps)`` plus that), at the normalization's output. The convolution
  before it is not folded in: a convolution without bias (EfficientNet's) adds nothing itself,
  and its output's gradient is the normalization's times ``gamma / sqrt(var + eps)``.

pytorch-grad-cam selects the layers by exact type (``type(layer) in [Conv2d, BatchNorm2d]``),
so it skips timm's ``BatchNormAct2d`` (normalization, then ``drop`` and ``act`` in one
module); EfficientNet-Lite0's normalizations are all of that kind, and its convolutions have
no bias, so there the library's FullGrad is the input term alone. We count them: for a
BatchNorm2d subclass with child modules (``BatchNormAct2d``), the bias site is the input of
its first child (``drop``), which is the normalization's output before the activation. A
BatchNorm2d without running statistics normalizes each batch by its own, has no fixed bias
and is refused. Linear layers' biases have no spatial map and count for nothing, as in the
library.

One forward and one backward pass for the whole batch. No Lightning here; models map
normalized images ``[N, 3, H, W]`` to logits ``[N, C]``, in eval mode.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, NamedTuple, Optional

import torch
from torch import nn

from lightning_modules.errors import UserInputError
from lightning_modules.saliency.base import Saliency, SaliencyMethod
from lightning_modules.saliency.cam import Targets, unit_scale, upsample
from lightning_modules.saliency.functional import _as_targets


class BiasSite(NamedTuple):
    """Where a bias is added: the bias ``[K]``, and the module whose output (or, with
    ``at_input``, whose first input) is the biased tensor."""

    name: str
    bias: torch.Tensor
    module: nn.Module
    at_input: bool


def effective_bias(module: nn.Module) -> Optional[torch.Tensor]:
    """The bias a Conv2d or BatchNorm2d adds (see the module docstring), or None.

    Raises:
        UserInputError: A BatchNorm2d without running statistics.
    """
    if isinstance(module, nn.Conv2d):
        return None if module.bias is None else module.bias.detach()
    if isinstance(module, nn.BatchNorm2d) and module.bias is not None:
        if module.running_mean is None or module.running_var is None:
            raise UserInputError("FullGrad needs every BatchNorm2d to keep running statistics; "
                                 "one normalizes each batch by its own, so it has no fixed bias.")
        scale = module.weight / torch.sqrt(module.running_var + module.eps)
        return (module.bias - module.running_mean * scale).detach()
    return None


def bias_sites(model: nn.Module) -> list[BiasSite]:
    """Every bias of ``model`` that FullGrad draws, in the order of ``named_modules``."""
    sites = []
    for name, module in model.named_modules():
        bias = effective_bias(module)
        if bias is None:
            continue
        first_child = next(iter(module.children()), None)
        if isinstance(module, nn.BatchNorm2d) and first_child is not None:
            sites.append(BiasSite(name, bias, first_child, at_input=True))
        else:
            sites.append(BiasSite(name, bias, module, at_input=False))
    return sites


@contextmanager
def _captured_sites(sites: list[BiasSite]) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Record ``(bias, biased tensor)`` each time a site runs inside the block.

    The rest of the network gets a copy of the biased tensor, so that an in-place activation
    after it cannot change the tensor whose gradient we take (it would silently become the
    activation's output).
    """
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []

    def output_hook(bias: torch.Tensor):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            captured.append((bias, output))
            return output.clone()
        return hook

    def input_hook(bias: torch.Tensor):
        def hook(_module: nn.Module, inputs: tuple) -> tuple:
            captured.append((bias, inputs[0]))
            return (inputs[0].clone(), *inputs[1:])
        return hook

    handles = [site.module.register_forward_pre_hook(input_hook(site.bias)) if site.at_input
               else site.module.register_forward_hook(output_hook(site.bias)) for site in sites]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def full_grad(X: torch.Tensor, y: Targets, model: nn.Module) -> torch.Tensor:
    """FullGrad: the input-gradient map plus every bias-gradient map, scaled to 0-1.

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        y: The class to explain for each image, ``[N]``.
        model: Maps normalized images to logits, in eval mode.

    Returns:
        ``[N, H, W]`` in 0-1, as pytorch-grad-cam's ``FullGrad`` on the same biases (see the
        module docstring).
    """
    targets = _as_targets(y, X)
    inputs = X.detach().requires_grad_(True)
    with torch.enable_grad(), _captured_sites(bias_sites(model)) as captured:
        logits = model(inputs)
        sites = list(captured)  # what the forward pass saw, before any recomputation
        score = logits.gather(1, targets[:, None]).sum()
        gradients = torch.autograd.grad(score, [inputs, *(tensor for _, tensor in sites)],
                                        allow_unused=True)
    size = X.shape[2:]
    total = unit_scale((gradients[0] * inputs.detach()).abs()).sum(dim=1)
    for (bias, tensor), gradient in zip(sites, gradients[1:]):
        if gradient is None or tensor.ndim != 4:  # off the class score's path: no term
            continue
        term = unit_scale((bias[None, :, None, None] * gradient).abs()).sum(dim=1)
        total = total + upsample(term, size)
    return unit_scale(total)


class FullGrad(SaliencyMethod):
    """FullGrad (:func:`full_grad`): input-gradient and all bias-gradient maps summed.

    No options: every bias of the network counts (see :mod:`~lightning_modules.saliency.fullgrad`
    for what a bias is).
    """

    shorthand = "fullgrad"
    class_activation_map = True
    reads_batch_norm = True  # a normalization's bias is a term of its own: never fold

    def attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  generator: Optional[torch.Generator] = None) -> Saliency:
        return Saliency(full_grad(inputs, targets, model))
