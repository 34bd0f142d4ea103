"""Feature visualization: objectives (channels, neurons, directions, layers, classes, diversity,
their sums), the module that draws what raises them (classes: the ClassVisualization preset),
and DeepDream."""

from lightning_modules._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "FeatureVisualization": ".module", "DeepDream": ".module", "ObjectiveJob": ".module",
    "ObjectiveAscent": ".module",
    "objective_file_name": ".module",
    "objective_loss": ".functional", "objective_scores": ".functional",
    "deep_dream": ".functional", "octave_sizes": ".functional", "carry_detail": ".functional",
    "Objective": ".objectives", "Sum": ".objectives", "ClassLogit": ".objectives",
    "Channel": ".objectives", "Neuron": ".objectives", "Direction": ".objectives",
    "LayerL2": ".objectives", "Diversity": ".objectives", "Activations": ".objectives",
    "parse_objective": ".objectives", "ChannelAtlas": ".objectives", "gram_similarity": ".objectives",
})
