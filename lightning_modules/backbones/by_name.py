"""Any timm or torchvision classifier as a :class:`Backbone`: ``timm:<name>``, ``torchvision:<name>``.

A technique needs a network as a sequence of layers (to stop early and to name a layer's output)
and a head that turns the last layer's output into logits. :func:`split_network` finds that
sequence without knowing the architecture: it records which of the network's children run, in
which order, while it classifies one image, opens the containers among them one level
(``blocks`` becomes ``blocks.0``, ``blocks.1``, ...; ``layer3`` becomes ``layer3.0``, ...), and
then checks that running the pieces one after another gives the network's own logits. A network
whose forward pass does more than call its children in order (a functional ReLU between two
modules) falls back to fewer, larger pieces that still reproduce it, down to one.

Vision transformers (timm models with position embeddings) get one ``patch_embed`` layer (patch
embedding, class token and position embedding) before their blocks, and their blocks' token
outputs ``[N, L, C]`` are shown to techniques as grids ``[N, C, h, w]`` (prefix tokens dropped):
a Gram matrix, a CAM or a channel objective then work as on a CNN.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from torch import nn

from lightning_modules.backbones.backbone import IMAGENET_MEAN, IMAGENET_STD, Backbone
from lightning_modules.errors import UserInputError

# The side of the image the split is checked with when a network does not say its own.
CHECK_SIZE = 64
# Logits of the pieces run in sequence must equal the network's to this (float32 rounding).
CHECK_TOLERANCE = 1e-4


class _ForwardHead(nn.Module):
    """timm's ``forward_head``: pooling, norm and classifier, as one module."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.network.forward_head(features)


class _ForwardFeatures(nn.Module):
    """timm's ``forward_features`` as one layer: the fallback split of a timm network."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.forward_features(images)


class _PatchEmbed(nn.Module):
    """A vision transformer's patch embedding, prefix tokens and position embedding."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        net = self.network
        tokens = net._pos_embed(net.patch_embed(images))
        tokens = net.patch_drop(tokens) if hasattr(net, "patch_drop") else tokens
        return net.norm_pre(tokens) if hasattr(net, "norm_pre") else tokens


class _Pieces(nn.Module):
    """Modules run in order, flattening a spatial map where the next one expects vectors."""

    def __init__(self, modules: list[nn.Module], flatten_before: set[int],
                 flatten_after: bool) -> None:
        super().__init__()
        self.pieces = nn.ModuleList(modules)
        self.flatten_before = flatten_before
        self.flatten_after = flatten_after

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        for index, piece in enumerate(self.pieces):
            if index in self.flatten_before:
                features = features.flatten(1)
            features = piece(features)
        return features.flatten(1) if self.flatten_after else features


def _token_grid(prefix_tokens: int, patch_size: tuple[int, int]
                ) -> Callable[[int, torch.Tensor, tuple[int, int]], torch.Tensor]:
    """A feature view that turns ``[N, prefix + h*w, C]`` tokens into ``[N, C, h, w]``."""

    def view(index: int, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if features.dim() != 3:
            return features
        rows, cols = (math.ceil(s / p) for s, p in zip(size, patch_size))
        patches = features[:, prefix_tokens:]
        if patches.shape[1] != rows * cols:
            return features
        return patches.transpose(1, 2).reshape(features.shape[0], -1, rows, cols)

    return view


def _channels_first(index: int, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A feature view for networks whose maps are ``[N, H, W, C]``."""
    return features.permute(0, 3, 1, 2) if features.dim() == 4 else features


def _called_children(network: nn.Module, run: Callable[[], torch.Tensor]
                     ) -> list[tuple[str, nn.Module, torch.Size, torch.Size]]:
    """The network's children in the order ``run`` calls them, with input and output shapes.

    A child called twice (a shared module) makes the order meaningless: then none is returned.
    """
    calls: list[tuple[str, nn.Module, torch.Size, torch.Size]] = []

    def hook(name: str) -> Callable:
        def record(module: nn.Module, inputs: tuple, output: object) -> None:
            if inputs and torch.is_tensor(inputs[0]) and torch.is_tensor(output):
                calls.append((name, module, inputs[0].shape, output.shape))
            else:
                calls.append((name, module, torch.Size(), torch.Size()))
        return record

    handles = [child.register_forward_hook(hook(name))
               for name, child in network.named_children()]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    names = [name for name, *_ in calls]
    return calls if len(names) == len(set(names)) else []


def _opened(name: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
    """A container's children (``blocks.0``, ...), or the module itself."""
    if isinstance(module, (nn.Sequential, nn.ModuleList)) and len(module) > 0:
        return [(f"{name}.{child}", sub) for child, sub in module.named_children()]
    return [(name, module)]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    scale = b.abs().max().clamp_min(1.0)
    return a.shape == b.shape and bool(((a - b).abs().max() / scale) <= CHECK_TOLERANCE)


def _check_size(network: nn.Module) -> int:
    config = getattr(network, "pretrained_cfg", None) or getattr(network, "default_cfg", None) or {}
    size = config.get("input_size", (3, CHECK_SIZE, CHECK_SIZE))
    if getattr(network, "dynamic_img_size", False):
        return min(size[-1], CHECK_SIZE)
    return size[-1]


@torch.no_grad()
def split_timm(network: nn.Module) -> tuple[list[tuple[str, nn.Module]], nn.Module,
                                            Optional[Callable]]:
    """A timm classifier's feature layers (named), its head, and a feature view.

    Returns:
        ``(layers, head, feature_view)``: ``layers`` are ``(name, module)`` pairs whose
        sequence equals ``forward_features``; the head is ``forward_head``.
    """
    network.eval()
    size = _check_size(network)
    images = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    expected = network.forward_features(images)
    head = _ForwardHead(network)
    view = None
    calls = _called_children(network, lambda: network.forward_features(images))
    pieces: list[tuple[str, nn.Module]] = []
    skip: set[str] = set()
    if hasattr(network, "_pos_embed") and hasattr(network, "patch_embed"):
        pieces.append(("patch_embed", _PatchEmbed(network)))
        skip = {"patch_embed", "pos_drop", "patch_drop", "norm_pre"}
        patch = tuple(getattr(network.patch_embed, "patch_size", (16, 16)))
        view = _token_grid(getattr(network, "num_prefix_tokens", 1), patch)
    elif str(getattr(network, "output_fmt", "NCHW")) in ("NHWC", "Format.NHWC"):
        view = _channels_first  # Swin and its kin keep channels last
    for name, module, *_ in calls:
        if name not in skip:
            pieces.extend(_opened(name, module))
    for candidate in (pieces, [("forward_features", _ForwardFeatures(network))]):
        features = images
        for _, module in candidate:
            features = module(features)
        if _same(features, expected):
            return candidate, head, view if candidate is pieces else None
    raise AssertionError("forward_features cannot differ from itself")


@torch.no_grad()
def split_network(network: nn.Module, size: int = 224
                  ) -> tuple[list[tuple[str, nn.Module]], nn.Module]:
    """Any classifier's feature layers (named) and head, checked to give its logits.

    The feature layers are the children that run before the last one whose output is a spatial
    map ``[N, C, H, W]``, containers opened one level; the head is the rest. Where that does
    not reproduce the network (work done between children), the whole network is one layer
    named ``network``, whose output is the logits.
    """
    network.eval()
    images = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    expected = network(images)
    calls = _called_children(network, lambda: network(images))
    # A global pool (output 1x1) starts the head.
    spatial = [i for i, (*_, shape) in enumerate(calls) if len(shape) == 4 and shape[-2:].numel() > 1]
    if calls and spatial:
        last = spatial[-1]
        layers = [piece for name, module, *_ in calls[: last + 1] for piece in _opened(name, module)]
        rest = calls[last + 1:]
        flatten_before = {i for i, (_, _, shape_in, _) in enumerate(rest)
                          if len(shape_in) == 2 and (i == 0 or len(rest[i - 1][3]) == 4)}
        final_shape = rest[-1][3] if rest else calls[last][3]
        head = _Pieces([module for _, module, *_ in rest], flatten_before,
                       flatten_after=expected.dim() == 2 and len(final_shape) > 2)
        features = images
        try:
            for _, module in layers:
                features = module(features)
            if _same(head(features), expected):
                return layers, head
        except (RuntimeError, AssertionError, ValueError):  # work between children was skipped
            pass
    return [("network", network)], nn.Identity()


def _categories(count: int) -> list[str]:
    if count == 1000:
        from lightning_modules.backbones.registry import imagenet_categories

        return imagenet_categories()
    return [f"class {i}" for i in range(count)]


def _offline_error(name: str, error: Exception) -> UserInputError:
    return UserInputError(
        f"Could not get the pretrained weights of backbone '{name}' ({type(error).__name__}: no "
        "network?); download them once while online, or pass a local file with --model.weights "
        "PATH (or --model.weights random)."
    )


#: Where timm's pretrained weights come from; asked once, briefly, before a download.
_HUB = ("huggingface.co", 443)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the weights' host answers at all: without a network the hub's client retries
    for minutes (22 lines of retries over 103 s) before it gives up."""
    import socket

    try:
        socket.create_connection(_HUB, timeout=timeout).close()
        return True
    except OSError:
        return False


def _pretrained(create: Any, name: str) -> nn.Module:
    """A timm network with its pretrained weights: from the local cache when they are there
    (no network asked), else downloaded, or one sentence at once when there is no network."""
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True  # read at each call: the cache only
    try:
        return create(pretrained=True)
    except Exception:  # noqa: BLE001 - not cached (or not from the hub): try the network
        pass
    finally:
        constants.HF_HUB_OFFLINE = offline
    if not _hub_reachable():
        raise _offline_error(name, ConnectionError("huggingface.co unreachable"))
    try:
        return create(pretrained=True)
    except Exception as error:  # hub, HTTP and file errors all mean: no weights here
        raise _offline_error(name, error) from None


def timm_backbone(model_name: str, weights: str) -> Backbone:
    """``timm:<model_name>``: any timm classifier, pretrained (``default``), random or a file."""
    import timm

    from lightning_modules.backbones.registry import _build

    name = f"timm:{model_name}"
    if model_name not in timm.list_models(pretrained=False) and not timm.is_model(model_name):
        raise UserInputError(f"timm has no model '{model_name}' (timm.list_models() lists them).")

    def create(pretrained: bool = False) -> nn.Module:
        try:  # vision transformers take any image size only when asked
            return timm.create_model(model_name, pretrained=pretrained, dynamic_img_size=True,
                                     dynamic_img_pad=True)
        except TypeError:
            return timm.create_model(model_name, pretrained=pretrained)

    if weights == "default":
        network = _pretrained(create, name)
    else:
        network = _build(create, weights, name)
    layers, head, view = split_timm(network)
    config = getattr(network, "pretrained_cfg", {}) or {}
    return Backbone(name, [module for _, module in layers], head,
                    config.get("mean", IMAGENET_MEAN), config.get("std", IMAGENET_STD),
                    _categories(network.num_classes), layer_names=[n for n, _ in layers],
                    feature_view=view)


def torchvision_backbone(model_name: str, weights: str) -> Backbone:
    """``torchvision:<model_name>``: any torchvision classifier by name."""
    from torchvision import models

    from lightning_modules.backbones.registry import _torchvision_model

    if model_name not in models.list_models(module=models):
        raise UserInputError(f"torchvision has no classifier '{model_name}' "
                             "(torchvision.models.list_models() lists them).")
    network = _torchvision_model(model_name, weights)
    layers, head = split_network(network)
    return Backbone(f"torchvision:{model_name}", [module for _, module in layers], head,
                    IMAGENET_MEAN, IMAGENET_STD, _categories(_logit_count(network)),
                    layer_names=[n for n, _ in layers])


def _logit_count(network: nn.Module) -> int:
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else 1000


def by_name(name: str) -> Optional[Callable[[str], Backbone]]:
    """The builder of a ``timm:`` or ``torchvision:`` name, or None for other names."""
    source, _, model_name = name.partition(":")
    if not model_name or source not in ("timm", "torchvision"):
        return None
    build = timm_backbone if source == "timm" else torchvision_backbone
    return lambda weights: build(model_name.strip(), weights)

