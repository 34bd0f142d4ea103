"""Sparseness (Chalasani et al. 2020): the Gini index of the map.

As Quantus' ``Sparseness`` (0.6, its defaults ``abs=True, normalise=True``): the map's absolute
values divided by their maximum, plus ``1e-7`` (so a zero map is defined), sorted ascending as
``a_1 <= ... <= a_n``, give ``sum_i (2i - n - 1) a_i / (n sum_i a_i)``: 0 for a flat map, near
1 when one pixel holds everything. A concise map is easier to read; a map can be sparse and
wrong, so read it beside the faithfulness and localisation metrics.
"""

from __future__ import annotations

import torch

from lightning_modules.saliency.metrics.base import MetricInputs, SaliencyMetric

# Quantus adds it to every value before sorting; it matters only for maps far below their max.
EPSILON = 1e-7


class Sparseness(SaliencyMetric):
    """The Gini index of each map's absolute values, after dividing by the map's maximum.

    One difference from Quantus 0.6, on purpose: Quantus divides by the maximum of the whole
    batch it is given (its ``normalise_by_max`` reduces over every axis, the batch's too), so a
    faint map's score depends on which maps share its batch (through the ``1e-7``); here each
    map is divided by its own maximum, which is Quantus' number for that map scored alone, in
    any batch. An all-zero map stays zero (as in Quantus) and scores 0.
    """

    name = "sparseness"
    family = "complexity"
    higher_is_better = True

    @property
    def normalisation(self) -> str:
        return ("absolute values divided by each map's maximum, plus 1e-7 (Quantus' defaults, per "
                "map instead of per batch)")

    def score(self, batch: MetricInputs) -> torch.Tensor:
        values = batch.maps.detach().to(torch.float32).flatten(1).abs()
        peak = values.amax(dim=1, keepdim=True)
        values = torch.where(peak > 0, values / peak.clamp(min=torch.finfo(values.dtype).tiny),
                             values) + EPSILON
        # Sorted in float32, summed in float64: the weights reach the pixel count (50,176 at
        # 224 px), and the weighted sum cancels.
        values = values.sort(dim=1).values.to(torch.float64)
        count = values.shape[1]
        rank = torch.arange(1, count + 1, dtype=values.dtype, device=values.device)
        gini = ((2 * rank - count - 1) * values).sum(dim=1) / (count * values.sum(dim=1))
        return gini.to(torch.float32)
