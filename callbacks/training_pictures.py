"""Saliency maps and class pictures of *your* classifier while it trains, in your loggers.

Add :class:`TrainingPictures` to the ``Trainer`` that trains your own classifier
LightningModule: every ``every_n_epochs`` epochs it draws the saliency maps of a fixed batch of
images and the class visualizations of chosen classes, writes them as PNGs into the run's folder
and shows them in the trainer's TensorBoard and W&B loggers.

It never touches the training: it works on a deep copy of the model made at each render
(wrapped by :func:`~lightning_modules.backbones.custom.classifier_backbone`, which freezes what
it wraps), draws its noise from its own seeded generator inside ``torch.random.fork_rng``, and
puts back every module's mode, every parameter's ``requires_grad`` and ``.grad`` as it found
them. A run with the callback ends with the same weights as one without it.
"""

from __future__ import annotations

import copy
import inspect
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Sequence, Union

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from callbacks.logged_images import log_picture
from callbacks.run_directory import continues_run, run_directory
from callbacks.saliency_writer import SaliencyWriter
from callbacks.sheets import grid_sheet
from datamodules.images import save_png
from lightning_modules.backbones.backbone import Backbone
from lightning_modules.backbones.custom import classifier_backbone
from lightning_modules.backbones.normalization import IMAGENET_MEAN, IMAGENET_STD
from lightning_modules.class_visualization.functional import (
    create_class_visualization,
    default_learning_rate,
)
from lightning_modules.errors import UserInputError, check_choice
from lightning_modules.image_optimization.parameterizations import make_parameterization
from lightning_modules.naming import short_title
from lightning_modules.saliency.base import SaliencyMethod
from lightning_modules.saliency.module import SaliencyBatch
from lightning_modules.saliency.registry import SHORTHANDS, method_from_options

SALIENCY_METHODS = tuple(SHORTHANDS)  # the short names saliency_method takes
# saliency_options take the methods' option names, and the names of the functions they once
# went to: Integrated Gradients' quadrature rule was its function's `method`.
FUNCTION_NAMES = {"method": "integration"}
# Unset options as the functions had them: Integrated Gradients from the zero baseline
# (Captum's default), where SaliencyMap starts from black.
FUNCTION_DEFAULTS = {"baseline": "zero"}
# Options the callback passes itself, so a user may not set them through the option dicts.
OWN_ARGUMENTS = {"X", "y", "model", "generator", "target_y", "num_iterations", "image_size",
                 "mean", "std", "show_every", "on_show"}
FOLDER = "training_pictures"
# The side at which the class-visualization steps were measured (EfficientNet-Lite0's input).
REFERENCE_SIDE = 224


class TrainingPictures(pl.Callback):
    """Draws saliency maps and class visualizations of the model being trained.

    Renders at the end of every ``every_n_epochs``-th training epoch (after that epoch's
    validation, whose first batch supplies the images when ``images`` is not given), on process
    0 only. Files: ``<run>/training_pictures/saliency_epoch<E>.png`` (the photos titled with the
    predicted and true classes, their maps and overlays: the saliency sheet of
    :class:`~callbacks.SaliencyWriter`) and ``classes_epoch<E>.png`` (each class's picture and
    its probability), where ``<run>`` is the first logger's folder (a CSVLogger's too). Each is
    also shown in every TensorBoard and W&B logger, under ``training_pictures/saliency`` and
    ``training_pictures/classes``, at the trainer's global step.

    Every render starts from the same seed, so pictures of different epochs differ only by
    what the model learnt.

    Args:
        every_n_epochs: Render after every this many epochs (epochs ``n, 2n, ...``).
        images: A fixed batch of *normalized* inputs ``[N, 3, H, W]``, as the model takes them;
            None: the first ``num_images`` images of the first validation batch (a tensor, or
            the first element of a tuple, list or ``{"image": ...}`` dict).
        labels: The true class of each of ``images`` (None: the labels of the validation
            batch, where it has them).
        num_images: The most images taken from the validation batch.
        saliency_method: A method object of :mod:`lightning_modules.saliency` (``SmoothGrad(
            samples=10)``, ``GradCAM(layer="conv2")``, ...; a config's ``class_path``), or a
            short name: ``"vanilla"``, ``"smoothgrad"``, ``"integrated_gradients"``,
            ``"gradcam"``, ``"gradcam++"``, ``"scorecam"`` or ``"guided_gradcam"``; None: no
            saliency sheet. A CAM method's ``layer`` is a module name of *your* model
            (``"conv2"``, or ``"3"`` for an ``nn.Sequential``'s fourth child).
        saliency_options: The options of a method given by short name (``samples``,
            ``noise_level``, ``steps``, ``baseline``, ``layer``, ...; Integrated Gradients'
            ``integration`` also as ``method``, and its baseline is ``"zero"`` unless given).
        target: Which class each map explains: ``"true"`` (the label) or ``"predicted"``.
        classes: Classes to visualize, by index or name; None: no class sheet.
        class_steps: Gradient steps of each class visualization.
        class_size: Side in pixels of the class pictures.
        class_options: Further arguments of
            :func:`~lightning_modules.class_visualization.functional.create_class_visualization`
            (``l2_reg``, ``learning_rate``, ``blur_every``, ``max_jitter``, ...). The default
            jitter is ``class_size // 14`` and the default normalized step is scaled by
            ``class_size / 224``: the homework's 16 pixels and the step measured at 224 px.
        mean: Per-channel mean of your preprocessing, 0-1 pixel units (for drawing the photos).
        std: Per-channel standard deviation of your preprocessing.
        categories: Class names, or None: ``"0"``, ``"1"``, ... as many as the model's logits.
        model: Attribute of your LightningModule that holds the classifier (e.g. ``"net"``);
            None: the LightningModule itself, whose ``forward`` must return logits.
        seed: Seed of the SmoothGrad noise and the class pictures' start and jitter.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        images: Optional[torch.Tensor] = None,
        labels: Optional[Union[torch.Tensor, Sequence[int]]] = None,
        num_images: int = 8,
        saliency_method: Optional[Union[SaliencyMethod, str]] = "vanilla",
        saliency_options: Optional[dict[str, Any]] = None,
        target: Literal["true", "predicted"] = "true",
        classes: Optional[Sequence[Union[int, str]]] = None,
        class_steps: int = 50,
        class_size: int = 64,
        class_options: Optional[dict[str, Any]] = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        categories: Optional[Sequence[str]] = None,
        model: Optional[str] = None,
        seed: int = 0,
    ) -> None:
        for name, value, least in (("every_n_epochs", every_n_epochs, 1),
                                   ("num_images", num_images, 1),
                                   ("class_steps", class_steps, 1), ("class_size", class_size, 8)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise UserInputError(f"{name} must be a whole number of at least {least}, got "
                                     f"{value}.")
        check_choice("target", target, ("true", "predicted"))
        if saliency_method is None and not classes:
            raise UserInputError("TrainingPictures has nothing to draw: give a saliency_method, "
                                 "classes, or both.")
        self.saliency_options = dict(saliency_options or {})
        # The one method object, whichever way it was given (registry.py).
        self.method: Optional[SaliencyMethod] = None if saliency_method is None else (
            method_from_options(saliency_method, self.saliency_options, FUNCTION_DEFAULTS,
                                FUNCTION_NAMES, what="saliency_options"))
        self.class_options = {"max_jitter": max(1, class_size // 14), **(class_options or {})}
        if classes and self.class_options.get("learning_rate") is None:
            self.class_options["learning_rate"] = class_learning_rate(self.class_options,
                                                                      class_size)
        if classes:
            check_arguments("class_options", self.class_options, create_class_visualization)
        self.images = None if images is None else checked_images(images, "images")
        self.labels = (None if labels is None else
                       torch.as_tensor(labels, dtype=torch.long).reshape(-1).cpu())
        if self.labels is not None and (self.images is None
                                        or len(self.labels) != len(self.images)):
            raise UserInputError("labels must come with images, one label per image.")
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.target = target
        self.classes = list(classes or [])
        self.class_steps = class_steps
        self.class_size = class_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.categories = None if categories is None else list(categories)
        self.model_attribute = model
        self.seed = seed
        self.directory: Optional[Path] = None
        self.drawer = SaliencyWriter()  # its sheet, drawn without its per-image files

    # --- hooks --------------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.directory = run_directory(trainer) / FOLDER  # a collective call: every process
        # Bad classes or a bad CAM layer fail now, not after the first epoch's training. A
        # layer does not depend on the classes: without class pictures, none are looked for
        # (the model may not tell them before its first validation batch).
        backbone = self.backbone(pl_module, self.images, with_classes=bool(self.classes))
        for name in self.classes:
            backbone.class_index(name)
        if self.method is not None:
            self.method.for_wrapped_model(backbone).check(backbone)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        # The batch the loop already drew: reading the loader ourselves would draw a seed from
        # the global generator (and shuffle) and so change the user's training.
        if self.images is None and batch_idx == 0 and dataloader_idx == 0:
            self.images, self.labels = images_of_batch(batch, self.num_images)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The end of the training epoch, not of validation: it comes every epoch whether or
        # not validation runs, after it when it does (so its first batch is here at epoch 0),
        # and outside inference mode.
        if not trainer.is_global_zero or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self.render(trainer, pl_module)

    # --- rendering ----------------------------------------------------------------------------

    def render(self, trainer: Optional[pl.Trainer], pl_module: nn.Module) -> list[Path]:
        """Draw, write and log this epoch's sheets; returns the files written."""
        device = next((p.device for p in pl_module.parameters()), torch.device("cpu"))
        epoch = trainer.current_epoch if trainer is not None else 0
        written = []
        with untouched(pl_module), forked_rng(device), torch.inference_mode(False), \
                torch.enable_grad():
            backbone = self.backbone(pl_module, self.images)
            generator = torch.Generator().manual_seed(self.seed)
            if self.method is not None:
                if self.images is None:
                    rank_zero_warn("TrainingPictures has no images yet (no validation batch "
                                   "has run and none were given): no saliency sheet this epoch.")
                else:
                    written.append(self.saliency_sheet(backbone, device, generator, epoch,
                                                       trainer))
            if self.classes:
                written.append(self.class_sheet(backbone, generator, epoch, trainer))
        for path in written:
            log_picture(trainer, f"{FOLDER}/{path.stem.split('_epoch')[0]}", path)
        return written

    def backbone(self, pl_module: nn.Module, images: Optional[torch.Tensor],
                 with_classes: bool = True) -> Backbone:
        """A frozen copy of the user's classifier; the live one is never wrapped or run.

        Without ``with_classes`` its classes are a placeholder (for checking layer names).
        """
        model = self.user_model(pl_module)
        frozen = copy.deepcopy(model)
        categories: Any = self.categories if with_classes else 1
        if categories is None and images is not None:
            frozen.eval()  # as the backbone will be: batch norm leaves its statistics alone
            device = next((p.device for p in frozen.parameters()), torch.device("cpu"))
            with torch.no_grad():
                categories = frozen(images[:1].to(device)).shape[1]
        return classifier_backbone(frozen, self.mean, self.std, categories,
                                   name=type(model).__name__)

    def user_model(self, pl_module: nn.Module) -> nn.Module:
        """The classifier: ``pl_module`` itself or its ``model`` attribute."""
        if self.model_attribute is None:
            return pl_module
        model = getattr(pl_module, self.model_attribute, None)
        if not isinstance(model, nn.Module):
            raise UserInputError(f"{type(pl_module).__name__} has no nn.Module attribute "
                                 f"'{self.model_attribute}' (TrainingPictures' model option).")
        return model

    def saliency_sheet(self, backbone: Backbone, device: torch.device,
                       generator: torch.Generator, epoch: int,
                       trainer: Optional[pl.Trainer]) -> Path:
        """The saliency sheet of the fixed images, as :class:`SaliencyWriter` draws one."""
        inputs = self.images.to(device)
        with torch.no_grad():
            probabilities = backbone(inputs).softmax(dim=1)
        probability, predicted = probabilities.max(dim=1)
        true = None if self.labels is None else self.labels.tolist()
        if self.target == "true" and true is None:
            raise UserInputError("TrainingPictures' target is 'true' but its images have no "
                                 "labels; give labels= or set target='predicted'.")
        targets = torch.tensor(true if self.target == "true" else predicted.tolist(),
                               device=device)
        method = self.method.for_wrapped_model(backbone)
        maps = method.attribute(backbone, inputs, targets, generator).maps.detach().float().cpu()
        result = SaliencyBatch(
            names=[f"image{index}" for index in range(len(inputs))],
            pixels=backbone.denormalize(inputs).clamp(0, 1).detach().cpu(),
            maps=maps, attributions=None, predicted=predicted.tolist(),
            probability=probability.tolist(), target=targets.tolist(),
            true=true if true is not None else [None] * len(inputs),
            categories=backbone.categories,
            target_probability=probabilities.gather(1, targets[:, None])[:, 0].tolist(),
            method=method.shorthand, class_activation_map=method.class_activation_map)
        pictures = [self.drawer.pictures(result, index) for index in range(len(inputs))]
        scaled, overlays = [p[0] for p in pictures], [p[2] for p in pictures]
        path = self.file(trainer, f"saliency_epoch{epoch:03d}.png")
        return self.drawer.write_sheet(result, scaled, overlays, self.drawer.colormap_of(result),
                                       path)

    def class_sheet(self, backbone: Backbone, generator: torch.Generator, epoch: int,
                    trainer: Optional[pl.Trainer]) -> Path:
        """Each chosen class's picture, titled with its name and probability."""
        targets = [backbone.class_index(name) for name in self.classes]
        inputs = create_class_visualization(targets, backbone, num_iterations=self.class_steps,
                                            image_size=self.class_size, generator=generator,
                                            **self.class_options)
        with torch.no_grad():
            probabilities = backbone(inputs).softmax(dim=1)
        pixels = backbone.denormalize(inputs).clamp(0, 1).cpu()
        titles = [f"{short_title(backbone.categories[target], 16)} "
                  f"p={float(probabilities[row, target]):.2f}"
                  for row, target in enumerate(targets)]
        panels = list(zip(titles, pixels))
        sheet = grid_sheet(panels, columns=min(len(panels), 8), height=max(self.class_size, 128))
        return save_png(sheet, self.file(trainer, f"classes_epoch{epoch:03d}.png"),
                        overwrite=True)

    def file(self, trainer: Optional[pl.Trainer], name: str) -> Path:
        """Where a sheet goes; a resumed run redraws the epoch it was interrupted in."""
        directory = self.directory or Path(FOLDER)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        if trainer is not None and continues_run(trainer):
            path.unlink(missing_ok=True)
        return path


# --- helpers ----------------------------------------------------------------------------------


def check_arguments(what: str, options: dict[str, Any], function: Any) -> None:
    """Refuse an option that ``function`` does not take, or that the callback sets itself."""
    accepted = set(inspect.signature(function).parameters) - OWN_ARGUMENTS
    for name in options:
        if name not in accepted:
            raise UserInputError(f"Unknown {what} entry '{name}'; choose from "
                                 f"{', '.join(sorted(accepted))}.")


def class_learning_rate(options: dict[str, Any], size: int) -> Optional[float]:
    """The class pictures' default step, scaled from the 224 px one to ``size``.

    A normalized step has one L2 length per image, measured at 224 px: at a side of 16 px the
    same length moves every pixel 14 times as far and the picture saturates. Scaling the length
    with the side (the square root of the pixel count) keeps the step per pixel.
    """
    step = options.get("step", "normalized")
    if step != "normalized":
        return None  # raw and Adam steps are per pixel already
    parameterization = options.get("parameterization", "pixel")
    if isinstance(parameterization, str):
        parameterization = make_parameterization(parameterization)
    return default_learning_rate(step, parameterization) * size / REFERENCE_SIDE


def checked_images(images: Any, what: str) -> torch.Tensor:
    """A detached CPU copy of a batch ``[N, 3, H, W]``, or a one-sentence error."""
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
        shape = list(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise UserInputError(f"{what} must be normalized images [N, 3, H, W], got {shape}; "
                             "give a grey model 3-channel images (images.expand(-1, 3, -1, -1)).")
    return images.detach().float().cpu().clone()


def images_of_batch(batch: Any, count: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The first ``count`` images of a validation batch, and their labels where it has them."""
    labels = None
    if isinstance(batch, dict):
        key = next((k for k in ("image", "images", "pixels", "inputs", "x") if k in batch), None)
        if key is None:
            raise UserInputError(f"TrainingPictures cannot find the images in a batch with keys "
                                 f"{sorted(batch)}; give images= (and labels=).")
        images = batch[key]
        labels = next((batch[k] for k in ("label", "labels", "target", "targets", "y")
                       if k in batch), None)
    elif isinstance(batch, (tuple, list)):
        images = batch[0]
        labels = batch[1] if len(batch) > 1 else None
    else:
        images = batch
    images = checked_images(images, "The validation batch's images")[:count]
    if torch.is_tensor(labels) and labels.ndim == 1 and not labels.is_floating_point():
        return images, labels[:count].detach().long().cpu().clone()
    return images, None


@contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Put back every module's mode and every parameter's ``requires_grad`` and ``.grad``.

    The callback only reads the live model (it works on a copy); this holds even if a model's
    own ``forward`` or ``deepcopy`` hooks change its state.
    """
    modes = [(module, module.training) for module in model.modules()]
    parameters = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode
        for parameter, requires_grad, grad in parameters:
            parameter.requires_grad_(requires_grad)
            parameter.grad = grad


@contextmanager
def forked_rng(device: torch.device) -> Iterator[None]:
    """Leave the global random state of the CPU and of ``device`` as it was."""
    accelerated = device.type not in ("cpu", "meta")
    devices = [device.index if device.index is not None else 0] if accelerated else []
    with torch.random.fork_rng(devices=devices,
                               device_type=device.type if accelerated else "cuda"):
        yield
