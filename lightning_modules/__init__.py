"""The techniques, each a LightningModule whose parameter is the image, and their parts.

Every name is imported on first use, so ``from lightning_modules import gram_matrix`` costs no
Lightning import and a run imports only the technique it uses.

The one-call functions for notebooks (``stylize``, ``visualize_class``, ``fool``) come from
:mod:`lightning_modules.api`; its ``saliency`` is imported from there
(``from lightning_modules.api import saliency``), as ``lightning_modules.saliency`` is the
subpackage of saliency methods.
"""

from lightning_modules._lazy import lazy_exports

_BACKBONES = "lightning_modules.backbones"
_STYLE = "lightning_modules.style_transfer"
_SALIENCY = "lightning_modules.saliency"
_FOOLING = "lightning_modules.fooling"
_API = "lightning_modules.api"
_FEATURES = "lightning_modules.feature_visualization"

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    # backbones
    "Backbone": _BACKBONES, "available_backbones": _BACKBONES, "load_backbone": _BACKBONES,
    "register_backbone": _BACKBONES, "classifier_backbone": _BACKBONES,
    # the shared base and errors
    "ImageOptimization": "lightning_modules.image_optimization.module",
    "ImageDDPStrategy": "lightning_modules.image_optimization.strategy",
    "UserInputError": "lightning_modules.errors", "DivergedError": "lightning_modules.errors",
    # style transfer, feature inversion, texture synthesis and the seed's losses
    "StyleTransfer": _STYLE, "FeatureInversion": _STYLE, "TextureSynthesis": _STYLE,
    "content_loss": _STYLE, "extract_features": _STYLE, "gram_matrix": _STYLE,
    "style_loss": _STYLE, "tv_loss": _STYLE,
    "VideoStyleTransfer": "lightning_modules.video_style_transfer.module",
    # class visualization
    "ClassVisualization": "lightning_modules.class_visualization",
    "create_class_visualization": "lightning_modules.class_visualization",
    # feature visualization: objectives, DeepDream
    "FeatureVisualization": _FEATURES, "DeepDream": _FEATURES, "parse_objective": _FEATURES,
    "deep_dream": _FEATURES,
    # fooling images
    "FoolingAttack": _FOOLING, "FoolingImage": _FOOLING, "make_fooling_image": _FOOLING,
    "pgd_attack": _FOOLING,
    # saliency
    "SaliencyBatch": _SALIENCY, "SaliencyMap": _SALIENCY, "attribution_map": _SALIENCY,
    "compute_saliency_maps": _SALIENCY, "integrated_gradients": _SALIENCY,
    "smoothgrad_saliency": _SALIENCY,
    # one call from Python (saliency stays lightning_modules.api.saliency: see above)
    "stylize": _API, "visualize_class": _API, "fool": _API, "FoolingResult": _API,
    "SaliencyResult": _API, "explain_dataset": _API, "DatasetResult": _API,
    "stylize_video": _API, "VideoResult": _API,
})
