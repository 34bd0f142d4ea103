"""Evaluation metrics of saliency maps, one per file, in Quantus' families.

Each metric is a :class:`~lightning_modules.saliency.metrics.base.SaliencyMetric` that scores
every map of a batch on the batch's device; the short names resolve in
:mod:`~lightning_modules.saliency.metrics.registry`.
"""

from lightning_modules._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "SaliencyMetric": ".base", "MetricInputs": ".base",
    "METRICS": ".registry", "metric_from_spec": ".registry",
    # faithfulness
    "Deletion": ".deletion", "Insertion": ".deletion", "ROADMoRF": ".road", "ROADLeRF": ".road",
    "FaithfulnessCorrelation": ".faithfulness_correlation",
    # randomisation, robustness, localisation, complexity
    "ModelParameterRandomisation": ".randomisation", "RandomLogit": ".randomisation",
    "MaxSensitivity": ".max_sensitivity", "PointingGame": ".pointing_game",
    "RelevanceMassAccuracy": ".relevance_mass", "Sparseness": ".sparseness",
})
