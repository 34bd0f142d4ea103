"""Video style transfer: optical flow between frames, warping by it, its unreliable pixels and
the temporal warping error (the module class comes with the rest of issue 26)."""

from lightning_modules._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "FLOW_METHODS": ".flow", "optical_flow": ".flow", "warp": ".flow",
    "reliable_mask": ".flow", "temporal_weights": ".flow", "warping_error": ".flow",
})
