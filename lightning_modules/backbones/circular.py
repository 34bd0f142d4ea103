"""Circular padding: a backbone that sees its input as a torus, for seamless (tileable) images.

:func:`circular_copy` copies a network's module tree, sharing every weight, and replaces each
layer that pads (convolutions, pooling, padding layers) with one that pads by wrapping around:
the pixels past the right edge are those of the left edge, and so on. The original network is
left as it was, so a backbone shared by several techniques stays zero-padded for the others.

Each replaced layer pads so that a stride-``s`` layer gives ``ceil(H / s)`` outputs, starting
where the original layer's windows started (its own padding before the image, or TensorFlow's
"SAME" split for timm's ``Conv2dSame``). Where ``H`` is a multiple of the network's total
stride, shifting the input circularly by a multiple of that stride shifts every feature map
circularly by the shift over its stride: nothing in the network knows where the image's edges
are. A network built on valid (unpadded) windows, such as SqueezeNet's first convolution, gets
the wrapped pixels it needs too, so its tileable feature maps are a pixel larger than usual. An
explicit padding layer just before a convolution in a ``Sequential`` (TensorFlow ports) is taken
over by that convolution, which would otherwise pad twice; any other padding layer wraps by its
own amounts.
"""

from __future__ import annotations

import copy
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.errors import UserInputError

# timm's TensorFlow-"SAME" layers pad inside forward (F.pad or a lazily made ZeroPad2d), by
# half the needed padding before the image and the rest after.
_TF_SAME = {"Conv2dSame", "Conv2dSameExport", "MaxPool2dSame", "AvgPool2dSame"}

# Layers that look at neighbouring pixels in a way no circular rule here replaces.
_UNSUPPORTED = (nn.modules.conv._ConvTransposeNd, nn.Conv1d, nn.Conv3d, nn.Unfold, nn.Fold,
                nn.FractionalMaxPool2d, nn.LPPool2d, nn.MaxUnpool2d,
                nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
                nn.modules.padding._ReplicationPadNd, nn.modules.padding._CircularPadNd)

# Padding layers of images, whatever they fill with: the same amounts, wrapped around.
_PAD_2D = (nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.CircularPad2d)
_PAD_FORWARDS = {layer.forward for layer in _PAD_2D}


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def circular_pad(inputs: torch.Tensor, left: int, right: int, top: int,
                 bottom: int) -> torch.Tensor:
    """Pad ``[N, C, H, W]`` by wrapping around, any amount (more than once round if need be)."""
    if left <= inputs.shape[-1] and right <= inputs.shape[-1] and top <= inputs.shape[-2] \
            and bottom <= inputs.shape[-2]:
        return F.pad(inputs, (left, right, top, bottom), mode="circular")
    for dim, before, after in ((-2, top, bottom), (-1, left, right)):
        size = inputs.shape[dim]
        positions = torch.arange(-before, size + after, device=inputs.device) % size
        inputs = inputs.index_select(dim, positions)
    return inputs


def _window_pads(size: int, kernel: int, stride: int, dilation: int,
                 before: Optional[int]) -> tuple[int, int]:
    """(before, after): wrapped pixels that give ``ceil(size / stride)`` windows.

    ``before`` None: TensorFlow's "SAME" split (the smaller half before).
    """
    extent = dilation * (kernel - 1) + 1
    extra = max((math.ceil(size / stride) - 1) * stride + extent - size, 0)
    first = extra // 2 if before is None else min(before, extra)
    return first, extra - first


class _CircularWindows(nn.Module):
    """Mixin of the circular layers: wrap-pad the input, then run the layer unpadded."""

    # (before height, before width) of the original layer; None: TensorFlow's "SAME" split.
    circular_before: Optional[tuple[int, int]]

    def _wrap(self, inputs: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
              dilation: tuple[int, int]) -> torch.Tensor:
        before = self.circular_before or (None, None)
        top, bottom = _window_pads(inputs.shape[-2], kernel[0], stride[0], dilation[0], before[0])
        left, right = _window_pads(inputs.shape[-1], kernel[1], stride[1], dilation[1], before[1])
        if left == right == top == bottom == 0:
            return inputs
        return circular_pad(inputs, left, right, top, bottom)


class CircularConv2d(nn.Conv2d, _CircularWindows):
    """A ``Conv2d`` that pads circularly (made by :func:`circular_copy`, sharing the weights)."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        padded = self._wrap(inputs, self.kernel_size, self.stride, self.dilation)
        return F.conv2d(padded, self.weight, self.bias, self.stride, 0, self.dilation,
                        self.groups)


class CircularMaxPool2d(nn.MaxPool2d, _CircularWindows):
    """A ``MaxPool2d`` that pads circularly (no ``ceil_mode`` window falls off the edge)."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        kernel, stride = _pair(self.kernel_size), _pair(self.stride or self.kernel_size)
        dilation = _pair(self.dilation)
        padded = self._wrap(inputs, kernel, stride, dilation)
        return F.max_pool2d(padded, kernel, stride, 0, dilation, ceil_mode=False,
                            return_indices=self.return_indices)


class CircularAvgPool2d(nn.AvgPool2d, _CircularWindows):
    """An ``AvgPool2d`` that pads circularly: every window averages real pixels."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        kernel, stride = _pair(self.kernel_size), _pair(self.stride or self.kernel_size)
        padded = self._wrap(inputs, kernel, stride, (1, 1))
        return F.avg_pool2d(padded, kernel, stride, 0, ceil_mode=False,
                            divisor_override=self.divisor_override)


def _four(padding: int | tuple[int, ...]) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) of a padding layer's ``padding``."""
    return (padding,) * 4 if isinstance(padding, int) else tuple(int(p) for p in padding)


class CircularPad(nn.Module):
    """Pads ``[N, C, H, W]`` circularly by fixed amounts (left, right, top, bottom).

    Args:
        padding: The amounts, as ``nn.ZeroPad2d`` takes them.
    """

    def __init__(self, padding: int | tuple[int, int, int, int]) -> None:
        super().__init__()
        self.padding = _four(padding)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return circular_pad(inputs, *self.padding)


def _before(module: nn.Module) -> Optional[tuple[int, int]]:
    """The padding the original layer puts before the image (None: TensorFlow's "SAME")."""
    if type(module).__name__ in _TF_SAME:
        return None
    padding = module.padding
    if padding == "valid":
        return (0, 0)
    if padding == "same":  # PyTorch's 'same': the smaller half before, as TensorFlow
        return None
    return _pair(padding)


def _is_plain(module: nn.Module, base: type) -> bool:
    """Whether ``module``'s forward is ``base``'s, or one of timm's known "SAME" variants."""
    return type(module).forward is base.forward or type(module).__name__ in _TF_SAME


def _window_layer(module: nn.Module) -> Optional[tuple[type, type]]:
    """(base, circular class) of a convolution or pooling layer this can replace, else None."""
    for base, circular in ((nn.Conv2d, CircularConv2d), (nn.MaxPool2d, CircularMaxPool2d),
                           (nn.AvgPool2d, CircularAvgPool2d)):
        if isinstance(module, base) and _is_plain(module, base):
            return base, circular
    return None


def _is_pad_layer(module: nn.Module) -> bool:
    return isinstance(module, _PAD_2D) and type(module).forward in _PAD_FORWARDS


def _circular_layer(module: nn.Module, path: str, backbone: str,
                    padded_before: Optional[tuple[int, int]] = None) -> Optional[nn.Module]:
    """The circular version of a layer that pads, sharing its weights; None for other layers.

    ``padded_before``: (top, left) of a padding layer just before it, which it takes over.
    """
    kind = _window_layer(module)
    if kind is not None:
        base, circular = kind
        layer = _shallow_copy(module)
        layer.__class__ = circular
        before = _before(module)
        if padded_before is not None and before is not None:
            before = (before[0] + padded_before[0], before[1] + padded_before[1])
        layer.circular_before = before
        if base is nn.Conv2d:
            layer.padding, layer.padding_mode = (0, 0), "zeros"
        return layer
    if _is_pad_layer(module):
        return CircularPad(module.padding)
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, *_UNSUPPORTED)):
        raise UserInputError(
            f"Backbone '{backbone}' cannot be made tileable: its layer {path} "
            f"({type(module).__name__}) pads in a way circular padding cannot replace.")
    return None


def _takes_over(pad: nn.Module, following: Optional[nn.Module]) -> bool:
    """Whether ``following`` (the next layer of a Sequential) absorbs padding layer ``pad``:
    TensorFlow ports pad explicitly before a valid convolution, and the circular convolution
    wraps what it needs itself; padding it first would pad twice."""
    return (_is_pad_layer(pad) and following is not None and _window_layer(following) is not None
            and _before(following) is not None)


def _shallow_copy(module: nn.Module) -> nn.Module:
    """A new module object with its own dictionaries (parameters, buffers, children, hooks)
    holding the same tensors and children."""
    clone = copy.copy(module)
    for name, value in vars(module).items():
        if isinstance(value, (dict, set, list)):
            clone.__dict__[name] = copy.copy(value)
    return clone


def circular_copy(module: nn.Module, backbone: str = "", path: str = "") -> nn.Module:
    """A copy of ``module``'s tree, sharing every weight, whose padding layers pad circularly.

    Args:
        module: The network (not changed).
        backbone: Its name, for the error message.
        path: The dotted name of ``module`` in the whole network, for the error message.

    Returns:
        The copy: the same parameter and buffer tensors under the same names, so state dicts
        are interchangeable.

    Raises:
        UserInputError: A layer pads in a way this cannot replace (a transposed or 1-d/3-d
            convolution, a 1-d/3-d padding layer, a convolution, pooling or padding subclass
            with its own ``forward``).
    """
    memo: dict[int, nn.Module] = {}

    def copy_tree(node: nn.Module, where: str) -> nn.Module:
        if id(node) in memo:  # a layer used twice stays one layer
            return memo[id(node)]
        replaced = _circular_layer(node, where or type(node).__name__, backbone)
        if replaced is None:
            replaced = _shallow_copy(node)
            children = list(node._modules.items())
            for index, (name, child) in enumerate(children):
                if child is None:
                    continue
                path = f"{where}.{name}" if where else name
                previous = children[index - 1][1] if index else None
                following = children[index + 1][1] if index + 1 < len(children) else None
                if isinstance(node, nn.Sequential) and _takes_over(child, following):
                    replaced._modules[name] = nn.Identity()
                elif isinstance(node, nn.Sequential) and _takes_over(previous, child):
                    left, _, top, _ = _four(previous.padding)
                    replaced._modules[name] = _circular_layer(child, path, backbone, (top, left))
                else:
                    replaced._modules[name] = copy_tree(child, path)
        memo[id(node)] = replaced
        return replaced

    return copy_tree(module, path)
