"""The old home of the seed's style-transfer losses (``from lightning_modules.losses import
gram_matrix`` keeps working); they live in :mod:`lightning_modules.style_transfer.functional`."""

from lightning_modules.image_optimization.parameterizations import at_least_float32
from lightning_modules.style_transfer.functional import (
    content_loss,
    extract_features,
    gram_matrix,
    style_loss,
    tv_loss,
)

__all__ = ["at_least_float32", "content_loss", "extract_features", "gram_matrix", "style_loss", "tv_loss"]
