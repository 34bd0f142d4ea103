"""Max-sensitivity (Yeh et al. 2019): how far the map moves when the input barely does.

As Quantus' ``MaxSensitivity`` (0.6, its defaults): ``samples`` times, every input value gets
uniform noise from ``[-radius, radius]``, the method explains the noisy image again, and the
change is measured relative to the map, ``||map' - map||_F / ||map||_F``; the score is the
largest of them. A robust method's map barely moves (0 for a map that ignores the image); a
random map moves by about its own size.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from lightning_modules.errors import UserInputError, check_non_negative
from lightning_modules.saliency.functional import internal_batches
from lightning_modules.saliency.gradients import check_internal_batch_size
from lightning_modules.saliency.metrics.base import MetricInputs, SaliencyMetric


class MaxSensitivity(SaliencyMetric):
    """The largest relative change of the map over ``samples`` uniformly perturbed inputs.

    For each image ``x`` with map ``a`` and each sample ``k``: ``x_k = x + u_k``, ``u_k`` uniform
    in ``[-radius, radius]`` per value (channels and pixels, in the normalized space the model
    takes, as Quantus perturbs the array it is given), ``a_k = explain(x_k)``, and the score is
    ``max_k ||a_k - a||_F / ||a||_F``. The maps are not normalised (Quantus' default
    ``normalise=False``): dividing by ``||a||_F`` already makes the score independent of the
    map's scale. Samples whose ratio is NaN (a zero map explained as zero again) are skipped, as
    Quantus' ``nanmax`` does; an all-zero map that moves scores infinity.

    The noise is drawn from the batch's generator one copy of the batch at a time, sample after
    sample, so the scores do not depend on ``internal_batch_size``; Quantus' option
    ``return_nan_when_prediction_changes`` (off by default) is not offered.

    Args:
        samples: Number of perturbed inputs per image (Quantus' default 200).
        radius: Half-width of the uniform noise, in normalized input units (Quantus' default
            ``lower_bound=0.2``; with EfficientNet-Lite's mean = std = 0.5, 0.1 of the pixel
            range).
        internal_batch_size: The most perturbed images explained in one call (None: one copy
            of the batch); the scores do not depend on it.
    """

    name = "max_sensitivity"
    family = "robustness"
    higher_is_better = False
    explains_again = True

    def __init__(self, samples: int = 200, radius: float = 0.2,
                 internal_batch_size: Optional[int] = None) -> None:
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise UserInputError(f"samples must be a whole number of at least 1, got {samples}.")
        check_non_negative("radius", radius)
        check_internal_batch_size(internal_batch_size)
        self.samples = samples
        self.radius = radius
        self.internal_batch_size = internal_batch_size

    @property
    def perturbation(self) -> str:
        return (f"uniform noise in [-{self.radius:g}, {self.radius:g}] added to every normalized "
                f"input value, {self.samples} draws per image, the map recomputed for each")

    @property
    def normalisation(self) -> str:
        return ("none on the maps (Quantus' default); each change is divided by the map's "
                "Frobenius norm")

    def score(self, batch: MetricInputs) -> torch.Tensor:
        inputs = batch.inputs.detach()
        count = inputs.shape[0]
        reference = batch.maps.detach().to(torch.float32).flatten(1)
        reference_norm = torch.linalg.vector_norm(reference, dim=1)
        generator = batch.generator
        noise_device = generator.device if generator is not None else inputs.device
        worst = torch.full((count,), -math.inf, device=reference.device)
        noises: dict[int, torch.Tensor] = {}  # the samples a window needs, drawn in order
        for sample, image in internal_batches(self.samples, count, self.internal_batch_size):
            first, last = int(sample[0]), int(sample[-1])
            for k in range(first, last + 1):
                if k not in noises:
                    uniform = torch.rand(inputs.shape, generator=generator, device=noise_device,
                                         dtype=inputs.dtype)
                    noises[k] = ((2 * uniform - 1) * self.radius).to(inputs.device)
            noise = torch.stack([noises[k] for k in range(first, last + 1)])[sample - first,
                                                                               image]
            image = image.to(inputs.device)
            perturbed_maps = batch.explain(batch.model, inputs[image] + noise,
                                           batch.targets[image])
            change = perturbed_maps.detach().to(torch.float32).flatten(1) - reference[image]
            ratio = torch.linalg.vector_norm(change, dim=1) / reference_norm[image]
            # NaN ratios (0 / 0) are skipped, as Quantus' nanmax skips them.
            ratio = torch.where(ratio.isnan(), torch.full_like(ratio, -math.inf), ratio)
            worst.scatter_reduce_(0, image, ratio, reduce="amax")
            for k in [k for k in noises if k < last]:
                del noises[k]  # used up: the next window starts at sample `last` or after it
        return torch.where(worst == -math.inf, torch.full_like(worst, math.nan), worst)
