"""The metrics' short names, resolved in one place.

A config names a metric by ``class_path`` (an object of
:class:`~lightning_modules.saliency.metrics.base.SaliencyMetric`) or by its short name
(``road_morf``). :data:`METRICS` maps each short name to its class, as ``"module:Class"`` so
that a run imports only the metrics it uses. A new metric is one file in this folder and one
entry here.
"""

from __future__ import annotations

import importlib
from typing import Union

from lightning_modules.errors import UserInputError, check_choice
from lightning_modules.saliency.metrics.base import SaliencyMetric

METRICS: dict[str, str] = {
    # faithfulness
    "deletion": "deletion:Deletion",
    "insertion": "deletion:Insertion",
    "road_morf": "road:ROADMoRF",
    "road_lerf": "road:ROADLeRF",
    "faithfulness_correlation": "faithfulness_correlation:FaithfulnessCorrelation",
    # randomisation
    "randomisation": "randomisation:ModelParameterRandomisation",
    "random_logit": "randomisation:RandomLogit",
    # robustness, localisation (with boxes), complexity
    "max_sensitivity": "max_sensitivity:MaxSensitivity",
    "pointing_game": "pointing_game:PointingGame",
    "relevance_mass_accuracy": "relevance_mass:RelevanceMassAccuracy",
    "sparseness": "sparseness:Sparseness",
}

MetricSpec = Union[str, SaliencyMetric]


def metric_class(name: str) -> type[SaliencyMetric]:
    """The class a metric's short name stands for.

    Raises:
        UserInputError: Not a metric's short name.
    """
    check_choice("metric", name, list(METRICS), "metric")
    module, cls = METRICS[name].split(":")
    return getattr(importlib.import_module(f"lightning_modules.saliency.metrics.{module}"), cls)


def metric_from_spec(metric: MetricSpec) -> SaliencyMetric:
    """A metric object from its short name (with its defaults), or the object itself."""
    if isinstance(metric, SaliencyMetric):
        return metric
    if isinstance(metric, str):
        return metric_class(metric)()
    raise UserInputError(f"A metric must be a short name such as 'road_morf' or a SaliencyMetric "
                         f"(a config's class_path), got {type(metric).__name__}.")
