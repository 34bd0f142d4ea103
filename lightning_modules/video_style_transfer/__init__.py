"""Video style transfer without flicker: the module (:class:`VideoStyleTransfer`), optical flow
between frames, warping by it, its unreliable pixels and the temporal warping error."""

from lightning_modules._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "VideoStyleTransfer": ".module", "FLOW_METHODS": ".flow", "optical_flow": ".flow", "warp": ".flow",
    "reliable_mask": ".flow", "temporal_weights": ".flow", "warping_error": ".flow",
})
