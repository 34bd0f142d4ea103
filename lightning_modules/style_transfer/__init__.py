"""Neural style transfer, feature inversion and texture synthesis: one composition of loss terms
(:class:`FeatureMatching`), its three presets, the seed's losses and the style losses."""

from lightning_modules._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "StyleTransfer": ".module", "FeatureInversion": ".module", "TextureSynthesis": ".module",
    "content_loss": ".functional", "gram_matrix": ".functional", "style_loss": ".functional",
    "tv_loss": ".functional", "extract_features": ".functional", "keep_colors": ".functional",
    "color_distance": ".functional", "chroma_noise": ".functional",
    "luma_noise": ".functional", "rgb_to_lab": ".functional",
    "seam_ratio": ".tiling", "tile": ".tiling",
    "StyleLoss": ".style_losses", "GramLoss": ".style_losses", "MeanStdLoss": ".style_losses",
    "SlicedWassersteinLoss": ".style_losses", "STYLE_LOSSES": ".style_losses",
    "make_style_loss": ".style_losses", "FeatureMatching": ".composition",
    "LossTerm": ".terms", "ContentTerm": ".terms", "StyleTerm": ".terms",
    "TotalVariation": ".terms", "ChromaTotalVariation": ".terms", "ColorTerm": ".terms",
    "ChromaDetailTerm": ".terms",
})
