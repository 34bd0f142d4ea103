"""Fooling images: the attacks (one class each), their shared loop, and the LightningModule."""

from lightning_modules._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "FoolingImage": ".module", "FoolingJob": ".module",
    "FoolingAttack": ".functional", "FoolingProgress": ".functional",
    "ATTACKS": ".attacks", "Attack": ".attacks", "CarliniWagner": ".attacks", "PGD": ".attacks",
    "SeedAttack": ".attacks", "resolve_attack": ".attacks",
    "CarliniWagnerStep": ".steps", "ProjectedStep": ".steps", "SeedStep": ".steps",
    "RESULT_COLUMNS": ".functional", "make_fooling_image": ".functional",
    "pgd_attack": ".functional", "project": ".steps", "quantize_pixels": ".steps",
    "summarize": ".functional", "target_objective": ".steps",
    "Method": ".functional", "Norm": ".functional", "Loss": ".functional",
})
