"""What every image-optimizing technique shares: jobs, the step, metrics, parameterizations,
transforms, update rules, the fast path and the multi-process strategy."""

from lightning_modules._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "ImageOptimization": ".module", "ImageSlot": ".jobs", "JobPlan": ".jobs",
    "plan_chunks": ".jobs", "size_groups": ".jobs", "StepBuffer": ".metrics",
    "LossRecord": ".metrics", "Parameterization": ".parameterizations",
    "PixelImage": ".parameterizations", "FourierImage": ".parameterizations",
    "make_parameterization": ".parameterizations", "GradientAscent": ".steps",
    "unit_step": ".steps", "ImageDDPStrategy": ".strategy",
})
