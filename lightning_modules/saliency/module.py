"""The saliency LightningModule: maps of a frozen classifier for batches of labeled photos."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import pytorch_lightning as pl
import torch

from lightning_modules.backbones import DEFAULT_BACKBONE, Backbone, load_backbone
from lightning_modules.errors import UserInputError
from lightning_modules.saliency.base import Saliency, SaliencyMethod
from lightning_modules.saliency.evaluation import (
    TrustReport,
    check_evaluation_options,
    trust_report,
)
from lightning_modules.saliency.registry import method_from_module_options


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
        method: The short name of the method that made the maps (``"smoothgrad"``).
        trust: The trust report (deletion, insertion, randomization) with ``evaluate``, else None.
        class_activation_map: Whether the maps are class activation maps (Grad-CAM's family),
            which the writer draws blended over the photo in its ``cam_colormap``.
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
    class_activation_map: bool = False

    def class_name(self, index: Optional[int]) -> str:
        """A class's name, or ``"unknown"`` for None."""
        return "unknown" if index is None else self.categories[index]


def check_target(target: Union[int, str]) -> None:
    """Refuse a bool target (YAML's bare ``true``), which would pass as class 1."""
    if isinstance(target, bool):
        raise UserInputError("target must be 'true', 'predicted', a class index or a name; "
                             "quote 'true' in YAML.")


def fixed_class(target: Union[int, str], backbone: Backbone) -> Optional[int]:
    """The one class every map explains, or None for ``"true"`` and ``"predicted"``.

    Raises:
        UserInputError: A bool target or a class the backbone does not know.
    """
    check_target(target)
    return None if target in ("true", "predicted") else backbone.class_index(target)


def reads_unfolded(method: SaliencyMethod, folded: Backbone) -> bool:
    """Whether ``method`` must run on the unfolded network: it reads the normalizations
    (FullGrad), or its CAM layer is a convolution whose output folding changed."""
    if method.reads_batch_norm:
        return True
    layer = getattr(method, "layer", None)
    if layer is None or not folded.folded_pairs:
        return False
    from lightning_modules.saliency.cam import find_layer

    try:
        module = find_layer(folded, layer)
    except UserInputError:
        return False  # method.check says so
    names = {id(candidate): name for name, candidate in folded.named_modules()}
    return names.get(id(module)) in {conv for conv, _ in folded.folded_pairs}


def fast_and_exact(backbone: Backbone, fold: bool, channels_last: bool,
                   methods: Sequence[SaliencyMethod], unfolded_needed: bool = False
                   ) -> tuple[Backbone, Optional[Backbone]]:
    """The backbone the methods run on, and the unfolded one where some need it.

    With ``fold`` the first is a copy of ``backbone`` with its normalizations folded into the
    convolutions (:meth:`~Backbone.fold_batch_norm`: the same maps up to float rounding, about
    1.4x faster on a CPU); ``backbone`` itself is never changed by folding (a caller's object
    stays as it was), and is returned second when a method (:func:`reads_unfolded`) or a metric
    (``unfolded_needed``) reads the normalizations, else None. A compiled backbone, or one that
    cannot be copied, is not folded.
    """
    fast, exact = backbone, None
    if fold and backbone._compiled_run is None:
        try:
            fast = copy.deepcopy(backbone).fold_batch_norm()
        except (TypeError, RuntimeError, copy.Error):  # a network that will not copy
            fast = backbone
        if fast is not backbone and not fast.folded_pairs:
            fast = backbone  # nothing folded: no copy to keep
        if fast is not backbone and (unfolded_needed or any(
                reads_unfolded(method, fast) for method in methods)):
            exact = backbone
    for network in {id(fast): fast, id(exact): exact}.values():
        if channels_last and network is not None:
            network.use_channels_last()
    return fast, exact


def explained_classes(target: Union[int, str], fixed: Optional[int], predicted: list[int],
                      true: list[Optional[int]]) -> list[int]:
    """The class each image's map explains: the fixed one, the predicted or the true one."""
    if fixed is not None:
        return [fixed] * len(predicted)
    return list(predicted) if target == "predicted" else list(true)  # type: ignore[arg-type]


class SaliencyMap(pl.LightningModule):
    """Saliency maps of a frozen classifier for a batch of labeled photos.

    Run with ``python cli.py predict --config configs/saliency.yaml``: images come from
    ``datamodules.labeled_images.LabeledImageData``, and the module brings its writers
    (:meth:`configure_callbacks`): ``callbacks.saliency_writer.SaliencyWriter`` saves the
    pictures, ``callbacks.trust_report.TrustReportWriter`` the trust report. The config sets
    ``trainer.inference_mode: false``; ``predict_step`` also leaves inference mode itself, so a
    default ``Trainer`` works too.

    The method is an object of :mod:`~lightning_modules.saliency` (a config's ``class_path``,
    e.g. ``{class_path: lightning_modules.saliency.SmoothGrad, init_args: {samples: 10}}``)
    that carries its own options, or a short name that the flat options below configure
    (``method: smoothgrad`` with ``samples: 10``), resolved in
    :mod:`~lightning_modules.saliency.registry`. A flat option with a default is a setting for
    whichever short name the run uses and is unused by methods without it; a flat option that
    is None by default (``layer``, ``internal_batch_size``, ``patch_size``,
    ``method_options``) is refused by a method that does not take it, and with a method object.

    Args:
        backbone: Name of the frozen classifier; from Python also a :class:`Backbone`, e.g.
            ``classifier_backbone(your_model)``.
        weights: ``"default"`` (ImageNet weights), ``"random"``, or a local state-dict file.
        method: A :class:`~lightning_modules.saliency.base.SaliencyMethod` (``Vanilla``,
            ``SmoothGrad``, ``IntegratedGradients``, ``GradCAM``, ``GradCAMPlusPlus``,
            ``ScoreCAM``, ``GuidedGradCAM``, ``CaptumMethod``), or a short name:
            ``"vanilla"`` (the homework's gradient), ``"smoothgrad"``,
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
        fold_batch_norm: Fold the backbone's batch normalizations into the convolutions before
            them (:meth:`~lightning_modules.backbones.backbone.Backbone.fold_batch_norm`): the
            same maps up to float rounding, gradients about 1.4x faster on a CPU. FullGrad, a
            CAM layer that is a folded convolution, and the trust report's randomization run
            on the unfolded network. ``--model.fold_batch_norm false`` runs every method
            unfolded.
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
        method: Union[SaliencyMethod, str] = "vanilla",
        target: Union[int, str] = "true",
        noise_level: float = 0.15,
        samples: int = 25,
        baseline: str = "black",
        steps: int = 50,
        integration: str = "gausslegendre",
        reduction: str = "abs_sum",
        channels_last: bool = False,
        fold_batch_norm: bool = True,
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
        # One resolution of the method and its options (registry.py) for every way in.
        self.method: SaliencyMethod = method_from_module_options(
            method,
            settings={"noise_level": noise_level, "samples": samples, "baseline": baseline,
                      "steps": steps, "integration": integration, "reduction": reduction},
            options={"layer": layer, "internal_batch_size": internal_batch_size,
                     "patch_size": patch_size, "method_options": method_options})
        check_target(target)  # before the backbone loads
        # From Python also your own network as a Backbone (classifier_backbone(model)).
        loaded = backbone if isinstance(backbone, Backbone) else load_backbone(backbone, weights)
        # The methods run on a folded copy; the trust report randomizes layers, which wants the
        # normalizations as they are (see fast_and_exact).
        self.backbone, self.unfolded_backbone = fast_and_exact(
            loaded, fold_batch_norm, channels_last, [self.method], unfolded_needed=evaluate)
        self.target = target
        self.fixed_target = fixed_class(target, self.backbone)
        # The trust report (evaluation.py).
        check_evaluation_options(evaluation_steps, evaluation_batch_size, deletion_baseline,
                                 insertion_start, randomization_seed)
        self.evaluate = evaluate
        self.evaluation_steps = evaluation_steps
        self.evaluation_batch_size = evaluation_batch_size
        self.deletion_baseline = deletion_baseline
        self.insertion_start = insertion_start
        self.randomization_seed = randomization_seed
        self.method.check(self.backbone)  # an unknown CAM layer fails before any image

    def configure_callbacks(self) -> list[pl.Callback]:
        """The writers of a saliency run: its pictures, and the trust report with ``evaluate``.

        A writer the Trainer already has (a config's ``trainer.callbacks`` entry, with its
        ``colormap`` or ``clip_percentile``) is kept as it is: Lightning would replace it with
        the module's, and so drop the options the config gave it. A Trainer without a logger
        (``logger=False``, as in notebooks and the Python API) has no run folder to write to,
        and gets none: the predictions come back from ``trainer.predict``.
        """
        # Imported here: the callbacks import this module (SaliencyBatch).
        from callbacks.saliency_writer import SaliencyWriter
        from callbacks.trust_report import TrustReportWriter

        if not self.trainer.loggers:
            return []
        wanted = [SaliencyWriter()] + ([TrustReportWriter()] if self.evaluate else [])
        return [writer for writer in wanted
                if not any(isinstance(present, type(writer)) for present in self.trainer.callbacks)]

    def saliency(self, inputs: torch.Tensor, targets: torch.Tensor) -> Saliency:
        """The method's maps ``[B, H, W]`` (and signed ``[B, 3, H, W]`` attributions where it has
        them).

        Args:
            inputs: Normalized images ``[B, 3, H, W]``.
            targets: The class to explain for each image, ``[B]``.
        """
        return self.method.attribute(self.method_backbone, inputs, targets)

    @property
    def method_backbone(self) -> Backbone:
        """The network the method runs on: the unfolded one where it reads normalizations."""
        if self.unfolded_backbone is not None and reads_unfolded(self.method, self.backbone):
            return self.unfolded_backbone
        return self.backbone

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
            targets = explained_classes(self.target, self.fixed_target, predicted.tolist(), true)
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
            method=self.method.shorthand,
            trust=trust,
            class_activation_map=self.method.class_activation_map,
        )

    # --- the trust report (lightning_modules/saliency/evaluation.py) ---------------------------

    def trust_report(self, inputs: torch.Tensor, targets: torch.Tensor,
                     maps: torch.Tensor) -> TrustReport:
        """Deletion and insertion AUC and the randomization check of this batch's maps."""
        return trust_report(self.unfolded_backbone or self.backbone, self._saliency_of,
                            inputs, targets, maps,
                            self.method.shorthand, self.evaluation_steps,
                            self.evaluation_batch_size, self.deletion_baseline,
                            self.insertion_start, self.randomization_seed)

    def _saliency_of(self, backbone: Backbone, inputs: torch.Tensor,
                     targets: torch.Tensor) -> torch.Tensor:
        """The method's maps on another backbone (a randomized copy)."""
        return self.method.attribute(backbone, inputs, targets).maps
