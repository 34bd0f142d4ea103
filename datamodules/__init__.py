"""DataModules: images in, jobs out."""

from datamodules.style_transfer import StyleJob, StyleTransferData

__all__ = ["StyleJob", "StyleTransferData"]
