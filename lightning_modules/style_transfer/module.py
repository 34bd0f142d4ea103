"""Neural style transfer (Gatys et al.) and its two halves: feature inversion and texture synthesis.

Three presets of one composition, :class:`~lightning_modules.style_transfer.FeatureMatching`,
each building its loss terms (:mod:`~lightning_modules.style_transfer.terms`) from the
homework's flat options:

- :class:`StyleTransfer`: content + style + total variation (+ chroma TV): the content of a
  photo drawn in the style of one or more images (their blended statistics are the target, as
  in jcjohnson/neural-style);
- :class:`FeatureInversion`: content + TV, from noise: an image reconstructed from its features;
- :class:`TextureSynthesis`: style + TV, from noise: a new texture with the style's statistics.

A preset takes only the options of its terms: ``TextureSynthesis(content_weight=5)`` is refused
in one sentence, as is a content image given to a texture. Other mixes of terms (two content
layers' terms with their own reductions, a style term without TV, ...) are a
:class:`~lightning_modules.style_transfer.FeatureMatching` with its own ``terms``.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal, Sequence, Union

from lightning_modules.errors import UserInputError, check_choice
from lightning_modules.image_optimization.parameterizations import PixelImage
from lightning_modules.style_transfer.composition import FeatureMatching
from lightning_modules.style_transfer.style_losses import StyleLoss
from lightning_modules.style_transfer.terms import (ChromaDetailTerm, ChromaTotalVariation,
                                                    ColorTerm, ContentTerm, LossTerm, StyleTerm,
                                                    TotalVariation)

# The options of each term, by the presets that have it (for the sentence that refuses one).
_TERM_OPTIONS = {
    "content_layers": "a content term (StyleTransfer, FeatureInversion)",
    "content_weight": "a content term (StyleTransfer, FeatureInversion)",
    "style_layers": "a style term (StyleTransfer, TextureSynthesis)",
    "style_weights": "a style term (StyleTransfer, TextureSynthesis)",
    "style_loss": "a style term (StyleTransfer, TextureSynthesis)",
    "color_weight": "a colour term (StyleTransfer; a FeatureMatching can list a ColorTerm)",
    "chroma_detail_limit": ("a colour-detail term (StyleTransfer; a FeatureMatching can list a "
                            "ChromaDetailTerm)"),
    "chroma_detail_weight": ("a colour-detail term (StyleTransfer; a FeatureMatching can list a "
                             "ChromaDetailTerm)"),
    "terms": "FeatureMatching, which takes its loss terms as objects",
}


def _refuse_other_terms(technique: str, options: dict[str, Any]) -> None:
    """Refuse, in one sentence, an option of a term the preset does not have."""
    for key in options:
        if key in _TERM_OPTIONS:
            raise UserInputError(f"{technique} has no option {key}: it belongs to "
                                 f"{_TERM_OPTIONS[key]}.")


def _smoothness(tv_weight: float, chroma_tv_weight: float, loss_reduction: str
                ) -> list[LossTerm]:
    """The TV term (always: losses.csv keeps its column) and the chroma TV term (when
    weighted)."""
    chroma = ChromaTotalVariation(chroma_tv_weight, loss_reduction)
    return [TotalVariation(tv_weight, loss_reduction)] + ([chroma] if chroma_tv_weight else [])


class StyleTransfer(FeatureMatching):
    """Draw the content of a photo in the style of one or more images.

    Args:
        content_layers: Layers whose features the result must share with the content image, by
            index or by name (``python cli.py layers --model.backbone NAME`` lists them).
        content_weight: Weight of the content loss, one for all content layers or one each.
        style_layers: Layers whose statistics the result must share with the style (index or
            name).
        style_weights: Weight of each style layer (same count as ``style_layers``).
        style_loss: The style statistics matched: ``"gram"`` (Gatys et al., the homework's),
            ``"mean_std"`` (per-channel mean and std, AdaIN's) or ``"sliced_wasserstein"``
            (sorted random projections, Heitz et al. 2021), or a
            :class:`~lightning_modules.style_transfer.style_losses.StyleLoss` with its own
            options (a config's ``class_path``). With style masks (``--data.style_masks``)
            each style is matched in its own region.
        tv_weight: Weight of the total-variation (smoothness) loss.
        chroma_tv_weight: Weight of the total variation of the chrominance (I and Q of YIQ, in
            0-1 pixel units) alone: it removes single-pixel colour noise ("confetti") without
            blurring the luminance, where brush strokes and edges live. 0: no such term.
        loss_reduction: ``"mean"``: the content and TV losses are means over their values, so
            one set of weights serves every image size (and every scale); ``"sum"``: the
            homework's sums, which grow with the number of pixels.
        color_weight: Weight of the colour term
            (:class:`~lightning_modules.style_transfer.terms.ColorTerm`: the sliced Wasserstein
            distance of the picture's CIELAB pixels to the style's), which gives the picture the
            painting's palette and values; the network's features alone leave much of the
            photo's. 0: no such term; with ``preserve_colors`` it is left out.
        chroma_detail_limit: After every step, limit the picture's fine colour detail
            (specks, fringes) to the painting's own
            (:class:`~lightning_modules.style_transfer.terms.ChromaDetailTerm`): each pixel's
            colour detail is scaled down to the painting's quantile at its rank, the luminance
            untouched. Pixel pictures only (with another parameterization, use
            ``chroma_detail_weight``); left out with ``preserve_colors``.
        chroma_detail_weight: Weight of the same comparison as a loss (the colour detail
            beyond the painting's, squared). 0: no such loss.
        **kwargs: The picture's options, shared by the three presets (``init``, ``scales``,
            ``shift``, ``optimizer``, ``lr``, ``clamp``, ``tileable``, ``parameterization``,
            ``preserve_colors``, ...: see
            :class:`~lightning_modules.style_transfer.FeatureMatching`), and ``backbone``,
            ``weights``, ``channels_last``, ``fast``, ``recompute_features`` of
            :class:`~lightning_modules.image_optimization.ImageOptimization`.
    """

    # A small Adam step leaves less colour speckle (benchmarks/README.md, chroma_noise).
    default_lr = {"adam": 0.02, "lbfgs": 1.0}

    def __init__(
        self,
        content_layers: Sequence[Union[int, str]] = (4,),
        content_weight: float | Sequence[float] = 1.0,
        style_layers: Sequence[Union[int, str]] = (1, 2, 3, 4),
        style_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        style_loss: Union[str, StyleLoss] = "gram",
        tv_weight: float = 0.0,
        chroma_tv_weight: float = 0.0,
        loss_reduction: Literal["mean", "sum"] = "mean",
        color_weight: float = 0.0,
        chroma_detail_limit: bool = False,
        chroma_detail_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        _refuse_other_terms(type(self).__name__, kwargs)
        check_choice("loss_reduction", loss_reduction, ("mean", "sum"))
        terms = [ContentTerm(content_layers, content_weight, loss_reduction),
                 StyleTerm(style_layers, style_weights, style_loss),
                 *_smoothness(tv_weight, chroma_tv_weight, loss_reduction)]
        # With the photo's colours kept, its palette and values are the point: no pull away.
        if not kwargs.get("preserve_colors"):
            detail = ChromaDetailTerm(chroma_detail_weight, chroma_detail_limit)
            terms += [term for term in (ColorTerm(color_weight),) if term.weight]
            terms += [detail] if detail.weight or detail.limit else []
        super().__init__(terms=terms, **kwargs)
        # (Read from the built module: a kwargs.get() here would make LightningCLI's parser
        # take the option for an untyped one.)
        if (chroma_detail_limit and "chroma_detail" in self.term_names
                and not isinstance(self.parameterization, PixelImage)):
            warnings.warn("chroma_detail_limit acts on pixel pictures only; with another "
                          "parameterization use chroma_detail_weight.", stacklevel=2)


class FeatureInversion(FeatureMatching):
    """Reconstruct an image from its features at the content layers (content + TV loss).

    Args:
        content_layers: The layers whose features the picture must share with the content
            image (index or name).
        content_weight: Weight of the content loss, one for all content layers or one each.
        tv_weight: Weight of the total-variation loss.
        chroma_tv_weight: Weight of the chrominance's total variation (0: no such term).
        loss_reduction: ``"mean"`` or ``"sum"`` (the homework's), as :class:`StyleTransfer`'s.
        init: The start: ``"noise"`` (the default), ``"content"`` or an image file.
        **kwargs: The picture's options of
            :class:`~lightning_modules.style_transfer.FeatureMatching` and the backbone's.
    """

    def __init__(
        self,
        content_layers: Sequence[Union[int, str]] = (4,),
        content_weight: float | Sequence[float] = 1.0,
        tv_weight: float = 0.0,
        chroma_tv_weight: float = 0.0,
        loss_reduction: Literal["mean", "sum"] = "mean",
        init: str = "noise",
        **kwargs: Any,
    ) -> None:
        _refuse_other_terms(type(self).__name__, kwargs)
        check_choice("loss_reduction", loss_reduction, ("mean", "sum"))
        terms = [ContentTerm(content_layers, content_weight, loss_reduction),
                 *_smoothness(tv_weight, chroma_tv_weight, loss_reduction)]
        super().__init__(terms=terms, init=init, **kwargs)


class TextureSynthesis(FeatureMatching):
    """Synthesize a texture with the statistics of the style image(s) (style + TV loss).

    Args:
        style_layers: The style layers (index or name).
        style_weights: Weight of each style layer.
        style_loss: The statistics matched, as :class:`StyleTransfer`'s.
        tv_weight: Weight of the total-variation loss.
        chroma_tv_weight: Weight of the chrominance's total variation (0: no such term).
        loss_reduction: ``"mean"`` or ``"sum"``, for the TV terms.
        init: The start: ``"noise"`` (the default) or an image file (there is no content).
        **kwargs: The picture's options of
            :class:`~lightning_modules.style_transfer.FeatureMatching` and the backbone's.
    """

    def __init__(
        self,
        style_layers: Sequence[Union[int, str]] = (1, 2, 3, 4),
        style_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        style_loss: Union[str, StyleLoss] = "gram",
        tv_weight: float = 0.0,
        chroma_tv_weight: float = 0.0,
        loss_reduction: Literal["mean", "sum"] = "mean",
        init: str = "noise",
        **kwargs: Any,
    ) -> None:
        _refuse_other_terms(type(self).__name__, kwargs)
        check_choice("loss_reduction", loss_reduction, ("mean", "sum"))
        terms = [StyleTerm(style_layers, style_weights, style_loss),
                 *_smoothness(tv_weight, chroma_tv_weight, loss_reduction)]
        super().__init__(terms=terms, init=init, **kwargs)
