"""DataModules: images in, jobs out."""

from datamodules.classes import ClassListData
from datamodules.image_dataset import DatasetImages
from datamodules.jobs import JobData, StepLoader
from datamodules.objectives import ChannelAtlasData, ObjectiveListData
from datamodules.labeled_images import LabeledImage, LabeledImageData
from datamodules.style_transfer import StyleJob, StyleTransferData
from datamodules.video_style_transfer import FrameJob, VideoStyleData

__all__ = ["ChannelAtlasData", "ClassListData", "DatasetImages", "JobData", "LabeledImage", "LabeledImageData", "ObjectiveListData",
           "StepLoader", "StyleJob", "StyleTransferData", "FrameJob", "VideoStyleData"]
