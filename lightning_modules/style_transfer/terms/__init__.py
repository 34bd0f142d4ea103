"""The loss terms a style-transfer composition adds up: content, style, smoothness.

Each is one class (:class:`LossTerm`'s two halves: a target, a loss) a config names by
``class_path``, e.g. ``{class_path: lightning_modules.style_transfer.terms.StyleTerm,
init_args: {layers: [1, 2], loss: sliced_wasserstein}}``.
"""

from lightning_modules.style_transfer.terms.base import LossTerm, per_layer
from lightning_modules.style_transfer.terms.color import ChromaDetailTerm, ColorTerm
from lightning_modules.style_transfer.terms.content import ContentTerm
from lightning_modules.style_transfer.terms.smoothness import ChromaTotalVariation, TotalVariation
from lightning_modules.style_transfer.terms.style import StyleTerm
from lightning_modules.style_transfer.terms.temporal import TemporalTerm

__all__ = ["ChromaDetailTerm", "ChromaTotalVariation", "ColorTerm", "ContentTerm", "LossTerm",
           "StyleTerm", "TemporalTerm", "TotalVariation", "per_layer"]
