"""Callbacks: every file a run writes (images, sheets, reports, losses) and interrupt handling."""

from callbacks.class_report import ClassReport
from callbacks.fooling_report import FoolingReport
from callbacks.image_writer import ImageWriter
from callbacks.interrupt import SaveOnInterrupt
from callbacks.loss_history import LossHistory
from callbacks.run_sheet import AtlasSheet, RunSheet
from callbacks.saliency_writer import SaliencyWriter
from callbacks.sheets import grid_sheet, make_sheet
from callbacks.training_pictures import TrainingPictures
from callbacks.trust_report import TrustReportWriter
from callbacks.video_writer import VideoWriter

__all__ = ["AtlasSheet", "ClassReport", "FoolingReport", "ImageWriter", "LossHistory", "RunSheet",
           "SaliencyWriter", "SaveOnInterrupt", "TrainingPictures", "TrustReportWriter", "VideoWriter", "grid_sheet", "make_sheet"]
