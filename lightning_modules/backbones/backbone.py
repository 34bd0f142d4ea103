"""Named, frozen ImageNet classifiers split into feature layers and a classification head.

Every technique sees a classifier through :class:`Backbone`: ``features`` is an ``nn.Sequential``
of layers (so the homework's ``for module in model.features`` loop works unchanged), ``head``
turns the last layer's output into logits, and the backbone knows its own preprocessing
(``mean``, ``std``, and so the valid range of a normalized pixel) and its 1000 class names.

Backbones are built by name in :mod:`lightning_modules.backbones.registry`.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lightning_modules.backbones import normalization
from lightning_modules.backbones.normalization import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401
from lightning_modules.errors import UserInputError

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
        layer_names: Each layer's dotted name in the original network (``"layer3"``,
            ``"blocks.3"``), by which configs may give it; None: ``"features.<i>"`` only.
        feature_view: Turns a layer's output into what techniques see, e.g. a vision
            transformer's tokens ``[N, L, C]`` into a grid ``[N, C, h, w]``; called with the
            layer index, the output and the input images' ``(H, W)``. None: outputs as they are.
    """

    def __init__(
        self,
        name: str,
        layers: Sequence[nn.Module],
        head: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        categories: Sequence[str],
        layer_names: Optional[Sequence[str]] = None,
        feature_view: Optional[Callable[[int, torch.Tensor, tuple[int, int]], torch.Tensor]] = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.features = nn.Sequential(*layers)
        self.layer_names = ([str(n) for n in layer_names] if layer_names is not None
                            else [f"features.{i}" for i in range(len(self.features))])
        if len(self.layer_names) != len(self.features):
            raise ValueError("layer_names must name every layer.")
        self.feature_view = feature_view
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
        # Activation checkpointing: see use_recomputation.
        self.recompute = False
        # (convolution, normalization) names of the pairs fold_batch_norm folded.
        self.folded_pairs: list[tuple[str, str]] = []

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
        return normalization.pixel_range(self.mean, self.std)[0].to(self.mean.device)

    @property
    def pixel_max(self) -> torch.Tensor:
        """The normalized value of a white pixel, per channel, shaped ``[1, 3, 1, 1]``."""
        return normalization.pixel_range(self.mean, self.std)[1].to(self.mean.device)

    def clamp_pixels(self, inputs: torch.Tensor) -> torch.Tensor:
        """Clamp normalized inputs to the valid pixel range, per channel."""
        return normalization.clamp_to_range(inputs, self.pixel_min, self.pixel_max)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Turn 0-1 pixels ``[N, 3, H, W]`` into the network's input space."""
        return normalization.normalize(pixels, self.mean, self.std)

    def denormalize(self, inputs: torch.Tensor) -> torch.Tensor:
        """Turn network inputs back into 0-1 pixels (not clamped)."""
        return normalization.denormalize(inputs, self.mean, self.std)

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

    def layer_index(self, layer: Union[int, str], what: str = "layer") -> int:
        """The index of a layer given by index (``3``, ``"3"``) or by name (``"blocks.3"``).

        Args:
            layer: An index into ``features``, one of :attr:`layer_names`, or
                ``"features.<i>"``.
            what: How an error message names it, e.g. ``"style layer"``.

        Raises:
            UserInputError: No such layer; the message says how to list them.
        """
        if isinstance(layer, bool):  # YAML's bare true would pass as index 1
            raise UserInputError(f"{what.capitalize()} must be an index or a name, got {layer}.")
        text = str(layer).strip()
        if isinstance(layer, int) or text.lstrip("-").isdigit():
            self.check_layers([int(text)], what)
            return int(text)
        if text in self.layer_names:
            return self.layer_names.index(text)
        # A container opened into its children ("layer3" into "layer3.0", "layer3.1"): its
        # output is its last child's.
        inside = [i for i, name in enumerate(self.layer_names) if name.startswith(text + ".")]
        if inside:
            return inside[-1]
        prefix = "features."
        if text.startswith(prefix) and text[len(prefix):].isdigit():
            return self.layer_index(int(text[len(prefix):]), what)
        shown = ", ".join(self.layer_names[:6]) + (", ..." if self.num_layers > 6 else "")
        raise UserInputError(
            f"Unknown {what} '{layer}' for backbone '{self.name}': give an index 0 to "
            f"{self.num_layers - 1} or a layer name ({shown}); python cli.py layers "
            f"--model.backbone {self.name} lists them."
        )

    @torch.no_grad()
    def layer_shapes(self, size: int = 224) -> list[tuple[int, str, tuple[int, ...]]]:
        """Each layer's index, name and output shape (as techniques see it) for one image.

        Args:
            size: The side of the square image.
        """
        inputs = torch.zeros(1, 3, size, size, device=self.mean.device)
        outputs = self.extract(inputs, list(range(self.num_layers)))
        return [(index, name, tuple(output.shape[1:]))
                for index, (name, output) in enumerate(zip(self.layer_names, outputs))]

    def check_spatial(self, layers: Sequence[int], what: str = "layer") -> None:
        """Raise a one-sentence error when a layer's output is not a map ``[N, C, H, W]``.

        A network that could not be cut into pieces (see ``backbones.by_name``) has one layer,
        whose output is the logits: statistics over positions (Gram matrices) need a map.
        """
        try:
            with torch.no_grad():
                probe = torch.zeros(1, 3, 64, 64, device=self.mean.device)
                outputs = self.extract(probe, list(layers))
        except RuntimeError:  # a network for other image sizes: the run itself will tell
            return
        shapes = {index: tuple(output.shape[1:]) for index, output in zip(layers, outputs)}
        for index in layers:
            if len(shapes[index]) != 3:
                raise UserInputError(
                    f"{what.capitalize()} {index} ({self.layer_names[index]}) of backbone "
                    f"'{self.name}' outputs {list(shapes[index])} per image, not a spatial map "
                    "[C, H, W]; choose another layer (python cli.py layers lists them).")

    def layer_indices(self, layers: Sequence[Union[int, str]], what: str = "layer") -> list[int]:
        """:meth:`layer_index` of each entry, in order."""
        return [self.layer_index(layer, what) for layer in layers]

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

    def extract_with_logits(self, inputs: torch.Tensor, layers: Sequence[int]
                            ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Feature maps of the chosen layers and the logits, from one pass through the network.

        Args:
            inputs: Normalized images ``[N, 3, H, W]``.
            layers: Layer indices, in any order, repeats allowed (may be empty).

        Returns:
            One feature map per entry of ``layers``, in that order, and the logits ``[N, 1000]``.
        """
        wanted = tuple(sorted(set(layers)))
        *maps, logits = self._network(inputs, wanted, True)
        outputs = dict(zip(wanted, maps))
        return [outputs[index] for index in layers], logits

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
            if self.recompute and torch.is_grad_enabled() and features.requires_grad:
                # Only the layer's output is kept for the backward pass; what happens inside
                # the layer (a block's expanded channels, its normalizations) is recomputed.
                features = checkpoint(layer, features, use_reentrant=False)
            else:
                features = layer(features)
            if index in layers:
                outputs.append(features if self.feature_view is None else
                               self.feature_view(index, features, tuple(inputs.shape[-2:])))
        if logits:
            outputs.append(self.head(features))
        return outputs

    def use_recomputation(self, enabled: bool = True) -> "Backbone":
        """Keep only each feature layer's output for the backward pass, and recompute the
        activations inside the layers while it runs (activation checkpointing).

        The memory a step needs per pixel falls to what the layers' outputs take (measured in
        ``benchmarks/memory.py``); each step runs every layer's forward pass twice. Gradients
        are the same up to rounding.
        """
        self.recompute = enabled
        return self

    def use_channels_last(self) -> "Backbone":
        """Keep the weights, and feed the inputs, in channels-last memory format.

        Convolutions on tensor-core GPUs run fastest in it; the numbers are the same up to float
        rounding. Returns the backbone.
        """
        self.memory_format = torch.channels_last
        return self.to(memory_format=torch.channels_last)

    @property
    def folded_norms(self) -> int:
        """How many normalizations :meth:`fold_batch_norm` folded."""
        return len(self.folded_pairs)

    @property
    def batch_norm_folded(self) -> bool:
        """Whether :meth:`fold_batch_norm` has run on this backbone."""
        return self.__dict__.get("_batch_norm_folded", False)

    def fold_batch_norm(self) -> "Backbone":
        """Fold every batch normalization that directly follows a convolution into it, in place.

        The backbone is frozen and in eval mode, so each such normalization is a fixed affine
        map per channel that the convolution can apply itself: the same logits and gradients up
        to float rounding, one pass over each feature map fewer (on a CPU EfficientNet-Lite0's
        input gradient takes about 0.7 of the time). Module names are kept: a normalization is
        replaced, under its name, by what it applied after normalizing (timm's ``drop`` and
        ``act``; nothing for a plain ``BatchNorm2d``), so hooking it gives the same values as
        before; a folded convolution's own output is the normalized one. Normalizations after
        anything else, or without running statistics, stay (see
        :mod:`~lightning_modules.backbones.folding`). Methods that read the normalizations
        themselves (FullGrad's biases, randomizing layer by layer) want the unfolded network:
        fold a copy. Calling it again changes nothing. Returns the backbone.
        """
        if self.batch_norm_folded:
            return self
        from lightning_modules.backbones.folding import fold_batch_norm

        generator = torch.Generator().manual_seed(0)
        for size in (64, 224):  # a network for one input size only fails on the small probe
            probe = torch.randn(2, 3, size, size, generator=generator).to(self.mean.device)
            try:
                self.folded_pairs = fold_batch_norm(self, probe)
                break
            except RuntimeError:
                if size == 224:
                    raise
        self._batch_norm_folded = True
        return self

    @property
    def circular_padding(self) -> bool:
        """Whether the network sees its input as a torus (see :meth:`with_circular_padding`)."""
        return self.__dict__.get("_circular_padding", False)

    def with_circular_padding(self) -> "Backbone":
        """A copy of this backbone, sharing its weights, that pads every layer circularly.

        Every convolution, pooling and padding layer wraps around the edges, so the network
        sees the image as a torus and an image optimized through it tiles seamlessly. This
        backbone is not changed (another technique may share it); the copy has the same state
        dict keys and tensors, is not compiled (compile it anew) and keeps the memory format.

        Returns:
            The circular backbone (this one if it already pads circularly).

        Raises:
            UserInputError: A layer of the network pads in a way that cannot be made circular.
        """
        if self.circular_padding:
            return self
        from lightning_modules.backbones.circular import circular_copy

        circular = circular_copy(self, self.name)
        circular._circular_padding = True
        circular._compiled_run, circular._compiled_calls = None, set()
        circular._warned_eager, circular.compile_mode = False, None
        return circular

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


class PixelInputs(nn.Module):
    """A backbone that takes 0-1 pixels and normalizes them itself, as peer libraries
    (torchattacks, textbook loops) expect their models to.

    Args:
        backbone: The network, which takes normalized inputs.
    """

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.backbone.normalize(pixels))
