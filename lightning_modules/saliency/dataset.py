"""Explain a whole dataset: several methods' maps of every image, each scored by every metric,
beside the random and trivial controls.

Run with ``image-opt predict --config saliency_dataset``: images come from
:class:`~datamodules.image_dataset.DatasetImages` (a folder tree, a CSV, a glob; streamed in
shards), and the module brings its writer
(:class:`~callbacks.dataset_writer.DatasetWriter`: map shards, the index CSV, the report). The
module computes and returns one :class:`DatasetBatch` per batch; it writes nothing.

Every method and control runs on every batch, and every metric scores every map, so the index
gets one number per image, method and metric. The controls (``random``, ``edges``, ``center``)
are maps that know nothing of the network (or nothing at all): a method that does not beat
them on a metric is not shown by that metric to explain anything.

Randomness (SmoothGrad's noise, the random control, the metrics' perturbations) is drawn from a
generator seeded by ``seed`` and the batch's first image, so an image gets the same numbers in
one process or two, and in a run resumed after a kill.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import pytorch_lightning as pl
import torch

from lightning_modules.backbones import DEFAULT_BACKBONE, Backbone, load_backbone
from lightning_modules.errors import UserInputError
from lightning_modules.saliency.base import SaliencyMethod
from lightning_modules.saliency.metrics.base import MetricInputs, SaliencyMetric
from lightning_modules.saliency.metrics.registry import metric_from_spec
from lightning_modules.saliency.module import (
    check_target,
    explained_classes,
    fast_and_exact,
    fixed_class,
    reads_unfolded,
)
from lightning_modules.saliency.registry import method_from_options

MethodSpec = Union[SaliencyMethod, str]
MetricSpec = Union[SaliencyMetric, str]

DEFAULT_METHODS = ("gradcam", "integrated_gradients")
DEFAULT_CONTROLS = ("random", "edges", "center")


@dataclass
class DatasetBatch:
    """What :meth:`DatasetExplanation.predict_step` returns for one batch (all on the CPU).

    Attributes:
        index: Each image's position in the dataset.
        paths: Each image's path (or ``sample:NAME``).
        names: File-name-safe name of each image.
        labels: The labels as the dataset gave them (None where unknown).
        pixels: The photos, 0-1 ``[B, 3, H, W]``.
        true: The true class index, or None.
        predicted: Top-1 class index.
        probability: Softmax probability of the top-1 class.
        target: The class each map explains.
        target_probability: Softmax probability of the explained class.
        maps: Each method's maps ``[B, H, W]`` by name (the controls' are not kept).
        scores: Each method's and control's scores ``[B]`` by name, then by metric name.
        shard: The shard the batch belongs to (None for a dataset without shards).
        shard_end: Whether it is the shard's last batch.
        skipped: ``(path, reason)`` of this batch's images that could not be read.
        categories: The classifier's class names.
    """

    index: list[int]
    paths: list[str]
    names: list[str]
    labels: list[Any]
    pixels: torch.Tensor
    true: list[Optional[int]]
    predicted: list[int]
    probability: list[float]
    target: list[int]
    target_probability: list[float]
    maps: dict[str, torch.Tensor]
    scores: dict[str, dict[str, torch.Tensor]]
    shard: Optional[int] = None
    shard_end: bool = True
    skipped: list[tuple[str, str]] = field(default_factory=list)
    categories: Sequence[str] = ()


def unique_method_names(methods: Sequence[SaliencyMethod]) -> list[str]:
    """Each method's short name, with ``_2``, ``_3`` ... where two methods share one."""
    names: list[str] = []
    for method in methods:
        name, count = method.shorthand, 2
        while name in names:
            name, count = f"{method.shorthand}_{count}", count + 1
        names.append(name)
    return names


class DatasetExplanation(pl.LightningModule):
    """Saliency maps of several methods over a dataset, scored by the evaluation metrics.

    Args:
        backbone: Name of the frozen classifier; from Python also a :class:`Backbone`.
        weights: ``"default"`` (ImageNet weights), ``"random"``, or a local state-dict file.
        methods: The methods to explain with: short names (``gradcam``,
            ``integrated_gradients``, ``smoothgrad``, ...) with their defaults, or objects of
            :mod:`lightning_modules.saliency` (a config's ``class_path`` with ``init_args``).
        metrics: The metrics every map is scored by: short names (``road_morf``,
            ``sparseness``, ...) or objects of :mod:`lightning_modules.saliency.metrics`.
        controls: The maps every method is compared with: ``random``, ``edges``, ``center``
            (or any method). Scored by every metric; their maps are not kept.
        target: Which class each map explains: ``"true"`` (the image's label), ``"predicted"``,
            or one class for all by index or ImageNet name.
        seed: Seed of every random draw (with the batch's first image).
        channels_last: Run the backbone in channels-last memory format (default: on; with the
            folded normalizations EfficientNet-Lite0's input gradient took 0.48 of the unfolded
            contiguous network's CPU time, batch 16 and 64 at 224 px; folding alone 0.74,
            channels-last alone 0.66-0.80). ``--model.channels_last false`` for the
            contiguous layout.
        fold_batch_norm: Fold the backbone's batch normalizations into the convolutions before
            them (:meth:`~lightning_modules.backbones.backbone.Backbone.fold_batch_norm`): the
            same maps and scores up to float rounding, gradients and forward passes about 1.4x
            faster on a CPU. FullGrad, a CAM layer that is a folded convolution and the
            randomisation metric (it randomises the normalizations too) run on the unfolded
            network, every other method and metric on the folded one;
            ``--model.fold_batch_norm false`` runs all unfolded.
    """

    def __init__(
        self,
        backbone: Union[str, Backbone] = DEFAULT_BACKBONE,
        weights: str = "default",
        methods: Sequence[MethodSpec] = DEFAULT_METHODS,
        metrics: Sequence[MetricSpec] = (),
        controls: Sequence[MethodSpec] = DEFAULT_CONTROLS,
        target: Union[int, str] = "true",
        seed: int = 0,
        channels_last: bool = True,
        fold_batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if not methods:
            raise UserInputError("Give at least one method to explain with (--model.methods).")
        self.methods = [method_from_options(method) for method in methods]
        self.method_names = unique_method_names(self.methods)
        self.controls = [method_from_options(control) for control in controls]
        self.control_names = unique_method_names(self.controls)
        clash = set(self.method_names) & set(self.control_names)
        if clash:
            raise UserInputError(f"'{sorted(clash)[0]}' is both a method and a control; give "
                                 "it once.")
        self.metrics = [metric_from_spec(metric) for metric in metrics]
        metric_names = [metric.name for metric in self.metrics]
        repeated = {name for name in metric_names if metric_names.count(name) > 1}
        if repeated:
            raise UserInputError(f"Metric '{sorted(repeated)[0]}' is given twice.")
        check_target(target)  # before the backbone loads
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**62:
            raise UserInputError(f"seed must be an integer from 0 to 2**62, got {seed}.")
        loaded = backbone if isinstance(backbone, Backbone) else load_backbone(backbone, weights)
        self.backbone, self.unfolded_backbone = fast_and_exact(
            loaded, fold_batch_norm, channels_last, self.methods + self.controls,
            unfolded_needed=any(metric.reads_batch_norm for metric in self.metrics))
        self.target = target
        self.fixed_target = fixed_class(target, self.backbone)
        self.seed = seed
        # Seconds this process spent per method ("<method>") and per metric of its maps
        # ("<method>.<metric>"), and the images it explained: explanation.json reports them.
        self.seconds: dict[str, float] = {}
        self.images_explained = 0
        for method in self.methods + self.controls:
            method.check(self.backbone)  # an unknown CAM layer fails before any image

    @property
    def explainers(self) -> dict[str, SaliencyMethod]:
        """The methods, then the controls, by their names in the outputs."""
        return {**dict(zip(self.method_names, self.methods)),
                **dict(zip(self.control_names, self.controls))}

    def configure_callbacks(self) -> list[pl.Callback]:
        """The writer of a dataset run (shards, index, report); none without a logger (no run
        folder: the batches come back from ``trainer.predict``), and none where the Trainer has
        one already (a config's entry, with its options)."""
        # Imported here: the writer imports this module (DatasetBatch).
        from callbacks.dataset_writer import DatasetWriter

        if not self.trainer.loggers or any(isinstance(present, DatasetWriter)
                                           for present in self.trainer.callbacks):
            return []
        return [DatasetWriter()]

    def setup(self, stage: str) -> None:
        """Check every label against the classifier's classes before the first image."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        labels = getattr(datamodule, "distinct_labels", None)
        if labels is None:
            return
        used = labels()
        for label in used:
            self.backbone.class_index(label)  # an unknown name: one sentence
        if self.target == "true" and any(item.label is None for item in datamodule.items):
            unlabeled = next(item.path for item in datamodule.items if item.label is None)
            raise UserInputError(f"{unlabeled} has no label, so target 'true' is undefined; give "
                                 f"labels (a class folder tree, a CSV's label column or "
                                 f"--data.labels) or set --model.target predicted.")

    def generator(self, first_index: int) -> torch.Generator:
        """The batch's random generator: the same for an image's batch in any run."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.seed * 1_000_003 + first_index)
        return generator

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> DatasetBatch:
        """Classify a batch of :class:`~datamodules.image_dataset.DatasetImages`, explain it with
        every method and control, and score every map with every metric."""
        index = batch["index"].tolist()
        true = [None if label is None else self.backbone.class_index(label)
                for label in batch["labels"]]
        if self.target == "true" and None in true:
            raise UserInputError(f"Image '{batch['paths'][true.index(None)]}' has no label, so "
                                 "target 'true' is undefined; set --model.target predicted.")
        empty = not index
        maps: dict[str, torch.Tensor] = {}
        scores: dict[str, dict[str, torch.Tensor]] = {}
        predicted: list[int] = []
        probability: list[float] = []
        targets: list[int] = []
        target_probability: list[float] = []
        pixels = batch["pixels"]
        if not empty:
            # Leave inference mode: the Trainer's default would keep any graph from forming.
            with torch.inference_mode(False), torch.enable_grad():
                pixels = pixels.clone()
                inputs = self.backbone.normalize(pixels)
                with torch.no_grad():
                    probabilities = self.backbone(inputs).softmax(dim=1)
                top, best = probabilities.max(dim=1)
                predicted, probability = best.tolist(), top.tolist()
                targets = explained_classes(self.target, self.fixed_target, predicted, true)
                target_tensor = torch.tensor(targets, device=inputs.device)
                target_probability = probabilities.gather(1, target_tensor[:, None])[:, 0].tolist()
                boxes = batch.get("boxes")
                if boxes is not None and torch.isnan(boxes).all():
                    boxes = None
                self.images_explained += len(index)
                for name, method in self.explainers.items():
                    method_maps, method_scores = self.explain(method, inputs, target_tensor,
                                                              boxes, index[0])
                    scores[name] = {metric: value.detach().cpu()
                                    for metric, value in method_scores.items()}
                    if name in self.method_names:
                        maps[name] = method_maps.detach().float().cpu()
        return DatasetBatch(
            index=index, paths=list(batch["paths"]), names=list(batch["names"]),
            labels=list(batch["labels"]), pixels=pixels.detach().cpu(), true=true,
            predicted=predicted, probability=probability, target=list(targets),
            target_probability=target_probability, maps=maps, scores=scores,
            shard=batch.get("shard"), shard_end=batch.get("shard_end", True),
            skipped=list(batch.get("skipped", [])), categories=self.backbone.categories)

    def explain(self, method: SaliencyMethod, inputs: torch.Tensor, targets: torch.Tensor,
                boxes: Optional[torch.Tensor], first_index: int
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One method's maps of a batch and every metric's scores of them."""
        generator = self.generator(first_index)
        name = next(key for key, value in self.explainers.items() if value is method)
        started = time.perf_counter()
        method_model = self.network_for(method)
        maps = method.attribute(method_model, inputs, targets, generator=generator).maps
        self._count(name, started)

        def explain_again(model: torch.nn.Module, images: torch.Tensor,
                          classes: torch.Tensor) -> torch.Tensor:
            return method.attribute(model, images, classes, generator=generator).maps

        scores = {}
        for metric in self.metrics:
            if metric.needs_boxes and boxes is None:
                scores[metric.name] = torch.full((len(inputs),), float("nan"))
                continue
            started = time.perf_counter()
            scores[metric.name] = metric.score(MetricInputs(
                model=self.network_for(method, metric), inputs=inputs, targets=targets,
                maps=maps.detach(),
                explain=explain_again, boxes=boxes, generator=self.generator(first_index)))
            self._count(f"{name}.{metric.name}", started)
        return maps, scores

    def network_for(self, method: SaliencyMethod, metric: Optional[SaliencyMetric] = None
                    ) -> Backbone:
        """The backbone a method (and a metric of its maps) runs on: the unfolded one where
        either reads the normalizations (see ``fold_batch_norm``), else the folded one."""
        if self.unfolded_backbone is not None and (
                reads_unfolded(method, self.backbone)
                or (metric is not None and metric.reads_batch_norm)):
            return self.unfolded_backbone
        return self.backbone

    def _count(self, key: str, started: float) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the time of the work, not of its launch
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - started

    def metric_info(self) -> dict[str, dict[str, Any]]:
        """Each metric's family, direction, perturbation and normalisation (for the report)."""
        return {metric.name: {"family": metric.family,
                              "higher_is_better": metric.higher_is_better,
                              "perturbation": metric.perturbation,
                              "normalisation": metric.normalisation,
                              "class": type(metric).__name__}
                for metric in self.metrics}
