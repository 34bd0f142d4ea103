"""The fooling-image LightningModule: each image pushed a little towards a target class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
from pytorch_lightning.utilities import rank_zero_warn

from lightning_modules.errors import UserInputError
from lightning_modules.fooling.attacks import Attack
from lightning_modules.fooling.functional import (
    Ensemble,
    FoolingAttack,
    FoolingProgress,
    Loss,
    Norm,
    quantize_pixels,
)
from lightning_modules.backbones import available_backbones, load_backbone
from lightning_modules.fooling.robustness import (
    DEFAULT_CHECKS,
    check,
    check_names,
    fools,
    robustness,
)
from lightning_modules.image_optimization.judges import Judges
from lightning_modules.image_optimization.module import ImageOptimization
from lightning_modules.naming import class_slug, short_title

ClassSpec = Union[int, str]


@dataclass
class FoolingJob:
    """One image to push towards one target class.

    Attributes:
        name: File-name-safe and unique, ``<image>_to_<target class>``.
        pixels: The original 0-1 pixels ``[3, S, S]`` at the network's input size.
        true_class: The image's class index, or None when unknown.
        target_class: The class index to reach.
    """

    name: str
    pixels: torch.Tensor
    true_class: Optional[int]
    target_class: int


class FoolingImage(ImageOptimization):
    """Fooling images: change each image a little until the network sees the target class.

    Images and their true classes come from ``datamodules.labeled_images.LabeledImageData``.
    Every trainer step checks each image (its 8-bit version, as the PNG will store it) and steps
    those not yet fooled with the attack's own optimizer; a fooled image gets no gradient and
    stops changing, and the run stops when all are fooled (or at ``trainer.max_steps``), as the
    attack's stopping rule says (Carlini-Wagner goes on to the last step).
    ``ImageWriter`` writes ``<job>.png`` (the fooled image at the network's input size) and
    ``<job>_sheet.png`` (original | fooled | difference x10); the module brings its own
    ``callbacks.FoolingReport`` (:meth:`configure_callbacks`), which writes
    ``fooling_results.csv`` from :meth:`fooling_records`: each job judged on its 8-bit picture,
    the very pixels of its PNG.

    Args:
        target: The target class (index or ImageNet name) for every image, or a list: one per
            image, or with ``all_pairs`` the classes each image is pushed towards.
        all_pairs: Make one job per image and target class in ``target``; pairs whose target
            is the image's true class are skipped.
        method: The attack, an object with its own options (a config names it by
            ``class_path``: :class:`~lightning_modules.fooling.SeedAttack` (the homework's step
            ``lr * g / ||g||_2``), :class:`~lightning_modules.fooling.PGD` or
            :class:`~lightning_modules.fooling.CarliniWagner` (the smallest change, no
            budget)), or its shorthand ``"seed"``, ``"pgd"`` or ``"cw"`` with the attack's
            options as the flat options below. A flat option of another attack is refused.
            (A ``str``, not a ``Literal``: the registry says an unknown name in one sentence.)
        lr: ``method: seed``: its step length, in normalized units (None: the attack's default,
            as for every flat option).
        norm: ``method: pgd``: the budget's norm, ``"linf"`` or ``"l2"``.
        eps: ``method: pgd``: the budget in 0-1 pixel units (2/255 is 0.00784).
        step_size: ``method: pgd``: the step in 0-1 pixel units (None: ``eps / 4``).
        loss: ``method: pgd``: what it raises, ``"ce"`` or ``"margin"``.
        confidence: The least p(target) an image (its 8-bit version) must reach to count as
            fooled and stop; 0: the target only has to win.
        robust_to: Transformations the image must survive (``jpeg75``, ``resize0.5-1.5``,
            ``blur1``, ``shift4``, ...): expectation over transformations, see
            :class:`~lightning_modules.fooling.functional.FoolingAttack`.
        eot_samples: Random transformations averaged per step with ``robust_to``.
        checks: What the report tries on each saved PNG (``fooling_results.csv`` gets a
            ``success_<check>`` column each), named like ``robust_to``: by default ``jpeg90``,
            ``jpeg75`` (Pillow's encoder), ``resize0.75`` (down and back up), ``blur1``
            (Gaussian, sigma 1 pixel); any ``jpeg<q>``, ``resize<s>``, ``blur<sigma>`` too.
        ensemble: More backbones attacked together with ``backbone`` (the mean of their
            logits must reach the target): images that fool several networks transfer better.
        momentum: ``method: pgd``: MI-FGSM's momentum (1.0 is the paper's; 0: none).
        diversity: The probability of input diversity (DI) at each step (0.5 is the paper's).
        c: ``method: cw``: the logit term's weight against ``||δ||₂²``.
        kappa: ``method: cw``: the logit margin over the best other class to aim for.
        cw_lr: ``method: cw``: Adam's learning rate on ``w`` (``x = (tanh w + 1) / 2``).
        judges: Other backbones that judge each saved PNG (``success_on_<judge>``): whether
            the image fools a network it was not made on. An attacked backbone (``backbone``
            or one in ``ensemble``) is marked ``_not_held_out``.
        **kwargs: ``backbone``, ``weights``, ``channels_last`` and ``fast`` of
            :class:`~lightning_modules.image_optimization.ImageOptimization`.
    """

    data_name = ("a LabeledImageData datamodule "
                 "(data: class_path: datamodules.labeled_images.LabeledImageData)")

    def __init__(
        self,
        target: Union[ClassSpec, list[ClassSpec]] = 6,
        all_pairs: bool = False,
        method: Union[Attack, str] = "seed",
        lr: Optional[float] = None,
        norm: Optional[Norm] = None,
        eps: Optional[float] = None,
        step_size: Optional[float] = None,
        loss: Optional[Loss] = None,
        confidence: float = 0.0,
        robust_to: Sequence[str] = (),
        eot_samples: int = 4,
        ensemble: Sequence[str] = (),
        momentum: Optional[float] = None,
        diversity: float = 0.0,
        c: Optional[float] = None,
        kappa: Optional[float] = None,
        cw_lr: Optional[float] = None,
        checks: Sequence[str] = DEFAULT_CHECKS,
        judges: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        attack = method
        if isinstance(method, Attack):
            # Hyperparameters hold plain values: checkpoints are read with weights_only, which
            # unpickles no objects (a mapping names the attack as a config does).
            method = method.as_config()
        self.save_hyperparameters()
        self.attack = FoolingAttack(attack, lr=lr, norm=norm, eps=eps, step_size=step_size,
                                    loss=loss, mean=self.backbone.mean, std=self.backbone.std,
                                    quantize=True, confidence=confidence,
                                    robust_to=tuple(robust_to), eot_samples=eot_samples,
                                    momentum=momentum, diversity=diversity, c=c,
                                    kappa=kappa, cw_lr=cw_lr,
                                    seed=torch.initial_seed() % 2**63)
        unknown = [name for name in (*ensemble, *judges) if name not in available_backbones()]
        if unknown:
            kind = "ensemble" if unknown[0] in ensemble else "judge"
            raise UserInputError(f"Unknown {kind} backbone {unknown[0]!r} (known: "
                                 f"{', '.join(available_backbones())}).")
        self.ensemble_names = [n for n in dict.fromkeys(ensemble) if n != self.backbone.name]
        # Not a submodule: frozen, rebuilt from the names, and kept out of the checkpoints.
        self._attacked: list[Any] = []
        self.checks = check_names(checks)
        self.judge_names = list(dict.fromkeys(judges))
        self._judges = Judges(self.judge_names)
        self.targets = list(target) if isinstance(target, (list, tuple)) else [target]
        if not self.targets:
            raise UserInputError("target must name at least one class.")
        self.target_classes = [self.backbone.class_index(t) for t in self.targets]
        self.all_pairs = all_pairs
        self.progress: Optional[FoolingProgress] = None
        self._restored_progress: Optional[dict[str, torch.Tensor]] = None
        self._target_y: Optional[torch.Tensor] = None
        self._origin: Optional[torch.Tensor] = None

    # ----------------------------------------------------------------- jobs and images
    def make_jobs(self, items: Sequence[Any]) -> list[FoolingJob]:
        """Pair images with target classes.

        Args:
            items: ``LabeledImage``s (``name``, ``pixels``, ``label``).

        Returns:
            One job per image (or per image and target, with ``all_pairs``).
        """
        if self.all_pairs:
            targets = list(dict.fromkeys(self.target_classes))  # unique, in order
            pairs = [(item, t) for item in items for t in targets]
        elif len(self.target_classes) in (1, len(items)):
            per_image = self.target_classes * (len(items) if len(self.target_classes) == 1 else 1)
            pairs = list(zip(items, per_image))
        else:
            raise UserInputError(
                f"target lists {len(self.target_classes)} classes for {len(items)} images; give "
                "one class, one per image, or set all_pairs to try every class on every image."
            )
        jobs = []
        for item, target in pairs:
            true_class = None if item.label is None else self.backbone.class_index(item.label)
            name = self.backbone.categories[target]
            if target == true_class:
                if self.all_pairs:
                    rank_zero_warn(f"Skipping '{item.name}' -> '{name}': it is the true class.")
                    continue
                raise UserInputError(f"The target class {target} ({name}) is the true class of "
                                     f"image '{item.name}'; choose another target.")
            jobs.append(FoolingJob(f"{item.name}_to_{class_slug(name)}", item.pixels, true_class,
                                   target))
        if not jobs:
            raise UserInputError("No image is left to fool: every target is the image's own class.")
        return jobs

    def create_images(self, jobs: list[FoolingJob]) -> list[torch.Tensor]:
        return [self.backbone.normalize(torch.stack([job.pixels for job in jobs]))]

    def prepare_targets(self) -> None:
        self._target_y = torch.tensor([job.target_class for job in self.jobs], device=self.device)
        # A resumed run goes on with the progress it left off with (see on_load_checkpoint).
        restored, self._restored_progress = self._restored_progress, None
        self.progress = (FoolingProgress(**{k: None if v is None else v.to(self.device)
                                            for k, v in restored.items()})
                         if restored else FoolingProgress.start(len(self.jobs), self.device))
        self._origin = self.backbone.normalize(
            torch.stack([job.pixels for job in self.jobs]).to(self.device))

    # ----------------------------------------------------------------- optimization
    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = self.attack.optimizer(list(self.images))
        # The budget's centre is the photo itself, whatever the image holds now (a second fit).
        image = self.images[0]
        optimizer.state[image]["origin"] = self.backbone.normalize(
            torch.stack([job.pixels for job in self.jobs]).to(image)).contiguous(
                memory_format=torch.channels_last if self.channels_last else
                torch.contiguous_format)
        return optimizer

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        image, progress = self.images[0], self.progress
        model = self.attacked()
        rows = self.attack.check(image.detach(), self._target_y, model, progress,
                                 self._origin.to(image))
        if rows.numel():
            loss = self.attack.attack_loss(image[rows], self._target_y[rows], model)
            progress.steps[rows] += 1
        else:
            loss = image.sum() * 0.0  # every image is fooled: no gradient, nothing moves
        self.log_job_mean("fooled", progress.fooled.float(), prog_bar=True)
        self.log_job_mean("p_target", progress.p_target, prog_bar=True)
        # Cross-entropy towards the target of the 8-bit images: LossHistory draws it.
        self.record_losses({"loss": -progress.p_target.clamp_min(1e-12).log().sum()})
        return loss

    def chunk_finished(self) -> bool:
        """The attack's stopping rule: by default every image is fooled, and the chunk (or the
        run) ends early (Carlini-Wagner goes on shrinking the changes to the last step)."""
        return self.progress is not None and self.attack.method.finished(self.progress)

    def result_pixels(self, index: int) -> torch.Tensor:
        """Job ``index``'s image, or the one its attack kept (Carlini-Wagner: its smallest
        change that fooled)."""
        kept = (None if self.progress is None
                else self.attack.method.kept_image(self.progress, index))
        if kept is not None:
            return self.backbone.denormalize(kept[None].float())[0].clamp(0, 1).cpu()
        return super().result_pixels(index)

    def configure_callbacks(self) -> list[Any]:
        """The technique's own report: ``fooling_results.csv`` (it replaces a
        ``FoolingReport`` the Trainer has already)."""
        from callbacks.fooling_report import FoolingReport  # callbacks import this package

        return [FoolingReport()]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["fooling"] = {"progress": vars(self.progress),
                                 "generator": self.attack.generator.get_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "finished" in checkpoint.get("fooling", {}):
            raise UserInputError("This checkpoint was written by an earlier version of "
                                 "FoolingImage, which kept its results in the module; start "
                                 "the run again.")
        super().on_load_checkpoint(checkpoint)
        self._restored_progress = checkpoint["fooling"]["progress"]
        if "generator" in checkpoint["fooling"]:
            self.attack.generator.set_state(checkpoint["fooling"]["generator"])

    # ----------------------------------------------------------------- results
    @torch.no_grad()
    def _classify(self, pixels: torch.Tensor, backbone: Any = None) -> torch.Tensor:
        """Class probabilities ``[N, C]`` of 0-1 pixels ``[N, 3, H, W]``, on the CPU, by this
        module's backbone or ``backbone``."""
        backbone = self.backbone if backbone is None else backbone
        inputs = backbone.normalize(pixels.to(self.device))
        return backbone(inputs).float().softmax(dim=1).cpu()

    def fooled_pixels(self, index: int) -> torch.Tensor:
        """Job ``index``'s fooled image as its 8-bit PNG will hold it, 0-1 ``[3, H, W]``: the
        same values as ``ImageWriter``'s ``<job>.png`` read back."""
        return quantize_pixels(self.result_pixels(index))

    def fooling_records(self) -> list[dict[str, Any]]:
        """This process's current jobs (the chunk's), judged on their 8-bit pictures: one
        :meth:`score` row each, in the slots' order (``FoolingReport`` writes them)."""
        return self.score(torch.stack([self.fooled_pixels(index)
                                       for index in range(len(self.slots))]))

    def sheet_panels(self, index: int) -> list[tuple[str, torch.Tensor]]:
        job = self.jobs[index]
        fooled = self.fooled_pixels(index)
        before, after = self._classify(torch.stack([job.pixels, fooled]))
        predicted = int(before.argmax())
        categories = self.backbone.categories
        panels = [
            (f"{short_title(categories[predicted], 18)} p={before[predicted]:.2f}", job.pixels),
            (f"{short_title(categories[job.target_class], 18)} p={after[job.target_class]:.2f}",
             fooled),
            ("difference x10", ((fooled - job.pixels) * 10 + 0.5).clamp(0, 1)),
        ]
        # What each check leaves of the picture, and whether that still fools.
        for name in self.checks:
            changed = check(name)(fooled)
            probabilities = self._classify(changed[None])
            still = bool(fools(probabilities, torch.tensor([job.target_class]),
                               self.attack.confidence)[0])
            panels.append((f"{name}: {'fools' if still else 'fails'} "
                           f"p={probabilities[0, job.target_class]:.2f}", changed))
        # Whether each judge, a network the picture was (mostly) not made on, sees the target.
        for name, judge in self.judges().items():
            probabilities = self._classify(fooled[None], judge)
            still = bool(fools(probabilities, torch.tensor([job.target_class]),
                               self.attack.confidence)[0])
            # Backbone names have no spaces for short_title to cut at: cut them plainly.
            panels.append((f"{name[:18]}: {'fools' if still else 'fails'} "
                           f"p={probabilities[0, job.target_class]:.2f}", fooled))
        return panels

    @torch.no_grad()
    def score(self, saved: torch.Tensor) -> list[dict[str, Any]]:
        """Judge this process's current jobs on their saved pictures.

        Args:
            saved: The pictures as their PNGs hold them (:meth:`fooled_pixels`), 0-1
                ``[N, 3, S, S]``, in the jobs' order.

        Returns:
            One row per job with the columns of ``fooling_results.csv``.
        """
        from torchmetrics.functional.image import (  # imported here: slow, needed only here
            peak_signal_noise_ratio,
            structural_similarity_index_measure,
        )

        originals = torch.stack([job.pixels for job in self.jobs])
        delta = (saved - originals).flatten(1)
        def classify(pixels: torch.Tensor) -> torch.Tensor:
            return self._classify(pixels, self.attacked())  # what the attack had to fool
        probabilities = classify(saved)
        ssim = structural_similarity_index_measure(saved, originals, data_range=1.0,
                                                   reduction="none")
        psnr = peak_signal_noise_ratio(saved, originals, data_range=1.0, reduction="none",
                                       dim=(1, 2, 3))
        categories = self.backbone.categories
        target = torch.tensor([job.target_class for job in self.jobs])
        success = fools(probabilities, target, self.attack.confidence)
        after = robustness(saved, target, classify, self.attack.confidence, self.checks)
        for name, judge in self.judges().items():
            attacked = name == self.backbone.name or name in self.ensemble_names
            column = f"{name}_not_held_out" if attacked else name
            after[f"on_{column}"] = fools(self._classify(saved, judge), target,
                                          self.attack.confidence)
        rows = []
        for i, job in enumerate(self.jobs):
            predicted = int(probabilities[i].argmax())
            rows.append({
                "name": job.name,
                "true_class": "" if job.true_class is None else categories[job.true_class],
                "target_class": categories[job.target_class],
                "success": bool(success[i]),
                "steps": int(self.progress.steps[i]) if self.progress is not None else 0,
                "l2": float(delta[i].norm()),
                "linf": float(delta[i].abs().max()),
                "ssim": float(ssim[i]),
                "psnr": float(psnr[i]),
                "p_target": float(probabilities[i, job.target_class]),
                "predicted_class": categories[predicted],
                **{f"success_{name}": bool(passed[i]) for name, passed in after.items()},
            })
        return rows

    def attacked(self) -> Any:
        """What the attack fools: the backbone, or the ensemble of it and ``ensemble``."""
        if not self.ensemble_names:
            return self.backbone
        if not self._attacked:
            others = [load_backbone(name, "default").to(self.device).eval().requires_grad_(False)
                      for name in self.ensemble_names]
            self._attacked = [Ensemble(self.backbone, others)]
        return self._attacked[0]

    def judges(self) -> dict[str, Any]:
        """The judge backbones, built on first use, on this module's device, frozen, and kept
        out of the checkpoints (:class:`~lightning_modules.image_optimization.judges.Judges`);
        a judge that is also the backbone or an ensemble member is that network."""
        members = {self.backbone.name: self.backbone}
        if self.ensemble_names:
            members.update(zip(self.ensemble_names, self.attacked().others))
        return {name: self._judges.get(name, self.backbone, build=lambda n: members.get(n)
                                       or load_backbone(n, "default"))
                for name in self.judge_names}
