"""The old home of :class:`ImageDDPStrategy` (``lightning_modules.strategy.ImageDDPStrategy``
in configs keeps working); it lives in :mod:`lightning_modules.image_optimization.strategy`."""

from lightning_modules.image_optimization.strategy import ImageDDPStrategy, shard_path

__all__ = ["ImageDDPStrategy", "shard_path"]
