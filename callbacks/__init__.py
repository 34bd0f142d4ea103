"""Callbacks that save images and track losses."""

from callbacks.image_writer import ImageWriter, make_sheet
from callbacks.interrupt import SaveOnInterrupt
from callbacks.loss_history import LossHistory
from callbacks.saliency_writer import SaliencyWriter

__all__ = ["ImageWriter", "LossHistory", "SaliencyWriter", "SaveOnInterrupt", "make_sheet"]
