"""Fooling images: small changes that make a classifier see a class of our choosing.

The attacks are objects (:mod:`lightning_modules.fooling.attacks`), each with its own options,
step, stopping rule and result:

* :class:`SeedAttack` (``"seed"``), the CS231n homework's method: gradient ascent on the target's
  raw score, each step ``lr * g / ||g||_2`` in the network's normalized input space
  (:func:`make_fooling_image`);
* :class:`PGD` (``"pgd"``), targeted projected gradient descent: signed (L∞) or length-normalized
  (L2) steps of ``step_size`` that raise the target's log-probability (``loss="ce"``) or its
  margin over the best other class (``loss="margin"``); the change ``δ`` is projected back into
  the ``eps`` ball and the image into [0, 1], both in 0-1 pixel units (:func:`pgd_attack`);
* :class:`CarliniWagner` (``"cw"``): the smallest change that fools, no budget.

:class:`FoolingAttack` is what they share: it checks which images are fooled
(:meth:`FoolingAttack.check`), gives the loss of the others (:meth:`FoolingAttack.attack_loss`,
with expectation over transformations and input diversity around the attack's own loss) and the
attack's optimizer (:meth:`FoolingAttack.optimizer`). The functions run it in a loop; the
LightningModule (:class:`~lightning_modules.fooling.module.FoolingImage`) runs it once per trainer
step under Lightning's own optimization. Each image stops changing once it is fooled (its gradient
is zero, and an optimizer leaves a row with a zero gradient as it is). A PNG stores 8-bit pixels,
and rounding can undo an attack, so with ``quantize=True`` (always, in the module) an image counts
as fooled only when its 8-bit version is classified as the target: the saved file is what was
checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Sequence, Union

import torch

from lightning_modules.backbones.normalization import denormalize, normalize
from lightning_modules.errors import UserInputError
from lightning_modules.fooling.attacks import (
    Attack,
    Loss,
    PGD,
    SeedAttack,
    resolve_attack,
)
from lightning_modules.fooling.robustness import diverse_input, fools, transformation
from lightning_modules.fooling.steps import (  # noqa: F401 - re-exported: the seed's API
    CarliniWagnerStep,
    Norm,
    ProjectedStep,
    SeedStep,
    project,
    quantize_pixels,
    target_objective,
)

#: The attacks' shorthands (keys of ``lightning_modules.fooling.attacks.ATTACKS``).
Method = Literal["seed", "pgd", "cw"]

RESULT_COLUMNS = ("name", "true_class", "target_class", "success", "steps", "l2", "linf", "ssim",
                  "psnr", "p_target", "predicted_class")


def _as_targets(target_y: int | Sequence[int] | torch.Tensor, count: int,
                device: torch.device) -> torch.Tensor:
    targets = torch.as_tensor(target_y, dtype=torch.long, device=device).flatten()
    return targets.expand(count).clone() if targets.numel() == 1 else targets


# --------------------------------------------------------------------------- the attack
@dataclass
class FoolingProgress:
    """Where each image of a batch stands.

    Attributes:
        fooled: ``[N]`` bool: the image (8-bit, when quantizing) was classified as the target at
            its last check; it no longer changes.
        steps: ``[N]`` long: updates applied to the image.
        p_target: ``[N]`` float: the target's probability at the last check.
        best_l2: ``[N]`` float: Carlini-Wagner only, the ``||δ||₂`` (0-1 pixels, 8-bit) of the
            smallest change that fooled so far (inf: none yet).
        best: Carlini-Wagner only: those images, normalized, ``[N, 3, H, W]`` (empty before).
    """

    fooled: torch.Tensor
    steps: torch.Tensor
    p_target: torch.Tensor
    best_l2: Optional[torch.Tensor] = None
    best: Optional[torch.Tensor] = None

    @classmethod
    def start(cls, count: int, device: torch.device | str = "cpu") -> "FoolingProgress":
        """Progress of ``count`` images that have not been checked yet."""
        return cls(torch.zeros(count, dtype=torch.bool, device=device),
                   torch.zeros(count, dtype=torch.long, device=device),
                   torch.zeros(count, device=device),
                   torch.full((count,), float("inf"), device=device))


@dataclass
class FoolingAttack:
    """What every attack shares: which images count as fooled, the loss with transformations,
    and the loop that steps until every image is fooled.

    Images are in the network's normalized input space, as in the homework; ``mean`` and ``std``
    (per channel, 0-1 pixel units) say how pixels were normalized. The attack itself (its loss,
    optimizer, stopping rule and result) is ``method``, an
    :class:`~lightning_modules.fooling.attacks.Attack`.

    Args:
        method: The attack: an ``Attack`` (``SeedAttack(lr=1.0)``, ``PGD(eps=0.03)``,
            ``CarliniWagner(c=10)``), or its shorthand ``"seed"``, ``"pgd"`` or ``"cw"`` with its
            options as the flat arguments below (see
            :func:`~lightning_modules.fooling.attacks.resolve_attack`). After construction,
            always the ``Attack``.
        lr: ``"seed"``: its step length, in normalized units (None: the attack's default).
        norm: ``"pgd"``: the budget's norm, ``"linf"`` or ``"l2"``.
        eps: ``"pgd"``: the budget, the largest ``||δ||`` in 0-1 pixel units.
        step_size: ``"pgd"``: the step in 0-1 pixel units (None: ``eps / 4``).
        loss: ``"pgd"``: what it raises, ``"ce"`` or ``"margin"``.
        mean: Per-channel mean of the normalization; needed by PGD, Carlini-Wagner and
            ``quantize``. With the seed's step it also keeps the image within valid pixels.
        std: Per-channel standard deviation of the normalization.
        quantize: Count an image as fooled only when its 8-bit version (as saved to a PNG) is
            classified as the target.
        confidence: The least p(target) that counts as fooled (0: the target only has to win).
            An image stops at its first success, so without it a fooled image sits just past
            the decision boundary, where JPEG or a resize takes it back.
        robust_to: Transformations to survive (names as in
            :func:`~lightning_modules.fooling.robustness.transformation`, e.g. ``jpeg75``,
            ``resize0.5-1.5``, ``blur1``, ``shift4``): each step's loss is the mean over
            ``eot_samples`` random draws among them and the identity (expectation over
            transformations, Athalye et al. 2018), and an image counts as fooled only when it
            also fools after each one's check (the real JPEG, the smallest scale, the blur).
        eot_samples: Draws per step with ``robust_to``.
        momentum: ``"pgd"``: MI-FGSM's momentum (1.0 in Dong et al. 2018; 0: none).
        diversity: The probability of input diversity (DI, Xie et al. 2019; 0.5 in the paper)
            at each step: see :func:`~lightning_modules.fooling.robustness.diverse_input`.
        c: ``"cw"``: the weight of the logit term against ``||δ||₂²``.
        kappa: ``"cw"``: the logit margin over the best other class to aim for.
        cw_lr: ``"cw"``: Adam's learning rate (0.01 in the paper).
        seed: Seed of the random draws (transformations, diversity).
    """

    method: Union[Method, Attack] = "seed"
    lr: Optional[float] = None
    norm: Optional[Norm] = None
    eps: Optional[float] = None
    step_size: Optional[float] = None
    loss: Optional[Loss] = None
    mean: Any = None
    std: Any = None
    quantize: bool = False
    confidence: float = 0.0
    robust_to: Sequence[str] = ()
    eot_samples: int = 4
    momentum: Optional[float] = None
    diversity: float = 0.0
    c: Optional[float] = None
    kappa: Optional[float] = None
    cw_lr: Optional[float] = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.method = resolve_attack(self.method, lr=self.lr, norm=self.norm, eps=self.eps,
                                     step_size=self.step_size, loss=self.loss,
                                     momentum=self.momentum, c=self.c, kappa=self.kappa,
                                     cw_lr=self.cw_lr)
        if not 0 <= self.confidence < 1:  # also catches NaN
            raise UserInputError(f"confidence is the p(target) to reach, from 0 up to (not "
                                 f"including) 1, got {self.confidence:g}.")
        self.transformations = [transformation(name) for name in self.robust_to]
        if not (isinstance(self.eot_samples, int) and 1 <= self.eot_samples <= 1000):
            raise UserInputError(f"eot_samples must be a whole number from 1 to 1000, got "
                                 f"{self.eot_samples}.")
        if not 0 <= self.diversity <= 1:
            raise UserInputError(f"diversity is a probability, from 0 to 1, got "
                                 f"{self.diversity:g}.")
        self.generator = torch.Generator().manual_seed(self.seed)
        if (self.mean is None) != (self.std is None):
            raise UserInputError("Give both mean and std of the normalization, or neither.")
        if self.mean is None:
            needs = (self.method.title if self.method.needs_normalization
                     else "quantize" if self.quantize else "robust_to" if self.robust_to
                     else "diversity" if self.diversity else None)
            if needs is not None:
                raise UserInputError(f"{needs} needs the mean and std of the normalization, to "
                                     "work in 0-1 pixel units.")

    # ----------------------------------------------------------------- pixel space
    def to_pixels(self, inputs: torch.Tensor) -> torch.Tensor:
        """Normalized inputs to 0-1 pixels (not clamped)."""
        return denormalize(inputs, self.mean, self.std)

    def to_inputs(self, pixels: torch.Tensor) -> torch.Tensor:
        """0-1 pixels to normalized inputs."""
        return normalize(pixels, self.mean, self.std)

    def judged(self, images: torch.Tensor) -> torch.Tensor:
        """The images as success is judged: their 8-bit versions when quantizing."""
        return self.to_inputs(quantize_pixels(self.to_pixels(images))) if self.quantize else images

    # ----------------------------------------------------------------- the parts of a step
    @torch.no_grad()
    def check(self, images: torch.Tensor, target_y: torch.Tensor,
              model: Callable[[torch.Tensor], torch.Tensor],
              progress: FoolingProgress, origin: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Check the images as the attack does; returns the rows to step on.

        Most attacks check and step only the images not fooled yet; Carlini-Wagner goes on
        after a first success, keeping (in ``progress.best``) each image's smallest change that
        fooled, which needs ``origin`` (see :meth:`Attack.check`).

        Args:
            images: Current normalized images ``[N, 3, H, W]``.
            target_y: ``[N]`` target classes.
            model: Maps normalized images to logits.
            progress: Updated in place (``fooled``, ``p_target``, ``best``).
            origin: The unchanged images.
        """
        return self.method.check(self, images, target_y, model, progress, origin)

    @torch.no_grad()
    def check_unfooled(self, images: torch.Tensor, target_y: torch.Tensor,
                       model: Callable[[torch.Tensor], torch.Tensor],
                       progress: FoolingProgress) -> torch.Tensor:
        """Check the images not fooled yet (their 8-bit versions when quantizing, and what
        each ``robust_to`` check leaves of them); returns the rows still not fooled.

        Args:
            images: Current normalized images ``[N, 3, H, W]``.
            target_y: ``[N]`` target classes.
            model: Maps normalized images to logits.
            progress: Updated in place (``fooled``, ``p_target``).
        """
        rows = (~progress.fooled).nonzero().squeeze(1)
        if rows.numel() == 0:
            return rows
        probabilities = model(self.judged(images[rows])).float().softmax(dim=1)  # bf16 autocast
        progress.p_target[rows] = probabilities.gather(1, target_y[rows, None]).squeeze(1)
        fooled = fools(probabilities, target_y[rows], self.confidence)
        checks = [t.check for t in self.transformations if t.check is not None]
        if checks and fooled.any():
            # Fooled only if what JPEG, resizing or blur leave of the saved picture fools too.
            pixels = quantize_pixels(self.to_pixels(images[rows]))
            for check in checks:
                changed = torch.stack([check(picture) for picture in pixels]).to(images)
                fooled &= fools(model(self.to_inputs(changed)).float().softmax(dim=1),
                                target_y[rows], self.confidence)
        progress.fooled[rows] = fooled
        return rows[~fooled]

    def attack_loss(self, images: torch.Tensor, target_y: torch.Tensor,
                    model: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """What the optimizer descends: minus the objective, summed over the images (with
        ``robust_to``: its mean over random transformations)."""
        if not self.transformations and not self.diversity:
            return self._loss(model(images), target_y)
        pixels = self.to_pixels(images)
        total = images.new_zeros(())
        draws = self.eot_samples if self.transformations else 1
        for _ in range(draws):
            # The identity is one of the draws: the saved picture itself must fool as well.
            choice = int(torch.randint(len(self.transformations) + 1, (),
                                       generator=self.generator))
            changed = (pixels if choice == len(self.transformations)
                       else self.transformations[choice].sample(pixels, self.generator))
            changed = diverse_input(changed, self.diversity, self.generator)
            total = total + self._loss(model(self.to_inputs(changed)), target_y)
        return total / draws

    def _loss(self, logits: torch.Tensor, target_y: torch.Tensor) -> torch.Tensor:
        """The attack's loss of these logits, summed over the images."""
        return self.method.logit_loss(logits, target_y)

    def optimizer(self, params: Any) -> torch.optim.Optimizer:
        """The optimizer that takes this attack's step on ``params`` (normalized images)."""
        return self.method.optimizer(params, self.mean, self.std)

    # ----------------------------------------------------------------- whole steps
    def update(self, images: torch.Tensor, origin: torch.Tensor, target_y: torch.Tensor,
               model: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """One step of the attack on every image given, fooled or not.

        Args:
            images: Current normalized images ``[N, 3, H, W]``.
            origin: The unchanged images (the centre of the PGD budget).
            target_y: ``[N]`` target classes.
            model: Maps normalized images to logits.

        Returns:
            The next images.
        """
        moving = images.detach().clone().requires_grad_(True)
        optimizer = self.optimizer([moving])
        optimizer.state[moving]["origin"] = origin.detach()
        with torch.enable_grad():
            self.attack_loss(moving, target_y, model).backward()
        optimizer.step()
        return moving.detach()

    @torch.no_grad()
    def advance(self, images: torch.Tensor, origin: torch.Tensor, target_y: torch.Tensor,
                model: Callable[[torch.Tensor], torch.Tensor],
                progress: FoolingProgress) -> torch.Tensor:
        """Check which images are fooled, then step the others; fooled images never change.

        Args:
            images: Current normalized images ``[N, 3, H, W]``.
            origin: The unchanged images.
            target_y: ``[N]`` target classes.
            model: Maps normalized images to logits.
            progress: Updated in place.

        Returns:
            The next images (a new tensor).
        """
        following = images.detach().clone()
        rows = self.check(images, target_y, model, progress, origin)
        if rows.numel():
            following[rows] = self.update(images[rows], origin[rows], target_y[rows], model)
            progress.steps[rows] += 1
        return following

    def run(self, images: torch.Tensor, target_y: int | Sequence[int] | torch.Tensor,
            model: Callable[[torch.Tensor], torch.Tensor],
            max_iter: int = 100) -> tuple[torch.Tensor, FoolingProgress]:
        """Check and step until every image is fooled or ``max_iter`` checks were made.

        One optimizer takes every step, so what it carries between steps (MI-FGSM's momentum,
        Carlini-Wagner's ``w`` and Adam moments) carries; :meth:`advance` is a single step.

        Args:
            images: Normalized images ``[N, 3, H, W]``.
            target_y: One target class for all images, or one per image.
            model: Maps normalized images to logits.
            max_iter: The most checks (and so steps) per image.

        Returns:
            The fooled images (Carlini-Wagner: each one's smallest fooling change) and the
            progress of each.
        """
        origin = images.detach()
        targets = _as_targets(target_y, len(images), images.device)
        progress = FoolingProgress.start(len(images), images.device)
        moving = origin.clone().requires_grad_(True)
        optimizer = self.optimizer([moving])
        optimizer.state[moving]["origin"] = origin
        for _ in range(max_iter):
            rows = self.check(moving.detach(), targets, model, progress, origin)
            if rows.numel() == 0:
                break
            moving.grad = None
            with torch.enable_grad():
                self.attack_loss(moving[rows], targets[rows], model).backward()
            optimizer.step()  # rows without a gradient (fooled) stay exactly as they are
            progress.steps[rows] += 1
        images = self.method.conclude(self, moving.detach(), targets, model, progress, origin)
        return images, progress


class Ensemble(torch.nn.Module):
    """Several classifiers as one, for attacks that transfer: the mean of their logits on the
    same pixels (Liu et al. 2017), each network given the pixels in its own normalization.

    Args:
        primary: The network whose normalized inputs this ensemble takes.
        others: The other networks (same classes).
    """

    def __init__(self, primary: Any, others: Sequence[Any]) -> None:
        super().__init__()
        for other in others:
            if len(other.categories) != len(primary.categories):
                raise UserInputError(
                    f"An ensemble needs networks with the same classes: '{other.name}' has "
                    f"{len(other.categories)}, '{primary.name}' {len(primary.categories)}.")
        self.primary = primary
        self.others = torch.nn.ModuleList(others)
        self.name = "+".join([primary.name, *(other.name for other in others)])
        self.categories = primary.categories
        # Inputs are the primary network's.
        self.normalize, self.denormalize = primary.normalize, primary.denormalize

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        pixels = self.primary.denormalize(inputs)
        logits = [self.primary(inputs).float()]
        logits += [other(other.normalize(pixels)).float() for other in self.others]
        return torch.stack(logits).mean(dim=0)


# --------------------------------------------------------------------------- the seed's functions
def make_fooling_image(
    X: torch.Tensor,
    target_y: int | Sequence[int] | torch.Tensor,
    model: Callable[[torch.Tensor], torch.Tensor],
    lr: float = 1.0,
    max_iter: int = 100,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> torch.Tensor:
    """The homework's fooling image: ascend the target's raw score until the model predicts it.

    Each step is ``X += lr * g / ||g||_2`` with ``g`` the gradient of the target's unnormalized
    score, norms taken per image. Every image of the batch stops once it is classified as its
    target (or after ``max_iter`` checks).

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        target_y: One target class for all images, or one per image.
        model: Maps normalized images to logits.
        lr: Step length in normalized units.
        max_iter: The most steps.
        mean: Per-channel mean of the normalization (0-1 pixel units). With ``std``, keeps the
            image within valid pixels and counts it as fooled only when its 8-bit version is
            classified as the target, as a saved PNG would be. None: the homework exactly.
        std: Per-channel standard deviation of the normalization.

    Returns:
        The fooled images ``[N, 3, H, W]``, normalized.
    """
    attack = FoolingAttack(SeedAttack(lr), mean=mean, std=std, quantize=mean is not None)
    return attack.run(X, target_y, model, max_iter)[0]


def pgd_attack(
    X: torch.Tensor,
    target_y: int | Sequence[int] | torch.Tensor,
    model: Callable[[torch.Tensor], torch.Tensor],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    eps: float = 2 / 255,
    step_size: Optional[float] = None,
    norm: Norm = "linf",
    loss: Loss = "ce",
    max_iter: int = 100,
    quantize: bool = True,
) -> torch.Tensor:
    """Targeted projected gradient descent with an L∞ or L2 budget in 0-1 pixel units.

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        target_y: One target class for all images, or one per image.
        model: Maps normalized images to logits.
        mean: Per-channel mean of the normalization (0-1 pixel units).
        std: Per-channel standard deviation of the normalization.
        eps: The budget: the largest ``||δ||`` in 0-1 pixel units.
        step_size: Step in 0-1 pixel units (None: ``eps / 4``).
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"`` (raise log p(target)) or ``"margin"`` (raise the target's lead).
        max_iter: The most steps.
        quantize: Count an image as fooled only when its 8-bit version is.

    Returns:
        The fooled images ``[N, 3, H, W]``, normalized.
    """
    attack = FoolingAttack(PGD(eps, step_size, norm, loss), mean=mean, std=std,
                           quantize=quantize)
    return attack.run(X, target_y, model, max_iter)[0]


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Aggregate figures of :meth:`FoolingImage.score` rows.

    Args:
        rows: Per-job results.

    Returns:
        Success rate (read back, and ``success_<check>_rate`` after each check or judge),
        mean and largest steps, mean and largest ``||δ||₂`` and ``||δ||∞``, mean
        SSIM and PSNR.
    """
    def column(key: str) -> list[float]:
        return [float(row[key]) for row in rows]

    finite_psnr = [v for v in column("psnr") if math.isfinite(v)]
    after = {f"{key}_rate": sum(column(key)) / len(rows) for key in rows[0]
             if key.startswith("success_")}
    return {
        "success_rate": sum(column("success")) / len(rows),
        **after,
        "steps_mean": sum(column("steps")) / len(rows),
        "steps_max": max(column("steps")),
        "l2_mean": sum(column("l2")) / len(rows),
        "l2_max": max(column("l2")),
        "linf_mean": sum(column("linf")) / len(rows),
        "linf_max": max(column("linf")),
        "ssim_mean": sum(column("ssim")) / len(rows),
        "psnr_mean": sum(finite_psnr) / len(finite_psnr) if finite_psnr else float("inf"),
    }
