"""The saliency LightningModule: maps of a frozen classifier for batches of labeled photos."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

import pytorch_lightning as pl
import torch

from lightning_modules.backbones import DEFAULT_BACKBONE, Backbone, load_backbone
from lightning_modules.errors import UserInputError, check_choice, check_non_negative
from lightning_modules.saliency.captum_methods import (
    captum_attributions,
    check_method_options,
    is_captum_method,
)
from lightning_modules.saliency.evaluation import (
    TrustReport,
    check_evaluation_options,
    trust_report,
)
from lightning_modules.saliency.functional import (
    METHODS,
    attribution_map,
    compute_saliency_maps,
    integrated_gradients,
    integration_rule,
    resolve_baseline,
    smoothgrad_saliency,
)
# The Grad-CAM family (issue 12): cam.py; its options are checked in _check_cam_options.
from lightning_modules.saliency import cam


@dataclass
class SaliencyBatch:
    """What :meth:`SaliencyMap.predict_step` returns for one batch (all on the CPU).

    Attributes:
        names: File-name-safe name of each image.
        pixels: The photos, 0-1 ``[B, 3, H, W]``.
        maps: Non-negative saliency maps ``[B, H, W]``.
        attributions: Integrated Gradients' signed ``[B, 3, H, W]``, else None.
        predicted: Top-1 class index of each image.
        probability: Softmax probability of the top-1 class.
        target: The class each map explains.
        true: The true class, or None where unknown.
        categories: Class names, indexed by class.
        target_probability: Softmax probability of the explained class (a map of a class the
            network barely sees explains little; the sheet says so).
        method: The method that made the maps.
        trust: The trust report (deletion, insertion, randomization) with ``evaluate``, else None.
    """

    names: list[str]
    pixels: torch.Tensor
    maps: torch.Tensor
    attributions: Optional[torch.Tensor]
    predicted: list[int]
    probability: list[float]
    target: list[int]
    true: list[Optional[int]]
    categories: list[str]
    target_probability: list[float] = field(default_factory=list)
    method: str = "vanilla"
    trust: Optional[TrustReport] = None

    def class_name(self, index: Optional[int]) -> str:
        """A class's name, or ``"unknown"`` for None."""
        return "unknown" if index is None else self.categories[index]


class SaliencyMap(pl.LightningModule):
    """Saliency maps of a frozen classifier for a batch of labeled photos.

    Run with ``python cli.py predict --config configs/saliency.yaml``: images come from
    ``datamodules.labeled_images.LabeledImageData`` and ``callbacks.saliency_writer.SaliencyWriter``
    saves the pictures. The config sets ``trainer.inference_mode: false``; ``predict_step``
    also leaves inference mode itself, so a default ``Trainer`` works too.

    Args:
        backbone: Name of the frozen classifier; from Python also a :class:`Backbone`, e.g.
            ``classifier_backbone(your_model)``.
        weights: ``"default"`` (ImageNet weights), ``"random"``, or a local state-dict file.
        method: ``"vanilla"`` (the homework's gradient), ``"smoothgrad"``,
            ``"integrated_gradients"``, a CAM method of :mod:`~lightning_modules.saliency.cam`
            (``"gradcam"``, ``"gradcam++"``, ``"scorecam"``, ``"guided_gradcam"``), or any Captum
            method as ``"captum:NAME"`` (e.g. ``captum:Occlusion``, ``captum:GradientShap``,
            ``captum:DeepLift``; see :mod:`~lightning_modules.saliency.captum_methods`).
        target: Which class each map explains: ``"true"`` (the image's label), ``"predicted"``
            (the top-1 class), or one class for all images by index or ImageNet name.
        noise_level: SmoothGrad's noise standard deviation, as a fraction of each image's range.
        samples: SmoothGrad's number of noisy copies.
        baseline: Integrated Gradients' starting image: ``"black"`` or ``"zero"`` (zeros in
            normalized space, the mean colour; Captum's default).
        steps: Integrated Gradients' number of points on the path.
        integration: Integrated Gradients' quadrature rule (``"gausslegendre"``, as Captum, or
            ``"riemann_trapezoid"``, ``"riemann_left"``, ...).
        reduction: How Integrated Gradients' per-channel attributions become a map:
            ``"abs_sum"`` (as Captum draws them), ``"positive"`` or ``"abs_max"``.
        channels_last: Run the backbone in channels-last memory format (faster on tensor-core
            GPUs; the same maps up to float rounding).
        internal_batch_size: The most network inputs in one pass: SmoothGrad's noisy copies,
            Integrated Gradients' path points and Captum's perturbations of the batch go through
            the network this many at a time, so memory does not grow with ``samples`` or
            ``steps``. None: one copy of the batch at a time (Score-CAM: 32 masked images).
        method_options: Further arguments of a Captum method (its constructor's or
            ``attribute``'s), e.g. ``{sliding_window_shapes: [3, 32, 32], strides: 16}``.
        patch_size: Side in pixels of the square features of Captum's perturbation methods
            (Occlusion's window, FeatureAblation's, KernelShap's and Lime's features); None: 16.
        evaluate: Also compute the trust report of each map (written by
            ``callbacks.trust_report.TrustReportWriter``): deletion and insertion AUC, and the
            cascading parameter-randomization check; see
            :mod:`lightning_modules.saliency.evaluation`.
        evaluation_steps: Deletion and insertion steps from no pixel to every pixel.
        evaluation_batch_size: Most perturbed images per forward pass of the report.
        deletion_baseline: What deleted pixels become: ``"black"``, ``"zero"`` (the mean colour,
            RISE's code) or ``"blur"``.
        insertion_start: What insertion starts from: ``"blur"`` (RISE's), ``"black"`` or
            ``"zero"``.
        randomization_seed: Seed of the randomized layers' new weights.
        layer: The CAM methods' layer (``"gradcam"``, ``"gradcam++"``, ``"scorecam"``,
            ``"guided_gradcam"``): an index into the backbone's ``features`` or a dotted module
            name such as ``"features.6"``; default: the last feature layer with spatial maps.
    """

    def __init__(
        self,
        backbone: Union[str, Backbone] = DEFAULT_BACKBONE,
        weights: str = "default",
        method: str = "vanilla",
        target: Union[int, str] = "true",
        noise_level: float = 0.15,
        samples: int = 25,
        baseline: str = "black",
        steps: int = 50,
        integration: str = "gausslegendre",
        reduction: str = "abs_sum",
        channels_last: bool = False,
        internal_batch_size: Optional[int] = None,
        layer: Optional[Union[int, str]] = None,
        method_options: Optional[dict[str, Any]] = None,
        patch_size: Optional[int] = None,
        evaluate: bool = False,
        evaluation_steps: int = 20,
        evaluation_batch_size: int = 16,
        deletion_baseline: str = "black",
        insertion_start: str = "blur",
        randomization_seed: int = 0,
    ) -> None:
        super().__init__()
        if is_captum_method(method):
            check_method_options(method, method_options or {})
        else:
            check_choice("method", method, METHODS + cam.CAM_METHODS, "saliency method")
            if method_options:
                raise UserInputError(f"method_options are for Captum methods (captum:NAME), not "
                                     f"{method}.")
        for name, value in (("internal_batch_size", internal_batch_size),
                            ("patch_size", patch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise UserInputError(f"{name} must be a whole number of at least 1, got {value}.")
        check_choice("baseline", baseline, ("black", "zero"))
        check_choice("reduction", reduction, ("abs_sum", "positive", "abs_max"))
        check_non_negative("noise_level", noise_level)
        if not samples >= 1:
            raise UserInputError(f"samples must be at least 1, got {samples}.")
        integration_rule(steps, integration)  # checks steps and the rule's name
        if isinstance(target, bool):  # YAML's bare true; bool would pass as class 1
            raise UserInputError("target must be 'true', 'predicted', a class index or a name; "
                                 "quote 'true' in YAML.")
        # From Python also your own network as a Backbone (classifier_backbone(model)).
        self.backbone: Backbone = (backbone if isinstance(backbone, Backbone)
                                   else load_backbone(backbone, weights))
        if channels_last:
            self.backbone.use_channels_last()
        self.method = method
        self.target = target
        self.fixed_target = (None if target in ("true", "predicted")
                             else self.backbone.class_index(target))
        self.noise_level = noise_level
        self.samples = samples
        self.baseline = baseline
        self.steps = steps
        self.integration = integration
        self.reduction = reduction
        self.internal_batch_size = internal_batch_size
        self.method_options = dict(method_options or {})
        self.patch_size = 16 if patch_size is None else patch_size
        # The trust report (evaluation.py).
        check_evaluation_options(evaluation_steps, evaluation_batch_size, deletion_baseline,
                                 insertion_start, randomization_seed)
        self.evaluate = evaluate
        self.evaluation_steps = evaluation_steps
        self.evaluation_batch_size = evaluation_batch_size
        self.deletion_baseline = deletion_baseline
        self.insertion_start = insertion_start
        self.randomization_seed = randomization_seed
        self._check_cam_options(layer, internal_batch_size, patch_size)
        self.layer = layer

    # Options of the CAM methods, and the methods each belongs to. Their defaults are None, so
    # a value here was set by the user; refusing it elsewhere catches a mistyped method.
    CAM_OPTIONS = {"layer": cam.CAM_METHODS,
                   "internal_batch_size": ("scorecam", "smoothgrad", "integrated_gradients",
                                           "captum:*"),
                   "patch_size": ("captum:*",)}

    def _check_cam_options(self, layer: Optional[Union[int, str]],
                           internal_batch_size: Optional[int],
                           patch_size: Optional[int]) -> None:
        for name, value in (("layer", layer), ("internal_batch_size", internal_batch_size),
                            ("patch_size", patch_size)):
            method = "captum:*" if is_captum_method(self.method) else self.method
            if value is not None and method not in self.CAM_OPTIONS[name]:
                raise UserInputError(f"Option '{name}' does not apply to method "
                                     f"'{self.method}'; it belongs to "
                                     f"{', '.join(self.CAM_OPTIONS[name])}.".replace("*", "NAME"))
        if layer is not None:
            cam.find_layer(self.backbone, layer)  # an unknown layer fails before any image

    def saliency(self, inputs: torch.Tensor, targets: torch.Tensor
                 ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The chosen method's maps ``[B, H, W]`` (and IG's ``[B, 3, H, W]`` attributions).

        Args:
            inputs: Normalized images ``[B, 3, H, W]``.
            targets: The class to explain for each image, ``[B]``.
        """
        if self.method == "vanilla":
            return compute_saliency_maps(inputs, targets, self.backbone), None
        if self.method == "smoothgrad":
            return smoothgrad_saliency(inputs, targets, self.backbone, self.noise_level,
                                       self.samples,
                                       internal_batch_size=self.internal_batch_size), None
        if self.method in cam.CAM_METHODS:
            return self._cam(inputs, targets), None
        if is_captum_method(self.method):
            other = "zero" if self.baseline == "black" else "black"
            baselines = torch.stack([resolve_baseline(name, inputs, self.backbone)
                                     for name in (self.baseline, other)])
            attributions = captum_attributions(
                self.method, self.backbone, inputs, targets, baselines, self.method_options,
                self.steps, self.integration, self.samples, self.patch_size,
                self.internal_batch_size)
        else:
            attributions = integrated_gradients(inputs, targets, self.backbone, self.baseline,
                                                self.steps, self.integration,
                                                internal_batch_size=self.internal_batch_size)
        return attribution_map(attributions, self.reduction), attributions

    def _cam(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The CAM method's maps ``[B, H, W]`` in 0-1, at the chosen (or default) layer."""
        if self.layer is None:  # found once: the layers' output shapes do not change
            self.layer = cam.default_cam_layer(self.backbone, inputs)
        if self.method == "scorecam":
            return cam.score_cam(inputs, targets, self.backbone, self.layer,
                                 self.internal_batch_size or 32)
        function = {"gradcam": cam.grad_cam, "gradcam++": cam.grad_cam_plusplus,
                    "guided_gradcam": cam.guided_grad_cam}[self.method]
        return function(inputs, targets, self.backbone, self.layer)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> SaliencyBatch:
        """Classify a batch of ``LabeledImageData`` (``pixels``, ``names``, ``labels``) and
        compute the saliency of each image."""
        true = [None if label is None else self.backbone.class_index(label)
                for label in batch["labels"]]
        if self.target == "true" and None in true:
            raise UserInputError(
                f"Image '{batch['names'][true.index(None)]}' has no label, so target 'true' is "
                "undefined; give --data.labels or set --model.target to 'predicted' or a class."
            )
        # Leave inference mode too: under the Trainer's default (inference_mode=True)
        # enable_grad alone cannot record a graph. The clone makes a normal tensor of the batch.
        with torch.inference_mode(False), torch.enable_grad():
            pixels = batch["pixels"].clone()
            inputs = self.backbone.normalize(pixels)
            with torch.no_grad():
                probabilities = self.backbone(inputs).softmax(dim=1)
            probability, predicted = probabilities.max(dim=1)
            if self.fixed_target is not None:
                targets = [self.fixed_target] * len(true)
            else:
                targets = predicted.tolist() if self.target == "predicted" else true
            maps, attributions = self.saliency(inputs, torch.tensor(targets, device=inputs.device))
            trust = (self.trust_report(inputs, torch.tensor(targets, device=inputs.device), maps)
                     if self.evaluate else None)
        return SaliencyBatch(
            names=list(batch["names"]),
            pixels=pixels.detach().cpu(),
            maps=maps.detach().cpu(),
            attributions=None if attributions is None else attributions.detach().cpu(),
            predicted=predicted.tolist(),
            probability=probability.tolist(),
            target=list(targets),
            true=true,
            categories=self.backbone.categories,
            target_probability=probabilities.gather(
                1, torch.tensor(targets, device=probabilities.device)[:, None])[:, 0].tolist(),
            method=self.method,
            trust=trust,
        )

    # --- the trust report (lightning_modules/saliency/evaluation.py) ---------------------------

    def trust_report(self, inputs: torch.Tensor, targets: torch.Tensor,
                     maps: torch.Tensor) -> TrustReport:
        """Deletion and insertion AUC and the randomization check of this batch's maps."""
        return trust_report(self.backbone, self._saliency_of, inputs, targets, maps, self.method,
                            self.evaluation_steps, self.evaluation_batch_size,
                            self.deletion_baseline, self.insertion_start, self.randomization_seed)

    def _saliency_of(self, backbone: Backbone, inputs: torch.Tensor,
                     targets: torch.Tensor) -> torch.Tensor:
        """The chosen method's maps on another backbone (a randomized copy)."""
        # saliency() reads self.backbone, so every method it dispatches to (present and future)
        # is checked as it runs, with no second code path.
        trained = self.backbone
        self.backbone = backbone
        try:
            return self.saliency(inputs, targets)[0]
        finally:
            self.backbone = trained
