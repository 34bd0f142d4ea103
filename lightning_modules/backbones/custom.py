"""Your own classifier as a :class:`~lightning_modules.backbones.Backbone`.

Any ``nn.Module`` that maps normalized images ``[N, 3, H, W]`` to logits ``[N, K]`` can be
explained and visualized like the built-in networks once :func:`classifier_backbone` wraps it:
an ``nn.Sequential`` becomes one feature layer per child (so Grad-CAM finds its last spatial
layer by itself), any other module one layer whose head is the identity.

The wrapped module is frozen and put in eval mode, as every backbone is: wrap a copy
(``copy.deepcopy(model)``) of a network that is still training.
"""

from __future__ import annotations

from typing import Sequence, Union

from torch import nn

from lightning_modules.backbones.backbone import Backbone
from lightning_modules.backbones.normalization import IMAGENET_MEAN, IMAGENET_STD
from lightning_modules.errors import UserInputError

# The name of the one layer of a model that is not an nn.Sequential.
WHOLE_MODEL = "model"


def classifier_backbone(
    model: nn.Module,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    categories: Union[None, int, Sequence[str]] = None,
    name: str = "custom",
) -> Backbone:
    """Wrap a classifier as a frozen backbone.

    Args:
        model: Maps normalized images ``[N, 3, H, W]`` to logits ``[N, K]``. It is frozen
            (``requires_grad_(False)``), put in eval mode and its in-place activations turned
            off: pass a copy of a model that goes on training.
        mean: Per-channel mean of the model's preprocessing, in 0-1 pixel units (three values).
        std: Per-channel standard deviation of the preprocessing (three values).
        categories: The class names, a number of classes (named ``"0"``, ``"1"``, ...), or None:
            the ``out_features`` of the model's last ``nn.Linear``.
        name: How messages name the backbone.

    Returns:
        The backbone. Layer names are the model's own child names for an ``nn.Sequential``
        (``"0"``, ``"conv"``), else the single layer ``"model"``.

    Raises:
        UserInputError: ``mean`` or ``std`` does not have three values, or the number of
            classes cannot be found.
    """
    if not isinstance(model, nn.Module):
        raise UserInputError(f"classifier_backbone needs an nn.Module, got "
                             f"{type(model).__name__}.")
    for what, values in (("mean", mean), ("std", std)):
        if len(values) != 3:
            # Backbones, and the class-visualization images, have three colour channels.
            raise UserInputError(f"{what} must have 3 values (one per colour channel), got "
                                 f"{len(values)}; feed a grey model 3-channel images, e.g. "
                                 "images.expand(-1, 3, -1, -1), with the grey mean and std "
                                 "repeated.")
    if any(not value > 0 for value in std):
        raise UserInputError(f"std must be positive, got {list(std)}.")
    names = class_names(model, categories)
    if isinstance(model, nn.Sequential) and len(model) > 0:
        layer_names, layers = zip(*model.named_children())
        return Backbone(name, list(layers), nn.Identity(), mean, std, names,
                        layer_names=list(layer_names))
    return Backbone(name, [model], nn.Identity(), mean, std, names, layer_names=[WHOLE_MODEL])


def class_names(model: nn.Module, categories: Union[None, int, Sequence[str]]) -> list[str]:
    """The class names ``categories`` stands for (see :func:`classifier_backbone`)."""
    if isinstance(categories, bool):
        raise UserInputError(f"categories must be names or a number of classes, got "
                             f"{categories}.")
    if categories is None:
        linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
        if not linears:
            raise UserInputError("The model has no nn.Linear to count its classes by; give "
                                 "categories (their names or their number).")
        categories = linears[-1].out_features
    if isinstance(categories, int):
        if categories < 1:
            raise UserInputError(f"categories must be at least 1 class, got {categories}.")
        return [str(index) for index in range(categories)]
    return [str(category) for category in categories]


def module_name(backbone: Backbone, name: str) -> str:
    """The backbone's dotted name of a module that the wrapped model calls ``name``.

    Lets a user name a CAM layer as their own model names it (``"conv2"``, ``"3"``,
    ``"3.conv"``) whatever the wrapping added in front (``"features.0.conv2"``).

    Args:
        backbone: A backbone made by :func:`classifier_backbone`.
        name: A dotted module name of the wrapped model.
    """
    if backbone.layer_names == [WHOLE_MODEL]:
        return f"features.0.{name}"
    first, _, rest = name.partition(".")
    if first in backbone.layer_names:
        index = backbone.layer_names.index(first)
        return f"features.{index}" + (f".{rest}" if rest else "")
    return name  # not the model's own: let find_layer judge it
