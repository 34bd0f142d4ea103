"""Randomisation metrics: does the map depend on the network's parameters and on the class?

- **Model parameter randomisation** (``randomisation``; Adebayo et al. 2018, "Sanity Checks for
  Saliency Maps", cascading; Quantus' ``MPRT``): re-initialise the network's layers from the top
  down, cumulatively, explain again after each layer, and compare with the map of the trained
  network. A map that stays the same (an edge detector) explains the image, not the network:
  lower similarity is better.
- **Random logit** (``random_logit``; Sixt, Granz and Landgraf 2020, "When Explanations Lie"):
  explain a random other class and compare with the target's map. A map that does not change
  with the class does not explain the decision: lower similarity is better.

Similarities (option ``similarity``): ``"spearman"``, the rank correlation of the absolute maps
(ties share their mean rank, as ``scipy.stats.spearmanr``), or ``"ssim"``, the structural
similarity of scikit-image's defaults (uniform 7 x 7 window, sample covariance, K1 0.01,
K2 0.03, the mean over the windows inside the map) with the data range of the two maps together,
as Quantus' ``ssim`` (:func:`uniform_ssim`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from lightning_modules.errors import UserInputError, check_choice
from lightning_modules.saliency.evaluation import (
    GRANULARITIES,
    cascading_models,
    check_positive_integer,
    spearman,
)
from lightning_modules.saliency.metrics.base import MetricInputs, SaliencyMetric

SIMILARITIES = ("spearman", "ssim")
REDUCTIONS = ("mean", "last")


def uniform_ssim(first: torch.Tensor, second: torch.Tensor, window: int = 7) -> torch.Tensor:
    """SSIM of each pair of maps as scikit-image's ``structural_similarity`` with its defaults
    and ``data_range`` the range of both maps together (Quantus' ``ssim``): ``[B, H, W]`` twice
    to float64 ``[B]``, on their device.

    The window is ``window`` wide along each side longer than 1 (shrunk to the largest odd size
    that fits), so maps of shape ``[B, 1, N]`` give the one-dimensional SSIM that Quantus computes
    on flattened maps. NaN where both maps are one constant.
    """
    x, y = first.detach().double()[:, None], second.detach().double()[:, None]
    sizes = [1 if side == 1 else min(window, side if side % 2 else side - 1)
             for side in x.shape[-2:]]
    count = sizes[0] * sizes[1]
    covariance_norm = count / (count - 1) if count > 1 else 1.0

    def mean(values: torch.Tensor) -> torch.Tensor:
        # Only windows inside the map: scikit-image filters with reflection, then crops them off.
        return F.avg_pool2d(values, sizes, stride=1)

    both = torch.cat([x.flatten(1), y.flatten(1)], dim=1)
    data_range = (both.amax(dim=1) - both.amin(dim=1)).view(-1, 1, 1, 1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mean_x, mean_y = mean(x), mean(y)
    var_x = covariance_norm * (mean(x * x) - mean_x ** 2)
    var_y = covariance_norm * (mean(y * y) - mean_y ** 2)
    cov = covariance_norm * (mean(x * y) - mean_x * mean_y)
    index = ((2 * mean_x * mean_y + c1) * (2 * cov + c2)
             / ((mean_x ** 2 + mean_y ** 2 + c1) * (var_x + var_y + c2)))
    return index.flatten(1).mean(dim=1)


def max_normalised(maps: torch.Tensor) -> torch.Tensor:
    """Each map divided by its largest absolute value (a zero map stays zero)."""
    scale = maps.detach().abs().flatten(1).amax(dim=1).view(-1, *([1] * (maps.dim() - 1)))
    return maps / torch.where(scale > 0, scale, torch.ones_like(scale))


def map_similarity(name: str, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``"spearman"`` of the absolute maps or ``"ssim"`` of the max-normalised maps: ``[B]``."""
    if name == "spearman":
        return spearman(first.abs().double(), second.abs().double())
    return uniform_ssim(max_normalised(first.float()), max_normalised(second.float()))


def _explain(explain, model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
             batch_size: int) -> torch.Tensor:
    """The method's maps of ``inputs`` in chunks of ``batch_size`` images."""
    return torch.cat([explain(model, inputs[start:start + batch_size],
                              targets[start:start + batch_size]).detach().float()
                      for start in range(0, len(inputs), batch_size)])


class ModelParameterRandomisation(SaliencyMetric):
    """Cascading model parameter randomisation (Adebayo et al. 2018; Quantus' ``MPRT``).

    After each cumulative layer the similarity of the recomputed map to the scored map is taken,
    and the image's score is their **mean over the randomized layers** (``reduce="mean"``) or the
    similarity once every layer is random (``reduce="last"``, Quantus'
    ``return_last_correlation``).

    Against Quantus 0.6.0 (``granularity="modules"``, the same seeds, ``similarity="spearman"``):
    the per-layer similarities are Quantus'. Quantus' ``return_average_correlation`` also averages
    in its ``"original"`` entry (the scored map against the trained network's map, 1 when they
    are the same method's), so it is ``(original + L * ours) / (L + 1)`` for ``L`` layers; ours
    leaves it out. Quantus re-initialises every layer from the one seed ``seed + 1``; ours layer
    ``j`` from ``seed + j`` (the test makes Quantus' seeds ours). Quantus divides the maps by
    their batch's largest absolute value, which changes no Spearman correlation; for SSIM ours
    divides each map by its own largest absolute value. Where the randomized network's map is
    flat (constant) and the scored map is not, ours counts similarity 0; Quantus' Spearman is NaN
    there, and so is its average.

    Args:
        granularity: ``"blocks"`` (the head, then each of the backbone's feature blocks from the
            top: about ten explanations per image for a real network) or ``"modules"`` (every
            module with ``reset_parameters``, Quantus' walk: one explanation per convolution,
            linear layer and batch norm).
        similarity: ``"spearman"`` (Quantus' default) or ``"ssim"``.
        reduce: ``"mean"`` over the randomized layers or ``"last"`` (every layer random).
        seed: Layer ``j`` is re-initialised from seed ``seed + j``.
        batch_size: Most images per call of the explainer.
    """

    name = "randomisation"
    family = "randomisation"
    higher_is_better = False
    explains_again = True
    reads_batch_norm = True  # randomises the normalizations as Quantus does: never folded

    def __init__(self, granularity: str = "blocks", similarity: str = "spearman",
                 reduce: str = "mean", seed: int = 0, batch_size: int = 16) -> None:
        check_choice("granularity", granularity, GRANULARITIES)
        check_choice("similarity", similarity, SIMILARITIES)
        check_choice("reduce", reduce, REDUCTIONS)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**62:
            raise UserInputError(f"seed must be an integer from 0 to 2**62, got {seed!r}.")
        check_positive_integer("batch_size", batch_size)
        self.granularity = granularity
        self.similarity = similarity
        self.reduce = reduce
        self.seed = seed
        self.batch_size = batch_size

    @property
    def perturbation(self) -> str:
        unit = ("the head and each feature block" if self.granularity == "blocks"
                else "every module with parameters to reset")
        score = ("the mean over the layers" if self.reduce == "mean"
                 else "the value once every layer is random")
        return (f"the network's parameters are re-initialised cumulatively from the top down "
                f"({unit}, seed {self.seed} + layer) and the map recomputed after each; score: "
                f"{score} of its {self.similarity} similarity to the scored map")

    @property
    def normalisation(self) -> str:
        if self.similarity == "spearman":
            return "absolute values (a rank correlation ignores scale)"
        return "each map divided by its largest absolute value before SSIM"

    def layer_similarities(self, batch: MetricInputs) -> tuple[list[str], torch.Tensor]:
        """The randomized layers' names and each image's similarity after each, ``[B, L]``."""
        inputs = batch.inputs.detach()
        targets = torch.as_tensor(batch.targets, device=inputs.device).long()
        maps = batch.maps.to(inputs.device).float()
        names, values = [], []
        for name, randomized in cascading_models(batch.model, self.seed, self.granularity):
            recomputed = _explain(batch.explain, randomized, inputs, targets, self.batch_size)
            names.append(name)
            similarity = map_similarity(self.similarity, maps, recomputed)
            # A map that the randomized network leaves flat (Grad-CAM's, once a block outputs
            # only negative evidence) keeps nothing of the scored map: similarity 0, where a
            # rank correlation is undefined (NaN, which would void the image's whole score).
            flat = recomputed.flatten(1).std(dim=1) == 0
            varied = maps.flatten(1).std(dim=1) > 0
            values.append(torch.where(flat & varied, torch.zeros_like(similarity), similarity))
        if not names:
            raise UserInputError("The model has no layer to randomise.")
        return names, torch.stack(values, dim=1)

    def score(self, batch: MetricInputs) -> torch.Tensor:
        _, values = self.layer_similarities(batch)
        reduced = values.mean(dim=1) if self.reduce == "mean" else values[:, -1]
        return reduced.float()


class RandomLogit(SaliencyMetric):
    """Random logit (Sixt et al. 2020; Quantus' ``RandomLogit``): similarity of the target's map
    to the map of a random other class, drawn uniformly from the batch's generator.

    Against Quantus 0.6.0: the same classes and similarity give Quantus' score. Quantus draws the
    class with ``np.random.seed(seed)`` per batch and divides every map by the largest absolute
    value of its whole batch, so an image's score depends on the batch it is in (equal to ours
    for batches of one); ours divides each map by its own. Quantus' default ``ssim`` compares
    the *flattened* maps (a one-dimensional SSIM along the rows read as one line:
    ``uniform_ssim`` of ``[B, 1, H * W]``); ours the two-dimensional maps.

    Args:
        similarity: ``"ssim"`` (Quantus' default) or ``"spearman"``.
        classes: Number of classes to draw from (default: the model's outputs).
        batch_size: Most images per call of the explainer.
    """

    name = "random_logit"
    family = "randomisation"
    higher_is_better = False
    explains_again = True

    def __init__(self, similarity: str = "ssim", classes: Optional[int] = None,
                 batch_size: int = 16) -> None:
        check_choice("similarity", similarity, SIMILARITIES)
        if classes is not None:
            check_positive_integer("classes", classes)
            if classes < 2:
                raise UserInputError(f"classes must be at least 2, got {classes}.")
        check_positive_integer("batch_size", batch_size)
        self.similarity = similarity
        self.classes = classes
        self.batch_size = batch_size

    @property
    def perturbation(self) -> str:
        return ("the map is recomputed for a uniformly drawn class other than the target; score: "
                f"its {self.similarity} similarity to the target's map")

    @property
    def normalisation(self) -> str:
        if self.similarity == "spearman":
            return "absolute values (a rank correlation ignores scale)"
        return "each map divided by its largest absolute value before SSIM"

    def other_classes(self, batch: MetricInputs) -> torch.Tensor:
        """A class other than the target for each image, uniform, from the batch's generator."""
        inputs = batch.inputs
        targets = torch.as_tensor(batch.targets, device=inputs.device).long()
        classes = self.classes
        if classes is None:
            with torch.no_grad():
                classes = batch.model(inputs[:1]).shape[1]
        if classes < 2:
            raise UserInputError("random_logit needs a model with at least 2 classes.")
        if bool((targets >= classes).any()):
            raise UserInputError(f"A target is not one of the {classes} classes.")
        device = batch.generator.device if batch.generator is not None else torch.device("cpu")
        # A shift of 1 .. classes - 1 from the target reaches every other class equally often.
        shift = torch.randint(1, classes, (len(targets),), generator=batch.generator,
                              device=device).to(targets.device)
        return (targets + shift) % classes

    def score(self, batch: MetricInputs) -> torch.Tensor:
        inputs = batch.inputs.detach()
        others = self.other_classes(batch)
        recomputed = _explain(batch.explain, batch.model, inputs, others, self.batch_size)
        return map_similarity(self.similarity, batch.maps.to(inputs.device).float(),
                              recomputed).float()
