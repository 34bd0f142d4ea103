"""The class-visualization preset: feature visualization with one ``class:`` objective per job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch

from lightning_modules.backbones import native_input_size
from lightning_modules.class_visualization.functional import class_visualization_loss
from lightning_modules.class_visualization.recognition import DEFAULT_CROPS, Recognition, recognise
from lightning_modules.errors import UserInputError
from lightning_modules.feature_visualization.module import (
    FeatureVisualization,
    ObjectiveJob,
)
from lightning_modules.feature_visualization.objectives import ClassLogit
from lightning_modules.image_optimization.judges import Judges
from lightning_modules.image_optimization.metrics import StepBuffer
from lightning_modules.naming import class_file_name, unique_names


@dataclass
class ClassJob(ObjectiveJob):
    """One class to draw: its output name (``0130_flamingo``, ``..._2``), its objective
    (``class:130``) and its index."""

    class_index: int = 0


class ClassVisualization(FeatureVisualization):
    """Draw what each class looks like to the network: one image per class, all in one batch.

    The preset of :class:`~lightning_modules.feature_visualization.FeatureVisualization` for
    classes: each job's objective is its class's logit (``class:130``), scored by the
    homework's loss (:func:`~.functional.class_visualization_loss`, the same one as
    :func:`~.functional.create_class_visualization`); everything else (parameterization, view,
    step, clamp and blur, checkpoints) is feature visualization's. What the preset adds: the
    class list, the probability of each class per step, an optional judge, and the class
    report. Classes come from :class:`datamodules.classes.ClassListData` (indices or ImageNet
    names). Each step logs ``target_prob`` (the mean probability of the target classes, as the
    network sees the jittered images) and ``target_prob/<class>`` for each class. At the end of
    each chunk :meth:`class_records` holds each class's title (its name and the probability the
    network gives its 8-bit picture) and probability curve; the ``callbacks.ClassReport`` this
    technique brings (:meth:`configure_callbacks`) draws them into ``classes_sheet.png`` and
    ``class_probability.png``, and ``ImageWriter`` writes ``<class>.png``.

    Args:
        judge: A second backbone (e.g. ``efficientnet_lite2``) that judges each saved picture:
            its probability and rank of the class, the share of half-area crops with flips it
            puts at top-1, and the picture's contrast (``recognition.csv``, the sheet's
            titles). None: no judge.
        judge_crops: Half-area crops per picture the judge sees (with a judge).
        **kwargs: The options of :class:`~lightning_modules.feature_visualization.
            FeatureVisualization` (``parameterization``, ``transforms``, ``step``, ``lr``,
            ``l2_reg``, ``max_jitter``, ``blur_every``, ``image_size``, ``clamp``, the
            variants' older options, ``backbone``, ...).
    """

    data_name = ("a ClassListData datamodule (data: class_path: "
                 "datamodules.classes.ClassListData)")

    def __init__(self, judge: Optional[str] = None, judge_crops: int = DEFAULT_CROPS,
                 **kwargs: Any) -> None:
        if isinstance(judge_crops, bool) or not isinstance(judge_crops, int) or judge_crops < 1:
            raise UserInputError(f"judge_crops must be at least 1, got {judge_crops}.")
        judges = Judges([] if judge is None else [judge])
        super().__init__(**kwargs)
        self.judge_name = judge
        self.judge_crops = judge_crops
        self._judges = judges  # a plain object: the judge stays out of checkpoints
        self._recognitions: tuple[int, list[Recognition]] = (-1, [])
        self.probability_history: list[list[float]] = []  # per step of the current chunk
        self._probabilities = StepBuffer()  # steps not yet in the history
        self._last_logits: Optional[torch.Tensor] = None
        self._targets: Optional[torch.Tensor] = None  # the classes on the device
        self._saved_probabilities: tuple[int, list[float]] = (-1, [])

    # ----------------------------------------------------------------- jobs and images
    def make_jobs(self, items: Sequence[Union[int, str]]) -> list[ClassJob]:
        classes = [self.backbone.class_index(item) for item in items]
        for index in classes:
            self.objectives.setdefault(f"class:{index}", ClassLogit(index))
        # The same class twice: two pictures from different noise.
        names = unique_names(class_file_name(index, self.backbone.categories[index])
                             for index in classes)
        return [ClassJob(name, f"class:{index}", class_index=index)
                for name, index in zip(names, classes)]

    def create_images(self, jobs: list[Any]) -> list[torch.Tensor]:
        self.probability_history = []
        return super().create_images(jobs)

    # ----------------------------------------------------------------- the step
    def prepare_targets(self) -> None:
        super().prepare_targets()
        # Once per chunk: a host list to a GPU tensor is a copy that waits for the GPU.
        self._targets = torch.as_tensor([job.class_index for job in self.jobs], dtype=torch.long,
                                        device=self.device)

    def loss_terms(self, group: int, images: torch.Tensor) -> dict[str, torch.Tensor]:
        # The class objective, scored by the homework's loss, which also gives the logits that
        # p(target) is read from.
        terms, self._last_logits = class_visualization_loss(
            images, self._targets, self.backbone, parameterization=self.parameterization,
            mean=self.backbone.mean, std=self.backbone.std, l2_reg=self.l2_reg,
            max_jitter=self.max_jitter, transforms=self.view, generator=self.generator)
        return terms

    def record_scores(self) -> None:
        """After each step: the probability of each class, kept on the device until a
        logging step (like the losses, see ``record_losses``)."""
        logits = self._last_logits.detach()
        self._last_logits = None  # under CUDA graphs the next step overwrites it
        self._probabilities.append(self.global_step,
                                   logits.softmax(1).gather(1, self._targets.view(-1, 1))[:, 0])
        if self.is_log_step():
            self.flush_probabilities(log=True)

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
        if not self._judges:
            return None
        return self._judges.get(self.judge_name, self.backbone)

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

    def configure_callbacks(self) -> list[Any]:
        """The class report (``callbacks.ClassReport``: ``classes_sheet.png``,
        ``class_probability.png``, ``recognition.csv``), in a run that saves pictures."""
        from callbacks import ClassReport  # the callbacks package imports the techniques

        return ClassReport.reading(self.class_records, self.trainer)

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.flush_probabilities(log=False)
        super().on_save_checkpoint(checkpoint)
        checkpoint["class_visualization"]["history"] = self.probability_history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.probability_history = checkpoint["class_visualization"].get("history", [])
