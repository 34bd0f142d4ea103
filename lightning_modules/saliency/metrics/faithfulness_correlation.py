"""Faithfulness correlation (Bhatt, Weller and Moura 2020, "Evaluating and Aggregating
Feature-based Model Explanations", IJCAI).

Replace a random subset of the input's features with a baseline, many times; a faithful map's
attributions over each subset add up to about what the target's output loses. The score is the
Pearson correlation, over the runs, between the subset's summed attribution and the drop in the
target's logit (higher is better).

Defaults are Quantus 0.6.0's ``FaithfulnessCorrelation``: 100 runs, subsets of 224 features,
the image's least value as the baseline (what Quantus calls ``"black"``), the logit (no softmax),
and a feature is one channel value of one pixel (Quantus broadcasts a one-channel map over the
channels, so a pixel's attribution counts once per channel value drawn). ``whole_pixels=True``
draws pixels instead, all channels replaced together. Quantus draws subsets with
``np.random.choice``; ours come from the batch's generator (the same subsets give the same
score, as the test shows). Quantus' normalisation (the map divided by its batch's largest
absolute value) cannot change a Pearson correlation, so there is none here.
"""

from __future__ import annotations

import math
from typing import Union

import torch

from lightning_modules.errors import UserInputError, check_choice
from lightning_modules.saliency.evaluation import check_positive_integer
from lightning_modules.saliency.metrics.base import MetricInputs, SaliencyMetric

BASELINES = ("image_min", "black", "zero")
OUTPUTS = ("logit", "probability")


def pearson(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each pair of rows ``[B, N]``: ``[B]`` (NaN where a row is
    constant)."""
    a = first.double() - first.double().mean(dim=1, keepdim=True)
    b = second.double() - second.double().mean(dim=1, keepdim=True)
    scale = a.norm(dim=1) * b.norm(dim=1)
    correlation = (a * b).sum(dim=1) / scale
    return torch.where(scale > 0, correlation, torch.full_like(correlation, float("nan")))


class FaithfulnessCorrelation(SaliencyMetric):
    """Pearson correlation between random subsets' attribution and the target's drop.

    Args:
        runs: Random subsets per image (Quantus' ``nr_runs``).
        subset_size: Features per subset (Quantus' ``subset_size``); at most the image's features.
        baseline: What the subset's features become: ``"image_min"`` (the image's least
            normalized value over all channels: Quantus' ``"black"``), ``"black"`` (a black pixel,
            each channel's own normalized black), ``"zero"`` (the normalized input's zero), or a
            number (normalized units).
        whole_pixels: Draw pixels (all channels replaced) instead of single channel values.
        output: The target's ``"logit"`` (Quantus' default) or softmax ``"probability"``.
        batch_size: Most perturbed images per forward pass.
    """

    name = "faithfulness_correlation"
    family = "faithfulness"
    higher_is_better = True

    def __init__(self, runs: int = 100, subset_size: int = 224,
                 baseline: Union[str, float] = "image_min", whole_pixels: bool = False,
                 output: str = "logit", batch_size: int = 64) -> None:
        check_positive_integer("runs", runs)
        if runs < 2:
            raise UserInputError(f"runs must be at least 2 for a correlation, got {runs}.")
        check_positive_integer("subset_size", subset_size)
        if isinstance(baseline, str):
            check_choice("baseline", baseline, BASELINES)
        elif isinstance(baseline, bool) or not isinstance(baseline, (int, float)) or not (
                math.isfinite(baseline)):
            raise UserInputError("baseline must be 'image_min', 'black', 'zero' or a finite "
                                 f"number, got {baseline!r}.")
        if not isinstance(whole_pixels, bool):
            raise UserInputError(f"whole_pixels must be true or false, got {whole_pixels!r}.")
        check_choice("output", output, OUTPUTS)
        check_positive_integer("batch_size", batch_size)
        self.runs = runs
        self.subset_size = subset_size
        self.baseline = baseline
        self.whole_pixels = whole_pixels
        self.output = output
        self.batch_size = batch_size

    @property
    def perturbation(self) -> str:
        unit = "pixels (all channels)" if self.whole_pixels else "channel values"
        baseline = {"image_min": "the image's least value", "black": "black",
                    "zero": "the normalized input's zero"}.get(self.baseline, str(self.baseline))
        return (f"{self.runs} random subsets of {self.subset_size} {unit} per image become "
                f"{baseline}; score: Pearson correlation between each subset's summed attribution "
                f"and the drop in the target's {self.output}")

    @property
    def normalisation(self) -> str:
        return "none (a Pearson correlation does not change with the map's scale)"

    def subsets(self, batch: MetricInputs) -> torch.Tensor:
        """The features drawn for each image and run, ``[B, runs, subset_size]`` (flat indices
        into ``C * H * W``, or ``H * W`` with ``whole_pixels``), uniformly without replacement."""
        inputs = batch.inputs
        features = inputs[0, 0].numel() if self.whole_pixels else inputs[0].numel()
        if self.subset_size > features:
            raise UserInputError(f"subset_size ({self.subset_size}) must be at most the image's "
                                 f"{features} features.")
        device = batch.generator.device if batch.generator is not None else torch.device("cpu")
        # The top-k of uniform noise is a uniform subset; one run at a time keeps memory at B x F.
        draws = [torch.rand(inputs.shape[0], features, generator=batch.generator, device=device)
                 .topk(self.subset_size, dim=1).indices for _ in range(self.runs)]
        return torch.stack(draws, dim=1).to(inputs.device)

    def _baseline_values(self, batch: MetricInputs) -> torch.Tensor:
        """The baseline of each image, broadcastable to ``[B, C, H, W]``."""
        inputs = batch.inputs
        if self.baseline == "image_min":
            return inputs.flatten(1).amin(dim=1).view(-1, 1, 1, 1)
        if self.baseline == "black":
            return batch.model.pixel_min.to(inputs).view(1, -1, 1, 1)
        if self.baseline == "zero":
            return torch.zeros(1, 1, 1, 1, dtype=inputs.dtype, device=inputs.device)
        return torch.full((1, 1, 1, 1), float(self.baseline), dtype=inputs.dtype,
                          device=inputs.device)

    def _output(self, model: torch.nn.Module, inputs: torch.Tensor,
                targets: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = model(inputs).float()
        if self.output == "probability":
            logits = logits.softmax(dim=1)
        return logits.gather(1, targets[:, None])[:, 0]

    def score(self, batch: MetricInputs) -> torch.Tensor:
        inputs = batch.inputs.detach()
        images, channels = inputs.shape[:2]
        device = inputs.device
        targets = torch.as_tensor(batch.targets, device=device).long()
        subsets = self.subsets(batch)
        maps = batch.maps.to(device).float().flatten(1)  # [B, H * W]
        pixels = maps.shape[1]
        if self.whole_pixels:
            attribution = maps.gather(1, subsets.flatten(1)).view(images, self.runs, -1).sum(2)
        else:
            # A channel value's attribution is its pixel's (the map broadcast over channels).
            attribution = maps.gather(1, (subsets % pixels).flatten(1)).view(
                images, self.runs, -1).sum(2)
        baseline = self._baseline_values(batch).expand_as(inputs)
        original = self._output(batch.model, inputs, targets)
        drops = torch.empty(images * self.runs, dtype=torch.float32, device=device)
        # Perturbed images in chunks: run-major within an image, never all at once.
        for start in range(0, images * self.runs, self.batch_size):
            index = torch.arange(start, min(start + self.batch_size, images * self.runs),
                                 device=device)
            image, run = index // self.runs, index % self.runs
            chosen = subsets[image, run]  # [n, subset_size]
            keep = torch.ones(len(index), channels * pixels if not self.whole_pixels else pixels,
                              dtype=torch.bool, device=device)
            keep.scatter_(1, chosen, False)
            keep = keep.view(len(index), -1, *inputs.shape[-2:])  # [n, C or 1, H, W]
            perturbed = torch.where(keep, inputs[image], baseline[image])
            drops[start:start + len(index)] = original[image] - self._output(
                batch.model, perturbed, targets[image])
        return pearson(attribution, drops.view(images, self.runs)).float()
