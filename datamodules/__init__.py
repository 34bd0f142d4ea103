"""DataModules: images in, jobs out."""

from datamodules.labeled_images import LabeledImage, LabeledImageData
from datamodules.style_transfer import StyleJob, StyleTransferData

__all__ = ["LabeledImage", "LabeledImageData", "StyleJob", "StyleTransferData"]
