"""Captum's attribution methods by name, through one adapter: ``--model.method captum:NAME``.

Captum (https://captum.ai) is the well-kept library of attribution methods; rather than write
each again, :func:`captum_attributions` builds ``captum.attr.NAME`` on the backbone and calls its
``attribute`` with the options a saliency run already has, mapped to Captum's names:

- ``target``: the class each map explains;
- ``baselines``: ``--model.baseline`` (``black`` or ``zero``, as Integrated Gradients), and for
  the two SHAP methods, which need a distribution, both images;
- ``n_steps`` / ``method``: ``--model.steps`` / ``--model.integration``; ``n_samples``:
  ``--model.samples``;
- ``feature_mask`` (ablation, permutation, Shapley sampling, KernelSHAP, LIME): square patches
  of ``--model.patch_size`` pixels, shared by the colour channels, since one feature per pixel
  value would need hundreds of thousands of passes; Occlusion's window is such a patch, sliding
  by half of it;
- ``perturbations_per_eval`` / ``internal_batch_size``: from ``--model.internal_batch_size``, so
  that memory stays bounded by it.

Anything else a method takes goes in ``--model.method_options`` (a dict: constructor or
``attribute`` arguments, e.g. ``{sliding_window_shapes: [3, 32, 32], strides: 16}`` or
``{multiply_by_inputs: false}``). The attributions are ``[N, 3, H, W]``, reduced to a map like
Integrated Gradients'.

:class:`CaptumMethod` is the adapter as a method object: ``CaptumMethod("Occlusion",
{"strides": 8})``, or in a config ``{class_path: lightning_modules.saliency.CaptumMethod,
init_args: {name: Occlusion, options: {strides: 8}}}``.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Optional

import torch
from torch import nn

from lightning_modules.errors import UserInputError
from lightning_modules.saliency.base import Saliency, SaliencyMethod
from lightning_modules.saliency.functional import attribution_map, resolve_baseline
from lightning_modules.saliency.gradients import (
    check_internal_batch_size,
    check_path,
    check_smoothing,
)

PREFIX = "captum:"
# The methods that explain an image classifier's output from its input. Left out: Captum's
# layer and neuron variants (they attribute to a layer), NoiseTunnel (a wrapper: SmoothGrad is
# --model.method smoothgrad), GuidedGradCam (needs a layer), the LLM and dataloader ones.
# FeaturePermutation too: it shuffles each feature among the batch's images, so one image's map
# would depend on the others in its batch (and a batch of one gets none).
CAPTUM_METHODS = (
    "Deconvolution", "DeepLift", "DeepLiftShap", "FeatureAblation", "GradientShap", "GuidedBackprop", "InputXGradient", "IntegratedGradients", "KernelShap",
    "LRP", "Lime", "Occlusion", "Saliency", "ShapleyValueSampling", "ShapleyValues",
)
# The arguments the adapter fills itself; method_options may not set them.
_FILLED = {"inputs", "target", "forward_func", "model", "additional_forward_args",
           "show_progress", "return_convergence_delta"}


class _GuidedReLU6(nn.ReLU):
    """ReLU6 that Captum's guided backpropagation and deconvolution see as a ReLU.

    They hook only ``nn.ReLU`` modules (``isinstance``); a ReLU6 network (EfficientNet-Lite,
    MobileNet) would silently give the plain gradient. As a ReLU subclass the module gets their
    rule: its own backward passes the gradient where ``0 < x < 6``, theirs keeps the positive part.
    """

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs.clamp(0, 6)


class _SixMinus(nn.Module):
    """``6 - x``: linear, so DeepLift passes its multipliers through unchanged."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return 6 - inputs


def _relu6_as_relus() -> nn.Module:
    """``ReLU6(x) = 6 - ReLU(6 - ReLU(x))`` in modules of DeepLift's exact ``nn.ReLU`` type.

    DeepLift applies its Rescale rule only to the types it lists (``ReLU6`` is not one: it would
    be taken as linear, and the attributions would not add up to the score difference). The
    product of the two ReLUs' Rescale multipliers is exactly ReLU6's.
    """
    return nn.Sequential(nn.ReLU(), _SixMinus(), nn.ReLU(), _SixMinus())


def _model_for(name: str, model: nn.Module) -> nn.Module:
    """The network Captum's method ``name`` should see: a copy whose ReLU6 modules follow the
    method's rule (see above) where it would skip them, else ``model`` itself."""
    replacement = {"GuidedBackprop": _GuidedReLU6, "Deconvolution": _GuidedReLU6,
                   "DeepLift": _relu6_as_relus, "DeepLiftShap": _relu6_as_relus}.get(name)
    if replacement is None or not any(type(m) is nn.ReLU6 for m in model.modules()):
        return model
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if type(child) is nn.ReLU6:
                setattr(parent, child_name, replacement())
    return model


def is_captum_method(method: str) -> bool:
    """Whether ``method`` names a Captum method (``captum:NAME``)."""
    return isinstance(method, str) and method.startswith(PREFIX)


def captum_class(method: str) -> type:
    """The Captum class that ``captum:NAME`` names; one sentence if it is unknown or missing."""
    name = method[len(PREFIX):]
    if name not in CAPTUM_METHODS:
        raise UserInputError(f"Unknown Captum method '{name}'; choose one of: "
                             f"{', '.join(CAPTUM_METHODS)}.")
    try:
        import captum.attr
    except ImportError:
        raise UserInputError(f"--model.method {method} needs Captum: pip install captum.") from None
    return getattr(captum.attr, name)


def _parameters(function: Any) -> set[str]:
    return set(inspect.signature(function).parameters) - {"self", "kwargs"}


def check_method_options(method: str, options: dict[str, Any]) -> None:
    """Refuse options that the Captum method takes in neither its constructor nor ``attribute``."""
    cls = captum_class(method)
    accepted = (_parameters(cls.__init__) | _parameters(cls.attribute)) - _FILLED
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise UserInputError(f"{method} takes no option {', '.join(map(repr, unknown))} in "
                             f"method_options; it takes: {', '.join(sorted(accepted))}.")


def patch_mask(height: int, width: int, patch_size: int, device: torch.device) -> torch.Tensor:
    """Feature ids of square patches, ``[1, 1, H, W]``: each patch is one feature."""
    rows = torch.arange(height, device=device) // patch_size
    columns = torch.arange(width, device=device) // patch_size
    per_row = (width + patch_size - 1) // patch_size
    return (rows[:, None] * per_row + columns[None, :])[None, None]


def captum_attributions(method: str, model: torch.nn.Module, inputs: torch.Tensor,
                        targets: torch.Tensor, baselines: torch.Tensor,
                        options: Optional[dict[str, Any]] = None, steps: int = 50,
                        integration: str = "gausslegendre", samples: int = 25,
                        patch_size: int = 16,
                        internal_batch_size: Optional[int] = None) -> torch.Tensor:
    """Attributions of ``captum.attr.NAME`` for each image and its class.

    Args:
        method: ``"captum:NAME"``, NAME one of :data:`CAPTUM_METHODS`.
        model: Maps normalized images to logits, in eval mode.
        inputs: Normalized images ``[N, 3, H, W]``.
        targets: The class to explain for each image, ``[N]``.
        baselines: ``[2, N, 3, H, W]``: the chosen baseline first, the other second (the SHAP
            methods take both as their distribution).
        options: Further constructor or ``attribute`` arguments (see the module docstring).
        steps: Integrated Gradients' points.
        integration: Integrated Gradients' rule.
        samples: The sample count of the sampling methods (GradientShap, KernelShap, Lime,
            ShapleyValueSampling).
        patch_size: Side of the square features of the perturbation methods.
        internal_batch_size: The most network inputs in one pass (None: Captum's default).

    Returns:
        Attributions ``[N, 3, H, W]`` (signed).
    """
    cls = captum_class(method)
    # YAML and the command line give lists; Captum wants shapes and strides as tuples.
    options = {key: tuple(value) if isinstance(value, list) else value
               for key, value in (options or {}).items()}
    check_method_options(method, options)
    init_names, attribute_names = _parameters(cls.__init__), _parameters(cls.attribute)
    init = {key: value for key, value in options.items() if key in init_names}
    try:
        attributor = cls(_model_for(cls.__name__, model), **init)
    except ImportError as error:  # Lime's default linear model is scikit-learn's
        raise UserInputError(f"{method} needs a package that is not installed: {error.name} "
                             f"(pip install {error.name}).") from None
    height, width = inputs.shape[-2:]
    defaults: dict[str, Any] = {}
    if "baselines" in attribute_names:
        shap = cls.__name__ in ("GradientShap", "DeepLiftShap")
        # A distribution of baselines is one stack for the whole batch: both images' first.
        defaults["baselines"] = baselines[:, 0] if shap else baselines[0]
    if "n_steps" in attribute_names:
        defaults.update(n_steps=steps, method=integration)
    if "n_samples" in attribute_names:
        defaults["n_samples"] = samples
    if "feature_mask" in attribute_names:
        defaults["feature_mask"] = patch_mask(height, width, patch_size, inputs.device)
    if "sliding_window_shapes" in attribute_names:
        defaults["sliding_window_shapes"] = (3, patch_size, patch_size)
        defaults["strides"] = (3, max(1, patch_size // 2), max(1, patch_size // 2))
    if internal_batch_size is not None:
        if "internal_batch_size" in attribute_names:
            defaults["internal_batch_size"] = internal_batch_size
        if "perturbations_per_eval" in attribute_names:
            # Captum passes this many perturbed copies of the whole batch at once.
            defaults["perturbations_per_eval"] = max(1, internal_batch_size // len(inputs))
    arguments = {**defaults, **{k: v for k, v in options.items() if k in attribute_names}}
    if isinstance(arguments.get("baselines"), str):
        raise UserInputError(f"{method}'s baselines come from --model.baseline (black or zero), "
                             "not method_options.")
    with torch.enable_grad():
        try:
            attributions = attributor.attribute(inputs.detach().clone().requires_grad_(True),
                                                target=targets, **arguments)
        except (AssertionError, ValueError, TypeError) as error:
            # Captum checks its own arguments with assertions; say which method refused what.
            reason = str(error).strip().rstrip(".") or type(error).__name__
            raise UserInputError(f"{method} refused its arguments: {reason}.") from None
    return attributions.detach()


class CaptumMethod(SaliencyMethod):
    """A Captum attribution method by name, through :func:`captum_attributions`.

    Args:
        name: The Captum class, one of :data:`CAPTUM_METHODS` (``"Occlusion"``; also written
            ``"captum:Occlusion"``).
        options: Further arguments of its constructor or ``attribute`` (see the module
            docstring), e.g. ``{sliding_window_shapes: [3, 32, 32], strides: 16}``.
        baseline: ``"black"`` or ``"zero"``: the baseline of the methods that take one (the SHAP
            methods take both, this one first).
        steps: The points of the path methods (Integrated Gradients).
        integration: Their quadrature rule (see
            :class:`~lightning_modules.saliency.gradients.IntegratedGradients`).
        samples: The sample count of the sampling methods (GradientShap, KernelShap, Lime,
            ShapleyValueSampling).
        patch_size: Side in pixels of the square features of the perturbation methods.
        reduction: How the ``[N, 3, H, W]`` attributions become a map: ``"abs_sum"``,
            ``"positive"`` or ``"abs_max"``.
        internal_batch_size: The most network inputs in one pass (None: Captum's default).
    """

    def __init__(self, name: str, options: Optional[dict[str, Any]] = None,
                 baseline: str = "black", steps: int = 50, integration: str = "gausslegendre",
                 samples: int = 25, patch_size: int = 16, reduction: str = "abs_sum",
                 internal_batch_size: Optional[int] = None) -> None:
        name = str(name)
        self.name = name[len(PREFIX):] if is_captum_method(name) else name
        self.options = dict(options or {})
        check_method_options(self.shorthand, self.options)  # also checks the name
        check_path(baseline, steps, integration, reduction)
        check_smoothing(0.0, samples)
        check_internal_batch_size(patch_size, "patch_size")
        check_internal_batch_size(internal_batch_size)
        self.baseline = baseline
        self.steps = steps
        self.integration = integration
        self.samples = samples
        self.patch_size = patch_size
        self.reduction = reduction
        self.internal_batch_size = internal_batch_size

    @property
    def shorthand(self) -> str:
        """``captum:NAME``, as a config writes it."""
        return PREFIX + self.name

    def attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  generator: Optional[torch.Generator] = None) -> Saliency:
        # The chosen baseline first; the SHAP methods take both as their distribution.
        other = "zero" if self.baseline == "black" else "black"
        baselines = torch.stack([resolve_baseline(start, inputs, model)
                                 for start in (self.baseline, other)])
        attributions = captum_attributions(
            self.shorthand, model, inputs, targets, baselines, self.options, self.steps,
            self.integration, self.samples, self.patch_size, self.internal_batch_size)
        return Saliency(attribution_map(attributions, self.reduction), attributions)
