"""Class activation maps: Grad-CAM, Grad-CAM++, Score-CAM and Guided Grad-CAM.

Each map weighs the channels of one layer's activations ``A`` (``[N, K, h, w]``) and sums them:
``cam = ReLU(sum_k w_k A_k)``, then scales it as pytorch-grad-cam does (per image: subtract the
minimum, divide by ``1e-7 +`` the maximum, upsample bilinearly to the image, and again), so
that our maps and the library's can be compared number for number. The methods differ in the
weights ``w_k``:

- :func:`grad_cam` (Selvaraju et al. 2017): the class score's gradient, averaged over space.
- :func:`grad_cam_plusplus` (Chattopadhay et al. 2018): pytorch-grad-cam's form of equation 19,
  positive gradients weighted by ``g^2 / (2 g^2 + sum(A) g^3)``.
- :func:`score_cam` (Wang et al. 2020): no gradient; each channel, upsampled and scaled to 0-1,
  masks the image, and the class score of the masked image is the channel's weight, after a
  softmax over the channels. That softmax over *channels of logits* is pytorch-grad-cam's
  definition, which we follow; the paper weighs by the masked image's class *probability*
  (a softmax over classes) minus a baseline's.
- :func:`guided_grad_cam` (Selvaraju et al. 2017): Grad-CAM times Guided Backpropagation
  (:func:`guided_backprop`), the maximum absolute value over colour channels.

Each also is a method object (:class:`GradCAM`, :class:`GradCAMPlusPlus`, :class:`ScoreCAM`,
:class:`GuidedGradCAM`) that a config names by ``class_path``, with its layer as an option.

The layer is an index into a :class:`~lightning_modules.backbones.backbone.Backbone`'s
``features`` or a dotted module name (``"features.6"``, ``"features.6.0.conv_pwl"``,
``"head.0"``); by default the last feature layer whose output is a spatial map. No Lightning
here; models map normalized images ``[N, 3, H, W]`` to logits ``[N, C]``, in eval mode.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.backbones.custom import module_name
from lightning_modules.errors import UserInputError
from lightning_modules.saliency.base import Saliency, SaliencyMethod
from lightning_modules.saliency.functional import _as_targets, class_score_gradient
from lightning_modules.saliency.gradients import check_internal_batch_size

CAM_METHODS = ("gradcam", "gradcam++", "scorecam", "guided_gradcam")
Layer = Union[None, int, str]
Targets = Union[torch.Tensor, Sequence[int]]

# pytorch-grad-cam's constants, kept so that the maps agree with the library's.
SCALE_EPS = 1e-7  # scale_cam_image: divide by eps + max
PLUSPLUS_EPS = 1e-6  # Grad-CAM++'s alpha denominator
SCORE_MASK_EPS = 1e-8  # Score-CAM's mask scaling


def layer_name(layer: Union[int, str]) -> str:
    """The dotted module name of a layer given by index into ``features`` or by name."""
    if isinstance(layer, int) or str(layer).strip().isdigit():
        return f"features.{int(layer)}"
    return str(layer).strip()


def find_layer(model: nn.Module, layer: Union[int, str]) -> nn.Module:
    """The module a CAM layer names.

    Args:
        model: The classifier, usually a Backbone.
        layer: An index into ``model.features``, one of a Backbone's layer names
            (``"blocks.3"``) or a dotted module name.

    Raises:
        UserInputError: No such layer (index out of range or unknown name).
    """
    if isinstance(layer, bool):  # YAML's bare true would pass as index 1
        raise UserInputError(f"layer must be an index or a module name, got {layer}.")
    index = _feature_index(model, layer)
    if index is not None:
        return model.features[index]
    features = getattr(model, "features", None)
    if isinstance(layer, int) or str(layer).strip().lstrip("-").isdigit():
        index = int(layer)
        count = len(features) if isinstance(features, nn.Sequential) else 0
        if not 0 <= index < count:
            raise UserInputError(f"CAM layer {index} is out of range: the model has feature "
                                 f"layers 0 to {count - 1}." if count else
                                 f"CAM layer {index} is an index, but the model has no "
                                 "'features' sequence; give a module name.")
        return features[index]
    modules = dict(model.named_modules())
    name = layer_name(layer)
    if not name or name not in modules:
        example = (f"'features.{len(features) - 1}'" if isinstance(features, nn.Sequential)
                   else repr(next(reversed(modules))))
        raise UserInputError(f"Unknown CAM layer '{layer}'; give an index into features or a "
                             f"dotted module name of the model, such as {example}.")
    return modules[name]


def _feature_index(model: nn.Module, layer: Union[int, str]) -> Optional[int]:
    """The feature layer a Backbone's own layer name or index means, or None."""
    names = getattr(model, "layer_names", None)
    if names is None:
        return None
    text = str(layer).strip()
    if isinstance(layer, int) or text.lstrip("-").isdigit():
        index = int(text)
        return index if 0 <= index < len(names) else None  # out of range: find_layer says so
    if text in names or any(name.startswith(text + ".") for name in names):
        return model.layer_index(text, "CAM layer")
    return None


def _viewed(model: nn.Module, layer: Layer, X: torch.Tensor) -> Callable[[torch.Tensor],
                                                                          torch.Tensor]:
    """How techniques see the layer's output: a Backbone's feature view (ViT tokens as a grid)."""
    view = getattr(model, "feature_view", None)
    if view is None:
        return lambda output: output
    index = _feature_index(model, layer)
    return lambda output: view(-1 if index is None else index, output, tuple(X.shape[-2:]))


@contextmanager
def _captured(module: nn.Module, what: str, leaf: bool) -> Iterator[list[torch.Tensor]]:
    """Record the output of ``module`` during the forward passes inside the block.

    With ``leaf``, the output is replaced by a detached copy that requires grad: the rest of the
    network then differentiates with respect to it, and nothing below it keeps a graph.
    """
    outputs: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> Optional[torch.Tensor]:
        if outputs:
            raise UserInputError(f"CAM layer '{what}' runs more than once in a forward pass "
                                 "(a shared module); choose another layer.")
        if not torch.is_tensor(output):
            raise UserInputError(f"CAM layer '{what}' does not output one tensor; choose "
                                 "another layer.")
        if leaf:
            output = output.detach().requires_grad_(True)
        outputs.append(output)
        return output if leaf else None

    handle = module.register_forward_hook(hook)
    try:
        yield outputs
    finally:
        handle.remove()


def _check_spatial(activations: torch.Tensor, what: str) -> None:
    if activations.ndim != 4:
        raise UserInputError(f"CAM layer '{what}' outputs shape {list(activations.shape)}, not "
                             "spatial maps [N, C, H, W]; choose a convolutional layer.")


def default_cam_layer(model: nn.Module, X: torch.Tensor) -> int:
    """The last layer of ``model.features`` whose output is a spatial map ``[N, C, H, W]``.

    For a vision transformer (a Backbone whose feature view shows tokens as a grid), the
    output of the last block but one: after the last block only the class token reaches the
    head, so gradients there leave the patch tokens' map empty.

    Args:
        model: A Backbone (or any model with a ``features`` sequence).
        X: Normalized images; only the first runs, to see the layers' output shapes.
    """
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise UserInputError("This model has no 'features' sequence; give the CAM layer by name.")
    names = getattr(model, "layer_names", [])
    blocks = [i for i, name in enumerate(names) if name.startswith("blocks.")]
    if getattr(model, "feature_view", None) is not None and len(blocks) > 1:
        return blocks[-2]
    spatial = None
    with torch.no_grad():
        if hasattr(model, "extract"):
            outputs = model.extract(X[:1], list(range(len(features))))
        else:
            outputs, output = [], X[:1]
            for module in features:
                output = module(output)
                outputs.append(output)
        for index, output in enumerate(outputs):
            if torch.is_tensor(output) and output.ndim == 4:
                spatial = index
    if spatial is None:
        raise UserInputError("No feature layer of this model outputs spatial maps; give the "
                             "CAM layer by module name.")
    return spatial


def _resolve(model: nn.Module, layer: Layer, X: torch.Tensor
             ) -> tuple[nn.Module, str, Callable[[torch.Tensor], torch.Tensor]]:
    """The layer's module, its name for messages, and the view techniques see its output in."""
    layer = default_cam_layer(model, X) if layer is None else layer
    return find_layer(model, layer), layer_name(layer), _viewed(model, layer, X)


def layer_activations(X: torch.Tensor, model: nn.Module, layer: Layer = None) -> torch.Tensor:
    """One layer's activations ``[N, K, h, w]``, without gradients.

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        model: Maps normalized images to logits, in eval mode.
        layer: See :func:`find_layer`; None: :func:`default_cam_layer`.
    """
    module, what, view = _resolve(model, layer, X)
    with torch.no_grad(), _captured(module, what, leaf=False) as outputs:
        model(X.detach())
    if not outputs:
        raise UserInputError(f"CAM layer '{what}' does not run in the model's forward pass.")
    activations = view(outputs[0])
    _check_spatial(activations, what)
    return activations


def layer_gradients(X: torch.Tensor, y: Targets, model: nn.Module,
                    layer: Layer = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's activations and the gradient of each image's class score with respect to them.

    One forward pass; the backward pass stops at the layer (the layers below it keep no graph),
    which is where this is cheaper than hooking a full backward pass.

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        y: The class to explain for each image, ``[N]``.
        model: Maps normalized images to logits, in eval mode.
        layer: See :func:`find_layer`; None: :func:`default_cam_layer`.

    Returns:
        ``(activations, gradients)``, both ``[N, K, h, w]``.
    """
    targets = _as_targets(y, X)
    # A view selects and reshapes (ViT tokens to a grid), so it maps gradients as it maps outputs.
    module, what, view = _resolve(model, layer, X)
    # enable_grad: callers may sit under no_grad (Lightning's predict loop, notebooks).
    with torch.enable_grad(), _captured(module, what, leaf=True) as outputs:
        logits = model(X.detach())
        if not outputs:
            raise UserInputError(f"CAM layer '{what}' does not run in the model's forward pass.")
        _check_spatial(view(outputs[0]), what)
        scores = logits.gather(1, targets[:, None]).sum()
        (gradients,) = torch.autograd.grad(scores, outputs[0])
    return view(outputs[0].detach()), view(gradients)


def unit_scale(maps: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's per-map scaling: subtract each map's minimum, divide by ``1e-7 +`` its
    maximum (over the last two dimensions)."""
    maps = maps - maps.amin(dim=(-2, -1), keepdim=True)
    return maps / (SCALE_EPS + maps.amax(dim=(-2, -1), keepdim=True))


def upsample(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of ``[N, h, w]`` maps to ``size``, as pytorch-grad-cam's ``cv2.resize``.

    cv2's INTER_LINEAR samples pixel centres: ``align_corners=False``.
    """
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear",
                         align_corners=False)[:, 0]


def scale_cam(cam: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """ReLU, then pytorch-grad-cam's scaling: per image to 0-1, bilinear to ``size``, to 0-1.

    Args:
        cam: Weighted activation sums ``[N, h, w]``.
        size: The image's ``(H, W)``.

    Returns:
        ``[N, H, W]`` in 0-1 (all zeros where the map is).
    """
    # The second scaling is the library's, after it averages its (here one) layers.
    return unit_scale(upsample(unit_scale(cam.clamp(min=0)), size))


def weighted_cam(activations: torch.Tensor, weights: torch.Tensor,
                 size: Sequence[int]) -> torch.Tensor:
    """``scale_cam(sum_k weights_k * activations_k)``: ``[N, K, h, w]``, ``[N, K]`` -> ``[N, H, W]``."""
    return scale_cam(torch.einsum("nk,nkhw->nhw", weights, activations), size)


def grad_cam(X: torch.Tensor, y: Targets, model: nn.Module, layer: Layer = None) -> torch.Tensor:
    """Grad-CAM: channels weighted by the spatial mean of the class score's gradient.

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        y: The class to explain for each image, ``[N]``.
        model: Maps normalized images to logits, in eval mode.
        layer: See :func:`find_layer`; None: the last feature layer with spatial maps.

    Returns:
        ``[N, H, W]`` in 0-1, as pytorch-grad-cam's ``GradCAM``.
    """
    activations, gradients = layer_gradients(X, y, model, layer)
    return weighted_cam(activations, gradients.mean(dim=(2, 3)), X.shape[2:])


def grad_cam_plusplus(X: torch.Tensor, y: Targets, model: nn.Module,
                      layer: Layer = None) -> torch.Tensor:
    """Grad-CAM++: channels weighted by their positive gradients, each weighed by alpha.

    ``alpha = g^2 / (2 g^2 + sum_ij(A) g^3 + 1e-6)`` (0 where ``g = 0``) and
    ``w = sum_ij alpha * ReLU(g)``: equation 19 of the paper with the raw class score, as
    pytorch-grad-cam computes it.

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        y: The class to explain for each image, ``[N]``.
        model: Maps normalized images to logits, in eval mode.
        layer: See :func:`find_layer`; None: the last feature layer with spatial maps.

    Returns:
        ``[N, H, W]`` in 0-1, as pytorch-grad-cam's ``GradCAMPlusPlus``.
    """
    activations, gradients = layer_gradients(X, y, model, layer)
    squared = gradients**2
    total = activations.sum(dim=(2, 3), keepdim=True)
    alpha = squared / (2 * squared + total * squared * gradients + PLUSPLUS_EPS)
    alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
    weights = (alpha * gradients.clamp(min=0)).sum(dim=(2, 3))
    return weighted_cam(activations, weights, X.shape[2:])


def score_cam(X: torch.Tensor, y: Targets, model: nn.Module, layer: Layer = None,
              internal_batch_size: int = 32) -> torch.Tensor:
    """Score-CAM: channels weighted by the class score of the image they mask.

    Each channel is upsampled to the image (bilinear, ``align_corners=True``, as the library's
    ``UpsamplingBilinear2d``), scaled to 0-1, and multiplies the normalized image; the class
    logits of the masked images, softmaxed over the channels, are the weights (pytorch-grad-cam's
    definition; see the module docstring for the paper's).

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        y: The class to explain for each image, ``[N]``.
        model: Maps normalized images to logits, in eval mode.
        layer: See :func:`find_layer`; None: the last feature layer with spatial maps.
        internal_batch_size: Masked images per forward pass. Masks are made per pass, so memory
            is that of one such batch, whatever the number of channels or images.

    Returns:
        ``[N, H, W]`` in 0-1, as pytorch-grad-cam's ``ScoreCAM``.
    """
    if not isinstance(internal_batch_size, int) or internal_batch_size < 1:
        raise UserInputError(f"internal_batch_size must be a positive integer, got "
                             f"{internal_batch_size}.")
    targets = _as_targets(y, X)
    X = X.detach()
    activations = layer_activations(X, model, layer)
    count, channels = activations.shape[:2]
    scores = torch.empty(count * channels, dtype=X.dtype, device=X.device)
    # (image, channel) pairs in one flat sequence, so that every pass is full across images.
    with torch.no_grad():
        for start in range(0, count * channels, internal_batch_size):
            pairs = torch.arange(start, min(start + internal_batch_size, count * channels),
                                 device=X.device)
            images, kept = pairs // channels, pairs % channels
            masks = F.interpolate(activations[images, kept][:, None], size=X.shape[2:],
                                  mode="bilinear", align_corners=True)
            lowest = masks.amin(dim=(2, 3), keepdim=True)
            masks = (masks - lowest) / (masks.amax(dim=(2, 3), keepdim=True) - lowest
                                        + SCORE_MASK_EPS)
            logits = model(X[images] * masks)
            scores[pairs] = logits.gather(1, targets[images][:, None])[:, 0]
    weights = scores.view(count, channels).softmax(dim=1)
    return weighted_cam(activations, weights, X.shape[2:])


@contextmanager
def guided_relus(model: nn.Module) -> Iterator[None]:
    """Inside the block, ReLU and ReLU6 modules pass back only positive gradients.

    Guided Backpropagation's rule (Springenberg et al. 2015): the gradient reaching a ReLU is
    clamped at 0 before the ReLU's own backward masks it by its input. ReLU6 (EfficientNet-Lite's
    activation) gets the same rule; pytorch-grad-cam and Captum guide ``nn.ReLU`` only, so on
    ReLU6 networks their "guided" gradients are plain ones.
    """

    def clamp_gradient(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if output.requires_grad:
            output.register_hook(lambda gradient: gradient.clamp(min=0))

    handles = [module.register_forward_hook(clamp_gradient) for module in model.modules()
               if isinstance(module, (nn.ReLU, nn.ReLU6))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def guided_backprop(X: torch.Tensor, y: Targets, model: nn.Module) -> torch.Tensor:
    """Guided Backpropagation: the class score's gradient through :func:`guided_relus`.

    Returns:
        ``[N, 3, H, W]``, signed.
    """
    with guided_relus(model):
        return class_score_gradient(X, y, model)


def guided_grad_cam(X: torch.Tensor, y: Targets, model: nn.Module,
                    layer: Layer = None) -> torch.Tensor:
    """Guided Grad-CAM: Guided Backpropagation times the Grad-CAM map, pixel by pixel.

    The paper's product is per colour channel; its maximum absolute value over the channels
    makes the ``[N, H, W]`` map (the homework's reduction), ``grad_cam * max_c |guided_c|``.

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        y: The class to explain for each image, ``[N]``.
        model: Maps normalized images to logits, in eval mode.
        layer: Grad-CAM's layer, see :func:`find_layer`.

    Returns:
        ``[N, H, W]``, non-negative.
    """
    return grad_cam(X, y, model, layer) * guided_backprop(X, y, model).abs().amax(dim=1)


# --- the methods as objects ---------------------------------------------------------------------


class LayerMethod(SaliencyMethod):
    """Base of the CAM methods: maps of one layer's activations.

    Args:
        layer: An index into the backbone's ``features`` or a dotted module name such as
            ``"features.6"`` (see :func:`find_layer`); None: the last feature layer with
            spatial maps (:func:`default_cam_layer`), found on each batch's model.
    """

    class_activation_map = True

    def __init__(self, layer: Layer = None) -> None:
        self.layer = layer

    def check(self, model: nn.Module) -> None:
        if self.layer is not None:
            find_layer(model, self.layer)  # an unknown layer fails before any image

    def for_wrapped_model(self, backbone: nn.Module) -> SaliencyMethod:
        if self.layer is None or (isinstance(self.layer, int) and not isinstance(self.layer, bool)):
            return self
        renamed = copy.copy(self)
        renamed.layer = module_name(backbone, str(self.layer))
        return renamed

    def chosen_layer(self, model: nn.Module, inputs: torch.Tensor) -> Union[int, str]:
        """The layer the maps are made of: the option, else the model's default."""
        return default_cam_layer(model, inputs) if self.layer is None else self.layer

    @staticmethod
    def cam(X: torch.Tensor, y: Targets, model: nn.Module, layer: Layer) -> torch.Tensor:
        """The method's plain function (``grad_cam``, ...): maps ``[N, H, W]`` of ``layer``."""
        raise NotImplementedError

    def attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  generator: Optional[torch.Generator] = None) -> Saliency:
        return Saliency(self.cam(inputs, targets, model, self.chosen_layer(model, inputs)))


class GradCAM(LayerMethod):
    """Grad-CAM (:func:`grad_cam`): channels weighted by their mean gradient.

    Args:
        layer: See :class:`LayerMethod`.
    """

    shorthand = "gradcam"
    cam = staticmethod(grad_cam)


class GradCAMPlusPlus(LayerMethod):
    """Grad-CAM++ (:func:`grad_cam_plusplus`): positive gradients weighed by alpha.

    Args:
        layer: See :class:`LayerMethod`.
    """

    shorthand = "gradcam++"
    cam = staticmethod(grad_cam_plusplus)


class ScoreCAM(LayerMethod):
    """Score-CAM (:func:`score_cam`): channels weighted by the score of the image they mask.

    Args:
        layer: See :class:`LayerMethod`.
        internal_batch_size: Masked images per forward pass.
    """

    shorthand = "scorecam"

    def __init__(self, layer: Layer = None, internal_batch_size: int = 32) -> None:
        super().__init__(layer)
        check_internal_batch_size(internal_batch_size)
        self.internal_batch_size = internal_batch_size

    def attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  generator: Optional[torch.Generator] = None) -> Saliency:
        return Saliency(score_cam(inputs, targets, model, self.chosen_layer(model, inputs),
                                  self.internal_batch_size))


class GuidedGradCAM(LayerMethod):
    """Guided Grad-CAM (:func:`guided_grad_cam`): Grad-CAM times Guided Backpropagation.

    Its maps are pixel-sharp, so they are drawn as gradient maps, not as class activation maps.

    Args:
        layer: Grad-CAM's layer, see :class:`LayerMethod`.
    """

    shorthand = "guided_gradcam"
    class_activation_map = False
    cam = staticmethod(guided_grad_cam)
