"""Class visualization: the homework's loop, and the preset of FeatureVisualization that runs it
with one class objective per picture."""

from lightning_modules._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "ClassJob": ".module", "ClassVisualization": ".module",
    "class_visualization_loss": ".functional", "create_class_visualization": ".functional",
    "default_learning_rate": ".functional", "make_optimizer": ".functional",
    "regularize": ".functional", "CropViews": ".functional", "shown_views": ".functional",
    # The pieces the homework's loop is made of, where they live now.
    "GradientAscent": "lightning_modules.image_optimization.steps",
    "blur_image": "lightning_modules.image_optimization.transforms",
    "jitter": "lightning_modules.image_optimization.transforms",
    "random_transforms": "lightning_modules.image_optimization.transforms",
    "fourier_to_pixels": "lightning_modules.image_optimization.parameterizations",
    "fourier_spectrum_shape": "lightning_modules.image_optimization.parameterizations",
    "pixel_range": "lightning_modules.backbones.normalization",
    "clamp_to_range": "lightning_modules.backbones.normalization",
    "DEFAULT_NUM_ITERATIONS": ".functional", "DEFAULT_L2_REG": ".functional",
    "class_file_name": "lightning_modules.naming",
})
