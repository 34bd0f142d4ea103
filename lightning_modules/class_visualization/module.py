"""The class-visualization LightningModule: one picture per class, all in one batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch

from lightning_modules.class_visualization.functional import (
    DEFAULT_INIT_STD,
    DEFAULT_L2_REG,
    CropViews,
    ParameterizationName,
    Step,
    TransformName,
    check_options,
    class_visualization_loss,
    default_learning_rate,
    make_optimizer,
    regularize,
    transform_name,
)
from lightning_modules.class_visualization.recognition import DEFAULT_CROPS, Recognition, recognise
from lightning_modules.errors import UserInputError, check_learning_rate, check_positive
from lightning_modules.backbones import load_backbone, native_input_size
from lightning_modules.image_optimization.metrics import StepBuffer
from lightning_modules.image_optimization.module import ImageOptimization
from lightning_modules.image_optimization.parameterizations import make_parameterization
from lightning_modules.naming import class_file_name, unique_names


@dataclass
class ClassJob:
    """One class to draw: its index, and the output name (``0130_flamingo``, ``..._2``)."""

    name: str
    class_index: int


class ClassVisualization(ImageOptimization):
    """Draw what each class looks like to the network: one image per class, all in one batch.

    Classes come from :class:`datamodules.classes.ClassListData` (indices or ImageNet names).
    Each step logs ``target_prob`` (the mean probability of the target classes, as the network
    sees the jittered images) and ``target_prob/<class>`` for each class. At the end of each
    chunk :meth:`class_records` holds each class's title (its name and the probability the
    network gives its 8-bit picture) and probability curve; ``callbacks.ClassReport`` draws them
    into ``classes_sheet.png`` and ``class_probability.png``, and ``ImageWriter`` writes
    ``<class>.png``.

    Args:
        l2_reg: Weight of the L2 penalty ``||image||^2`` on the normalized image.
        blur_every: Blur every this many steps (0: never; pixel parameterization only).
        blur_sigma: Standard deviation of the blur, in pixels.
        max_jitter: Largest random circular shift in pixels, undone after each step (0: none).
        image_size: Side of the square images.
        parameterization: ``"pixel"`` (the homework: the image is the parameter),
            ``"fourier"`` (Lucent: a colour-decorrelated spectrum; no clamping or blur needed)
            or ``"maco"`` (MACO: only the spectrum's phase moves; its amplitude is that of
            photos, so the picture keeps a photo's contrast and detail).
        transforms: What the network sees each step: ``"lucent"`` (or true: Lucent's standard
            random pad/jitter/scale/rotate), ``"crops"`` (MACO's random crops, see ``crops``)
            or ``"none"`` (false).
        decay_power: Spectrum decay of the Fourier parameterization.
        init_std: Standard deviation of the starting noise in normalized units (pixel
            parameterization; the homework's is 1).
        step: ``"normalized"`` (``lr * g / ||g||_2`` per image), ``"raw"`` (the homework's
            ``lr * g``) or ``"adam"``.
        lr: Step length (the homework's ``learning_rate``); None:
            :func:`~lightning_modules.class_visualization.functional.default_learning_rate`.
        clamp: Clamp pixel images to ``[-clamp, clamp]`` in normalized units after each step;
            None: the backbone's valid pixel range.
        crops: With ``transforms: crops``, the crops of each picture the network sees per step.
        crop_size: Their side as the network sees them (None: ``image_size``).
        crop_scale: Their smallest and largest side, as fractions of the picture's side.
        crop_noise: Standard deviation of the Gaussian noise on each crop (normalized units).
        amplitude: MACO's amplitude: None for the built-in sample photos' mean, a ``.pt``
            tensor ``[3, H, W//2+1]``, or a folder or glob of your photos.
        contrast: MACO's gain before the sigmoid (1: unit-variance picture).
        judge: A second backbone (e.g. ``efficientnet_lite2``) that judges each saved picture:
            its probability and rank of the class, the share of half-area crops with flips it
            puts at top-1, and the picture's contrast (``recognition.csv``, the sheet's
            titles). None: no judge.
        judge_crops: Half-area crops per picture the judge sees.
        **kwargs: ``backbone``, ``weights``, ``channels_last`` and ``fast`` of
            :class:`~lightning_modules.image_optimization.ImageOptimization`.
    """

    data_name = ("a ClassListData datamodule (data: class_path: "
                 "datamodules.classes.ClassListData)")

    def __init__(
        self,
        l2_reg: float = DEFAULT_L2_REG,
        blur_every: int = 10,
        blur_sigma: float = 0.5,
        max_jitter: int = 16,
        image_size: int = 224,
        parameterization: ParameterizationName = "pixel",
        transforms: Union[bool, TransformName] = False,
        decay_power: float = 1.0,
        init_std: float = DEFAULT_INIT_STD,
        step: Step = "normalized",
        lr: Optional[float] = None,
        clamp: Optional[float] = None,
        crops: int = 4,
        crop_size: Optional[int] = None,
        crop_scale: tuple[float, float] = (0.4, 1.0),
        crop_noise: float = 0.05,
        amplitude: Optional[str] = None,
        contrast: float = 1.0,
        judge: Optional[str] = None,
        judge_crops: int = DEFAULT_CROPS,
        **kwargs: Any,
    ) -> None:
        check_learning_rate("lr", lr)  # by the option's name here; check_options says learning_rate
        check_options(l2_reg, lr, blur_every, blur_sigma, max_jitter, image_size, step, init_std)
        check_positive("clamp", clamp, " (or null for the pixel range)")
        self.crop_views = CropViews(crops, crop_size, tuple(crop_scale), crop_noise).check()
        transforms = transform_name(transforms)
        if judge_crops < 1:
            raise UserInputError(f"judge_crops must be at least 1, got {judge_crops}.")
        if judge is not None:
            from lightning_modules.backbones import available_backbones

            if judge not in available_backbones():
                raise UserInputError(f"Unknown judge '{judge}'; choose one of "
                                     f"{', '.join(available_backbones())}.")
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.parameterization = make_parameterization(parameterization, init_std, decay_power,
                                                      amplitude, contrast)
        self.lr = lr if lr is not None else default_learning_rate(step, self.parameterization)
        self.l2_reg = l2_reg
        self.blur_every = blur_every
        self.blur_sigma = blur_sigma
        self.max_jitter = max_jitter
        self.image_size = image_size
        self.transforms = transforms
        self.step_rule = step
        self.clamp = clamp
        self.judge_name = judge
        self.judge_crops = judge_crops
        # In a plain dict, not an attribute: an nn.Module attribute would join the module's
        # state dict, fill every checkpoint with the judge's weights and refuse a resume.
        self._judge: dict[str, Any] = {}
        self._recognitions: tuple[int, list[Recognition]] = (-1, [])
        self.generator: Optional[torch.Generator] = None
        self.probability_history: list[list[float]] = []  # per step of the current chunk
        self._probabilities = StepBuffer()  # steps not yet in the history
        self._last_logits: Optional[torch.Tensor] = None
        self._targets: Optional[torch.Tensor] = None  # the classes on the device
        self._saved_probabilities: tuple[int, list[float]] = (-1, [])

    # ----------------------------------------------------------------- jobs and images
    def make_jobs(self, items: Sequence[Union[int, str]]) -> list[ClassJob]:
        classes = [self.backbone.class_index(item) for item in items]
        # The same class twice: two pictures from different noise.
        names = unique_names(class_file_name(index, self.backbone.categories[index])
                             for index in classes)
        return [ClassJob(name, index) for name, index in zip(names, classes)]

    def create_images(self, jobs: list[ClassJob]) -> list[torch.Tensor]:
        self.probability_history = []
        # The seed function's generator, seeded like the run, so both give the same images.
        # Every process and chunk draws the noise of all classes and keeps its own rows: the
        # jitter that follows is then the same everywhere, as in one run of all classes.
        self.generator = torch.Generator().manual_seed(torch.initial_seed())
        low, high = self._bounds()
        noise = self.parameterization.start(len(self.plan.jobs), self.image_size,
                                            self.image_size, low, high, self.generator)
        return [noise[self.job_indices]]

    def _bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The clamp range: ``±clamp`` when set, else the backbone's valid pixel range."""
        if self.clamp is not None:
            limit = torch.full_like(self.backbone.mean, self.clamp)
            return -limit, limit
        return self.backbone.pixel_min, self.backbone.pixel_max

    def rendered_images(self) -> torch.Tensor:
        """The current normalized images ``[B, 3, S, S]``, one per class."""
        return self.parameterization.to_inputs(self.images[0], self.backbone.mean,
                                               self.backbone.std)

    # ----------------------------------------------------------------- optimization
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return make_optimizer(self.step_rule, list(self.images), self.lr,
                              fused=self.fused_optimizer)

    def prepare_targets(self) -> None:
        # Once per chunk: a host list to a GPU tensor is a copy that waits for the GPU.
        self._targets = torch.as_tensor([job.class_index for job in self.jobs], dtype=torch.long,
                                        device=self.device)

    def loss_terms(self, group: int, images: torch.Tensor) -> dict[str, torch.Tensor]:
        terms, self._last_logits = class_visualization_loss(
            images, self._targets, self.backbone, parameterization=self.parameterization,
            mean=self.backbone.mean, std=self.backbone.std, l2_reg=self.l2_reg,
            max_jitter=self.max_jitter, transforms=self.transforms, generator=self.generator,
            crops=self.crop_views)
        return terms

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        logits = self._last_logits.detach()
        self._last_logits = None  # under CUDA graphs the next step overwrites it
        # On the device until a logging step, like the losses (see record_losses).
        self._probabilities.append(self.global_step,
                                   logits.softmax(1).gather(1, self._targets.view(-1, 1))[:, 0])
        if self.is_log_step():
            self.flush_probabilities(log=True)
        return loss

    def after_step(self, step: int) -> None:
        low, high = self._bounds()
        regularize(self.images[0], self.parameterization, step, low.to(self.device),
                   high.to(self.device), self.blur_every, self.blur_sigma)

    def flush_probabilities(self, log: bool) -> None:
        """Move the pending steps' probabilities to the history (one host read); log the last."""
        _, last, host = self._probabilities.take()
        if host is None:
            return
        self.probability_history.extend(host.tolist())
        if log:
            self.log_job_mean("target_prob", last[-1], prog_bar=True)
            # Each process logs its own classes (metrics.csv: those of process 0).
            for slot, value in zip(self.slots, last[-1]):
                self.log(f"target_prob/{slot.name}", value, on_step=True, on_epoch=False)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.flush_probabilities(log=False)

    # ----------------------------------------------------------------- results
    @torch.no_grad()
    def saved_probabilities(self) -> list[float]:
        """The probability the network gives each class's image once saved as an 8-bit PNG."""
        if self._saved_probabilities[0] != self.global_step:
            pixels = torch.stack([self.result_pixels(i) for i in range(len(self.slots))])
            pixels = pixels.mul(255).round().div(255).to(self.device)
            target = torch.as_tensor([job.class_index for job in self.jobs], device=self.device)
            values = []
            for start in range(0, len(pixels), 32):
                logits = self.backbone(self.backbone.normalize(pixels[start : start + 32]))
                chosen = target[start : start + 32, None]
                values += logits.softmax(1).gather(1, chosen)[:, 0].tolist()
            self._saved_probabilities = (self.global_step, values)
        return self._saved_probabilities[1]

    def judge(self) -> Optional[Any]:
        """The judge backbone, built on first use on this module's device, frozen; or None."""
        if self.judge_name is None:
            return None
        if self.judge_name not in self._judge:
            judge = load_backbone(self.judge_name, "default").to(self.device).eval()
            if judge.categories != self.backbone.categories:
                raise UserInputError(f"The judge '{self.judge_name}' has other classes than the "
                                     f"backbone '{self.backbone.name}'; pick one with the same.")
            self._judge[self.judge_name] = judge.requires_grad_(False)
        return self._judge[self.judge_name]

    def recognitions(self) -> list[Recognition]:
        """The judge's verdict on each saved picture of this process's chunk ([] without one).

        Its crops are seeded by the job's index, so a picture gets the same crops whichever
        process or chunk it is in.
        """
        judge = self.judge()
        if judge is None:
            return []
        if self._recognitions[0] != self.global_step:
            verdicts = []
            for row, job_index in enumerate(self.job_indices):
                pixels = self.result_pixels(row)[None]
                verdicts += recognise(pixels, [self.jobs[row].class_index], judge,
                                      judge.normalize, native_input_size(self.judge_name),
                                      self.judge_crops, seed=job_index)
            self._recognitions = (self.global_step, verdicts)
        return self._recognitions[1]

    def panel_title(self, index: int) -> str:
        """``"<class name> p=<probability of the saved PNG>"``, and with a judge its
        probability, its crops' top-1 share and the contrast."""
        name = self.backbone.categories[self.jobs[index].class_index]
        title = f"{name} p={self.saved_probabilities()[index]:.2f}"
        verdicts = self.recognitions()
        if verdicts:
            verdict = verdicts[index]
            title += (f"\n{self.judge_name.replace('efficientnet_', '')} p={verdict.judge_prob:.2f}"
                      f" crops {verdict.crop_top1:.0%} contrast {verdict.contrast:.2f}")
        return title

    def sheet_panels(self, index: int) -> list[tuple[str, torch.Tensor]]:
        return [(self.panel_title(index), self.result_pixels(index))]

    def class_records(self) -> list[dict[str, Any]]:
        """Per job of this process's chunk: its run index, name, title and p(target) per step."""
        self.flush_probabilities(log=False)
        verdicts = self.recognitions()
        records = []
        for row, (job_index, slot) in enumerate(zip(self.job_indices, self.slots)):
            job = self.jobs[row]
            record = {"job": job_index, "name": slot.name, "title": self.panel_title(row),
                      "curve": [step[row] for step in self.probability_history],
                      "class_index": job.class_index,
                      "class_name": self.backbone.categories[job.class_index],
                      "prob": self.saved_probabilities()[row]}
            if verdicts:
                record["recognition"] = {"judge": self.judge_name, **verdicts[row].as_row()}
            records.append(record)
        return records

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        self.flush_probabilities(log=False)
        checkpoint["class_visualization"] = {"generator": self.generator.get_state(),
                                             "history": self.probability_history}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "finished" in checkpoint.get("class_visualization", {}):
            raise UserInputError("This checkpoint was written by an earlier version of "
                                 "ClassVisualization, which kept its records in the module; "
                                 "start the run again.")
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint["class_visualization"]
        self.generator.set_state(saved["generator"])  # the jitter goes on where it stopped
        self.probability_history = saved["history"]
