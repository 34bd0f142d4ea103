"""Saliency maps: the seed's vanilla gradient, SmoothGrad, Integrated Gradients, the Grad-CAM
family (cam.py), Captum's methods (captum_methods.py), and the module.

Each method is an object (:class:`SaliencyMethod`: ``Vanilla``, ``SmoothGrad``,
``IntegratedGradients``, ``GradCAM``, ``GradCAMPlusPlus``, ``ScoreCAM``, ``GuidedGradCAM``,
``HiResCAM``, ``XGradCAM``, ``LayerCAM``, ``EigenCAM``, ``EigenGradCAM`` (cam_family.py),
``AblationCAM`` (ablation_cam.py), ``FullGrad`` (fullgrad.py), ``CaptumMethod``) that a
config names by ``class_path``; the short names (``smoothgrad``, ...) resolve in
:mod:`~lightning_modules.saliency.registry`.
"""

from lightning_modules._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "SaliencyBatch": ".module", "SaliencyMap": ".module",
    "attribution_map": ".functional", "class_score_gradient": ".functional",
    "compute_saliency_maps": ".functional", "integrated_gradients": ".functional",
    "integration_rule": ".functional", "resolve_baseline": ".functional",
    "smoothgrad_saliency": ".functional", "INTEGRATION_METHODS": ".functional",
    "METHODS": ".functional", "REDUCTIONS": ".functional",
    # the methods as objects, and their short names
    "Saliency": ".base", "SaliencyMethod": ".base",
    "Vanilla": ".gradients", "SmoothGrad": ".gradients", "IntegratedGradients": ".gradients",
    "GradCAM": ".cam", "GradCAMPlusPlus": ".cam", "ScoreCAM": ".cam", "GuidedGradCAM": ".cam",
    "CaptumMethod": ".captum_methods",
    # a whole dataset: the module and the reader of its maps
    "DatasetExplanation": ".dataset", "DatasetBatch": ".dataset", "load_maps": ".map_shards",
    # the controls every metric is read against
    "RandomMap": ".controls", "EdgeMap": ".controls", "CenteredGaussianMap": ".controls",
    "SHORTHANDS": ".registry", "method_from_options": ".registry",
    "method_from_module_options": ".registry",
    # the trust report
    "TrustReport": ".evaluation", "trust_report": ".evaluation",
    "deletion_insertion": ".evaluation", "cascading_randomization": ".evaluation",
    "rank_correlation": ".evaluation", "map_ssim": ".evaluation",
    # the Grad-CAM family
    "CAM_METHODS": ".cam", "grad_cam": ".cam", "grad_cam_plusplus": ".cam", "score_cam": ".cam",
    "guided_grad_cam": ".cam", "guided_backprop": ".cam", "layer_gradients": ".cam",
    "HiResCAM": ".cam_family", "XGradCAM": ".cam_family", "LayerCAM": ".cam_family",
    "EigenCAM": ".cam_family", "EigenGradCAM": ".cam_family", "hires_cam": ".cam_family",
    "xgrad_cam": ".cam_family", "layer_cam": ".cam_family", "eigen_cam": ".cam_family",
    "eigen_grad_cam": ".cam_family",
    "AblationCAM": ".ablation_cam", "ablation_cam": ".ablation_cam",
    "FullGrad": ".fullgrad", "full_grad": ".fullgrad",
})
